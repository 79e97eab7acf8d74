//! The in-memory index: Services and EndpointSlices in, [`Backend`]s out.
//!
//! Watch events are reduced to the few facts backends depend on ([`ServiceFacts`],
//! [`SliceFacts`]), so unrelated changes (status, managed fields, labels) do not count as changes
//! and the index stays small at 10,000 Services and 100,000 endpoints. Each change marks only
//! the Service it belongs to as dirty; [`Index::refresh`] recomputes those Services alone, and
//! [`Index::backends`] names and assembles everything for a publish.
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
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_shared::backend::{Backend, HttpOptions, Origin, Protocol, Scheme, Target};
use ksd_shared::names::{NameCollision, NameTemplate, assign_names};

use crate::annotations::{self, PREFIX, ServiceOptions};

/// The label through which an EndpointSlice names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An EndpointSlice by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SliceKey {
    pub namespace: String,
    pub name: String,
}

impl SliceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> SliceKey {
        SliceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for SliceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the index keeps of a Service: its ports and the exporter's annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    ports: Vec<PortFacts>,
    annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PortFacts {
    name: Option<String>,
    port: i32,
    /// `TCP`, `UDP`, `SCTP` (Kubernetes' default is TCP).
    protocol: String,
    app_protocol: Option<String>,
}

impl PortFacts {
    /// The port as the name template and annotations refer to it: its name, else its number.
    fn id(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.port.to_string(),
        }
    }

    fn is_named(&self, reference: &str) -> bool {
        self.name.as_deref() == Some(reference) || self.port.to_string() == reference
    }
}

/// Reduces a Service to the facts the index keeps. `None` when it lacks a name or namespace
/// (never the case for objects from the API server).
pub fn service_facts(service: &Service) -> Option<(ServiceKey, ServiceFacts)> {
    let namespace = service.metadata.namespace.clone()?;
    let name = service.metadata.name.clone()?;
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| PortFacts {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    app_protocol: p.app_protocol.clone().filter(|a| !a.is_empty()),
                })
                .collect()
        })
        .unwrap_or_default();
    let annotations = service
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some((
        ServiceKey::new(namespace, name),
        ServiceFacts { ports, annotations },
    ))
}

/// What the index keeps of an EndpointSlice: its Service, ports and publishable addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceFacts {
    service: String,
    address_type: String,
    /// (name, "" when unnamed; port number).
    ports: Vec<(String, Option<i32>)>,
    /// First address of every ready, non-terminating endpoint, in slice order.
    addresses: Vec<IpAddr>,
    /// First address of every terminating endpoint that is still serving: published only
    /// when the Service port has no ready endpoint at all.
    draining: Vec<IpAddr>,
    /// Addresses of publishable endpoints that are not IP addresses.
    invalid: Vec<String>,
}

/// Reduces an EndpointSlice to the facts the index keeps. `None` when it lacks a name or
/// namespace; `Some((key, None))` when it names no Service (it then contributes nothing).
pub fn slice_facts(slice: &EndpointSlice) -> Option<(SliceKey, Option<SliceFacts>)> {
    let namespace = slice.metadata.namespace.clone()?;
    let name = slice.metadata.name.clone()?;
    let key = SliceKey::new(namespace, name);
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
    else {
        return Some((key, None));
    };
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    let ip_slice = matches!(slice.address_type.as_str(), "IPv4" | "IPv6");
    let mut addresses = Vec::new();
    let mut draining = Vec::new();
    let mut invalid = Vec::new();
    for endpoint in &slice.endpoints {
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        // `serving` is `ready` regardless of termination; unset means "same as ready".
        let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let list = match (ready && !terminating, terminating && serving) {
            (true, _) => &mut addresses,
            (false, true) => &mut draining,
            (false, false) => continue,
        };
        if !ip_slice {
            continue;
        }
        // Addresses of one endpoint are fungible; consumers use the first (kubernetes#106267).
        let Some(address) = endpoint.addresses.first() else {
            continue;
        };
        match address.parse::<IpAddr>() {
            Ok(ip) => list.push(ip),
            Err(_) => invalid.push(address.clone()),
        }
    }
    Some((
        key,
        Some(SliceFacts {
            service: service.clone(),
            address_type: slice.address_type.clone(),
            ports,
            addresses,
            draining,
            invalid,
        }),
    ))
}

/// Something in a Service or EndpointSlice the exporter had to ignore.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `Service` or `EndpointSlice`.
    pub kind: &'static str,
    /// `namespace/name`.
    pub object: String,
    /// The annotation at fault, when one is.
    pub annotation: Option<String>,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.annotation {
            Some(annotation) => write!(
                f,
                "{} {}: annotation {annotation} ignored: {}",
                self.kind, self.object, self.reason
            ),
            None => write!(f, "{} {}: {}", self.kind, self.object, self.reason),
        }
    }
}

/// One published port of a Service, before it gets its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBackend {
    pub origin: Origin,
    pub protocol: Protocol,
    pub scheme: Scheme,
    pub options: HttpOptions,
    pub targets: BTreeSet<Target>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Computed {
    ports: Vec<PortBackend>,
    warnings: Vec<Warning>,
}

/// Services and their slices, with each exported Service's backends computed on demand.
#[derive(Debug, Default)]
pub struct Index {
    services: HashMap<ServiceKey, ServiceFacts>,
    slices: HashMap<SliceKey, SliceFacts>,
    /// Slice names by the Service they name (whether or not that Service is exported).
    slices_of: HashMap<ServiceKey, BTreeSet<String>>,
    computed: BTreeMap<ServiceKey, Computed>,
    dirty: HashSet<ServiceKey>,
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

/// The backends of one Service from its facts and its slices' facts (by slice name).
fn compute(key: &ServiceKey, service: &ServiceFacts, slices: &[(&str, &SliceFacts)]) -> Computed {
    let object = key.to_string();
    let mut warnings = Vec::new();
    let mut warn = |annotation: Option<String>, reason: String| {
        warnings.push(Warning {
            kind: "Service",
            object: object.clone(),
            annotation,
            reason,
        })
    };

    let (options, problems) = annotations::parse(
        service
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    for problem in problems {
        warn(Some(problem.annotation), problem.reason);
    }
    check_port_references(service, &options, &mut warn);

    let mut ports = Vec::new();
    for port in &service.ports {
        let id = port.id();
        if options.exclude_ports.iter().any(|r| port.is_named(r)) {
            continue;
        }
        let marked_tcp = options.tcp_ports.iter().any(|r| port.is_named(r));
        let port_scheme = options
            .port_schemes
            .iter()
            .find(|(r, _)| port.is_named(r))
            .map(|(_, s)| *s);
        let protocol = match port.protocol.as_str() {
            "UDP" => {
                if marked_tcp {
                    warn(
                        Some(format!("{PREFIX}tcp-ports")),
                        format!("port {id} is a UDP port; it stays UDP"),
                    );
                }
                Protocol::Udp
            }
            "TCP" => {
                if marked_tcp || port.app_protocol.as_deref() == Some("tcp") {
                    Protocol::Tcp
                } else {
                    Protocol::Http
                }
            }
            "SCTP" => {
                warn(
                    None,
                    format!("port {id} is SCTP, which Traefik cannot balance; skipped"),
                );
                continue;
            }
            other => {
                warn(
                    None,
                    format!("port {id} has unknown protocol {other:?}; skipped"),
                );
                continue;
            }
        };
        if protocol != Protocol::Http && port_scheme.is_some() {
            warn(
                Some(format!("{PREFIX}scheme.{id}")),
                format!("port {id} is not an HTTP port"),
            );
        }
        let scheme = if protocol == Protocol::Http {
            port_scheme
                .or(options.scheme)
                .or_else(|| {
                    let app = port.app_protocol.as_deref()?;
                    let scheme = scheme_from_app_protocol(app);
                    if scheme.is_none() {
                        warn(
                            None,
                            format!(
                                "port {id} has appProtocol {app:?}, which is not an HTTP \
                                 scheme the exporter knows; using the port name"
                            ),
                        );
                    }
                    scheme
                })
                .or_else(|| port.name.as_deref().and_then(scheme_from_port_name))
                .unwrap_or(Scheme::Http)
        } else {
            Scheme::Http
        };
        ports.push(PortBackend {
            origin: Origin {
                namespace: key.namespace.clone(),
                service: key.name.clone(),
                port: id,
            },
            protocol,
            scheme,
            options: if protocol == Protocol::Http {
                options.http.clone()
            } else {
                HttpOptions::default()
            },
            targets: targets(port, slices),
        });
    }

    if !options.http.is_empty() && !ports.iter().any(|p| p.protocol == Protocol::Http) {
        warn(
            None,
            "load-balancer annotations apply to HTTP ports only, and the Service publishes none"
                .to_owned(),
        );
    }

    for (name, slice) in slices {
        let slice_warning = |reason: String| Warning {
            kind: "EndpointSlice",
            object: format!("{}/{name}", key.namespace),
            annotation: None,
            reason,
        };
        match slice.address_type.as_str() {
            "IPv4" | "IPv6" => {}
            other => warnings.push(slice_warning(format!(
                "addressType {other} is not supported (IPv4 and IPv6 are); skipped"
            ))),
        }
        if !slice.invalid.is_empty() {
            let shown: Vec<&str> = slice.invalid.iter().take(3).map(String::as_str).collect();
            warnings.push(slice_warning(format!(
                "{} endpoint address(es) are not IP addresses and were skipped: {}",
                slice.invalid.len(),
                shown.join(", ")
            )));
        }
    }

    warnings.sort();
    warnings.dedup();
    Computed { ports, warnings }
}

/// Warns about annotations that name ports the Service does not have (typos, renamed ports).
fn check_port_references(
    service: &ServiceFacts,
    options: &ServiceOptions,
    warn: &mut impl FnMut(Option<String>, String),
) {
    let exists = |r: &str| service.ports.iter().any(|p| p.is_named(r));
    for (annotation, references) in [
        ("tcp-ports", &options.tcp_ports),
        ("exclude-ports", &options.exclude_ports),
    ] {
        for reference in references.iter().filter(|r| !exists(r)) {
            warn(
                Some(format!("{PREFIX}{annotation}")),
                format!("the Service has no port {reference}"),
            );
        }
    }
    for reference in options.port_schemes.keys().filter(|r| !exists(r)) {
        warn(
            Some(format!("{PREFIX}scheme.{reference}")),
            format!("the Service has no port {reference}"),
        );
    }
}

/// The servers of one Service port: every ready address of every slice, at the slice port of
/// the same name; when there is none, the terminating addresses that are still serving.
fn targets(port: &PortFacts, slices: &[(&str, &SliceFacts)]) -> BTreeSet<Target> {
    let ready = targets_from(port, slices, |slice| &slice.addresses);
    if ready.is_empty() {
        targets_from(port, slices, |slice| &slice.draining)
    } else {
        ready
    }
}

fn targets_from(
    port: &PortFacts,
    slices: &[(&str, &SliceFacts)],
    addresses: impl Fn(&SliceFacts) -> &Vec<IpAddr>,
) -> BTreeSet<Target> {
    let wanted = port.name.as_deref().unwrap_or("");
    let mut targets = BTreeSet::new();
    for (_, slice) in slices {
        let Some(number) = slice
            .ports
            .iter()
            .find(|(name, _)| name == wanted)
            .and_then(|(_, number)| *number)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        else {
            continue;
        };
        targets.extend(addresses(slice).iter().map(|ip| Target {
            ip: *ip,
            port: number,
        }));
    }
    targets
}

/// The scheme an `appProtocol` implies; `None` for values that say nothing about HTTP.
pub fn scheme_from_app_protocol(app_protocol: &str) -> Option<Scheme> {
    match app_protocol.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" => Some(Scheme::Http),
        "https" | "kubernetes.io/wss" => Some(Scheme::Https),
        "h2c" | "kubernetes.io/h2c" | "grpc" => Some(Scheme::H2c),
        _ => None,
    }
}

/// The scheme a port name implies by convention (`https`, `https-admin`, `grpc-api`, ...).
pub fn scheme_from_port_name(name: &str) -> Option<Scheme> {
    let name = name.to_ascii_lowercase();
    let is = |prefix: &str| {
        name == prefix
            || name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
    };
    if is("https") {
        Some(Scheme::Https)
    } else if is("h2c") || is("grpc") {
        Some(Scheme::H2c)
    } else if is("http") {
        Some(Scheme::Http)
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Chainable builders for the objects the index reads.

    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::SERVICE_NAME_LABEL;

    pub struct ServiceBuilder(Service);

    pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
        ServiceBuilder(Service {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec::default()),
            status: None,
        })
    }

    impl ServiceBuilder {
        fn push(mut self, port: ServicePort) -> Self {
            if let Some(spec) = self.0.spec.as_mut() {
                spec.ports.get_or_insert_with(Vec::new).push(port);
            }
            self
        }

        pub fn port(self, name: &str, port: i32) -> Self {
            self.push(ServicePort {
                name: Some(name.to_owned()),
                port,
                ..ServicePort::default()
            })
        }

        pub fn unnamed_port(self, port: i32) -> Self {
            self.push(ServicePort {
                port,
                ..ServicePort::default()
            })
        }

        pub fn port_proto(self, name: &str, port: i32, protocol: &str) -> Self {
            self.push(ServicePort {
                name: Some(name.to_owned()),
                port,
                protocol: Some(protocol.to_owned()),
                ..ServicePort::default()
            })
        }

        pub fn app_port(self, name: &str, port: i32, app_protocol: &str) -> Self {
            self.push(ServicePort {
                name: Some(name.to_owned()),
                port,
                app_protocol: Some(app_protocol.to_owned()),
                ..ServicePort::default()
            })
        }

        pub fn annotation(mut self, key: &str, value: &str) -> Self {
            self.0
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(key.to_owned(), value.to_owned());
            self
        }

        pub fn build(self) -> Service {
            self.0
        }
    }

    pub struct SliceBuilder(EndpointSlice);

    /// A slice of `service` in `namespace`, IPv4 unless [`SliceBuilder::ipv6`] is called.
    pub fn slice(namespace: &str, name: &str, service: &str) -> SliceBuilder {
        SliceBuilder(EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints: Vec::new(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_owned(),
                    service.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ports: None,
        })
    }

    impl SliceBuilder {
        pub fn ipv6(mut self) -> Self {
            self.0.address_type = "IPv6".to_owned();
            self
        }

        pub fn address_type(mut self, address_type: &str) -> Self {
            self.0.address_type = address_type.to_owned();
            self
        }

        pub fn without_service_label(mut self) -> Self {
            self.0.metadata.labels = None;
            self
        }

        /// A named slice port; `""` for the unnamed one.
        pub fn port(mut self, name: &str, port: i32) -> Self {
            self.0
                .ports
                .get_or_insert_with(Vec::new)
                .push(EndpointPort {
                    name: Some(name.to_owned()),
                    port: Some(port),
                    ..EndpointPort::default()
                });
            self
        }

        pub fn port_without_number(mut self, name: &str) -> Self {
            self.0
                .ports
                .get_or_insert_with(Vec::new)
                .push(EndpointPort {
                    name: Some(name.to_owned()),
                    port: None,
                    ..EndpointPort::default()
                });
            self
        }

        fn endpoint(
            mut self,
            address: &str,
            ready: Option<bool>,
            terminating: Option<bool>,
        ) -> Self {
            self.0.endpoints.push(Endpoint {
                addresses: vec![address.to_owned()],
                conditions: Some(EndpointConditions {
                    ready,
                    serving: ready,
                    terminating,
                }),
                ..Endpoint::default()
            });
            self
        }

        pub fn ready(self, address: &str) -> Self {
            self.endpoint(address, Some(true), Some(false))
        }

        pub fn not_ready(self, address: &str) -> Self {
            self.endpoint(address, Some(false), Some(false))
        }

        /// Terminating endpoints are not ready (except with publishNotReadyAddresses).
        pub fn terminating(self, address: &str) -> Self {
            self.endpoint(address, Some(false), Some(true))
        }

        pub fn terminating_but_ready(self, address: &str) -> Self {
            self.endpoint(address, Some(true), Some(true))
        }

        /// Terminating, not ready, but still serving: draining its connections.
        pub fn terminating_serving(mut self, address: &str) -> Self {
            self.0.endpoints.push(Endpoint {
                addresses: vec![address.to_owned()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    serving: Some(true),
                    terminating: Some(true),
                }),
                ..Endpoint::default()
            });
            self
        }

        /// No conditions at all: counts as ready.
        pub fn bare(mut self, address: &str) -> Self {
            self.0.endpoints.push(Endpoint {
                addresses: vec![address.to_owned()],
                conditions: None,
                ..Endpoint::default()
            });
            self
        }

        pub fn endpoint_with_addresses(mut self, addresses: &[&str]) -> Self {
            self.0.endpoints.push(Endpoint {
                addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
                conditions: None,
                ..Endpoint::default()
            });
            self
        }

        pub fn build(self) -> EndpointSlice {
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{service, slice};
    use super::*;
    use ksd_shared::backend::{HealthCheck, StickyCookie};

    fn with_service(index: &mut Index, svc: Service) -> bool {
        let (key, facts) = service_facts(&svc).unwrap();
        index.apply_service(key, facts)
    }

    fn with_slice(index: &mut Index, s: EndpointSlice) -> bool {
        let (key, facts) = slice_facts(&s).unwrap();
        index.apply_slice(key, facts)
    }

    fn build(index: &mut Index) -> Vec<Backend> {
        index.refresh();
        index.backends(&NameTemplate::default()).0
    }

    fn backend<'a>(backends: &'a [Backend], name: &str) -> &'a Backend {
        backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name} in {backends:#?}"))
    }

    fn addrs(b: &Backend) -> Vec<String> {
        b.targets.iter().map(Target::address).collect()
    }

    fn one_service(svc: Service, slices: Vec<EndpointSlice>) -> (Vec<Backend>, Vec<Warning>) {
        let mut index = Index::new();
        with_service(&mut index, svc);
        for s in slices {
            with_slice(&mut index, s);
        }
        let warnings = index.refresh();
        (index.backends(&NameTemplate::default()).0, warnings)
    }

    #[test]
    fn one_port_one_backend_named_by_namespace_service_port() {
        let (backends, warnings) = one_service(
            service("default", "web").port("http", 80).build(),
            vec![
                slice("default", "web-abc", "web")
                    .port("http", 8080)
                    .ready("10.0.0.2")
                    .ready("10.0.0.1")
                    .build(),
            ],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(backends.len(), 1);
        let web = &backends[0];
        assert_eq!(web.name, "default-web-http");
        assert_eq!(web.protocol, Protocol::Http);
        assert_eq!(web.scheme, Scheme::Http);
        assert_eq!(addrs(web), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!(
            web.origin,
            Origin {
                namespace: "default".into(),
                service: "web".into(),
                port: "http".into()
            }
        );
    }

    #[test]
    fn readiness_rules() {
        let (backends, _) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .ready("10.0.0.1")
                    .not_ready("10.0.0.2")
                    .terminating("10.0.0.3")
                    .terminating_but_ready("10.0.0.4")
                    .bare("10.0.0.5")
                    .build(),
            ],
        );
        assert_eq!(
            addrs(&backends[0]),
            ["10.0.0.1:80", "10.0.0.5:80"],
            "ready and unset publish; not ready and terminating do not"
        );
    }

    #[test]
    fn serving_terminating_endpoints_only_when_no_endpoint_is_ready() {
        let with_ready = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .ready("10.0.0.1")
                    .terminating_serving("10.0.0.2")
                    .build(),
            ],
        )
        .0;
        assert_eq!(addrs(&with_ready[0]), ["10.0.0.1:80"]);

        let without_ready = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .not_ready("10.0.0.1")
                    .terminating_serving("10.0.0.2")
                    .terminating("10.0.0.3")
                    .build(),
                slice("ns", "web-2", "web")
                    .port("http", 80)
                    .terminating_serving("10.0.0.4")
                    .build(),
            ],
        )
        .0;
        assert_eq!(
            addrs(&without_ready[0]),
            ["10.0.0.2:80", "10.0.0.4:80"],
            "with no ready endpoint, the serving terminating ones drain"
        );
    }

    #[test]
    fn no_ready_endpoint_still_publishes_the_service_empty() {
        let (backends, _) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .terminating("10.0.0.3")
                    .not_ready("10.0.0.2")
                    .build(),
            ],
        );
        assert_eq!(backends.len(), 1);
        assert!(backends[0].targets.is_empty());

        let (backends, _) = one_service(service("ns", "lonely").port("http", 80).build(), vec![]);
        assert_eq!(backends.len(), 1);
        assert!(backends[0].targets.is_empty());
    }

    #[test]
    fn only_the_first_address_of_an_endpoint_counts() {
        let (backends, _) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .endpoint_with_addresses(&["10.0.0.1", "10.0.0.9"])
                    .build(),
            ],
        );
        assert_eq!(addrs(&backends[0]), ["10.0.0.1:80"]);
    }

    #[test]
    fn duplicates_across_slices_collapse() {
        let (backends, _) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("http", 80)
                    .ready("10.0.0.1")
                    .build(),
                slice("ns", "web-2", "web")
                    .port("http", 80)
                    .ready("10.0.0.1")
                    .ready("10.0.0.2")
                    .build(),
            ],
        );
        assert_eq!(addrs(&backends[0]), ["10.0.0.1:80", "10.0.0.2:80"]);
    }

    #[test]
    fn dual_stack_publishes_both_families_bracketing_ipv6() {
        let (backends, warnings) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-v4", "web")
                    .port("http", 8080)
                    .ready("10.0.0.1")
                    .build(),
                slice("ns", "web-v6", "web")
                    .ipv6()
                    .port("http", 8080)
                    .ready("fd00::1")
                    .build(),
            ],
        );
        assert!(warnings.is_empty());
        let web = &backends[0];
        assert_eq!(addrs(web), ["10.0.0.1:8080", "[fd00::1]:8080"]);
        let urls: Vec<String> = web.targets.iter().map(|t| t.url(web.scheme)).collect();
        assert_eq!(urls, ["http://10.0.0.1:8080", "http://[fd00::1]:8080"]);
    }

    #[test]
    fn multi_port_services_match_slice_ports_by_name() {
        let (backends, _) = one_service(
            service("ns", "app")
                .port("http", 80)
                .port("admin", 9000)
                .port("missing", 7000)
                .build(),
            vec![
                slice("ns", "app-1", "app")
                    .port("admin", 9090)
                    .port("http", 8080)
                    .ready("10.0.0.1")
                    .build(),
            ],
        );
        assert_eq!(backends.len(), 3);
        assert_eq!(addrs(backend(&backends, "ns-app-http")), ["10.0.0.1:8080"]);
        assert_eq!(addrs(backend(&backends, "ns-app-admin")), ["10.0.0.1:9090"]);
        assert!(backend(&backends, "ns-app-missing").targets.is_empty());
    }

    #[test]
    fn an_unnamed_port_matches_the_unnamed_slice_port_and_is_named_by_number() {
        let (backends, _) = one_service(
            service("ns", "web").unnamed_port(80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port("", 8080)
                    .ready("10.0.0.1")
                    .build(),
            ],
        );
        assert_eq!(backends[0].name, "ns-web-80");
        assert_eq!(addrs(&backends[0]), ["10.0.0.1:8080"]);
    }

    #[test]
    fn slice_ports_without_a_number_contribute_nothing() {
        let (backends, _) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-1", "web")
                    .port_without_number("http")
                    .ready("10.0.0.1")
                    .build(),
            ],
        );
        assert!(backends[0].targets.is_empty());
    }

    #[test]
    fn schemes_from_app_protocol() {
        for (app, scheme) in [
            ("http", Scheme::Http),
            ("https", Scheme::Https),
            ("h2c", Scheme::H2c),
            ("kubernetes.io/h2c", Scheme::H2c),
            ("kubernetes.io/ws", Scheme::Http),
            ("kubernetes.io/wss", Scheme::Https),
        ] {
            // The port name says otherwise: appProtocol wins.
            let (backends, warnings) = one_service(
                service("ns", "web").app_port("grpc", 80, app).build(),
                vec![],
            );
            assert!(warnings.is_empty(), "{app}: {warnings:?}");
            assert_eq!(backends[0].protocol, Protocol::Http, "{app}");
            assert_eq!(backends[0].scheme, scheme, "{app}");
        }
    }

    #[test]
    fn schemes_from_port_names() {
        for (name, scheme) in [
            ("https", Scheme::Https),
            ("https-admin", Scheme::Https),
            ("h2c", Scheme::H2c),
            ("grpc", Scheme::H2c),
            ("grpc-api", Scheme::H2c),
            ("http", Scheme::Http),
            ("web", Scheme::Http),
            ("httpsx", Scheme::Http),
            ("grpcx", Scheme::Http),
        ] {
            let (backends, _) = one_service(service("ns", "web").port(name, 80).build(), vec![]);
            assert_eq!(backends[0].scheme, scheme, "{name}");
        }
    }

    #[test]
    fn unknown_app_protocol_falls_back_to_the_port_name_with_a_warning() {
        let (backends, warnings) = one_service(
            service("ns", "web")
                .app_port("https", 443, "example.com/custom")
                .build(),
            vec![],
        );
        assert_eq!(backends[0].scheme, Scheme::Https);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].reason.contains("example.com/custom"));
        assert_eq!(warnings[0].object, "ns/web");
    }

    #[test]
    fn tcp_and_udp_ports() {
        let (backends, warnings) = one_service(
            service("ns", "db")
                .app_port("postgres", 5432, "tcp")
                .port("redis", 6379)
                .port_proto("dns", 53, "UDP")
                .annotation("k8s-service-discovery/tcp-ports", "redis")
                .build(),
            vec![
                slice("ns", "db-1", "db")
                    .port("postgres", 5432)
                    .port("redis", 6379)
                    .port("dns", 5353)
                    .ready("fd00::7")
                    .build(),
            ],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(backend(&backends, "ns-db-postgres").protocol, Protocol::Tcp);
        assert_eq!(backend(&backends, "ns-db-redis").protocol, Protocol::Tcp);
        let dns = backend(&backends, "ns-db-dns");
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(addrs(dns), ["[fd00::7]:5353"]);
    }

    #[test]
    fn tcp_ports_may_name_ports_by_number() {
        let (backends, _) = one_service(
            service("ns", "db")
                .port("db", 5432)
                .annotation("k8s-service-discovery/tcp-ports", "5432")
                .build(),
            vec![],
        );
        assert_eq!(backends[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn sctp_is_skipped_with_a_warning() {
        let (backends, warnings) = one_service(
            service("ns", "sig")
                .port_proto("sctp", 9999, "SCTP")
                .port("http", 80)
                .build(),
            vec![],
        );
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].name, "ns-sig-http");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].reason.contains("SCTP"));
    }

    #[test]
    fn excluded_ports_are_not_published() {
        let (backends, warnings) = one_service(
            service("ns", "web")
                .port("http", 80)
                .port("metrics", 9090)
                .annotation("k8s-service-discovery/exclude-ports", "metrics")
                .build(),
            vec![],
        );
        assert!(warnings.is_empty());
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].name, "ns-web-http");
    }

    #[test]
    fn scheme_annotations_win_per_port_over_service_over_inference() {
        let (backends, warnings) = one_service(
            service("ns", "web")
                .port("http", 80)
                .app_port("api", 81, "h2c")
                .port("admin", 82)
                .annotation("k8s-service-discovery/scheme", "https")
                .annotation("k8s-service-discovery/scheme.82", "h2c")
                .build(),
            vec![],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(backend(&backends, "ns-web-http").scheme, Scheme::Https);
        assert_eq!(backend(&backends, "ns-web-api").scheme, Scheme::Https);
        assert_eq!(backend(&backends, "ns-web-admin").scheme, Scheme::H2c);
    }

    #[test]
    fn annotations_naming_missing_ports_are_reported() {
        let (backends, warnings) = one_service(
            service("ns", "web")
                .port("http", 80)
                .annotation("k8s-service-discovery/tcp-ports", "db")
                .annotation("k8s-service-discovery/exclude-ports", "8080")
                .annotation("k8s-service-discovery/scheme.grpc", "h2c")
                .build(),
            vec![],
        );
        assert_eq!(backends.len(), 1);
        let annotations: Vec<&str> = warnings
            .iter()
            .filter_map(|w| w.annotation.as_deref())
            .collect();
        assert_eq!(
            annotations,
            [
                "k8s-service-discovery/exclude-ports",
                "k8s-service-discovery/scheme.grpc",
                "k8s-service-discovery/tcp-ports",
            ]
        );
    }

    #[test]
    fn scheme_on_a_tcp_port_and_tcp_on_a_udp_port_are_reported() {
        let (backends, warnings) = one_service(
            service("ns", "x")
                .app_port("db", 5432, "tcp")
                .port_proto("dns", 53, "UDP")
                .annotation("k8s-service-discovery/scheme.db", "https")
                .annotation("k8s-service-discovery/tcp-ports", "dns")
                .build(),
            vec![],
        );
        assert_eq!(backend(&backends, "ns-x-db").protocol, Protocol::Tcp);
        assert_eq!(backend(&backends, "ns-x-dns").protocol, Protocol::Udp);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn http_options_apply_to_http_ports_only() {
        let (backends, warnings) = one_service(
            service("ns", "web")
                .port("http", 80)
                .app_port("db", 5432, "tcp")
                .annotation("k8s-service-discovery/pass-host-header", "false")
                .annotation("k8s-service-discovery/sticky-cookie", "true")
                .annotation("k8s-service-discovery/health-check-path", "/healthz")
                .annotation("k8s-service-discovery/health-check-interval", "5s")
                .build(),
            vec![],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let http = backend(&backends, "ns-web-http");
        assert_eq!(http.options.pass_host_header, Some(false));
        assert_eq!(http.options.sticky_cookie, Some(StickyCookie::default()));
        assert_eq!(
            http.options.health_check,
            Some(HealthCheck {
                path: "/healthz".parse().unwrap(),
                interval: Some("5s".parse().unwrap()),
                timeout: None
            })
        );
        assert!(backend(&backends, "ns-web-db").options.is_empty());
    }

    #[test]
    fn http_options_on_a_service_without_http_ports_are_reported() {
        let (_, warnings) = one_service(
            service("ns", "db")
                .app_port("db", 5432, "tcp")
                .annotation("k8s-service-discovery/pass-host-header", "true")
                .build(),
            vec![],
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].reason.contains("HTTP ports only"));
    }

    #[test]
    fn malformed_annotations_warn_naming_object_and_annotation_but_publish() {
        let (backends, warnings) = one_service(
            service("shop", "cart")
                .port("http", 80)
                .annotation("k8s-service-discovery/pass-host-header", "perhaps")
                .build(),
            vec![],
        );
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].options.pass_host_header, None);
        assert_eq!(warnings.len(), 1);
        let text = warnings[0].to_string();
        assert!(text.contains("shop/cart"), "{text}");
        assert!(
            text.contains("k8s-service-discovery/pass-host-header"),
            "{text}"
        );
        assert!(text.contains("perhaps"), "{text}");
    }

    #[test]
    fn fqdn_slices_and_bad_addresses_are_skipped_with_warnings() {
        let (backends, warnings) = one_service(
            service("ns", "web").port("http", 80).build(),
            vec![
                slice("ns", "web-fqdn", "web")
                    .address_type("FQDN")
                    .port("http", 80)
                    .ready("example.com")
                    .build(),
                slice("ns", "web-v4", "web")
                    .port("http", 80)
                    .ready("10.0.0.1")
                    .ready("not-an-ip")
                    .build(),
            ],
        );
        assert_eq!(addrs(&backends[0]), ["10.0.0.1:80"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().all(|w| w.kind == "EndpointSlice"));
        assert!(warnings.iter().any(|w| w.object == "ns/web-fqdn"));
        assert!(warnings.iter().any(|w| w.reason.contains("not-an-ip")));
    }

    #[test]
    fn slices_join_only_their_own_service_in_their_own_namespace() {
        let mut index = Index::new();
        with_service(&mut index, service("a", "web").port("http", 80).build());
        with_service(&mut index, service("b", "web").port("http", 80).build());
        with_slice(
            &mut index,
            slice("a", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        with_slice(
            &mut index,
            slice("b", "web-1", "web")
                .port("http", 80)
                .ready("10.0.1.1")
                .build(),
        );
        with_slice(
            &mut index,
            slice("a", "api-1", "api")
                .port("http", 80)
                .ready("10.0.2.1")
                .build(),
        );
        let backends = build(&mut index);
        assert_eq!(backends.len(), 2);
        assert_eq!(addrs(backend(&backends, "a-web-http")), ["10.0.0.1:80"]);
        assert_eq!(addrs(backend(&backends, "b-web-http")), ["10.0.1.1:80"]);
    }

    #[test]
    fn slices_without_a_service_label_are_ignored() {
        let mut index = Index::new();
        with_service(&mut index, service("ns", "web").port("http", 80).build());
        assert!(!with_slice(
            &mut index,
            slice("ns", "stray", "web")
                .without_service_label()
                .port("http", 80)
                .ready("10.0.0.1")
                .build()
        ));
        assert!(build(&mut index)[0].targets.is_empty());
    }

    #[test]
    fn slices_arriving_before_their_service_count_once_it_comes() {
        let mut index = Index::new();
        assert!(!with_slice(
            &mut index,
            slice("ns", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .build()
        ));
        assert!(build(&mut index).is_empty());
        assert!(with_service(
            &mut index,
            service("ns", "web").port("http", 80).build()
        ));
        assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
    }

    #[test]
    fn deleting_services_and_slices() {
        let mut index = Index::new();
        with_service(&mut index, service("ns", "web").port("http", 80).build());
        with_slice(
            &mut index,
            slice("ns", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        with_slice(
            &mut index,
            slice("ns", "web-2", "web")
                .port("http", 80)
                .ready("10.0.0.2")
                .build(),
        );
        assert_eq!(build(&mut index)[0].targets.len(), 2);

        assert!(index.delete_slice(&SliceKey::new("ns", "web-2")));
        assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
        assert!(!index.delete_slice(&SliceKey::new("ns", "web-2")));

        assert!(index.delete_service(&ServiceKey::new("ns", "web")));
        assert!(build(&mut index).is_empty());
        assert_eq!(index.service_count(), 0);

        // The slice is still there when the Service is selected again.
        with_service(&mut index, service("ns", "web").port("http", 80).build());
        assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
    }

    #[test]
    fn a_slice_moving_to_another_service_leaves_the_first() {
        let mut index = Index::new();
        with_service(&mut index, service("ns", "a").port("http", 80).build());
        with_service(&mut index, service("ns", "b").port("http", 80).build());
        with_slice(
            &mut index,
            slice("ns", "s", "a")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        build(&mut index);
        with_slice(
            &mut index,
            slice("ns", "s", "b")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        let backends = build(&mut index);
        assert!(backend(&backends, "ns-a-http").targets.is_empty());
        assert_eq!(addrs(backend(&backends, "ns-b-http")), ["10.0.0.1:80"]);
        // Losing its label removes it entirely.
        with_slice(
            &mut index,
            slice("ns", "s", "b").without_service_label().build(),
        );
        let backends = build(&mut index);
        assert!(backends.iter().all(|b| b.targets.is_empty()));
    }

    #[test]
    fn irrelevant_changes_are_not_changes() {
        let mut index = Index::new();
        let svc = service("ns", "web").port("http", 80).build();
        assert!(with_service(&mut index, svc.clone()));
        index.refresh();
        assert!(!index.is_dirty());

        let mut relabelled = svc.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("team".into(), "x".into())]));
        relabelled.metadata.resource_version = Some("42".into());
        relabelled
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert("unrelated/thing".into(), "1".into());
        assert!(!with_service(&mut index, relabelled));
        assert!(!index.is_dirty());

        let s = slice("ns", "web-1", "web")
            .port("http", 80)
            .ready("10.0.0.1")
            .build();
        assert!(with_slice(&mut index, s.clone()));
        index.refresh();
        let mut s2 = s.clone();
        s2.metadata.resource_version = Some("43".into());
        s2.endpoints
            .push(k8s_openapi::api::discovery::v1::Endpoint {
                addresses: vec!["10.0.0.9".into()],
                conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                    ready: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            });
        assert!(
            !with_slice(&mut index, s2),
            "a not-ready endpoint changes no backend"
        );
    }

    #[test]
    fn refresh_recomputes_only_dirty_services_and_reports_new_warnings_once() {
        let mut index = Index::new();
        let bad = service("ns", "bad")
            .port("http", 80)
            .annotation("k8s-service-discovery/scheme", "ftp")
            .build();
        with_service(&mut index, bad.clone());
        with_service(&mut index, service("ns", "good").port("http", 80).build());
        let warnings = index.refresh();
        assert_eq!(warnings.len(), 1);
        assert!(!index.is_dirty());

        // A new slice for the bad Service: recomputed, but its warning is not new.
        with_slice(
            &mut index,
            slice("ns", "bad-1", "bad")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        assert!(index.is_dirty());
        assert!(index.refresh().is_empty());

        // A different bad value is a new warning.
        let worse = service("ns", "bad")
            .port("http", 80)
            .annotation("k8s-service-discovery/scheme", "gopher")
            .build();
        with_service(&mut index, worse);
        let warnings = index.refresh();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].reason.contains("gopher"));
    }

    #[test]
    fn replace_swaps_a_namespace_and_leaves_the_others() {
        let mut index = Index::new();
        with_service(&mut index, service("a", "one").port("http", 80).build());
        with_service(&mut index, service("a", "two").port("http", 80).build());
        with_service(&mut index, service("b", "one").port("http", 80).build());
        with_slice(
            &mut index,
            slice("a", "one-1", "one")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
        );
        with_slice(
            &mut index,
            slice("b", "one-1", "one")
                .port("http", 80)
                .ready("10.0.1.1")
                .build(),
        );
        build(&mut index);

        // Re-list of namespace a: `two` is gone, `one` has a new slice.
        let services: Vec<_> = [service("a", "one").port("http", 80).build()]
            .iter()
            .filter_map(service_facts)
            .collect();
        assert!(index.replace_services(Some("a"), services));
        let slices: Vec<_> = [slice("a", "one-2", "one")
            .port("http", 80)
            .ready("10.0.0.2")
            .build()]
        .iter()
        .filter_map(slice_facts)
        .collect();
        assert!(index.replace_slices(Some("a"), slices));
        let backends = build(&mut index);
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a-one-http", "b-one-http"]);
        assert_eq!(addrs(backend(&backends, "a-one-http")), ["10.0.0.2:80"]);
        assert_eq!(addrs(backend(&backends, "b-one-http")), ["10.0.1.1:80"]);

        // An identical re-list of everything changes nothing.
        let services: Vec<_> = [
            service("a", "one").port("http", 80).build(),
            service("b", "one").port("http", 80).build(),
        ]
        .iter()
        .filter_map(service_facts)
        .collect();
        assert!(!index.replace_services(None, services));
    }

    #[test]
    fn same_service_name_in_two_namespaces_never_collides() {
        let mut index = Index::new();
        with_service(&mut index, service("a-b", "c").port("http", 80).build());
        with_service(&mut index, service("a", "b-c").port("http", 80).build());
        index.refresh();
        let (backends, collisions) = index.backends(&NameTemplate::default());
        assert_eq!(backends.len(), 2);
        assert_ne!(backends[0].name, backends[1].name);
        assert_eq!(collisions.len(), 1);
        assert_eq!(collisions[0].name, "a-b-c-http");
    }

    #[test]
    fn backends_are_sorted_by_name_and_follow_the_template() {
        let mut index = Index::new();
        with_service(&mut index, service("z", "web").port("http", 80).build());
        with_service(
            &mut index,
            service("a", "web")
                .port("http", 80)
                .unnamed_port(81)
                .build(),
        );
        index.refresh();
        let template = NameTemplate::parse("{service}_{port}_{namespace}").unwrap();
        let (backends, _) = index.backends(&template);
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["web_81_a", "web_http_a", "web_http_z"]);
    }

    #[test]
    fn app_protocol_and_port_name_helpers() {
        assert_eq!(scheme_from_app_protocol("HTTPS"), Some(Scheme::Https));
        assert_eq!(scheme_from_app_protocol("grpc"), Some(Scheme::H2c));
        assert_eq!(scheme_from_app_protocol("tcp"), None);
        assert_eq!(scheme_from_app_protocol("mysql"), None);
        assert_eq!(scheme_from_port_name("https-"), Some(Scheme::Https));
        assert_eq!(scheme_from_port_name("metrics"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            // Short names over a tiny alphabet, with dashes, so renderings collide often.
            "[ab](-?[ab]){0,3}"
        }

        proptest! {
            #[test]
            fn backend_names_never_collide(
                services in proptest::collection::vec(
                    (label(), label(), proptest::collection::btree_set(label(), 1..3)),
                    1..25,
                ),
                numbered in any::<bool>(),
            ) {
                let mut index = Index::new();
                for (namespace, name, ports) in &services {
                    let mut builder = service(namespace, name);
                    for (i, port) in ports.iter().enumerate() {
                        builder = if numbered && i == 0 {
                            builder.unnamed_port(80)
                        } else {
                            builder.port(port, 80 + i32::try_from(i).unwrap())
                        };
                    }
                    with_service(&mut index, builder.build());
                }
                index.refresh();
                for template in ["{namespace}-{service}-{port}", "{service}-{port}", "{service}"] {
                    let template = NameTemplate::parse(template).unwrap();
                    let (backends, _) = index.backends(&template);
                    let names: BTreeSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                    prop_assert_eq!(names.len(), backends.len());
                    for backend in &backends {
                        prop_assert!(ksd_shared::names::validate_service_name(&backend.name).is_ok());
                    }
                }
            }
        }
    }
}
