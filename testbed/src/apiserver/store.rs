//! The server's state: objects per resource type, one resourceVersion counter, a bounded
//! history of changes for watches, and snapshots that back `continue` tokens.
//!
//! Everything here runs under one lock and never awaits; HTTP and watch plumbing live in
//! `http.rs`. Objects are kept as `Arc<Value>` so lists, snapshots, history and watch events
//! share them instead of copying.

use super::patch::{self, PatchError};
use super::resources::{self, ENDPOINT_SLICES, NAMESPACES, RESOURCES, ResourceType, SERVICES};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use serde_json::{Map, Value, json};
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
        namespace_ok && self.labels.matches(object) && self.fields.matches(object)
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
        let namespaced: Vec<&'static ResourceType> =
            RESOURCES.iter().filter(|r| r.namespaced).collect();
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

    /// POST to a collection.
    pub(crate) fn create(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(rt, &mut object)?;
        let namespace = object_namespace(rt, namespace, &mut object)?;
        let name = match object_name(&object) {
            Some(name) => name,
            None => {
                let prefix = object
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            rt,
                            "",
                            "metadata.name: Required value: name or generateName is required",
                        )
                    })?;
                let name = format!("{prefix}{}", random_suffix());
                object["metadata"]["name"] = json!(name);
                name
            }
        };
        validate(rt, &name, &object)?;
        let key = key_of(rt, &namespace, &name);
        if self.objects[rt.index].contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        self.prepare_new(rt, &mut object);
        if dry_run {
            return Ok(Arc::new(object));
        }
        if rt.namespaced {
            self.ensure_namespace(&namespace);
        }
        Ok(self.commit(rt, key, object, None))
    }

    /// PUT to an object (or its status).
    pub(crate) fn update(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(rt, &mut object)?;
        let namespace = object_namespace(rt, namespace, &mut object)?;
        match object_name(&object) {
            Some(body_name) if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => object["metadata"]["name"] = json!(name),
        }
        let key = key_of(rt, &namespace, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if target != Target::Everything {
            let requested = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !requested.is_empty() && requested != rv_of(&current) {
                return Err(ApiError::conflict(rt, name));
            }
        }
        self.replace(rt, key, &current, object, target, dry_run)
    }

    /// Stores `object` in place of `current`, keeping what the server owns.
    fn replace(
        &mut self,
        rt: &'static ResourceType,
        key: ObjectKey,
        current: &Arc<Value>,
        mut object: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if target == Target::Status {
            let status = object.get("status").cloned();
            object = (**current).clone();
            match status {
                Some(status) => object["status"] = status,
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        } else if target == Target::Main && rt.has_status {
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        validate(rt, &key.name, &object)?;
        let meta = &current["metadata"];
        for field in ["uid", "creationTimestamp"] {
            if let Some(value) = meta.get(field) {
                object["metadata"][field] = value.clone();
            }
        }
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("managedFields");
        }
        if rt.index == SERVICES {
            keep_allocated_ips(current, &mut object);
        }
        default_object(rt, &key.name, &mut object, self);
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let generation = if content_differs(current, &object) {
            generation + 1
        } else {
            generation
        };
        object["metadata"]["generation"] = json!(generation);
        set_resource_version(&mut object, self.rv);
        let mut unchanged = (**current).clone();
        set_resource_version(&mut unchanged, self.rv);
        // A write that changes nothing is not a write: same resourceVersion, no event.
        if unchanged == object {
            return Ok(current.clone());
        }
        if dry_run {
            return Ok(Arc::new(object));
        }
        Ok(self.commit(rt, key, object, Some(current.clone())))
    }

    /// PATCH an object (or its status). Returns the object and whether it was created, which
    /// only a server-side apply of a missing object does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        target: Target,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let key = key_of(rt, ns, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            if kind == PatchKind::Apply && target != Target::Status {
                let mut object = body.clone();
                if object_name(&object).is_none() {
                    object["metadata"]["name"] = json!(name);
                }
                return self
                    .create(rt, namespace, object, dry_run)
                    .map(|o| (o, true));
            }
            return Err(ApiError::not_found(rt, name));
        };
        let mut object = (*current).clone();
        let outcome = match kind {
            PatchKind::Merge | PatchKind::Apply => {
                patch::merge_patch(&mut object, body);
                Ok(())
            }
            PatchKind::Strategic => patch::strategic_merge_patch(&mut object, body, rt.kind),
            PatchKind::Json => patch::json_patch(&mut object, body),
        };
        outcome.map_err(|PatchError(message)| ApiError::invalid(rt, name, message))?;
        // A patch may carry a resourceVersion as a precondition (`kubectl label
        // --resource-version`, optimistic merge patches).
        let requested = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !requested.is_empty() && requested != rv_of(&current) {
            return Err(ApiError::conflict(rt, name));
        }
        check_type(rt, &mut object)?;
        if object_name(&object).as_deref() != Some(name) {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.name: Invalid value: the name cannot be changed by a patch",
            ));
        }
        let result = self.replace(rt, key, &current, object, target, dry_run)?;
        Ok((result, false))
    }

    /// DELETE an object.
    pub(crate) fn delete(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let key = key_of(rt, ns, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let meta = &current["metadata"];
        if let Some(uid) = options.uid.as_deref().filter(|u| !u.is_empty())
            && meta.get("uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if let Some(rv) = options
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty())
            && rv != rv_of(&current)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if dry_run {
            return Ok(current);
        }
        self.commit_delete(rt, &key, options.propagation)
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// DELETE a collection: every object the filter selects.
    pub(crate) fn delete_collection(
        &mut self,
        filter: &Filter,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Vec<Arc<Value>> {
        let rt = filter.resource;
        let victims = self.matching(filter);
        if dry_run {
            return victims;
        }
        victims
            .iter()
            .filter_map(|object| {
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.commit_delete(rt, &key_of(rt, ns, name), options.propagation)
            })
            .collect()
    }

    /// Creates or replaces an object as a test sets it up: by kind, namespace and name,
    /// without preconditions; status is stored as given.
    pub(crate) fn put(&mut self, mut object: Value) -> Result<Arc<Value>, ApiError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let rt = resources::of_object(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no resource served for apiVersion {api_version:?} kind {kind:?}"
            ))
        })?;
        let namespace = if rt.namespaced {
            let ns = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            object["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            None
        };
        let name = object_name(&object)
            .ok_or_else(|| ApiError::invalid(rt, "", "metadata.name: Required value"))?;
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("resourceVersion");
        }
        let key = key_of(rt, namespace.as_deref().unwrap_or(""), &name);
        match self.objects[rt.index].get(&key).cloned() {
            Some(current) => {
                if let Some(ns) = &namespace {
                    self.ensure_namespace(ns);
                }
                self.replace(rt, key, &current, object, Target::Everything, false)
            }
            None => self.create(rt, namespace.as_deref(), object, false),
        }
    }

    /// Deletes an object as a test does: no preconditions, cascading.
    pub(crate) fn remove(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        self.commit_delete(rt, &key_of(rt, namespace, name), Propagation::Cascade)
    }

    /// Every object of a resource type, across namespaces, in storage order.
    pub(crate) fn all(&self, rt: &ResourceType) -> Vec<Arc<Value>> {
        self.objects[rt.index].values().cloned().collect()
    }

    fn prepare_new(&mut self, rt: &ResourceType, object: &mut Value) {
        let name = object_name(object).unwrap_or_default();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(random_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if let Some(map) = meta.as_object_mut() {
            map.remove("resourceVersion");
            map.remove("managedFields");
            map.remove("deletionTimestamp");
        }
        default_object(rt, &name, object, self);
    }

    fn allocate_ip(&mut self, family: &str) -> String {
        if family == "IPv6" {
            let n = self.next_ipv6;
            self.next_ipv6 += 1;
            format!("fd00:10:96::{n:x}")
        } else {
            // 10.96.0.0/12, skipping .0 of each /24 for readability.
            let n = self.next_ipv4;
            self.next_ipv4 += 1;
            let host = n % 254 + 1;
            let net = n / 254;
            format!("10.{}.{}.{host}", 96 + (net >> 8) % 16, net & 0xff)
        }
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

/// Fills in `kind` and `apiVersion`, rejecting a body of another type.
fn check_type(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    let api_version = rt.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    Ok(())
}

/// The namespace an object is written to: the request's, which the body must agree with.
fn object_namespace(
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<String, ApiError> {
    if !rt.namespaced {
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("namespace");
        }
        return Ok(String::new());
    }
    let in_body = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let namespace = match (namespace, in_body) {
        (Some(path), Some(body)) if path != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(path), _) => path.to_owned(),
        (None, Some(body)) => body,
        (None, None) => return Err(ApiError::bad_request("a namespace is required")),
    };
    object["metadata"]["namespace"] = json!(namespace);
    Ok(namespace)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// The validation the consumers of this server can trip over; the real server checks much
/// more.
fn validate(rt: &ResourceType, name: &str, object: &Value) -> Result<(), ApiError> {
    if !valid_name(name) {
        return Err(ApiError::invalid(
            rt,
            name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if let Some(labels) = object.pointer("/metadata/labels") {
        let all_strings = labels
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !labels.is_null() && !all_strings {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.labels: Invalid value: label values must be strings",
            ));
        }
    }
    match rt.index {
        SERVICES => {
            let ports = object.pointer("/spec/ports").and_then(Value::as_array);
            for (i, port) in ports.into_iter().flatten().enumerate() {
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "spec.ports[{i}].port: Invalid value: {number}: must be between 1 and 65535, inclusive"
                        ),
                    ));
                }
            }
        }
        ENDPOINT_SLICES => {
            match object.get("addressType").and_then(Value::as_str) {
                Some("IPv4" | "IPv6" | "FQDN") => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "addressType: Unsupported value: \"{other}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
                        ),
                    ));
                }
                None => return Err(ApiError::invalid(rt, name, "addressType: Required value")),
            }
            let endpoints = object.get("endpoints").and_then(Value::as_array);
            if endpoints.is_some_and(|e| e.len() > 1000) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "endpoints: Too many: must have at most 1000 items",
                ));
            }
            for (i, endpoint) in endpoints.into_iter().flatten().enumerate() {
                let addresses = endpoint.get("addresses").and_then(Value::as_array);
                if addresses.is_none_or(|a| a.is_empty() || a.len() > 100) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "endpoints[{i}].addresses: Required value: must contain at least 1 address"
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The defaults the real server applies that consumers read back.
fn default_object(rt: &ResourceType, name: &str, object: &mut Value, store: &mut Store) {
    match rt.index {
        NAMESPACES => {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if object.pointer("/spec/finalizers").is_none() {
                object["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if object.pointer("/status/phase").is_none() {
                object["status"]["phase"] = json!("Active");
            }
        }
        SERVICES => default_service(object, store),
        ENDPOINT_SLICES => {
            if let Some(ports) = object.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    if port.get("protocol").is_none() {
                        port["protocol"] = json!("TCP");
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_service(object: &mut Value, store: &mut Store) {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    if spec.get("type").is_none() {
        spec["type"] = json!("ClusterIP");
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("protocol").is_none() {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none() {
                port["targetPort"] = port.get("port").cloned().unwrap_or(Value::Null);
            }
        }
    }
    if spec["type"] == "ExternalName" {
        return;
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    let mut families: Vec<String> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if families.is_empty() {
        families.push("IPv4".to_owned());
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if families.len() > 1 {
                "RequireDualStack".to_owned()
            } else {
                "SingleStack".to_owned()
            }
        });
    // This cluster is dual-stack: a Service that prefers or requires both families gets both.
    if policy != "SingleStack" && families.len() == 1 {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_owned());
    }
    spec["ipFamilyPolicy"] = json!(policy);
    spec["ipFamilies"] = json!(families);
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if cluster_ip == "None" {
        spec["clusterIPs"] = json!(["None"]);
    } else if spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(|ips| ips.len() < families.len())
    {
        let mut ips: Vec<String> = Vec::new();
        for (i, family) in families.iter().enumerate() {
            if i == 0 && !cluster_ip.is_empty() {
                ips.push(cluster_ip.clone());
            } else {
                ips.push(store.allocate_ip(family));
            }
        }
        spec["clusterIP"] = json!(ips[0]);
        spec["clusterIPs"] = json!(ips);
    }
    if object.get("status").is_none() {
        object["status"] = json!({"loadBalancer": {}});
    }
}

/// ClusterIPs are immutable; an update that omits them keeps the allocated ones.
fn keep_allocated_ips(current: &Value, object: &mut Value) {
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = object
            .pointer(&format!("/spec/{field}"))
            .is_none_or(|v| v.is_null() || v == "");
        if missing && let Some(value) = current.pointer(&format!("/spec/{field}")) {
            if !object.get("spec").is_some_and(Value::is_object) {
                object["spec"] = json!({});
            }
            object["spec"][field] = value.clone();
        }
    }
}

/// Whether anything besides metadata and status differs: what bumps `generation`.
fn content_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) != strip(b)
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

fn random_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    // Shape of a version 4 UUID; nothing reads the version bits.
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet the real server uses for `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Limits {
            history: 100,
            snapshots: 8,
            broadcast: 64,
        })
    }

    fn svc(ns: &str, name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80}]}})
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
        for secs in [0, 951_782_400, 1_735_689_599, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn create_defaults_and_versions() {
        let mut s = store();
        let before = s.resource_version();
        let created = s.put(svc("shop", "web", json!({}))).unwrap();
        assert!(s.resource_version() > before);
        assert_eq!(created["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(created["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(created["spec"]["ipFamilies"], json!(["IPv4"]));
        assert!(
            created["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96.")
        );
        assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
        // The namespace came into existence.
        assert!(s.get(&RESOURCES[NAMESPACES], "", "shop").is_some());
        // Same content again: no write.
        let rv = s.resource_version();
        let again = s.put(svc("shop", "web", json!({}))).unwrap();
        assert_eq!(s.resource_version(), rv);
        assert_eq!(again["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(again["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    }

    #[test]
    fn update_conflicts_on_stale_version() {
        let mut s = store();
        let rt = &RESOURCES[SERVICES];
        let created = s.put(svc("a", "web", json!({}))).unwrap();
        let mut stale = (*created).clone();
        s.put(svc("a", "web", json!({"x": "1"}))).unwrap();
        stale["metadata"]["labels"] = json!({"y": "2"});
        let err = s
            .update(rt, Some("a"), "web", stale, Target::Main, false)
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        let err = s
            .create(rt, Some("a"), svc("a", "web", json!({})), false)
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    }

    #[test]
    fn pagination_is_consistent_and_expires_with_compaction() {
        let mut s = store();
        for i in 0..5 {
            s.put(svc("a", &format!("s{i}"), json!({}))).unwrap();
        }
        let query = |token: Option<String>| ListQuery {
            filter: Filter::all(&RESOURCES[SERVICES]),
            limit: Some(2),
            continue_token: token,
        };
        let first = s.list(&query(None)).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(3));
        // A write between pages does not show up in later pages.
        s.put(svc("a", "s9", json!({}))).unwrap();
        let second = s.list(&query(first.continue_token.clone())).unwrap();
        let third = s.list(&query(second.continue_token.clone())).unwrap();
        assert_eq!(third.items.len(), 1);
        assert!(third.continue_token.is_none());
        assert_eq!(third.rv, first.rv);
        s.compact();
        let err = s.list(&query(second.continue_token)).unwrap_err();
        assert_eq!((err.code, err.reason), (410, "Expired"));
    }

    #[test]
    fn history_bound_compacts() {
        let mut s = Store::new(Limits {
            history: 3,
            snapshots: 8,
            broadcast: 64,
        });
        let start = s.resource_version();
        for i in 0..5 {
            s.put(svc("default", &format!("s{i}"), json!({}))).unwrap();
        }
        let filter = Filter::all(&RESOURCES[SERVICES]);
        assert!(matches!(
            s.start_watch(&filter, Some(start)).0,
            WatchStart::Expired { .. }
        ));
        match s.start_watch(&filter, Some(s.resource_version() - 2)).0 {
            WatchStart::Replay(changes) => assert_eq!(changes.len(), 2),
            _ => panic!("expected a replay"),
        }
    }

    #[test]
    fn deleting_an_owner_deletes_what_it_owns() {
        let mut s = store();
        let web = s.put(svc("a", "web", json!({}))).unwrap();
        let uid = web["metadata"]["uid"].clone();
        s.put(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "a", "name": "web-x", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": uid}]},
            "addressType": "IPv4", "endpoints": []}),
        )
        .unwrap();
        s.put(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "a", "name": "manual"}, "addressType": "IPv4", "endpoints": []}))
            .unwrap();
        s.remove(&RESOURCES[SERVICES], "a", "web").unwrap();
        let slices = s.all(&RESOURCES[ENDPOINT_SLICES]);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["metadata"]["name"], "manual");
    }

    #[test]
    fn selector_filtering_turns_unmatching_into_deleted() {
        let mut s = store();
        let filter = Filter {
            labels: LabelSelector::parse("export=yes").unwrap(),
            ..Filter::all(&RESOURCES[SERVICES])
        };
        let (_, _, mut rx) = s.start_watch(&filter, None);
        s.put(svc("a", "web", json!({"export": "yes"}))).unwrap();
        s.put(svc("a", "web", json!({"export": "no"}))).unwrap();
        s.put(svc("a", "web", json!({"export": "yes"}))).unwrap();
        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|c| filter.event(&c).map(|(t, _)| t))
            .collect();
        assert_eq!(kinds, ["ADDED", "DELETED", "ADDED"]);
    }
}
