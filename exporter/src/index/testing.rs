//! Chainable builders for the objects the index reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
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

    fn endpoint(mut self, address: &str, ready: Option<bool>, terminating: Option<bool>) -> Self {
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
