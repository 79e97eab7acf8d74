//! Writes the events: `events.k8s.io/v1` objects on the Services, a `series` patch when a
//! state comes back, a token bucket in front of the API server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use ksd_runtime::error_chain;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{CONTROLLER, EVENTS_BURST, EVENTS_PER_SECOND, EventMetrics, Intent, Reporter};

/// How long a recorded event is patched rather than recorded anew: the API server's default
/// event TTL, after which the object is likely gone.
const SERIES_TTL: Duration = Duration::from_secs(3600);
/// Recorded events remembered for their series; the oldest are forgotten beyond this.
const MAX_SERIES: usize = 10_000;
/// The event's `action`: what the exporter did that the syncer's answer is about.
const ACTION: &str = "Publish";

/// A token bucket: `rate` per second, at most `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; returns how long to wait before using it.
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// An event recorded for an intent, kept to patch its series.
#[derive(Debug)]
struct Series {
    name: String,
    count: i32,
    at: Instant,
}

/// Records the intents it receives.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    bucket: TokenBucket,
    series: HashMap<Intent, Series>,
    metrics: Arc<EventMetrics>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter, metrics: Arc<EventMetrics>) -> Recorder {
        Recorder {
            client,
            reporter,
            bucket: TokenBucket::new(EVENTS_PER_SECOND, EVENTS_BURST),
            series: HashMap::new(),
            metrics,
        }
    }

    /// Records one intent: patches the series of the event recorded for the same state
    /// before, or creates an event. Failures are logged and counted.
    async fn record(&mut self, intent: Intent) {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &intent.service.namespace);
        self.forget_old();
        if let Some(series) = self.series.get_mut(&intent) {
            let count = series.count + 1;
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(Timestamp::now())}
            });
            match events
                .patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    series.count = count;
                    series.at = Instant::now();
                    self.metrics.recorded(intent.state.reason());
                    debug!(service = %intent.service, syncer = %intent.syncer, count, "event series updated");
                    return;
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.series.remove(&intent);
                }
                Err(err) => {
                    self.metrics.error("patch");
                    warn!(service = %intent.service, syncer = %intent.syncer, error = %error_chain(&err), "cannot update the event's series");
                    return;
                }
            }
        }
        self.create(&events, intent).await;
    }

    async fn create(&mut self, events: &Api<Event>, intent: Intent) {
        let services: Api<Service> =
            Api::namespaced(self.client.clone(), &intent.service.namespace);
        // The uid makes `kubectl describe` show the event on this Service only, not on a later
        // one of the same name.
        let uid = match services.get_opt(&intent.service.name).await {
            Ok(Some(service)) => service.metadata.uid,
            Ok(None) => {
                debug!(service = %intent.service, "the Service is gone; no event");
                return;
            }
            Err(err) => {
                self.metrics.error("get_service");
                warn!(service = %intent.service, error = %error_chain(&err), "cannot read the Service for its event");
                return;
            }
        };
        let event = self.event(&intent, uid);
        let name = event.metadata.name.clone().unwrap_or_default();
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.metrics.recorded(intent.state.reason());
                info!(service = %intent.service, syncer = %intent.syncer, reason = intent.state.reason(), "event recorded");
                let series = Series {
                    name,
                    count: 1,
                    at: Instant::now(),
                };
                self.series.insert(intent, series);
            }
            Err(err) => {
                self.metrics.error("create");
                warn!(service = %intent.service, syncer = %intent.syncer, error = %error_chain(&err), "cannot record the event");
            }
        }
    }

    fn event(&self, intent: &Intent, uid: Option<String>) -> Event {
        let now = Timestamp::now();
        let service = &intent.service;
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", service.name, now.as_nanosecond())),
                namespace: Some(service.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            regarding: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Service".to_owned()),
                name: Some(service.name.clone()),
                namespace: Some(service.namespace.clone()),
                uid,
                ..ObjectReference::default()
            }),
            action: Some(ACTION.to_owned()),
            reason: Some(intent.state.reason().to_owned()),
            note: Some(intent.state.note(&intent.syncer, &self.reporter.cluster)),
            type_: Some(
                if intent.state.is_warning() {
                    "Warning"
                } else {
                    "Normal"
                }
                .to_owned(),
            ),
            reporting_controller: Some(CONTROLLER.to_owned()),
            reporting_instance: Some(self.reporter.instance.clone()),
            ..Event::default()
        }
    }

    /// Forgets series past [`SERIES_TTL`], then the oldest beyond [`MAX_SERIES`].
    fn forget_old(&mut self) {
        let now = Instant::now();
        self.series
            .retain(|_, s| now.saturating_duration_since(s.at) < SERIES_TTL);
        while self.series.len() >= MAX_SERIES {
            let Some(oldest) = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.series.remove(&oldest);
        }
    }
}

/// Records every intent received, within the rate limit, until `shutdown`; what is still
/// queued then is dropped.
pub async fn run(
    mut recorder: Recorder,
    mut intents: mpsc::Receiver<Intent>,
    shutdown: CancellationToken,
) {
    loop {
        let intent = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            intent = intents.recv() => match intent {
                Some(intent) => intent,
                // Every sender is gone (the acknowledgement reader stopped): wait for shutdown.
                None => return shutdown.cancelled().await,
            },
        };
        let wait = recorder.bucket.take(Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        recorder.record(intent).await;
    }
}
