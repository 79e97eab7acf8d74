//! The Traefik dynamic-configuration model for the subset the project writes: services only
//! (`http`, `tcp`, `udp`), each a `loadBalancer` with `servers` and the supported options.
//!
//! Field names are Traefik's (camelCase). Three operations surround the model:
//! - [`render`]: a hand-written, deterministic YAML emitter (sorted services and servers, every
//!   string double-quoted, no `{}`/`null`/`{{` ever written);
//! - [`parse_cluster_document`]: a strict reader for documents fetched from the bucket (size
//!   limit, no template markers, no anchors/aliases, no duplicate keys, no unknown fields, no
//!   routers or middlewares, no empty elements Traefik would reject);
//! - [`validate`]: the rules every cluster document's content must follow (names, server URLs
//!   and addresses, options).

mod parse;
mod render;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, HealthCheck, Protocol, StickyCookie};

pub use parse::{
    DEFAULT_MAX_BYTES, DocumentError, Limits, parse_cluster_document, parse_merged_document,
};
pub use render::{Rendered, render};
pub use validate::{validate, validate_merged};

/// Which Traefik major version a rendered document must be valid for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TraefikVersion {
    V2,
    #[default]
    V3,
}

impl TraefikVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TraefikVersion::V2 => "v2",
            TraefikVersion::V3 => "v3",
        }
    }

    /// Reads `v2`/`v3` (also `2`/`3`, any case), as `TRAEFIK_VERSION` is written.
    pub fn parse(value: &str) -> Result<TraefikVersion, UnknownVersion> {
        match value.trim().to_ascii_lowercase().as_str() {
            "v2" | "2" => Ok(TraefikVersion::V2),
            "v3" | "3" => Ok(TraefikVersion::V3),
            _ => Err(UnknownVersion {
                value: crate::names::shorten(value),
            }),
        }
    }
}

impl fmt::Display for TraefikVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TraefikVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraefikVersion::parse(s)
    }
}

/// A Traefik version other than `v2` or `v3` was asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown Traefik version {value:?}: expected \"v2\" or \"v3\"")]
pub struct UnknownVersion {
    pub value: String,
}

/// A Traefik dynamic-configuration document holding only services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSection>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub services: BTreeMap<String, HttpService>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    pub services: BTreeMap<String, TcpService>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    pub services: BTreeMap<String, UdpService>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpService {
    pub load_balancer: HttpLoadBalancer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpLoadBalancer {
    /// Sorted by URL when rendered. May be empty (Traefik answers 503).
    pub servers: Vec<HttpServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_host_header: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    pub cookie: StickyCookie,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServer {
    pub url: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpService {
    pub load_balancer: AddressLoadBalancer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UdpService {
    pub load_balancer: AddressLoadBalancer,
}

/// A TCP or UDP load balancer: servers by `address` (`ip:port`, IPv6 bracketed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressLoadBalancer {
    pub servers: Vec<AddressServer>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressServer {
    pub address: String,
}

/// The three sections of a document, in the order they are rendered and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Http,
    Tcp,
    Udp,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Http => "http",
            Section::Tcp => "tcp",
            Section::Udp => "udp",
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HttpLoadBalancer {
    /// True when the two load balancers carry the same options (everything but `servers`).
    pub fn same_options(&self, other: &HttpLoadBalancer) -> bool {
        self.pass_host_header == other.pass_host_header
            && self.sticky == other.sticky
            && self.health_check == other.health_check
    }
}

impl Document {
    /// Number of services over all sections.
    pub fn service_count(&self) -> usize {
        self.http.as_ref().map_or(0, |s| s.services.len())
            + self.tcp.as_ref().map_or(0, |s| s.services.len())
            + self.udp.as_ref().map_or(0, |s| s.services.len())
    }

    /// True when no section holds a service (a comment-only document when rendered).
    pub fn is_empty(&self) -> bool {
        self.service_count() == 0
    }

    /// The canonical form of the document, as [`render`] writes it and [`parse_cluster_document`]
    /// reads it back: sections without services are `None`, servers are sorted and
    /// de-duplicated.
    pub fn normalized(mut self) -> Document {
        self.normalize();
        self
    }

    /// In-place [`Document::normalized`].
    pub fn normalize(&mut self) {
        fn sort_dedup<T: Ord>(servers: &mut Vec<T>) {
            servers.sort();
            servers.dedup();
        }
        for service in self.http.iter_mut().flat_map(|s| s.services.values_mut()) {
            sort_dedup(&mut service.load_balancer.servers);
        }
        for service in self.tcp.iter_mut().flat_map(|s| s.services.values_mut()) {
            sort_dedup(&mut service.load_balancer.servers);
        }
        for service in self.udp.iter_mut().flat_map(|s| s.services.values_mut()) {
            sort_dedup(&mut service.load_balancer.servers);
        }
        if self.http.as_ref().is_some_and(|s| s.services.is_empty()) {
            self.http = None;
        }
        if self.tcp.as_ref().is_some_and(|s| s.services.is_empty()) {
            self.tcp = None;
        }
        if self.udp.as_ref().is_some_and(|s| s.services.is_empty()) {
            self.udp = None;
        }
    }
}

/// Builds a cluster's Traefik document from its backends: HTTP backends become `http.services`
/// (servers by `url`, with the backend's scheme), TCP `tcp.services` and UDP `udp.services`
/// (servers by `address`). Sections without services are `None`.
///
/// Backend names are expected unique (see [`crate::names::assign_names`]); if two backends of
/// the same protocol share a name anyway, their servers are united and the first one's options
/// are kept, so the result is still deterministic.
pub fn document_from_backends(backends: &[Backend]) -> Document {
    let mut http: BTreeMap<String, (HttpLoadBalancer, BTreeSet<String>)> = BTreeMap::new();
    let mut tcp: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut udp: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for backend in backends {
        match backend.protocol {
            Protocol::Http => {
                let (_, servers) = http.entry(backend.name.clone()).or_insert_with(|| {
                    let options = &backend.options;
                    let load_balancer = HttpLoadBalancer {
                        servers: Vec::new(),
                        pass_host_header: options.pass_host_header,
                        sticky: options
                            .sticky_cookie
                            .clone()
                            .map(|cookie| Sticky { cookie }),
                        health_check: options.health_check.clone(),
                    };
                    (load_balancer, BTreeSet::new())
                });
                servers.extend(backend.targets.iter().map(|t| t.url(backend.scheme)));
            }
            Protocol::Tcp => tcp
                .entry(backend.name.clone())
                .or_default()
                .extend(backend.targets.iter().map(|t| t.address())),
            Protocol::Udp => udp
                .entry(backend.name.clone())
                .or_default()
                .extend(backend.targets.iter().map(|t| t.address())),
        }
    }

    let address_lb = |servers: BTreeSet<String>| AddressLoadBalancer {
        servers: servers
            .into_iter()
            .map(|address| AddressServer { address })
            .collect(),
    };
    let http_services: BTreeMap<String, HttpService> = http
        .into_iter()
        .map(|(name, (mut load_balancer, servers))| {
            load_balancer.servers = servers.into_iter().map(|url| HttpServer { url }).collect();
            (name, HttpService { load_balancer })
        })
        .collect();
    let tcp_services: BTreeMap<String, TcpService> = tcp
        .into_iter()
        .map(|(name, servers)| {
            let load_balancer = address_lb(servers);
            (name, TcpService { load_balancer })
        })
        .collect();
    let udp_services: BTreeMap<String, UdpService> = udp
        .into_iter()
        .map(|(name, servers)| {
            let load_balancer = address_lb(servers);
            (name, UdpService { load_balancer })
        })
        .collect();
    Document {
        http: (!http_services.is_empty()).then_some(HttpSection {
            services: http_services,
        }),
        tcp: (!tcp_services.is_empty()).then_some(TcpSection {
            services: tcp_services,
        }),
        udp: (!udp_services.is_empty()).then_some(UdpSection {
            services: udp_services,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::backend::{HttpOptions, Origin, Scheme, Target};

    fn backend(name: &str, protocol: Protocol, scheme: Scheme, targets: &[(&str, u16)]) -> Backend {
        Backend {
            name: name.to_owned(),
            origin: Origin::default(),
            protocol,
            scheme,
            options: HttpOptions::default(),
            targets: targets
                .iter()
                .map(|(ip, port)| Target {
                    ip: ip.parse::<IpAddr>().unwrap(),
                    port: *port,
                })
                .collect(),
        }
    }

    #[test]
    fn backends_become_sections_by_protocol() {
        let mut web = backend(
            "default-web-http",
            Protocol::Http,
            Scheme::H2c,
            &[("fd00::1", 8080), ("10.0.0.1", 8080)],
        );
        web.options = HttpOptions {
            pass_host_header: Some(false),
            sticky_cookie: Some(StickyCookie::default()),
            health_check: Some(HealthCheck {
                path: "/ready".to_owned(),
                interval: None,
                timeout: None,
            }),
        };
        let backends = vec![
            web,
            backend(
                "db-pg-5432",
                Protocol::Tcp,
                Scheme::Http,
                &[("fd00::2", 5432)],
            ),
            backend("dns-53", Protocol::Udp, Scheme::Http, &[("10.0.0.3", 53)]),
            backend("idle", Protocol::Http, Scheme::Https, &[]),
        ];
        let doc = document_from_backends(&backends);
        validate(&doc).unwrap();
        let http = &doc.http.as_ref().unwrap().services;
        let lb = &http["default-web-http"].load_balancer;
        let urls: Vec<&str> = lb.servers.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(urls, ["h2c://10.0.0.1:8080", "h2c://[fd00::1]:8080"]);
        assert_eq!(lb.pass_host_header, Some(false));
        assert_eq!(lb.sticky, Some(Sticky::default()));
        assert_eq!(lb.health_check.as_ref().unwrap().path, "/ready");
        assert!(http["idle"].load_balancer.servers.is_empty());
        let tcp = &doc.tcp.as_ref().unwrap().services;
        assert_eq!(
            tcp["db-pg-5432"].load_balancer.servers[0].address,
            "[fd00::2]:5432"
        );
        let udp = &doc.udp.as_ref().unwrap().services;
        assert_eq!(
            udp["dns-53"].load_balancer.servers[0].address,
            "10.0.0.3:53"
        );
    }

    #[test]
    fn no_backends_no_sections() {
        assert_eq!(document_from_backends(&[]), Document::default());
        let only_tcp = document_from_backends(&[backend("pg", Protocol::Tcp, Scheme::Http, &[])]);
        assert!(only_tcp.http.is_none() && only_tcp.udp.is_none() && only_tcp.tcp.is_some());
    }

    #[test]
    fn document_helpers() {
        let mut doc = document_from_backends(&[
            backend("a", Protocol::Http, Scheme::Http, &[("10.0.0.1", 80)]),
            backend("b", Protocol::Tcp, Scheme::Http, &[("10.0.0.1", 81)]),
        ]);
        assert_eq!(doc.service_count(), 2);
        assert!(!doc.is_empty());
        let servers = &mut doc
            .http
            .as_mut()
            .unwrap()
            .services
            .get_mut("a")
            .unwrap()
            .load_balancer
            .servers;
        servers.insert(
            0,
            HttpServer {
                url: "http://10.0.0.9:80".to_owned(),
            },
        );
        servers.push(HttpServer {
            url: "http://10.0.0.1:80".to_owned(),
        });
        doc.udp = Some(UdpSection::default());
        let normalized = doc.normalized();
        assert!(normalized.udp.is_none());
        let urls: Vec<&str> = normalized.http.as_ref().unwrap().services["a"]
            .load_balancer
            .servers
            .iter()
            .map(|s| s.url.as_str())
            .collect();
        assert_eq!(urls, ["http://10.0.0.1:80", "http://10.0.0.9:80"]);
    }

    #[test]
    fn traefik_versions() {
        assert_eq!(TraefikVersion::parse("v2").unwrap(), TraefikVersion::V2);
        assert_eq!(TraefikVersion::parse("V3").unwrap(), TraefikVersion::V3);
        assert_eq!("3".parse::<TraefikVersion>().unwrap(), TraefikVersion::V3);
        assert_eq!(TraefikVersion::default(), TraefikVersion::V3);
        assert_eq!(TraefikVersion::V2.to_string(), "v2");
        let err = TraefikVersion::parse("v1").unwrap_err().to_string();
        assert!(err.contains("\"v1\""), "{err}");
    }
}
