//! The writer: makes the bucket hold the latest [`Snapshot`], with conditional uploads.
//!
//! - Identical content is not uploaded again, except when the heartbeat is due (the object's
//!   age then proves the exporter is alive).
//! - Every upload is conditional on the ETag this process last saw for the key (`If-Match`),
//!   or on the key being absent (`If-None-Match: *`). The first time a key is published, the
//!   current object is read: identical content is adopted without an upload.
//! - A refused condition means someone else wrote the key (two exporters with the same
//!   `CLUSTER_NAME`): it is logged as an error, counted, the current ETag is read again, and the
//!   upload is retried with backoff. It is never silent.
//! - Storage errors are retried with capped exponential backoff, always with the latest
//!   snapshot, never by exiting.
//! - With leader election, only the leader writes. A standby keeps the latest snapshot; when
//!   it becomes the leader it forgets what it knew of the objects and reads their current
//!   ETags first, so it adopts what the previous leader wrote instead of calling it a foreign
//!   write, and then publishes its own complete snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ksd_runtime::admin::Health;
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, PutCondition, PutOutcome, Storage, StorageError};
use ksd_shared::names::ClusterName;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::document::{Output, Snapshot};
use crate::metrics::{Metrics, UploadOutcome};
use crate::publication::Publication;

/// First and longest delay between retries of a failed publish.
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a publish did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "{key}: another writer replaced it; is CLUSTER_NAME unique? (its ETag is not the one \
         this exporter last wrote)"
    )]
    Conflict { key: String },
    #[error("reading {key} failed")]
    Read {
        key: String,
        #[source]
        source: StorageError,
    },
    #[error("uploading {key} failed")]
    Upload {
        key: String,
        #[source]
        source: StorageError,
    },
}

/// What the writer knows about one stored object.
#[derive(Debug, Default)]
struct Known {
    /// Whether the fields below reflect the store. False at start and after anything that
    /// casts doubt (a conflict, a failed upload whose effect is unknown).
    fresh: bool,
    exists: bool,
    etag: Option<String>,
    /// Content hash of the stored object.
    hash: Option<String>,
    /// When the stored content was written (by this process, or as the store reports).
    written_at: Option<Instant>,
}

/// Publishes snapshots to one storage location.
pub struct Publisher {
    storage: Storage,
    cluster: ClusterName,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
    objects: HashMap<String, Known>,
    /// Whether this replica may write; `None` without leader election (always).
    leadership: Option<watch::Receiver<bool>>,
    /// The change whose latency was last observed, so that a retry or heartbeat of the same
    /// snapshot is not counted again.
    observed_change: Option<Instant>,
    /// Notified after each complete publish (the acknowledgement reader listens).
    published: Option<Arc<tokio::sync::Notify>>,
    /// Told what was published after each complete publish (the event recorder reads it).
    report: Option<watch::Sender<Option<Publication>>>,
}

impl Publisher {
    pub fn new(
        storage: Storage,
        cluster: ClusterName,
        heartbeat: Duration,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        Publisher {
            storage,
            cluster,
            heartbeat,
            metrics,
            objects: HashMap::new(),
            leadership: None,
            observed_change: None,
            published: None,
            report: None,
        }
    }

    /// Writes only while `leadership` holds `true`.
    pub fn with_leadership(mut self, leadership: watch::Receiver<bool>) -> Publisher {
        self.leadership = Some(leadership);
        self
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        self.leadership.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Forgets what is known of every object, so that the next publish reads each one's
    /// current ETag and content first (another replica may have written since).
    pub fn forget(&mut self) {
        for known in self.objects.values_mut() {
            known.fresh = false;
        }
    }

    /// Notifies `notify` after each complete publish.
    pub fn notify_published(mut self, notify: Arc<tokio::sync::Notify>) -> Publisher {
        self.published = Some(notify);
        self
    }

    /// Sends the Traefik object's ETag and the snapshot's Service names after each complete
    /// publish.
    pub fn report_published(mut self, report: watch::Sender<Option<Publication>>) -> Publisher {
        self.report = Some(report);
        self
    }

    /// When the next heartbeat upload is due, if any object has been published.
    pub fn next_heartbeat(&self) -> Option<Instant> {
        self.objects
            .values()
            .filter(|k| k.fresh)
            .filter_map(|k| k.written_at)
            .min()
            .map(|t| t + self.heartbeat)
    }

    /// Makes the store hold every output of `snapshot`. Outputs are written in order; the
    /// first failure stops the publish (the caller retries the whole snapshot).
    pub async fn publish(&mut self, snapshot: &Snapshot) -> Result<(), PublishError> {
        for output in &snapshot.outputs {
            self.publish_output(output).await?;
        }
        self.metrics.published(SystemTime::now());
        if let Some(first) = snapshot.first_change
            && self.observed_change != Some(first)
        {
            self.observed_change = Some(first);
            self.metrics.change_uploaded(first.elapsed().as_secs_f64());
        }
        if let Some(report) = &self.report {
            let etag = snapshot
                .output(ksd_shared::names::ObjectFormat::Traefik)
                .and_then(|o| self.objects.get(&o.key)?.etag.clone());
            report.send_replace(etag.map(|etag| Publication {
                etag,
                services: snapshot.services.clone(),
            }));
        }
        if let Some(notify) = &self.published {
            notify.notify_one();
        }
        Ok(())
    }

    async fn publish_output(&mut self, output: &Output) -> Result<(), PublishError> {
        let known = self.objects.entry(output.key.clone()).or_default();
        if !known.fresh {
            refresh(&self.storage, &output.key, known).await?;
        }
        let now = Instant::now();
        let heartbeat_due = known.written_at.is_none_or(|t| now >= t + self.heartbeat);
        let unchanged = known.hash.as_deref() == Some(output.hash.as_str());
        if unchanged && !heartbeat_due {
            self.metrics.skipped_unchanged();
            return Ok(());
        }

        let condition = match (&known.etag, known.exists) {
            (_, false) => PutCondition::IfAbsent,
            (Some(etag), true) => PutCondition::IfMatch(etag.clone()),
            // A store that reported no ETag gives nothing to condition on.
            (None, true) => PutCondition::None,
        };
        let metadata = BTreeMap::from([
            ("cluster".to_owned(), self.cluster.to_string()),
            (
                "exporter-version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            (
                "generated-at".to_owned(),
                humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ),
        ]);
        let timer = self.metrics.upload_timer();
        let result = self
            .storage
            .put_hashed(
                &output.key,
                output.bytes.clone(),
                &output.hash,
                &metadata,
                condition,
            )
            .await;
        drop(timer);
        match result {
            Ok(PutOutcome::Written { etag }) => {
                self.metrics.upload(UploadOutcome::Written);
                // Without an ETag from the server, the next publish reads it back first.
                known.fresh = etag.is_some();
                known.exists = true;
                known.etag = etag;
                known.hash = Some(output.hash.clone());
                known.written_at = Some(Instant::now());
                info!(
                    key = %output.key,
                    bytes = output.bytes.len(),
                    heartbeat = unchanged,
                    "published"
                );
                Ok(())
            }
            Ok(PutOutcome::PreconditionFailed) => {
                self.metrics.upload(UploadOutcome::Conflict);
                known.fresh = false;
                let err = PublishError::Conflict {
                    key: format!("{}{}", location(&self.storage), output.key),
                };
                error!(key = %output.key, cluster = %self.cluster, "{err}");
                Err(err)
            }
            Err(source) => {
                self.metrics.upload(UploadOutcome::Error);
                // The write may or may not have happened; read the key again before the next
                // conditional write instead of mistaking our own write for a foreign one.
                known.fresh = false;
                Err(PublishError::Upload {
                    key: output.key.clone(),
                    source,
                })
            }
        }
    }
}

/// The most the exporter reads back of the object under its own key.
pub const READ_BACK_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads what the store holds under `key` into `known`.
async fn refresh(storage: &Storage, key: &str, known: &mut Known) -> Result<(), PublishError> {
    // Bounded: whatever someone put under our key, reading it back never holds more than this.
    let fetched = match storage.get_limited(key, None, READ_BACK_LIMIT).await {
        Ok(fetched) => fetched,
        // Not something we wrote (ours are far smaller): known to exist, content unknown, so
        // the next write replaces it.
        Err(source) if source.is_too_large() => {
            tracing::warn!(%key, error = %source, "the stored object is over the read-back limit; it will be replaced");
            known.exists = true;
            known.etag = None;
            known.hash = None;
            known.written_at = None;
            known.fresh = true;
            return Ok(());
        }
        Err(source) => {
            return Err(PublishError::Read {
                key: key.to_owned(),
                source,
            });
        }
    };
    match fetched {
        Fetched::Object(object) => {
            known.exists = true;
            known.hash = Some(ksd_shared::content_hash(&object.bytes));
            known.etag = Some(object.etag).filter(|e| !e.is_empty());
            // The object's age counts toward the heartbeat, so adopting an identical object
            // does not postpone the next proof of life by a whole interval.
            let now = Instant::now();
            known.written_at = Some(
                object
                    .last_modified
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .and_then(|age| now.checked_sub(age))
                    .unwrap_or(now),
            );
        }
        Fetched::Missing => {
            known.exists = false;
            known.etag = None;
            known.hash = None;
            known.written_at = None;
        }
        // Only an `If-None-Match` read can answer this; treat the content as unknown.
        Fetched::NotModified => {
            known.exists = true;
            known.etag = None;
            known.hash = None;
            known.written_at = None;
        }
    }
    known.fresh = true;
    Ok(())
}

/// `s3://bucket/prefix/` or `file:///dir/`, to name keys fully in messages.
fn location(storage: &Storage) -> String {
    storage.url().to_string()
}

/// Publishes every snapshot sent on `snapshots` until `shutdown`, retrying failures with
/// backoff and re-uploading unchanged content on the heartbeat. An upload in progress when
/// `shutdown` fires is finished first. Marks `health` ready after the first full publish.
pub async fn run(
    mut publisher: Publisher,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut leadership = publisher.leadership.take();
    if leadership.is_none() {
        publisher.metrics.leader(true);
    }
    let mut turn = Turns {
        backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX),
        retry_at: None,
        was_leader: leadership.as_ref().is_none_or(|l| *l.borrow()),
    };
    loop {
        let go_on = turn
            .wait(&publisher, &mut leadership, &mut snapshots, &shutdown)
            .await;
        if !go_on {
            return;
        }
        let leader = leadership.as_ref().is_none_or(|l| *l.borrow());
        turn.follow_leadership(leader, &mut publisher);
        if !leader {
            // A standby is healthy once its watches have synced: it is ready to take over.
            if snapshots.borrow_and_update().is_some() {
                health.set_ready(true);
            }
            continue;
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        // Not raced against `shutdown`: an upload that started completes.
        let result = publisher.publish(&snapshot).await;
        turn.settle(result, &health);
    }
}

/// The publish loop's own state: retries and whether this replica led at the last turn.
struct Turns {
    backoff: Backoff,
    retry_at: Option<Instant>,
    was_leader: bool,
}

impl Turns {
    /// Waits for the next reason to publish: a new snapshot, the heartbeat, a retry, or a
    /// change of leadership. False at the shutdown or when the snapshots end.
    async fn wait(
        &self,
        publisher: &Publisher,
        leadership: &mut Option<watch::Receiver<bool>>,
        snapshots: &mut watch::Receiver<Option<Arc<Snapshot>>>,
        shutdown: &CancellationToken,
    ) -> bool {
        match self.retry_at {
            // While retrying, new snapshots wait for the retry: a busy cluster must not turn a
            // storage outage into a request storm.
            Some(at) => tokio::select! {
                biased;
                () = shutdown.cancelled() => false,
                () = leadership_changed(leadership) => true,
                () = tokio::time::sleep_until(at) => true,
            },
            None => {
                let heartbeat = if self.was_leader {
                    publisher.next_heartbeat()
                } else {
                    None
                };
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => false,
                    () = leadership_changed(leadership) => true,
                    changed = snapshots.changed() => changed.is_ok(),
                    () = sleep_until_opt(heartbeat) => true,
                }
            }
        }
    }

    /// A new leader forgets what it knew of the object (another leader may have written it
    /// since); either change resets the retries.
    fn follow_leadership(&mut self, leader: bool, publisher: &mut Publisher) {
        if leader == self.was_leader {
            return;
        }
        self.was_leader = leader;
        self.retry_at = None;
        self.backoff.reset();
        if leader {
            publisher.forget();
            info!("leading: publishing the current state");
        } else {
            info!("standing by: not publishing");
        }
    }

    fn settle(&mut self, result: Result<(), PublishError>, health: &Health) {
        match result {
            Ok(()) => {
                if self.retry_at.is_some() {
                    info!("publishing works again");
                }
                self.retry_at = None;
                self.backoff.reset();
                health.set_ready(true);
            }
            Err(err) => {
                let delay = self.backoff.next_delay();
                self.retry_at = Some(Instant::now() + delay);
                match &err {
                    // Already logged as an error where it was detected.
                    PublishError::Conflict { .. } => {}
                    _ => warn!(
                        error = %error_chain(&err),
                        retry_in = ?delay,
                        "publish failed; retrying"
                    ),
                }
            }
        }
    }
}

/// Resolves when the leadership flag changes; never without leader election (or once the
/// election has ended).
async fn leadership_changed(leadership: &mut Option<watch::Receiver<bool>>) {
    match leadership {
        Some(receiver) => {
            // An ended election keeps its last word (not leading).
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Publishes one snapshot, retrying up to `attempts` times. For `--once`.
pub async fn publish_with_retries(
    publisher: &mut Publisher,
    snapshot: &Snapshot,
    attempts: u32,
    shutdown: &CancellationToken,
) -> Result<(), PublishError> {
    let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
    let mut attempt = 1;
    loop {
        match publisher.publish(snapshot).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= attempts || shutdown.is_cancelled() => return Err(err),
            Err(err) => {
                let delay = backoff.next_delay();
                if !matches!(err, PublishError::Conflict { .. }) {
                    warn!(error = %error_chain(&err), retry_in = ?delay, attempt, "publish failed; retrying");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Err(err),
                    () = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ksd_runtime::storage::StorageUrl;
    use ksd_shared::names::ObjectFormat;
    use prometheus_client::registry::Registry;

    use super::*;

    fn output(text: &str) -> Output {
        Output {
            format: ObjectFormat::Traefik,
            key: "c1.traefik.yaml".to_owned(),
            bytes: text.as_bytes().to_vec(),
            hash: ksd_shared::content_hash(text.as_bytes()),
        }
    }

    fn snapshot(text: &str) -> Snapshot {
        Snapshot {
            outputs: vec![output(text)],
            backends: 0,
            servers: 0,
            services: Default::default(),
            first_change: None,
        }
    }

    async fn local() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let url = StorageUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let storage = Storage::connect(&url, &Default::default()).await.unwrap();
        (dir, storage)
    }

    fn publisher(storage: &Storage, heartbeat: Duration) -> (Publisher, Registry) {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let cluster = ClusterName::parse("c1").unwrap();
        (
            Publisher::new(storage.clone(), cluster, heartbeat, metrics),
            registry,
        )
    }

    fn metric(registry: &Registry, line_start: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    }

    async fn stored(storage: &Storage) -> Option<(String, BTreeMap<String, String>)> {
        match storage.get("c1.traefik.yaml", None).await.unwrap() {
            Fetched::Object(o) => Some((String::from_utf8(o.bytes).unwrap(), o.metadata)),
            _ => None,
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeating(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn error_chains_leave_out_repeated_sources() {
        let err = Repeating(Inner(std::io::Error::other("disk on fire")));
        assert_eq!(error_chain(&err), "outer: inner: disk on fire");
    }

    #[tokio::test]
    async fn writes_then_skips_identical_content() {
        let (_dir, storage) = local().await;
        let (mut p, registry) = publisher(&storage, Duration::from_secs(300));
        p.publish(&snapshot("a: 1\n")).await.unwrap();
        let (text, metadata) = stored(&storage).await.unwrap();
        assert_eq!(text, "a: 1\n");
        assert_eq!(metadata.get("cluster").map(String::as_str), Some("c1"));
        assert!(metadata.contains_key("exporter-version"));
        assert!(
            metadata
                .get("generated-at")
                .is_some_and(|t| t.ends_with('Z'))
        );

        p.publish(&snapshot("a: 1\n")).await.unwrap();
        assert_eq!(
            metric(&registry, "ksd_exporter_uploads_total{outcome=\"written\"}"),
            1
        );
        assert_eq!(metric(&registry, "ksd_exporter_skipped_unchanged_total"), 1);

        p.publish(&snapshot("a: 2\n")).await.unwrap();
        assert_eq!(stored(&storage).await.unwrap().0, "a: 2\n");
        assert_eq!(
            metric(&registry, "ksd_exporter_uploads_total{outcome=\"written\"}"),
            2
        );
    }

    #[tokio::test]
    async fn identical_object_found_at_start_is_adopted() {
        let (_dir, storage) = local().await;
        let (mut first, _) = publisher(&storage, Duration::from_secs(300));
        first.publish(&snapshot("a: 1\n")).await.unwrap();

        let (mut second, registry) = publisher(&storage, Duration::from_secs(300));
        second.publish(&snapshot("a: 1\n")).await.unwrap();
        assert_eq!(
            metric(&registry, "ksd_exporter_uploads_total{outcome=\"written\"}"),
            0
        );
        assert_eq!(metric(&registry, "ksd_exporter_skipped_unchanged_total"), 1);
        // ... and its ETag is used for the next conditional write.
        second.publish(&snapshot("a: 2\n")).await.unwrap();
        assert_eq!(stored(&storage).await.unwrap().0, "a: 2\n");
    }

    #[tokio::test]
    async fn a_foreign_write_is_a_conflict_then_overwritten_on_retry() {
        let (_dir, storage) = local().await;
        let (mut mine, registry) = publisher(&storage, Duration::from_secs(300));
        mine.publish(&snapshot("mine: 1\n")).await.unwrap();

        let (mut theirs, _) = publisher(&storage, Duration::from_secs(300));
        theirs.publish(&snapshot("theirs: 1\n")).await.unwrap();

        let err = mine.publish(&snapshot("mine: 2\n")).await.unwrap_err();
        assert!(matches!(err, PublishError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("is CLUSTER_NAME unique?"));
        assert!(err.to_string().contains("c1.traefik.yaml"));
        assert_eq!(stored(&storage).await.unwrap().0, "theirs: 1\n");
        assert_eq!(
            metric(&registry, "ksd_exporter_foreign_writer_conflicts_total"),
            1
        );
        assert_eq!(
            metric(
                &registry,
                "ksd_exporter_uploads_total{outcome=\"conflict\"}"
            ),
            1
        );

        // The retry reads the current ETag and writes.
        mine.publish(&snapshot("mine: 2\n")).await.unwrap();
        assert_eq!(stored(&storage).await.unwrap().0, "mine: 2\n");
    }

    #[tokio::test]
    async fn heartbeat_reuploads_identical_content() {
        let (_dir, storage) = local().await;
        let (mut p, registry) = publisher(&storage, Duration::from_millis(200));
        p.publish(&snapshot("a: 1\n")).await.unwrap();
        let due = p.next_heartbeat().unwrap();
        assert!(due > Instant::now());
        p.publish(&snapshot("a: 1\n")).await.unwrap();
        assert_eq!(
            metric(&registry, "ksd_exporter_uploads_total{outcome=\"written\"}"),
            1
        );
        tokio::time::sleep_until(due).await;
        p.publish(&snapshot("a: 1\n")).await.unwrap();
        assert_eq!(
            metric(&registry, "ksd_exporter_uploads_total{outcome=\"written\"}"),
            2
        );
    }

    #[tokio::test]
    async fn a_missing_object_is_created_only_if_still_absent() {
        let (_dir, storage) = local().await;
        let (mut p, registry) = publisher(&storage, Duration::from_secs(300));
        // The key is read as absent ...
        let known = p.objects.entry("c1.traefik.yaml".to_owned()).or_default();
        refresh(&storage, "c1.traefik.yaml", known).await.unwrap();
        // ... then someone creates it before the first upload.
        let (mut other, _) = publisher(&storage, Duration::from_secs(300));
        other.publish(&snapshot("other: 1\n")).await.unwrap();
        let err = p.publish(&snapshot("a: 1\n")).await.unwrap_err();
        assert!(matches!(err, PublishError::Conflict { .. }));
        assert_eq!(
            metric(&registry, "ksd_exporter_foreign_writer_conflicts_total"),
            1
        );
    }
}
