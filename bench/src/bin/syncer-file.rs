//! The real `ksd-syncer` (release build) over `file://` storage holding many clusters:
//!
//! 1. time from start to the first merged file;
//! 2. resident memory (`VmRSS`, `VmHWM`) with that state, and again after the iterations;
//! 3. propagation: a cluster's object is replaced atomically (complete temporary file, fsync,
//!    then the timed rename) with one server moved, and file events on Traefik's directory
//!    tell when the merged file holding that server appears;
//! 4. the floor, after each sample in the same run: read and hash the changed object, then
//!    write, fsync and rename a file of the merged file's size (the syncer's own writer), and
//!    the propagation as a multiple of it.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::agents::{SYNCER_OUTPUT_FILE as OUTPUT_FILE, finish, syncer_env, wait_for_content};
use ksd_bench::binaries::Agent as AgentBinary;
use ksd_bench::files::DirWatch;
use ksd_bench::procfs::Memory;
use ksd_bench::stats::{Summary, ms, print_line, print_ratio};
use ksd_bench::workload::{SyncerShape, TARGET_PORT, marker_ip, server_marker};
use ksd_runtime::storage::{PutCondition, S3Options, Storage, StorageUrl};
use ksd_syncer::output::OutputFile;
use ksd_testbed::process::Agent;

#[derive(Debug, Parser)]
#[command(about = "Memory and file:// propagation latency of the ksd-syncer binary")]
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
    /// Propagation samples
    #[arg(long, default_value_t = 200)]
    iterations: u32,
    /// Quiet time between two samples
    #[arg(long, default_value = "100ms", value_parser = ksd_shared::parse_duration)]
    gap: Duration,
    /// Stop taking samples after this long, even short of --iterations, to bound the run
    #[arg(long, default_value = "240s", value_parser = ksd_shared::parse_duration)]
    time_budget: Duration,
    /// Longest wait for the first merged file
    #[arg(long, default_value = "120s", value_parser = ksd_shared::parse_duration)]
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

/// Replaces `dir/key` with `bytes` the way a careful writer does, and returns the instant of
/// the rename that makes the new content visible.
fn replace_object(dir: &Path, key: &str, bytes: &[u8]) -> anyhow::Result<Instant> {
    // Hidden and ending in .tmp: the storage listing skips it.
    let temp = dir.join(".bench-next.tmp");
    let mut file = std::fs::File::create(&temp).context("creating the temporary object")?;
    file.write_all(bytes)
        .context("writing the temporary object")?;
    file.sync_all().context("syncing the temporary object")?;
    drop(file);
    let at = Instant::now();
    std::fs::rename(&temp, dir.join(key)).context("renaming the object into place")?;
    Ok(at)
}

/// The propagation samples, each followed by a floor sample, for `iterations` changes `gap`
/// apart, or until `budget` is spent. Blocking: run it on a thread of its own.
fn measure(
    shape: SyncerShape,
    storage_dir: &Path,
    traefik_dir: &Path,
    iterations: u32,
    gap: Duration,
    budget: Duration,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let output = traefik_dir.join(OUTPUT_FILE);
    let watch = DirWatch::new(traefik_dir)?;
    let floor_dir = tempfile::tempdir_in(traefik_dir.parent().unwrap_or(traefik_dir))
        .context("a directory for the floor's writes")?;
    let writer = OutputFile::new(floor_dir.path(), OUTPUT_FILE);
    let mut samples = Vec::new();
    let mut floor = Vec::new();
    let start = Instant::now();
    for i in 0..iterations {
        if start.elapsed() >= budget {
            println!(
                "time budget of {} spent: stopping after {i} of {iterations} samples",
                ms(budget)
            );
            break;
        }
        let cluster = i as usize % shape.clusters;
        let generation = i + 1;
        let bytes = shape
            .document_bytes(cluster, Some(generation))
            .context("rendering a cluster document")?;
        let marker = server_marker(marker_ip(generation), TARGET_PORT);
        watch.drain();
        let replaced = replace_object(storage_dir, &shape.key(cluster), &bytes)?;
        let seen = watch.wait_until_contains(&output, &marker, Duration::from_secs(30))?;
        samples.push(seen.saturating_duration_since(replaced));
        let merged = std::fs::read(&output).context("reading the merged file")?;
        floor.push(floor_once(
            storage_dir,
            &shape.key(cluster),
            &merged,
            &writer,
        )?);
        std::thread::sleep(gap);
    }
    Ok((samples, floor))
}

/// What any syncer has to do for one change: read and hash the changed object, then replace
/// a file of the merged file's size atomically (temporary file, fsync, rename).
fn floor_once(
    storage_dir: &Path,
    key: &str,
    merged: &[u8],
    writer: &OutputFile,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let object = std::fs::read(storage_dir.join(key)).context("reading the changed object")?;
    std::hint::black_box(ksd_shared::content_hash(&object));
    writer
        .write_atomic(merged)
        .context("writing the floor's file")?;
    Ok(start.elapsed())
}

/// The first lines: the build, the binary and the state measured.
fn print_header(shape: &SyncerShape, binary: &Path) {
    println!("syncer-file: {}", ksd_bench::binaries::build_note());
    println!("binary: {}", binary.display());
    println!(
        "state: {} clusters x {} services x {} servers = {} servers; shared names: {}",
        shape.clusters,
        shape.services_per_cluster,
        shape.servers_per_service,
        shape.servers(),
        shape.shared_names
    );
}

/// Opens `storage_dir` as `file://` storage and stores every cluster's initial object in it.
async fn store_state(storage_dir: &Path, shape: &SyncerShape) -> anyhow::Result<Storage> {
    let storage = Storage::connect(
        &StorageUrl::Local {
            dir: storage_dir.to_owned(),
        },
        &S3Options::default(),
    )
    .await
    .context("opening the storage directory")?;
    let mut total = 0;
    for c in 0..shape.clusters {
        let bytes = shape.document_bytes(c, None)?;
        total += bytes.len();
        let metadata = [("cluster".to_owned(), shape.cluster(c).to_string())].into();
        storage
            .put(&shape.key(c), bytes, &metadata, PutCondition::None)
            .await
            .with_context(|| format!("storing {}", shape.key(c)))?;
    }
    println!("stored {} cluster objects, {total} bytes", shape.clusters);
    Ok(storage)
}

/// What every file event costs the syncer before it decides anything: a listing of the
/// directory, with an ETag for every object.
async fn time_listings(storage: &Storage, shape: &SyncerShape) -> anyhow::Result<()> {
    let mut listings = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let listed = storage
            .list()
            .await
            .context("listing the storage directory")?;
        listings.push(start.elapsed());
        anyhow::ensure!(
            listed.len() == shape.clusters,
            "listed {} objects",
            listed.len()
        );
    }
    if let Some(summary) = Summary::of(&listings) {
        println!("{:<40} {summary}", "file:// listing (Storage::list):");
    }
    Ok(())
}

/// Starts the syncer over `storage_dir`, writing into `traefik_dir`, and waits for its first
/// complete merged file; prints how long that took, its size and the syncer's memory then.
async fn start_syncer(
    binary: &Path,
    storage_dir: &Path,
    traefik_dir: &Path,
    shape: &SyncerShape,
    startup_timeout: Duration,
) -> anyhow::Result<Agent> {
    let envs = syncer_env(
        format!("file://{}/", storage_dir.display()),
        None,
        traefik_dir,
    );
    let started = Instant::now();
    let mut agent = Agent::spawn(binary, Vec::<String>::new(), envs, "ksd-syncer")?;
    let output = traefik_dir.join(OUTPUT_FILE);
    let first = wait_for_content(
        &mut agent,
        &output,
        &shape.last_server_marker(),
        startup_timeout,
    )
    .await?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!(
        "first merged file after {} (start to file): {size} bytes",
        ms(first - started)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{:<40} {}",
        "memory with the state loaded:",
        Memory::of(agent.pid())?
    );
    Ok(agent)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    let binary = AgentBinary::Syncer.path()?;
    print_header(&shape, &binary);

    let storage_dir = tempfile::tempdir().context("a storage directory")?;
    let traefik_dir = tempfile::tempdir().context("a Traefik directory")?;
    let storage = store_state(storage_dir.path(), &shape).await?;
    time_listings(&storage, &shape).await?;
    let mut agent = start_syncer(
        &binary,
        storage_dir.path(),
        traefik_dir.path(),
        &shape,
        args.startup_timeout,
    )
    .await?;

    let (storage_path, traefik_path) =
        (storage_dir.path().to_owned(), traefik_dir.path().to_owned());
    let (iterations, gap, budget) = (args.iterations, args.gap, args.time_budget);
    let (samples, floor) = tokio::task::spawn_blocking(move || {
        measure(shape, &storage_path, &traefik_path, iterations, gap, budget)
    })
    .await
    .context("the measuring thread")??;
    println!(
        "{:<40} {}",
        "memory after the iterations:",
        Memory::of(agent.pid())?
    );
    print_line("object rename -> merged file changed:", 40, &samples);
    print_line("floor: read+hash object, write merged:", 40, &floor);
    print_ratio("propagation / floor:", 40, &samples, &floor);
    finish(&mut agent, "syncer").await
}
