//! The syncer's CPU and disk work for many clusters, in-process: reading every cluster
//! document (strict parse), merging them, rendering the merged file, reading it back (the check
//! the syncer runs before every write), and writing it atomically with the syncer's own writer.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ksd_bench::procfs::{Memory, mib};
use ksd_bench::stats::{Summary, ms, print_line, repeat, timed};
use ksd_bench::workload::SyncerShape;
use ksd_shared::merge::{ClusterDocument, Merged, merge};
use ksd_shared::traefik::{self, Limits, Rendered, TraefikVersion};
use ksd_syncer::output::OutputFile;

#[derive(Debug, Parser)]
#[command(about = "Times the syncer's merge, render and write for many clusters")]
struct Args {
    /// Clusters
    #[arg(long, default_value_t = 50)]
    clusters: usize,
    /// Services per cluster
    #[arg(long, default_value_t = 2_000)]
    services: usize,
    /// Servers per service
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// Timed runs of each step (the median is the headline)
    #[arg(long, default_value_t = 9)]
    runs: usize,
}

fn line(label: &str, samples: &[Duration]) {
    print_line(&format!("  {label}"), 44, samples);
}

fn median(samples: &[Duration]) -> Duration {
    Summary::of(samples).map_or(Duration::ZERO, |s| s.median)
}

/// Memory readings of the bench process, each after the stage it names.
type Peaks = Vec<(&'static str, Memory)>;

/// The merged file's steps, one at a time: their times and what they made.
struct Steps {
    merge_times: Vec<Duration>,
    render_times: Vec<Duration>,
    check_times: Vec<Duration>,
    merged: Merged,
    header: String,
    rendered: Rendered,
}

impl Steps {
    /// Times merging `documents`, rendering the merged file and reading it back, `runs` times
    /// each; reads the memory into `peaks` after the render and after the read back.
    fn measure(
        documents: &[ClusterDocument],
        runs: usize,
        peaks: &mut Peaks,
    ) -> anyhow::Result<Steps> {
        let merge_times = repeat(runs, || merge(documents));
        let merged = merge(documents);
        let clusters: Vec<_> = documents.iter().map(|d| d.cluster.clone()).collect();
        let header = ksd_syncer::compose::header(&clusters);
        let render_times = repeat(runs, || {
            traefik::render(&merged.document, TraefikVersion::V3, &header)
        });
        let rendered = traefik::render(&merged.document, TraefikVersion::V3, &header);
        peaks.push(("merged and rendered", Memory::own()?));
        let check_times = repeat(runs, || traefik::parse_merged_document(&rendered.bytes));
        traefik::parse_merged_document(&rendered.bytes)
            .context("the merged file does not read back")?;
        peaks.push(("merged file read back", Memory::own()?));
        Ok(Steps {
            merge_times,
            render_times,
            check_times,
            merged,
            header,
            rendered,
        })
    }
}

/// The whole path from the cluster documents to the written file, timed end to end.
struct Pipelines {
    /// Merge, render, write.
    total_times: Vec<Duration>,
    /// Merge, render, read back, write.
    total_checked_times: Vec<Duration>,
    /// What the syncer itself runs before a write, as it stands: merge, render, read back.
    compose_times: Vec<Duration>,
}

impl Pipelines {
    /// Times each path `runs` times, writing with `output`.
    fn measure(
        documents: &[ClusterDocument],
        header: &str,
        output: &OutputFile,
        runs: usize,
    ) -> Pipelines {
        let whole = |with_check: bool| -> Vec<Duration> {
            repeat(runs, || {
                let merged = merge(documents);
                let rendered = traefik::render(&merged.document, TraefikVersion::V3, header);
                if with_check {
                    let _ = traefik::parse_merged_document(&rendered.bytes);
                }
                output.write_atomic(&rendered.bytes).is_ok()
            })
        };
        let total_times = whole(false);
        let total_checked_times = whole(true);
        let compose_times = repeat(runs, || {
            ksd_syncer::compose::compose(documents, TraefikVersion::V3).map(|c| c.bytes.len())
        });
        Pipelines {
            total_times,
            total_checked_times,
            compose_times,
        }
    }
}

/// The state line: its size and whether the clusters share their names.
fn print_state(shape: &SyncerShape) {
    let names = if shape.shared_names {
        "every cluster exports the same names"
    } else {
        "every cluster has names of its own"
    };
    println!(
        "\nstate: {} clusters x {} services x {} servers = {} servers; {names}",
        shape.clusters,
        shape.services_per_cluster,
        shape.servers_per_service,
        shape.servers()
    );
}

/// Every cluster's document, as its exporter publishes it, and a line saying how long
/// generating them took.
fn generate(shape: &SyncerShape) -> anyhow::Result<Vec<Vec<u8>>> {
    let (objects, took) = timed(|| {
        (0..shape.clusters)
            .map(|c| shape.document_bytes(c, None))
            .collect::<Result<Vec<_>, _>>()
    });
    let objects = objects.context("rendering the cluster documents")?;
    let input_bytes: usize = objects.iter().map(Vec::len).sum();
    println!(
        "generated {} cluster documents, {} bytes in all, in {}",
        objects.len(),
        input_bytes,
        ms(took)
    );
    Ok(objects)
}

/// Times the strict parse of every cluster document, `runs` times; returns the times and the
/// parsed documents.
fn time_parse(
    shape: &SyncerShape,
    objects: &[Vec<u8>],
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<ClusterDocument>)> {
    let limits = Limits::default();
    let parse_all = || -> anyhow::Result<Vec<ClusterDocument>> {
        objects
            .iter()
            .enumerate()
            .map(|(c, bytes)| {
                Ok(ClusterDocument {
                    cluster: shape.cluster(c),
                    document: traefik::parse_cluster_document(bytes, &limits)
                        .with_context(|| format!("cluster document {c}"))?,
                })
            })
            .collect()
    };
    let parse_times = repeat(runs, parse_all);
    let documents = parse_all()?;
    Ok((parse_times, documents))
}

/// Times `runs` atomic writes of `bytes` with the syncer's writer; fails if one of them did.
fn time_writes(output: &OutputFile, bytes: &[u8], runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut write_error = None;
    let write_times = repeat(runs, || {
        if let Err(error) = output.write_atomic(bytes) {
            write_error = Some(error);
        }
    });
    if let Some(error) = write_error {
        return Err(error).context("writing the merged file");
    }
    Ok(write_times)
}

/// The result lines: the merged file, every step's times, and the memory after each stage.
fn report(
    runs: usize,
    parse_times: &[Duration],
    steps: &Steps,
    write_times: &[Duration],
    pipelines: &Pipelines,
    peaks: Peaks,
) {
    println!(
        "merged file: {} services, {} conflicts, {} bytes ({})",
        steps.merged.document.service_count(),
        steps.merged.conflicts.len(),
        steps.rendered.bytes.len(),
        mib(steps.rendered.bytes.len() as u64 / 1024)
    );
    println!("timings over {runs} runs:");
    line("parse every cluster document", parse_times);
    line("merge", &steps.merge_times);
    line("render", &steps.render_times);
    line("read back (parse_merged_document)", &steps.check_times);
    line("write_atomic (temp, fsync, rename, fsync)", write_times);
    line("merge + render + write", &pipelines.total_times);
    line(
        "merge + render + read back + write",
        &pipelines.total_checked_times,
    );
    line("ksd_syncer::compose::compose", &pipelines.compose_times);
    println!(
        "  sum of the step medians (merge + render + write): {}",
        ms(median(&steps.merge_times) + median(&steps.render_times) + median(write_times))
    );
    println!("bench process memory after each stage (the same data is kept throughout):");
    for (stage, memory) in peaks {
        println!("  {stage:<42} {memory}");
    }
}

/// One state measured: the documents generated, then every step, then the report.
fn run(shape: SyncerShape, runs: usize) -> anyhow::Result<()> {
    print_state(&shape);
    let objects = generate(&shape)?;
    // VmHWM only grows: read after each stage, it shows which stage sets the peak.
    let mut peaks = vec![("documents generated", Memory::own()?)];
    let (parse_times, documents) = time_parse(&shape, &objects, runs)?;
    peaks.push(("cluster documents parsed", Memory::own()?));
    let steps = Steps::measure(&documents, runs, &mut peaks)?;

    let dir = tempfile::tempdir().context("a directory for the output")?;
    let output = OutputFile::new(dir.path(), "k8s-service-discovery.yml");
    let write_times = time_writes(&output, &steps.rendered.bytes, runs)?;
    let pipelines = Pipelines::measure(&documents, &steps.header, &output, runs);
    report(runs, &parse_times, &steps, &write_times, &pipelines, peaks);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = args.runs.max(1);
    println!("syncer-render: {}", ksd_bench::binaries::build_note());
    for shared_names in [false, true] {
        run(
            SyncerShape {
                clusters: args.clusters,
                services_per_cluster: args.services,
                servers_per_service: args.servers,
                shared_names,
            },
            runs,
        )?;
    }
    Ok(())
}
