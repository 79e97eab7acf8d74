//! [`service`]: a `Service` built the way a manifest would declare it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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
    /// else writes its slices (see [`custom_slice`](super::custom_slice)).
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
