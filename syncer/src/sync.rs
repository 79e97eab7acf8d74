//! The I/O shell: one task that lists the prefix, fetches what [`State::plan`] asks for, applies
//! the answers, and writes what [`State::decide`] and [`compose`] produce. Every storage call has
//! a timeout; a failed listing changes nothing and is retried with backoff; file operations run
//! on the blocking pool with a timeout.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use ksd_runtime::admin::{self, Health};
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, ObjectInfo, Storage, StorageUrl};
use ksd_shared::names::ClusterName;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
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
use crate::output::{Fingerprint, OutputFile};
use crate::state::{Decision, Event, FetchOutcome, FetchRequest, Hold, Policy, State};
use crate::{Error, Result, Settings};

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

    crate::status::announce(settings.syncer_name.as_ref(), &storage);
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
    // (when configured) run as tasks; if one ends before a shutdown was asked for, or panics, the process stops with an
    // error naming it, so that compose or Kubernetes restarts it instead of leaving a syncer
    // that answers probes and does nothing (or syncs with nobody able to see it).
    let loop_shutdown = shutdown.clone();
    let loop_settings = settings.clone();
    let mut sync_task = ksd_runtime::fault::inject(
        "sync-loop",
        tokio::spawn(async move {
            syncer.run_loop(&loop_settings, &loop_shutdown).await;
        }),
    );
    let mut admin_task = ksd_runtime::fault::inject("admin-server", admin_task);
    let mut queue_task = queue_task.map(|task| ksd_runtime::fault::inject("event-queue", task));
    let mut ack_task = ack_task.map(|task| ksd_runtime::fault::inject("acks", task));
    let outcome = tokio::select! {
        joined = &mut sync_task => supervised("sync-loop", joined, &shutdown),
        joined = &mut admin_task => {
            let outcome = supervised("admin-server", joined, &shutdown);
            // The loop is stopped too: the process is going down.
            shutdown.cancel();
            let _ = (&mut sync_task).await;
            outcome
        }
        joined = ksd_runtime::shutdown::join_optional(&mut queue_task) => {
            queue_task = None;
            let outcome = supervised("event-queue", joined, &shutdown);
            shutdown.cancel();
            let _ = (&mut sync_task).await;
            outcome
        }
        joined = ksd_runtime::shutdown::join_optional(&mut ack_task) => {
            ack_task = None;
            let outcome = supervised("acks", joined, &shutdown);
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
    outcome?;
    info!("ksd-syncer stopped");
    Ok(())
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

/// A watch of Traefik's directory, valid while the directory is the one it was set on.
struct OutputWatch {
    _watcher: RecommendedWatcher,
    events: mpsc::Receiver<()>,
    dir: PathBuf,
    identity: (u64, u64),
}

impl OutputWatch {
    /// False once the directory was removed or replaced: inotify watches the inode, so the
    /// watch has to be set up again on the new one.
    fn is_current(&self) -> bool {
        dir_identity(&self.dir) == Some(self.identity)
    }
}

fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
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

/// Where the decided file goes.
enum Sink {
    File {
        output: OutputFile,
        /// What we last wrote or verified on disk.
        on_disk: Option<OnDisk>,
    },
    /// `--dry-run`: standard output, each time the document changes.
    Stdout { printed: Option<String> },
}

#[derive(Clone, Debug)]
struct OnDisk {
    hash: String,
    fingerprint: Fingerprint,
}

/// What one blocking check-and-write of the output file did.
enum Ensured {
    /// The file is as we left it.
    Unchanged,
    /// The file already held the desired bytes (left by a previous run, or rewritten by
    /// somebody with identical content).
    Adopted(OnDisk),
    Written {
        on_disk: OnDisk,
        restored: bool,
    },
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
                    self.check_output(true).await;
                }
                Wake::Events(batch) => self.on_events(batch, shutdown).await,
            }
        }
        info!("shutting down");
    }

    /// Whether the output file should be watched: once there is something to guard, and
    /// never in `--dry-run`.
    fn wants_output_watch(&self) -> bool {
        matches!(self.sink, Sink::File { .. }) && self.desired.is_some()
    }

    /// Watches Traefik's directory for changes to the output file (not in `--dry-run`).
    fn watch_output(&self) -> Option<OutputWatch> {
        let Sink::File { output, .. } = &self.sink else {
            return None;
        };
        // Nothing to guard before the first decision; the directory may not exist yet.
        self.desired.as_ref()?;
        let dir = output.dir().to_path_buf();
        let identity = dir_identity(&dir)?;
        let target = output.clone();
        let watched = dir.clone();
        // Events on the directory itself (removed, moved away) wake the loop too, so the watch
        // is set up again on its replacement.
        match watch_dir(&dir, move |event| {
            event
                .paths
                .iter()
                .any(|path| target.is_target(path) || *path == watched)
        }) {
            Ok((watcher, events)) => Some(OutputWatch {
                _watcher: watcher,
                events,
                dir,
                identity,
            }),
            Err(error) => {
                debug!(error = %error_chain(&error), "cannot watch the output directory yet");
                None
            }
        }
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

    fn report(&self, events: Vec<Event>) {
        for event in events {
            match event {
                Event::InvalidKey { key, reason } => {
                    warn!(%key, %reason, "ignoring an object that is not <cluster>.traefik.yaml");
                }
                Event::Accepted {
                    cluster,
                    etag,
                    servers,
                } => {
                    self.metrics.change_seen();
                    info!(%cluster, %etag, servers, "accepted cluster document");
                }
                Event::Rejected {
                    cluster,
                    key,
                    etag,
                    reason,
                    detail,
                    keeps_last_good,
                } => {
                    self.metrics.rejected(reason);
                    warn!(%cluster, %key, %etag, reason, %detail, keeps_last_good, "rejected cluster document");
                }
                Event::Missing {
                    cluster,
                    polls,
                    confirm_polls,
                } => {
                    warn!(%cluster, polls, confirm_polls, "cluster object absent from the listing; kept until confirmed")
                }
                Event::Returned { cluster } => {
                    info!(%cluster, "cluster object is listed again");
                }
                Event::Removed { cluster } => {
                    warn!(%cluster, "cluster object absence confirmed; cluster removed");
                }
                Event::Stale { cluster, age } => {
                    warn!(%cluster, unchanged_for = ?age, "cluster object not seen changing for longer than STALE_AFTER (on the syncer's own clock); cluster left out");
                }
                Event::Fresh { cluster } => {
                    info!(%cluster, "cluster object refreshed; cluster included again");
                }
            }
        }
    }

    /// Composes the file the state calls for, when the state changed since the last time.
    fn decide(&mut self) -> Result<()> {
        let revision = self.state.revision();
        if self
            .desired
            .as_ref()
            .is_some_and(|(r, _)| *r == revision && self.desired_admin == self.admin_generation)
        {
            return Ok(());
        }
        let documents = match self.state.decide(&self.policy) {
            Decision::Hold(hold) => {
                self.hold(hold);
                return Ok(());
            }
            Decision::Publish(documents) => documents,
        };
        if self.held.take().is_some() {
            info!("the file follows the clusters again");
        }
        self.metrics.held(None);
        let composed = match self.compose(&documents) {
            Ok(composed) => composed,
            Err(error) => {
                self.metrics.write("invalid");
                error!(error = %error_chain(&error), "the merged document failed validation; the file stays as it is");
                return Err(Error::InvalidOutput(error));
            }
        };
        if self.state.note_conflicts(&composed.conflicts) {
            for conflict in &composed.conflicts {
                warn!(conflict = ?conflict, "clusters disagree on a service's options; resolved deterministically");
            }
            if composed.conflicts.is_empty() {
                info!("no more conflicts between clusters");
            }
        }
        self.note_exclusions(&composed.excluded);
        self.status
            .observe_exclusions(&composed.excluded, &self.state);
        self.metrics.conflicts(composed.conflicts.len());
        self.metrics.output_bytes(composed.bytes.len());
        if let Some((_, previous)) = self.desired.replace((revision, Arc::new(composed))) {
            self.composer.recycle(previous);
        }
        self.desired_admin = self.admin_generation;
        Ok(())
    }

    /// The file for `documents`, from the composer; every [`FULL_CHECK_INTERVAL`] also composed
    /// from scratch and compared, and the from-scratch one kept if they differ.
    fn compose(
        &mut self,
        documents: &[(ClusterName, Arc<ksd_shared::traefik::Document>)],
    ) -> std::result::Result<Composed, ksd_shared::traefik::DocumentError> {
        let composed = self.composer.update(documents, &self.guard)?;
        let due = self
            .full_check_at
            .is_none_or(|at| at.elapsed() >= FULL_CHECK_INTERVAL);
        if !due {
            return Ok(composed);
        }
        self.full_check_at = Some(Instant::now());
        let mut fresh = Composer::new(self.version);
        let full = fresh.update(documents, &self.guard)?;
        if full.bytes == composed.bytes && full.excluded == composed.excluded {
            return Ok(composed);
        }
        self.metrics.compose_mismatch();
        error!(
            incremental = %composed.hash,
            full = %full.hash,
            "the incrementally kept file differs from the one composed from scratch; using the latter"
        );
        self.composer = fresh;
        Ok(full)
    }

    /// The file stays as it is: say why, once per change, in the log and the `held` metric.
    fn hold(&mut self, hold: Hold) {
        self.metrics.held(Some(hold.as_str()));
        if self.held.as_ref() == Some(&hold) {
            return;
        }
        match &hold {
            Hold::NotSynced => {
                debug!("not every listed object could be fetched yet; nothing decided");
            }
            Hold::EmptyListing {
                polls,
                confirm_polls,
            } => warn!(
                polls,
                confirm_polls, "the listing is empty; the file stays as it is until confirmed"
            ),
            Hold::NothingServable {
                listed,
                stale,
                rejected,
            } => error!(
                listed,
                stale,
                rejected,
                "no listed cluster has a document to serve (all stale or rejected); the file stays as it is rather than serving nothing"
            ),
        }
        self.held = Some(hold);
    }

    /// Logs what the guard left out, once per change, and sets the metrics.
    fn note_exclusions(&mut self, excluded: &[Exclusion]) {
        let mut servers = Vec::new();
        let mut services = 0;
        for exclusion in excluded {
            match exclusion {
                Exclusion::Server {
                    cluster, reason, ..
                } => servers.push((cluster.to_string(), reason.as_str())),
                Exclusion::AdminName { .. } => services += 1,
            }
        }
        self.metrics.excluded(&servers, services);
        if self.excluded.as_slice() == excluded {
            return;
        }
        for exclusion in excluded {
            if self.excluded.binary_search(exclusion).is_ok() {
                continue;
            }
            self.metrics.exclusion(exclusion.reason());
            match exclusion {
                Exclusion::Server {
                    cluster,
                    kind,
                    service,
                    server,
                    reason,
                } => warn!(
                    %cluster,
                    kind = kind.as_str(),
                    %service,
                    %server,
                    reason = reason.as_str(),
                    "left a server out of the file: {reason}"
                ),
                Exclusion::AdminName { kind, service } => warn!(
                    kind = kind.as_str(),
                    %service,
                    "left an exported service out of the file: the administrator's files in TRAEFIK_DIR define this name"
                ),
            }
        }
        self.excluded = excluded.to_vec();
    }

    async fn publish(&mut self) -> Result<()> {
        let Some((_, desired)) = self.desired.clone() else {
            return Ok(());
        };
        match &mut self.sink {
            Sink::Stdout { printed } => {
                if printed.as_deref() != Some(desired.hash.as_str()) {
                    // A blocking write: only `--dry-run` prints, and a slow reader should slow
                    // the loop down rather than have documents pile up.
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&desired.bytes)
                        .and_then(|()| stdout.flush())
                        .map_err(Error::Stdout)?;
                    *printed = Some(desired.hash.clone());
                }
                self.health.set_ready(true);
                Ok(())
            }
            Sink::File { .. } => self.ensure_file(false).await,
        }
    }

    /// Verifies the output file after a change notification; restores it if needed.
    async fn check_output(&mut self, force_read: bool) {
        if let Err(error) = self.ensure_file(force_read).await {
            warn!(error = %error_chain(&error), "cannot restore the output file; retrying on the next poll");
        }
    }

    /// Makes the file hold the desired bytes, writing only if it does not already.
    async fn ensure_file(&mut self, force_read: bool) -> Result<()> {
        let Some((_, desired)) = self.desired.clone() else {
            return Ok(());
        };
        let Sink::File { output, on_disk } = &mut self.sink else {
            return Ok(());
        };
        let task_output = output.clone();
        let known = on_disk.clone();
        let task_desired = desired.clone();
        let task = tokio::task::spawn_blocking(move || {
            ensure(&task_output, &task_desired, known.as_ref(), force_read)
        });
        let result = match timeout(WRITE_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Blocking(join)),
            Err(_) => Err(Error::OutputTimeout {
                path: output.path().to_path_buf(),
                after: WRITE_TIMEOUT,
            }),
        };
        let wrote = matches!(result, Ok(Ensured::Adopted(_) | Ensured::Written { .. }));
        if result.is_ok() {
            self.status
                .observe_output(output.path(), &desired.hash, desired.bytes.len(), wrote);
            self.status.publish(&self.state, SystemTime::now());
        }
        match result {
            Ok(Ensured::Unchanged) => self.metrics.change_settled(),
            Ok(Ensured::Adopted(found)) => {
                self.metrics.change_settled();
                debug!(path = %output.path().display(), "the file already holds the merged document");
                *on_disk = Some(found);
            }
            Ok(Ensured::Written {
                on_disk: written,
                restored,
            }) => {
                self.metrics.written(SystemTime::now());
                self.metrics.change_written();
                if restored {
                    self.metrics.restored();
                    warn!(path = %output.path().display(), "the output file was deleted or changed by someone else; restored");
                } else {
                    info!(
                        path = %output.path().display(),
                        bytes = desired.bytes.len(),
                        clusters = ?desired.clusters.iter().map(ClusterName::as_str).collect::<Vec<_>>(),
                        "wrote the merged document"
                    );
                }
                *on_disk = Some(written);
            }
            Err(error) => {
                // The state of the file is unknown now: read it again next time.
                *on_disk = None;
                self.metrics.write(match error {
                    Error::OutputTimeout { .. } => "timeout",
                    _ => "error",
                });
                warn!(error = %error_chain(&error), "writing the output file failed; the previous file is intact, retrying on the next poll");
                return Err(error);
            }
        }
        self.health.set_ready(true);
        Ok(())
    }
}

/// The blocking part of [`Syncer::ensure_file`]: a `stat` when the file is as we left it, a
/// read and compare otherwise, a write only if the bytes differ.
fn ensure(
    output: &OutputFile,
    desired: &Composed,
    known: Option<&OnDisk>,
    force_read: bool,
) -> Result<Ensured> {
    let ours = known.filter(|k| k.hash == desired.hash);
    if let Some(ours) = ours
        && !force_read
        && output.fingerprint()? == Some(ours.fingerprint)
    {
        return Ok(Ensured::Unchanged);
    }
    if output.read()?.as_deref() == Some(desired.bytes.as_slice())
        && let Some(fingerprint) = output.fingerprint()?
    {
        let found = OnDisk {
            hash: desired.hash.clone(),
            fingerprint,
        };
        return Ok(match ours {
            Some(ours) if ours.fingerprint == fingerprint => Ensured::Unchanged,
            _ => Ensured::Adopted(found),
        });
    }
    let fingerprint = output.write_atomic(&desired.bytes)?;
    Ok(Ensured::Written {
        on_disk: OnDisk {
            hash: desired.hash.clone(),
            fingerprint,
        },
        restored: ours.is_some(),
    })
}

/// A non-recursive watch of `dir` that signals (coalesced into one pending signal) every event
/// `relevant` keeps. Opens and reads are never relevant: the syncer's own reads would wake it.
fn watch_dir(
    dir: &Path,
    relevant: impl Fn(&notify::Event) -> bool + Send + 'static,
) -> Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(event) => !is_read_only_access(&event.kind) && relevant(&event),
            // An overflowed queue or a broken watch: check, in case something was missed.
            Err(_) => true,
        };
        if wake {
            // Full means a signal is already pending, which is all we need.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| watch_error(dir, source))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| watch_error(dir, source))?;
    Ok((watcher, rx))
}

fn watch_error(dir: &Path, source: notify::Error) -> Error {
    Error::Watch {
        path: PathBuf::from(dir),
        source,
    }
}

fn is_read_only_access(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if !matches!(access, AccessKind::Close(AccessMode::Write)))
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
