//! The server's state: objects per resource type, one resourceVersion counter, a bounded
//! history of changes for watches, and snapshots that back `continue` tokens.
//!
//! Everything here runs under one lock and never awaits; HTTP and watch plumbing live in
//! `http.rs`. Objects are kept as `Arc<Value>` so lists, snapshots, history and watch events
//! share them instead of copying.

mod admission;
#[cfg(test)]
mod tests;
mod write;

use super::resources::{NAMESPACES, RESOURCES, ResourceType, View};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Where an object lives in its resource's map; ordered like the real server's storage keys
/// (namespace, then name), which is the order lists come back in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept in the history and sent to watches.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) resource: usize,
    pub(crate) change_type: ChangeType,
    /// The object after the write; for a deletion, the last state with the deletion's RV.
    pub(crate) object: Arc<Value>,
    /// The object before the write, which selector filtering needs to turn an object that
    /// stops matching into a DELETED event.
    pub(crate) previous: Option<Arc<Value>>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main resource: status is kept from the stored object where a status subresource
    /// exists.
    Main,
    /// The `status` subresource: only status changes.
    Status,
    /// A write from the test itself: everything given is stored, no preconditions.
    Everything,
}

/// The body of a PATCH, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

/// `propagationPolicy` of a DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Cascade,
    Orphan,
}

/// Preconditions and policy of a DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeleteOptions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) propagation: Propagation,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        Self {
            uid: None,
            resource_version: None,
            propagation: Propagation::Cascade,
        }
    }
}

/// Which objects a list or watch covers.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) resource: &'static ResourceType,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    pub(crate) fn all(resource: &'static ResourceType) -> Self {
        Self {
            resource,
            namespace: None,
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
        }
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let namespace_ok = self.namespace.as_deref().is_none_or(|ns| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                == Some(ns)
        });
        if !namespace_ok || !self.labels.matches(object) {
            return false;
        }
        // Field labels name the fields of the form served, which a view converts to.
        self.fields.matches(&self.resource.present(object))
    }

    /// The event a watch with this filter sees for a change, following the real server's
    /// watch cache: an object that starts matching is ADDED, one that stops matching is
    /// DELETED (its previous content, with the change's resourceVersion).
    pub(crate) fn event(&self, change: &Change) -> Option<(&'static str, Arc<Value>)> {
        if change.resource != self.resource.index {
            return None;
        }
        let current = change.change_type != ChangeType::Deleted && self.matches(&change.object);
        let before = change.previous.as_deref().is_some_and(|p| self.matches(p));
        match (current, before) {
            (true, false) => Some(("ADDED", change.object.clone())),
            (true, true) => Some(("MODIFIED", change.object.clone())),
            (false, true) if change.change_type == ChangeType::Deleted => {
                Some(("DELETED", change.object.clone()))
            }
            (false, true) => {
                let mut gone = change.previous.as_deref().cloned().unwrap_or(Value::Null);
                set_resource_version(&mut gone, change.rv);
                Some(("DELETED", Arc::new(gone)))
            }
            (false, false) => None,
        }
    }
}

/// A list request.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    pub(crate) filter: Filter,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub(crate) struct ListPage {
    pub(crate) rv: u64,
    pub(crate) items: Vec<Arc<Value>>,
    pub(crate) continue_token: Option<String>,
    pub(crate) remaining: Option<usize>,
}

/// The items of a paginated list, kept so later pages are consistent with the first, as
/// the real server reads them from etcd at the first page's revision.
struct Snapshot {
    rv: u64,
    items: Arc<Vec<Arc<Value>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    snapshot: u64,
    offset: usize,
}

/// How a watch begins.
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for these objects (resourceVersion unset or "0", or a
    /// streaming list).
    Initial(Vec<Arc<Value>>),
    /// The changes after the requested resourceVersion.
    Replay(Vec<Arc<Change>>),
    /// The requested resourceVersion is older than the history.
    Expired { requested: u64, oldest: u64 },
}

/// Sizes that bound the server's memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) history: usize,
    pub(crate) snapshots: usize,
    pub(crate) broadcast: usize,
}

pub(crate) struct Store {
    rv: u64,
    objects: Vec<BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    /// Every change with a resourceVersion above this is in `history`.
    compacted_rv: u64,
    snapshots: BTreeMap<u64, Snapshot>,
    next_snapshot: u64,
    limits: Limits,
    events: broadcast::Sender<Arc<Change>>,
    next_ipv4: u32,
    next_ipv6: u32,
}

impl Store {
    pub(crate) fn new(limits: Limits) -> Self {
        let (events, _) = broadcast::channel(limits.broadcast.max(16));
        let mut store = Self {
            rv: 0,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            compacted_rv: 0,
            snapshots: BTreeMap::new(),
            next_snapshot: 0,
            limits,
            events,
            next_ipv4: 1,
            next_ipv6: 1,
        };
        // The namespaces every cluster starts with.
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store.ensure_namespace(ns);
        }
        store
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects[rt.index]
            .get(&key_of(rt, namespace, name))
            .cloned()
    }

    fn matching(&self, filter: &Filter) -> Vec<Arc<Value>> {
        let map = &self.objects[filter.resource.index];
        if let (Some(name), Some(ns)) = (filter.fields.exact_name(), filter.namespace.as_deref()) {
            return map
                .get(&key_of(filter.resource, ns, name))
                .filter(|o| filter.matches(o))
                .cloned()
                .into_iter()
                .collect();
        }
        match filter.namespace.as_deref() {
            Some(ns) if filter.resource.namespaced => {
                let start = ObjectKey {
                    namespace: ns.to_owned(),
                    name: String::new(),
                };
                map.range(start..)
                    .take_while(|(k, _)| k.namespace == ns)
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect()
            }
            _ => map
                .values()
                .filter(|o| filter.matches(o))
                .cloned()
                .collect(),
        }
    }

    pub(crate) fn list(&mut self, query: &ListQuery) -> Result<ListPage, ApiError> {
        let (rv, items, offset) = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
            None => (self.rv, Arc::new(self.matching(&query.filter)), 0),
            Some(token) => {
                let token = decode_continue(token)?;
                if token.rv < self.compacted_rv {
                    return Err(expired_continue());
                }
                let snapshot = self
                    .snapshots
                    .get(&token.snapshot)
                    .filter(|s| s.rv == token.rv)
                    .ok_or_else(expired_continue)?;
                (snapshot.rv, snapshot.items.clone(), token.offset)
            }
        };
        let limit = query.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = offset.saturating_add(limit).min(items.len());
        let page: Vec<Arc<Value>> = items.get(offset..end).unwrap_or_default().to_vec();
        if end >= items.len() {
            return Ok(ListPage {
                rv,
                items: page,
                continue_token: None,
                remaining: None,
            });
        }
        let snapshot = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => decode_continue(token)?.snapshot,
            None => {
                let id = self.next_snapshot;
                self.next_snapshot += 1;
                self.snapshots.insert(
                    id,
                    Snapshot {
                        rv,
                        items: items.clone(),
                    },
                );
                while self.snapshots.len() > self.limits.snapshots.max(1) {
                    self.snapshots.pop_first();
                }
                id
            }
        };
        let token = ContinueToken {
            rv,
            snapshot,
            offset: end,
        };
        Ok(ListPage {
            rv,
            items: page,
            continue_token: Some(encode_continue(&token)),
            // Like the real server, only an unfiltered list counts what is left.
            remaining: query.filter.labels.is_empty().then_some(items.len() - end),
        })
    }

    /// What a watch from `from` (None: initial events) starts with, the resourceVersion it is
    /// synced to, and its subscription to later changes. Taken under the same lock as writes,
    /// so no change is missed or seen twice.
    pub(crate) fn start_watch(
        &self,
        filter: &Filter,
        from: Option<u64>,
    ) -> (WatchStart, u64, broadcast::Receiver<Arc<Change>>) {
        let receiver = self.events.subscribe();
        let start = match from {
            None => WatchStart::Initial(self.matching(filter)),
            Some(requested) if requested < self.compacted_rv => WatchStart::Expired {
                requested,
                oldest: self.compacted_rv,
            },
            Some(requested) => {
                let first = self.history.partition_point(|c| c.rv <= requested);
                WatchStart::Replay(
                    self.history
                        .range(first..)
                        .filter(|c| c.resource == filter.resource.index)
                        .cloned()
                        .collect(),
                )
            }
        };
        (start, self.rv, receiver)
    }

    /// Forgets the whole history: every resourceVersion older than the current one is now
    /// too old for watches and `continue` tokens.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
        self.prune_snapshots();
    }

    fn prune_snapshots(&mut self) {
        let compacted = self.compacted_rv;
        self.snapshots.retain(|_, s| s.rv >= compacted);
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.limits.history.max(1) {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        self.prune_snapshots();
        // No receivers is normal: nobody is watching.
        let _ = self.events.send(change);
    }

    fn commit(
        &mut self,
        rt: &ResourceType,
        key: ObjectKey,
        mut object: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        set_resource_version(&mut object, self.rv);
        let object = Arc::new(object);
        self.objects[rt.index].insert(key, object.clone());
        let change_type = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            rv: self.rv,
            resource: rt.index,
            change_type,
            object: object.clone(),
            previous,
        });
        object
    }

    fn commit_delete(
        &mut self,
        rt: &ResourceType,
        key: &ObjectKey,
        propagation: Propagation,
    ) -> Option<Arc<Value>> {
        let previous = self.objects[rt.index].remove(key)?;
        self.rv += 1;
        let mut object = (*previous).clone();
        set_resource_version(&mut object, self.rv);
        let object = Arc::new(object);
        self.record(Change {
            rv: self.rv,
            resource: rt.index,
            change_type: ChangeType::Deleted,
            object: object.clone(),
            previous: Some(previous),
        });
        if propagation == Propagation::Cascade {
            self.collect_garbage(rt, key, &object);
        }
        Some(object)
    }

    /// Deleting a namespace deletes its contents; deleting an owner deletes the objects it
    /// solely owns, as the garbage collector does (here at once rather than shortly after).
    fn collect_garbage(&mut self, rt: &ResourceType, key: &ObjectKey, deleted: &Value) {
        let namespaced: Vec<&'static ResourceType> = RESOURCES
            .iter()
            .filter(|r| r.namespaced && r.view == View::Stored)
            .collect();
        if rt.index == NAMESPACES {
            for dependent_rt in namespaced {
                let keys = self.keys_in_namespace(dependent_rt, &key.name, |_| true);
                for dependent in keys {
                    self.commit_delete(dependent_rt, &dependent, Propagation::Cascade);
                }
            }
            return;
        }
        let Some(uid) = deleted.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        let owned_only_by = |object: &Value| {
            object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|owners| {
                    !owners.is_empty()
                        && owners
                            .iter()
                            .all(|o| o.get("uid").and_then(Value::as_str) == Some(uid))
                })
        };
        for dependent_rt in namespaced {
            let keys = self.keys_in_namespace(dependent_rt, &key.namespace, owned_only_by);
            for dependent in keys {
                self.commit_delete(dependent_rt, &dependent, Propagation::Cascade);
            }
        }
    }

    fn keys_in_namespace(
        &self,
        rt: &ResourceType,
        namespace: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<ObjectKey> {
        let start = ObjectKey {
            namespace: namespace.to_owned(),
            name: String::new(),
        };
        self.objects[rt.index]
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .filter(|(_, o)| keep(o))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Namespaces come into existence when something is written into them, so tests and
    /// `kubectl apply -n x` need no namespace object first. (The real server answers 404 for
    /// a missing namespace; nothing here depends on that.)
    fn ensure_namespace(&mut self, namespace: &str) {
        let key = key_of(&RESOURCES[NAMESPACES], "", namespace);
        if self.objects[NAMESPACES].contains_key(&key) {
            return;
        }
        let rt = &RESOURCES[NAMESPACES];
        let mut object =
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": namespace}});
        self.prepare_new(rt, &mut object);
        self.commit(rt, key, object, None);
    }
}

fn key_of(rt: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: if rt.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

fn object_name(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

fn rv_of(object: &Value) -> &str {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn set_resource_version(object: &mut Value, rv: u64) {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

fn encode_continue(token: &ContinueToken) -> String {
    // Serializing three integers cannot fail.
    hex::encode(serde_json::to_vec(token).unwrap_or_default())
}

fn expired_continue() -> ApiError {
    ApiError::expired(
        "The provided continue parameter is too old to display a consistent list result. You can \
         start a new list without the continue parameter, or use the continue token in this \
         response to retrieve the remainder of the results. Continuing with the provided token \
         results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list.",
    )
}
/// Seconds since the Unix epoch.
pub(crate) fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now as RFC 3339 in UTC with second precision, as `creationTimestamp` is written.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(now_seconds())
}

/// Seconds since the epoch of an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SSZ`, the form
/// [`rfc3339`] writes).
pub(crate) fn parse_rfc3339(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

fn rfc3339(secs: u64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time).to_string()
}
