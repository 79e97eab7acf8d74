//! Services, pods and EndpointSlices for tests.
//!
//! - [`service`] builds a `Service` the way a manifest would declare it.
//! - [`Pod`] is what the EndpointSlice controller reads from a pod: its IPs, readiness,
//!   node and zone.
//! - [`endpoint_slices`] turns a Service and its pods into the EndpointSlices the controller
//!   writes; [`custom_slice`] builds a slice some other controller manages (for Services
//!   without a selector).
//! - [`TestApiServer::set_endpoints`] and [`scale`] replace a Service's slices in a server,
//!   which is what scaling a deployment looks like to a watcher.

use crate::apiserver::{ApiClient, Error, TestApiServer};
use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that names the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The EndpointSlice controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// At most this many endpoints go into one slice (the controller's default
/// `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

enum Selector {
    /// `app: <service name>`, what most manifests use.
    Default,
    Explicit(BTreeMap<String, String>),
    None,
}

/// A chainable `Service` builder; see [`service`].
pub struct ServiceBuilder {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
    app_protocols: Vec<(String, String)>,
    ip_families: Option<Vec<String>>,
    ip_family_policy: Option<String>,
    selector: Selector,
    cluster_ip: Option<String>,
    type_: Option<String>,
    publish_not_ready_addresses: Option<bool>,
}

/// A Service `namespace/name` with no labels, no ports and the selector `app: <name>`.
pub fn service(namespace: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        ports: Vec::new(),
        app_protocols: Vec::new(),
        ip_families: None,
        ip_family_policy: None,
        selector: Selector::Default,
        cluster_ip: None,
        type_: None,
        publish_not_ready_addresses: None,
    }
}

impl ServiceBuilder {
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// A named TCP port.
    pub fn port(self, name: &str, port: i32, target_port: i32) -> Self {
        self.port_proto(name, port, target_port, "TCP")
    }

    /// A named port with a protocol: `TCP`, `UDP` or `SCTP`.
    pub fn port_proto(mut self, name: &str, port: i32, target_port: i32, protocol: &str) -> Self {
        self.ports.push(ServicePort {
            name: Some(name.to_owned()),
            port,
            target_port: Some(IntOrString::Int(target_port)),
            protocol: Some(protocol.to_owned()),
            ..ServicePort::default()
        });
        self
    }

    /// A TCP port without a name (allowed when it is the Service's only port).
    pub fn unnamed_port(mut self, port: i32, target_port: i32) -> Self {
        self.ports.push(ServicePort {
            port,
            target_port: Some(IntOrString::Int(target_port)),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        });
        self
    }

    /// Sets `appProtocol` (`http`, `https`, `h2c`, `kubernetes.io/h2c`, ...) on the port
    /// named `port_name`, whether it is added before or after this call.
    pub fn app_protocol(mut self, port_name: &str, app_protocol: &str) -> Self {
        self.app_protocols
            .push((port_name.to_owned(), app_protocol.to_owned()));
        self
    }

    /// `spec.ipFamilies`, e.g. `&["IPv4", "IPv6"]`; two families make the Service
    /// `RequireDualStack` unless [`Self::ip_family_policy`] says otherwise.
    pub fn ip_families(mut self, families: &[&str]) -> Self {
        self.ip_families = Some(families.iter().map(|f| (*f).to_owned()).collect());
        self
    }

    pub fn ip_family_policy(mut self, policy: &str) -> Self {
        self.ip_family_policy = Some(policy.to_owned());
        self
    }

    /// Adds `key: value` to the selector (the first call replaces the default `app: <name>`).
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        let mut map = match self.selector {
            Selector::Explicit(map) => map,
            Selector::Default | Selector::None => BTreeMap::new(),
        };
        map.insert(key.to_owned(), value.to_owned());
        self.selector = Selector::Explicit(map);
        self
    }

    /// No selector: the EndpointSlice controller leaves such a Service alone and someone
    /// else writes its slices (see [`custom_slice`]).
    pub fn no_selector(mut self) -> Self {
        self.selector = Selector::None;
        self
    }

    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.cluster_ip = Some(ip.to_owned());
        self
    }

    /// `clusterIP: None`.
    pub fn headless(self) -> Self {
        self.cluster_ip("None")
    }

    /// `spec.type`: `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    pub fn type_(mut self, type_: &str) -> Self {
        self.type_ = Some(type_.to_owned());
        self
    }

    /// `publishNotReadyAddresses`: the controller then marks every endpoint ready.
    pub fn publish_not_ready_addresses(mut self, publish: bool) -> Self {
        self.publish_not_ready_addresses = Some(publish);
        self
    }

    pub fn build(self) -> Service {
        let mut ports = self.ports;
        for (port_name, app_protocol) in &self.app_protocols {
            for port in ports
                .iter_mut()
                .filter(|p| p.name.as_deref() == Some(port_name))
            {
                port.app_protocol = Some(app_protocol.clone());
            }
        }
        let selector = match self.selector {
            Selector::Default => Some(BTreeMap::from([("app".to_owned(), self.name.clone())])),
            Selector::Explicit(map) => Some(map),
            Selector::None => None,
        };
        let non_empty = |map: BTreeMap<String, String>| (!map.is_empty()).then_some(map);
        Service {
            metadata: ObjectMeta {
                namespace: Some(self.namespace),
                name: Some(self.name),
                labels: non_empty(self.labels),
                annotations: non_empty(self.annotations),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(ports),
                selector,
                ip_families: self.ip_families,
                ip_family_policy: self.ip_family_policy,
                cluster_ip: self.cluster_ip,
                type_: self.type_,
                publish_not_ready_addresses: self.publish_not_ready_addresses,
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// An IP address given to a [`Pod`] constructor: an address type or a literal.
pub trait PodIp {
    fn into_ip(self) -> IpAddr;
}

impl PodIp for IpAddr {
    fn into_ip(self) -> IpAddr {
        self
    }
}

impl PodIp for Ipv4Addr {
    fn into_ip(self) -> IpAddr {
        IpAddr::V4(self)
    }
}

impl PodIp for Ipv6Addr {
    fn into_ip(self) -> IpAddr {
        IpAddr::V6(self)
    }
}

impl PodIp for &str {
    /// # Panics
    /// On a string that is not an IP address: a typo in the test.
    fn into_ip(self) -> IpAddr {
        match self.parse() {
            Ok(ip) => ip,
            Err(_) => panic!("{self:?} is not an IP address"),
        }
    }
}

/// What the EndpointSlice controller reads from a pod. The condition fields are written to
/// the endpoint as they are (`None` leaves the condition unset, which consumers must read as
/// ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node: Option<String>,
    pub zone: Option<String>,
}

impl Pod {
    /// A running, ready pod with one IP.
    pub fn ready(name: &str, ip: impl PodIp) -> Self {
        Self {
            name: name.to_owned(),
            ips: vec![ip.into_ip()],
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            node: None,
            zone: None,
        }
    }

    /// A ready pod with an IPv4 and an IPv6 address.
    pub fn dual(name: &str, v4: impl PodIp, v6: impl PodIp) -> Self {
        let mut pod = Self::ready(name, v4);
        pod.ips.push(v6.into_ip());
        pod
    }

    /// A pod whose endpoint carries no conditions at all.
    pub fn without_conditions(name: &str, ip: impl PodIp) -> Self {
        Self::ready(name, ip).conditions(None, None, None)
    }

    /// Running but failing its readiness probe.
    pub fn not_ready(mut self) -> Self {
        self.ready = Some(false);
        self.serving = Some(false);
        self
    }

    /// Being deleted: not ready; still serving if it was (graceful termination).
    pub fn terminating(mut self) -> Self {
        self.terminating = Some(true);
        self.ready = Some(false);
        self
    }

    /// Sets the three conditions as given.
    pub fn conditions(
        mut self,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.ready = ready;
        self.serving = serving;
        self.terminating = terminating;
        self
    }

    /// Adds an address (of the other family, for a dual-stack pod).
    pub fn with_ip(mut self, ip: impl PodIp) -> Self {
        self.ips.push(ip.into_ip());
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    pub fn in_zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }
}

/// `count` ready pods `<prefix>-0`, `<prefix>-1`, ... with consecutive IPv4 addresses from
/// `first_ip`.
pub fn ready_pods(prefix: &str, count: usize, first_ip: Ipv4Addr) -> Vec<Pod> {
    let base = u32::from(first_ip);
    (0..count)
        .map(|i| {
            let offset = u32::try_from(i).unwrap_or(u32::MAX);
            let ip = Ipv4Addr::from(base.wrapping_add(offset));
            Pod::ready(&format!("{prefix}-{i}"), ip)
        })
        .collect()
}

fn family_of(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// FNV-1a: stable across Rust versions, unlike the standard library's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `<service>-<5 characters>` like the controller's generated names, but the same for the
/// same (namespace, service, family, index), so replacing a Service's endpoints updates its
/// slices in place.
fn slice_name(namespace: &str, service: &str, family: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash = fnv1a(&format!("{namespace}/{service}/{family}/{index}"));
    let suffix: String = (0..5)
        .map(|_| {
            let i = usize::try_from(hash % ALPHABET.len() as u64).unwrap_or(0);
            hash /= ALPHABET.len() as u64;
            char::from(ALPHABET[i])
        })
        .collect();
    format!("{service}-{suffix}")
}

fn endpoint(namespace: &str, pod: &Pod, ip: &IpAddr, publish_not_ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: if publish_not_ready {
                Some(true)
            } else {
                pod.ready
            },
            serving: pod.serving,
            terminating: pod.terminating,
        }),
        node_name: pod.node.clone(),
        zone: pod.zone.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(pod.name.clone()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

/// The EndpointSlices the EndpointSlice controller writes for `svc` backed by `pods`:
///
/// - one set of slices per address family in `spec.ipFamilies` (default IPv4), each holding
///   the pods' addresses of that family, at most [`MAX_ENDPOINTS_PER_SLICE`] a slice; a
///   family without endpoints gets one empty slice without ports, as the controller's
///   placeholder;
/// - ports from the Service's ports: name (`""` when unnamed), protocol, appProtocol, and
///   the target port number (a named target port, which the controller resolves against the
///   pod's containers, falls back to the Service port);
/// - the Service's labels plus [`SERVICE_NAME_LABEL`] and [`MANAGED_BY_LABEL`] (and
///   `service.kubernetes.io/headless` for a headless Service);
/// - a controller owner reference to the Service when it has a uid (a Service read back from
///   a server has one);
/// - the pod's conditions, node, zone and a `targetRef`; `publishNotReadyAddresses` marks
///   every endpoint ready.
///
/// The controller ignores Services without a selector; this function does not.
pub fn endpoint_slices(svc: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let families = spec
        .ip_families
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| vec!["IPv4".to_owned()]);
    let ports: Vec<EndpointPort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(match &p.target_port {
                Some(IntOrString::Int(target)) => *target,
                _ => p.port,
            }),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), name.clone());
    labels.insert(MANAGED_BY_LABEL.to_owned(), CONTROLLER_NAME.to_owned());
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert("service.kubernetes.io/headless".to_owned(), String::new());
    }
    let owner = svc.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut slices = Vec::new();
    for family in &families {
        let endpoints: Vec<Endpoint> = pods
            .iter()
            .flat_map(|pod| {
                pod.ips
                    .iter()
                    .filter(|ip| family_of(ip) == family)
                    .map(|ip| endpoint(&namespace, pod, ip, publish_not_ready))
                    .collect::<Vec<_>>()
            })
            .collect();
        let chunks: Vec<Vec<Endpoint>> = if endpoints.is_empty() {
            vec![Vec::new()]
        } else {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(<[Endpoint]>::to_vec)
                .collect()
        };
        for (index, chunk) in chunks.into_iter().enumerate() {
            let placeholder = chunk.is_empty();
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    namespace: Some(namespace.clone()),
                    name: Some(slice_name(&namespace, &name, family, index)),
                    generate_name: Some(format!("{name}-")),
                    labels: Some(labels.clone()),
                    owner_references: owner.clone().map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                address_type: family.clone(),
                endpoints: chunk,
                ports: Some(if placeholder {
                    Vec::new()
                } else {
                    ports.clone()
                }),
            });
        }
    }
    slices
}

/// A chainable builder for a slice that something other than the EndpointSlice controller
/// manages; see [`custom_slice`].
pub struct SliceBuilder {
    slice: EndpointSlice,
    app_protocols: Vec<(String, String)>,
}

/// A slice `namespace/name` for the Service `service_name`, address type IPv4, managed by
/// `external-controller.example.com`, without ports or endpoints.
pub fn custom_slice(namespace: &str, name: &str, service_name: &str) -> SliceBuilder {
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_owned(), service_name.to_owned()),
        (
            MANAGED_BY_LABEL.to_owned(),
            "external-controller.example.com".to_owned(),
        ),
    ]);
    SliceBuilder {
        slice: EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_owned(),
            endpoints: Vec::new(),
            ports: Some(Vec::new()),
        },
        app_protocols: Vec::new(),
    }
}

impl SliceBuilder {
    /// `IPv4`, `IPv6` or `FQDN`; endpoints added later keep only addresses of this family.
    pub fn address_type(mut self, address_type: &str) -> Self {
        self.slice.address_type = address_type.to_owned();
        self
    }

    pub fn managed_by(self, manager: &str) -> Self {
        self.label(MANAGED_BY_LABEL, manager)
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.slice
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// A port with a name and a protocol.
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        self.slice
            .ports
            .get_or_insert_with(Vec::new)
            .push(EndpointPort {
                name: Some(name.to_owned()),
                port: Some(port),
                protocol: Some(protocol.to_owned()),
                app_protocol: None,
            });
        self
    }

    /// A TCP port with an empty name.
    pub fn unnamed_port(self, port: i32) -> Self {
        self.port("", port, "TCP")
    }

    pub fn app_protocol(mut self, port_name: &str, app_protocol: &str) -> Self {
        self.app_protocols
            .push((port_name.to_owned(), app_protocol.to_owned()));
        self
    }

    /// One endpoint per address of the slice's family.
    pub fn endpoint(mut self, pod: &Pod) -> Self {
        let namespace = self.slice.metadata.namespace.clone().unwrap_or_default();
        let family = self.slice.address_type.clone();
        for ip in pod.ips.iter().filter(|ip| family_of(ip) == family) {
            self.slice
                .endpoints
                .push(endpoint(&namespace, pod, ip, false));
        }
        self
    }

    pub fn endpoints(self, pods: &[Pod]) -> Self {
        pods.iter().fold(self, |builder, pod| builder.endpoint(pod))
    }

    /// An endpoint with a raw address (an FQDN for an `FQDN` slice), ready.
    pub fn address(mut self, address: &str) -> Self {
        self.slice.endpoints.push(Endpoint {
            addresses: vec![address.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        });
        self
    }

    pub fn build(mut self) -> EndpointSlice {
        for (port_name, app_protocol) in &self.app_protocols {
            for port in self
                .slice
                .ports
                .iter_mut()
                .flatten()
                .filter(|p| p.name.as_deref() == Some(port_name))
            {
                port.app_protocol = Some(app_protocol.clone());
            }
        }
        self.slice
    }
}

/// The label selector of the slices the controller manages for a Service.
fn controller_slices_selector(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={CONTROLLER_NAME}")
}

impl TestApiServer {
    /// Replaces the controller-managed EndpointSlices of the Service `svc` names (by
    /// namespace and name) with those [`endpoint_slices`] makes for `pods` from the Service
    /// as stored in the server: new and changed slices are written, slices no longer produced
    /// are deleted, all under one lock. This is what a watcher sees when a deployment scales.
    /// Returns the stored slices.
    pub fn set_endpoints(&self, svc: &Service, pods: &[Pod]) -> Result<Vec<Value>, Error> {
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let stored =
            self.get("services", &namespace, &name)
                .ok_or_else(|| Error::MissingService {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })?;
        let stored: Service = serde_json::from_value(stored).map_err(Error::Json)?;
        let slices = endpoint_slices(&stored, pods)
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Json)?;
        self.replace_selected(
            "endpointslices",
            &namespace,
            &controller_slices_selector(&name),
            slices,
        )
    }
}

/// Percent-encodes a query parameter value.
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn api_failure(what: String, response: &crate::apiserver::ApiResponse) -> Error {
    Error::Api {
        what,
        status: response.status.as_u16(),
        message: response
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// Over HTTP, as a controller would: reads the Service `namespace/name`, writes the slices
/// [`endpoint_slices`] makes for `pods`, and deletes its controller-managed slices that are
/// no longer produced. Returns the number of slices written.
pub async fn scale(
    client: &ApiClient,
    namespace: &str,
    name: &str,
    pods: &[Pod],
) -> Result<usize, Error> {
    let service_path = format!("/api/v1/namespaces/{namespace}/services/{name}");
    let response = client.get(&service_path).await?;
    if response.status.as_u16() == 404 {
        return Err(Error::MissingService {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    if !response.status.is_success() {
        return Err(api_failure(format!("GET {service_path}"), &response));
    }
    let svc: Service = serde_json::from_value(response.body).map_err(Error::Json)?;
    let slices = endpoint_slices(&svc, pods);
    let collection = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
    let mut written = Vec::new();
    for slice in &slices {
        let body = serde_json::to_value(slice).map_err(Error::Json)?;
        let slice_name = slice.metadata.name.clone().unwrap_or_default();
        let path = format!("{collection}/{slice_name}");
        let mut response = client.put(&path, &body).await?;
        if response.status.as_u16() == 404 {
            response = client.post(&collection, &body).await?;
        }
        if !response.status.is_success() {
            return Err(api_failure(format!("writing {path}"), &response));
        }
        written.push(slice_name);
    }
    let list_path = format!(
        "{collection}?labelSelector={}",
        encode_query(&controller_slices_selector(name))
    );
    let response = client.get(&list_path).await?;
    if !response.status.is_success() {
        return Err(api_failure(format!("GET {list_path}"), &response));
    }
    let existing = response
        .body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in existing {
        let Some(item_name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        if written.iter().any(|w| w == item_name) {
            continue;
        }
        let path = format!("{collection}/{item_name}");
        let response = client.delete(&path).await?;
        // Someone else deleting it first is fine.
        if !response.status.is_success() && response.status.as_u16() != 404 {
            return Err(api_failure(format!("DELETE {path}"), &response));
        }
    }
    Ok(written.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn service_builder() {
        let svc = service("shop", "web")
            .label("k8s-service-discovery", "true")
            .port("http", 80, 8080)
            .port_proto("dns", 53, 5353, "UDP")
            .app_protocol("http", "h2c")
            .ip_families(&["IPv4", "IPv6"])
            .build();
        assert_eq!(svc.metadata.namespace.as_deref(), Some("shop"));
        let spec = svc.spec.unwrap();
        let ports = spec.ports.unwrap();
        assert_eq!(ports[0].app_protocol.as_deref(), Some("h2c"));
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        assert_eq!(
            spec.selector.unwrap().get("app").map(String::as_str),
            Some("web")
        );
        let bare = service("a", "b").no_selector().build();
        assert!(bare.spec.unwrap().selector.is_none());
        assert!(bare.metadata.labels.is_none());
        let custom = service("a", "b").selector("tier", "db").build();
        assert_eq!(
            custom.spec.unwrap().selector.unwrap(),
            BTreeMap::from([("tier".to_owned(), "db".to_owned())])
        );
    }

    #[test]
    fn slices_per_family_and_chunked() {
        let mut svc = service("shop", "web")
            .label("team", "a")
            .port("http", 80, 8080)
            .app_protocol("http", "http")
            .ip_families(&["IPv4", "IPv6"])
            .build();
        svc.metadata.uid = Some("uid-1".to_owned());
        let mut pods: Vec<Pod> = (0..150)
            .map(|i| {
                Pod::dual(
                    &format!("web-{i}"),
                    Ipv4Addr::from(0x0a01_0000 + i),
                    Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)),
                )
            })
            .collect();
        pods.push(
            Pod::ready("v4-only", "10.9.9.9")
                .not_ready()
                .on_node("n1")
                .in_zone("z1"),
        );
        let slices = endpoint_slices(&svc, &pods);
        let v4: Vec<&EndpointSlice> = slices.iter().filter(|s| s.address_type == "IPv4").collect();
        let v6: Vec<&EndpointSlice> = slices.iter().filter(|s| s.address_type == "IPv6").collect();
        assert_eq!(v4.len(), 2);
        assert_eq!(v6.len(), 2);
        assert_eq!(v4.iter().map(|s| s.endpoints.len()).sum::<usize>(), 151);
        assert_eq!(v6.iter().map(|s| s.endpoints.len()).sum::<usize>(), 150);
        assert!(
            slices
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );
        let first = &slices[0];
        let labels = first.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(labels["team"], "a");
        let port = &first.ports.as_ref().unwrap()[0];
        assert_eq!(
            (
                port.name.as_deref(),
                port.port,
                port.app_protocol.as_deref()
            ),
            (Some("http"), Some(8080), Some("http"))
        );
        assert_eq!(
            first.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let last = v4[1].endpoints.last().unwrap();
        assert_eq!(last.conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(last.node_name.as_deref(), Some("n1"));
        assert_eq!(last.zone.as_deref(), Some("z1"));
        // Names are stable, distinct and look generated.
        let again = endpoint_slices(&svc, &pods);
        let names: Vec<_> = slices
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        let names_again: Vec<_> = again
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, names_again);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("web-") && n.len() == "web-".len() + 5)
        );
    }

    #[test]
    fn no_pods_gives_a_placeholder() {
        let svc = service("a", "web").port("http", 80, 8080).build();
        let slices = endpoint_slices(&svc, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert_eq!(slices[0].ports.as_deref(), Some(&[][..]));
        assert!(slices[0].metadata.owner_references.is_none());
    }

    #[test]
    fn terminating_and_publish_not_ready() {
        let svc = service("a", "web")
            .port("http", 80, 8080)
            .publish_not_ready_addresses(true)
            .build();
        let slices = endpoint_slices(&svc, &[Pod::ready("p", "10.0.0.1").terminating()]);
        let conditions = slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(conditions.ready, Some(true));
        assert_eq!(conditions.terminating, Some(true));
        assert_eq!(conditions.serving, Some(true));
    }

    #[test]
    fn custom_slices() {
        let slice = custom_slice("a", "db-manual", "db")
            .address_type("IPv6")
            .managed_by("operator.example.com")
            .port("pg", 5432, "TCP")
            .app_protocol("pg", "postgresql")
            .endpoints(&[Pod::dual("db-0", "10.0.0.1", "fd00::1")])
            .build();
        assert_eq!(slice.endpoints.len(), 1);
        assert_eq!(slice.endpoints[0].addresses, ["fd00::1"]);
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "operator.example.com");
        assert_eq!(labels[SERVICE_NAME_LABEL], "db");
        assert_eq!(
            slice.ports.unwrap()[0].app_protocol.as_deref(),
            Some("postgresql")
        );
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("a/b=c,d"), "a%2Fb%3Dc%2Cd");
    }
}
