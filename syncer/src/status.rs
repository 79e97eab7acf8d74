//! What this syncer serves, for people and for the exporters.
//!
//! A [`Tracker`] follows the sync loop (listings, events, output writes) and turns the
//! syncer's [`State`] into one [`Snapshot`] through [`Tracker::snapshot`]. The snapshot is
//! shown on the admin port (`/status` as JSON, `/` as a small HTML page with the same facts,
//! `/status/services/NAME` for one Traefik service), answers `ksd-syncer explain NAME`, and,
//! with `SYNCER_NAME` set, becomes the acknowledgement written at
//! `<prefix>_status/<SYNCER_NAME>.json` ([`run_acks`]) when what is served changes and on a
//! slow heartbeat. Without `SYNCER_NAME` nothing is written to the bucket.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::{Fetched, ObjectInfo, PutCondition, PutOutcome, Storage};
use ksd_shared::names::{self, ClusterName, ObjectFormat};
use ksd_shared::status::{
    self, Acknowledgement, ClusterAck, ClusterState, LeftOut, MAX_LEFT_OUT, SyncerName,
};
use ksd_shared::traefik::{Document, LoadBalancer, Section};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::guard::Exclusion;
use crate::state::{Event, State};

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
    /// Services of this cluster in the file, with their servers.
    pub services: Vec<ServiceStatus>,
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

impl Snapshot {
    /// The answer for one Traefik service name (a cluster's own pool `NAME.cluster` counts
    /// as `NAME`).
    pub fn explain(&self, service: &str) -> Explanation {
        let wanted = service.split_once('.').map_or(service, |(s, _)| s);
        let mut explanation = Explanation {
            service: wanted.to_owned(),
            ..Explanation::default()
        };
        for cluster in &self.clusters {
            if let Some(left) = cluster.left_out.iter().find(|l| l.service == wanted) {
                explanation.left_out.push(ClusterLeftOut {
                    cluster: cluster.name.clone(),
                    state: cluster.state,
                    reason: match &left.detail {
                        Some(detail) => format!("{}: {detail}", left.reason),
                        None => left.reason.clone(),
                    },
                });
            }
            let Some(found) = cluster.services.iter().find(|s| s.name == wanted) else {
                continue;
            };
            match cluster.state {
                ClusterState::Served | ClusterState::Missing => {}
                ClusterState::Rejected => explanation.left_out.push(ClusterLeftOut {
                    cluster: cluster.name.clone(),
                    state: cluster.state,
                    reason: format!(
                        "the latest version {} was rejected ({}); the servers below are from \
                         the older version {}",
                        cluster.etag.as_deref().unwrap_or("?"),
                        cluster.reason.as_deref().unwrap_or("unknown"),
                        cluster.served_etag.as_deref().unwrap_or("?"),
                    ),
                }),
                _ => {}
            }
            explanation.contributions.push(Contribution {
                cluster: cluster.name.clone(),
                etag: cluster.served_etag.clone(),
                protocol: found.protocol.clone(),
                servers: found.servers.clone(),
            });
        }
        // A stale cluster's services are not in the file: they are known from its document.
        for cluster in self
            .clusters
            .iter()
            .filter(|c| c.state == ClusterState::Stale)
        {
            explanation.left_out.push(ClusterLeftOut {
                cluster: cluster.name.clone(),
                state: cluster.state,
                reason: "the cluster's object is older than STALE_AFTER".to_owned(),
            });
        }
        explanation.served = !explanation.contributions.is_empty();
        explanation.conflicts = self
            .conflicts
            .iter()
            .filter(|c| c.service == wanted)
            .cloned()
            .collect();
        explanation
    }

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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The first "line N" a validation message names.
fn line_of(detail: &str) -> Option<u64> {
    let lower = detail.to_ascii_lowercase();
    let at = lower.find("line ")?;
    let digits: String = lower[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[derive(Clone, Debug)]
struct Listed {
    key: String,
    etag: String,
    last_modified: Option<SystemTime>,
    changed_at: SystemTime,
}

/// Follows the sync loop and keeps the facts the [`State`] does not (listing details,
/// rejection messages, the served version's ETag, the output file).
#[derive(Debug)]
pub struct Tracker {
    syncer: Option<SyncerName>,
    listed: BTreeMap<ClusterName, Listed>,
    accepted: BTreeMap<ClusterName, String>,
    rejections: BTreeMap<ClusterName, String>,
    /// What the guard left out of the file in the last composition, per cluster.
    left_out: BTreeMap<ClusterName, Vec<LeftOut>>,
    /// The servers the address policy refused, per cluster: `(service, server)`.
    refused: BTreeMap<ClusterName, std::collections::BTreeSet<(String, String)>>,
    output: Option<OutputStatus>,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Tracker {
    pub fn new(syncer: Option<SyncerName>) -> Tracker {
        let (tx, _) = watch::channel(Arc::new(Snapshot {
            syncer: syncer.as_ref().map(ToString::to_string),
            ..Snapshot::default()
        }));
        Tracker {
            syncer,
            listed: BTreeMap::new(),
            accepted: BTreeMap::new(),
            rejections: BTreeMap::new(),
            left_out: BTreeMap::new(),
            refused: BTreeMap::new(),
            output: None,
            tx,
        }
    }

    /// What the guard left out of the last composed file: servers the address policy refused
    /// (on their cluster) and services named like the administrator's (a cluster's own pool on
    /// that cluster; a union pool on every cluster in `state` that exports the name).
    pub fn observe_exclusions(&mut self, excluded: &[Exclusion], state: &State) {
        let mut left_out: BTreeMap<ClusterName, Vec<LeftOut>> = BTreeMap::new();
        let mut refused: BTreeMap<ClusterName, std::collections::BTreeSet<(String, String)>> =
            BTreeMap::new();
        for exclusion in excluded {
            match exclusion {
                Exclusion::Server {
                    cluster,
                    service,
                    server,
                    reason,
                    ..
                } => {
                    refused
                        .entry(cluster.clone())
                        .or_default()
                        .insert((service.clone(), server.clone()));
                    left_out.entry(cluster.clone()).or_default().push(LeftOut {
                        service: service.clone(),
                        reason: "address_policy".to_owned(),
                        detail: Some(format!("server {server} left out: {reason}")),
                    });
                }
                Exclusion::AdminName { kind, service } => {
                    let owned = |plain: &str| LeftOut {
                        service: plain.to_owned(),
                        reason: "administrator_owned".to_owned(),
                        detail: Some(format!(
                            "the administrator's files in TRAEFIK_DIR define the {} service {service}",
                            kind.as_str()
                        )),
                    };
                    let pool = service
                        .rsplit_once('.')
                        .and_then(|(plain, c)| Some((plain, ClusterName::parse(c).ok()?)));
                    match pool {
                        Some((plain, cluster)) => {
                            left_out.entry(cluster).or_default().push(owned(plain));
                        }
                        None => {
                            for facts in state.cluster_facts() {
                                let exports = facts
                                    .good
                                    .is_some_and(|(document, _)| exports(document, service));
                                if exports {
                                    left_out
                                        .entry(facts.cluster.clone())
                                        .or_default()
                                        .push(owned(service));
                                }
                            }
                        }
                    }
                }
            }
        }
        for list in left_out.values_mut() {
            list.sort_by(|a, b| {
                (&a.service, &a.reason, &a.detail).cmp(&(&b.service, &b.reason, &b.detail))
            });
            list.dedup();
        }
        self.left_out = left_out;
        self.refused = refused;
    }

    /// The snapshots as they are taken.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Notes one listing: keys, ETags, and when each ETag was first seen to change.
    pub fn observe_listing(&mut self, listing: &[ObjectInfo], now: SystemTime) {
        let mut listed = BTreeMap::new();
        for info in listing {
            let Ok((cluster, ObjectFormat::Traefik)) = names::parse_object_key(&info.key) else {
                continue;
            };
            let changed_at = match self.listed.get(&cluster) {
                Some(before) if status::same_etag(&before.etag, &info.etag) => before.changed_at,
                _ => now,
            };
            listed.insert(
                cluster,
                Listed {
                    key: info.key.clone(),
                    etag: info.etag.clone(),
                    last_modified: info.last_modified,
                    changed_at,
                },
            );
        }
        // A missing object keeps its last listing facts until the cluster is removed.
        for (cluster, before) in &self.listed {
            listed
                .entry(cluster.clone())
                .or_insert_with(|| before.clone());
        }
        self.listed = listed;
    }

    /// Notes the events of one apply: accepted versions and rejection messages.
    pub fn observe_events(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Accepted { cluster, etag, .. } => {
                    self.accepted.insert(cluster.clone(), etag.clone());
                    self.rejections.remove(cluster);
                }
                Event::Rejected {
                    cluster, detail, ..
                } => {
                    self.rejections.insert(cluster.clone(), detail.clone());
                }
                Event::Removed { cluster } => {
                    self.accepted.remove(cluster);
                    self.rejections.remove(cluster);
                    self.listed.remove(cluster);
                }
                _ => {}
            }
        }
    }

    /// Notes the file written (or found already right) for Traefik.
    /// `wrote`: this process wrote (or adopted) the file just now, rather than finding it
    /// unchanged.
    pub fn observe_output(
        &mut self,
        path: &std::path::Path,
        hash: &str,
        bytes: usize,
        wrote: bool,
    ) {
        let same = self.output.as_ref().is_some_and(|o| o.hash == hash);
        let last_write = match &self.output {
            Some(o) if same && !wrote => o.last_write,
            _ => Some(unix(SystemTime::now())),
        };
        self.output = Some(OutputStatus {
            path: path.display().to_string(),
            hash: hash.to_owned(),
            bytes: bytes as u64,
            last_write,
        });
    }

    /// Builds the snapshot from the state and what was observed, and hands it to the status
    /// page and the acknowledgement writer.
    pub fn publish(&mut self, state: &State, now: SystemTime) {
        let snapshot = self.snapshot(state, now);
        self.tx.send_if_modified(|current| {
            let same = Snapshot {
                taken_at: current.taken_at,
                ..snapshot.clone()
            } == **current;
            if same {
                false
            } else {
                *current = Arc::new(snapshot);
                true
            }
        });
    }

    /// The one place the state's facts become a [`Snapshot`].
    pub fn snapshot(&self, state: &State, now: SystemTime) -> Snapshot {
        let mut clusters = Vec::new();
        for facts in state.cluster_facts() {
            let listed = self.listed.get(facts.cluster);
            let state_now = if facts.missing_polls > 0 {
                ClusterState::Missing
            } else if facts.rejected.is_some() {
                ClusterState::Rejected
            } else if facts.stale {
                ClusterState::Stale
            } else if facts.in_file {
                ClusterState::Served
            } else {
                ClusterState::Pending
            };
            let detail = facts
                .rejected
                .and_then(|_| self.rejections.get(facts.cluster).cloned());
            let (services, servers) = match facts.good {
                Some((document, _)) if facts.in_file => {
                    let mut services = services_of(document);
                    // Servers the address policy refused are not in the file.
                    if let Some(refused) = self.refused.get(facts.cluster) {
                        for service in &mut services {
                            service.servers.retain(|server| {
                                !refused.contains(&(service.name.clone(), server.clone()))
                            });
                        }
                    }
                    let servers = services.iter().map(|s| s.servers.len() as u64).sum();
                    (services, servers)
                }
                _ => (Vec::new(), 0),
            };
            let served_etag = if facts.in_file {
                self.accepted.get(facts.cluster).cloned()
            } else {
                None
            };
            clusters.push(ClusterStatus {
                name: facts.cluster.to_string(),
                key: listed.map_or_else(
                    || names::object_key(facts.cluster, ObjectFormat::Traefik),
                    |l| l.key.clone(),
                ),
                etag: listed
                    .map(|l| l.etag.clone())
                    .or_else(|| facts.processed_etag.map(str::to_owned)),
                last_modified: listed.and_then(|l| l.last_modified).map(unix),
                changed_at: listed.map(|l| unix(l.changed_at)),
                state: state_now,
                reason: facts.rejected.map(str::to_owned),
                line: detail.as_deref().and_then(line_of),
                detail,
                missing_polls: facts.missing_polls,
                served_etag,
                servers,
                services,
                left_out: self
                    .left_out
                    .get(facts.cluster)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        Snapshot {
            syncer: self.syncer.as_ref().map(ToString::to_string),
            taken_at: unix(now),
            synced: state.is_synced(),
            clusters,
            conflicts: state
                .conflicts()
                .iter()
                .map(|c| ConflictStatus {
                    service: c.service.clone(),
                    kind: c.kind.as_str().to_owned(),
                    winner: c.winner.to_string(),
                    loser: c.loser.to_string(),
                    message: c.to_string(),
                })
                .collect(),
            output: self.output.clone(),
        }
    }
}

/// Whether `document` defines a service of that name in any section.
fn exports(document: &Document, name: &str) -> bool {
    let http = document
        .http
        .as_ref()
        .is_some_and(|s| s.services.contains_key(name));
    let tcp = document
        .tcp
        .as_ref()
        .is_some_and(|s| s.services.contains_key(name));
    let udp = document
        .udp
        .as_ref()
        .is_some_and(|s| s.services.contains_key(name));
    http || tcp || udp
}

fn services_of(document: &Document) -> Vec<ServiceStatus> {
    fn section<L: LoadBalancer>(
        out: &mut Vec<ServiceStatus>,
        protocol: &str,
        section: Option<&Section<L>>,
    ) {
        for (name, service) in section.iter().flat_map(|s| s.services.iter()) {
            out.push(ServiceStatus {
                name: name.to_string(),
                protocol: protocol.to_owned(),
                servers: service
                    .load_balancer
                    .servers()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
    }
    let mut services = Vec::new();
    section(&mut services, "http", document.http.as_ref());
    section(&mut services, "tcp", document.tcp.as_ref());
    section(&mut services, "udp", document.udp.as_ref());
    services
}

// ---------------------------------------------------------------------------------------------
// Admin routes

/// `/`, `/status` and `/status/services/{name}`, served from the latest snapshot.
pub fn routes(snapshots: watch::Receiver<Arc<Snapshot>>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(json))
        .route("/status/services/{name}", get(service))
        .with_state(snapshots)
}

type Snapshots = watch::Receiver<Arc<Snapshot>>;

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

async fn json(AxumState(snapshots): AxumState<Snapshots>) -> Response {
    let snapshot = snapshots.borrow().clone();
    json_response(StatusCode::OK, &*snapshot)
}

async fn service(AxumState(snapshots): AxumState<Snapshots>, Path(name): Path<String>) -> Response {
    let snapshot = snapshots.borrow().clone();
    let explanation = snapshot.explain(&name);
    let known = explanation.served || !explanation.left_out.is_empty();
    let status = if known {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    json_response(status, &explanation)
}

async fn page(AxumState(snapshots): AxumState<Snapshots>) -> Response {
    let snapshot = snapshots.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_html(&snapshot),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| escape(&v.to_string()))
}

/// The status page: the same facts as `/status`, as plain HTML tables.
pub fn render_html(snapshot: &Snapshot) -> String {
    let mut h = String::new();
    let title = match &snapshot.syncer {
        Some(name) => format!("ksd-syncer {}", escape(name)),
        None => "ksd-syncer".to_owned(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n\
         <h1>{title}</h1>\n<p>snapshot at {} (Unix seconds); synced: {}</p>\n",
        snapshot.taken_at, snapshot.synced
    );
    h.push_str("<h2>Output</h2>\n");
    match &snapshot.output {
        Some(o) => {
            let _ = writeln!(
                h,
                "<table><tr><th>path</th><td>{}</td></tr><tr><th>hash</th><td>{}</td></tr>\
                 <tr><th>bytes</th><td>{}</td></tr><tr><th>last write</th><td>{}</td></tr></table>",
                escape(&o.path),
                escape(&o.hash),
                o.bytes,
                opt(o.last_write)
            );
        }
        None => h.push_str("<p>not written yet</p>\n"),
    }
    h.push_str(
        "<h2>Clusters</h2>\n<table>\n<tr><th>cluster</th><th>key</th><th>etag</th>\
         <th>last modified</th><th>changed at</th><th>state</th><th>reason</th><th>line</th>\
         <th>missing polls</th><th>served etag</th><th>servers</th><th>services</th></tr>\n",
    );
    for c in &snapshot.clusters {
        let reason = match (&c.reason, &c.detail) {
            (Some(r), Some(d)) => format!("{}: {}", escape(r), escape(d)),
            (Some(r), None) => escape(r),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr id=\"cluster-{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{reason}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.key),
            opt(c.etag.as_deref()),
            opt(c.last_modified),
            opt(c.changed_at),
            c.state.as_str(),
            opt(c.line),
            c.missing_polls,
            opt(c.served_etag.as_deref()),
            c.servers,
            c.services.len(),
            name = escape(&c.name),
        );
    }
    h.push_str("</table>\n<h2>Services</h2>\n<table>\n<tr><th>service</th><th>cluster</th><th>protocol</th><th>servers</th></tr>\n");
    for c in &snapshot.clusters {
        for s in &c.services {
            let _ = writeln!(
                h,
                "<tr><td><a href=\"/status/services/{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.name),
                escape(&s.protocol),
                escape(&s.servers.join(" ")),
                n = escape(&s.name),
            );
        }
    }
    h.push_str("</table>\n<h2>Left out</h2>\n<table>\n<tr><th>service</th><th>cluster</th><th>reason</th></tr>\n");
    for c in &snapshot.clusters {
        for l in &c.left_out {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&l.service),
                escape(&c.name),
                escape(&l.reason)
            );
        }
    }
    h.push_str("</table>\n<h2>Conflicts</h2>\n<ul>\n");
    for conflict in &snapshot.conflicts {
        let _ = writeln!(h, "<li>{}</li>", escape(&conflict.message));
    }
    h.push_str("</ul>\n<p>JSON: <a href=\"/status\">/status</a></p>\n</body></html>\n");
    h
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements

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

// ---------------------------------------------------------------------------------------------
// `ksd-syncer explain NAME`

/// Asks the syncer at `admin` about one Traefik service: the JSON of `/status/services/NAME`
/// and a readable rendering of it.
pub async fn explain(admin: SocketAddr, service: &str) -> Result<(Explanation, String), String> {
    if names::validate_pool_or_service_name(service).is_err() {
        return Err(format!(
            "{service:?} is not a Traefik service name (letters, digits, '-', '_', and '.' before a cluster)"
        ));
    }
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .map_err(|_| format!("connecting to {admin} timed out"))?
    .map_err(|e| format!("cannot connect to the syncer's admin port {admin}: {e}"))?;
    let request = format!(
        "GET /status/services/{service} HTTP/1.0\r\nHost: {admin}\r\nAccept: application/json\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request to {admin}: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        (&mut stream)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut response),
    )
    .await
    .map_err(|_| format!("{admin} did not answer within 10s"))?
    .map_err(|e| format!("reading the answer of {admin}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{admin} sent no HTTP answer"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{admin} sent no HTTP status"))?;
    if code != 200 && code != 404 {
        return Err(format!("{admin} answered HTTP {code}: {}", body.trim()));
    }
    let explanation: Explanation = serde_json::from_str(body)
        .map_err(|e| format!("{admin} answered something that is not an explanation: {e}"))?;
    let text = render_explanation(&explanation);
    Ok((explanation, text))
}

/// The explanation as lines of text.
pub fn render_explanation(e: &Explanation) -> String {
    let mut out = String::new();
    if e.served {
        let _ = writeln!(out, "service {}: served", e.service);
    } else if e.left_out.is_empty() {
        let _ = writeln!(
            out,
            "service {}: not served; no cluster known to this syncer exports it",
            e.service
        );
    } else {
        let _ = writeln!(out, "service {}: not served", e.service);
    }
    for c in &e.contributions {
        let _ = writeln!(
            out,
            "  cluster {} ({}, version {}): {}",
            c.cluster,
            c.protocol,
            c.etag.as_deref().unwrap_or("?"),
            if c.servers.is_empty() {
                "no servers".to_owned()
            } else {
                c.servers.join(", ")
            }
        );
    }
    for l in &e.left_out {
        let _ = writeln!(
            out,
            "  left out: cluster {} ({}): {}",
            l.cluster,
            l.state.as_str(),
            l.reason
        );
    }
    for c in &e.conflicts {
        let _ = writeln!(out, "  conflict: {}", c.message);
    }
    out
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            syncer: Some("edge-1".into()),
            taken_at: 10,
            synced: true,
            clusters: vec![
                ClusterStatus {
                    name: "a".into(),
                    key: "a.traefik.yaml".into(),
                    etag: Some("\"e2\"".into()),
                    state: ClusterState::Rejected,
                    reason: Some("invalid_yaml".into()),
                    detail: Some("at line 4: <bad> & worse".into()),
                    line: Some(4),
                    served_etag: Some("\"e1\"".into()),
                    servers: 1,
                    services: vec![ServiceStatus {
                        name: "default-web-80".into(),
                        protocol: "http".into(),
                        servers: vec!["http://10.0.0.1:80".into()],
                    }],
                    ..ClusterStatus::default()
                },
                ClusterStatus {
                    name: "b".into(),
                    key: "b.traefik.yaml".into(),
                    etag: Some("\"f1\"".into()),
                    state: ClusterState::Served,
                    served_etag: Some("\"f1\"".into()),
                    servers: 2,
                    services: vec![ServiceStatus {
                        name: "default-web-80".into(),
                        protocol: "http".into(),
                        servers: vec!["http://10.1.0.1:80".into(), "http://10.1.0.2:80".into()],
                    }],
                    ..ClusterStatus::default()
                },
            ],
            conflicts: vec![],
            output: Some(OutputStatus {
                path: "/t/k.yml".into(),
                hash: "abc".into(),
                bytes: 42,
                last_write: Some(9),
            }),
        }
    }

    #[test]
    fn explain_names_contributions_and_reasons() {
        let e = sample().explain("default-web-80.b");
        assert!(e.served);
        assert_eq!(e.service, "default-web-80");
        let clusters: Vec<&str> = e.contributions.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(clusters, ["a", "b"]);
        assert_eq!(e.contributions[1].servers.len(), 2);
        assert_eq!(e.contributions[0].etag.as_deref(), Some("\"e1\""));
        assert_eq!(e.left_out.len(), 1);
        assert!(e.left_out[0].reason.contains("invalid_yaml"), "{e:?}");
        let text = render_explanation(&e);
        assert!(
            text.contains("cluster b (http, version \"f1\"): http://10.1.0.1:80"),
            "{text}"
        );

        let none = sample().explain("nope");
        assert!(!none.served && none.left_out.is_empty());
        assert!(render_explanation(&none).contains("not served"));
    }

    #[test]
    fn acknowledgement_carries_the_cluster_facts() {
        let name = SyncerName::parse("edge-1").unwrap();
        let ack = sample().acknowledgement(&name, 77);
        let a = &ack.clusters[&ClusterName::parse("a").unwrap()];
        assert_eq!(a.state, ClusterState::Rejected);
        assert_eq!(a.line, Some(4));
        assert_eq!(a.services, 1);
        assert_eq!(ack.output_hash.as_deref(), Some("abc"));
        let parsed = Acknowledgement::parse(&ack.to_bytes()).unwrap();
        assert_eq!(parsed, ack);
        assert!(
            !parsed
                .answer(&ClusterName::parse("a").unwrap(), "\"e2\"")
                .is_served()
        );
        assert!(
            parsed
                .answer(&ClusterName::parse("b").unwrap(), "f1")
                .is_served()
        );
    }

    #[test]
    fn html_escapes_and_holds_the_facts() {
        let html = render_html(&sample());
        assert!(html.contains("&lt;bad&gt; &amp; worse"), "{html}");
        assert!(!html.contains("<bad>"));
        assert!(!html.contains("<script"));
        for fact in [
            "invalid_yaml",
            "&quot;e1&quot;",
            "default-web-80",
            "abc",
            "42",
        ] {
            assert!(html.contains(fact), "{fact} missing");
        }
    }

    #[test]
    fn lines_are_read_from_messages() {
        assert_eq!(line_of("mapping error at line 12, column 3"), Some(12));
        assert_eq!(line_of("Line 3: bad"), Some(3));
        assert_eq!(line_of("no position"), None);
    }
}
