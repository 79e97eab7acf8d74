//! Kubernetes Events on the exported Services (`EVENTS=true`): what each syncer's
//! acknowledgement says about them, where `kubectl describe service` shows it.
//!
//! - [`Tracker`] runs inside the acknowledgement reader: for every reading about the document
//!   this process published (the listing's ETag is the one the publisher reported), it turns
//!   each syncer's answer into a [`State`] per Service ([`state_of`]): `Served` (Normal, with
//!   the Traefik names the exporter published), `Rejected` (Warning, on every Service of the
//!   document) or `LeftOut` (Warning). It keeps the last state handed over per (Service,
//!   syncer) and hands over only changes, with `try_send` on a bounded queue: a full queue
//!   drops the event (`ksd_exporter_events_dropped_total`) and the state is not remembered, so
//!   the next reading tries again. Reading acknowledgements never waits for events.
//! - [`recorder::Recorder`] takes them off the queue at most [`EVENTS_PER_SECOND`] (bursts
//!   of [`EVENTS_BURST`]) and writes `events.k8s.io/v1` Events; a state that comes back after
//!   an event was recorded for it patches that event's `series` instead of creating another.
//!   API errors are logged and counted (`ksd_exporter_event_errors_total{operation}`), never
//!   retried.
//!
//! kube's `kube::runtime::events::Recorder` is not used: it keys its series on the reason and
//! the object only, not on the note, so "served by edge-1" and "served by edge-2" would be one
//! series showing the first note; and it has no rate limit or bound on what it caches.
//!
//! Only the replica that publishes records events (a standby never has a published ETag),
//! and a restarted exporter records each Service's current state once again.

pub mod recorder;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;

use ksd_shared::names::ClusterName;
use ksd_shared::status::{self, SyncerName};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use self::state::{Intent, State, state_of};
use crate::acks::Reading;
use crate::index::ServiceKey;
use crate::publication::Publication;

/// Sustained rate of event writes (create or patch) to the API server.
pub const EVENTS_PER_SECOND: f64 = 5.0;
/// Writes allowed at once before the rate applies.
pub const EVENTS_BURST: u32 = 50;
/// Events waiting for the recorder; more are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1000;
/// The `reportingController` of every event.
pub const CONTROLLER: &str = "ksd-exporter";

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// The event metrics, under `ksd_exporter_`.
#[derive(Debug, Default)]
pub struct EventMetrics {
    recorded: Family<ReasonLabels, Counter>,
    dropped: Counter,
    errors: Family<OperationLabels, Counter>,
}

impl EventMetrics {
    pub fn register(registry: &mut Registry) -> EventMetrics {
        let metrics = EventMetrics::default();
        let r = registry.sub_registry_with_prefix("ksd_exporter");
        r.register(
            "events_recorded",
            "Kubernetes Events recorded on Services, new or as a series (reason: Served, \
             Rejected, LeftOut)",
            metrics.recorded.clone(),
        );
        r.register(
            "events_dropped",
            "Events dropped because the recorder's queue was full (tried again with the next \
             acknowledgement reading)",
            metrics.dropped.clone(),
        );
        r.register(
            "event_errors",
            "Event writes the API server refused or that failed (operation: get_service, \
             create, patch); not retried",
            metrics.errors.clone(),
        );
        metrics
    }

    fn recorded(&self, reason: &'static str) {
        self.recorded.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn error(&self, operation: &'static str) {
        self.errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }
}

/// Turns acknowledgement readings into events for the recorder (see the module docs).
pub struct Tracker {
    published: watch::Receiver<Option<Publication>>,
    queue: mpsc::Sender<Intent>,
    last: HashMap<(ServiceKey, SyncerName), State>,
    metrics: Arc<EventMetrics>,
}

impl Tracker {
    pub fn new(
        published: watch::Receiver<Option<Publication>>,
        queue: mpsc::Sender<Intent>,
        metrics: Arc<EventMetrics>,
    ) -> Tracker {
        Tracker {
            published,
            queue,
            last: HashMap::new(),
            metrics,
        }
    }

    /// Hands the changed states of `reading` to the recorder. A reading about another version
    /// than the one published (or before any publish) is ignored.
    pub fn observe(&mut self, reading: &Reading) {
        let Some(published) = self.published.borrow().clone() else {
            return;
        };
        if !reading
            .etag
            .as_deref()
            .is_some_and(|etag| status::same_etag(etag, &published.etag))
        {
            return;
        }
        let services = &published.services;
        self.last.retain(|(service, syncer), _| {
            services.contains(service) && reading.syncers.contains_key(syncer)
        });
        for (syncer, view) in &reading.syncers {
            for (service, names) in services.iter() {
                let Some(state) = state_of(&view.answer, names) else {
                    continue;
                };
                let key = (service.clone(), syncer.clone());
                if self.last.get(&key) == Some(&state) {
                    continue;
                }
                let intent = Intent {
                    service: service.clone(),
                    syncer: syncer.clone(),
                    state: state.clone(),
                };
                match self.queue.try_send(intent) {
                    Ok(()) => {
                        self.last.insert(key, state);
                    }
                    Err(_) => {
                        self.metrics.dropped.inc();
                    }
                }
            }
        }
    }
}

/// The `reportingInstance`: `POD_NAME`, else `HOSTNAME` (a pod's name in Kubernetes), else
/// the kernel's host name, else [`CONTROLLER`].
pub fn reporting_instance() -> String {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    from_env("POD_NAME")
        .or_else(|| from_env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| CONTROLLER.to_owned())
}

/// The tracker for the acknowledgement reader and the recorder task's receiving end.
pub fn channel(
    published: watch::Receiver<Option<Publication>>,
    metrics: Arc<EventMetrics>,
) -> (Tracker, mpsc::Receiver<Intent>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    (Tracker::new(published, tx, metrics), rx)
}

/// Cluster name and reporter, for the recorder.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub cluster: ClusterName,
    pub instance: String,
}

#[cfg(test)]
mod tests;
