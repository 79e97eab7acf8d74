//! The exporter's CPU work for a whole cluster, in-process, with its public pure functions:
//! building the index from every Service and EndpointSlice, naming the backends, and turning
//! them into the published bytes (`document_from_backends`, `validate`, `render`). Also the
//! work one EndpointSlice change costs once the index is built: per Service
//! (`index::Published`, what the exporter runs) and from scratch (every Service named and
//! rendered again), each with the `file://` put of the new object, against the floor measured
//! in the same run (decoding the changed slice, durably writing a file of the object's size).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::floor;
use ksd_bench::procfs::{Memory, mib};
use ksd_bench::stats::Summary;
use ksd_bench::stats::{ms, print_line, repeat, timed};
use ksd_bench::workload::{ClusterObjects, ExporterShape};
use ksd_exporter::index::{Index, Published, service_facts, slice_facts};
use ksd_runtime::storage::{PutCondition, PutOutcome, S3Options, Storage, StorageUrl};
use ksd_shared::backend::Backend;
use ksd_shared::names::{ClusterName, NameTemplate, ObjectFormat};
use ksd_shared::traefik::{self, Rendered, TraefikVersion};

#[derive(Debug, Parser)]
#[command(about = "Times the exporter's index build and render for one large cluster")]
struct Args {
    /// Services in the cluster
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Ready endpoints per Service
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// Namespaces the Services are spread over
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Timed runs of each step (the median is the headline)
    #[arg(long, default_value_t = 9)]
    runs: usize,
}

impl Args {
    /// The cluster the arguments describe.
    fn shape(&self) -> ExporterShape {
        ExporterShape {
            namespaces: self.namespaces,
            services: self.services,
            endpoints_per_service: self.endpoints_per_service,
        }
    }
}

/// The index of every Service and slice of `objects`, as the exporter builds it from its
/// initial list: facts extraction, apply, refresh.
fn build_index(objects: &ClusterObjects) -> Index {
    let mut index = Index::new();
    for service in &objects.services {
        if let Some((key, facts)) = service_facts(service) {
            index.apply_service(key, facts);
        }
    }
    for slice in &objects.slices {
        if let Some((key, facts)) = slice_facts(slice) {
            index.apply_slice(key, facts);
        }
    }
    let warnings = index.refresh();
    black_box(warnings);
    index
}

/// Times conditional puts of the object to a `file://` directory, as the exporter's publisher
/// makes them (`put_hashed`, `If-Match` on the last ETag, the same metadata keys), alternating
/// between two contents so that every put is a real change.
fn time_puts(runs: usize, contents: [&[u8]; 2]) -> anyhow::Result<Vec<Duration>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the storage calls")?;
    let dir = tempfile::tempdir().context("a storage directory")?;
    runtime.block_on(async {
        let storage = Storage::connect(
            &StorageUrl::Local {
                dir: dir.path().to_owned(),
            },
            &S3Options::default(),
        )
        .await
        .context("opening the storage directory")?;
        let metadata = BTreeMap::from([
            ("cluster".to_owned(), "bench".to_owned()),
            ("exporter-version".to_owned(), "bench".to_owned()),
            ("generated-at".to_owned(), "2026-01-01T00:00:00Z".to_owned()),
        ]);
        let key = "bench.traefik.yaml";
        let mut condition = PutCondition::IfAbsent;
        let mut times = Vec::with_capacity(runs);
        for run in 0..=runs {
            let bytes = contents[run % 2].to_vec();
            // The exporter hashed its object when it built it.
            let hash = ksd_shared::content_hash(&bytes);
            let start = Instant::now();
            let outcome = storage
                .put_hashed(key, bytes, &hash, &metadata, condition.clone())
                .await
                .context("putting the object")?;
            let took = start.elapsed();
            let PutOutcome::Written { etag: Some(etag) } = outcome else {
                anyhow::bail!("unexpected put outcome {outcome:?}");
            };
            condition = PutCondition::IfMatch(etag);
            // The first put creates the object; the exporter's steady state is replacing it.
            if run > 0 {
                times.push(took);
            }
        }
        Ok(times)
    })
}

fn line(label: &str, samples: &[Duration]) {
    print_line(label, 44, samples);
}

/// The backends of the state after one change (Service 0's first pod moved), for a second
/// content to put.
fn shape_changed_backends(
    shape: &ExporterShape,
    template: &NameTemplate,
) -> anyhow::Result<Vec<Backend>> {
    let mut objects = shape.objects();
    let changed = shape.changed_slices(0, 1);
    objects
        .slices
        .retain(|s| !changed.iter().any(|c| c.metadata.name == s.metadata.name));
    objects.slices.extend(changed);
    let index = build_index(&objects);
    let (backends, _) = index.backends(template);
    anyhow::ensure!(!backends.is_empty(), "no backends");
    Ok(backends)
}

/// The bytes of the object after one change (Service 0's first pod moved), for a second
/// content to put.
fn changed_object(
    shape: &ExporterShape,
    template: &NameTemplate,
    cluster: &ClusterName,
) -> anyhow::Result<Vec<u8>> {
    let changed = ksd_exporter::document::build(
        cluster,
        &[ObjectFormat::Traefik],
        &shape_changed_backends(shape, template)?,
    )?;
    Ok(changed
        .outputs
        .first()
        .map(|o| o.bytes.clone())
        .unwrap_or_default())
}

/// The whole object built from the cluster's objects, step by step: the times of each step
/// and what the steps built.
struct FullBuild {
    index_times: Vec<Duration>,
    naming_times: Vec<Duration>,
    document_times: Vec<Duration>,
    validate_times: Vec<Duration>,
    render_times: Vec<Duration>,
    build_times: Vec<Duration>,
    /// The bench process's memory with the index built.
    memory_with_index: Memory,
    backends: Vec<Backend>,
    servers: usize,
    rendered: Rendered,
}

impl FullBuild {
    /// Times every step `runs` times; returns the index it built with the times.
    fn measure(
        runs: usize,
        objects: &ClusterObjects,
        template: &NameTemplate,
        cluster: &ClusterName,
    ) -> anyhow::Result<(Index, FullBuild)> {
        // Facts extraction + apply + refresh: what the initial list costs the exporter.
        let index_times = repeat(runs, || build_index(objects));
        let index = build_index(objects);
        let memory_with_index = Memory::own()?;

        let naming_times = repeat(runs, || index.backends(template));
        let (backends, collisions) = index.backends(template);
        anyhow::ensure!(
            collisions.is_empty(),
            "unexpected name collisions: {}",
            collisions.len()
        );
        let servers: usize = backends.iter().map(|b| b.targets.len()).sum();

        let document_times = repeat(runs, || traefik::document_from_backends(&backends));
        let doc = traefik::document_from_backends(&backends).context("the backends are refused")?;
        let validate_times = repeat(runs, || traefik::validate(&doc));
        traefik::validate(&doc).context("the document does not validate")?;
        let header = ksd_exporter::document::header(cluster);
        let render_times = repeat(runs, || traefik::render(&doc, TraefikVersion::V2, &header));
        let rendered = traefik::render(&doc, TraefikVersion::V2, &header);
        // The exporter's whole publish path from backends: document, validate, render (both
        // formats' hashing included), exactly as a publish runs it.
        let build_times = repeat(runs, || {
            ksd_exporter::document::build(cluster, &[ObjectFormat::Traefik], &backends)
        });
        let full = FullBuild {
            index_times,
            naming_times,
            document_times,
            validate_times,
            render_times,
            build_times,
            memory_with_index,
            backends,
            servers,
            rendered,
        };
        Ok((index, full))
    }
}

/// One slice change on the built index, as the exporter runs it, and its parts.
struct PerService {
    /// The published state built once from the whole index (the exporter's first publish).
    first_publish: Duration,
    /// Apply, refresh the one Service, bring its published state up to date.
    update_times: Vec<Duration>,
    /// Assemble and hash the object.
    snapshot_times: Vec<Duration>,
    /// Both.
    change_times: Vec<Duration>,
}

/// Times the first publish of `published` from the whole index, then `runs` slice changes
/// each brought up to date per Service, as the exporter runs them.
fn measure_per_service(
    runs: usize,
    shape: &ExporterShape,
    index: &mut Index,
    published: &mut Published,
    generation: &mut u32,
) -> anyhow::Result<PerService> {
    let (_, first_publish) = timed(|| {
        published.update(index);
        published.snapshot()
    });
    let mut update_times = Vec::with_capacity(runs);
    let mut snapshot_times = Vec::with_capacity(runs);
    let mut change_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        *generation += 1;
        let target = shape.changed_service(*generation);
        let slices = shape.changed_slices(target, *generation);
        let start = Instant::now();
        for slice in &slices {
            if let Some((key, facts)) = slice_facts(slice) {
                index.apply_slice(key, facts);
            }
        }
        black_box(index.refresh());
        published.update(index);
        let updated = start.elapsed();
        let snapshot = published
            .snapshot()
            .context("the published state is refused")?;
        let took = start.elapsed();
        update_times.push(updated);
        snapshot_times.push(took - updated);
        change_times.push(took);
        black_box(snapshot);
    }
    Ok(PerService {
        first_publish,
        update_times,
        snapshot_times,
        change_times,
    })
}

/// The same change from scratch: every backend named again, the whole document built,
/// validated and rendered (what each publish ran before the per-Service state).
fn time_from_scratch(
    runs: usize,
    shape: &ExporterShape,
    index: &mut Index,
    template: &NameTemplate,
    cluster: &ClusterName,
    generation: &mut u32,
) -> Vec<Duration> {
    repeat(runs, || {
        *generation += 1;
        let target = shape.changed_service(*generation);
        for slice in shape.changed_slices(target, *generation) {
            if let Some((key, facts)) = slice_facts(&slice) {
                index.apply_slice(key, facts);
            }
        }
        black_box(index.refresh());
        let (backends, _) = index.backends(template);
        ksd_exporter::document::build(cluster, &[ObjectFormat::Traefik], &backends)
    })
}

/// The floor of a change, step by step.
struct Floor {
    slice_reads: Vec<Duration>,
    object_writes: Vec<Duration>,
    totals: Vec<Duration>,
}

/// The floor, in the same run: decode the changed slice (of change `generation`), durably
/// write the object's bytes.
fn measure_floor(
    runs: usize,
    shape: &ExporterShape,
    generation: u32,
    object: &[u8],
) -> anyhow::Result<Floor> {
    let slice_reads = floor::slice_reads(runs, &shape.changed_slices(0, generation))?;
    let object_writes = floor::object_writes(runs, object)?;
    let totals = floor::sums(&slice_reads, &object_writes);
    Ok(Floor {
        slice_reads,
        object_writes,
        totals,
    })
}

/// The first lines: the build and the state measured.
fn print_header(shape: &ExporterShape) {
    println!("exporter-render: {}", ksd_bench::binaries::build_note());
    println!(
        "state: {} Services, {} endpoints ({} per Service), {} namespaces",
        shape.services,
        shape.endpoints(),
        shape.endpoints_per_service,
        shape.namespaces
    );
}

/// The cluster's objects, and a line saying how long generating them took.
fn generate(shape: &ExporterShape) -> ClusterObjects {
    let (objects, took) = timed(|| shape.objects());
    println!(
        "generated {} Services and {} EndpointSlices ({} endpoints) in {}",
        objects.services.len(),
        objects.slices.len(),
        objects.endpoint_count(),
        ms(took)
    );
    objects
}

/// The result lines: the output's size, every step's times, the ratio of a change with its
/// put to the floor, and the bench's memory with the index built.
fn report(
    runs: usize,
    full: &FullBuild,
    per_service: &PerService,
    put_times: &[Duration],
    scratch_times: &[Duration],
    floor_steps: &Floor,
) {
    let change_and_put = floor::sums(&per_service.change_times, put_times);
    println!(
        "output: {} backends, {} servers, {} bytes ({})",
        full.backends.len(),
        full.servers,
        full.rendered.bytes.len(),
        mib(full.rendered.bytes.len() as u64 / 1024)
    );
    println!("timings over {runs} runs:");
    line("index build (facts + apply + refresh)", &full.index_times);
    line("name backends (Index::backends)", &full.naming_times);
    line("document_from_backends", &full.document_times);
    line("validate", &full.validate_times);
    line("render (the full render)", &full.render_times);
    line(
        "document::build (from backends: all of it)",
        &full.build_times,
    );
    println!(
        "first publish of the per-Service state (every Service): {}",
        ms(per_service.first_publish)
    );
    line("one slice change -> bytes (from scratch)", scratch_times);
    line(
        "one slice change -> bytes (per Service)",
        &per_service.change_times,
    );
    line(
        "  of which index + Published::update",
        &per_service.update_times,
    );
    line(
        "  of which snapshot (assemble + hash)",
        &per_service.snapshot_times,
    );
    line("file:// put of the object (If-Match)", put_times);
    line("change -> bytes -> put (per Service)", &change_and_put);
    line("floor: decode the changed slice", &floor_steps.slice_reads);
    line(
        "floor: durable write of the object's size",
        &floor_steps.object_writes,
    );
    line("floor: slice + write", &floor_steps.totals);
    if let (Some(measured), Some(floor_summary)) = (
        Summary::of(&change_and_put),
        Summary::of(&floor_steps.totals),
    ) {
        println!(
            "ratio to the floor (change -> bytes -> put / floor): median {}, p99 {}",
            floor::ratio(measured.median, floor_summary.median),
            floor::ratio(measured.p99, floor_summary.p99)
        );
    }
    println!(
        "bench process memory with the index built: {}",
        full.memory_with_index
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    let runs = args.runs.max(1);
    print_header(&shape);
    let objects = generate(&shape);
    let template = NameTemplate::parse(NameTemplate::DEFAULT).context("the default template")?;
    let cluster = ClusterName::parse("bench").context("cluster name")?;

    let (mut index, full) = FullBuild::measure(runs, &objects, &template, &cluster)?;
    let changed_bytes = changed_object(&shape, &template, &cluster)?;
    // The exporter's steady state: If-Match on the ETag of its own last write.
    let put_times = time_puts(runs, [&full.rendered.bytes, &changed_bytes])?;

    let mut published = Published::new(cluster.clone(), template.clone(), &[ObjectFormat::Traefik]);
    let mut generation = 0;
    let per_service =
        measure_per_service(runs, &shape, &mut index, &mut published, &mut generation)?;
    let scratch_times = time_from_scratch(
        runs,
        &shape,
        &mut index,
        &template,
        &cluster,
        &mut generation,
    );
    let floor_steps = measure_floor(runs, &shape, generation + 1, &full.rendered.bytes)?;
    report(
        runs,
        &full,
        &per_service,
        &put_times,
        &scratch_times,
        &floor_steps,
    );
    Ok(())
}
