//! `ksd-exporter`: publishes one Kubernetes cluster's Services and their ready endpoints as a
//! Traefik dynamic-configuration document (`<prefix><CLUSTER_NAME>.traefik.yaml`) in a bucket,
//! for `ksd-syncer` to merge next to Traefik.
//!
//! The crate is a thin I/O shell around pure decisions:
//! - [`index`]: the in-memory [`index::Index`] that turns Services and EndpointSlices into
//!   backends, recomputing only the Services that changed (pure, unit-tested);
//! - [`annotations`]: the per-Service options read from `k8s-service-discovery/*` annotations;
//! - [`document`]: backends to published bytes ([`document::Snapshot`]);
//! - [`debounce`]: the quiet window and maximum delay that coalesce bursts of changes;
//! - [`watch`]: the kube-runtime watchers feeding the index, with re-list buffering;
//! - [`publish`]: the [`publish::Publisher`] that uploads conditionally (`If-Match`) with
//!   retries and a heartbeat;
//! - [`leader`]: leader election on a Lease, so that only one of several replicas writes;
//! - [`acks`]: whether each named syncer serves this cluster's current document, read from
//!   the syncers' acknowledgements in the bucket;
//! - [`events`]: with `EVENTS=true`, Kubernetes Events on the Services saying what each
//!   syncer does with them; [`publication`]: the Service names the publisher last published;
//! - [`metrics`]: the Prometheus metrics;
//! - [`settings`]: clap arguments validated into [`Settings`].
//!
//! [`run`] wires them together; `main.rs` only parses settings, sets up logging and signals.

#![cfg_attr(test, allow(clippy::unwrap_used))] // a failed unwrap is a failed test

pub mod acks;
pub mod annotations;
pub mod debounce;
pub mod document;
pub mod events;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod publication;
pub mod publish;
pub mod settings;
pub mod watch;

use std::io::Write as _;
use std::sync::Arc;

use ksd_runtime::admin::{self, AdminError, Health};
use ksd_runtime::storage::{Storage, StorageError};
use ksd_shared::names::ObjectFormat;
use prometheus_client::registry::Registry;
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use crate::settings::{Args, Settings};

use crate::debounce::Debounce;
use crate::document::Snapshot;
use crate::metrics::Metrics;
use crate::publish::{PublishError, Publisher};
use crate::watch::WatchConfig;

/// How many times `--once` tries to publish before giving up.
const ONCE_ATTEMPTS: u32 = 5;

/// Why the exporter stopped with a failure. Storage and API errors at run time are not here:
/// they are retried, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot configure the Kubernetes client (KUBECONFIG, ~/.kube/config or the in-cluster \
         service account)"
    )]
    Kubernetes(#[source] kube::Error),
    #[error("cannot open storage {url}")]
    Storage {
        url: String,
        #[source]
        source: StorageError,
    },
    #[error("cannot start the admin server")]
    Admin(#[source] AdminError),
    #[error("could not publish")]
    Publish(#[source] PublishError),
    #[error("stopped before the initial sync completed")]
    Interrupted,
    #[error("the Kubernetes watches ended before the initial sync completed")]
    WatchEnded,
    #[error("cannot write the document to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("task {task} ended unexpectedly ({detail})")]
    TaskEnded { task: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the exporter until `shutdown` is cancelled (or, with `--once`/`--dry-run`, until the
/// one publish or print is done).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<()> {
    // NB: rustls is linked with two crypto providers (ring for kube, aws-lc-rs for the AWS
    // SDK, which passes its own explicitly), so it cannot pick a process default by itself
    // and kube's TLS set-up would panic. Ring, as kube is configured; an error only means a
    // default was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(Error::Kubernetes)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    ksd_runtime::process::register(&mut registry);
    let ack_metrics = Arc::new(acks::AckMetrics::register(&mut registry));
    let event_metrics = Arc::new(events::EventMetrics::register(&mut registry));

    // The index stops on its own token, so that --once and --dry-run can end it when done.
    let watch_stop = shutdown.child_token();
    let (snapshots_tx, mut snapshots) = channel::channel::<Option<Arc<Snapshot>>>(None);
    let config = watch_config(&settings);
    let streams = watch::watch_streams(&client, &config);
    let index_task = tokio::spawn(watch::run(
        streams,
        config,
        metrics.clone(),
        snapshots_tx,
        watch_stop.clone(),
    ));

    if settings.dry_run {
        let result = first_snapshot(&mut snapshots, &shutdown).await;
        watch_stop.cancel();
        let _ = index_task.await;
        return print_snapshot(&*result?).map_err(Error::Stdout);
    }

    let storage = connect(&settings).await?;
    info!(storage = %storage.describe(), "publishing to storage");
    let (mut publisher, acks) = publisher(&settings, storage, &metrics, ack_metrics, event_metrics);

    if settings.once {
        let result = publish_once(&mut snapshots, &mut publisher, &shutdown).await;
        watch_stop.cancel();
        let _ = index_task.await;
        return result;
    }

    let health = Health::new();
    // The admin server outlives the drain, so probes keep answering (not ready) until the end.
    let admin_stop = CancellationToken::new();
    let (_, admin_task) = admin::serve(
        settings.admin_addr,
        Arc::new(registry),
        health.clone(),
        admin_stop.clone(),
    )
    .await
    .map_err(Error::Admin)?;
    let (publisher, election) = elect(&settings, &client, publisher, &metrics, &shutdown);
    let mut tasks = Supervised::default();
    tasks.add("watch", ksd_runtime::fault::inject("watch", index_task));
    tasks.add(
        "admin-server",
        ksd_runtime::fault::inject("admin-server", admin_task),
    );
    if let Some(interval) = settings.ack_interval {
        acks.start(interval, &settings, &client, &mut tasks, &shutdown)
            .await?;
    }
    let publisher_task = tokio::spawn(publish::run(
        publisher,
        snapshots,
        health.clone(),
        shutdown.clone(),
    ));
    tasks.add(
        "publish",
        ksd_runtime::fault::inject("publish", publisher_task),
    );
    supervise(tasks, election, &health, &shutdown, &admin_stop).await
}

/// What the watchers and the index need from the settings; logs what is watched.
fn watch_config(settings: &Settings) -> WatchConfig {
    info!(
        cluster = %settings.cluster,
        label_selector = %settings.label_selector,
        namespaces = %if settings.namespaces.is_empty() { "*".to_owned() } else { settings.namespaces.join(",") },
        "watching Services and EndpointSlices"
    );
    WatchConfig {
        label_selector: settings.label_selector.clone(),
        namespaces: settings.namespaces.clone(),
        cluster: settings.cluster.clone(),
        template: settings.name_template.clone(),
        formats: settings.formats.clone(),
        debounce: Debounce::new(settings.debounce, settings.max_delay),
    }
}

/// `--once`: the first complete snapshot, published (with a few retries).
async fn publish_once(
    snapshots: &mut channel::Receiver<Option<Arc<Snapshot>>>,
    publisher: &mut Publisher,
    shutdown: &CancellationToken,
) -> Result<()> {
    let snapshot = first_snapshot(snapshots, shutdown).await?;
    publish::publish_with_retries(publisher, &snapshot, ONCE_ATTEMPTS, shutdown)
        .await
        .map_err(Error::Publish)
}

/// `--dry-run`: the Traefik document on standard output.
fn print_snapshot(snapshot: &Snapshot) -> std::io::Result<()> {
    if let Some(output) = snapshot.output(ObjectFormat::Traefik) {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&output.bytes)?;
        stdout.flush()?;
    }
    Ok(())
}

async fn connect(settings: &Settings) -> Result<Storage> {
    Storage::connect(&settings.storage_url, &settings.s3)
        .await
        .map_err(|source| storage_error(settings, source))
}

fn storage_error(settings: &Settings, source: StorageError) -> Error {
    Error::Storage {
        url: settings.storage_url.to_string(),
        source,
    }
}

/// The leader-election task (with `LEADER_ELECTION`), and the publisher that writes only while
/// this replica holds the Lease; every replica watches.
fn elect(
    settings: &Settings,
    client: &kube::Client,
    publisher: Publisher,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> (Publisher, Option<tokio::task::JoinHandle<leader::Elector>>) {
    match settings.leader_election.clone() {
        Some(lease) => {
            let (leading_tx, leading_rx) = channel::channel(false);
            let elector = leader::Elector::new(client.clone(), lease);
            let task = tokio::spawn(leader::run(
                elector,
                leading_tx,
                metrics.clone(),
                shutdown.clone(),
            ));
            (publisher.with_leadership(leading_rx), Some(task))
        }
        None => (publisher, None),
    }
}

/// The publisher, and what the acknowledgement reader and the event recorder need from it.
fn publisher(
    settings: &Settings,
    storage: Storage,
    metrics: &Arc<Metrics>,
    ack_metrics: Arc<acks::AckMetrics>,
    event_metrics: Arc<events::EventMetrics>,
) -> (Publisher, AckSetup) {
    let published = Arc::new(tokio::sync::Notify::new());
    let ack_storage = storage.clone();
    let publisher = Publisher::new(
        storage,
        settings.cluster.clone(),
        settings.heartbeat,
        metrics.clone(),
    )
    .notify_published(published.clone());
    // With EVENTS, what was published goes to the event tracker.
    let (published_tx, published_rx) = channel::channel(None);
    let publisher = if settings.events {
        publisher.report_published(published_tx)
    } else {
        publisher
    };
    let acks = AckSetup {
        storage: ack_storage,
        published,
        published_rx,
        ack_metrics,
        event_metrics,
    };
    (publisher, acks)
}

/// What the acknowledgement reader (with `ACK_INTERVAL`) and the event recorder (with
/// `EVENTS=true`) are started with.
struct AckSetup {
    storage: Storage,
    /// Signalled after each publish, so that the reader looks sooner.
    published: Arc<tokio::sync::Notify>,
    /// What was published, for the event tracker.
    published_rx: channel::Receiver<Option<publication::Publication>>,
    ack_metrics: Arc<acks::AckMetrics>,
    event_metrics: Arc<events::EventMetrics>,
}

impl AckSetup {
    /// Starts the acknowledgement reader, and with `EVENTS=true` the event recorder it feeds
    /// (the tracker turns readings into intents, the recorder into Kubernetes Events).
    async fn start(
        self,
        interval: std::time::Duration,
        settings: &Settings,
        client: &kube::Client,
        tasks: &mut Supervised,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let reader = acks::AckReader::new(self.storage, settings.cluster.clone(), self.ack_metrics)
            .await
            .map_err(|source| storage_error(settings, source))?;
        let reader = if settings.events {
            let (mut tracker, intents) =
                events::channel(self.published_rx, self.event_metrics.clone());
            let recorder = events::recorder::Recorder::new(
                client.clone(),
                events::Reporter {
                    cluster: settings.cluster.clone(),
                    instance: events::reporting_instance(),
                },
                self.event_metrics,
            );
            info!("recording Events on the exported Services");
            let task = tokio::spawn(events::recorder::run(recorder, intents, shutdown.clone()));
            tasks.add("events", ksd_runtime::fault::inject("events", task));
            reader.on_reading(move |r| tracker.observe(r))
        } else {
            reader
        };
        let task = tokio::spawn(acks::run(
            reader,
            interval,
            self.published,
            shutdown.clone(),
        ));
        tasks.add("acks", ksd_runtime::fault::inject("acks", task));
        Ok(())
    }
}

/// Runs until the shutdown, then drains. Every task runs until the shutdown; one that ends
/// before it, or panics, takes the process down (non-zero, naming it) so that Kubernetes
/// restarts a zombie exporter. The election task returns its elector at the shutdown, so that
/// the Lease can be released.
async fn supervise(
    mut tasks: Supervised,
    mut election: Option<tokio::task::JoinHandle<leader::Elector>>,
    health: &Health,
    shutdown: &CancellationToken,
    admin_stop: &CancellationToken,
) -> Result<()> {
    let mut elector = None;
    let failed = tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        ended = tasks.next_end() => Some(ended),
        joined = ksd_runtime::shutdown::join_optional(&mut election) => {
            election = None;
            match joined {
                Ok(returned) if shutdown.is_cancelled() => {
                    elector = Some(returned);
                    None
                }
                Ok(_) => Some(("leader-election", "returned".to_owned())),
                Err(join) if join.is_panic() => Some(("leader-election", "panicked".to_owned())),
                Err(join) => Some(("leader-election", join.to_string())),
            }
        }
    };
    health.set_shutting_down();
    // The publisher finishes an upload in flight before it returns; the admin server stops
    // last, so probes answer (not ready) until the end.
    shutdown.cancel();
    tasks.join_except("admin-server").await;
    // Only then is the Lease released, so the next leader never races this one's last write.
    if let Some(handle) = election
        && let Ok(returned) = handle.await
    {
        elector = Some(returned);
    }
    if let Some(mut elector) = elector {
        leader::release(&mut elector).await;
    }
    admin_stop.cancel();
    tasks.join_all().await;
    if let Some((task, detail)) = failed {
        error!(task, %detail, "a supervised task ended; stopping so that the process is restarted");
        return Err(Error::TaskEnded { task, detail });
    }
    info!("stopped");
    Ok(())
}

/// The exporter's long-running tasks, by name.
#[derive(Default)]
struct Supervised {
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Supervised {
    fn add(&mut self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        self.tasks.push((name, handle));
    }

    /// Waits for the first task to end; returns its name and how it ended. The task is
    /// removed. Pending forever when there is none.
    async fn next_end(&mut self) -> (&'static str, String) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (joined, index, _) =
            futures::future::select_all(self.tasks.iter_mut().map(|(_, h)| h)).await;
        let (name, _) = self.tasks.remove(index);
        let detail = match joined {
            Ok(()) => "returned".to_owned(),
            Err(join) if join.is_panic() => "panicked".to_owned(),
            Err(join) => join.to_string(),
        };
        (name, detail)
    }

    async fn join_except(&mut self, keep: &str) {
        let (kept, done): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|(name, _)| *name == keep);
        for (_, handle) in done {
            let _ = handle.await;
        }
        self.tasks = kept;
    }

    async fn join_all(&mut self) {
        for (_, handle) in std::mem::take(&mut self.tasks) {
            let _ = handle.await;
        }
    }
}

/// Waits for the first snapshot, which the index sends once every watcher has synced.
async fn first_snapshot(
    snapshots: &mut channel::Receiver<Option<Arc<Snapshot>>>,
    shutdown: &CancellationToken,
) -> Result<Arc<Snapshot>> {
    loop {
        if let Some(snapshot) = snapshots.borrow_and_update().clone() {
            return Ok(snapshot);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(Error::Interrupted),
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return Err(Error::WatchEnded);
                }
            }
        }
    }
}
