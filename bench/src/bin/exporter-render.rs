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
use ksd_bench::workload::ExporterShape;
use ksd_exporter::index::{Index, Published, service_facts, slice_facts};
use ksd_runtime::storage::{PutCondition, PutOutcome, S3Options, Storage, StorageUrl};
use ksd_shared::names::{ClusterName, NameTemplate, ObjectFormat};
use ksd_shared::traefik::{self, TraefikVersion};

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

fn build_index(objects: &ksd_bench::workload::ClusterObjects) -> Index {
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
) -> anyhow::Result<Vec<ksd_shared::backend::Backend>> {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = ExporterShape {
        namespaces: args.namespaces,
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
    };
    let runs = args.runs.max(1);
    println!("exporter-render: {}", ksd_bench::binaries::build_note());
    println!(
        "state: {} Services, {} endpoints ({} per Service), {} namespaces",
        shape.services,
        shape.endpoints(),
        shape.endpoints_per_service,
        shape.namespaces
    );

    let (objects, took) = timed(|| shape.objects());
    println!(
        "generated {} Services and {} EndpointSlices ({} endpoints) in {}",
        objects.services.len(),
        objects.slices.len(),
        objects.endpoint_count(),
        ms(took)
    );

    let template = NameTemplate::parse(NameTemplate::DEFAULT).context("the default template")?;
    let cluster = ClusterName::parse("bench").context("cluster name")?;

    // Facts extraction + apply + refresh: what the initial list costs the exporter.
    let index_times = repeat(runs, || build_index(&objects));
    let index = build_index(&objects);
    let before = Memory::own()?;

    let naming_times = repeat(runs, || index.backends(&template));
    let (backends, collisions) = index.backends(&template);
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
    let header = ksd_exporter::document::header(&cluster);
    let render_times = repeat(runs, || traefik::render(&doc, TraefikVersion::V2, &header));
    let rendered = traefik::render(&doc, TraefikVersion::V2, &header);
    // The exporter's whole publish path from backends: document, validate, render (both
    // formats' hashing included), exactly as a publish runs it.
    let build_times = repeat(runs, || {
        ksd_exporter::document::build(&cluster, &[ObjectFormat::Traefik], &backends)
    });

    let changed = ksd_exporter::document::build(
        &cluster,
        &[ObjectFormat::Traefik],
        &shape_changed_backends(&shape, &template)?,
    )?;
    let changed_bytes = changed
        .outputs
        .first()
        .map(|o| o.bytes.clone())
        .unwrap_or_default();
    // The exporter's steady state: If-Match on the ETag of its own last write.
    let put_times = time_puts(runs, [&rendered.bytes, &changed_bytes])?;

    // The exporter's published state, built once from the whole index (its first publish).
    let mut index = index;
    let mut published = Published::new(cluster.clone(), template.clone(), &[ObjectFormat::Traefik]);
    let (_, first_publish) = timed(|| {
        published.update(&mut index);
        published.snapshot()
    });

    // One slice change on the built index, as the exporter runs it: apply, refresh the one
    // Service, bring its published state up to date, assemble and hash the object.
    let mut generation = 0;
    let mut update_times = Vec::with_capacity(runs);
    let mut snapshot_times = Vec::with_capacity(runs);
    let mut change_times = Vec::with_capacity(runs);
    for _ in 0..runs {
        generation += 1;
        let target = (generation as usize * 7919) % shape.services.max(1);
        let slices = shape.changed_slices(target, generation);
        let start = Instant::now();
        for slice in &slices {
            if let Some((key, facts)) = slice_facts(slice) {
                index.apply_slice(key, facts);
            }
        }
        black_box(index.refresh());
        published.update(&mut index);
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
    let change_and_put = floor::sums(&change_times, &put_times);

    // The same change from scratch: every backend named again, the whole document built,
    // validated and rendered (what each publish ran before the per-Service state).
    let scratch_times = repeat(runs, || {
        generation += 1;
        let target = (generation as usize * 7919) % shape.services.max(1);
        for slice in shape.changed_slices(target, generation) {
            if let Some((key, facts)) = slice_facts(&slice) {
                index.apply_slice(key, facts);
            }
        }
        black_box(index.refresh());
        let (backends, _) = index.backends(&template);
        ksd_exporter::document::build(&cluster, &[ObjectFormat::Traefik], &backends)
    });

    // The floor, in the same run: decode the changed slice, durably write the object's bytes.
    let slice_reads = floor::slice_reads(runs, &shape.changed_slices(0, generation + 1))?;
    let object_writes = floor::object_writes(runs, &rendered.bytes)?;
    let floor_times = floor::sums(&slice_reads, &object_writes);

    println!(
        "output: {} backends, {} servers, {} bytes ({})",
        backends.len(),
        servers,
        rendered.bytes.len(),
        mib(rendered.bytes.len() as u64 / 1024)
    );
    println!("timings over {runs} runs:");
    line("index build (facts + apply + refresh)", &index_times);
    line("name backends (Index::backends)", &naming_times);
    line("document_from_backends", &document_times);
    line("validate", &validate_times);
    line("render (the full render)", &render_times);
    line("document::build (from backends: all of it)", &build_times);
    println!(
        "first publish of the per-Service state (every Service): {}",
        ms(first_publish)
    );
    line("one slice change -> bytes (from scratch)", &scratch_times);
    line("one slice change -> bytes (per Service)", &change_times);
    line("  of which index + Published::update", &update_times);
    line("  of which snapshot (assemble + hash)", &snapshot_times);
    line("file:// put of the object (If-Match)", &put_times);
    line("change -> bytes -> put (per Service)", &change_and_put);
    line("floor: decode the changed slice", &slice_reads);
    line("floor: durable write of the object's size", &object_writes);
    line("floor: slice + write", &floor_times);
    if let (Some(measured), Some(floor_summary)) =
        (Summary::of(&change_and_put), Summary::of(&floor_times))
    {
        println!(
            "ratio to the floor (change -> bytes -> put / floor): median {}, p99 {}",
            floor::ratio(measured.median, floor_summary.median),
            floor::ratio(measured.p99, floor_summary.p99)
        );
    }
    println!("bench process memory with the index built: {before}");
    Ok(())
}
