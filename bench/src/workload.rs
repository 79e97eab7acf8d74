//! The synthetic states the benchmarks run on.
//!
//! - [`ExporterShape`]: one cluster's Services and EndpointSlices, built with the testbed's
//!   builders ([`ksd_testbed::slices::service`], [`endpoint_slices`]) exactly as the
//!   EndpointSlice controller would write them. Every Service has one HTTP port and the same
//!   number of ready pods, all with distinct IPv4 addresses.
//! - [`SyncerShape`]: many clusters' documents, rendered by the exporter's own
//!   [`ksd_exporter::document::build`] so they are byte for byte what exporters publish.
//!
//! A change is one server of one Service moving to a "marker" address from 172.16.0.0/12
//! ([`marker_ip`]), which no initial state uses; [`server_marker`] is the text that appears in
//! a document once the change has reached it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_shared::backend::{Backend, HttpOptions, Origin, Protocol, Scheme, Target};
use ksd_shared::names::{ClusterName, ObjectFormat};
use ksd_testbed::slices::{Pod, endpoint_slices, service};

/// The label the exporter selects Services by (its default `LABEL_SELECTOR`).
pub const EXPORT_LABEL: &str = "k8s-service-discovery";
/// The Service port and the pods' target port.
pub const SERVICE_PORT: i32 = 80;
pub const TARGET_PORT: u16 = 8080;

/// One exporter's cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExporterShape {
    pub namespaces: usize,
    pub services: usize,
    pub endpoints_per_service: usize,
}

impl Default for ExporterShape {
    /// The spec's scale: 10,000 Services and 100,000 endpoints, over 100 namespaces.
    fn default() -> Self {
        ExporterShape {
            namespaces: 100,
            services: 10_000,
            endpoints_per_service: 10,
        }
    }
}

/// A cluster's objects.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

impl ClusterObjects {
    pub fn endpoint_count(&self) -> usize {
        self.slices.iter().map(|s| s.endpoints.len()).sum()
    }
}

impl ExporterShape {
    pub fn endpoints(&self) -> usize {
        self.services * self.endpoints_per_service
    }

    fn namespace(&self, index: usize) -> String {
        format!("ns-{:03}", index % self.namespaces.max(1))
    }

    /// Service number `index`: `ns-<index mod namespaces>/svc-<index>`, labelled for export,
    /// one port `http` 80 → 8080.
    pub fn service(&self, index: usize) -> Service {
        service(&self.namespace(index), &format!("svc-{index:05}"))
            .label(EXPORT_LABEL, "true")
            .port("http", SERVICE_PORT, i32::from(TARGET_PORT))
            .build()
    }

    /// The Traefik service name the default template gives Service `index`.
    pub fn traefik_name(&self, index: usize) -> String {
        format!("{}-svc-{index:05}-http", self.namespace(index))
    }

    /// The ready pods of Service `index`: consecutive addresses from 10.0.0.0, so every
    /// endpoint of the cluster has its own.
    pub fn pods(&self, index: usize) -> Vec<Pod> {
        let first = index * self.endpoints_per_service;
        (0..self.endpoints_per_service)
            .map(|i| {
                let n = u32::try_from(first + i).unwrap_or(u32::MAX);
                Pod::ready(
                    &format!("svc-{index:05}-{i}"),
                    Ipv4Addr::from(0x0a00_0000 + n),
                )
            })
            .collect()
    }

    /// The Service change number `generation` touches: a stride of 7919 (a prime) spreads
    /// consecutive changes over the whole cluster.
    pub fn changed_service(&self, generation: u32) -> usize {
        (generation as usize * 7919) % self.services.max(1)
    }

    /// The slices of Service `index` after its first pod moved to [`marker_ip`]`(generation)`.
    pub fn changed_slices(&self, index: usize, generation: u32) -> Vec<EndpointSlice> {
        let mut pods = self.pods(index);
        if let Some(first) = pods.first_mut() {
            *first = Pod::ready(&first.name, marker_ip(generation));
        }
        endpoint_slices(&self.service(index), &pods)
    }

    /// Every Service and its slices.
    pub fn objects(&self) -> ClusterObjects {
        let mut objects = ClusterObjects::default();
        for index in 0..self.services {
            let svc = self.service(index);
            objects
                .slices
                .extend(endpoint_slices(&svc, &self.pods(index)));
            objects.services.push(svc);
        }
        objects
    }
}

/// The address a change moves a server to: 172.16.0.0 + `generation` (distinct from every
/// address of the initial states, which are in 10.0.0.0/8).
pub fn marker_ip(generation: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 + (generation & 0x000f_ffff))
}

/// What a rendered document contains once a server at `ip` on `port` is in it: the end of its
/// quoted URL, `://ip:port"` (the closing quote keeps `10.0.0.1:80` from matching
/// `10.0.0.1:8080`).
pub fn server_marker(ip: Ipv4Addr, port: u16) -> String {
    format!("://{ip}:{port}\"")
}

/// The documents of many clusters, as a syncer sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncerShape {
    pub clusters: usize,
    pub services_per_cluster: usize,
    pub servers_per_service: usize,
    /// Every cluster exports the same service names (one application deployed everywhere: the
    /// merged file holds a union pool per name with every cluster's servers). Otherwise every
    /// cluster's names are its own (twice as many services in the merged file).
    pub shared_names: bool,
}

impl Default for SyncerShape {
    /// The spec's scale: 50 clusters of 2,000 services, 100,000 servers.
    fn default() -> Self {
        SyncerShape {
            clusters: 50,
            services_per_cluster: 2_000,
            servers_per_service: 1,
            shared_names: false,
        }
    }
}

impl SyncerShape {
    /// A shape of at least one cluster, service and server.
    pub fn at_least_one(
        clusters: usize,
        services_per_cluster: usize,
        servers_per_service: usize,
        shared_names: bool,
    ) -> SyncerShape {
        SyncerShape {
            clusters: clusters.max(1),
            services_per_cluster: services_per_cluster.max(1),
            servers_per_service: servers_per_service.max(1),
            shared_names,
        }
    }

    pub fn servers(&self) -> usize {
        self.clusters * self.services_per_cluster * self.servers_per_service
    }

    /// `cluster-00`, `cluster-01`, ...
    pub fn cluster(&self, index: usize) -> ClusterName {
        // Always a valid DNS label: lowercase, digits and one hyphen.
        ClusterName::parse(&format!("cluster-{index:02}"))
            .unwrap_or_else(|err| unreachable!("cluster-{index:02} is a DNS label: {err}"))
    }

    /// The address of server `server` of service `service` of cluster `cluster` in the
    /// initial state: `10.<cluster>.<n / 256>.<n % 256>`, `n` counting the cluster's servers.
    pub fn server_ip(&self, cluster: usize, service: usize, server: usize) -> Ipv4Addr {
        let cluster_octet = u32::try_from(cluster % 256).unwrap_or(0);
        let n = u32::try_from(service * self.servers_per_service + server).unwrap_or(0);
        Ipv4Addr::from((10 << 24) | (cluster_octet << 16) | (n & 0xffff))
    }

    /// What the merged file contains once every cluster's document is in it: the last server
    /// of the last cluster.
    pub fn last_server_marker(&self) -> String {
        server_marker(
            self.server_ip(
                self.clusters.saturating_sub(1),
                self.services_per_cluster.saturating_sub(1),
                self.servers_per_service.saturating_sub(1),
            ),
            TARGET_PORT,
        )
    }

    /// The backends of cluster `index`; with a `generation`, the first server of its first
    /// service is at [`marker_ip`]`(generation)`.
    pub fn backends(&self, index: usize, generation: Option<u32>) -> Vec<Backend> {
        let mut backends: Vec<Backend> = (0..self.services_per_cluster)
            .map(|s| {
                let service = if self.shared_names {
                    format!("svc-{s:05}")
                } else {
                    format!("c{index:02}-svc-{s:05}")
                };
                let targets = (0..self.servers_per_service)
                    .map(|k| {
                        let ip = match generation {
                            Some(g) if s == 0 && k == 0 => marker_ip(g),
                            _ => self.server_ip(index, s, k),
                        };
                        Target {
                            ip: IpAddr::V4(ip),
                            port: TARGET_PORT,
                        }
                    })
                    .collect::<BTreeSet<_>>();
                Backend {
                    name: format!("apps-{service}-http"),
                    origin: Origin {
                        namespace: "apps".to_owned(),
                        service,
                        port: "http".to_owned(),
                    },
                    protocol: Protocol::Http,
                    scheme: Scheme::Http,
                    options: HttpOptions::default(),
                    targets,
                }
            })
            .collect();
        backends.sort();
        backends
    }

    /// The object cluster `index`'s exporter would publish (see [`SyncerShape::backends`]).
    pub fn document_bytes(
        &self,
        index: usize,
        generation: Option<u32>,
    ) -> Result<Vec<u8>, ksd_exporter::document::DocumentBuildError> {
        let backends = self.backends(index, generation);
        let snapshot = ksd_exporter::document::build(
            &self.cluster(index),
            &[ObjectFormat::Traefik],
            &backends,
        )?;
        Ok(snapshot
            .outputs
            .into_iter()
            .next()
            .map(|output| output.bytes)
            .unwrap_or_default())
    }

    /// The object key of cluster `index` (relative to the prefix).
    pub fn key(&self, index: usize) -> String {
        ksd_shared::names::object_key(&self.cluster(index), ObjectFormat::Traefik)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksd_shared::traefik::{Limits, parse_cluster_document};

    #[test]
    fn exporter_objects_have_the_requested_size() {
        let shape = ExporterShape {
            namespaces: 3,
            services: 7,
            endpoints_per_service: 150,
        };
        let objects = shape.objects();
        assert_eq!(objects.services.len(), 7);
        // 150 endpoints do not fit one slice (100 at most).
        assert_eq!(objects.slices.len(), 14);
        assert_eq!(objects.endpoint_count(), shape.endpoints());
        let mut addresses: Vec<&String> = objects
            .slices
            .iter()
            .flat_map(|s| &s.endpoints)
            .flat_map(|e| &e.addresses)
            .collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), 7 * 150);
        assert_eq!(
            objects.services[4].metadata.namespace.as_deref(),
            Some("ns-001")
        );
        assert_eq!(shape.traefik_name(4), "ns-001-svc-00004-http");
    }

    #[test]
    fn a_change_keeps_slice_names_and_moves_one_address() {
        let shape = ExporterShape {
            namespaces: 1,
            services: 2,
            endpoints_per_service: 3,
        };
        let before = endpoint_slices(&shape.service(1), &shape.pods(1));
        let after = shape.changed_slices(1, 9);
        assert_eq!(before.len(), after.len());
        assert_eq!(before[0].metadata.name, after[0].metadata.name);
        assert_eq!(after[0].endpoints[0].addresses, ["172.16.0.9"]);
        assert_eq!(
            after[0].endpoints[1].addresses,
            before[0].endpoints[1].addresses
        );
    }

    #[test]
    fn syncer_documents_parse_and_carry_the_marker() {
        for shared_names in [false, true] {
            let shape = SyncerShape {
                clusters: 3,
                services_per_cluster: 5,
                servers_per_service: 2,
                shared_names,
            };
            assert_eq!(shape.servers(), 30);
            let bytes = shape.document_bytes(2, Some(300)).unwrap();
            let doc = parse_cluster_document(&bytes, &Limits::default()).unwrap();
            assert_eq!(doc.service_count(), 5);
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.contains(&server_marker(marker_ip(300), TARGET_PORT)),
                "{text}"
            );
            assert!(text.contains("://10.2.0.9:8080\""), "{text}");
            let last = String::from_utf8(shape.document_bytes(2, None).unwrap()).unwrap();
            assert!(last.contains(&shape.last_server_marker()), "{last}");
            let plain = String::from_utf8(shape.document_bytes(2, None).unwrap()).unwrap();
            assert!(!plain.contains("172.16."), "{plain}");
            assert_eq!(shape.key(2), "cluster-02.traefik.yaml");
        }
    }

    #[test]
    fn markers_do_not_match_longer_ports() {
        let marker = server_marker(Ipv4Addr::new(10, 0, 0, 1), 80);
        assert!(!"url: \"http://10.0.0.1:8080\"".contains(&marker));
        assert!("url: \"http://10.0.0.1:80\"".contains(&marker));
    }
}
