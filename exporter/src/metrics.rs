//! The exporter's Prometheus metrics, all under the `ksd_exporter_` prefix.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UploadOutcome {
    /// Stored.
    Written,
    /// The object's ETag was not the one last written: another writer replaced it.
    Conflict,
    /// The store failed or could not be reached.
    Error,
}

impl UploadOutcome {
    fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Written => "written",
            UploadOutcome::Conflict => "conflict",
            UploadOutcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// Seconds from a change seen in the watches to the upload that carries it: `DEBOUNCE` (1 s
/// by default) plus a render of up to ~200 ms at 10k Services (docs/BENCHMARKS.md), up to
/// `MAX_DELAY` (10 s) and retries beyond.
const PROPAGATION_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Seconds one upload takes: milliseconds for a small document to a nearby store, about a
/// second for the 4.7 MiB document of 10k Services over a slow link.
const UPLOAD_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Handles to every metric; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    uploads: Family<OutcomeLabels, Counter>,
    skipped_unchanged: Counter,
    foreign_writer_conflicts: Counter,
    last_publish: Gauge<f64, AtomicU64>,
    backends: Gauge,
    servers: Gauge,
    watch_restarts: Family<ResourceLabels, Counter>,
    watch_errors: Family<ResourceLabels, Counter>,
    object_warnings: Counter,
    name_collisions: Gauge,
    render_errors: Counter,
    refused_targets: Gauge,
    change_to_upload: Histogram,
    upload_duration: Histogram,
    leader: Gauge,
    leader_transitions: Counter,
    lease_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            uploads: Family::default(),
            skipped_unchanged: Counter::default(),
            foreign_writer_conflicts: Counter::default(),
            last_publish: Gauge::default(),
            backends: Gauge::default(),
            servers: Gauge::default(),
            watch_restarts: Family::default(),
            watch_errors: Family::default(),
            object_warnings: Counter::default(),
            name_collisions: Gauge::default(),
            render_errors: Counter::default(),
            refused_targets: Gauge::default(),
            change_to_upload: Histogram::new(PROPAGATION_BUCKETS),
            upload_duration: Histogram::new(UPLOAD_BUCKETS),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            lease_errors: Counter::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under `ksd_exporter_`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("ksd_exporter");
        metrics.register_publishing(r);
        metrics.register_watching(r);
        metrics.register_latency(r);
        metrics.register_leadership(r);
        metrics
    }

    /// Uploads and what they carry.
    fn register_publishing(&self, r: &mut Registry) {
        r.register(
            "uploads",
            "Uploads of cluster documents, by outcome (written, conflict, error)",
            self.uploads.clone(),
        );
        r.register(
            "skipped_unchanged",
            "Publishes skipped because the stored object already had identical content",
            self.skipped_unchanged.clone(),
        );
        r.register(
            "foreign_writer_conflicts",
            "Uploads refused because another writer replaced the object (is CLUSTER_NAME unique?)",
            self.foreign_writer_conflicts.clone(),
        );
        r.register(
            "last_publish_timestamp_seconds",
            "Unix time of the last publish that left the bucket up to date",
            self.last_publish.clone(),
        );
        r.register(
            "backends",
            "Backends (Service ports) in the last computed document",
            self.backends.clone(),
        );
        r.register(
            "servers",
            "Servers (ready endpoints, summed over backends) in the last computed document",
            self.servers.clone(),
        );
    }

    /// The watches and what was refused from them.
    fn register_watching(&self, r: &mut Registry) {
        r.register(
            "watch_restarts",
            "Re-lists of a watched resource after the first list (410 Gone, lost watch, API restart)",
            self.watch_restarts.clone(),
        );
        r.register(
            "watch_errors",
            "Errors from the Kubernetes API while watching, retried with backoff",
            self.watch_errors.clone(),
        );
        r.register(
            "object_warnings",
            "Warnings about Services and EndpointSlices (malformed annotations, unsupported ports)",
            self.object_warnings.clone(),
        );
        r.register(
            "name_collisions",
            "Service ports whose template name collided and that were published under a suffixed name",
            self.name_collisions.clone(),
        );
        r.register(
            "render_errors",
            "Documents that failed validation and were not published",
            self.render_errors.clone(),
        );
        r.register(
            "refused_endpoints",
            "Endpoints left out of the document because their address is special-purpose (loopback, link-local, unspecified, multicast, broadcast)",
            self.refused_targets.clone(),
        );
    }

    /// How long changes take to reach the bucket.
    fn register_latency(&self, r: &mut Registry) {
        r.register_with_unit(
            "change_to_upload",
            "Time from the first change seen in the watches to the end of the upload that carries it",
            prometheus_client::registry::Unit::Seconds,
            self.change_to_upload.clone(),
        );
        r.register_with_unit(
            "upload_duration",
            "Time one upload of a cluster document takes, whatever its outcome",
            prometheus_client::registry::Unit::Seconds,
            self.upload_duration.clone(),
        );
    }

    /// Leader election.
    fn register_leadership(&self, r: &mut Registry) {
        r.register(
            "leader",
            "1 while this replica publishes (it holds the Lease, or leader election is off), 0 while it stands by",
            self.leader.clone(),
        );
        r.register(
            "leader_transitions",
            "Times this replica became the leader",
            self.leader_transitions.clone(),
        );
        r.register(
            "lease_errors",
            "Failed requests of leader election to the Kubernetes API (retried)",
            self.lease_errors.clone(),
        );
    }

    /// A timer for one upload, observed when dropped.
    pub fn upload_timer(&self) -> ksd_runtime::timing::DropTimer {
        ksd_runtime::timing::DropTimer::new(&self.upload_duration)
    }

    pub fn change_uploaded(&self, seconds: f64) {
        self.change_to_upload.observe(seconds);
    }

    pub fn leader(&self, leading: bool) {
        let was = self.leader.set(i64::from(leading));
        if leading && was == 0 {
            self.leader_transitions.inc();
        }
    }

    pub fn lease_error(&self) {
        self.lease_errors.inc();
    }

    pub fn upload(&self, outcome: UploadOutcome) {
        self.uploads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
        if outcome == UploadOutcome::Conflict {
            self.foreign_writer_conflicts.inc();
        }
    }

    pub fn skipped_unchanged(&self) {
        self.skipped_unchanged.inc();
    }

    pub fn published(&self, at: SystemTime) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_publish.set(seconds);
    }

    pub fn computed(&self, backends: usize, servers: usize, collisions: usize) {
        self.backends.set(saturating_i64(backends));
        self.servers.set(saturating_i64(servers));
        self.name_collisions.set(saturating_i64(collisions));
    }

    pub fn watch_restart(&self, resource: &'static str) {
        self.watch_restarts
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub fn watch_error(&self, resource: &'static str) {
        self.watch_errors
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub fn object_warnings(&self, count: usize) {
        self.object_warnings
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub fn render_error(&self) {
        self.render_errors.inc();
    }

    /// Endpoints left out of the document by the default address policy.
    pub fn refused_targets(&self, count: usize) {
        self.refused_targets.set(saturating_i64(count));
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn names_and_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.upload(UploadOutcome::Written);
        metrics.upload(UploadOutcome::Conflict);
        metrics.skipped_unchanged();
        metrics.watch_restart("services");
        metrics.computed(3, 7, 1);
        metrics.published(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        metrics.leader(true);
        metrics.leader(true);
        metrics.change_uploaded(1.2);
        drop(metrics.upload_timer());
        let text = encode(&registry);
        for expected in [
            "ksd_exporter_uploads_total{outcome=\"written\"} 1",
            "ksd_exporter_uploads_total{outcome=\"conflict\"} 1",
            "ksd_exporter_foreign_writer_conflicts_total 1",
            "ksd_exporter_skipped_unchanged_total 1",
            "ksd_exporter_watch_restarts_total{resource=\"services\"} 1",
            "ksd_exporter_backends 3",
            "ksd_exporter_servers 7",
            "ksd_exporter_name_collisions 1",
            "ksd_exporter_last_publish_timestamp_seconds 1700000000",
            "ksd_exporter_leader 1",
            "ksd_exporter_leader_transitions_total 1",
            "ksd_exporter_change_to_upload_seconds_count 1",
            "ksd_exporter_upload_duration_seconds_count 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
