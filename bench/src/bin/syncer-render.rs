//! The syncer's CPU and disk work for many clusters, in-process: reading every cluster
//! document (strict parse), merging them, rendering the merged file, reading it back (the check
//! the syncer runs before every write), and writing it atomically with the syncer's own writer.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ksd_bench::procfs::{Memory, mib};
use ksd_bench::stats::{Summary, ms, print_line, repeat, timed};
use ksd_bench::workload::SyncerShape;
use ksd_shared::merge::{ClusterDocument, merge};
use ksd_shared::traefik::{self, Limits, TraefikVersion};
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

fn run(shape: SyncerShape, runs: usize) -> anyhow::Result<()> {
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
    // VmHWM only grows: read after each stage, it shows which stage sets the peak.
    let mut peaks = vec![("documents generated", Memory::own()?)];
    let parse_times = repeat(runs, parse_all);
    let documents = parse_all()?;
    peaks.push(("cluster documents parsed", Memory::own()?));

    let merge_times = repeat(runs, || merge(&documents));
    let merged = merge(&documents);
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

    let dir = tempfile::tempdir().context("a directory for the output")?;
    let output = OutputFile::new(dir.path(), "k8s-service-discovery.yml");
    let mut write_error = None;
    let write_times = repeat(runs, || {
        if let Err(error) = output.write_atomic(&rendered.bytes) {
            write_error = Some(error);
        }
    });
    if let Some(error) = write_error {
        return Err(error).context("writing the merged file");
    }

    let whole = |with_check: bool| -> Vec<Duration> {
        repeat(runs, || {
            let merged = merge(&documents);
            let rendered = traefik::render(&merged.document, TraefikVersion::V3, &header);
            if with_check {
                let _ = traefik::parse_merged_document(&rendered.bytes);
            }
            output.write_atomic(&rendered.bytes).is_ok()
        })
    };
    let total_times = whole(false);
    let total_checked_times = whole(true);
    // What the syncer itself runs before a write, as it stands: merge, render, read back.
    let compose_times = repeat(runs, || {
        ksd_syncer::compose::compose(&documents, TraefikVersion::V3).map(|c| c.bytes.len())
    });

    println!(
        "merged file: {} services, {} conflicts, {} bytes ({})",
        merged.document.service_count(),
        merged.conflicts.len(),
        rendered.bytes.len(),
        mib(rendered.bytes.len() as u64 / 1024)
    );
    println!("timings over {runs} runs:");
    line("parse every cluster document", &parse_times);
    line("merge", &merge_times);
    line("render", &render_times);
    line("read back (parse_merged_document)", &check_times);
    line("write_atomic (temp, fsync, rename, fsync)", &write_times);
    line("merge + render + write", &total_times);
    line("merge + render + read back + write", &total_checked_times);
    line("ksd_syncer::compose::compose", &compose_times);
    println!(
        "  sum of the step medians (merge + render + write): {}",
        ms(median(&merge_times) + median(&render_times) + median(&write_times))
    );
    println!("bench process memory after each stage (the same data is kept throughout):");
    for (stage, memory) in peaks {
        println!("  {stage:<42} {memory}");
    }
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
