//! Acknowledgements: whether each named syncer serves this cluster's current document.
//!
//! Syncers started with `SYNCER_NAME` write `<prefix>_status/<name>.json`
//! ([`ksd_shared::status::Acknowledgement`]). This task reads them on its own slow period
//! (`ACK_INTERVAL`) and once after each publish, finds the ETag of this cluster's object in the
//! bucket listing (the ETag the syncers see too), and reports per syncer:
//! `ksd_exporter_syncer_serving{syncer}` (1 when the current version is served, 0 otherwise)
//! and `ksd_exporter_syncer_ack_age_seconds{syncer}` (how long ago the syncer wrote, so one that
//! stopped acknowledging shows a growing age). Every change of a syncer's answer is logged once.
//!
//! Reading never blocks publishing: it runs in its own task and only reads the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, Storage, StorageError};
use ksd_shared::names::{self, ClusterName, ObjectFormat};
use ksd_shared::status::{self, Acknowledgement, Answer, SyncerName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncerLabels {
    syncer: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The acknowledgement metrics, under `ksd_exporter_`.
#[derive(Debug, Default)]
pub struct AckMetrics {
    serving: Family<SyncerLabels, Gauge>,
    age: Family<SyncerLabels, Gauge<f64, AtomicU64>>,
    errors: Family<KindLabels, Counter>,
    reads: Counter,
}

impl AckMetrics {
    pub fn register(registry: &mut Registry) -> AckMetrics {
        let metrics = AckMetrics::default();
        let r = registry.sub_registry_with_prefix("ksd_exporter");
        r.register(
            "syncer_serving",
            "1 when the syncer's acknowledgement says it serves this cluster's current document, \
             0 otherwise",
            metrics.serving.clone(),
        );
        r.register(
            "syncer_ack_age_seconds",
            "Seconds since the syncer last wrote its acknowledgement",
            metrics.age.clone(),
        );
        r.register(
            "ack_errors",
            "Acknowledgements that could not be read (kind: storage, invalid)",
            metrics.errors.clone(),
        );
        r.register(
            "ack_reads",
            "Completed reads of the syncers' acknowledgements",
            metrics.reads.clone(),
        );
        metrics
    }
}

/// One syncer's view of this cluster, as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncerView {
    /// When the syncer wrote its acknowledgement (seconds since the Unix epoch).
    pub written_at: u64,
    pub answer: Answer,
}

/// Everything one read found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The ETag of this cluster's Traefik object in the listing; `None` when absent.
    pub etag: Option<String>,
    pub syncers: BTreeMap<SyncerName, SyncerView>,
}

/// Called with every completed reading.
type Observer = Box<dyn FnMut(&Reading) + Send>;

/// Reads the acknowledgements of every syncer about one cluster.
pub struct AckReader {
    root: Storage,
    status: Storage,
    cluster: ClusterName,
    key: String,
    metrics: Arc<AckMetrics>,
    /// Acknowledgements already fetched, by file name: ETag and content.
    cache: BTreeMap<String, (String, Result<Acknowledgement, String>)>,
    last: Reading,
    /// Called with every completed reading (the event recorder listens).
    on_reading: Option<Observer>,
}

impl AckReader {
    pub async fn new(
        root: Storage,
        cluster: ClusterName,
        metrics: Arc<AckMetrics>,
    ) -> Result<AckReader, StorageError> {
        let status = root.child(status::STATUS_DIR).await?;
        let key = names::object_key(&cluster, ObjectFormat::Traefik);
        Ok(AckReader {
            root,
            status,
            cluster,
            key,
            metrics,
            cache: BTreeMap::new(),
            last: Reading::default(),
            on_reading: None,
        })
    }

    /// Calls `observer` with every completed reading; it must not block.
    pub fn on_reading(mut self, observer: impl FnMut(&Reading) + Send + 'static) -> AckReader {
        self.on_reading = Some(Box::new(observer));
        self
    }

    /// The last completed reading.
    pub fn last(&self) -> &Reading {
        &self.last
    }

    /// Lists the cluster's object and every acknowledgement, fetches the changed ones and
    /// updates the metrics. A syncer whose acknowledgement disappeared is dropped from them.
    pub async fn read(&mut self) -> Result<&Reading, StorageError> {
        let etag = self
            .root
            .list()
            .await?
            .into_iter()
            .find(|o| o.key == self.key)
            .map(|o| o.etag);
        let listed = self.status.list().await?;
        let mut syncers = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for info in listed {
            let Ok(name) = SyncerName::from_file_name(&info.key) else {
                debug!(key = %info.key, "not an acknowledgement; skipped");
                continue;
            };
            seen.insert(info.key.clone());
            let cached = self
                .cache
                .get(&info.key)
                .filter(|(e, _)| status::same_etag(e, &info.etag));
            let parsed = match cached {
                Some((_, parsed)) => parsed.clone(),
                None => {
                    let fetched = self
                        .status
                        .get_limited(&info.key, None, status::MAX_ACK_BYTES)
                        .await;
                    let parsed = match fetched {
                        Ok(Fetched::Object(object)) => {
                            Acknowledgement::parse_keyed(&info.key, &object.bytes)
                                .map_err(|e| e.to_string())
                        }
                        Ok(Fetched::Missing | Fetched::NotModified) => continue,
                        Err(err) if err.is_too_large() => Err(err.to_string()),
                        Err(err) => {
                            self.metrics
                                .errors
                                .get_or_create(&KindLabels { kind: "storage" })
                                .inc();
                            return Err(err);
                        }
                    };
                    if let Err(reason) = &parsed {
                        self.metrics
                            .errors
                            .get_or_create(&KindLabels { kind: "invalid" })
                            .inc();
                        warn!(syncer = %name, key = %info.key, %reason,
                            "acknowledgement refused");
                    }
                    self.cache
                        .insert(info.key.clone(), (info.etag.clone(), parsed.clone()));
                    parsed
                }
            };
            let Ok(ack) = parsed else { continue };
            let answer = match &etag {
                Some(etag) => ack.answer(&self.cluster, etag),
                None => Answer::UnknownCluster,
            };
            syncers.insert(
                name,
                SyncerView {
                    written_at: ack.written_at,
                    answer,
                },
            );
        }
        self.cache.retain(|k, _| seen.contains(k));
        let reading = Reading { etag, syncers };
        self.report(&reading);
        if let Some(observer) = &mut self.on_reading {
            observer(&reading);
        }
        self.last = reading;
        self.metrics.reads.inc();
        Ok(&self.last)
    }

    fn report(&self, reading: &Reading) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (name, view) in &reading.syncers {
            let labels = SyncerLabels {
                syncer: name.to_string(),
            };
            self.metrics
                .serving
                .get_or_create(&labels)
                .set(i64::from(view.answer.is_served()));
            // A syncer whose clock runs ahead shows age zero, not a negative one.
            self.metrics
                .age
                .get_or_create(&labels)
                .set(now.saturating_sub(view.written_at) as f64);
            let before = self.last.syncers.get(name).map(|v| &v.answer);
            if before != Some(&view.answer) {
                if view.answer.is_served() {
                    info!(syncer = %name, answer = %view.answer, "syncer serves this cluster's document");
                } else {
                    warn!(syncer = %name, answer = %view.answer, "syncer does not serve this cluster's current document");
                }
            }
        }
        for name in self.last.syncers.keys() {
            if !reading.syncers.contains_key(name) {
                let labels = SyncerLabels {
                    syncer: name.to_string(),
                };
                self.metrics.serving.remove(&labels);
                self.metrics.age.remove(&labels);
                info!(syncer = %name, "syncer's acknowledgement is gone");
            }
        }
    }
}

/// Reads every `interval` and whenever `published` is notified, until `shutdown`. Failures
/// are logged and retried on the next period; they never reach the publisher.
pub async fn run(
    mut reader: AckReader,
    interval: Duration,
    published: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        match reader.read().await {
            Ok(reading) => {
                if failing {
                    info!("reading acknowledgements works again");
                }
                failing = false;
                debug!(syncers = reading.syncers.len(), "acknowledgements read");
            }
            Err(err) => {
                if !failing {
                    warn!(error = %error_chain(&err), "cannot read acknowledgements; retrying next period");
                }
                failing = true;
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = published.notified() => {}
        }
    }
}
