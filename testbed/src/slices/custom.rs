//! [`custom_slice`]: a slice some other controller manages (for Services without a selector).

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::controller::{endpoint, family_of};
use super::{MANAGED_BY_LABEL, Pod, SERVICE_NAME_LABEL};

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
