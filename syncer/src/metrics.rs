//! The syncer's Prometheus metrics, all named `ksd_syncer_*`.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// Handles to every metric; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    polls: Family<OutcomeLabels, Counter>,
    gets: Family<OutcomeLabels, Counter>,
    writes: Family<OutcomeLabels, Counter>,
    restores: Counter,
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
    /// Label values set in the last summary, so vanished ones are removed or zeroed.
    labelled: std::sync::Arc<Mutex<Labelled>>,
}

#[derive(Debug, Default)]
struct Labelled {
    reasons: BTreeSet<&'static str>,
    clusters: BTreeSet<String>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("ksd_syncer");
        r.register(
            "polls",
            "Listings of the storage prefix, by outcome (ok, error, timeout)",
            metrics.polls.clone(),
        );
        r.register(
            "gets",
            "Fetches of cluster objects, by outcome (ok, not_modified, missing, too_large, error, timeout)",
            metrics.gets.clone(),
        );
        r.register(
            "writes",
            "Writes of the output file, by outcome (ok, error, timeout, invalid)",
            metrics.writes.clone(),
        );
        r.register(
            "restores",
            "Times the output file was found deleted or changed by someone else and restored",
            metrics.restores.clone(),
        );
        r.register(
            "last_write_timestamp_seconds",
            "Unix time of the last successful write of the output file",
            metrics.last_write.clone(),
        );
        r.register(
            "clusters_seen",
            "Clusters with an object in the last listing",
            metrics.clusters_seen.clone(),
        );
        r.register(
            "clusters_accepted",
            "Clusters whose document is in the output file",
            metrics.clusters_accepted.clone(),
        );
        r.register(
            "clusters_rejected",
            "Clusters whose latest document is rejected, by reason (a last good version may still be published)",
            metrics.clusters_rejected.clone(),
        );
        r.register(
            "clusters_stale",
            "Clusters left out because their object is older than STALE_AFTER",
            metrics.clusters_stale.clone(),
        );
        r.register(
            "clusters_missing",
            "Known clusters absent from the listing, not yet confirmed gone",
            metrics.clusters_missing.clone(),
        );
        r.register(
            "rejections",
            "Cluster document versions rejected, by reason (once per ETag)",
            metrics.rejections.clone(),
        );
        r.register(
            "servers",
            "Servers in each published cluster's document",
            metrics.servers.clone(),
        );
        r.register(
            "conflicts",
            "Services whose options differ between clusters in the last merge",
            metrics.conflicts.clone(),
        );
        r.register(
            "invalid_keys",
            "Keys under the prefix that are not <cluster>.traefik.yaml or <cluster>.backends.yaml",
            metrics.invalid_keys.clone(),
        );
        r.register(
            "output_bytes",
            "Size of the last decided output file",
            metrics.output_bytes.clone(),
        );
        metrics
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
}
