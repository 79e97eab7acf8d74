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
use ksd_bench::agents::{stop, wait_for_content};
use ksd_bench::binaries::Agent as AgentBinary;
use ksd_bench::files::DirWatch;
use ksd_bench::s3::upload;
use ksd_bench::stats::{Summary, ms, print_line, spread};
use ksd_bench::workload::{SyncerShape, TARGET_PORT, marker_ip, server_marker};
use ksd_syncer::output::OutputFile;
use ksd_testbed::process::Agent;
use ksd_testbed::s3::S3Fixture;

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

const OUTPUT_FILE: &str = "k8s-service-discovery.yml";

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
    async fn measure(&self, traefik_dir: &Path) -> anyhow::Result<Vec<Duration>> {
        let bucket = self.fixture.bucket().to_owned();
        let uploader = self.fixture.client();
        for c in 0..self.shape.clusters {
            let bytes = self.shape.document_bytes(c, None)?;
            let key = format!("{}{}", self.prefix, self.shape.key(c));
            upload(&uploader, &bucket, &key, bytes).await?;
        }
        let mut envs = self.fixture.env();
        envs.extend(
            [
                ("STORAGE_URL", self.fixture.storage_url(self.prefix)),
                (
                    "POLL_INTERVAL",
                    format!("{}ms", self.poll_interval.as_millis()),
                ),
                ("TRAEFIK_DIR", traefik_dir.display().to_string()),
                ("OUTPUT_FILE", OUTPUT_FILE.to_owned()),
                ("ADMIN_ADDR", "127.0.0.1:0".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        if let Some(url) = self.queue_url {
            envs.push(("S3_EVENT_QUEUE_URL".to_owned(), url.to_owned()));
        }
        let binary = AgentBinary::Syncer.path()?;
        let mut agent = Agent::spawn(&binary, Vec::<String>::new(), envs, "ksd-syncer")?;
        let output = traefik_dir.join(OUTPUT_FILE);
        wait_for_content(
            &mut agent,
            &output,
            &self.shape.last_server_marker(),
            Duration::from_secs(60),
        )
        .await?;
        // Let the queue task start its long poll and drain the uploads' own events.
        tokio::time::sleep(Duration::from_secs(3)).await;

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
            let key = format!("{}{}", self.prefix, self.shape.key(cluster));
            upload(&uploader, &bucket, &key, bytes).await?;
            let upload_done = Instant::now();
            let output_path = output.clone();
            let (returned, seen) = tokio::task::spawn_blocking(move || {
                let seen =
                    watch.wait_until_contains(&output_path, &marker, Duration::from_secs(90));
                (watch, seen)
            })
            .await
            .context("the waiting thread")?;
            watch = returned;
            samples.push(seen?.saturating_duration_since(upload_done));
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
        Ok(samples)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = SyncerShape {
        clusters: args.clusters.max(1),
        services_per_cluster: args.services.max(1),
        servers_per_service: args.servers.max(1),
        shared_names: false,
    };
    println!("syncer-events: {}", ksd_bench::binaries::build_note());
    println!(
        "state: {} clusters x {} services x {} servers = {} servers",
        shape.clusters,
        shape.services_per_cluster,
        shape.servers_per_service,
        shape.servers(),
    );
    let fixture = S3Fixture::start().await.context("starting moto")?;

    // 1. Events on.
    let queue = fixture.event_queue("events/").await?;
    let dir = tempfile::tempdir().context("a Traefik directory")?;
    let events = Run {
        fixture: &fixture,
        shape: &shape,
        prefix: "events/",
        poll_interval: Duration::from_secs(60),
        queue_url: Some(queue.url()),
        spread_over: None,
        iterations: args.iterations,
    }
    .measure(dir.path())
    .await?;
    let merged = std::fs::read(dir.path().join(OUTPUT_FILE)).context("the merged file")?;
    println!("merged file: {} bytes", merged.len());
    line(
        "events on (POLL_INTERVAL=60s): upload done -> file",
        &events,
    );

    // 2. Polling.
    let mut polls = Vec::new();
    for (interval, iterations) in [
        (Duration::from_secs(1), args.iterations),
        (Duration::from_secs(10), args.slow_iterations),
    ] {
        let dir = tempfile::tempdir().context("a Traefik directory")?;
        let prefix = format!("poll{}/", interval.as_secs());
        let samples = Run {
            fixture: &fixture,
            shape: &shape,
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

    // 3. The floor: PUT, receive, GET, write, through the same proxy as the syncer.
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
    let (mut puts, mut receives, mut gets, mut writes, mut after_put, mut totals) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in 0..args.floor_runs.max(1) {
        let key = format!("floor/{}", shape.key(r % shape.clusters));
        let bytes = shape.document_bytes(r % shape.clusters, Some(1000 + r as u32))?;
        let waiting = {
            let key = key.clone();
            let receiver = &floor_queue;
            async move {
                loop {
                    let messages = receiver.receive(Duration::from_secs(20)).await?;
                    let mut found = None;
                    for (body, receipt) in messages {
                        receiver.delete_message(&receipt).await?;
                        let ours = match ksd_syncer::events::parse_message(&body) {
                            Ok(ksd_syncer::events::Message::Records(records)) => {
                                records.iter().any(|r| r.key == key)
                            }
                            _ => false,
                        };
                        if ours {
                            found = Some(Instant::now());
                        }
                    }
                    if let Some(at) = found {
                        return anyhow::Ok(at);
                    }
                }
            }
        };
        let start = Instant::now();
        let waiting = async {
            tokio::time::timeout(Duration::from_secs(30), waiting)
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
        let (bytes, writer_back) = (merged.clone(), writer.clone());
        tokio::task::spawn_blocking(move || writer_back.write_atomic(&bytes))
            .await
            .context("the writing thread")?
            .context("writing the merged file")?;
        let written = Instant::now();
        puts.push(put_done - start);
        receives.push(received.saturating_duration_since(put_done));
        gets.push(fetched - received);
        writes.push(written - fetched);
        after_put.push(written.saturating_duration_since(put_done));
        totals.push(written - start);
    }

    line(
        "events on (POLL_INTERVAL=60s): upload done -> file",
        &events,
    );
    for (interval, samples) in &polls {
        line(
            &format!(
                "events off, POLL_INTERVAL={}: upload done -> file",
                ms(*interval)
            ),
            samples,
        );
    }
    line("floor: PUT", &puts);
    line("floor: PUT done -> notification received", &receives);
    line("floor: GET of the object", &gets);
    line("floor: write + rename of the merged file", &writes);
    line("floor: receive + GET + write (after the PUT)", &after_put);
    line("floor: PUT + receive + GET + write", &totals);
    if let (Some(events), Some(floor)) = (Summary::of(&events), Summary::of(&totals)) {
        let target = floor.median * 2 + Duration::from_millis(50);
        println!(
            "events median {} vs 2 x floor median + 50 ms = {} (+ the exporter's DEBOUNCE)",
            ms(events.median),
            ms(target)
        );
    }
    Ok(())
}
