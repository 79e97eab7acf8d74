//! The Traefik dynamic-configuration model for the subset the project writes: services only
//! (`http`, `tcp`, `udp`), each a `loadBalancer` with `servers` and the supported options.
//!
//! Field names are Traefik's (camelCase). Every value is typed ([`ServerUrl`],
//! [`ServerAddress`], [`ServiceName`], [`CookieName`], [`HealthPath`], [`ProbeDuration`]) and
//! checked once, when it is built or deserialized; `http`, `tcp` and `udp` are one generic
//! [`Section`], so every walk over a document is written once. Around the model:
//! - [`render`]: a hand-written, deterministic YAML emitter (sorted services and servers, every
//!   string double-quoted, durations with units, no `{}`/`null`/`{{` ever written);
//! - [`parse_cluster_document`] / [`parse_merged_document`]: serde (`serde_yaml`) into the
//!   model, after a pre-pass for what serde cannot see (size, `{{`, anchors, aliases, tags,
//!   empty elements Traefik refuses);
//! - [`validate`]: the rules across values (a name in one section only, a server listed once,
//!   plain names only in cluster documents).

mod blocks;
mod error;
mod prepass;
mod read;
mod render;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::backend::Backend;
pub use crate::backend::{HealthCheck, Protocol, SameSite, Scheme, StickyCookie};
pub use crate::duration::{DurationError, GoDuration, ProbeDuration};
pub use blocks::Blocks;
pub use error::{DEFAULT_MAX_BYTES, DocumentError, Limits};
pub use read::{parse_cluster_document, parse_merged_document};
pub use render::{Rendered, render, render_service};
pub use validate::{validate, validate_merged};
pub use values::{
    CookieName, FromStrVisitor, HealthPath, ServerAddress, ServerUrl, ServiceName, ValueError,
};

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Document {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSection>,
}

/// One of `http`, `tcp`, `udp`: services by name, each a load balancer of kind `L`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Section<L> {
    pub services: BTreeMap<ServiceName, Service<L>>,
}

impl<L> Default for Section<L> {
    fn default() -> Self {
        Section {
            services: BTreeMap::new(),
        }
    }
}

/// A service: exactly one `loadBalancer` (weighted, failover and mirroring are not written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service<L> {
    pub load_balancer: L,
}

pub type HttpSection = Section<HttpLoadBalancer>;
pub type TcpSection = Section<AddressLoadBalancer>;
pub type UdpSection = Section<AddressLoadBalancer>;
pub type HttpService = Service<HttpLoadBalancer>;
pub type TcpService = Service<AddressLoadBalancer>;
pub type UdpService = Service<AddressLoadBalancer>;

/// What the walks over a document need from a load balancer.
pub trait LoadBalancer: Clone + Default {
    /// One server: ordered, printable as the value Traefik reads.
    type Server: Clone + Ord + fmt::Display;
    /// The server's one field: `url` or `address`.
    const SERVER_FIELD: &'static str;

    fn servers(&self) -> &[Self::Server];
    fn servers_mut(&mut self) -> &mut Vec<Self::Server>;

    /// The HTTP options (`passHostHeader`, `sticky`, `healthCheck`), for the kind that has them.
    fn http_options(&self) -> Option<&HttpLoadBalancer> {
        None
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    pub cookie: StickyCookie,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServer {
    pub url: ServerUrl,
}

/// A TCP or UDP load balancer: servers by `address` (`ip:port`, IPv6 bracketed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressLoadBalancer {
    pub servers: Vec<AddressServer>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressServer {
    pub address: ServerAddress,
}

impl fmt::Display for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

impl fmt::Display for AddressServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address.fmt(f)
    }
}

impl LoadBalancer for HttpLoadBalancer {
    type Server = HttpServer;
    const SERVER_FIELD: &'static str = "url";

    fn servers(&self) -> &[HttpServer] {
        &self.servers
    }

    fn servers_mut(&mut self) -> &mut Vec<HttpServer> {
        &mut self.servers
    }

    fn http_options(&self) -> Option<&HttpLoadBalancer> {
        Some(self)
    }
}

impl LoadBalancer for AddressLoadBalancer {
    type Server = AddressServer;
    const SERVER_FIELD: &'static str = "address";

    fn servers(&self) -> &[AddressServer] {
        &self.servers
    }

    fn servers_mut(&mut self) -> &mut Vec<AddressServer> {
        &mut self.servers
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

/// A walk over a document's sections, written once for every kind of load balancer:
/// [`Document::visit`] calls [`SectionVisitor::visit`] for `http`, `tcp` and `udp` in order.
pub trait SectionVisitor {
    fn visit<L: LoadBalancer>(&mut self, protocol: Protocol, section: &Section<L>);
}

impl<L: LoadBalancer> Section<L> {
    /// Servers over all services.
    pub fn server_count(&self) -> usize {
        self.services
            .values()
            .map(|s| s.load_balancer.servers().len())
            .sum()
    }

    fn normalize(section: &mut Option<Section<L>>) {
        if let Some(s) = section {
            for service in s.services.values_mut() {
                let servers = service.load_balancer.servers_mut();
                servers.sort();
                servers.dedup();
            }
        }
        if section.as_ref().is_some_and(|s| s.services.is_empty()) {
            *section = None;
        }
    }
}

impl Document {
    /// Calls `visitor` for each section present, `http`, `tcp`, `udp` in order.
    pub fn visit(&self, visitor: &mut impl SectionVisitor) {
        if let Some(http) = &self.http {
            visitor.visit(Protocol::Http, http);
        }
        if let Some(tcp) = &self.tcp {
            visitor.visit(Protocol::Tcp, tcp);
        }
        if let Some(udp) = &self.udp {
            visitor.visit(Protocol::Udp, udp);
        }
    }

    /// Number of services over all sections.
    pub fn service_count(&self) -> usize {
        self.http.as_ref().map_or(0, |s| s.services.len())
            + self.tcp.as_ref().map_or(0, |s| s.services.len())
            + self.udp.as_ref().map_or(0, |s| s.services.len())
    }

    /// Number of servers over all services of all sections.
    pub fn server_count(&self) -> usize {
        self.http.as_ref().map_or(0, Section::server_count)
            + self.tcp.as_ref().map_or(0, Section::server_count)
            + self.udp.as_ref().map_or(0, Section::server_count)
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
        Section::normalize(&mut self.http);
        Section::normalize(&mut self.tcp);
        Section::normalize(&mut self.udp);
    }
}

/// Builds a cluster's Traefik document from its backends: HTTP backends become `http.services`
/// (servers by `url`, with the backend's scheme), TCP `tcp.services` and UDP `udp.services`
/// (servers by `address`). Sections without services are `None`; servers are sorted and
/// de-duplicated.
///
/// Refused: a backend name that is not a plain service name, a target with port 0. Backend
/// names are expected unique (see [`crate::names::assign_names`]); if two backends of the same
/// protocol share a name anyway, their servers are united and the first one's options are
/// kept, so the result is still deterministic.
pub fn document_from_backends(backends: &[Backend]) -> Result<Document, DocumentError> {
    let mut doc = Document::default();
    for backend in backends {
        let name = ServiceName::parse(&backend.name)
            .map_err(|source| DocumentError::invalid_name(backend.protocol, source))?;
        let invalid = |e: ValueError| DocumentError::InvalidServer {
            line: None,
            path: format!("{}.services.{name}", backend.protocol.as_str()),
            message: e.to_string(),
        };
        match backend.protocol {
            Protocol::Http => {
                let lb = add_service(&mut doc.http, name.clone(), || {
                    let options = &backend.options;
                    HttpLoadBalancer {
                        servers: Vec::new(),
                        pass_host_header: options.pass_host_header,
                        sticky: options
                            .sticky_cookie
                            .clone()
                            .map(|cookie| Sticky { cookie }),
                        health_check: options.health_check.clone(),
                    }
                });
                for target in &backend.targets {
                    let url = target.server_url(backend.scheme).map_err(invalid)?;
                    lb.servers.push(HttpServer { url });
                }
            }
            Protocol::Tcp | Protocol::Udp => {
                let section = match backend.protocol {
                    Protocol::Tcp => &mut doc.tcp,
                    _ => &mut doc.udp,
                };
                let lb = add_service(section, name.clone(), AddressLoadBalancer::default);
                for target in &backend.targets {
                    let address = target.server_address().map_err(invalid)?;
                    lb.servers.push(AddressServer { address });
                }
            }
        }
    }
    doc.normalize();
    Ok(doc)
}

/// The load balancer of `name` in `section`, created (with `make`) when new.
fn add_service<L>(
    section: &mut Option<Section<L>>,
    name: ServiceName,
    make: impl FnOnce() -> L,
) -> &mut L {
    let services = &mut section
        .get_or_insert_with(|| Section {
            services: BTreeMap::new(),
        })
        .services;
    &mut services
        .entry(name)
        .or_insert_with(|| Service {
            load_balancer: make(),
        })
        .load_balancer
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
                path: "/ready".parse().unwrap(),
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
        let doc = document_from_backends(&backends).unwrap();
        validate(&doc).unwrap();
        let http = &doc.http.as_ref().unwrap().services;
        let lb = &http["default-web-http"].load_balancer;
        let urls: Vec<String> = lb.servers.iter().map(|s| s.url.to_string()).collect();
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
        assert_eq!(document_from_backends(&[]).unwrap(), Document::default());
        let only_tcp =
            document_from_backends(&[backend("pg", Protocol::Tcp, Scheme::Http, &[])]).unwrap();
        assert!(only_tcp.http.is_none() && only_tcp.udp.is_none() && only_tcp.tcp.is_some());
    }

    #[test]
    fn document_helpers() {
        let mut doc = document_from_backends(&[
            backend("a", Protocol::Http, Scheme::Http, &[("10.0.0.1", 80)]),
            backend("b", Protocol::Tcp, Scheme::Http, &[("10.0.0.1", 81)]),
        ])
        .unwrap();
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
                url: "http://10.0.0.9:80".parse().unwrap(),
            },
        );
        servers.push(HttpServer {
            url: "http://10.0.0.1:80".parse().unwrap(),
        });
        doc.udp = Some(UdpSection::default());
        let normalized = doc.normalized();
        assert!(normalized.udp.is_none());
        let urls: Vec<String> = normalized.http.as_ref().unwrap().services["a"]
            .load_balancer
            .servers
            .iter()
            .map(|s| s.url.to_string())
            .collect();
        assert_eq!(urls, ["http://10.0.0.1:80", "http://10.0.0.9:80"]);
    }

    #[test]
    fn bad_backends_are_refused() {
        let err = document_from_backends(&[backend("a.b", Protocol::Http, Scheme::Http, &[])])
            .unwrap_err();
        assert_eq!(err.reason(), "invalid_name");
        let err = document_from_backends(&[backend(
            "a",
            Protocol::Tcp,
            Scheme::Http,
            &[("10.0.0.1", 0)],
        )])
        .unwrap_err();
        assert_eq!(err.reason(), "invalid_server");
        assert!(err.to_string().contains("tcp.services.a"), "{err}");
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
