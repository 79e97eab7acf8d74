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

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::agents::{SYNCER_OUTPUT_FILE as OUTPUT_FILE, finish, syncer_env, wait_for_content};
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

impl Args {
    /// The synthetic state the arguments describe (at least one of everything).
    fn shape(&self) -> SyncerShape {
        SyncerShape::at_least_one(
            self.clusters,
            self.services,
            self.servers,
            self.shared_names,
        )
    }
}

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

/// Propagation samples: from the end, and from the start, of an upload to the merged file
/// holding its change.
struct Propagation {
    from_done: Vec<Duration>,
    from_start: Vec<Duration>,
}

/// The floor of one cycle, step by step, and the size of the merged file it writes.
struct Floor {
    merged_len: usize,
    lists: Vec<Duration>,
    gets: Vec<Duration>,
    writes: Vec<Duration>,
    totals: Vec<Duration>,
}

/// The first lines: the build, the binary and the state measured.
fn print_header(args: &Args, shape: &SyncerShape, binary: &Path) {
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
}

/// The object key of cluster `index` under the benchmark's prefix.
fn object_key(shape: &SyncerShape, index: usize) -> String {
    format!("{PREFIX}{}", shape.key(index))
}

/// Uploads every cluster's initial object.
async fn upload_state(
    uploader: &aws_sdk_s3::Client,
    bucket: &str,
    shape: &SyncerShape,
) -> anyhow::Result<()> {
    for c in 0..shape.clusters {
        let bytes = shape.document_bytes(c, None)?;
        upload(uploader, bucket, &object_key(shape, c), bytes).await?;
    }
    println!("uploaded {} cluster objects", shape.clusters);
    Ok(())
}

/// Starts the syncer over the fixture's bucket, writing into `traefik_dir`, and waits for its
/// first complete merged file; prints how long that took and the syncer's memory then.
async fn start_syncer(
    fixture: &S3Fixture,
    binary: &Path,
    args: &Args,
    shape: &SyncerShape,
    traefik_dir: &Path,
) -> anyhow::Result<Agent> {
    let mut envs = fixture.env();
    envs.extend(syncer_env(
        fixture.storage_url(PREFIX),
        Some(args.poll_interval),
        traefik_dir,
    ));
    let started = Instant::now();
    let mut agent = Agent::spawn(binary, Vec::<String>::new(), envs, "ksd-syncer")?;
    let output = traefik_dir.join(OUTPUT_FILE);
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
        Memory::of(agent.pid())?
    );
    Ok(agent)
}

/// Propagation. Uploads start at evenly spread points of the poll period, so the wait for the
/// next poll is sampled over the whole period rather than at one phase of it.
async fn measure_propagation(
    args: &Args,
    shape: &SyncerShape,
    uploader: &aws_sdk_s3::Client,
    bucket: &str,
    traefik_dir: &Path,
) -> anyhow::Result<Propagation> {
    let output = traefik_dir.join(OUTPUT_FILE);
    let mut watch = DirWatch::new(traefik_dir)?;
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
        upload(uploader, bucket, &object_key(shape, cluster), bytes).await?;
        let upload_done = Instant::now();
        let (returned, seen) = watch
            .wait_until_contains_async(output.clone(), marker, Duration::from_secs(60))
            .await?;
        watch = returned;
        let seen = seen?;
        from_done.push(seen.saturating_duration_since(upload_done));
        from_start.push(seen.saturating_duration_since(upload_start));
    }
    Ok(Propagation {
        from_done,
        from_start,
    })
}

/// The floor, through the same proxy the syncer uses: per run, one LIST of the prefix, one GET
/// of a cluster object, and one atomic write of the merged file at `output`'s size.
async fn measure_floor(
    proxy: &aws_sdk_s3::Client,
    bucket: &str,
    shape: &SyncerShape,
    output: &Path,
    runs: usize,
) -> anyhow::Result<Floor> {
    let merged = std::fs::read(output).context("reading the merged file")?;
    let floor_dir = tempfile::tempdir().context("a directory for the floor's writes")?;
    let writer = OutputFile::new(floor_dir.path(), OUTPUT_FILE);
    let (mut lists, mut gets, mut writes, mut totals) = (vec![], vec![], vec![], vec![]);
    for r in 0..runs.max(1) {
        let start = Instant::now();
        let keys = list(proxy, bucket).await?;
        anyhow::ensure!(keys == shape.clusters, "listed {keys} keys");
        let listed = Instant::now();
        get(proxy, bucket, &object_key(shape, r % shape.clusters)).await?;
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
    Ok(Floor {
        merged_len: merged.len(),
        lists,
        gets,
        writes,
        totals,
    })
}

/// The result lines: propagation, the floor's steps, and the mean propagation split into the
/// wait for the next poll and the rest.
fn report(poll_interval: Duration, propagation: &Propagation, floor: &Floor) {
    println!("merged file: {} bytes", floor.merged_len);
    line("upload done -> merged file changed", &propagation.from_done);
    line(
        "upload start -> merged file changed",
        &propagation.from_start,
    );
    line("floor: LIST", &floor.lists);
    line("floor: GET of one cluster object", &floor.gets);
    line("floor: write + rename of the merged file", &floor.writes);
    line("floor: LIST + GET + write", &floor.totals);
    if let (Some(measured), Some(floor)) = (
        Summary::of(&propagation.from_done),
        Summary::of(&floor.totals),
    ) {
        println!(
            "mean propagation {} = POLL_INTERVAL/2 ({}) + {} (floor median {})",
            ms(measured.mean),
            ms(poll_interval / 2),
            ms(measured.mean.saturating_sub(poll_interval / 2)),
            ms(floor.median)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    let binary = AgentBinary::Syncer.path()?;
    print_header(&args, &shape, &binary);

    let fixture = S3Fixture::start().await.context("starting moto")?;
    let bucket = fixture.bucket().to_owned();
    // Uploads go to moto directly; the syncer and the floor go through the proxy.
    let uploader = fixture.client();
    upload_state(&uploader, &bucket, &shape).await?;

    let traefik_dir = tempfile::tempdir().context("a Traefik directory")?;
    let mut agent = start_syncer(&fixture, &binary, &args, &shape, traefik_dir.path()).await?;
    let propagation =
        measure_propagation(&args, &shape, &uploader, &bucket, traefik_dir.path()).await?;
    println!(
        "{:<44} {}",
        "syncer memory after the iterations:",
        Memory::of(agent.pid())?
    );
    let output = traefik_dir.path().join(OUTPUT_FILE);
    let floor = measure_floor(
        &fixture.proxy_client(),
        &bucket,
        &shape,
        &output,
        args.floor_runs,
    )
    .await?;
    report(args.poll_interval, &propagation, &floor);
    finish(&mut agent, "syncer").await
}
