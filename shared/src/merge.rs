//! Many clusters' documents into the one file Traefik reads.
//!
//! For every service name the merged document holds:
//! - a **union pool** under the plain name, with the servers of every cluster that exports the
//!   name: what `main.yml` routes to by default;
//! - a **per-cluster pool** under [`pool_name`] (`<service>.<cluster>`) for every cluster that
//!   exports it, with that cluster's own servers and options: what `main.yml` uses to weight or
//!   fail over between clusters. It is emitted even when a single cluster exports the name, so
//!   the admin's references keep working when clusters come and go.
//!
//! Conflicts are settled by the smallest cluster name, so the result depends only on the set
//! of clusters, never on the order they were fetched in.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::backend::Protocol;
use crate::names::{ClusterName, pool_name};
use crate::traefik::{
    AddressLoadBalancer, Document, HttpLoadBalancer, HttpService, Section, Service, ServiceName,
};

/// One cluster's last good document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDocument {
    pub cluster: ClusterName,
    pub document: Document,
}

/// The merged document and every conflict met while building its union pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub document: Document,
    /// Sorted by service, kind and losing cluster.
    pub conflicts: Vec<Conflict>,
}

/// What two clusters disagree on for one service name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConflictKind {
    /// One exports the name as HTTP, the other as TCP or UDP (or TCP against UDP).
    Protocol,
    /// Both export HTTP, with different `passHostHeader`, `sticky` or `healthCheck`.
    Options,
}

impl ConflictKind {
    /// A short, stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::Protocol => "protocol",
            ConflictKind::Options => "options",
        }
    }
}

/// A disagreement settled in favour of `winner` (the smallest cluster name exporting the
/// service). `loser`'s own pool is unaffected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conflict {
    pub service: String,
    pub kind: ConflictKind,
    pub winner: ClusterName,
    pub loser: ClusterName,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = &self.service;
        let (winner, loser) = (&self.winner, &self.loser);
        match self.kind {
            ConflictKind::Protocol => write!(
                f,
                "service {service:?} is exported with a different protocol by clusters \
                 {winner} and {loser}: the union pool {service:?} uses {winner}'s protocol and \
                 leaves out {loser}'s servers, which stay in pool {:?}",
                pool_name(service, loser)
            ),
            ConflictKind::Options => write!(
                f,
                "service {service:?} is exported with different load-balancer options by \
                 clusters {winner} and {loser}: the union pool {service:?} uses {winner}'s \
                 options; {loser}'s pool {:?} keeps its own",
                pool_name(service, loser)
            ),
        }
    }
}

/// One cluster's service of some name: HTTP, or TCP/UDP by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export<'a> {
    Http(&'a HttpService),
    Address(Protocol, &'a Service<AddressLoadBalancer>),
}

impl<'a> Export<'a> {
    pub fn protocol(&self) -> Protocol {
        match self {
            Export::Http(_) => Protocol::Http,
            Export::Address(protocol, _) => *protocol,
        }
    }

    /// The service `name` in `document`, whichever section holds it (a validated cluster
    /// document holds a name in one section only; `http` is looked at first).
    pub fn find(document: &'a Document, name: &ServiceName) -> Option<Export<'a>> {
        if let Some(service) = document.http.as_ref().and_then(|s| s.services.get(name)) {
            return Some(Export::Http(service));
        }
        [
            (Protocol::Tcp, &document.tcp),
            (Protocol::Udp, &document.udp),
        ]
        .into_iter()
        .find_map(|(protocol, section)| {
            let service = section.as_ref()?.services.get(name)?;
            Some(Export::Address(protocol, service))
        })
    }

    /// Every service of `document` with its name, `http` first.
    pub fn all(document: &'a Document) -> impl Iterator<Item = (&'a ServiceName, Export<'a>)> {
        let http = document
            .http
            .iter()
            .flat_map(|s| s.services.iter())
            .map(|(name, service)| (name, Export::Http(service)));
        let address = [
            (Protocol::Tcp, &document.tcp),
            (Protocol::Udp, &document.udp),
        ]
        .into_iter()
        .flat_map(|(protocol, section)| {
            section
                .iter()
                .flat_map(|s| s.services.iter())
                .map(move |(name, service)| (name, Export::Address(protocol, service)))
        });
        http.chain(address)
    }
}

/// Where [`merge_service`] puts what it builds for one name.
pub trait MergeSink {
    /// A service of the merged document: the union pool under the plain name (`union`), or a
    /// cluster's own pool under [`pool_name`].
    fn http(&mut self, name: ServiceName, service: HttpService, union: bool);
    /// A TCP or UDP service, as [`MergeSink::http`].
    fn address(
        &mut self,
        protocol: Protocol,
        name: ServiceName,
        service: Service<AddressLoadBalancer>,
        union: bool,
    );
    fn conflict(&mut self, conflict: Conflict);
}

/// Every name with its exporters, in cluster-name order: the first exporter settles the
/// union pool.
type Exports<'a> = HashMap<&'a ServiceName, Vec<(&'a ClusterName, Export<'a>)>>;

/// Merges the clusters' documents into one.
///
/// Each cluster is expected once in `clusters` (the caller keys its state by cluster name), and
/// each document to have passed [`crate::traefik::validate`]: plain names then never contain
/// `.`, so they cannot collide with pool names. The result is the same for any order of
/// `clusters`.
pub fn merge(clusters: &[ClusterDocument]) -> Merged {
    let mut ordered: Vec<&ClusterDocument> = clusters.iter().collect();
    ordered.sort_by(|a, b| a.cluster.cmp(&b.cluster));

    let mut exports: Exports<'_> = HashMap::new();
    for ClusterDocument { cluster, document } in ordered {
        for (name, export) in Export::all(document) {
            exports.entry(name).or_default().push((cluster, export));
        }
    }
    // NB: at 50 clusters x 2,000 services, inserting 100,000 pools one by one into ordered maps
    // spends most of its time comparing long common prefixes. Instead the names are visited in
    // the order of `<name>.`, which puts the pools (`<name>.<cluster>`, clusters sorted) in
    // exactly the maps' order; union pools go to their own vectors. Each map is then built once
    // from two sorted runs, which the sort merges in linear time before a bulk build.
    let mut names: Vec<&ServiceName> = exports.keys().copied().collect();
    names.sort_unstable_by(|a, b| pool_prefix(a).cmp(pool_prefix(b)));

    let mut out = Output::default();
    for name in names {
        if let Some(exporters) = exports.get(name) {
            merge_service(name, exporters, &mut out);
        }
    }
    out.conflicts.sort();
    Merged {
        document: Document {
            http: out.http.into_section(),
            tcp: out.tcp.into_section(),
            udp: out.udp.into_section(),
        },
        conflicts: out.conflicts,
    }
}

#[derive(Default)]
struct Output {
    http: Pools<HttpLoadBalancer>,
    tcp: Pools<AddressLoadBalancer>,
    udp: Pools<AddressLoadBalancer>,
    conflicts: Vec<Conflict>,
}

impl MergeSink for Output {
    fn http(&mut self, name: ServiceName, service: HttpService, union: bool) {
        self.http.push(name, service, union);
    }

    fn address(
        &mut self,
        protocol: Protocol,
        name: ServiceName,
        service: Service<AddressLoadBalancer>,
        union: bool,
    ) {
        let pools = match protocol {
            Protocol::Udp => &mut self.udp,
            _ => &mut self.tcp,
        };
        pools.push(name, service, union);
    }

    fn conflict(&mut self, conflict: Conflict) {
        self.conflicts.push(conflict);
    }
}

/// One name's union pool and per-cluster pools, and its conflicts. `exporters` are the
/// clusters exporting `name`, each once, in cluster-name order: the first settles the union
/// pool's protocol and options. The merged document of many clusters is this for every name.
pub fn merge_service(
    name: &ServiceName,
    exporters: &[(&ClusterName, Export<'_>)],
    out: &mut impl MergeSink,
) {
    for (cluster, export) in exporters {
        let pool = ServiceName::pool(name, cluster);
        match export {
            Export::Http(service) => out.http(pool, (*service).clone(), false),
            Export::Address(own, service) => out.address(*own, pool, (*service).clone(), false),
        }
    }
    merge_union(name, exporters, out);
}

/// The part of [`merge_service`] that depends on every exporter: the union pool under the
/// plain name and the conflicts. A cluster's own pool depends on that cluster alone, so an
/// incremental merger re-builds the pools of the clusters that changed and this.
pub fn merge_union(
    name: &ServiceName,
    exporters: &[(&ClusterName, Export<'_>)],
    out: &mut impl MergeSink,
) {
    let Some((winner, first)) = exporters.first() else {
        return;
    };
    let protocol = first.protocol();
    let mut urls = Vec::new();
    let mut addresses = Vec::new();
    for (cluster, export) in exporters {
        let conflict = |kind| Conflict {
            service: name.to_string(),
            kind,
            winner: (*winner).clone(),
            loser: (*cluster).clone(),
        };
        if export.protocol() != protocol {
            out.conflict(conflict(ConflictKind::Protocol));
        }
        match export {
            Export::Http(service) => {
                let lb = &service.load_balancer;
                if let Export::Http(first) = first {
                    urls.extend(lb.servers.iter().cloned());
                    if !first.load_balancer.same_options(lb) {
                        out.conflict(conflict(ConflictKind::Options));
                    }
                }
            }
            Export::Address(own, service) => {
                if *own == protocol {
                    addresses.extend(service.load_balancer.servers.iter().cloned());
                }
            }
        }
    }
    match first {
        Export::Http(service) => {
            let load_balancer = HttpLoadBalancer {
                servers: sorted(urls),
                ..service.load_balancer.clone()
            };
            out.http(name.clone(), HttpService { load_balancer }, true);
        }
        Export::Address(protocol, _) => {
            let load_balancer = AddressLoadBalancer {
                servers: sorted(addresses),
            };
            out.address(*protocol, name.clone(), Service { load_balancer }, true);
        }
    }
}

fn sorted<T: Ord>(mut servers: Vec<T>) -> Vec<T> {
    servers.sort_unstable();
    servers.dedup();
    servers
}

/// `<name>.` as bytes: the prefix every pool of `name` starts with.
fn pool_prefix(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes().chain(std::iter::once(b'.'))
}

/// The services of one section: per-cluster pools in map order, union pools in any order.
struct Pools<L> {
    pools: Vec<(ServiceName, Service<L>)>,
    unions: Vec<(ServiceName, Service<L>)>,
}

impl<L> Default for Pools<L> {
    fn default() -> Self {
        Pools {
            pools: Vec::new(),
            unions: Vec::new(),
        }
    }
}

impl<L> Pools<L> {
    fn push(&mut self, name: ServiceName, service: Service<L>, union: bool) {
        if union {
            self.unions.push((name, service));
        } else {
            self.pools.push((name, service));
        }
    }

    fn into_section(mut self) -> Option<Section<L>> {
        if self.pools.is_empty() && self.unions.is_empty() {
            return None;
        }
        self.unions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let services: BTreeMap<_, _> = self.unions.into_iter().chain(self.pools).collect();
        Some(Section { services })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traefik::{
        AddressServer, HttpSection, HttpServer, TcpSection, TcpService, TraefikVersion, render,
    };

    fn cluster(name: &str) -> ClusterName {
        ClusterName::parse(name).unwrap()
    }

    fn http_doc(services: &[(&str, &[&str])]) -> Document {
        Document {
            http: Some(HttpSection {
                services: services
                    .iter()
                    .map(|(name, urls)| {
                        let load_balancer = HttpLoadBalancer {
                            servers: urls
                                .iter()
                                .map(|u| HttpServer {
                                    url: u.parse().unwrap(),
                                })
                                .collect(),
                            ..HttpLoadBalancer::default()
                        };
                        (name.parse().unwrap(), HttpService { load_balancer })
                    })
                    .collect(),
            }),
            ..Document::default()
        }
    }

    fn tcp_doc(name: &str, addresses: &[&str]) -> Document {
        let load_balancer = AddressLoadBalancer {
            servers: addresses
                .iter()
                .map(|a| AddressServer {
                    address: a.parse().unwrap(),
                })
                .collect(),
        };
        let mut services = BTreeMap::new();
        services.insert(name.parse().unwrap(), TcpService { load_balancer });
        Document {
            tcp: Some(TcpSection { services }),
            ..Document::default()
        }
    }

    fn urls(doc: &Document, name: &str) -> Vec<String> {
        doc.http.as_ref().unwrap().services[name]
            .load_balancer
            .servers
            .iter()
            .map(|s| s.url.to_string())
            .collect()
    }

    #[test]
    fn union_and_per_cluster_pools() {
        let merged = merge(&[
            ClusterDocument {
                cluster: cluster("b"),
                document: http_doc(&[("web", &["http://10.1.0.1:80", "http://10.9.0.9:80"])]),
            },
            ClusterDocument {
                cluster: cluster("a"),
                document: http_doc(&[
                    ("web", &["https://10.0.0.1:443", "http://10.9.0.9:80"]),
                    ("api", &["http://10.0.0.2:80"]),
                ]),
            },
        ]);
        assert!(merged.conflicts.is_empty());
        let doc = &merged.document;
        assert_eq!(
            urls(doc, "web"),
            [
                "http://10.1.0.1:80",
                "http://10.9.0.9:80",
                "https://10.0.0.1:443"
            ]
        );
        assert_eq!(
            urls(doc, "web.a"),
            ["https://10.0.0.1:443", "http://10.9.0.9:80"]
        );
        assert_eq!(
            urls(doc, "web.b"),
            ["http://10.1.0.1:80", "http://10.9.0.9:80"]
        );
        assert_eq!(urls(doc, "api"), ["http://10.0.0.2:80"]);
        assert_eq!(urls(doc, "api.a"), ["http://10.0.0.2:80"]);
        assert_eq!(doc.service_count(), 5);
        assert!(doc.tcp.is_none() && doc.udp.is_none());
    }

    #[test]
    fn a_single_cluster_still_gets_its_pool() {
        let merged = merge(&[ClusterDocument {
            cluster: cluster("only"),
            document: tcp_doc("pg", &["10.0.0.1:5432"]),
        }]);
        let tcp = &merged.document.tcp.as_ref().unwrap().services;
        assert_eq!(tcp.keys().collect::<Vec<_>>(), ["pg", "pg.only"]);
    }

    #[test]
    fn protocol_conflicts_go_to_the_smallest_cluster() {
        let merged = merge(&[
            ClusterDocument {
                cluster: cluster("zeta"),
                document: http_doc(&[("db", &["http://10.2.0.1:80"])]),
            },
            ClusterDocument {
                cluster: cluster("alpha"),
                document: tcp_doc("db", &["10.1.0.1:5432"]),
            },
        ]);
        let doc = &merged.document;
        let tcp = &doc.tcp.as_ref().unwrap().services;
        assert_eq!(tcp["db"].load_balancer.servers.len(), 1);
        assert!(tcp.contains_key("db.alpha"));
        let http = &doc.http.as_ref().unwrap().services;
        assert!(
            !http.contains_key("db"),
            "the union pool lives in one section only"
        );
        assert_eq!(urls(doc, "db.zeta"), ["http://10.2.0.1:80"]);
        assert_eq!(
            merged.conflicts,
            vec![Conflict {
                service: "db".to_owned(),
                kind: ConflictKind::Protocol,
                winner: cluster("alpha"),
                loser: cluster("zeta"),
            }]
        );
        let message = merged.conflicts[0].to_string();
        assert!(
            message.contains("alpha") && message.contains("\"db.zeta\""),
            "{message}"
        );
    }

    #[test]
    fn option_conflicts_keep_the_smallest_clusters_options_and_all_servers() {
        let mut a = http_doc(&[("web", &["http://10.0.0.1:80"])]);
        let mut b = http_doc(&[("web", &["http://10.0.0.2:80"])]);
        let c = http_doc(&[("web", &["http://10.0.0.3:80"])]);
        a.http
            .as_mut()
            .unwrap()
            .services
            .get_mut("web")
            .unwrap()
            .load_balancer
            .pass_host_header = Some(false);
        b.http
            .as_mut()
            .unwrap()
            .services
            .get_mut("web")
            .unwrap()
            .load_balancer
            .pass_host_header = Some(true);
        let merged = merge(&[
            ClusterDocument {
                cluster: cluster("c"),
                document: c,
            },
            ClusterDocument {
                cluster: cluster("b"),
                document: b,
            },
            ClusterDocument {
                cluster: cluster("a"),
                document: a,
            },
        ]);
        let http = &merged.document.http.as_ref().unwrap().services;
        assert_eq!(http["web"].load_balancer.pass_host_header, Some(false));
        assert_eq!(http["web"].load_balancer.servers.len(), 3);
        assert_eq!(http["web.b"].load_balancer.pass_host_header, Some(true));
        let losers: Vec<&str> = merged.conflicts.iter().map(|c| c.loser.as_str()).collect();
        assert_eq!(losers, ["b", "c"]);
        assert!(
            merged
                .conflicts
                .iter()
                .all(|c| c.kind == ConflictKind::Options && c.winner.as_str() == "a")
        );
    }

    #[test]
    fn nothing_to_merge_renders_as_comments() {
        let merged = merge(&[]);
        assert!(merged.document.is_empty());
        let out = render(&merged.document, TraefikVersion::V3, "merged");
        assert_eq!(out.bytes, b"# merged\n# No services.\n");
    }
}
