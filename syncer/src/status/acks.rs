//! The acknowledgement: [`Snapshot::acknowledgement`], and the task that writes it at
//! `<prefix>_status/<SYNCER_NAME>.json` ([`run_acks`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, PutCondition, PutOutcome, Storage};
use ksd_shared::names::ClusterName;
use ksd_shared::status::{self, Acknowledgement, ClusterAck, MAX_LEFT_OUT, SyncerName};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Snapshot, unix};

impl Snapshot {
    /// The acknowledgement of `syncer` for this snapshot, written at `written_at`.
    pub fn acknowledgement(&self, syncer: &SyncerName, written_at: u64) -> Acknowledgement {
        let mut ack = Acknowledgement::new(syncer.clone(), written_at);
        ack.output_hash = self.output.as_ref().map(|o| o.hash.clone());
        for cluster in &self.clusters {
            let Ok(name) = ClusterName::parse(&cluster.name) else {
                continue;
            };
            let mut left_out = cluster.left_out.clone();
            let left_out_total = u32::try_from(left_out.len()).unwrap_or(u32::MAX);
            left_out.truncate(MAX_LEFT_OUT);
            ack.clusters.insert(
                name,
                ClusterAck {
                    etag: cluster.etag.clone().or_else(|| cluster.served_etag.clone()),
                    served_etag: cluster.served_etag.clone(),
                    state: cluster.state,
                    reason: cluster.reason.clone(),
                    detail: cluster.detail.as_deref().map(|d| shorten(d, 500)),
                    line: cluster.line,
                    missing_polls: cluster.missing_polls,
                    servers: cluster.servers,
                    services: cluster.services.len() as u64,
                    left_out,
                    left_out_total,
                },
            );
        }
        ack
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Writes `snapshot`s as `syncer`'s acknowledgement into `status` (the `_status` child of the
/// storage), whenever what is served changes and at least every `heartbeat`, until `shutdown`.
/// Writes are conditional on the ETag this task last wrote; a failure is retried with backoff.
pub async fn run_acks(
    status: Storage,
    syncer: SyncerName,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let key = syncer.file_name();
    let mut etag: Option<String> = None;
    let mut known = false;
    let mut written: Option<(Acknowledgement, tokio::time::Instant)> = None;
    let mut backoff = Backoff::new(
        Duration::from_secs(1),
        heartbeat.max(Duration::from_secs(1)),
    );
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        // Nothing is acknowledged before the first complete cycle.
        if snapshot.synced {
            let ack = snapshot.acknowledgement(&syncer, unix(SystemTime::now()));
            let due = match &written {
                None => true,
                Some((before, at)) => {
                    let same = Acknowledgement {
                        written_at: before.written_at,
                        ..ack.clone()
                    } == *before;
                    !same || at.elapsed() >= heartbeat
                }
            };
            if due && retry_at.is_none_or(|at| tokio::time::Instant::now() >= at) {
                match write_ack(&status, &key, &ack, &mut etag, &mut known).await {
                    Ok(()) => {
                        debug!(key = %syncer.key(), "acknowledgement written");
                        written = Some((ack, tokio::time::Instant::now()));
                        backoff.reset();
                        retry_at = None;
                    }
                    Err(message) => {
                        let delay = backoff.next_delay();
                        warn!(key = %syncer.key(), error = %message, retry_in = ?delay, "cannot write the acknowledgement; retrying");
                        retry_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
            }
        }
        let wake = match (retry_at, &written) {
            (Some(at), _) => at,
            (None, Some((_, at))) => *at + heartbeat,
            (None, None) => tokio::time::Instant::now() + heartbeat,
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

async fn write_ack(
    status: &Storage,
    key: &str,
    ack: &Acknowledgement,
    etag: &mut Option<String>,
    known: &mut bool,
) -> Result<(), String> {
    if !*known {
        match status.get_limited(key, None, status::MAX_ACK_BYTES).await {
            Ok(Fetched::Object(object)) => *etag = Some(object.etag),
            Ok(_) => *etag = None,
            // An oversized or unreadable object of ours is replaced below.
            Err(err) if err.is_too_large() => *etag = None,
            Err(err) => return Err(error_chain(&err)),
        }
        *known = true;
    }
    let condition = match etag {
        Some(etag) => PutCondition::IfMatch(etag.clone()),
        None => PutCondition::IfAbsent,
    };
    let metadata = BTreeMap::from([("syncer".to_owned(), ack.syncer.to_string())]);
    match status.put(key, ack.to_bytes(), &metadata, condition).await {
        Ok(PutOutcome::Written { etag: new }) => {
            *known = new.is_some();
            *etag = new;
            Ok(())
        }
        Ok(PutOutcome::PreconditionFailed) => {
            *known = false;
            Err(format!(
                "{key} was changed by another writer since this syncer wrote it (is SYNCER_NAME \
                 unique?)"
            ))
        }
        Err(err) => {
            *known = false;
            Err(error_chain(&err))
        }
    }
}

/// Logs once at start-up what the acknowledgement will be.
pub fn announce(syncer: Option<&SyncerName>, storage: &Storage) {
    match syncer {
        Some(name) => info!(
            key = %name.key(),
            storage = %storage.describe(),
            "acknowledging what this syncer serves"
        ),
        None => debug!("SYNCER_NAME is not set; no acknowledgement is written"),
    }
}
