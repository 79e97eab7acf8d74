//! The real `ksd-exporter` (release build) against the testbed's API server double holding a
//! large cluster, publishing to a `file://` directory:
//!
//! 1. time from start to the first publish (initial list of every Service and slice);
//! 2. resident memory (`VmRSS`, `VmHWM`) after the first publish;
//! 3. a stretch of small changes (one EndpointSlice every `--churn-every`), then memory again;
//! 4. latency from one EndpointSlice change to the object holding it: the slice is written to
//!    the server, and the object file is stat'ed every millisecond until a new version holding
//!    the changed address appears. Reported as measured and minus `DEBOUNCE`;
//! 5. the floor of such a change, in the same run with the exporter stopped: the changed
//!    slice's watch event arriving from the API server double (a watch of the bench's own),
//!    and a durable write of a file of the object's size; and the ratio of (latency minus
//!    `DEBOUNCE`) to it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::agents::{stop, wait_for_content};
use ksd_bench::binaries::Agent as AgentBinary;
use ksd_bench::floor;
use ksd_bench::procfs::{Memory, mib};
use ksd_bench::stats::{Summary, ms, print_line, timed};
use ksd_bench::workload::{ExporterShape, TARGET_PORT, marker_ip, server_marker};
use ksd_testbed::apiserver::{ApiServerOptions, TestApiServer};
use ksd_testbed::process::Agent;

#[derive(Debug, Parser)]
#[command(about = "Memory and change-to-upload latency of the ksd-exporter binary")]
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
    /// The exporter's DEBOUNCE
    #[arg(long, default_value = "100ms", value_parser = ksd_shared::parse_duration)]
    debounce: Duration,
    /// The exporter's MAX_DELAY
    #[arg(long, default_value = "1s", value_parser = ksd_shared::parse_duration)]
    max_delay: Duration,
    /// How long small changes go on before memory is read again
    #[arg(long, default_value = "60s", value_parser = ksd_shared::parse_duration)]
    churn: Duration,
    /// One EndpointSlice change every this long during the churn
    #[arg(long, default_value = "500ms", value_parser = ksd_shared::parse_duration)]
    churn_every: Duration,
    /// Latency samples
    #[arg(long, default_value_t = 30)]
    iterations: u32,
    /// Quiet time between two latency samples
    #[arg(long, default_value = "300ms", value_parser = ksd_shared::parse_duration)]
    gap: Duration,
    /// Longest wait for the first publish
    #[arg(long, default_value = "300s", value_parser = ksd_shared::parse_duration)]
    startup_timeout: Duration,
}

impl Args {
    /// The cluster the arguments describe (at least one Service).
    fn shape(&self) -> ExporterShape {
        ExporterShape {
            namespaces: self.namespaces,
            services: self.services.max(1),
            endpoints_per_service: self.endpoints_per_service,
        }
    }
}

const CLUSTER: &str = "bench";

fn humantime(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The EndpointSlice changes of the run, numbered from 1: change `n` moves the first pod of
/// the Service [`ExporterShape::changed_service`] picks to the marker address of `n`.
struct Changes<'a> {
    server: &'a TestApiServer,
    shape: &'a ExporterShape,
    generation: u32,
}

impl Changes<'_> {
    /// The Service and the number of the next change.
    fn next(&mut self) -> (usize, u32) {
        self.generation += 1;
        (self.shape.changed_service(self.generation), self.generation)
    }

    /// Writes the slices of Service `index` with its first pod moved to the marker address of
    /// `generation`; returns the text that shows the change in the published object.
    fn write(&self, index: usize, generation: u32) -> anyhow::Result<String> {
        for slice in self.shape.changed_slices(index, generation) {
            self.server
                .apply_typed(&slice)
                .context("writing an EndpointSlice")?;
        }
        Ok(server_marker(marker_ip(generation), TARGET_PORT))
    }

    /// Times from writing Service `index`'s changed slices to their watch event arriving on a
    /// watch the bench opened just before, from the current resourceVersion.
    async fn watch_event_time(&self, index: usize, generation: u32) -> anyhow::Result<Duration> {
        let server = self.server;
        let slices = self.shape.changed_slices(index, generation);
        let first = slices.first().context("a Service without slices")?;
        let namespace = first.metadata.namespace.clone().unwrap_or_default();
        let name = first.metadata.name.clone().unwrap_or_default();
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?watch=true&resourceVersion={}",
            server.resource_version()
        );
        let (_, mut events) = server
            .client()
            .watch(&path)
            .await
            .context("opening a watch")?;
        let start = Instant::now();
        for slice in &slices {
            server
                .apply_typed(slice)
                .context("writing an EndpointSlice")?;
        }
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .context("no watch event within 10 s")?
                .map_err(|end| anyhow::anyhow!("the watch ended: {end:?}"))?;
            let named = event
                .pointer("/object/metadata/name")
                .and_then(|v| v.as_str());
            if named == Some(name.as_str()) {
                return Ok(start.elapsed());
            }
        }
    }
}

/// The floor of a change, step by step, and the size of the object written.
struct Floor {
    object_len: usize,
    events: Vec<Duration>,
    writes: Vec<Duration>,
    totals: Vec<Duration>,
}

fn memory_line(label: &str, memory: Memory) {
    println!("{label:<40} {memory}");
}

/// The first lines: the build, the binary and the state measured.
fn print_header(args: &Args, shape: &ExporterShape, binary: &Path) {
    println!("exporter-process: {}", ksd_bench::binaries::build_note());
    println!("binary: {}", binary.display());
    println!(
        "state: {} Services, {} endpoints, {} namespaces; DEBOUNCE={} MAX_DELAY={}",
        shape.services,
        shape.endpoints(),
        shape.namespaces,
        humantime(args.debounce),
        humantime(args.max_delay)
    );
}

/// Starts the API server double and writes every Service and EndpointSlice of `shape` to it.
async fn populate(shape: &ExporterShape) -> anyhow::Result<TestApiServer> {
    // A history long enough that the initial objects never expire while the exporter lists.
    let server = TestApiServer::start_with(ApiServerOptions::default().history_limit(100_000))
        .await
        .context("starting the API server double")?;
    let (populated, took) = timed(|| -> anyhow::Result<usize> {
        let objects = shape.objects();
        for service in &objects.services {
            server.apply_typed(service).context("writing a Service")?;
        }
        for slice in &objects.slices {
            server
                .apply_typed(slice)
                .context("writing an EndpointSlice")?;
        }
        Ok(objects.services.len() + objects.slices.len())
    });
    println!(
        "API server double populated with {} objects in {}",
        populated?,
        ms(took)
    );
    Ok(server)
}

/// Starts the exporter on `server`'s cluster, publishing into `storage`, and waits for
/// the first complete `object`; prints how long that took and the exporter's memory then,
/// which it returns.
async fn start_exporter(
    binary: &Path,
    server: &TestApiServer,
    storage: &Path,
    object: &Path,
    args: &Args,
    shape: &ExporterShape,
) -> anyhow::Result<(Agent, Memory)> {
    let envs: Vec<(String, String)> = [
        ("KUBECONFIG", server.kubeconfig_path().display().to_string()),
        ("CLUSTER_NAME", CLUSTER.to_owned()),
        ("STORAGE_URL", format!("file://{}/", storage.display())),
        ("DEBOUNCE", humantime(args.debounce)),
        ("MAX_DELAY", humantime(args.max_delay)),
        ("ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let started = Instant::now();
    let mut agent = Agent::spawn(binary, Vec::<String>::new(), envs, "ksd-exporter")?;

    // Nothing is published before every watcher has listed, so the first object is complete;
    // its last Service's name proves it.
    let last = format!("\"{}\"", shape.traefik_name(shape.services - 1));
    let first = wait_for_content(&mut agent, object, &last, args.startup_timeout).await?;
    let text = std::fs::read_to_string(object).context("reading the first object")?;
    println!(
        "first publish after {} (start to object): {} bytes, {} servers",
        ms(first - started),
        text.len(),
        text.matches("- url: ").count()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_first = Memory::of(agent.pid())?;
    memory_line("memory after the first publish:", after_first);
    Ok((agent, after_first))
}

/// The churn: small changes, one slice at a time, each published on its own, for `--churn`;
/// then the memory, the highest VmRSS seen, and VmRSS every ten seconds (to tell growth that
/// levels off from growth that does not).
async fn churn(
    agent: &mut Agent,
    object: &Path,
    changes: &mut Changes<'_>,
    args: &Args,
    after_first: Memory,
) -> anyhow::Result<()> {
    let pid = agent.pid();
    let mut peak_rss = after_first.rss_kib;
    let churn_start = Instant::now();
    let mut last_marker = None;
    let mut count = 0;
    let mut trail = Vec::new();
    let mut next_sample = Duration::from_secs(10);
    while churn_start.elapsed() < args.churn {
        let (index, generation) = changes.next();
        last_marker = Some(changes.write(index, generation)?);
        count += 1;
        tokio::time::sleep(args.churn_every).await;
        let rss = Memory::of(pid)?.rss_kib;
        peak_rss = peak_rss.max(rss);
        if churn_start.elapsed() >= next_sample {
            trail.push(format!("{}s {}", next_sample.as_secs(), mib(rss)));
            next_sample += Duration::from_secs(10);
        }
    }
    if let Some(marker) = &last_marker {
        wait_for_content(agent, object, marker, Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_churn = Memory::of(pid)?;
    println!(
        "churn: {count} slice changes over {} (one every {})",
        ms(churn_start.elapsed()),
        ms(args.churn_every)
    );
    memory_line("memory after the churn:", after_churn);
    println!(
        "{:<40} {}",
        "highest VmRSS sampled during the churn:",
        mib(peak_rss)
    );
    println!("{:<40} {}", "VmRSS during the churn:", trail.join(", "));
    Ok(())
}

/// Latency: change, then watch the object for the new address, `--gap` apart.
async fn measure_latency(
    agent: &mut Agent,
    object: &Path,
    changes: &mut Changes<'_>,
    args: &Args,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    for _ in 0..args.iterations {
        let (index, generation) = changes.next();
        let changed_at = Instant::now();
        let marker = changes.write(index, generation)?;
        let seen = wait_for_content(agent, object, &marker, Duration::from_secs(30)).await?;
        samples.push(seen.saturating_duration_since(changed_at));
        tokio::time::sleep(args.gap).await;
    }
    Ok(samples)
}

/// The exporter's memory at the end and the latency, as measured and minus `debounce`.
fn report_latency(samples: &[Duration], debounce: Duration, at_the_end: Memory) {
    memory_line("memory at the end:", at_the_end);
    if let Some(summary) = Summary::of(samples) {
        println!("{:<40} {summary}", "change -> new object content:");
        println!(
            "{:<40} {}",
            format!("same, minus DEBOUNCE ({}):", humantime(debounce)),
            summary.minus(debounce)
        );
    }
}

/// The floor, with the exporter stopped: the change's watch event, and a durable write of
/// the object's bytes, `runs` of each.
async fn measure_floor(
    changes: &mut Changes<'_>,
    object: &Path,
    runs: usize,
) -> anyhow::Result<Floor> {
    let mut events = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (index, generation) = changes.next();
        events.push(changes.watch_event_time(index, generation).await?);
    }
    let bytes = std::fs::read(object).context("reading the last object")?;
    let writes = floor::object_writes(runs, &bytes)?;
    let totals = floor::sums(&events, &writes);
    Ok(Floor {
        object_len: bytes.len(),
        events,
        writes,
        totals,
    })
}

/// The floor's lines, and the ratio of (latency minus `debounce`) to it.
fn report_floor(steps: &Floor, samples: &[Duration], debounce: Duration) {
    let line = |label: &str, samples: &[Duration]| print_line(label, 40, samples);
    line("floor: watch event of the change:", &steps.events);
    line(
        &format!("floor: durable write of {} bytes:", steps.object_len),
        &steps.writes,
    );
    line("floor: event + write:", &steps.totals);
    if let (Some(measured), Some(floor_summary)) =
        (Summary::of(samples), Summary::of(&steps.totals))
    {
        let measured = measured.minus(debounce);
        println!(
            "ratio to the floor ((latency - DEBOUNCE) / floor): median {}, p99 {}",
            floor::ratio(measured.median, floor_summary.median),
            floor::ratio(measured.p99, floor_summary.p99)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    let binary = AgentBinary::Exporter.path()?;
    print_header(&args, &shape, &binary);
    let server = populate(&shape).await?;

    let storage = tempfile::tempdir().context("a storage directory")?;
    let object = storage.path().join(format!("{CLUSTER}.traefik.yaml"));
    let (mut agent, after_first) =
        start_exporter(&binary, &server, storage.path(), &object, &args, &shape).await?;
    let mut changes = Changes {
        server: &server,
        shape: &shape,
        generation: 0,
    };
    churn(&mut agent, &object, &mut changes, &args, after_first).await?;
    let samples = measure_latency(&mut agent, &object, &mut changes, &args).await?;
    report_latency(&samples, args.debounce, Memory::of(agent.pid())?);

    if !stop(&mut agent, Duration::from_secs(15)).await {
        println!("note: the exporter did not stop within 15s of SIGTERM");
    }
    let runs = args.iterations.max(1) as usize;
    let floor = measure_floor(&mut changes, &object, runs).await?;
    report_floor(&floor, &samples, args.debounce);
    Ok(())
}
