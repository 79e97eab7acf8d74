//! The incremental composer against the from-scratch composition: for random sequences of
//! cluster changes (new versions, removals, identical re-uploads, address policies and
//! administrator names that leave things out), every file the [`Composer`] produces is
//! byte-identical to [`compose_guarded`]'s, with the same conflicts and exclusions.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use ksd_shared::merge::ClusterDocument;
use ksd_shared::names::ClusterName;
use ksd_shared::policy::{AddressPolicy, parse_cidrs, parse_cluster_cidrs};
use ksd_shared::traefik::{
    AddressLoadBalancer, AddressServer, Document, HttpLoadBalancer, HttpServer, Section, Service,
    TraefikVersion,
};
use ksd_syncer::compose::{Composer, Guard, compose_guarded};
use ksd_syncer::guard::{AdminNames, Kind};
use proptest::prelude::*;

const CLUSTERS: [&str; 4] = ["a", "b", "c-1", "d"];
const NAMES: [&str; 5] = ["web", "web-a", "api", "db", "dns"];
/// Includes addresses the special-purpose policy refuses (loopback, link-local) and two
/// ranges a pinned policy splits between clusters.
const IPS: [&str; 6] = [
    "10.1.0.1",
    "10.1.0.2",
    "10.2.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "fd00::1",
];

#[derive(Clone, Debug)]
enum Spec {
    Http {
        servers: Vec<usize>,
        pass_host_header: Option<bool>,
    },
    Tcp(Vec<usize>),
    Udp(Vec<usize>),
}

fn servers() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..IPS.len(), 0..4)
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        4 => (servers(), proptest::option::of(any::<bool>()))
            .prop_map(|(servers, pass_host_header)| Spec::Http { servers, pass_host_header }),
        1 => servers().prop_map(Spec::Tcp),
        1 => servers().prop_map(Spec::Udp),
    ]
}

fn ip_port(index: usize) -> String {
    let ip = IPS[index];
    if ip.contains(':') {
        format!("[{ip}]:80")
    } else {
        format!("{ip}:80")
    }
}

fn document(specs: &BTreeMap<usize, Spec>) -> Document {
    let mut doc = Document::default();
    for (name, spec) in specs {
        let name = NAMES[*name].parse().unwrap();
        match spec {
            Spec::Http {
                servers,
                pass_host_header,
            } => {
                let load_balancer = HttpLoadBalancer {
                    servers: servers
                        .iter()
                        .map(|i| HttpServer {
                            url: format!("http://{}", ip_port(*i)).parse().unwrap(),
                        })
                        .collect(),
                    pass_host_header: *pass_host_header,
                    ..HttpLoadBalancer::default()
                };
                doc.http
                    .get_or_insert_with(Section::default)
                    .services
                    .insert(name, Service { load_balancer });
            }
            Spec::Tcp(servers) | Spec::Udp(servers) => {
                let load_balancer = AddressLoadBalancer {
                    servers: servers
                        .iter()
                        .map(|i| AddressServer {
                            address: ip_port(*i).parse().unwrap(),
                        })
                        .collect(),
                };
                let section = if matches!(spec, Spec::Tcp(_)) {
                    &mut doc.tcp
                } else {
                    &mut doc.udp
                };
                section
                    .get_or_insert_with(Section::default)
                    .services
                    .insert(name, Service { load_balancer });
            }
        }
    }
    doc.normalized()
}

/// One step: for each cluster, nothing (kept as is), a removal, the same document uploaded
/// again (a new `Arc`, equal content) or a new document.
#[derive(Clone, Debug)]
enum Step {
    Keep,
    Remove,
    Reupload,
    New(BTreeMap<usize, Spec>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Keep),
        1 => Just(Step::Remove),
        1 => Just(Step::Reupload),
        3 => proptest::collection::btree_map(0..NAMES.len(), spec(), 0..4).prop_map(Step::New),
    ]
}

fn guard() -> impl Strategy<Value = Guard> {
    let addresses = prop_oneof![
        Just(AddressPolicy::special_purpose_only()),
        Just(AddressPolicy::new(
            parse_cluster_cidrs("a=10.1.0.0/16;b=10.2.0.0/16").unwrap(),
            parse_cidrs("fd00::/8").unwrap(),
        )),
    ];
    let admin = proptest::collection::vec((0..3usize, 0..NAMES.len(), 0..=CLUSTERS.len()), 0..3)
        .prop_map(|entries| {
            let mut names = AdminNames::new();
            for (kind, name, cluster) in entries {
                let name = match CLUSTERS.get(cluster) {
                    Some(cluster) => format!("{}.{cluster}", NAMES[name]),
                    None => NAMES[name].to_owned(),
                };
                names.insert(Kind::ALL[kind], name);
            }
            names
        });
    (addresses, admin).prop_map(|(addresses, admin_names)| Guard {
        addresses,
        admin_names,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_files_equal_full_compositions(
        steps in proptest::collection::vec(
            (proptest::collection::vec(step(), CLUSTERS.len()), 0..8u8),
            1..12,
        ),
        guards in proptest::collection::vec(guard(), 2),
        version in prop_oneof![Just(TraefikVersion::V2), Just(TraefikVersion::V3)],
    ) {
        let mut composer = Composer::new(version);
        let mut current: BTreeMap<ClusterName, Arc<Document>> = BTreeMap::new();
        for (changes, guard_pick) in steps {
            for (cluster, change) in CLUSTERS.iter().zip(changes) {
                let cluster = ClusterName::parse(cluster).unwrap();
                match change {
                    Step::Keep => {}
                    Step::Remove => {
                        current.remove(&cluster);
                    }
                    Step::Reupload => {
                        if let Some(doc) = current.get(&cluster) {
                            let copy = Arc::new((**doc).clone());
                            current.insert(cluster, copy);
                        }
                    }
                    Step::New(specs) => {
                        current.insert(cluster, Arc::new(document(&specs)));
                    }
                }
            }
            // The guard changes now and then (a rescan of the administrator's files).
            let guard = &guards[usize::from(guard_pick == 0)];
            let clusters: Vec<(ClusterName, Arc<Document>)> =
                current.iter().map(|(c, d)| (c.clone(), d.clone())).collect();
            let documents: Vec<ClusterDocument> = clusters
                .iter()
                .map(|(cluster, document)| ClusterDocument {
                    cluster: cluster.clone(),
                    document: (**document).clone(),
                })
                .collect();
            let full = compose_guarded(&documents, version, guard).unwrap();
            let incremental = composer.update(&clusters, guard).unwrap();
            prop_assert_eq!(
                String::from_utf8(incremental.bytes.clone()).unwrap(),
                String::from_utf8(full.bytes.clone()).unwrap()
            );
            prop_assert_eq!(&incremental, &full);
            composer.recycle(Arc::new(incremental));
        }
    }
}
