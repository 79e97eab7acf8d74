//! Invariants that hold for every input, checked on generated ones.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use ksd_shared::backend::Origin;
use ksd_shared::merge::{ClusterDocument, merge};
use ksd_shared::names::{ClusterName, NameTemplate, assign_names, validate_service_name};
use ksd_shared::traefik::{
    Blocks, Document, Limits, TraefikVersion, parse_cluster_document, parse_merged_document,
    render, validate,
};
use proptest::prelude::*;

fn version() -> impl Strategy<Value = TraefikVersion> {
    prop_oneof![Just(TraefikVersion::V2), Just(TraefikVersion::V3)]
}

fn clusters() -> impl Strategy<Value = Vec<ClusterDocument>> {
    proptest::collection::btree_map(
        "[a-d][a-z0-9-]{0,3}[a-z0-9]",
        common::clashing_document(),
        0..6,
    )
    .prop_map(|by_name| {
        by_name
            .into_iter()
            .map(|(name, document)| ClusterDocument {
                cluster: ClusterName::parse(&name).unwrap(),
                document,
            })
            .collect()
    })
}

/// Origins built from a tiny alphabet full of dashes, so that dash splits collide
/// (`a-b`/`c` against `a`/`b-c`) and long names appear.
fn adversarial_origins() -> impl Strategy<Value = Vec<Origin>> {
    let part = prop_oneof![
        4 => "[ab-]{0,4}",
        1 => "[a-]{90,110}",
        1 => "[a-z0-9.@{}]{0,3}",
    ];
    proptest::collection::vec(
        (part.clone(), part.clone(), part).prop_map(|(namespace, service, port)| Origin {
            namespace,
            service,
            port,
        }),
        0..24,
    )
}

fn template() -> impl Strategy<Value = NameTemplate> {
    prop_oneof![
        Just("{namespace}-{service}-{port}"),
        Just("{service}"),
        Just("{namespace}{service}{port}"),
        Just("{port}"),
        Just("x-{service}-{namespace}"),
    ]
    .prop_map(|t| NameTemplate::parse(t).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn render_then_parse_gives_the_document_back(doc in common::document(), version in version()) {
        let rendered = render(&doc, version, "ksd test\nsecond line");
        let text = String::from_utf8(rendered.bytes.clone()).unwrap();
        let back = parse_cluster_document(&rendered.bytes, &Limits::default());
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), text);
        prop_assert_eq!(back.unwrap(), common::canonical(&doc));
        prop_assert_eq!(rendered.hash, ksd_shared::content_hash(text.as_bytes()));
    }

    #[test]
    fn render_is_deterministic_and_independent_of_server_order(doc in common::document()) {
        let mut shuffled = doc.clone();
        for service in shuffled.http.iter_mut().flat_map(|s| s.services.values_mut()) {
            service.load_balancer.servers.reverse();
        }
        for service in shuffled.tcp.iter_mut().flat_map(|s| s.services.values_mut()) {
            let servers = &mut service.load_balancer.servers;
            servers.extend(servers.clone());
        }
        prop_assert_eq!(
            render(&doc, TraefikVersion::V3, "h").bytes,
            render(&shuffled, TraefikVersion::V3, "h").bytes
        );
    }

    #[test]
    fn valid_documents_never_render_braces(doc in common::document(), header in any::<String>()) {
        let canonical = common::canonical(&doc);
        prop_assert!(validate(&canonical).is_ok());
        let text = String::from_utf8(render(&doc, TraefikVersion::V3, &header).bytes).unwrap();
        prop_assert!(!text.contains("{{"), "{}", text);
        prop_assert!(!text.contains("{}"), "{}", text);
        prop_assert!(!text.contains("null"), "{}", text);
    }

    /// Names and URLs are typed, so the one free-form text `render` writes is the header: any
    /// header becomes comments that never hold `{{` or `{}` and never change the document.
    #[test]
    fn any_header_is_harmless(doc in common::document(), header in any::<String>()) {
        let text = String::from_utf8(render(&doc, TraefikVersion::V3, &header).bytes).unwrap();
        prop_assert!(!text.contains("{{") && !text.contains("{}"), "{}", text);
        let back = parse_cluster_document(text.as_bytes(), &Limits::default());
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), text);
        prop_assert_eq!(back.unwrap(), common::canonical(&doc));
    }

    #[test]
    fn merge_is_independent_of_cluster_order(
        (clusters, shuffled) in clusters().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        let merged = merge(&clusters);
        let again = merge(&shuffled);
        prop_assert_eq!(&merged, &again);
        prop_assert_eq!(
            render(&merged.document, TraefikVersion::V3, "").bytes,
            render(&again.document, TraefikVersion::V3, "").bytes
        );
    }

    #[test]
    fn merge_keeps_every_server_in_a_pool(clusters in clusters()) {
        let merged = merge(&clusters).document;
        for ClusterDocument { cluster, document } in &clusters {
            for (name, service) in document.http.iter().flat_map(|s| s.services.iter()) {
                let pool = &merged.http.as_ref().unwrap().services[format!("{name}.{cluster}").as_str()];
                prop_assert_eq!(&pool.load_balancer, &service.load_balancer);
            }
            for (name, service) in document.tcp.iter().flat_map(|s| s.services.iter()) {
                let pool = &merged.tcp.as_ref().unwrap().services[format!("{name}.{cluster}").as_str()];
                prop_assert_eq!(&pool.load_balancer, &service.load_balancer);
            }
        }
        // Each name's union pool lives in the section of the smallest cluster exporting it and
        // holds at least that cluster's servers.
        let mut exported: BTreeMap<&str, (&ClusterName, &'static str, Vec<String>)> = BTreeMap::new();
        let mut ordered: Vec<&ClusterDocument> = clusters.iter().collect();
        ordered.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        for ClusterDocument { cluster, document } in ordered {
            for (name, service) in document.http.iter().flat_map(|s| s.services.iter()) {
                let urls = service.load_balancer.servers.iter().map(|s| s.url.to_string()).collect();
                exported.entry(name.as_str()).or_insert((cluster, "http", urls));
            }
            for (name, service) in document.tcp.iter().flat_map(|s| s.services.iter()) {
                let addresses = service.load_balancer.servers.iter().map(|s| s.address.to_string()).collect();
                exported.entry(name.as_str()).or_insert((cluster, "tcp", addresses));
            }
            for (name, service) in document.udp.iter().flat_map(|s| s.services.iter()) {
                let addresses = service.load_balancer.servers.iter().map(|s| s.address.to_string()).collect();
                exported.entry(name.as_str()).or_insert((cluster, "udp", addresses));
            }
        }
        for (name, (_, section, servers)) in &exported {
            let in_http = merged.http.as_ref().and_then(|s| s.services.get(*name));
            let in_tcp = merged.tcp.as_ref().and_then(|s| s.services.get(*name));
            let in_udp = merged.udp.as_ref().and_then(|s| s.services.get(*name));
            let union: BTreeSet<String> = match *section {
                "http" => in_http.unwrap().load_balancer.servers.iter().map(|s| s.url.to_string()).collect(),
                "tcp" => in_tcp.unwrap().load_balancer.servers.iter().map(|s| s.address.to_string()).collect(),
                _ => in_udp.unwrap().load_balancer.servers.iter().map(|s| s.address.to_string()).collect(),
            };
            prop_assert_eq!(
                usize::from(in_http.is_some()) + usize::from(in_tcp.is_some()) + usize::from(in_udp.is_some()),
                1
            );
            prop_assert!(servers.iter().all(|s| union.contains(s)));
        }
        prop_assert_eq!(
            merged.service_count(),
            exported.len() + clusters.iter().map(|c| c.document.service_count()).sum::<usize>()
        );

        // The merged file itself is what Traefik reads: it must render without `{{`/`{}` and
        // read back, under the merged-file rules, as the same document.
        let rendered = render(&merged, TraefikVersion::V3, "merged");
        let text = String::from_utf8(rendered.bytes.clone()).unwrap();
        prop_assert!(!text.contains("{{") && !text.contains("{}"), "{}", text);
        let back = parse_merged_document(&rendered.bytes);
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), text);
        prop_assert_eq!(back.unwrap(), common::canonical(&merged));
    }

    #[test]
    fn assigned_names_are_unique_valid_and_order_independent(
        template in template(),
        (origins, shuffled) in adversarial_origins()
            .prop_flat_map(|o| (Just(o.clone()), Just(o).prop_shuffle())),
    ) {
        let (names, collisions) = assign_names(&template, &origins);
        prop_assert_eq!(names.len(), origins.len());
        let mut by_origin: BTreeMap<&Origin, &String> = BTreeMap::new();
        for (origin, name) in origins.iter().zip(&names) {
            prop_assert!(validate_service_name(name).is_ok(), "{:?}", name);
            if let Some(previous) = by_origin.insert(origin, name) {
                prop_assert_eq!(previous, name, "equal origins, equal names");
            }
        }
        let distinct: BTreeSet<&String> = by_origin.values().copied().collect();
        prop_assert_eq!(distinct.len(), by_origin.len(), "two origins share a name");

        let (shuffled_names, shuffled_collisions) = assign_names(&template, &shuffled);
        for (origin, name) in shuffled.iter().zip(&shuffled_names) {
            prop_assert_eq!(by_origin[origin], name);
        }
        prop_assert_eq!(collisions, shuffled_collisions);
    }

    #[test]
    fn blocks_assemble_to_the_rendered_document_through_any_edits(
        docs in proptest::collection::vec(common::clashing_document(), 1..6),
        version in version(),
        header in "[ -~]{0,20}",
    ) {
        // Each step turns the blocks of the previous document into the next one's by setting
        // and removing only the services that differ, as an incremental writer does.
        let mut blocks = Blocks::from_document(&docs[0], version);
        prop_assert_eq!(blocks.assemble(&header), render(&docs[0], version, &header));
        for pair in docs.windows(2) {
            apply_difference(&mut blocks, &pair[0], &pair[1]);
            prop_assert_eq!(blocks.assemble(&header), render(&pair[1], version, &header));
            prop_assert_eq!(blocks.service_count(), pair[1].service_count());
        }
    }
}

/// Edits `blocks` (holding `old`) into the blocks of `new`, touching only what differs.
fn apply_difference(blocks: &mut Blocks, old: &Document, new: &Document) {
    use ksd_shared::traefik::Protocol;
    fn section<L: ksd_shared::traefik::LoadBalancer + PartialEq>(
        blocks: &mut Blocks,
        protocol: Protocol,
        old: Option<&ksd_shared::traefik::Section<L>>,
        new: Option<&ksd_shared::traefik::Section<L>>,
    ) {
        let empty = BTreeMap::new();
        let old = old.map_or(&empty, |s| &s.services);
        let new = new.map_or(&empty, |s| &s.services);
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            blocks.remove(protocol, name);
        }
        for (name, service) in new {
            if old.get(name) != Some(service) {
                blocks.set(protocol, name, service);
            }
        }
    }
    section(blocks, Protocol::Http, old.http.as_ref(), new.http.as_ref());
    section(blocks, Protocol::Tcp, old.tcp.as_ref(), new.tcp.as_ref());
    section(blocks, Protocol::Udp, old.udp.as_ref(), new.udp.as_ref());
}
