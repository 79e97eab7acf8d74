//! One Service's backends from its facts and its slices' facts: the rules listed in the
//! [index](super) documentation.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ksd_shared::backend::{HttpOptions, Origin, Protocol, Scheme, Target};

use super::facts::{PortFacts, ServiceFacts, ServiceKey, SliceFacts};
use crate::annotations::{self, PREFIX, ServiceOptions};

/// Something in a Service or EndpointSlice the exporter had to ignore.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// `Service` or `EndpointSlice`.
    pub kind: &'static str,
    /// `namespace/name`.
    pub object: String,
    /// The annotation at fault, when one is.
    pub annotation: Option<String>,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.annotation {
            Some(annotation) => write!(
                f,
                "{} {}: annotation {annotation} ignored: {}",
                self.kind, self.object, self.reason
            ),
            None => write!(f, "{} {}: {}", self.kind, self.object, self.reason),
        }
    }
}

/// One published port of a Service, before it gets its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBackend {
    pub origin: Origin,
    pub protocol: Protocol,
    pub scheme: Scheme,
    pub options: HttpOptions,
    pub targets: BTreeSet<Target>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Computed {
    pub(crate) ports: Vec<PortBackend>,
    pub(crate) warnings: Vec<Warning>,
}

/// The backends of one Service from its facts and its slices' facts (by slice name).
pub(crate) fn compute(
    key: &ServiceKey,
    service: &ServiceFacts,
    slices: &[(&str, &SliceFacts)],
) -> Computed {
    let object = key.to_string();
    let mut warnings = Vec::new();
    let mut warn = |annotation: Option<String>, reason: String| {
        warnings.push(Warning {
            kind: "Service",
            object: object.clone(),
            annotation,
            reason,
        })
    };

    let (options, problems) = annotations::parse(
        service
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    for problem in problems {
        warn(Some(problem.annotation), problem.reason);
    }
    check_port_references(service, &options, &mut warn);

    let ports: Vec<PortBackend> = service
        .ports
        .iter()
        .filter_map(|port| port_backend(key, port, &options, slices, &mut warn))
        .collect();

    if !options.http.is_empty() && !ports.iter().any(|p| p.protocol == Protocol::Http) {
        warn(
            None,
            "load-balancer annotations apply to HTTP ports only, and the Service publishes none"
                .to_owned(),
        );
    }

    slice_warnings(key, slices, &mut warnings);
    warnings.sort();
    warnings.dedup();
    Computed { ports, warnings }
}

/// The backend of one Service port; `None` for a port that is excluded or cannot be balanced.
fn port_backend(
    key: &ServiceKey,
    port: &PortFacts,
    options: &ServiceOptions,
    slices: &[(&str, &SliceFacts)],
    warn: &mut impl FnMut(Option<String>, String),
) -> Option<PortBackend> {
    let id = port.id();
    if options.exclude_ports.iter().any(|r| port.is_named(r)) {
        return None;
    }
    let marked_tcp = options.tcp_ports.iter().any(|r| port.is_named(r));
    let port_scheme = options
        .port_schemes
        .iter()
        .find(|(r, _)| port.is_named(r))
        .map(|(_, s)| *s);
    let protocol = match port.protocol.as_str() {
        "UDP" => {
            if marked_tcp {
                warn(
                    Some(format!("{PREFIX}tcp-ports")),
                    format!("port {id} is a UDP port; it stays UDP"),
                );
            }
            Protocol::Udp
        }
        "TCP" if marked_tcp || port.app_protocol.as_deref() == Some("tcp") => Protocol::Tcp,
        "TCP" => Protocol::Http,
        "SCTP" => {
            warn(
                None,
                format!("port {id} is SCTP, which Traefik cannot balance; skipped"),
            );
            return None;
        }
        other => {
            warn(
                None,
                format!("port {id} has unknown protocol {other:?}; skipped"),
            );
            return None;
        }
    };
    if protocol != Protocol::Http && port_scheme.is_some() {
        warn(
            Some(format!("{PREFIX}scheme.{id}")),
            format!("port {id} is not an HTTP port"),
        );
    }
    let http = protocol == Protocol::Http;
    let scheme = if http {
        port_scheme
            .or(options.scheme)
            .or_else(|| inferred_scheme(port, &id, warn))
            .unwrap_or(Scheme::Http)
    } else {
        Scheme::Http
    };
    Some(PortBackend {
        origin: Origin {
            namespace: key.namespace.clone(),
            service: key.name.clone(),
            port: id,
        },
        protocol,
        scheme,
        options: if http {
            options.http.clone()
        } else {
            HttpOptions::default()
        },
        targets: targets(port, slices),
    })
}

/// The scheme a port's `appProtocol`, else its name, implies (warning about an `appProtocol`
/// that says nothing about HTTP).
fn inferred_scheme(
    port: &PortFacts,
    id: &str,
    warn: &mut impl FnMut(Option<String>, String),
) -> Option<Scheme> {
    let from_app = port.app_protocol.as_deref().and_then(|app| {
        let scheme = scheme_from_app_protocol(app);
        if scheme.is_none() {
            warn(
                None,
                format!(
                    "port {id} has appProtocol {app:?}, which is not an HTTP scheme the \
                     exporter knows; using the port name"
                ),
            );
        }
        scheme
    });
    from_app.or_else(|| port.name.as_deref().and_then(scheme_from_port_name))
}

/// Warnings about the slices of a Service: unsupported address types, addresses that are not
/// IP addresses.
fn slice_warnings(key: &ServiceKey, slices: &[(&str, &SliceFacts)], warnings: &mut Vec<Warning>) {
    for (name, slice) in slices {
        let slice_warning = |reason: String| Warning {
            kind: "EndpointSlice",
            object: format!("{}/{name}", key.namespace),
            annotation: None,
            reason,
        };
        match slice.address_type.as_str() {
            "IPv4" | "IPv6" => {}
            other => warnings.push(slice_warning(format!(
                "addressType {other} is not supported (IPv4 and IPv6 are); skipped"
            ))),
        }
        if !slice.invalid.is_empty() {
            let shown: Vec<&str> = slice.invalid.iter().take(3).map(String::as_str).collect();
            warnings.push(slice_warning(format!(
                "{} endpoint address(es) are not IP addresses and were skipped: {}",
                slice.invalid.len(),
                shown.join(", ")
            )));
        }
    }
}

/// Warns about annotations that name ports the Service does not have (typos, renamed ports).
fn check_port_references(
    service: &ServiceFacts,
    options: &ServiceOptions,
    warn: &mut impl FnMut(Option<String>, String),
) {
    let exists = |r: &str| service.ports.iter().any(|p| p.is_named(r));
    for (annotation, references) in [
        ("tcp-ports", &options.tcp_ports),
        ("exclude-ports", &options.exclude_ports),
    ] {
        for reference in references.iter().filter(|r| !exists(r)) {
            warn(
                Some(format!("{PREFIX}{annotation}")),
                format!("the Service has no port {reference}"),
            );
        }
    }
    for reference in options.port_schemes.keys().filter(|r| !exists(r)) {
        warn(
            Some(format!("{PREFIX}scheme.{reference}")),
            format!("the Service has no port {reference}"),
        );
    }
}

/// The servers of one Service port: every ready address of every slice, at the slice port of
/// the same name; when there is none, the terminating addresses that are still serving.
fn targets(port: &PortFacts, slices: &[(&str, &SliceFacts)]) -> BTreeSet<Target> {
    let ready = targets_from(port, slices, |slice| &slice.addresses);
    if ready.is_empty() {
        targets_from(port, slices, |slice| &slice.draining)
    } else {
        ready
    }
}

fn targets_from(
    port: &PortFacts,
    slices: &[(&str, &SliceFacts)],
    addresses: impl Fn(&SliceFacts) -> &Vec<IpAddr>,
) -> BTreeSet<Target> {
    let wanted = port.name.as_deref().unwrap_or("");
    let mut targets = BTreeSet::new();
    for (_, slice) in slices {
        let Some(number) = slice
            .ports
            .iter()
            .find(|(name, _)| name == wanted)
            .and_then(|(_, number)| *number)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
        else {
            continue;
        };
        targets.extend(addresses(slice).iter().map(|ip| Target {
            ip: *ip,
            port: number,
        }));
    }
    targets
}

/// The scheme an `appProtocol` implies; `None` for values that say nothing about HTTP.
pub fn scheme_from_app_protocol(app_protocol: &str) -> Option<Scheme> {
    match app_protocol.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" => Some(Scheme::Http),
        "https" | "kubernetes.io/wss" => Some(Scheme::Https),
        "h2c" | "kubernetes.io/h2c" | "grpc" => Some(Scheme::H2c),
        _ => None,
    }
}

/// The scheme a port name implies by convention (`https`, `https-admin`, `grpc-api`, ...).
pub fn scheme_from_port_name(name: &str) -> Option<Scheme> {
    let name = name.to_ascii_lowercase();
    let is = |prefix: &str| {
        name == prefix
            || name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
    };
    if is("https") {
        Some(Scheme::Https)
    } else if is("h2c") || is("grpc") {
        Some(Scheme::H2c)
    } else if is("http") {
        Some(Scheme::Http)
    } else {
        None
    }
}
