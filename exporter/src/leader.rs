//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas can run and
//! only one of them writes the cluster's object.
//!
//! The semantics are client-go's `leaderelection` package:
//! - a replica acquires the Lease when it is free (no holder: released) or when its holder has
//!   not renewed it for `leaseDurationSeconds`, and then renews it every `LEASE_RETRY_PERIOD`;
//! - a leader that cannot renew for `LEASE_RENEW_DEADLINE` stops leading (and stops writing)
//!   before anybody else may take over (`LEASE_DURATION` is longer);
//! - every write is conditional on the Lease's `resourceVersion`: of two replicas racing, one
//!   gets `409 Conflict` and stays a follower;
//! - on shutdown the leader clears the holder, so that a standby takes over at its next retry
//!   instead of waiting for the lease to expire.
//!
//! Clock skew between nodes does not matter: a replica never compares the Lease's
//! `renewTime` with its own wall clock. It measures expiry as the time since *it* last saw the
//! Lease change (holder, `renewTime` or `resourceVersion`), on its own monotonic clock.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use ksd_runtime::error_chain;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;

/// The Lease and the timings of the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    /// `None`: the client's default namespace (the pod's own, in a cluster).
    pub namespace: Option<String>,
    /// This replica's `holderIdentity`; unique among the replicas.
    pub identity: String,
    /// How long a Lease that nobody renews keeps its holder (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How long the leader keeps leading while its renewals fail.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or its acquisition retried.
    pub retry_period: Duration,
}

/// What one replica last saw of the Lease, and when (on its own clock).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
    duration: Duration,
    at: Instant,
}

impl Observed {
    fn of(lease: &Lease, default_duration: Duration, now: Instant) -> Observed {
        let spec = lease.spec.clone().unwrap_or_default();
        Observed {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time,
            resource_version: lease.metadata.resource_version.clone(),
            duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|&s| s > 0)
                .map_or(default_duration, Duration::from_secs),
            at: now,
        }
    }

    fn same_record(&self, other: &Observed) -> bool {
        self.holder == other.holder
            && self.renew_time == other.renew_time
            && self.resource_version == other.resource_version
    }
}

/// Whether `identity` may write itself into the Lease it observed: the Lease is free, already
/// its own, or its holder has not renewed it for its duration as measured here.
fn may_acquire(observed: &Observed, identity: &str, now: Instant) -> bool {
    match observed.holder.as_deref() {
        None => true,
        Some(holder) if holder == identity => true,
        Some(_) => now >= observed.at + observed.duration,
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
}

/// A request to the API server failed (retried at the next period).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {name}: {action} failed")]
    Api {
        name: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {name}: {action} timed out")]
    Timeout { name: String, action: &'static str },
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Elector {
        let api = match &settings.namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::default_namespaced(client),
        };
        Elector {
            api,
            settings,
            observed: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn timeout(&self) -> Duration {
        self.settings.renew_deadline.max(Duration::from_secs(1))
    }

    fn err(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaseError + use<> {
        let name = self.settings.name.clone();
        move |source| LeaseError::Api {
            name,
            action,
            source,
        }
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, LeaseError> {
        tokio::time::timeout(self.timeout(), call)
            .await
            .map_err(|_| LeaseError::Timeout {
                name: self.settings.name.clone(),
                action,
            })
    }

    /// One round: creates, takes over or renews the Lease if this replica may. Returns whether
    /// this replica holds it now, and the holder it saw otherwise.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaseError> {
        let current = self
            .bounded("get", self.api.get_opt(&self.settings.name))
            .await?
            .map_err(self.err("get"))?;
        let now = Instant::now();
        let Some(lease) = current else {
            let lease = self.record(None);
            return match self
                .bounded("create", self.api.create(&PostParams::default(), &lease))
                .await?
            {
                Ok(created) => {
                    self.observed = Some(Observed::of(&created, self.settings.duration, now));
                    Ok(Attempt::Leading)
                }
                // Another replica created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Attempt::Following { holder: None })
                }
                Err(source) => Err(self.err("create")(source)),
            };
        };

        let seen = Observed::of(&lease, self.settings.duration, now);
        let observed = match self.observed.take() {
            Some(previous) if previous.same_record(&seen) => Observed {
                duration: seen.duration,
                ..previous
            },
            _ => seen,
        };
        let allowed = may_acquire(&observed, &self.settings.identity, now);
        let holder = observed.holder.clone();
        self.observed = Some(observed);
        if !allowed {
            return Ok(Attempt::Following { holder });
        }

        let updated = self.record(Some(&lease));
        match self
            .bounded(
                "update",
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &updated),
            )
            .await?
        {
            Ok(stored) => {
                self.observed = Some(Observed::of(&stored, self.settings.duration, now));
                Ok(Attempt::Leading)
            }
            // Someone else wrote it since the read: they win this round.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Attempt::Following { holder })
            }
            Err(source) => Err(self.err("update")(source)),
        }
    }

    /// The Lease with this replica as its holder, renewed now. `current` keeps its
    /// `resourceVersion` (the update is conditional on it) and its acquisition record when
    /// this replica already held it.
    fn record(&self, current: Option<&Lease>) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = current.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.settings.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let spec = LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours || current.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        };
        Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
                ..current.map(|l| l.metadata.clone()).unwrap_or_default()
            },
            spec: Some(spec),
        }
    }

    /// Clears the holder if this replica holds the Lease, so that a standby acquires it at its
    /// next retry. Conditional on the `resourceVersion`: a Lease taken over meanwhile is left.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        let Some(lease) = self
            .bounded("get", self.api.get_opt(&self.settings.name))
            .await?
            .map_err(self.err("get"))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..spec
            }),
        };
        match self
            .bounded(
                "release",
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &released),
            )
            .await?
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(self.err("release")(source)),
        }
    }
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    /// Someone else holds the Lease (`None`: it could not be told).
    Following {
        holder: Option<String>,
    },
}

/// Runs the election until `shutdown`, publishing whether this replica leads on `leading`.
/// Leadership ends when `shutdown` fires (the caller releases the Lease once its last write is
/// done) or when renewals fail for `LEASE_RENEW_DEADLINE`. Returns the elector for the release.
pub async fn run(
    mut elector: Elector,
    leading: watch::Sender<bool>,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) -> Elector {
    let settings = elector.settings().clone();
    let mut last_renewal: Option<Instant> = None;
    let mut last_holder: Option<Option<String>> = None;
    info!(
        lease = %settings.name,
        identity = %settings.identity,
        "leader election: waiting for the Lease"
    );
    loop {
        let is_leading = *leading.borrow();
        match elector.try_acquire_or_renew().await {
            Ok(Attempt::Leading) => {
                last_renewal = Some(Instant::now());
                if !is_leading {
                    info!(lease = %settings.name, identity = %settings.identity, "leading: this replica publishes");
                    metrics.leader(true);
                    leading.send_replace(true);
                }
                last_holder = None;
            }
            Ok(Attempt::Following { holder }) => {
                if is_leading {
                    warn!(lease = %settings.name, holder = holder.as_deref().unwrap_or(""), "lost the Lease; standing by");
                    metrics.leader(false);
                    leading.send_replace(false);
                }
                last_renewal = None;
                if last_holder.as_ref() != Some(&holder) {
                    info!(
                        lease = %settings.name,
                        holder = holder.as_deref().unwrap_or(""),
                        "standing by: another replica publishes"
                    );
                    last_holder = Some(holder);
                }
            }
            Err(err) => {
                metrics.lease_error();
                let expired =
                    last_renewal.is_some_and(|at| at.elapsed() >= settings.renew_deadline);
                if is_leading && expired {
                    error!(
                        lease = %settings.name,
                        error = %error_chain(&err),
                        "could not renew the Lease within LEASE_RENEW_DEADLINE; standing by"
                    );
                    metrics.leader(false);
                    leading.send_replace(false);
                    last_renewal = None;
                } else {
                    warn!(lease = %settings.name, error = %error_chain(&err), "leader election request failed; retrying");
                }
            }
        }
        debug!(lease = %settings.name, leading = *leading.borrow(), "leader election round");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(settings.retry_period) => {}
        }
    }
    if *leading.borrow() {
        metrics.leader(false);
        leading.send_replace(false);
    }
    elector
}

/// Releases the Lease at shutdown, logging the outcome (a failure only delays the hand-over
/// until the Lease expires).
pub async fn release(elector: &mut Elector) {
    let lease = elector.settings().name.clone();
    match elector.release().await {
        Ok(true) => info!(%lease, "released the Lease"),
        Ok(false) => debug!(%lease, "not holding the Lease; nothing to release"),
        Err(err) => {
            warn!(%lease, error = %error_chain(&err), "could not release the Lease; a standby takes over when it expires")
        }
    }
}

/// A holder identity for this replica: the host name (the pod's name in Kubernetes) and a
/// random suffix, as client-go's examples use, so that a restarted pod of the same name is a
/// new holder.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "ksd-exporter".to_owned());
    format!("{host}_{:016x}", rand_suffix())
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(holder: Option<&str>, at: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_owned),
            renew_time: None,
            resource_version: Some("1".to_owned()),
            duration: Duration::from_secs(15),
            at,
        }
    }

    #[test]
    fn a_free_or_own_lease_may_be_taken_at_once() {
        let now = Instant::now();
        assert!(may_acquire(&observed(None, now), "me", now));
        assert!(may_acquire(&observed(Some("me"), now), "me", now));
    }

    #[test]
    fn a_held_lease_expires_by_this_replicas_clock() {
        let at = Instant::now();
        let seen = observed(Some("other"), at);
        assert!(!may_acquire(&seen, "me", at));
        assert!(!may_acquire(&seen, "me", at + Duration::from_secs(14)));
        assert!(may_acquire(&seen, "me", at + Duration::from_secs(15)));
    }

    #[test]
    fn a_renewal_is_a_changed_record_whatever_its_timestamp() {
        let at = Instant::now();
        let first = observed(Some("other"), at);
        let mut renewed = first.clone();
        renewed.resource_version = Some("2".to_owned());
        assert!(!first.same_record(&renewed));
        let mut again = first.clone();
        again.at = at + Duration::from_secs(3);
        assert!(first.same_record(&again));
    }

    #[test]
    fn lease_duration_comes_from_the_lease() {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                ..LeaseSpec::default()
            }),
        };
        let seen = Observed::of(&lease, Duration::from_secs(15), Instant::now());
        assert_eq!(seen.holder, None, "an empty holder is a released Lease");
        assert_eq!(seen.duration, Duration::from_secs(1));
    }

    #[test]
    fn identities_differ() {
        assert_ne!(default_identity(), default_identity());
    }
}
