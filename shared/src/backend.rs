//! The neutral backend model: what a cluster exposes, independent of Traefik's syntax.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::duration::ProbeDuration;
use crate::traefik::{CookieName, HealthPath, ServerAddress, ServerUrl, ValueError};

/// How Traefik talks to a backend: which `*.services` section it lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
    Udp,
}

impl Protocol {
    /// `http`, `tcp` or `udp`: the section of a Traefik document it lands in.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// URL scheme of an HTTP backend's servers. Only the schemes Traefik accepts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
    H2c,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::H2c => "h2c",
        }
    }
}

/// One endpoint: a pod IP and the port it listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub ip: IpAddr,
    pub port: u16,
}

impl Target {
    /// `ip:port`, with IPv6 bracketed (`[fd00::1]:5432`), as Traefik's TCP/UDP `address`.
    pub fn address(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    /// `scheme://ip:port`, with IPv6 bracketed, as Traefik's HTTP server `url`.
    pub fn url(&self, scheme: Scheme) -> String {
        format!("{}://{}", scheme.as_str(), self.address())
    }

    /// The typed server address; refused for port 0.
    pub fn server_address(&self) -> Result<ServerAddress, ValueError> {
        ServerAddress::new(self.ip, self.port)
    }

    /// The typed server URL; refused for port 0.
    pub fn server_url(&self, scheme: Scheme) -> Result<ServerUrl, ValueError> {
        self.server_address()
            .map(|address| ServerUrl::new(scheme, address))
    }
}

/// `SameSite` attribute of a sticky cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// Sticky sessions through a cookie (fields valid in both Traefik v2.11 and v3).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StickyCookie {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CookieName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
}

/// Active health check (fields valid in both Traefik v2.11 and v3). Durations are
/// [`ProbeDuration`]s: Go's grammar, 1 ms to 24 h, always written with a unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    pub path: HealthPath,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<ProbeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ProbeDuration>,
}

/// Per-service options of an HTTP backend. TCP and UDP backends carry none.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_host_header: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<StickyCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl HttpOptions {
    pub fn is_empty(&self) -> bool {
        self == &HttpOptions::default()
    }
}

/// Where a backend comes from in the cluster; informative, not part of the Traefik output.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub namespace: String,
    pub service: String,
    /// The Service port's name, else its number.
    pub port: String,
}

impl std::fmt::Display for Origin {
    /// `namespace/service:port`, as operators read it in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// One published port of one Service: a Traefik service with its servers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Traefik service name (from the name template, unique within a cluster).
    pub name: String,
    pub origin: Origin,
    pub protocol: Protocol,
    /// Meaningful for [`Protocol::Http`] only.
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default, skip_serializing_if = "HttpOptions::is_empty")]
    pub options: HttpOptions,
    /// Sorted and de-duplicated by construction.
    pub targets: BTreeSet<Target>,
}

/// The `backends` output format: a neutral, Traefik-independent list of a cluster's backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsDocument {
    pub cluster: String,
    pub backends: Vec<Backend>,
}
