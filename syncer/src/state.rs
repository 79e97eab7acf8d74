//! The syncer's pure core: what it knows about every cluster and what file that knowledge
//! implies. No I/O happens here; the I/O shell (`sync.rs`) lists, fetches and writes, and
//! asks this module what to fetch ([`State::plan`]), what the answers mean ([`State::apply`])
//! and what the file should be ([`State::decide`], [`compose`]).
//!
//! Per cluster it keeps the last good document, the ETag of the last version it processed
//! (good or not, so a bad version is fetched and reported once), the count of consecutive
//! listings that did not show the cluster's object, and the current rejection if any.
//!
//! The rules, in one place:
//! - a listing entry whose key is not `<dns-label>.traefik.yaml` is skipped: `.backends.yaml`
//!   silently, anything else reported once while it stays in the listing;
//! - an object is fetched only when its ETag differs from the last processed one, and not at all
//!   when the listing already says it is too large or stale;
//! - a rejected version leaves the cluster's last good document in place;
//! - a cluster whose object is absent from the listing is removed only after
//!   [`Policy::confirm_polls`] consecutive listings agree; an empty listing is held the same way
//!   even when nothing is known yet (a previous run's file stays until it is confirmed);
//! - a cluster whose object the syncer has not seen change (a new ETag or last-modified time,
//!   as the exporter's heartbeat produces) for [`Policy::stale_after`], on the syncer's own
//!   monotonic clock, is left out of the file and comes back when its object changes. The
//!   store's clock is never compared with ours. A cluster first seen counts as changed then, so
//!   right after a start every listed cluster is fresh for one `STALE_AFTER`;
//! - the file is never replaced by one serving no cluster unless the listing itself was
//!   confirmed empty: when every listed cluster is stale or has no good document, the decision
//!   is [`Hold::NothingServable`] and the current file stays;
//! - the last good document of a cluster can be seeded from the file a previous run wrote
//!   ([`State::restore`]), so a restart while a cluster's object is invalid keeps serving it;
//! - nothing is decided before one cycle in which every listed object could be fetched, so a
//!   restart never publishes a partial set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ksd_runtime::storage::{ObjectInfo, bare_etag, same_etag};
use ksd_shared::merge::{ClusterDocument, Conflict};
use ksd_shared::names::{self, ClusterName, ObjectFormat};
use ksd_shared::traefik::{self, Document, Limits};

/// Reason label of a document refused for its size before it was downloaded.
pub const REASON_TOO_LARGE: &str = "too_large";

/// The knobs of the rules above, from the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive listings without a cluster's object before the cluster is removed (>= 1).
    pub confirm_polls: u32,
    /// Clusters whose object has not changed for this long (syncer's monotonic clock) are left
    /// out; `None` keeps them forever.
    pub stale_after: Option<Duration>,
    /// Larger cluster documents are rejected.
    pub max_object_bytes: u64,
}

impl Policy {
    /// The parser's limits for a cluster document.
    fn limits(&self) -> Limits {
        Limits {
            max_bytes: usize::try_from(self.max_object_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// One conditional fetch the shell should perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub cluster: ClusterName,
    pub key: String,
    /// The ETag of the version already processed: the server answers 304 if it is unchanged.
    pub if_none_match: Option<String>,
}

/// What a fetch returned, as far as the rules care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The object still has the ETag we asked about.
    NotModified,
    /// The object was deleted between the listing and the fetch; the next listings decide.
    Missing,
    Object {
        bytes: Vec<u8>,
        etag: String,
    },
    /// The store refused to send it: over the size limit.
    TooLarge,
    /// The store could not be reached or failed; nothing is learnt.
    Failed,
}

/// Something that happened to a cluster or key while applying a cycle; the shell logs these
/// and counts them. Each is emitted once per change, not on every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key under the prefix that names no cluster object (reported once while listed).
    InvalidKey { key: String, reason: String },
    /// A new version of a cluster's document was accepted.
    Accepted {
        cluster: ClusterName,
        etag: String,
        servers: usize,
    },
    /// A version was refused; the cluster keeps its last good document if it has one.
    Rejected {
        cluster: ClusterName,
        key: String,
        etag: String,
        reason: &'static str,
        detail: String,
        keeps_last_good: bool,
    },
    /// A known cluster's object is absent from the listing, not yet confirmed.
    Missing {
        cluster: ClusterName,
        polls: u32,
        confirm_polls: u32,
    },
    /// A cluster's object is back before its absence was confirmed.
    Returned { cluster: ClusterName },
    /// A cluster's absence was confirmed: it is forgotten.
    Removed { cluster: ClusterName },
    /// A cluster's object has not changed for longer than `STALE_AFTER`: it is left out.
    Stale { cluster: ClusterName, age: Duration },
    /// A stale cluster's object was refreshed.
    Fresh { cluster: ClusterName },
}

/// Why no file is decided yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// No cycle has yet fetched every listed object.
    NotSynced,
    /// The listing is empty and nothing is known: held until `confirm_polls` listings agree.
    EmptyListing { polls: u32, confirm_polls: u32 },
    /// Clusters are listed but none has a document to serve (all stale, all rejected, or a mix):
    /// the current file stays rather than being replaced by an empty one.
    NothingServable {
        listed: usize,
        stale: usize,
        rejected: usize,
    },
}

impl Hold {
    /// A short, stable label for the status metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            Hold::NotSynced => "not_synced",
            Hold::EmptyListing { .. } => "empty_listing",
            Hold::NothingServable { .. } => "nothing_servable",
        }
    }
}

/// What the file should contain: the documents of the clusters to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Hold(Hold),
    /// The clusters to serve, by name, each document shared with the state (never copied).
    Publish(Vec<(ClusterName, Arc<Document>)>),
}

/// A snapshot for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Clusters with an object in the last listing.
    pub seen: usize,
    /// Clusters whose document is in the file.
    pub published: usize,
    /// Clusters whose latest version is rejected, by reason.
    pub rejected: BTreeMap<&'static str, usize>,
    /// Clusters left out because their object is stale.
    pub stale: usize,
    /// Known clusters absent from the last listing, not yet removed.
    pub missing: usize,
    /// Servers in each published cluster's document.
    pub servers: BTreeMap<ClusterName, usize>,
    /// Keys under the prefix that name no cluster object.
    pub invalid_keys: usize,
}

/// One cluster as [`State::cluster_facts`] reports it.
#[derive(Clone, Debug)]
pub struct ClusterFacts<'a> {
    pub cluster: &'a ClusterName,
    /// ETag of the last version processed (accepted or rejected).
    pub processed_etag: Option<&'a str>,
    /// The reason the latest version was refused, if it was.
    pub rejected: Option<&'static str>,
    /// Consecutive listings without the cluster's object.
    pub missing_polls: u32,
    pub stale: bool,
    /// The last good document and its server count. A new `Arc` is a new version: the status
    /// tracker keeps what it derived from a document for as long as the same `Arc` is served.
    pub good: Option<(&'a Arc<Document>, usize)>,
    /// Whether the good document is in the file (it is, unless stale).
    pub in_file: bool,
}

#[derive(Clone, Debug)]
struct GoodDocument {
    /// Shared with every decision that publishes it: a new `Arc` is a new version.
    document: Arc<Document>,
    servers: usize,
    /// Rebuilt from the file a previous run wrote, not fetched by this one.
    restored: bool,
}

#[derive(Clone, Debug)]
struct Rejection {
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
struct ClusterState {
    good: Option<GoodDocument>,
    /// The current version is rejected (the good document, if any, is an older version).
    rejection: Option<Rejection>,
    /// ETag of the last version processed (accepted or rejected).
    processed_etag: Option<String>,
    missing_polls: u32,
    stale: bool,
    /// The listing's view of the object (ETag, last-modified) and when, on our monotonic
    /// clock, it was first seen like that: staleness is measured from there.
    seen_version: Option<(String, Option<SystemTime>)>,
    changed_at: Option<Instant>,
}

impl ClusterState {
    /// A listing shows the cluster's object: it is back if it was missing, and its staleness
    /// is measured from the last time its version (ETag, last-modified) changed.
    fn observe_listed(
        &mut self,
        cluster: &ClusterName,
        info: &ObjectInfo,
        policy: &Policy,
        now: Instant,
        events: &mut Vec<Event>,
    ) {
        if self.missing_polls > 0 {
            self.missing_polls = 0;
            events.push(Event::Returned {
                cluster: cluster.clone(),
            });
        }
        let version = (bare_etag(&info.etag).to_owned(), info.last_modified);
        if self.seen_version.as_ref() != Some(&version) {
            self.seen_version = Some(version);
            self.changed_at = Some(now);
        }
        let stale_age = self
            .changed_at
            .map(|at| now.saturating_duration_since(at))
            .filter(|age| policy.stale_after.is_some_and(|limit| *age > limit));
        match (stale_age, self.stale) {
            (Some(age), false) => {
                self.stale = true;
                events.push(Event::Stale {
                    cluster: cluster.clone(),
                    age,
                });
            }
            (None, true) => {
                self.stale = false;
                events.push(Event::Fresh {
                    cluster: cluster.clone(),
                });
            }
            _ => {}
        }
    }

    /// What a fetch of a listed, changed object returned (`Failed` teaches nothing).
    fn apply_answer(
        &mut self,
        cluster: &ClusterName,
        info: &ObjectInfo,
        outcome: FetchOutcome,
        policy: &Policy,
        events: &mut Vec<Event>,
    ) {
        match outcome {
            // Deleted since the listing: the next listings decide.
            FetchOutcome::Missing | FetchOutcome::Failed => {}
            FetchOutcome::NotModified => {
                // The version we processed is still current; the listing's ETag is only
                // spelt differently. Remember it to avoid asking again.
                self.processed_etag = Some(info.etag.clone());
            }
            FetchOutcome::TooLarge => {
                let detail = format!("over MAX_OBJECT_BYTES ({} bytes)", policy.max_object_bytes);
                let etag = info.etag.clone();
                events.push(reject(self, cluster, info, etag, REASON_TOO_LARGE, detail));
            }
            FetchOutcome::Object { bytes, etag } => {
                match traefik::parse_cluster_document(&bytes, &policy.limits()) {
                    Ok(document) => events.push(self.accept(cluster, etag, document)),
                    Err(error) => {
                        let reason = error.reason();
                        let detail = error.to_string();
                        events.push(reject(self, cluster, info, etag, reason, detail));
                    }
                }
            }
        }
    }

    /// A fetched version is the cluster's new good document.
    fn accept(&mut self, cluster: &ClusterName, etag: String, document: Document) -> Event {
        let servers = count_servers(&document);
        self.good = Some(GoodDocument {
            document: Arc::new(document),
            servers,
            restored: false,
        });
        self.rejection = None;
        self.processed_etag = Some(etag.clone());
        Event::Accepted {
            cluster: cluster.clone(),
            etag,
            servers,
        }
    }
}

/// Everything the syncer remembers between cycles.
#[derive(Clone, Debug, Default)]
pub struct State {
    clusters: BTreeMap<ClusterName, ClusterState>,
    reported_keys: BTreeSet<String>,
    empty_polls: u32,
    synced: bool,
    seen: usize,
    conflicts: Vec<Conflict>,
    revision: u64,
}

/// A listing entry classified by its key.
enum Entry<'a> {
    Cluster(ClusterName, &'a ObjectInfo),
    Ignored,
    Invalid(String),
}

fn classify(info: &ObjectInfo) -> Entry<'_> {
    match names::parse_object_key(&info.key) {
        Ok((cluster, ObjectFormat::Traefik)) => Entry::Cluster(cluster, info),
        // Other formats of the same exporters share the prefix; they are not ours to read.
        Ok((_, _)) => Entry::Ignored,
        Err(error) => Entry::Invalid(error.to_string()),
    }
}

/// Servers in a document, all protocols.
pub fn count_servers(document: &Document) -> usize {
    document.server_count()
}

impl State {
    pub fn new() -> Self {
        State::default()
    }

    /// Seeds the last good documents of clusters not known yet, from the file a previous run
    /// wrote ([`crate::restore`]). A seed is served until a fetched version is accepted (and
    /// kept if the fetched one is rejected); it never makes the state synced by itself.
    /// Returns how many clusters were seeded.
    pub fn restore(&mut self, documents: Vec<ClusterDocument>) -> usize {
        let mut seeded = 0;
        for ClusterDocument { cluster, document } in documents {
            let state = self.clusters.entry(cluster).or_default();
            if state.good.is_some() || state.processed_etag.is_some() {
                continue;
            }
            let servers = count_servers(&document);
            state.good = Some(GoodDocument {
                document: Arc::new(document),
                servers,
                restored: true,
            });
            seeded += 1;
        }
        if seeded > 0 {
            self.revision = self.revision.wrapping_add(1);
        }
        seeded
    }

    /// Clusters served from a seed of [`State::restore`], not yet from a fetched version.
    pub fn restored_clusters(&self) -> Vec<ClusterName> {
        self.clusters
            .iter()
            .filter(|(_, c)| c.good.as_ref().is_some_and(|g| g.restored))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether a cycle has fetched every listed object at least once.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Changes whenever [`State::decide`] may answer differently, so the shell composes the
    /// file only when something happened.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The fetches a listing calls for: objects whose ETag differs from the last version
    /// processed, except those the listing already shows to be too large. (An object whose
    /// ETag changed is fresh by definition, so staleness never stops a fetch.)
    pub fn plan(&self, listing: &[ObjectInfo], policy: &Policy) -> Vec<FetchRequest> {
        let mut fetches = Vec::new();
        for info in listing {
            let Entry::Cluster(cluster, info) = classify(info) else {
                continue;
            };
            let known = self.clusters.get(&cluster);
            let processed = known.and_then(|c| c.processed_etag.as_deref());
            if processed.is_some_and(|etag| same_etag(etag, &info.etag)) {
                continue;
            }
            if info.size > policy.max_object_bytes {
                continue;
            }
            fetches.push(FetchRequest {
                cluster,
                key: info.key.clone(),
                if_none_match: processed.map(str::to_owned),
            });
        }
        fetches
    }

    /// Applies one successful listing and the answers to the fetches [`State::plan`] asked for.
    /// Returns what changed, for the logs and the metrics.
    pub fn apply(
        &mut self,
        listing: &[ObjectInfo],
        fetched: Vec<(ClusterName, FetchOutcome)>,
        policy: &Policy,
        now: Instant,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut fetched: BTreeMap<ClusterName, FetchOutcome> = fetched.into_iter().collect();
        let listed = self.classify_listing(listing, &mut events);
        let mut complete = true;
        for (cluster, info) in &listed {
            let state = self.clusters.entry(cluster.clone()).or_default();
            state.observe_listed(cluster, info, policy, now, &mut events);
            let already_processed = state
                .processed_etag
                .as_deref()
                .is_some_and(|etag| same_etag(etag, &info.etag));
            if already_processed {
                continue;
            }
            if info.size > policy.max_object_bytes {
                let detail = format!(
                    "{} bytes, over MAX_OBJECT_BYTES ({} bytes)",
                    info.size, policy.max_object_bytes
                );
                let etag = info.etag.clone();
                events.push(reject(state, cluster, info, etag, REASON_TOO_LARGE, detail));
                continue;
            }
            match fetched.remove(cluster) {
                // An unfetched change is still unknown.
                None | Some(FetchOutcome::Failed) => complete = false,
                Some(outcome) => state.apply_answer(cluster, info, outcome, policy, &mut events),
            }
        }
        self.note_absent(&listed, policy, &mut events);

        let empty_polls = if listed.is_empty() {
            self.empty_polls.saturating_add(1)
        } else {
            0
        };
        let synced = self.synced || complete;
        if !events.is_empty() || empty_polls != self.empty_polls || synced != self.synced {
            self.revision = self.revision.wrapping_add(1);
        }
        self.empty_polls = empty_polls;
        self.synced = synced;
        self.seen = listed.len();
        events
    }

    /// The listing's cluster objects by cluster; keys naming no cluster object are reported
    /// (once while they stay listed).
    fn classify_listing<'a>(
        &mut self,
        listing: &'a [ObjectInfo],
        events: &mut Vec<Event>,
    ) -> BTreeMap<ClusterName, &'a ObjectInfo> {
        let mut listed = BTreeMap::new();
        let mut invalid_keys = BTreeSet::new();
        for info in listing {
            match classify(info) {
                Entry::Cluster(cluster, info) => {
                    listed.insert(cluster, info);
                }
                Entry::Ignored => {}
                Entry::Invalid(reason) => {
                    if !self.reported_keys.contains(&info.key) {
                        events.push(Event::InvalidKey {
                            key: info.key.clone(),
                            reason,
                        });
                    }
                    invalid_keys.insert(info.key.clone());
                }
            }
        }
        // Forget keys that left the listing, so one that comes back is reported again.
        self.reported_keys = invalid_keys;
        listed
    }

    /// Counts a listing without each known cluster's object; removes the clusters whose
    /// absence is confirmed.
    fn note_absent(
        &mut self,
        listed: &BTreeMap<ClusterName, &ObjectInfo>,
        policy: &Policy,
        events: &mut Vec<Event>,
    ) {
        let absent: Vec<ClusterName> = self
            .clusters
            .keys()
            .filter(|c| !listed.contains_key(*c))
            .cloned()
            .collect();
        for cluster in absent {
            let Some(state) = self.clusters.get_mut(&cluster) else {
                continue;
            };
            state.missing_polls = state.missing_polls.saturating_add(1);
            if state.missing_polls >= policy.confirm_polls {
                self.clusters.remove(&cluster);
                events.push(Event::Removed { cluster });
            } else {
                events.push(Event::Missing {
                    cluster,
                    polls: state.missing_polls,
                    confirm_polls: policy.confirm_polls,
                });
            }
        }
    }

    /// The documents the file should hold now, or why it should stay as it is.
    pub fn decide(&self, policy: &Policy) -> Decision {
        if !self.synced {
            return Decision::Hold(Hold::NotSynced);
        }
        if self.clusters.is_empty() && self.empty_polls < policy.confirm_polls {
            return Decision::Hold(Hold::EmptyListing {
                polls: self.empty_polls,
                confirm_polls: policy.confirm_polls,
            });
        }
        // Known clusters, none servable: never an empty file by accident. Only a listing
        // confirmed empty (every cluster removed) publishes a file serving no cluster.
        if !self.clusters.is_empty() && self.published().next().is_none() {
            return Decision::Hold(Hold::NothingServable {
                listed: self.clusters.len(),
                stale: self.clusters.values().filter(|c| c.stale).count(),
                rejected: self
                    .clusters
                    .values()
                    .filter(|c| !c.stale && c.good.is_none())
                    .count(),
            });
        }
        Decision::Publish(
            self.published()
                .map(|(cluster, good)| (cluster.clone(), good.document.clone()))
                .collect(),
        )
    }

    fn published(&self) -> impl Iterator<Item = (&ClusterName, &GoodDocument)> {
        self.clusters
            .iter()
            .filter(|(_, state)| !state.stale)
            .filter_map(|(cluster, state)| state.good.as_ref().map(|good| (cluster, good)))
    }

    /// What the state knows about each cluster, in name order: the facts behind the status
    /// page and the acknowledgement (`crate::status`).
    pub fn cluster_facts(&self) -> impl Iterator<Item = ClusterFacts<'_>> {
        self.clusters.iter().map(|(cluster, state)| ClusterFacts {
            cluster,
            processed_etag: state.processed_etag.as_deref(),
            rejected: state.rejection.as_ref().map(|r| r.reason),
            missing_polls: state.missing_polls,
            stale: state.stale,
            good: state
                .good
                .as_ref()
                .map(|good| (&good.document, good.servers)),
            in_file: !state.stale && state.good.is_some(),
        })
    }

    /// The conflicts of the latest merge.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Records the conflicts of the latest merge; true when they differ from the previous ones
    /// (so they are logged once per change).
    pub fn note_conflicts(&mut self, conflicts: &[Conflict]) -> bool {
        if self.conflicts == conflicts {
            return false;
        }
        self.conflicts = conflicts.to_vec();
        true
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            seen: self.seen,
            invalid_keys: self.reported_keys.len(),
            ..Summary::default()
        };
        for state in self.clusters.values() {
            if let Some(rejection) = &state.rejection {
                *summary.rejected.entry(rejection.reason).or_default() += 1;
            }
            if state.stale {
                summary.stale += 1;
            }
            if state.missing_polls > 0 {
                summary.missing += 1;
            }
        }
        for (cluster, good) in self.published() {
            summary.published += 1;
            summary.servers.insert(cluster.clone(), good.servers);
        }
        summary
    }
}

/// Answers to fetches made outside a listing, on a bucket event notification.
impl State {
    /// The ETag of the version of `cluster` last processed (accepted or rejected), if any: an
    /// event carrying the same ETag needs no fetch.
    pub fn processed_etag(&self, cluster: &ClusterName) -> Option<&str> {
        self.clusters
            .get(cluster)
            .and_then(|c| c.processed_etag.as_deref())
    }

    /// Whether `etag` names the version of `cluster` already processed.
    pub fn has_processed(&self, cluster: &ClusterName, etag: &str) -> bool {
        self.processed_etag(cluster)
            .is_some_and(|processed| same_etag(processed, etag))
    }

    /// Applies fetches of single objects named by event notifications. Unlike
    /// [`State::apply`] this is no listing: it never counts a cluster as missing, never
    /// removes one and never completes the first sync. A fetch that found the object gone
    /// changes nothing (only listings confirm an absence); one that found it back ends a
    /// pending absence, as a listing showing it would.
    pub fn apply_fetched(
        &mut self,
        fetched: Vec<(ClusterName, String, FetchOutcome)>,
        policy: &Policy,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let limits = policy.limits();
        for (cluster, key, outcome) in fetched {
            let (etag, parsed) = match outcome {
                FetchOutcome::NotModified | FetchOutcome::Missing | FetchOutcome::Failed => {
                    continue;
                }
                FetchOutcome::TooLarge => (None, None),
                FetchOutcome::Object { bytes, etag } => {
                    if self.has_processed(&cluster, &etag) {
                        continue;
                    }
                    let parsed = traefik::parse_cluster_document(&bytes, &limits);
                    (Some(etag), Some(parsed))
                }
            };
            let state = self.clusters.entry(cluster.clone()).or_default();
            if state.missing_polls > 0 {
                state.missing_polls = 0;
                events.push(Event::Returned {
                    cluster: cluster.clone(),
                });
            }
            let info = ObjectInfo {
                key,
                etag: etag.clone().unwrap_or_default(),
                size: 0,
                last_modified: None,
            };
            match (etag, parsed) {
                (Some(etag), Some(Ok(document))) => {
                    events.push(state.accept(&cluster, etag, document));
                }
                (Some(etag), Some(Err(error))) => {
                    let reason = error.reason();
                    events.push(reject(
                        state,
                        &cluster,
                        &info,
                        etag,
                        reason,
                        error.to_string(),
                    ));
                }
                // Too large: the ETag is unknown, so the next listing decides again.
                _ => {
                    if state.rejection.as_ref().map(|r| r.reason) != Some(REASON_TOO_LARGE) {
                        state.rejection = Some(Rejection {
                            reason: REASON_TOO_LARGE,
                        });
                        events.push(Event::Rejected {
                            cluster: cluster.clone(),
                            key: info.key.clone(),
                            etag: String::new(),
                            reason: REASON_TOO_LARGE,
                            detail: format!(
                                "over MAX_OBJECT_BYTES ({} bytes)",
                                policy.max_object_bytes
                            ),
                            keeps_last_good: state.good.is_some(),
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = self.revision.wrapping_add(1);
        }
        events
    }
}

fn reject(
    state: &mut ClusterState,
    cluster: &ClusterName,
    info: &ObjectInfo,
    etag: String,
    reason: &'static str,
    detail: String,
) -> Event {
    state.rejection = Some(Rejection { reason });
    state.processed_etag = Some(etag.clone());
    Event::Rejected {
        cluster: cluster.clone(),
        key: info.key.clone(),
        etag,
        reason,
        detail,
        keeps_last_good: state.good.is_some(),
    }
}

#[cfg(test)]
mod tests;
