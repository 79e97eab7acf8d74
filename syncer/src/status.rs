//! What this syncer serves, for people and for the exporters.
//!
//! A [`Tracker`] follows the sync loop (listings, events, output writes) and turns the
//! syncer's [`State`](crate::state::State) into one [`Snapshot`] through
//! [`Tracker::snapshot`]. The snapshot is shown on the admin port (`/status` as JSON, `/` as a
//! small HTML page with the same facts, `/status/services/NAME` for one Traefik service),
//! answers `ksd-syncer explain NAME`, and, with `SYNCER_NAME` set, becomes the acknowledgement
//! written at `<prefix>_status/<SYNCER_NAME>.json` ([`run_acks`]) when what is served changes
//! and on a slow heartbeat. Without `SYNCER_NAME` nothing is written to the bucket.
//!
//! This file holds the snapshot's shape (what `/status` serializes). Around it:
//! - `tracker`: the [`Tracker`], where the state's facts become a snapshot;
//! - `page`: the admin routes ([`routes`]) and the HTML page ([`render_html`]);
//! - `explain`: one service's answer ([`Snapshot::explain`]), and the `ksd-syncer explain`
//!   client that asks a running syncer for it ([`explain()`]);
//! - `acks`: the acknowledgement ([`Snapshot::acknowledgement`]) and the task writing it.

mod acks;
mod explain;
mod page;
mod tracker;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ksd_shared::status::{ClusterState, LeftOut};
use serde::{Deserialize, Serialize};

pub use acks::{announce, run_acks};
pub use explain::{explain, render_explanation};
pub use page::{render_html, routes};
pub use tracker::Tracker;

/// Everything the status page shows, as of one sync cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// `SYNCER_NAME`, when set.
    pub syncer: Option<String>,
    /// When the snapshot was taken (seconds since the Unix epoch).
    pub taken_at: u64,
    /// Whether a cycle has fetched every listed object yet.
    pub synced: bool,
    pub clusters: Vec<ClusterStatus>,
    /// Services that clusters export with different protocols or options.
    pub conflicts: Vec<ConflictStatus>,
    /// The file written for Traefik.
    pub output: Option<OutputStatus>,
}

/// One cluster on this syncer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: String,
    /// Object key, relative to the storage prefix.
    pub key: String,
    /// ETag in the last listing (absent while the object is missing).
    pub etag: Option<String>,
    /// Last-modified time of the object (seconds since the Unix epoch).
    pub last_modified: Option<u64>,
    /// When this syncer last saw the listed ETag change (seconds since the Unix epoch).
    pub changed_at: Option<u64>,
    pub state: ClusterState,
    /// Why the latest version was rejected (`too_large`, `invalid_yaml`...).
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The line of the document a rejection points at, when the message names one.
    pub line: Option<u64>,
    /// Consecutive listings without the object.
    pub missing_polls: u32,
    /// ETag of the version whose services are in the file, when known.
    pub served_etag: Option<String>,
    /// Servers of this cluster in the file.
    pub servers: u64,
    /// Services of this cluster in the file, with their servers. Shared between snapshots for
    /// as long as the cluster's served document (and what the guard refused of it) is the same:
    /// taking a snapshot costs the clusters that changed, not every cluster's every server.
    #[serde(with = "shared_list")]
    pub services: Arc<Vec<ServiceStatus>>,
    /// Services of the cluster's document left out of the file, with the reason.
    pub left_out: Vec<LeftOut>,
}

/// One Traefik service of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    /// `http`, `tcp` or `udp`.
    pub protocol: String,
    /// Server URLs (HTTP) or addresses (TCP, UDP).
    pub servers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictStatus {
    pub service: String,
    pub kind: String,
    pub winner: String,
    pub loser: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatus {
    pub path: String,
    /// SHA-256 (hex) of the file's bytes.
    pub hash: String,
    pub bytes: u64,
    /// When this process last wrote (or adopted) the file (seconds since the Unix epoch).
    pub last_write: Option<u64>,
}

/// The answer for one Traefik service (`/status/services/NAME`, `ksd-syncer explain NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub service: String,
    /// Whether the file has the service.
    pub served: bool,
    /// Clusters whose servers the file holds for it.
    pub contributions: Vec<Contribution>,
    /// Clusters that export it and are not (or not with their latest version) in the file.
    pub left_out: Vec<ClusterLeftOut>,
    pub conflicts: Vec<ConflictStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contribution {
    pub cluster: String,
    /// The object version the servers come from.
    pub etag: Option<String>,
    pub protocol: String,
    pub servers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLeftOut {
    pub cluster: String,
    pub state: ClusterState,
    pub reason: String,
}

/// (De)serializes an `Arc<Vec<T>>` as the plain list.
mod shared_list {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        list: &Arc<Vec<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        list.as_slice().serialize(serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<Vec<T>>, D::Error> {
        Vec::deserialize(deserializer).map(Arc::new)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
