//! Keys and the facts the index keeps of Services and EndpointSlices: watch events are
//! reduced to these, so unrelated changes (status, managed fields, labels) are not changes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::annotations::PREFIX;

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
    pub(crate) ports: Vec<PortFacts>,
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortFacts {
    pub(crate) name: Option<String>,
    pub(crate) port: i32,
    /// `TCP`, `UDP`, `SCTP` (Kubernetes' default is TCP).
    pub(crate) protocol: String,
    pub(crate) app_protocol: Option<String>,
}

impl PortFacts {
    /// The port as the name template and annotations refer to it: its name, else its number.
    pub(crate) fn id(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.port.to_string(),
        }
    }

    pub(crate) fn is_named(&self, reference: &str) -> bool {
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
    pub(crate) service: String,
    pub(crate) address_type: String,
    /// (name, "" when unnamed; port number).
    pub(crate) ports: Vec<(String, Option<i32>)>,
    /// First address of every ready, non-terminating endpoint, in slice order.
    pub(crate) addresses: Vec<IpAddr>,
    /// First address of every terminating endpoint that is still serving: published only
    /// when the Service port has no ready endpoint at all.
    pub(crate) draining: Vec<IpAddr>,
    /// Addresses of publishable endpoints that are not IP addresses.
    pub(crate) invalid: Vec<String>,
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
