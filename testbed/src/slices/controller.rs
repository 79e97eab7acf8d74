//! [`endpoint_slices`]: the EndpointSlices the EndpointSlice controller writes for a Service
//! and its pods, with its names, labels, ports and placeholders.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{CONTROLLER_NAME, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, Pod, SERVICE_NAME_LABEL};

pub(super) fn family_of(ip: &IpAddr) -> &'static str {
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

pub(super) fn endpoint(
    namespace: &str,
    pod: &Pod,
    ip: &IpAddr,
    publish_not_ready: bool,
) -> Endpoint {
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
    let ports = endpoint_ports(&spec);
    let metadata = ObjectMeta {
        namespace: Some(namespace.clone()),
        generate_name: Some(format!("{name}-")),
        labels: Some(slice_labels(svc, &name, &spec)),
        owner_references: owner_reference(svc, &name).map(|o| vec![o]),
        ..ObjectMeta::default()
    };
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
                    name: Some(slice_name(&namespace, &name, family, index)),
                    ..metadata.clone()
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

/// The slices' ports: the Service's, with the target port number when it is one.
fn endpoint_ports(spec: &ServiceSpec) -> Vec<EndpointPort> {
    spec.ports
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
        .collect()
}

/// The Service's labels plus the controller's own.
fn slice_labels(svc: &Service, name: &str, spec: &ServiceSpec) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), name.to_owned());
    labels.insert(MANAGED_BY_LABEL.to_owned(), CONTROLLER_NAME.to_owned());
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert("service.kubernetes.io/headless".to_owned(), String::new());
    }
    labels
}

/// The Service as the slices' controller, when it has a uid.
fn owner_reference(svc: &Service, name: &str) -> Option<OwnerReference> {
    svc.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: name.to_owned(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The label selector of the slices the controller manages for a Service.
pub(super) fn controller_slices_selector(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service},{MANAGED_BY_LABEL}={CONTROLLER_NAME}")
}
