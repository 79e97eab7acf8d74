//! The I/O shell: one task that lists the prefix, fetches what [`State::plan`] asks for, applies
//! the answers, and writes what [`State::decide`] and the [`crate::compose::Composer`]
//! produce. Every storage call has a timeout; a failed listing changes nothing and is retried
//! with backoff; file operations run on the blocking pool with a timeout. Deciding the file is
//! in `decide`, writing and watching it in `write`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use ksd_runtime::admin::{self, Health};
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, ObjectInfo, Storage, StorageUrl};
use ksd_shared::names::ClusterName;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin_files::AdminFiles;
use crate::compose::{Composed, Composer, Guard};
use crate::events::{self, Batch, Sequencers};
use crate::guard::Exclusion;
use crate::metrics::{EventMetrics, Metrics};
use crate::output::OutputFile;
use crate::state::{FetchOutcome, FetchRequest, Hold, Policy, State};
use crate::{Error, Result, Settings};

mod decide;
mod write;

use write::{OutputWatch, Sink, watch_dir};

/// Longest wait for one listing or one fetch.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one write of the output file.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the incrementally kept file is compared with one composed from scratch.
const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// How often to try watching Traefik's directory again while it is missing.
const REWATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Fetches in flight at once when several clusters changed together.
const FETCH_CONCURRENCY: usize = 4;
/// After failed listings the next attempt waits up to this many poll intervals.
const BACKOFF_FACTOR: u32 = 8;
/// Longest wait for one rescan of the administrator's files.
const ADMIN_SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the syncer until `shutdown` is cancelled (or, with `--once`, for one cycle).
///
/// Errors are start-up failures (storage URL, admin address) or, with `--once`, the cycle's
/// failure; the long-running loop logs and retries everything else.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<()> {
    let storage = Storage::connect(&settings.storage_url, &settings.s3)
        .await
        .map_err(Error::Storage)?
        // A file:// store never reads more of any file than a cluster document may hold.
        .with_max_object_bytes(settings.max_object_bytes);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    ksd_runtime::process::register(&mut registry);
    let health = Health::new();
    announce(&settings, &storage);
    let ack_storage = match &settings.syncer_name {
        Some(_) if !settings.dry_run && !settings.once => Some(
            storage
                .child(ksd_shared::status::STATUS_DIR)
                .await
                .map_err(Error::Storage)?,
        ),
        _ => None,
    };
    let mut syncer = Syncer::new(&settings, storage, metrics, health.clone());
    syncer.restore_from_output().await;

    if settings.once {
        return syncer.once(&shutdown).await;
    }
    let queue_task = start_event_queue(&settings, &mut registry, &mut syncer, &shutdown).await;
    let snapshots = syncer.status.subscribe();
    let ack_task = match (ack_storage, settings.syncer_name.clone()) {
        (Some(status), Some(name)) => Some(tokio::spawn(crate::status::run_acks(
            status,
            name,
            snapshots.clone(),
            settings.ack_heartbeat,
            shutdown.clone(),
        ))),
        _ => None,
    };

    // The admin server stops after the loop has drained, so probes keep answering meanwhile.
    let admin_stop = CancellationToken::new();
    let (_, admin_task) = admin::serve_with_routes(
        settings.admin_addr,
        Arc::new(registry),
        health.clone(),
        crate::status::routes(snapshots),
        admin_stop.clone(),
    )
    .await
    .map_err(Error::Admin)?;

    // Supervised: the sync loop, the admin server, the event queue and the acknowledgements
    // (when configured) run as tasks; if one ends before a shutdown was asked for, or panics,
    // the process stops with an error naming it, so that compose or Kubernetes restarts it
    // instead of leaving a syncer that answers probes and does nothing (or syncs with nobody
    // able to see it).
    let loop_shutdown = shutdown.clone();
    let loop_settings = settings.clone();
    let sync_task = ksd_runtime::fault::inject(
        "sync-loop",
        tokio::spawn(async move {
            syncer.run_loop(&loop_settings, &loop_shutdown).await;
        }),
    );
    let tasks = Tasks {
        sync: sync_task,
        admin: ksd_runtime::fault::inject("admin-server", admin_task),
        queue: queue_task.map(|task| ksd_runtime::fault::inject("event-queue", task)),
        acks: ack_task.map(|task| ksd_runtime::fault::inject("acks", task)),
    };
    tasks.supervise(&shutdown, &health, &admin_stop).await?;
    info!("ksd-syncer stopped");
    Ok(())
}

/// Logs the settings the syncer starts with, and what it acknowledges.
fn announce(settings: &Settings, storage: &Storage) {
    info!(
        storage = %storage.describe(),
        output = %settings.output_path().display(),
        traefik_version = settings.traefik_version.as_str(),
        poll_interval = ?settings.poll_interval,
        confirm_polls = settings.confirm_polls,
        stale_after = ?settings.stale_after,
        address_ranges_pinned = settings.address_policy.is_pinned(),
        dry_run = settings.dry_run,
        once = settings.once,
        "ksd-syncer starting"
    );
    crate::status::announce(settings.syncer_name.as_ref(), storage);
}

type Task = tokio::task::JoinHandle<()>;

/// The agent's tasks, supervised together.
struct Tasks {
    sync: Task,
    admin: Task,
    queue: Option<Task>,
    acks: Option<Task>,
}

impl Tasks {
    /// Waits for the first task to end (or a shutdown), stops the others in order (the loop,
    /// then the event queue and the acknowledgements, the admin server last so probes keep
    /// answering meanwhile), and says whether the end was expected.
    async fn supervise(
        self,
        shutdown: &CancellationToken,
        health: &Health,
        admin_stop: &CancellationToken,
    ) -> Result<()> {
        let Tasks {
            sync: mut sync_task,
            admin: mut admin_task,
            queue: mut queue_task,
            acks: mut ack_task,
        } = self;
        let outcome = tokio::select! {
            joined = &mut sync_task => supervised("sync-loop", joined, shutdown),
            joined = &mut admin_task => {
                let outcome = supervised("admin-server", joined, shutdown);
                // The loop is stopped too: the process is going down.
                shutdown.cancel();
                let _ = (&mut sync_task).await;
                outcome
            }
            joined = ksd_runtime::shutdown::join_optional(&mut queue_task) => {
                queue_task = None;
                let outcome = supervised("event-queue", joined, shutdown);
                shutdown.cancel();
                let _ = (&mut sync_task).await;
                outcome
            }
            joined = ksd_runtime::shutdown::join_optional(&mut ack_task) => {
                ack_task = None;
                let outcome = supervised("acks", joined, shutdown);
                shutdown.cancel();
                let _ = (&mut sync_task).await;
                outcome
            }
        };
        // Whatever ended first, the event queue and the acknowledgements stop with the loop.
        shutdown.cancel();
        if let Some(task) = queue_task
            && let Err(error) = task.await
        {
            warn!(%error, "event queue task ended abnormally");
        }
        if let Some(task) = ack_task {
            let _ = task.await;
        }

        health.set_shutting_down();
        admin_stop.cancel();
        if !admin_task.is_finished()
            && let Err(error) = admin_task.await
        {
            warn!(%error, "admin server task ended abnormally");
        }
        outcome
    }
}

/// What a supervised task's end means: fine during a shutdown, fatal otherwise.
fn supervised<T>(
    task: &'static str,
    joined: std::result::Result<T, tokio::task::JoinError>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let detail = match joined {
        Err(join) if join.is_panic() => "panicked".to_owned(),
        Err(join) => join.to_string(),
        Ok(_) if shutdown.is_cancelled() => return Ok(()),
        Ok(_) => "returned".to_owned(),
    };
    error!(task, %detail, "a supervised task ended; stopping so that the process is restarted");
    Err(Error::TaskEnded { task, detail })
}

/// With `S3_EVENT_QUEUE_URL`: registers the event metrics and starts the task that receives
/// bucket events and hands them to the loop.
async fn start_event_queue(
    settings: &Settings,
    registry: &mut Registry,
    syncer: &mut Syncer,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let queue_url = settings.event_queue_url.clone()?;
    let StorageUrl::S3 { bucket, prefix } = &settings.storage_url else {
        return None;
    };
    let metrics = EventMetrics::register(registry);
    let client = events::client(&queue_url, &settings.s3).await;
    let (tx, rx) = mpsc::channel(1);
    syncer.events = Some(rx);
    info!(queue = %queue_url, "bucket events on; the listing every POLL_INTERVAL is the safety net");
    let config = events::QueueConfig {
        queue_url,
        bucket: bucket.clone(),
        prefix: prefix.clone(),
    };
    syncer.event_metrics = Some(metrics.clone());
    let detail = metrics.clone();
    syncer.health.add_detail(move || {
        let state = match (detail.is_queue_up(), detail.has_failed()) {
            (true, _) => "receiving",
            (false, false) => "connecting",
            (false, true) => "failing (the periodic listing carries on)",
        };
        match detail.last_received_age() {
            Some(age) => format!("events: {state}, last message {}s ago", age.as_secs()),
            None => format!("events: {state}, no message yet"),
        }
    });
    Some(tokio::spawn(events::run_queue(
        client,
        config,
        tx,
        metrics,
        shutdown.clone(),
    )))
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Poll,
    StorageChanged,
    OutputChanged,
    Rewatch,
    Events(Batch),
}

struct Syncer {
    storage: Storage,
    policy: Policy,
    version: ksd_shared::traefik::TraefikVersion,
    poll_interval: Duration,
    state: State,
    metrics: Metrics,
    health: Health,
    sink: Sink,
    /// What this syncer serves, for the status page and the acknowledgement.
    status: crate::status::Tracker,
    /// The last composed document and the state revision it was composed from.
    desired: Option<(u64, Arc<Composed>)>,
    /// Keeps the file as rendered blocks, so a change costs what it touches.
    composer: Composer,
    /// When the composer's file was last compared with one composed from scratch.
    full_check_at: Option<Instant>,
    backoff: Backoff,
    /// What no cluster may put in the file: the address policy and the administrator's names.
    guard: Guard,
    /// The administrator's files in TRAEFIK_DIR, rescanned every cycle.
    admin_files: AdminFiles,
    /// Bumped whenever the administrator's names change, so the file is composed again.
    admin_generation: u64,
    /// The admin generation `desired` was composed with.
    desired_admin: u64,
    /// The last exclusions reported, so each is logged once per change.
    excluded: Vec<Exclusion>,
    /// Why the file was last held, so a hold is logged once per change.
    held: Option<Hold>,
    traefik_dir: PathBuf,
    output_path: PathBuf,
    /// Bucket events from the queue task, when `S3_EVENT_QUEUE_URL` is set.
    events: Option<mpsc::Receiver<Batch>>,
    event_metrics: Option<EventMetrics>,
    sequencers: Sequencers,
}

/// The outcome of one cycle that got as far as a listing.
struct CycleReport {
    fetch_failures: usize,
}

impl Syncer {
    fn new(settings: &Settings, storage: Storage, metrics: Metrics, health: Health) -> Self {
        let sink = if settings.dry_run {
            Sink::Stdout { printed: None }
        } else {
            let output = OutputFile::new(&settings.traefik_dir, &settings.output_file);
            match output.remove_stale_temp_files() {
                Ok(removed) => {
                    for path in removed {
                        info!(path = %path.display(), "removed a temporary file left by a previous run");
                    }
                }
                // Not fatal: they are invisible to Traefik, and writing will report a broken
                // directory anyway.
                Err(error) => {
                    warn!(error = %error_chain(&error), "cannot clean up stale temporary files")
                }
            }
            Sink::File {
                output,
                on_disk: None,
            }
        };
        let max_backoff = settings
            .poll_interval
            .saturating_mul(BACKOFF_FACTOR)
            .max(settings.poll_interval);
        Syncer {
            storage,
            policy: settings.policy(),
            version: settings.traefik_version,
            poll_interval: settings.poll_interval,
            state: State::new(),
            status: crate::status::Tracker::new(settings.syncer_name.clone()),
            metrics,
            health,
            sink,
            desired: None,
            composer: Composer::new(settings.traefik_version),
            full_check_at: None,
            backoff: Backoff::new(settings.poll_interval, max_backoff),
            guard: Guard {
                addresses: settings.address_policy.clone(),
                admin_names: Default::default(),
            },
            admin_files: AdminFiles::new(&settings.traefik_dir, &settings.output_path()),
            admin_generation: 0,
            desired_admin: 0,
            excluded: Vec::new(),
            held: None,
            traefik_dir: settings.traefik_dir.clone(),
            output_path: settings.output_path(),
            events: None,
            event_metrics: None,
            sequencers: Sequencers::default(),
        }
    }

    /// Seeds the state with the clusters the previous run's file serves (see
    /// [`crate::restore`]). A missing, unreadable or foreign file seeds nothing.
    async fn restore_from_output(&mut self) {
        // --dry-run reads it too: it prints what a real run would write.
        let path = self.output_path.clone();
        let limit = self.output_read_limit();
        let read = tokio::task::spawn_blocking(move || {
            ksd_runtime::storage::bounded::read_regular_file(&path, limit)
        });
        let bytes = match timeout(WRITE_TIMEOUT, read).await {
            Ok(Ok(Ok(ksd_runtime::storage::bounded::BoundedRead::Read { bytes, .. }))) => bytes,
            Ok(Ok(Ok(ksd_runtime::storage::bounded::BoundedRead::Missing))) => return,
            Ok(Ok(Ok(other))) => {
                warn!(found = ?other, "the previous output file is not a readable regular file; nothing restored");
                return;
            }
            Ok(Ok(Err(error))) => {
                warn!(%error, "cannot read the previous output file; nothing restored");
                return;
            }
            Ok(Err(_)) | Err(_) => {
                warn!("reading the previous output file did not complete; nothing restored");
                return;
            }
        };
        match crate::restore::from_merged_file(&bytes) {
            Ok(documents) => {
                let clusters: Vec<String> =
                    documents.iter().map(|d| d.cluster.to_string()).collect();
                let seeded = self.state.restore(documents);
                if seeded > 0 {
                    info!(clusters = ?clusters, "restored each cluster's last served pools from the previous output file");
                }
                self.metrics
                    .restored_clusters(self.state.restored_clusters().len());
            }
            Err(error) => {
                warn!(error = %error_chain(&error), "the previous output file does not read as ours; nothing restored");
            }
        }
    }

    /// The merged file holds every cluster's document twice at most (union and pool), and is
    /// read back for restoring only: bound it well above what the clusters can produce.
    fn output_read_limit(&self) -> u64 {
        self.policy
            .max_object_bytes
            .saturating_mul(64)
            .max(64 << 20)
    }

    /// Rereads the administrator's files if any changed; reports new problems.
    async fn rescan_admin_files(&mut self) {
        let mut files = std::mem::replace(
            &mut self.admin_files,
            AdminFiles::new(Path::new(""), Path::new("")),
        );
        let task = tokio::task::spawn_blocking(move || {
            let scan = files.rescan();
            (files, scan)
        });
        match timeout(ADMIN_SCAN_TIMEOUT, task).await {
            Ok(Ok((files, scan))) => {
                self.admin_files = files;
                for problem in &scan.new_problems {
                    warn!(
                        path = %problem.path.display(),
                        detail = %problem.detail,
                        names_still_protected = problem.salvaged,
                        "cannot fully read an administrator file in TRAEFIK_DIR; the names found in it are protected"
                    );
                }
                if scan.changed {
                    self.admin_generation = self.admin_generation.wrapping_add(1);
                    self.guard.admin_names = self.admin_files.names().clone();
                    debug!(
                        names = self.guard.admin_names.len(),
                        "the administrator's service names changed"
                    );
                }
                self.metrics
                    .admin_files(self.guard.admin_names.len(), scan.problem_files);
            }
            Ok(Err(_)) | Err(_) => {
                // The scanner is lost with the task; start over with an empty cache (the names
                // in the guard stay until a rescan succeeds).
                self.admin_files = AdminFiles::new(&self.traefik_dir, &self.output_path);
                warn!(
                    timeout = ?ADMIN_SCAN_TIMEOUT,
                    "reading the administrator's files in TRAEFIK_DIR did not complete; keeping the names known"
                );
            }
        }
    }

    /// `--once`: one cycle; an error if the listing or a fetch failed or nothing could be
    /// written.
    async fn once(&mut self, shutdown: &CancellationToken) -> Result<()> {
        let report = self.cycle(shutdown).await?;
        if report.fetch_failures > 0 {
            return Err(Error::Incomplete {
                count: report.fetch_failures,
            });
        }
        Ok(())
    }

    async fn run_loop(&mut self, settings: &Settings, shutdown: &CancellationToken) {
        // A local directory is watched so changes apply at once; the periodic listing stays as
        // a safety net for missed events.
        let (_storage_watcher, mut storage_events) = match &settings.storage_url {
            StorageUrl::Local { dir } => match watch_dir(dir, |_| true) {
                Ok((watcher, events)) => (Some(watcher), Some(events)),
                Err(error) => {
                    warn!(error = %error_chain(&error), "cannot watch the storage directory; relying on periodic listing");
                    (None, None)
                }
            },
            StorageUrl::S3 { .. } => (None, None),
        };
        let mut output_watch: Option<OutputWatch> = None;

        let mut next_poll = Instant::now();
        loop {
            if output_watch
                .as_ref()
                .is_some_and(|watch| !watch.is_current())
            {
                output_watch = None;
            }
            if output_watch.is_none()
                && let Some(watch) = self.watch_output()
            {
                output_watch = Some(watch);
                // Whatever happened to the file while nothing watched it is found now.
                self.check_output(true).await;
            }
            // The directory may be missing for a while (a volume being re-mounted): retry.
            let rewatch = output_watch.is_none() && self.wants_output_watch();
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => Wake::Shutdown,
                () = sleep_until(next_poll) => Wake::Poll,
                Some(()) = recv(storage_events.as_mut()) => Wake::StorageChanged,
                Some(()) = recv(output_watch.as_mut().map(|w| &mut w.events)) => Wake::OutputChanged,
                () = tokio::time::sleep(REWATCH_INTERVAL), if rewatch => Wake::Rewatch,
                Some(batch) = recv_batch(self.events.as_mut()) => Wake::Events(batch),
            };
            match wake {
                Wake::Rewatch => {}
                Wake::Shutdown => break,
                Wake::Poll => next_poll = Instant::now() + self.poll(shutdown).await,
                Wake::StorageChanged => {
                    drain(storage_events.as_mut());
                    debug!("storage directory changed");
                    // A failure here is retried by the periodic listing.
                    let _ = self.poll(shutdown).await;
                }
                Wake::OutputChanged => {
                    drain(output_watch.as_mut().map(|w| &mut w.events));
                    let in_place = output_watch
                        .as_ref()
                        .is_some_and(OutputWatch::take_in_place);
                    self.check_output(in_place).await;
                }
                Wake::Events(batch) => self.on_events(batch, shutdown).await,
            }
        }
        info!("shutting down");
    }

    /// Acts on a batch of bucket events: a conditional GET of each changed cluster object and a
    /// write at once, and a listing when a deletion was announced (only listings confirm an
    /// absence, `CONFIRM_POLLS` of them). Then the queue task may delete the messages.
    async fn on_events(&mut self, batch: Batch, shutdown: &CancellationToken) {
        let plan = self.sequencers.plan(&batch.notices, &self.state);
        if let Some(metrics) = &self.event_metrics {
            metrics.records("unchanged", plan.unchanged);
            metrics.records("handled", plan.fetches.len() + usize::from(plan.list));
        }
        if !plan.fetches.is_empty() {
            let keys: std::collections::BTreeMap<ClusterName, String> = plan
                .fetches
                .iter()
                .map(|f| (f.cluster.clone(), f.key.clone()))
                .collect();
            debug!(clusters = ?keys.keys().map(ClusterName::as_str).collect::<Vec<_>>(), "bucket events: fetching");
            let fetched = self
                .fetch(plan.fetches, shutdown)
                .await
                .into_iter()
                .filter_map(|(cluster, outcome)| {
                    let key = keys.get(&cluster)?.clone();
                    Some((cluster, key, outcome))
                })
                .collect();
            let events = self.state.apply_fetched(fetched, &self.policy);
            self.report(events);
            self.metrics.summary(&self.state.summary());
            // A failure is logged where it happens; the periodic listing retries.
            if self.decide().is_ok() {
                let _ = self.publish().await;
            }
        }
        if plan.list {
            debug!("bucket events: a deletion; listing");
            let _ = self.poll(shutdown).await;
        }
        batch.handled();
    }

    /// One listing cycle, for the loop: returns the delay until the next one.
    async fn poll(&mut self, shutdown: &CancellationToken) -> Duration {
        match self.cycle(shutdown).await {
            Ok(_) => {
                self.backoff.reset();
                self.poll_interval
            }
            Err(Error::Cancelled) => self.poll_interval,
            Err(error) => {
                let delay = self.backoff.next_delay().max(self.poll_interval);
                warn!(error = %error_chain(&error), retry_in = ?delay, "sync cycle failed; nothing changed");
                delay
            }
        }
    }

    /// List, fetch, apply, decide, write.
    async fn cycle(&mut self, shutdown: &CancellationToken) -> Result<CycleReport> {
        let _timer = self.metrics.cycle_timer();
        let listing = self.list(shutdown).await?;
        // Staleness is measured on our own monotonic clock, never against the store's.
        let now = std::time::Instant::now();
        let wall = SystemTime::now();
        self.metrics.document_ages(&listing, wall);
        let plan = self.state.plan(&listing, &self.policy);
        self.status.observe_listing(&listing, wall);
        let fetched = self.fetch(plan, shutdown).await;
        let fetch_failures = fetched
            .iter()
            .filter(|(_, outcome)| *outcome == FetchOutcome::Failed)
            .count();
        let events = self.state.apply(&listing, fetched, &self.policy, now);
        self.status.observe_events(&events);
        self.report(events);
        self.metrics.summary(&self.state.summary());
        self.metrics
            .restored_clusters(self.state.restored_clusters().len());
        self.rescan_admin_files().await;
        self.status.publish(&self.state, wall);
        self.decide()?;
        self.publish().await?;
        Ok(CycleReport { fetch_failures })
    }

    async fn list(&self, shutdown: &CancellationToken) -> Result<Vec<ObjectInfo>> {
        let listing = tokio::select! {
            () = shutdown.cancelled() => return Err(Error::Cancelled),
            listing = timeout(STORAGE_TIMEOUT, self.storage.list()) => listing,
        };
        match listing {
            Ok(Ok(listing)) => {
                self.metrics.poll("ok");
                Ok(listing)
            }
            Ok(Err(error)) => {
                self.metrics.poll("error");
                Err(Error::List(error))
            }
            Err(_) => {
                self.metrics.poll("timeout");
                Err(Error::ListTimeout(STORAGE_TIMEOUT))
            }
        }
    }

    async fn fetch(
        &self,
        plan: Vec<FetchRequest>,
        shutdown: &CancellationToken,
    ) -> Vec<(ClusterName, FetchOutcome)> {
        let max_bytes = self.policy.max_object_bytes;
        let fetches = futures::stream::iter(plan)
            .map(|request| async move {
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => FetchOutcome::Failed,
                    outcome = self.fetch_one(&request, max_bytes) => outcome,
                };
                (request.cluster, outcome)
            })
            .buffer_unordered(FETCH_CONCURRENCY);
        fetches.collect().await
    }

    async fn fetch_one(&self, request: &FetchRequest, max_bytes: u64) -> FetchOutcome {
        let get =
            self.storage
                .get_limited(&request.key, request.if_none_match.as_deref(), max_bytes);
        match timeout(STORAGE_TIMEOUT, get).await {
            Ok(Ok(Fetched::Object(object))) => {
                self.metrics.get("ok");
                FetchOutcome::Object {
                    bytes: object.bytes,
                    etag: object.etag,
                }
            }
            Ok(Ok(Fetched::NotModified)) => {
                self.metrics.get("not_modified");
                FetchOutcome::NotModified
            }
            Ok(Ok(Fetched::Missing)) => {
                self.metrics.get("missing");
                FetchOutcome::Missing
            }
            Ok(Err(error)) if error.is_too_large() => {
                self.metrics.get("too_large");
                FetchOutcome::TooLarge
            }
            Ok(Err(error)) => {
                self.metrics.get("error");
                warn!(key = %request.key, error = %error_chain(&error), "fetching a cluster object failed; keeping what is known");
                FetchOutcome::Failed
            }
            Err(_) => {
                self.metrics.get("timeout");
                warn!(key = %request.key, timeout = ?STORAGE_TIMEOUT, "fetching a cluster object timed out; keeping what is known");
                FetchOutcome::Failed
            }
        }
    }
}

async fn recv(rx: Option<&mut mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_batch(rx: Option<&mut mpsc::Receiver<Batch>>) -> Option<Batch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Drops the signals already pending: the cycle about to run sees everything they announce.
/// No window is waited out, so the first change after a quiet period is applied at once;
/// changes that arrive while the cycle runs leave one new signal, and so one more cycle.
fn drain(rx: Option<&mut mpsc::Receiver<()>>) {
    if let Some(rx) = rx {
        while rx.try_recv().is_ok() {}
    }
}
