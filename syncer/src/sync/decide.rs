//! Deciding the file: the state's answer composed into bytes, and what changed logged once.

use std::sync::Arc;

use ksd_runtime::error_chain;
use ksd_shared::names::ClusterName;
use ksd_shared::traefik::{Document, DocumentError};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{FULL_CHECK_INTERVAL, Syncer};
use crate::compose::{Composed, Composer};
use crate::guard::Exclusion;
use crate::state::{Decision, Event, Hold};
use crate::{Error, Result};

impl Syncer {
    pub(super) fn report(&self, events: Vec<Event>) {
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
    pub(super) fn decide(&mut self) -> Result<()> {
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
    pub(super) fn compose(
        &mut self,
        documents: &[(ClusterName, Arc<Document>)],
    ) -> std::result::Result<Composed, DocumentError> {
        let composed = self.composer.update(documents, &self.guard)?;
        // The first composition is one from scratch: the clock starts there.
        let Some(checked_at) = self.full_check_at else {
            self.full_check_at = Some(Instant::now());
            return Ok(composed);
        };
        if checked_at.elapsed() < FULL_CHECK_INTERVAL {
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
    pub(super) fn hold(&mut self, hold: Hold) {
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
    pub(super) fn note_exclusions(&mut self, excluded: &[Exclusion]) {
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
}
