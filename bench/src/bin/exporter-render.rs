//! The exporter's CPU work for a whole cluster, in-process, with its public pure functions:
//! building the index from every Service and EndpointSlice, naming the backends, and turning
//! them into the published bytes (`document_from_backends`, `validate`, `render`). Also the
//! work one EndpointSlice change costs once the index is built.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::procfs::{Memory, mib};
use ksd_bench::stats::{ms, print_line, repeat, timed};
use ksd_bench::workload::ExporterShape;
use ksd_exporter::index::{Index, service_facts, slice_facts};
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
/// makes them (`If-Match` on the last ETag, the same metadata keys), alternating between two
/// contents so that every put is a real change.
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
            let start = Instant::now();
            let outcome = storage
                .put(key, bytes, &metadata, condition.clone())
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
    let put_times = time_puts(runs, [&rendered.bytes, &changed_bytes])?;

    // One slice change on the built index: apply, refresh the one Service, name every
    // backend again and build the document, i.e. the CPU between a watch event and an upload.
    let mut index = index;
    let mut generation = 0;
    let change_times = repeat(runs, || {
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
    line("one slice change -> bytes (incremental)", &change_times);
    line("file:// put of the object (If-Match)", &put_times);
    println!("bench process memory with the index built: {before}");
    Ok(())
}
