//! The real `ksd-syncer` (release build) over S3 (moto behind the testbed's proxy) holding many
//! clusters, polling every `POLL_INTERVAL`:
//!
//! - propagation from the end of an upload (a cluster's object with one server moved) to the
//!   merged file holding it, with uploads spread evenly over the poll period;
//! - in the same run, the floor of one cycle measured directly with the AWS SDK through the
//!   same proxy: one LIST of the prefix, one GET of a cluster object, and one atomic write of
//!   a merged file of the real size with the syncer's writer.
//!
//! Expected propagation is about POLL_INTERVAL / 2 on average (the wait for the next poll)
//! plus the floor plus the merge and render (see `syncer-render`).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::agents::{stop, wait_for_content};
use ksd_bench::binaries::Agent as AgentBinary;
use ksd_bench::files::DirWatch;
use ksd_bench::procfs::Memory;
use ksd_bench::s3::upload;
use ksd_bench::stats::{Summary, ms, print_line, spread};
use ksd_bench::workload::{SyncerShape, TARGET_PORT, marker_ip, server_marker};
use ksd_syncer::output::OutputFile;
use ksd_testbed::process::Agent;
use ksd_testbed::s3::S3Fixture;

#[derive(Debug, Parser)]
#[command(
    about = "S3 propagation latency of the ksd-syncer binary, against the floor of one cycle"
)]
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
    /// Every cluster exports the same service names (default: names of its own)
    #[arg(long)]
    shared_names: bool,
    /// The syncer's POLL_INTERVAL
    #[arg(long, default_value = "1s", value_parser = ksd_shared::parse_duration)]
    poll_interval: Duration,
    /// Propagation samples
    #[arg(long, default_value_t = 40)]
    iterations: u32,
    /// Stop taking propagation samples after this long, even short of --iterations
    #[arg(long, default_value = "180s", value_parser = ksd_shared::parse_duration)]
    time_budget: Duration,
    /// Floor samples
    #[arg(long, default_value_t = 20)]
    floor_runs: usize,
    /// Longest wait for the first merged file
    #[arg(long, default_value = "180s", value_parser = ksd_shared::parse_duration)]
    startup_timeout: Duration,
}

const OUTPUT_FILE: &str = "k8s-service-discovery.yml";
const PREFIX: &str = "bench/";

fn line(label: &str, samples: &[Duration]) {
    print_line(label, 44, samples);
}

/// One LIST of the prefix (every page); returns the number of keys.
async fn list(client: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<usize> {
    let mut keys = 0;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(PREFIX)
            .set_continuation_token(token.take())
            .send()
            .await
            .context("listing the prefix")?;
        keys += page.contents().len();
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
            _ => return Ok(keys),
        }
    }
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<usize> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("fetching {key}"))?;
    let body = object
        .body
        .collect()
        .await
        .with_context(|| format!("reading {key}"))?;
    Ok(body.into_bytes().len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = SyncerShape {
        clusters: args.clusters.max(1),
        services_per_cluster: args.services.max(1),
        servers_per_service: args.servers.max(1),
        shared_names: args.shared_names,
    };
    let binary = AgentBinary::Syncer.path()?;
    println!("syncer-s3: {}", ksd_bench::binaries::build_note());
    println!("binary: {}", binary.display());
    println!(
        "state: {} clusters x {} services x {} servers = {} servers; shared names: {}; POLL_INTERVAL={}",
        shape.clusters,
        shape.services_per_cluster,
        shape.servers_per_service,
        shape.servers(),
        shape.shared_names,
        ms(args.poll_interval)
    );

    let fixture = S3Fixture::start().await.context("starting moto")?;
    let bucket = fixture.bucket().to_owned();
    // Uploads go to moto directly; the syncer and the floor go through the proxy.
    let uploader = fixture.client();
    for c in 0..shape.clusters {
        let bytes = shape.document_bytes(c, None)?;
        upload(
            &uploader,
            &bucket,
            &format!("{PREFIX}{}", shape.key(c)),
            bytes,
        )
        .await?;
    }
    println!("uploaded {} cluster objects", shape.clusters);

    let traefik_dir = tempfile::tempdir().context("a Traefik directory")?;
    let mut envs = fixture.env();
    envs.extend(
        [
            ("STORAGE_URL", fixture.storage_url(PREFIX)),
            (
                "POLL_INTERVAL",
                format!("{}ms", args.poll_interval.as_millis()),
            ),
            ("TRAEFIK_DIR", traefik_dir.path().display().to_string()),
            ("OUTPUT_FILE", OUTPUT_FILE.to_owned()),
            ("ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let started = Instant::now();
    let mut agent = Agent::spawn(&binary, Vec::<String>::new(), envs, "ksd-syncer")?;
    let pid = agent.pid();
    let output = traefik_dir.path().join(OUTPUT_FILE);
    let first = wait_for_content(
        &mut agent,
        &output,
        &shape.last_server_marker(),
        args.startup_timeout,
    )
    .await?;
    println!(
        "first merged file after {} (start to file)",
        ms(first - started)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{:<44} {}",
        "syncer memory with the state loaded:",
        Memory::of(pid)?
    );

    // Propagation. Uploads start at evenly spread points of the poll period, so the wait for
    // the next poll is sampled over the whole period rather than at one phase of it.
    let mut watch = DirWatch::new(traefik_dir.path())?;
    let mut from_done = Vec::new();
    let mut from_start = Vec::new();
    let measuring = Instant::now();
    for i in 0..args.iterations {
        if measuring.elapsed() >= args.time_budget {
            println!(
                "time budget of {} spent: stopping after {i} of {} samples",
                ms(args.time_budget),
                args.iterations
            );
            break;
        }
        let cluster = i as usize % shape.clusters;
        let generation = i + 1;
        let bytes = shape.document_bytes(cluster, Some(generation))?;
        let marker = server_marker(marker_ip(generation), TARGET_PORT);
        tokio::time::sleep(args.poll_interval.mul_f64(spread(i as usize))).await;
        watch.drain();
        let upload_start = Instant::now();
        upload(
            &uploader,
            &bucket,
            &format!("{PREFIX}{}", shape.key(cluster)),
            bytes,
        )
        .await?;
        let upload_done = Instant::now();
        let output_path = output.clone();
        let (returned, seen) = tokio::task::spawn_blocking(move || {
            let seen = watch.wait_until_contains(&output_path, &marker, Duration::from_secs(60));
            (watch, seen)
        })
        .await
        .context("the waiting thread")?;
        watch = returned;
        let seen = seen?;
        from_done.push(seen.saturating_duration_since(upload_done));
        from_start.push(seen.saturating_duration_since(upload_start));
    }
    println!(
        "{:<44} {}",
        "syncer memory after the iterations:",
        Memory::of(pid)?
    );

    // The floor, through the same proxy the syncer uses.
    let proxy = fixture.proxy_client();
    let merged = std::fs::read(&output).context("reading the merged file")?;
    let floor_dir = tempfile::tempdir().context("a directory for the floor's writes")?;
    let writer = OutputFile::new(floor_dir.path(), OUTPUT_FILE);
    let (mut lists, mut gets, mut writes, mut totals) = (vec![], vec![], vec![], vec![]);
    for r in 0..args.floor_runs.max(1) {
        let start = Instant::now();
        let keys = list(&proxy, &bucket).await?;
        anyhow::ensure!(keys == shape.clusters, "listed {keys} keys");
        let listed = Instant::now();
        let key = format!("{PREFIX}{}", shape.key(r % shape.clusters));
        get(&proxy, &bucket, &key).await?;
        let fetched = Instant::now();
        let (bytes, writer_back) = (merged.clone(), writer.clone());
        tokio::task::spawn_blocking(move || writer_back.write_atomic(&bytes))
            .await
            .context("the writing thread")?
            .context("writing the merged file")?;
        let written = Instant::now();
        lists.push(listed - start);
        gets.push(fetched - listed);
        writes.push(written - fetched);
        totals.push(written - start);
    }

    println!("merged file: {} bytes", merged.len());
    line("upload done -> merged file changed", &from_done);
    line("upload start -> merged file changed", &from_start);
    line("floor: LIST", &lists);
    line("floor: GET of one cluster object", &gets);
    line("floor: write + rename of the merged file", &writes);
    line("floor: LIST + GET + write", &totals);
    if let (Some(propagation), Some(floor)) = (Summary::of(&from_done), Summary::of(&totals)) {
        println!(
            "mean propagation {} = POLL_INTERVAL/2 ({}) + {} (floor median {})",
            ms(propagation.mean),
            ms(args.poll_interval / 2),
            ms(propagation.mean.saturating_sub(args.poll_interval / 2)),
            ms(floor.median)
        );
    }

    if let Some(status) = agent.try_exit() {
        anyhow::bail!(
            "the syncer exited during the run ({status})\n{}",
            agent.logs()
        );
    }
    if !stop(&mut agent, Duration::from_secs(15)).await {
        println!("note: the syncer did not stop within 15s of SIGTERM");
    }
    Ok(())
}
