//! What no cluster document may put in the file, applied between the clusters' good documents
//! and the file: the address policy ([`ksd_shared::policy`]) on every server, per cluster, and
//! the service names the administrator's own files define ([`crate::admin_files`]).
//!
//! Pure. The touch points on the Traefik model are [`http_server_ip`], [`address_server_ip`]
//! and the two section walks ([`filter_servers`], [`remove_names`]); everything else works on
//! names and [`IpAddr`]s.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ksd_shared::merge::ClusterDocument;
use ksd_shared::names::ClusterName;
use ksd_shared::policy::{AddressPolicy, Refusal};
use ksd_shared::traefik::{AddressServer, Document, HttpServer, Protocol, ServiceName};

/// The three kinds of services a Traefik file holds; names are unique within one only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Http,
    Tcp,
    Udp,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Http, Kind::Tcp, Kind::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
        }
    }

    pub fn parse(section: &str) -> Option<Kind> {
        match section {
            "http" => Some(Kind::Http),
            "tcp" => Some(Kind::Tcp),
            "udp" => Some(Kind::Udp),
            _ => None,
        }
    }
}

impl From<Protocol> for Kind {
    fn from(protocol: Protocol) -> Kind {
        match protocol {
            Protocol::Http => Kind::Http,
            Protocol::Tcp => Kind::Tcp,
            Protocol::Udp => Kind::Udp,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Service names the administrator's files define, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminNames {
    names: BTreeSet<(Kind, String)>,
}

impl AdminNames {
    pub fn new() -> Self {
        AdminNames::default()
    }

    pub fn insert(&mut self, kind: Kind, name: impl Into<String>) {
        self.names.insert((kind, name.into()));
    }

    /// A name whose kind could not be told (read from a file that does not parse): protected in
    /// every kind.
    pub fn insert_any(&mut self, name: &str) {
        for kind in Kind::ALL {
            self.insert(kind, name);
        }
    }

    pub fn extend(&mut self, other: AdminNames) {
        self.names.extend(other.names);
    }

    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        // NB: a tuple lookup needs an owned key; the set is small (the admin's own services).
        self.names.contains(&(kind, name.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Something left out of the file, reported once per change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Exclusion {
    /// A server refused by the address policy; the rest of the service stays.
    Server {
        cluster: ClusterName,
        kind: Kind,
        service: String,
        server: String,
        reason: Refusal,
    },
    /// A service (a union pool or a cluster's own pool) whose name the administrator's files
    /// define: theirs keeps working, ours is left out.
    AdminName { kind: Kind, service: String },
}

impl Exclusion {
    /// A short, stable label for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Exclusion::Server { reason, .. } => reason.as_str(),
            Exclusion::AdminName { .. } => "admin_name",
        }
    }
}

/// The IP a server URL points at (`http://10.0.0.1:80`, `https://[fd00::1]:8443`): the typed
/// model holds IP literals only.
pub fn http_server_ip(server: &HttpServer) -> IpAddr {
    server.url.address().ip()
}

/// The IP of a TCP/UDP server address (`10.0.0.1:5432`, `[fd00::1]:5432`).
pub fn address_server_ip(server: &AddressServer) -> IpAddr {
    server.address.ip()
}

fn check(policy: &AddressPolicy, cluster: &ClusterName, ip: IpAddr) -> Result<(), Refusal> {
    policy.check(cluster.as_str(), ip)
}

/// Removes from every document the servers its cluster may not point at. A service whose
/// servers are all refused stays with none (Traefik answers 503), so routes naming it still
/// load.
pub fn filter_servers(documents: &mut [ClusterDocument], policy: &AddressPolicy) -> Vec<Exclusion> {
    let mut excluded = Vec::new();
    for ClusterDocument { cluster, document } in documents {
        excluded.extend(filter_document(cluster, document, policy));
    }
    excluded.sort();
    excluded
}

/// Whether `policy` refuses any server of `cluster`'s `document` (a read-only walk, so a
/// document with nothing to remove is never copied).
pub fn refuses_any(cluster: &ClusterName, document: &Document, policy: &AddressPolicy) -> bool {
    let refused = |ip| check(policy, cluster, ip).is_err();
    let http = document.http.iter().flat_map(|s| s.services.values());
    let address = [&document.tcp, &document.udp]
        .into_iter()
        .flat_map(|section| section.iter().flat_map(|s| s.services.values()));
    http.flat_map(|s| s.load_balancer.servers.iter())
        .any(|server| refused(http_server_ip(server)))
        || address
            .flat_map(|s| s.load_balancer.servers.iter())
            .any(|server| refused(address_server_ip(server)))
}

/// [`filter_servers`] for one cluster's document: what it left out, sorted.
pub fn filter_document(
    cluster: &ClusterName,
    document: &mut Document,
    policy: &AddressPolicy,
) -> Vec<Exclusion> {
    let mut excluded = Vec::new();
    let mut refuse = |kind: Kind, service: &str, server: String, reason: Refusal| {
        excluded.push(Exclusion::Server {
            cluster: cluster.clone(),
            kind,
            service: service.to_owned(),
            server,
            reason,
        });
    };
    for (name, service) in document.http.iter_mut().flat_map(|s| s.services.iter_mut()) {
        service.load_balancer.servers.retain(|server| {
            match check(policy, cluster, http_server_ip(server)) {
                Ok(()) => true,
                Err(reason) => {
                    refuse(Kind::Http, name, server.url.to_string(), reason);
                    false
                }
            }
        });
    }
    for (kind, section) in [
        (Kind::Tcp, &mut document.tcp),
        (Kind::Udp, &mut document.udp),
    ] {
        for (name, service) in section.iter_mut().flat_map(|s| s.services.iter_mut()) {
            service.load_balancer.servers.retain(|server| {
                match check(policy, cluster, address_server_ip(server)) {
                    Ok(()) => true,
                    Err(reason) => {
                        refuse(kind, name, server.address.to_string(), reason);
                        false
                    }
                }
            });
        }
    }
    excluded.sort();
    excluded
}

/// Removes from the merged document every service (union or per-cluster pool) whose name the
/// administrator's files define for the same kind.
pub fn remove_names(merged: &mut Document, admin: &AdminNames) -> Vec<Exclusion> {
    let mut excluded = Vec::new();
    if admin.is_empty() {
        return excluded;
    }
    let mut drop = |kind: Kind, name: &ServiceName| {
        if admin.contains(kind, name) {
            excluded.push(Exclusion::AdminName {
                kind,
                service: name.to_string(),
            });
            false
        } else {
            true
        }
    };
    if let Some(section) = merged.http.as_mut() {
        section.services.retain(|name, _| drop(Kind::Http, name));
    }
    if let Some(section) = merged.tcp.as_mut() {
        section.services.retain(|name, _| drop(Kind::Tcp, name));
    }
    if let Some(section) = merged.udp.as_mut() {
        section.services.retain(|name, _| drop(Kind::Udp, name));
    }
    // An emptied section is rendered as none at all (Traefik rejects `services: {}` as null).
    merged.normalize();
    excluded.sort();
    excluded
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use ksd_shared::policy::{parse_cidrs, parse_cluster_cidrs};
    use ksd_shared::traefik::{Limits, parse_cluster_document};

    use super::*;

    fn cluster(name: &str) -> ClusterName {
        ClusterName::parse(name).unwrap()
    }

    fn doc(name: &str, yaml: &str) -> ClusterDocument {
        ClusterDocument {
            cluster: cluster(name),
            document: parse_cluster_document(yaml.as_bytes(), &Limits::default()).unwrap(),
        }
    }

    const MIXED: &str = "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n          - url: \"http://10.1.0.5:80\"\n          - url: \"http://169.254.169.254:80\"\n          - url: \"http://127.0.0.1:8080\"\n          - url: \"http://[::1]:80\"\n          - url: \"http://[::ffff:127.0.0.1]:80\"\n          - url: \"http://0.0.0.0:80\"\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"10.1.0.6:5432\"\n          - address: \"[fe80::1]:5432\"\nudp:\n  services:\n    dns:\n      loadBalancer:\n        servers:\n          - address: \"10.2.0.1:53\"\n";

    #[test]
    fn server_ips_are_read_from_urls_and_addresses() {
        let url = |u: &str| HttpServer {
            url: u.parse().unwrap(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(http_server_ip(&url("http://10.0.0.1:80")), ip("10.0.0.1"));
        assert_eq!(
            http_server_ip(&url("https://[fd00::1]:8443")),
            ip("fd00::1")
        );
        assert_eq!(
            http_server_ip(&url("h2c://[::ffff:127.0.0.1]:80")),
            ip("::ffff:127.0.0.1")
        );
        let address = |a: &str| AddressServer {
            address: a.parse().unwrap(),
        };
        assert_eq!(address_server_ip(&address("[fe80::1]:5432")), ip("fe80::1"));
        assert_eq!(address_server_ip(&address("10.0.0.1:53")), ip("10.0.0.1"));
    }

    #[test]
    fn special_purpose_servers_are_left_out_and_the_rest_stays() {
        let mut docs = vec![doc("a", MIXED)];
        let excluded = filter_servers(&mut docs, &AddressPolicy::special_purpose_only());
        let http = &docs[0].document.http.as_ref().unwrap().services["web"];
        assert_eq!(
            http.load_balancer.servers,
            vec![HttpServer {
                url: "http://10.1.0.5:80".parse().unwrap()
            }]
        );
        let tcp = &docs[0].document.tcp.as_ref().unwrap().services["db"];
        assert_eq!(tcp.load_balancer.servers.len(), 1);
        let reasons: Vec<_> = excluded.iter().map(Exclusion::reason).collect();
        assert_eq!(excluded.len(), 6, "{excluded:?}");
        for reason in ["link_local", "loopback", "unspecified"] {
            assert!(reasons.contains(&reason), "{reasons:?}");
        }
        assert!(excluded.iter().all(|e| matches!(
            e,
            Exclusion::Server { cluster: c, .. } if c.as_str() == "a"
        )));
    }

    #[test]
    fn pinned_ranges_apply_per_cluster() {
        let policy = AddressPolicy::new(
            parse_cluster_cidrs("a=10.1.0.0/16;b=10.2.0.0/16").unwrap(),
            parse_cidrs("").unwrap(),
        );
        let mut docs = vec![doc("a", MIXED), doc("b", MIXED)];
        let excluded = filter_servers(&mut docs, &policy);
        let udp_servers = |d: &ClusterDocument| {
            d.document.udp.as_ref().unwrap().services["dns"]
                .load_balancer
                .servers
                .len()
        };
        // a may not use 10.2.0.1 (b's), b may use only that.
        assert_eq!(udp_servers(&docs[0]), 0, "the service stays, empty");
        assert_eq!(udp_servers(&docs[1]), 1);
        let outside: Vec<_> = excluded
            .iter()
            .filter(|e| e.reason() == "outside_allowed_ranges")
            .collect();
        // a: udp 10.2.0.1; b: http 10.1.0.5, tcp 10.1.0.6.
        assert_eq!(outside.len(), 3, "{outside:?}");
    }

    #[test]
    fn admin_names_remove_union_and_pools_of_the_same_kind_only() {
        let merged_yaml = "http:\n  services:\n    angular-blue-green:\n      loadBalancer:\n        servers:\n          - url: \"http://10.0.0.1:80\"\n    angular-blue-green.a:\n      loadBalancer:\n        servers:\n          - url: \"http://10.0.0.1:80\"\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"10.0.0.1:5432\"\n";
        let mut merged =
            ksd_shared::traefik::parse_merged_document(merged_yaml.as_bytes()).unwrap();
        let mut admin = AdminNames::new();
        admin.insert(Kind::Http, "angular-blue-green");
        admin.insert(Kind::Http, "db");
        let excluded = remove_names(&mut merged, &admin);
        assert_eq!(
            excluded,
            vec![Exclusion::AdminName {
                kind: Kind::Http,
                service: "angular-blue-green".into()
            }]
        );
        let http = merged.http.as_ref().unwrap();
        assert!(http.services.contains_key("angular-blue-green.a"));
        assert!(!http.services.contains_key("angular-blue-green"));
        assert!(merged.tcp.as_ref().unwrap().services.contains_key("db"));

        admin.insert(Kind::Http, "angular-blue-green.a");
        remove_names(&mut merged, &admin);
        assert!(merged.http.is_none(), "an emptied section is dropped");
    }
}
