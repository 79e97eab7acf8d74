//! The syncer's Prometheus metrics, all named `ksd_syncer_*`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::time::Instant;

use crate::state::Summary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, Ord, PartialOrd, EncodeLabelSet)]
pub struct DocumentLabels {
    pub cluster: String,
    pub format: &'static str,
}

/// Seconds from a new cluster document accepted to the merged file written: milliseconds for a
/// few clusters, 0.5-2.2 s for 50 clusters and 100k servers (docs/BENCHMARKS.md), more while
/// writes fail.
const PROPAGATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Seconds one sync cycle (list, fetch, merge, write) takes: about the listing's round trip
/// when nothing changed, up to 2-3 s for the largest measured merges, 30 s timeouts beyond.
const CYCLE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];

/// The latency histograms and what they measure from.
#[derive(Clone, Debug)]
struct Latency {
    change_to_write: Histogram,
    cycle: Histogram,
    document_age: Family<DocumentLabels, Gauge<f64, AtomicU64>>,
    /// Unix time of `pending_since`, 0 when nothing waits.
    pending_timestamp: Gauge<f64, AtomicU64>,
    /// The first accepted change not yet in a written file.
    pending_since: std::sync::Arc<Mutex<Option<Instant>>>,
    /// Documents whose age was set in the last listing.
    aged: std::sync::Arc<Mutex<BTreeSet<DocumentLabels>>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            change_to_write: Histogram::new(PROPAGATION_BUCKETS),
            cycle: Histogram::new(CYCLE_BUCKETS),
            document_age: Family::default(),
            pending_timestamp: Gauge::default(),
            pending_since: std::sync::Arc::default(),
            aged: std::sync::Arc::default(),
        }
    }
}

/// Handles to every metric; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    polls: Family<OutcomeLabels, Counter>,
    gets: Family<OutcomeLabels, Counter>,
    writes: Family<OutcomeLabels, Counter>,
    restores: Counter,
    compose_mismatches: Counter,
    last_write: Gauge<f64, AtomicU64>,
    clusters_seen: Gauge,
    clusters_accepted: Gauge,
    clusters_rejected: Family<ReasonLabels, Gauge>,
    clusters_stale: Gauge,
    clusters_missing: Gauge,
    rejections: Family<ReasonLabels, Counter>,
    servers: Family<ClusterLabels, Gauge>,
    conflicts: Gauge,
    invalid_keys: Gauge,
    output_bytes: Gauge,
    excluded_servers: Family<ClusterReasonLabels, Gauge>,
    exclusions: Family<ReasonLabels, Counter>,
    excluded_services: Gauge,
    admin_names: Gauge,
    admin_file_problems: Gauge,
    held: Family<ReasonLabels, Gauge>,
    restored_clusters: Gauge,
    latency: Latency,
    /// Label values set in the last summary, so vanished ones are removed or zeroed.
    labelled: std::sync::Arc<Mutex<Labelled>>,
}

#[derive(Debug, Default)]
struct Labelled {
    reasons: BTreeSet<&'static str>,
    clusters: BTreeSet<String>,
    excluded: BTreeSet<ClusterReasonLabels>,
    held: BTreeSet<&'static str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ClusterReasonLabels {
    pub cluster: String,
    pub reason: &'static str,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("ksd_syncer");
        metrics.register_io(r);
        metrics.register_clusters(r);
        metrics.register_guard(r);
        metrics.register_latency(r);
        metrics
    }

    /// Listings, fetches and writes.
    fn register_io(&self, r: &mut Registry) {
        r.register(
            "polls",
            "Listings of the storage prefix, by outcome (ok, error, timeout)",
            self.polls.clone(),
        );
        r.register(
            "gets",
            "Fetches of cluster objects, by outcome (ok, not_modified, missing, too_large, error, timeout)",
            self.gets.clone(),
        );
        r.register(
            "writes",
            "Writes of the output file, by outcome (ok, error, timeout, invalid)",
            self.writes.clone(),
        );
        r.register(
            "restores",
            "Times the output file was found deleted or changed by someone else and restored",
            self.restores.clone(),
        );
        r.register(
            "compose_mismatches",
            "Times the periodic full composition differed from the incrementally kept file (the full one is used; a bug to report)",
            self.compose_mismatches.clone(),
        );
        r.register(
            "last_write_timestamp_seconds",
            "Unix time of the last successful write of the output file",
            self.last_write.clone(),
        );
    }

    /// What the clusters' documents hold and whether they are served.
    fn register_clusters(&self, r: &mut Registry) {
        r.register(
            "clusters_seen",
            "Clusters with an object in the last listing",
            self.clusters_seen.clone(),
        );
        r.register(
            "clusters_accepted",
            "Clusters whose document is in the output file",
            self.clusters_accepted.clone(),
        );
        r.register(
            "clusters_rejected",
            "Clusters whose latest document is rejected, by reason (a last good version may still be published)",
            self.clusters_rejected.clone(),
        );
        r.register(
            "clusters_stale",
            "Clusters left out because their object is older than STALE_AFTER",
            self.clusters_stale.clone(),
        );
        r.register(
            "clusters_missing",
            "Known clusters absent from the listing, not yet confirmed gone",
            self.clusters_missing.clone(),
        );
        r.register(
            "rejections",
            "Cluster document versions rejected, by reason (once per ETag)",
            self.rejections.clone(),
        );
        r.register(
            "servers",
            "Servers in each published cluster's document",
            self.servers.clone(),
        );
        r.register(
            "conflicts",
            "Services whose options differ between clusters in the last merge",
            self.conflicts.clone(),
        );
        r.register(
            "invalid_keys",
            "Keys under the prefix that are not <cluster>.traefik.yaml or <cluster>.backends.yaml",
            self.invalid_keys.clone(),
        );
        r.register(
            "output_bytes",
            "Size of the last decided output file",
            self.output_bytes.clone(),
        );
    }

    /// What the guard leaves out and why the file is held.
    fn register_guard(&self, r: &mut Registry) {
        r.register(
            "excluded_servers",
            "Servers left out of the file by the address policy, by cluster and reason (loopback, link_local, outside_allowed_ranges, ...)",
            self.excluded_servers.clone(),
        );
        r.register(
            "exclusions",
            "Servers or services newly left out of the file, by reason (admin_name for a service the administrator's files define)",
            self.exclusions.clone(),
        );
        r.register(
            "excluded_services",
            "Exported services (union or per-cluster pools) left out because the administrator's files define the name",
            self.excluded_services.clone(),
        );
        r.register(
            "admin_names",
            "Service names defined by the administrator's files in TRAEFIK_DIR",
            self.admin_names.clone(),
        );
        r.register(
            "admin_file_problems",
            "Administrator files in TRAEFIK_DIR that cannot be read or parsed (their names are protected as far as they can be read)",
            self.admin_file_problems.clone(),
        );
        r.register(
            "held",
            "1 while the file is kept as it is instead of being replaced, by reason (not_synced, empty_listing, nothing_servable: every listed cluster stale or rejected)",
            self.held.clone(),
        );
        r.register(
            "restored_clusters",
            "Clusters served from the state rebuilt from the previous run's file, not yet from a fetched object",
            self.restored_clusters.clone(),
        );
    }

    /// How long changes take to reach the file.
    fn register_latency(&self, r: &mut Registry) {
        r.register_with_unit(
            "change_to_write",
            "Time from a new cluster document accepted to the end of the write of the merged file that carries it",
            Unit::Seconds,
            self.latency.change_to_write.clone(),
        );
        r.register_with_unit(
            "cycle_duration",
            "Time one sync cycle takes: list, fetch, validate, merge and write",
            Unit::Seconds,
            self.latency.cycle.clone(),
        );
        r.register_with_unit(
            "document_age",
            "Age of each listed cluster object (now minus its last-modified time) at the last listing",
            Unit::Seconds,
            self.latency.document_age.clone(),
        );
        r.register(
            "pending_change_timestamp_seconds",
            "Unix time of the oldest accepted cluster document not yet in the written file; 0 when none waits",
            self.latency.pending_timestamp.clone(),
        );
    }

    /// The address policy's current exclusions, `(cluster, reason)` with a count each.
    pub fn excluded(&self, servers: &[(String, &'static str)], services: usize) {
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counts: std::collections::BTreeMap<ClusterReasonLabels, i64> =
            std::collections::BTreeMap::new();
        for (cluster, reason) in servers {
            *counts
                .entry(ClusterReasonLabels {
                    cluster: cluster.clone(),
                    reason,
                })
                .or_default() += 1;
        }
        for gone in labelled
            .excluded
            .iter()
            .filter(|l| !counts.contains_key(*l))
        {
            self.excluded_servers.remove(gone);
        }
        for (labels, count) in &counts {
            self.excluded_servers.get_or_create(labels).set(*count);
        }
        labelled.excluded = counts.into_keys().collect();
        self.excluded_services.set(to_i64(services));
    }

    /// A server or service newly left out.
    pub fn exclusion(&self, reason: &'static str) {
        self.exclusions
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn admin_files(&self, names: usize, problems: usize) {
        self.admin_names.set(to_i64(names));
        self.admin_file_problems.set(to_i64(problems));
    }

    /// The reason the file is held now, or `None` when it follows the state.
    pub fn held(&self, reason: Option<&'static str>) {
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        labelled.held.extend(reason);
        for known in &labelled.held {
            self.held
                .get_or_create(&ReasonLabels { reason: known })
                .set(i64::from(Some(*known) == reason));
        }
    }

    pub fn restored_clusters(&self, count: usize) {
        self.restored_clusters.set(to_i64(count));
    }

    /// A timer for one sync cycle, observed when dropped (also on an error or cancellation).
    pub fn cycle_timer(&self) -> ksd_runtime::timing::DropTimer {
        ksd_runtime::timing::DropTimer::new(&self.latency.cycle)
    }

    /// A new cluster document was accepted: its change waits for the next write.
    pub fn change_seen(&self) {
        let mut pending = lock(&self.latency.pending_since);
        if pending.is_none() {
            *pending = Some(Instant::now());
            self.latency.pending_timestamp.set(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        }
    }

    /// The merged file was written: the changes waiting are in it.
    pub fn change_written(&self) {
        if let Some(since) = lock(&self.latency.pending_since).take() {
            self.latency.pending_timestamp.set(0.0);
            self.latency
                .change_to_write
                .observe(since.elapsed().as_secs_f64());
        }
    }

    /// The file already held what was decided: the changes waiting needed no write.
    pub fn change_settled(&self) {
        lock(&self.latency.pending_since).take();
        self.latency.pending_timestamp.set(0.0);
    }

    /// Sets each listed cluster object's age; objects no longer listed lose their series.
    pub fn document_ages(&self, listing: &[ksd_runtime::storage::ObjectInfo], now: SystemTime) {
        let mut current = BTreeSet::new();
        for object in listing {
            let Ok((cluster, format)) = ksd_shared::names::parse_object_key(&object.key) else {
                continue;
            };
            let labels = DocumentLabels {
                cluster: cluster.as_str().to_owned(),
                format: format.as_str(),
            };
            let age = object
                .last_modified
                .and_then(|t| now.duration_since(t).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            self.latency.document_age.get_or_create(&labels).set(age);
            current.insert(labels);
        }
        let mut aged = lock(&self.latency.aged);
        for gone in aged.difference(&current) {
            self.latency.document_age.remove(gone);
        }
        *aged = current;
    }

    pub fn poll(&self, outcome: &'static str) {
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn get(&self, outcome: &'static str) {
        self.gets.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn write(&self, outcome: &'static str) {
        self.writes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn written(&self, at: SystemTime) {
        self.write("ok");
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_write.set(secs);
    }

    pub fn restored(&self) {
        self.restores.inc();
    }

    pub fn compose_mismatch(&self) {
        self.compose_mismatches.inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn conflicts(&self, count: usize) {
        self.conflicts.set(to_i64(count));
    }

    pub fn output_bytes(&self, len: usize) {
        self.output_bytes.set(to_i64(len));
    }

    /// Sets the per-cluster gauges from the state's summary.
    pub fn summary(&self, summary: &Summary) {
        self.clusters_seen.set(to_i64(summary.seen));
        self.clusters_accepted.set(to_i64(summary.published));
        self.clusters_stale.set(to_i64(summary.stale));
        self.clusters_missing.set(to_i64(summary.missing));
        self.invalid_keys.set(to_i64(summary.invalid_keys));

        // A poisoned lock only means another thread panicked mid-update; the sets are still
        // usable.
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        labelled.reasons.extend(summary.rejected.keys().copied());
        for reason in &labelled.reasons {
            let count = summary.rejected.get(reason).copied().unwrap_or(0);
            self.clusters_rejected
                .get_or_create(&ReasonLabels { reason })
                .set(to_i64(count));
        }
        let clusters: BTreeSet<String> = summary
            .servers
            .keys()
            .map(|c| c.as_str().to_owned())
            .collect();
        for gone in labelled.clusters.difference(&clusters) {
            self.servers.remove(&ClusterLabels {
                cluster: gone.clone(),
            });
        }
        for (cluster, servers) in &summary.servers {
            self.servers
                .get_or_create(&ClusterLabels {
                    cluster: cluster.as_str().to_owned(),
                })
                .set(to_i64(*servers));
        }
        labelled.clusters = clusters;
    }
}

/// A poisoned lock only means another thread panicked mid-update; the value is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The metrics of bucket event notifications (`S3_EVENT_QUEUE_URL`), registered only when a
/// queue is configured; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct EventMetrics {
    received: Counter,
    records: Family<OutcomeLabels, Counter>,
    invalid: Counter,
    errors: Family<OperationLabels, Counter>,
    queue_up: Gauge,
    last_received: Gauge<f64, AtomicU64>,
    /// When the last message arrived, for the readiness detail.
    last_received_at: std::sync::Arc<Mutex<Option<std::time::Instant>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

impl EventMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = EventMetrics::default();
        let r = registry.sub_registry_with_prefix("ksd_syncer");
        r.register(
            "event_messages_received",
            "Messages received from the bucket event queue",
            metrics.received.clone(),
        );
        r.register(
            "event_records",
            "Object events read from the queue, by outcome (handled: fetched or listed; unchanged: the version or a later event was already handled; ignored: test events, other keys, other event types)",
            metrics.records.clone(),
        );
        r.register(
            "event_invalid_messages",
            "Queue messages that could not be read (logged and deleted)",
            metrics.invalid.clone(),
        );
        r.register(
            "event_queue_errors",
            "Failed calls to the event queue, by operation (receive, delete)",
            metrics.errors.clone(),
        );
        r.register(
            "event_queue_up",
            "1 when the last receive from the event queue succeeded, 0 when it failed",
            metrics.queue_up.clone(),
        );
        r.register(
            "event_last_received_timestamp_seconds",
            "Unix time of the last message received from the event queue (0: none yet)",
            metrics.last_received.clone(),
        );
        metrics
    }

    pub fn messages_received(&self, count: usize, at: SystemTime) {
        self.received
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_received.set(secs);
        *self
            .last_received_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    pub fn records(&self, outcome: &'static str, count: usize) {
        if count > 0 {
            self.records
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }

    pub fn invalid_message(&self) {
        self.invalid.inc();
    }

    pub fn queue_error(&self, operation: &'static str) {
        self.errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    pub fn queue_up(&self, up: bool) {
        self.queue_up.set(i64::from(up));
    }

    pub fn is_queue_up(&self) -> bool {
        self.queue_up.get() == 1
    }

    /// Whether any receive failed since the start.
    pub fn has_failed(&self) -> bool {
        self.errors
            .get_or_create(&OperationLabels {
                operation: "receive",
            })
            .get()
            > 0
    }

    /// Time since the last message arrived, if one did.
    pub fn last_received_age(&self) -> Option<std::time::Duration> {
        self.last_received_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|at| at.elapsed())
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use ksd_shared::names::ClusterName;
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn names_and_vanishing_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.poll("ok");
        metrics.get("not_modified");
        metrics.rejected("routers");
        let a = ClusterName::parse("a").unwrap();
        let b = ClusterName::parse("b").unwrap();
        metrics.summary(&Summary {
            seen: 2,
            published: 2,
            rejected: BTreeMap::from([("routers", 1)]),
            servers: BTreeMap::from([(a.clone(), 3), (b, 1)]),
            ..Summary::default()
        });
        let first = text(&registry);
        assert!(
            first.contains("ksd_syncer_polls_total{outcome=\"ok\"} 1"),
            "{first}"
        );
        assert!(first.contains("ksd_syncer_gets_total{outcome=\"not_modified\"} 1"));
        assert!(first.contains("ksd_syncer_rejections_total{reason=\"routers\"} 1"));
        assert!(first.contains("ksd_syncer_clusters_rejected{reason=\"routers\"} 1"));
        assert!(first.contains("ksd_syncer_servers{cluster=\"b\"} 1"));

        metrics.summary(&Summary {
            seen: 1,
            published: 1,
            servers: BTreeMap::from([(a, 3)]),
            ..Summary::default()
        });
        let second = text(&registry);
        assert!(second.contains("ksd_syncer_clusters_rejected{reason=\"routers\"} 0"));
        assert!(!second.contains("cluster=\"b\""), "{second}");
        assert!(second.contains("ksd_syncer_servers{cluster=\"a\"} 3"));
    }

    #[test]
    fn latency_and_document_ages() {
        use ksd_runtime::storage::ObjectInfo;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        drop(metrics.cycle_timer());
        metrics.change_written(); // nothing waiting: nothing observed
        metrics.change_seen();
        metrics.change_seen();
        metrics.change_written();
        metrics.change_seen();
        assert!(!text(&registry).contains("ksd_syncer_pending_change_timestamp_seconds 0.0"));
        metrics.change_settled();
        metrics.change_written();
        assert!(text(&registry).contains("ksd_syncer_pending_change_timestamp_seconds 0.0"));
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let object = |key: &str, age: u64| ObjectInfo {
            key: key.to_owned(),
            etag: "\"e\"".to_owned(),
            size: 1,
            last_modified: Some(now - std::time::Duration::from_secs(age)),
        };
        metrics.document_ages(
            &[
                object("a.traefik.yaml", 30),
                object("b.traefik.yaml", 5),
                object("junk", 1),
            ],
            now,
        );
        let first = text(&registry);
        assert!(
            first.contains("ksd_syncer_cycle_duration_seconds_count 1"),
            "{first}"
        );
        assert!(
            first.contains("ksd_syncer_change_to_write_seconds_count 1"),
            "{first}"
        );
        assert!(
            first
                .contains("ksd_syncer_document_age_seconds{cluster=\"a\",format=\"traefik\"} 30.0"),
            "{first}"
        );
        metrics.document_ages(&[object("b.traefik.yaml", 6)], now);
        let second = text(&registry);
        assert!(!second.contains("cluster=\"a\""), "{second}");
        assert!(
            second
                .contains("ksd_syncer_document_age_seconds{cluster=\"b\",format=\"traefik\"} 6.0")
        );
    }
}
