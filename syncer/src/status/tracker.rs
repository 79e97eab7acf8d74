//! The [`Tracker`]: what the sync loop observes beyond the [`State`] (listings, rejection
//! messages, accepted versions, exclusions, the output file), and the one place the state's
//! facts become a [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use ksd_runtime::storage::ObjectInfo;
use ksd_shared::names::{self, ClusterName, ObjectFormat};
use ksd_shared::status::{self, ClusterState, LeftOut, SyncerName};
use ksd_shared::traefik::{Document, LoadBalancer, Section};
use tokio::sync::watch;

use super::{ClusterStatus, ConflictStatus, OutputStatus, ServiceStatus, Snapshot, unix};
use crate::guard::Exclusion;
use crate::state::{ClusterFacts, Event, State};

/// The first "line N" a validation message names.
pub(super) fn line_of(detail: &str) -> Option<u64> {
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
    /// The servers the address policy refused, per cluster and service.
    refused: BTreeMap<ClusterName, Refused>,
    /// The services each served cluster puts in the snapshot.
    served: BTreeMap<ClusterName, ServedServices>,
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
            served: BTreeMap::new(),
            output: None,
            tx,
        }
    }

    /// What the guard left out of the last composed file: servers the address policy refused
    /// (on their cluster) and services named like the administrator's (a cluster's own pool on
    /// that cluster; a union pool on every cluster in `state` that exports the name).
    pub fn observe_exclusions(&mut self, excluded: &[Exclusion], state: &State) {
        let mut left_out: BTreeMap<ClusterName, Vec<LeftOut>> = BTreeMap::new();
        let mut refused: BTreeMap<ClusterName, Refused> = BTreeMap::new();
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
                        .entry(service.clone())
                        .or_default()
                        .insert(server.clone());
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
        let mut snapshot = self.snapshot(state, now);
        self.tx.send_if_modified(|current| {
            // The same facts at another time are not news.
            snapshot.taken_at = current.taken_at;
            if snapshot == **current {
                false
            } else {
                snapshot.taken_at = unix(now);
                *current = Arc::new(snapshot);
                true
            }
        });
    }

    /// The one place the state's facts become a [`Snapshot`].
    pub fn snapshot(&mut self, state: &State, now: SystemTime) -> Snapshot {
        self.refresh_served(state);
        let clusters = state
            .cluster_facts()
            .map(|facts| self.cluster_status(&facts))
            .collect();
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

    /// One cluster of the snapshot: the state's facts and what was observed about it.
    fn cluster_status(&self, facts: &ClusterFacts<'_>) -> ClusterStatus {
        let listed = self.listed.get(facts.cluster);
        let detail = facts
            .rejected
            .and_then(|_| self.rejections.get(facts.cluster).cloned());
        let (services, servers) = self.services_in_file(facts);
        let served_etag = if facts.in_file {
            self.accepted.get(facts.cluster).cloned()
        } else {
            None
        };
        ClusterStatus {
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
            state: cluster_state(facts),
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
        }
    }

    /// Brings [`Tracker::served`] up to date with `state`: a cluster's services are listed
    /// again only when its served document or what the guard refused of it changed.
    fn refresh_served(&mut self, state: &State) {
        let mut served = BTreeMap::new();
        for facts in state.cluster_facts() {
            let Some((document, _)) = facts.good.filter(|_| facts.in_file) else {
                continue;
            };
            let refused = self.refused.get(facts.cluster);
            let kept = self.served.remove(facts.cluster).filter(|before| {
                Arc::ptr_eq(&before.document, document)
                    && Some(&before.refused).filter(|r| !r.is_empty()) == refused
            });
            let entry = kept.unwrap_or_else(|| ServedServices::new(document, refused));
            served.insert(facts.cluster.clone(), entry);
        }
        self.served = served;
    }

    /// The cluster's services in the file and their number of servers: none unless its good
    /// document is in the file.
    fn services_in_file(&self, facts: &ClusterFacts<'_>) -> (Arc<Vec<ServiceStatus>>, u64) {
        match self.served.get(facts.cluster) {
            Some(served) if facts.in_file => (Arc::clone(&served.services), served.servers),
            _ => (Arc::default(), 0),
        }
    }
}

/// The servers the address policy refused on one cluster: service name → servers.
type Refused = BTreeMap<String, BTreeSet<String>>;

/// What one served cluster puts in the snapshot, kept for as long as the same document (the
/// same `Arc`) is served with the same refusals.
#[derive(Debug)]
struct ServedServices {
    /// Held so that the pointer comparison cannot match a later document at the same address.
    document: Arc<Document>,
    refused: Refused,
    services: Arc<Vec<ServiceStatus>>,
    servers: u64,
}

impl ServedServices {
    fn new(document: &Arc<Document>, refused: Option<&Refused>) -> ServedServices {
        let mut services = services_of(document);
        // Servers the address policy refused are not in the file.
        if let Some(refused) = refused {
            for service in &mut services {
                if let Some(servers) = refused.get(&service.name) {
                    service.servers.retain(|server| !servers.contains(server));
                }
            }
        }
        let servers = services.iter().map(|s| s.servers.len() as u64).sum();
        ServedServices {
            document: Arc::clone(document),
            refused: refused.cloned().unwrap_or_default(),
            services: Arc::new(services),
            servers,
        }
    }
}

/// The state a cluster is reported in: a missing object first, then a rejection, staleness,
/// and served or still pending.
fn cluster_state(facts: &ClusterFacts<'_>) -> ClusterState {
    if facts.missing_polls > 0 {
        ClusterState::Missing
    } else if facts.rejected.is_some() {
        ClusterState::Rejected
    } else if facts.stale {
        ClusterState::Stale
    } else if facts.in_file {
        ClusterState::Served
    } else {
        ClusterState::Pending
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
