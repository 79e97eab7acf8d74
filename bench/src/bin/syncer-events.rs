//! The real `ksd-syncer` (release build) over S3 (moto behind the testbed's proxy), with bucket
//! event notifications (`S3_EVENT_QUEUE_URL`, moto's S3 → SQS) against polling, in one run:
//!
//! 1. events on, `POLL_INTERVAL=60s` (no listing happens while measuring): upload done →
//!    merged file holding the moved server;
//! 2. events off, `POLL_INTERVAL=1s`, then `10s`: the same, uploads spread evenly over the poll
//!    period;
//! 3. the floor of the event path, measured directly with the AWS SDK through the same proxy:
//!    one PUT, the wait until the notification is received (a long poll already waiting, as the
//!    syncer's is), one GET and one atomic write of a file the size of the merged one.
//!
//! Target: the events median within DEBOUNCE + 2 × floor + 50 ms, DEBOUNCE being the
//! exporter's (the upload is the exporter's PUT, so it is not part of what is measured here).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ksd_bench::agents::{SYNCER_OUTPUT_FILE as OUTPUT_FILE, finish, syncer_env, wait_for_content};
use ksd_bench::binaries::Agent as AgentBinary;
use ksd_bench::files::DirWatch;
use ksd_bench::s3::upload;
use ksd_bench::stats::{Summary, ms, print_line, spread};
use ksd_bench::workload::{SyncerShape, TARGET_PORT, marker_ip, server_marker};
use ksd_syncer::events::{Message, parse_message};
use ksd_syncer::output::OutputFile;
use ksd_testbed::process::Agent;
use ksd_testbed::s3::{EventQueue, S3Fixture};

#[derive(Debug, Parser)]
#[command(
    about = "Propagation of the ksd-syncer binary with S3 event notifications, against polling and the floor"
)]
struct Args {
    /// Clusters
    #[arg(long, default_value_t = 5)]
    clusters: usize,
    /// Services per cluster
    #[arg(long, default_value_t = 20)]
    services: usize,
    /// Servers per service
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// Samples with events on, and with POLL_INTERVAL=1s
    #[arg(long, default_value_t = 40)]
    iterations: u32,
    /// Samples with POLL_INTERVAL=10s
    #[arg(long, default_value_t = 12)]
    slow_iterations: u32,
    /// Floor samples
    #[arg(long, default_value_t = 30)]
    floor_runs: usize,
}

impl Args {
    /// The synthetic state the arguments describe (at least one of everything).
    fn shape(&self) -> SyncerShape {
        SyncerShape::at_least_one(self.clusters, self.services, self.servers, false)
    }
}

fn line(label: &str, samples: &[Duration]) {
    print_line(label, 48, samples);
}

/// One syncer over `prefix`, measured: upload done → file changed.
struct Run<'a> {
    fixture: &'a S3Fixture,
    shape: &'a SyncerShape,
    prefix: &'a str,
    poll_interval: Duration,
    queue_url: Option<&'a str>,
    /// Spread uploads over the poll period (polling), or not (events).
    spread_over: Option<Duration>,
    iterations: u32,
}

impl Run<'_> {
    /// Uploads the initial state under the prefix, starts a syncer on it writing into
    /// `traefik_dir`, takes the samples and ends the syncer.
    async fn measure(&self, traefik_dir: &Path) -> anyhow::Result<Vec<Duration>> {
        let mut agent = self.start(traefik_dir).await?;
        let samples = self.samples(traefik_dir).await?;
        finish(&mut agent, "syncer").await?;
        Ok(samples)
    }

    /// The object key of cluster `index` under the run's prefix.
    fn key(&self, index: usize) -> String {
        format!("{}{}", self.prefix, self.shape.key(index))
    }

    /// Uploads every cluster's initial object, starts the syncer and waits for its first
    /// complete merged file, then gives its queue task time to settle.
    async fn start(&self, traefik_dir: &Path) -> anyhow::Result<Agent> {
        let bucket = self.fixture.bucket().to_owned();
        let uploader = self.fixture.client();
        for c in 0..self.shape.clusters {
            let bytes = self.shape.document_bytes(c, None)?;
            upload(&uploader, &bucket, &self.key(c), bytes).await?;
        }
        let mut envs = self.fixture.env();
        envs.extend(syncer_env(
            self.fixture.storage_url(self.prefix),
            Some(self.poll_interval),
            traefik_dir,
        ));
        if let Some(url) = self.queue_url {
            envs.push(("S3_EVENT_QUEUE_URL".to_owned(), url.to_owned()));
        }
        let binary = AgentBinary::Syncer.path()?;
        let mut agent = Agent::spawn(&binary, Vec::<String>::new(), envs, "ksd-syncer")?;
        wait_for_content(
            &mut agent,
            &traefik_dir.join(OUTPUT_FILE),
            &self.shape.last_server_marker(),
            Duration::from_secs(60),
        )
        .await?;
        // Let the queue task start its long poll and drain the uploads' own events.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(agent)
    }

    /// The samples: one cluster's object uploaded with a server moved, then the time until
    /// the merged file in `traefik_dir` holds it.
    async fn samples(&self, traefik_dir: &Path) -> anyhow::Result<Vec<Duration>> {
        let bucket = self.fixture.bucket().to_owned();
        let uploader = self.fixture.client();
        let output = traefik_dir.join(OUTPUT_FILE);
        let mut watch = DirWatch::new(traefik_dir)?;
        let mut samples = Vec::new();
        for i in 0..self.iterations {
            let cluster = i as usize % self.shape.clusters;
            let generation = i + 1;
            let bytes = self.shape.document_bytes(cluster, Some(generation))?;
            let marker = server_marker(marker_ip(generation), TARGET_PORT);
            let pause = match self.spread_over {
                Some(period) => period.mul_f64(spread(i as usize)),
                None => Duration::from_millis(200),
            };
            tokio::time::sleep(pause).await;
            watch.drain();
            upload(&uploader, &bucket, &self.key(cluster), bytes).await?;
            let upload_done = Instant::now();
            let (returned, seen) = watch
                .wait_until_contains_async(output.clone(), marker, Duration::from_secs(90))
                .await?;
            watch = returned;
            samples.push(seen?.saturating_duration_since(upload_done));
        }
        Ok(samples)
    }
}

/// The floor of the event path, step by step.
#[derive(Default)]
struct Floor {
    puts: Vec<Duration>,
    receives: Vec<Duration>,
    gets: Vec<Duration>,
    writes: Vec<Duration>,
    after_put: Vec<Duration>,
    totals: Vec<Duration>,
}

/// The instants one floor sample passed through.
struct FloorSample {
    start: Instant,
    put_done: Instant,
    received: Instant,
    fetched: Instant,
    written: Instant,
}

impl Floor {
    fn push(&mut self, at: &FloorSample) {
        self.puts.push(at.put_done - at.start);
        self.receives
            .push(at.received.saturating_duration_since(at.put_done));
        self.gets.push(at.fetched - at.received);
        self.writes.push(at.written - at.fetched);
        self.after_put
            .push(at.written.saturating_duration_since(at.put_done));
        self.totals.push(at.written - at.start);
    }
}

/// The first lines: the build and the state measured.
fn print_header(shape: &SyncerShape) {
    println!("syncer-events: {}", ksd_bench::binaries::build_note());
    println!(
        "state: {} clusters x {} services x {} servers = {} servers",
        shape.clusters,
        shape.services_per_cluster,
        shape.servers_per_service,
        shape.servers(),
    );
}

/// Events on, `POLL_INTERVAL=60s`, notifications from `queue`; returns the samples and the
/// merged file the syncer wrote.
async fn measure_events(
    fixture: &S3Fixture,
    shape: &SyncerShape,
    queue: &EventQueue,
    iterations: u32,
) -> anyhow::Result<(Vec<Duration>, Vec<u8>)> {
    let dir = tempfile::tempdir().context("a Traefik directory")?;
    let events = Run {
        fixture,
        shape,
        prefix: "events/",
        poll_interval: Duration::from_secs(60),
        queue_url: Some(queue.url()),
        spread_over: None,
        iterations,
    }
    .measure(dir.path())
    .await?;
    let merged = std::fs::read(dir.path().join(OUTPUT_FILE)).context("the merged file")?;
    println!("merged file: {} bytes", merged.len());
    line(
        "events on (POLL_INTERVAL=60s): upload done -> file",
        &events,
    );
    Ok((events, merged))
}

/// Events off, `POLL_INTERVAL=1s` then `10s`, each over a prefix of its own; the samples of
/// each interval.
async fn measure_polling(
    fixture: &S3Fixture,
    shape: &SyncerShape,
    args: &Args,
) -> anyhow::Result<Vec<(Duration, Vec<Duration>)>> {
    let mut polls = Vec::new();
    for (interval, iterations) in [
        (Duration::from_secs(1), args.iterations),
        (Duration::from_secs(10), args.slow_iterations),
    ] {
        let dir = tempfile::tempdir().context("a Traefik directory")?;
        let prefix = format!("poll{}/", interval.as_secs());
        let samples = Run {
            fixture,
            shape,
            prefix: &prefix,
            poll_interval: interval,
            queue_url: None,
            spread_over: Some(interval),
            iterations,
        }
        .measure(dir.path())
        .await?;
        line(
            &format!("POLL_INTERVAL={}: upload done -> file", ms(interval)),
            &samples,
        );
        polls.push((interval, samples));
    }
    Ok(polls)
}

/// Waits on `queue` for the notification of a PUT of `key`, deleting every message received;
/// returns the instant it was received.
async fn notification_of(queue: &EventQueue, key: &str) -> anyhow::Result<Instant> {
    loop {
        let messages = queue.receive(Duration::from_secs(20)).await?;
        let mut found = None;
        for (body, receipt) in messages {
            queue.delete_message(&receipt).await?;
            let ours = match parse_message(&body) {
                Ok(Message::Records(records)) => records.iter().any(|r| r.key == key),
                _ => false,
            };
            if ours {
                found = Some(Instant::now());
            }
        }
        if let Some(at) = found {
            return Ok(at);
        }
    }
}

/// The floor: PUT, receive, GET, write, through the same proxy as the syncer.
async fn measure_floor(
    fixture: &S3Fixture,
    shape: &SyncerShape,
    merged: &[u8],
    runs: usize,
) -> anyhow::Result<Floor> {
    let floor_queue = fixture.event_queue("floor/").await?;
    // Drain the test event.
    while !floor_queue
        .receive(Duration::from_secs(1))
        .await?
        .is_empty()
    {}
    let proxy = fixture.proxy_client();
    let bucket = fixture.bucket().to_owned();
    let floor_dir = tempfile::tempdir().context("a directory for the floor's writes")?;
    let writer = OutputFile::new(floor_dir.path(), OUTPUT_FILE);
    let mut floor = Floor::default();
    for r in 0..runs.max(1) {
        let key = format!("floor/{}", shape.key(r % shape.clusters));
        let bytes = shape.document_bytes(r % shape.clusters, Some(1000 + r as u32))?;
        let start = Instant::now();
        let waiting = async {
            tokio::time::timeout(Duration::from_secs(30), notification_of(&floor_queue, &key))
                .await
                .context("no notification for the floor's PUT within 30 s")?
        };
        let (received, put) = tokio::join!(waiting, async {
            upload(&proxy, &bucket, &key, bytes).await?;
            anyhow::Ok(Instant::now())
        });
        let (received, put_done) = (received?, put?);
        proxy
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .context("fetching")?
            .body
            .collect()
            .await
            .context("reading")?;
        let fetched = Instant::now();
        let (bytes, writer_back) = (merged.to_vec(), writer.clone());
        tokio::task::spawn_blocking(move || writer_back.write_atomic(&bytes))
            .await
            .context("the writing thread")?
            .context("writing the merged file")?;
        let written = Instant::now();
        floor.push(&FloorSample {
            start,
            put_done,
            received,
            fetched,
            written,
        });
    }
    Ok(floor)
}

/// The result lines: every mode's samples, the floor's steps, and the events median against
/// the target.
fn report(events: &[Duration], polls: &[(Duration, Vec<Duration>)], floor: &Floor) {
    line("events on (POLL_INTERVAL=60s): upload done -> file", events);
    for (interval, samples) in polls {
        line(
            &format!(
                "events off, POLL_INTERVAL={}: upload done -> file",
                ms(*interval)
            ),
            samples,
        );
    }
    line("floor: PUT", &floor.puts);
    line("floor: PUT done -> notification received", &floor.receives);
    line("floor: GET of the object", &floor.gets);
    line("floor: write + rename of the merged file", &floor.writes);
    line(
        "floor: receive + GET + write (after the PUT)",
        &floor.after_put,
    );
    line("floor: PUT + receive + GET + write", &floor.totals);
    if let (Some(events), Some(floor)) = (Summary::of(events), Summary::of(&floor.totals)) {
        let target = floor.median * 2 + Duration::from_millis(50);
        println!(
            "events median {} vs 2 x floor median + 50 ms = {} (+ the exporter's DEBOUNCE)",
            ms(events.median),
            ms(target)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = args.shape();
    print_header(&shape);
    let fixture = S3Fixture::start().await.context("starting moto")?;

    let queue = fixture.event_queue("events/").await?;
    let (events, merged) = measure_events(&fixture, &shape, &queue, args.iterations).await?;
    let polls = measure_polling(&fixture, &shape, &args).await?;
    let floor = measure_floor(&fixture, &shape, &merged, args.floor_runs).await?;
    report(&events, &polls, &floor);
    Ok(())
}
