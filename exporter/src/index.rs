//! The in-memory index: Services and EndpointSlices in, [`Backend`]s out.
//!
//! Watch events are reduced to the few facts backends depend on ([`ServiceFacts`],
//! [`SliceFacts`]), so unrelated changes (status, managed fields, labels) do not count as changes
//! and the index stays small at 10,000 Services and 100,000 endpoints. Each change marks only
//! the Service it belongs to as dirty; [`Index::refresh`] recomputes those Services alone.
//! [`Published`] then names, checks and renders only those Services (and the few whose names a
//! collision moves), keeping one rendered block per Service; [`Index::backends`] names
//! everything from scratch, the reference [`Published`] is tested against.
//!
//! Nothing here talks to a server: the watch shell feeds it events and logs the [`Warning`]s it
//! returns.
//!
//! The rules, in the order they apply to each Service port:
//! - ports listed in the `exclude-ports` annotation are skipped; SCTP ports are skipped with a
//!   warning; UDP ports become UDP backends;
//! - TCP ports listed in `tcp-ports`, or whose `appProtocol` is `tcp`, become TCP backends;
//! - every other port is an HTTP backend, with the scheme from `scheme.<port>`, then `scheme`,
//!   then `appProtocol`, then the port's name, else `http`;
//! - a Service port matches the EndpointSlice port of the same name (an unnamed Service port
//!   matches the unnamed slice port); slices join their Service through the
//!   `kubernetes.io/service-name` label;
//! - an endpoint is a server when it is ready (unset counts as ready) and not terminating; its
//!   first address is used, as kube-proxy does; duplicates across slices collapse; IPv4 and IPv6
//!   slices both count, FQDN slices are skipped with a warning;
//! - only when a Service port has no such server at all, its terminating endpoints that are
//!   still `serving` are published instead, as kube-proxy falls back to them, so the last pods of
//!   a rollout keep draining connections instead of the Service going dark.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ksd_shared::backend::{Backend, Origin};
use ksd_shared::names::{NameCollision, NameTemplate, assign_names};

mod compute;
mod facts;
mod published;

use self::compute::{Computed, compute};
pub use self::compute::{PortBackend, Warning, scheme_from_app_protocol, scheme_from_port_name};
pub use self::facts::{
    SERVICE_NAME_LABEL, ServiceFacts, ServiceKey, SliceFacts, SliceKey, service_facts, slice_facts,
};
pub use self::published::Published;

/// Services and their slices, with each exported Service's backends computed on demand.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<ServiceKey, ServiceFacts>,
    slices: HashMap<SliceKey, SliceFacts>,
    /// Slice names by the Service they name (whether or not that Service is exported).
    slices_of: HashMap<ServiceKey, BTreeSet<String>>,
    computed: BTreeMap<ServiceKey, Computed>,
    dirty: HashSet<ServiceKey>,
    /// Services recomputed (or removed) by [`Index::refresh`] since the last
    /// [`Index::take_recomputed`].
    recomputed: HashSet<ServiceKey>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Number of exported Services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Whether some Service changed since the last [`Index::refresh`].
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Adds or updates an exported Service. Returns whether anything backends depend on changed.
    pub fn apply_service(&mut self, key: ServiceKey, facts: ServiceFacts) -> bool {
        if self.services.get(&key) == Some(&facts) {
            return false;
        }
        self.services.insert(key.clone(), facts);
        self.dirty.insert(key);
        true
    }

    /// Removes a Service (deleted, or no longer selected). Its slices are kept: they still
    /// exist and count again if the Service comes back.
    pub fn delete_service(&mut self, key: &ServiceKey) -> bool {
        if self.services.remove(key).is_none() {
            return false;
        }
        self.dirty.insert(key.clone());
        true
    }

    /// Adds or updates a slice; `None` facts (a slice naming no Service) removes it. Returns
    /// whether an exported Service is affected.
    pub fn apply_slice(&mut self, key: SliceKey, facts: Option<SliceFacts>) -> bool {
        let Some(facts) = facts else {
            return self.delete_slice(&key);
        };
        if self.slices.get(&key) == Some(&facts) {
            return false;
        }
        let owner = ServiceKey::new(key.namespace.clone(), facts.service.clone());
        let mut affected = self.touch(&owner);
        if let Some(old) = self.slices.insert(key.clone(), facts) {
            let old_owner = ServiceKey::new(key.namespace.clone(), old.service);
            if old_owner != owner {
                self.unlink(&old_owner, &key.name);
                affected |= self.touch(&old_owner);
            }
        }
        self.slices_of
            .entry(owner)
            .or_default()
            .insert(key.name.clone());
        affected
    }

    /// Removes a slice. Returns whether an exported Service is affected.
    pub fn delete_slice(&mut self, key: &SliceKey) -> bool {
        let Some(old) = self.slices.remove(key) else {
            return false;
        };
        let owner = ServiceKey::new(key.namespace.clone(), old.service);
        self.unlink(&owner, &key.name);
        self.touch(&owner)
    }

    /// Replaces every Service in `namespace` (all namespaces when `None`) with `items`: the
    /// outcome of a complete (re-)list. Returns whether anything changed.
    pub fn replace_services(
        &mut self,
        namespace: Option<&str>,
        items: Vec<(ServiceKey, ServiceFacts)>,
    ) -> bool {
        let listed: HashSet<&ServiceKey> = items.iter().map(|(k, _)| k).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| in_scope(namespace, &k.namespace) && !listed.contains(k))
            .cloned()
            .collect();
        let mut changed = false;
        for key in gone {
            changed |= self.delete_service(&key);
        }
        for (key, facts) in items {
            changed |= self.apply_service(key, facts);
        }
        changed
    }

    /// Replaces every slice in `namespace` (all namespaces when `None`) with `items`: the
    /// outcome of a complete (re-)list. Returns whether an exported Service is affected.
    pub fn replace_slices(
        &mut self,
        namespace: Option<&str>,
        items: Vec<(SliceKey, Option<SliceFacts>)>,
    ) -> bool {
        let listed: HashSet<&SliceKey> = items
            .iter()
            .filter(|(_, facts)| facts.is_some())
            .map(|(k, _)| k)
            .collect();
        let gone: Vec<SliceKey> = self
            .slices
            .keys()
            .filter(|k| in_scope(namespace, &k.namespace) && !listed.contains(k))
            .cloned()
            .collect();
        let mut changed = false;
        for key in gone {
            changed |= self.delete_slice(&key);
        }
        for (key, facts) in items {
            changed |= self.apply_slice(key, facts);
        }
        changed
    }

    /// Recomputes the Services that changed since the last call. Returns the warnings that are
    /// new for those Services, so each is logged once per change rather than on every event.
    pub fn refresh(&mut self) -> Vec<Warning> {
        let mut fresh = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            self.recomputed.insert(key.clone());
            let Some(service) = self.services.get(&key) else {
                self.computed.remove(&key);
                continue;
            };
            let slices: Vec<(&str, &SliceFacts)> = self
                .slices_of
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|name| {
                    self.slices
                        .get(&SliceKey::new(key.namespace.clone(), name.clone()))
                        .map(|facts| (name.as_str(), facts))
                })
                .collect();
            let computed = compute(&key, service, &slices);
            let previous = self.computed.get(&key).map(|c| &c.warnings);
            fresh.extend(
                computed
                    .warnings
                    .iter()
                    .filter(|w| previous.is_none_or(|p| !p.contains(w)))
                    .cloned(),
            );
            self.computed.insert(key, computed);
        }
        fresh.sort();
        fresh
    }

    /// The Services [`Index::refresh`] recomputed or removed since the last call, in order:
    /// what a [`Published`] state must bring up to date.
    pub fn take_recomputed(&mut self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = std::mem::take(&mut self.recomputed).into_iter().collect();
        keys.sort();
        keys
    }

    /// The published ports of `key` as last refreshed (none for a Service not in the index).
    pub fn ports(&self, key: &ServiceKey) -> &[PortBackend] {
        self.computed.get(key).map_or(&[], |c| c.ports.as_slice())
    }

    /// Every backend, named with `template` (collision-free) and sorted by name, with the name
    /// collisions that had to be resolved. Call [`Index::refresh`] first.
    pub fn backends(&self, template: &NameTemplate) -> (Vec<Backend>, Vec<NameCollision>) {
        let ports: Vec<&PortBackend> = self.computed.values().flat_map(|c| &c.ports).collect();
        let origins: Vec<Origin> = ports.iter().map(|p| p.origin.clone()).collect();
        let (names, collisions) = assign_names(template, &origins);
        let mut backends: Vec<Backend> = ports
            .into_iter()
            .zip(names)
            .map(|(port, name)| Backend {
                name,
                origin: port.origin.clone(),
                protocol: port.protocol,
                scheme: port.scheme,
                options: port.options.clone(),
                targets: port.targets.clone(),
            })
            .collect();
        backends.sort();
        (backends, collisions)
    }

    /// Marks `key` dirty when it is exported; returns whether it is.
    fn touch(&mut self, key: &ServiceKey) -> bool {
        if self.services.contains_key(key) {
            self.dirty.insert(key.clone());
            true
        } else {
            false
        }
    }

    fn unlink(&mut self, owner: &ServiceKey, slice: &str) {
        if let Some(names) = self.slices_of.get_mut(owner) {
            names.remove(slice);
            if names.is_empty() {
                self.slices_of.remove(owner);
            }
        }
    }
}

fn in_scope(scope: Option<&str>, namespace: &str) -> bool {
    scope.is_none_or(|s| s == namespace)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
