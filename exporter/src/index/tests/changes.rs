//! Changes over time: joins, deletions, moves, refreshes, re-lists and naming.

use super::*;

#[test]
fn slices_join_only_their_own_service_in_their_own_namespace() {
    let mut index = Index::new();
    with_service(&mut index, service("a", "web").port("http", 80).build());
    with_service(&mut index, service("b", "web").port("http", 80).build());
    with_slice(
        &mut index,
        slice("a", "web-1", "web")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    with_slice(
        &mut index,
        slice("b", "web-1", "web")
            .port("http", 80)
            .ready("10.0.1.1")
            .build(),
    );
    with_slice(
        &mut index,
        slice("a", "api-1", "api")
            .port("http", 80)
            .ready("10.0.2.1")
            .build(),
    );
    let backends = build(&mut index);
    assert_eq!(backends.len(), 2);
    assert_eq!(addrs(backend(&backends, "a-web-http")), ["10.0.0.1:80"]);
    assert_eq!(addrs(backend(&backends, "b-web-http")), ["10.0.1.1:80"]);
}

#[test]
fn slices_without_a_service_label_are_ignored() {
    let mut index = Index::new();
    with_service(&mut index, service("ns", "web").port("http", 80).build());
    assert!(!with_slice(
        &mut index,
        slice("ns", "stray", "web")
            .without_service_label()
            .port("http", 80)
            .ready("10.0.0.1")
            .build()
    ));
    assert!(build(&mut index)[0].targets.is_empty());
}

#[test]
fn slices_arriving_before_their_service_count_once_it_comes() {
    let mut index = Index::new();
    assert!(!with_slice(
        &mut index,
        slice("ns", "web-1", "web")
            .port("http", 80)
            .ready("10.0.0.1")
            .build()
    ));
    assert!(build(&mut index).is_empty());
    assert!(with_service(
        &mut index,
        service("ns", "web").port("http", 80).build()
    ));
    assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
}

#[test]
fn deleting_services_and_slices() {
    let mut index = Index::new();
    with_service(&mut index, service("ns", "web").port("http", 80).build());
    with_slice(
        &mut index,
        slice("ns", "web-1", "web")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    with_slice(
        &mut index,
        slice("ns", "web-2", "web")
            .port("http", 80)
            .ready("10.0.0.2")
            .build(),
    );
    assert_eq!(build(&mut index)[0].targets.len(), 2);

    assert!(index.delete_slice(&SliceKey::new("ns", "web-2")));
    assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
    assert!(!index.delete_slice(&SliceKey::new("ns", "web-2")));

    assert!(index.delete_service(&ServiceKey::new("ns", "web")));
    assert!(build(&mut index).is_empty());
    assert_eq!(index.service_count(), 0);

    // The slice is still there when the Service is selected again.
    with_service(&mut index, service("ns", "web").port("http", 80).build());
    assert_eq!(addrs(&build(&mut index)[0]), ["10.0.0.1:80"]);
}

#[test]
fn a_slice_moving_to_another_service_leaves_the_first() {
    let mut index = Index::new();
    with_service(&mut index, service("ns", "a").port("http", 80).build());
    with_service(&mut index, service("ns", "b").port("http", 80).build());
    with_slice(
        &mut index,
        slice("ns", "s", "a")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    build(&mut index);
    with_slice(
        &mut index,
        slice("ns", "s", "b")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    let backends = build(&mut index);
    assert!(backend(&backends, "ns-a-http").targets.is_empty());
    assert_eq!(addrs(backend(&backends, "ns-b-http")), ["10.0.0.1:80"]);
    // Losing its label removes it entirely.
    with_slice(
        &mut index,
        slice("ns", "s", "b").without_service_label().build(),
    );
    let backends = build(&mut index);
    assert!(backends.iter().all(|b| b.targets.is_empty()));
}

#[test]
fn irrelevant_changes_are_not_changes() {
    let mut index = Index::new();
    let svc = service("ns", "web").port("http", 80).build();
    assert!(with_service(&mut index, svc.clone()));
    index.refresh();
    assert!(!index.is_dirty());

    let mut relabelled = svc.clone();
    relabelled.metadata.labels = Some(BTreeMap::from([("team".into(), "x".into())]));
    relabelled.metadata.resource_version = Some("42".into());
    relabelled
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("unrelated/thing".into(), "1".into());
    assert!(!with_service(&mut index, relabelled));
    assert!(!index.is_dirty());

    let s = slice("ns", "web-1", "web")
        .port("http", 80)
        .ready("10.0.0.1")
        .build();
    assert!(with_slice(&mut index, s.clone()));
    index.refresh();
    let mut s2 = s.clone();
    s2.metadata.resource_version = Some("43".into());
    s2.endpoints
        .push(k8s_openapi::api::discovery::v1::Endpoint {
            addresses: vec!["10.0.0.9".into()],
            conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                ready: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
    assert!(
        !with_slice(&mut index, s2),
        "a not-ready endpoint changes no backend"
    );
}

#[test]
fn refresh_recomputes_only_dirty_services_and_reports_new_warnings_once() {
    let mut index = Index::new();
    let bad = service("ns", "bad")
        .port("http", 80)
        .annotation("k8s-service-discovery/scheme", "ftp")
        .build();
    with_service(&mut index, bad.clone());
    with_service(&mut index, service("ns", "good").port("http", 80).build());
    let warnings = index.refresh();
    assert_eq!(warnings.len(), 1);
    assert!(!index.is_dirty());

    // A new slice for the bad Service: recomputed, but its warning is not new.
    with_slice(
        &mut index,
        slice("ns", "bad-1", "bad")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    assert!(index.is_dirty());
    assert!(index.refresh().is_empty());

    // A different bad value is a new warning.
    let worse = service("ns", "bad")
        .port("http", 80)
        .annotation("k8s-service-discovery/scheme", "gopher")
        .build();
    with_service(&mut index, worse);
    let warnings = index.refresh();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].reason.contains("gopher"));
}

#[test]
fn replace_swaps_a_namespace_and_leaves_the_others() {
    let mut index = Index::new();
    with_service(&mut index, service("a", "one").port("http", 80).build());
    with_service(&mut index, service("a", "two").port("http", 80).build());
    with_service(&mut index, service("b", "one").port("http", 80).build());
    with_slice(
        &mut index,
        slice("a", "one-1", "one")
            .port("http", 80)
            .ready("10.0.0.1")
            .build(),
    );
    with_slice(
        &mut index,
        slice("b", "one-1", "one")
            .port("http", 80)
            .ready("10.0.1.1")
            .build(),
    );
    build(&mut index);

    // Re-list of namespace a: `two` is gone, `one` has a new slice.
    let services: Vec<_> = [service("a", "one").port("http", 80).build()]
        .iter()
        .filter_map(service_facts)
        .collect();
    assert!(index.replace_services(Some("a"), services));
    let slices: Vec<_> = [slice("a", "one-2", "one")
        .port("http", 80)
        .ready("10.0.0.2")
        .build()]
    .iter()
    .filter_map(slice_facts)
    .collect();
    assert!(index.replace_slices(Some("a"), slices));
    let backends = build(&mut index);
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a-one-http", "b-one-http"]);
    assert_eq!(addrs(backend(&backends, "a-one-http")), ["10.0.0.2:80"]);
    assert_eq!(addrs(backend(&backends, "b-one-http")), ["10.0.1.1:80"]);

    // An identical re-list of everything changes nothing.
    let services: Vec<_> = [
        service("a", "one").port("http", 80).build(),
        service("b", "one").port("http", 80).build(),
    ]
    .iter()
    .filter_map(service_facts)
    .collect();
    assert!(!index.replace_services(None, services));
}

#[test]
fn same_service_name_in_two_namespaces_never_collides() {
    let mut index = Index::new();
    with_service(&mut index, service("a-b", "c").port("http", 80).build());
    with_service(&mut index, service("a", "b-c").port("http", 80).build());
    index.refresh();
    let (backends, collisions) = index.backends(&NameTemplate::default());
    assert_eq!(backends.len(), 2);
    assert_ne!(backends[0].name, backends[1].name);
    assert_eq!(collisions.len(), 1);
    assert_eq!(collisions[0].name, "a-b-c-http");
}

#[test]
fn backends_are_sorted_by_name_and_follow_the_template() {
    let mut index = Index::new();
    with_service(&mut index, service("z", "web").port("http", 80).build());
    with_service(
        &mut index,
        service("a", "web")
            .port("http", 80)
            .unnamed_port(81)
            .build(),
    );
    index.refresh();
    let template = NameTemplate::parse("{service}_{port}_{namespace}").unwrap();
    let (backends, _) = index.backends(&template);
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["web_81_a", "web_http_a", "web_http_z"]);
}

#[test]
fn app_protocol_and_port_name_helpers() {
    assert_eq!(scheme_from_app_protocol("HTTPS"), Some(Scheme::Https));
    assert_eq!(scheme_from_app_protocol("grpc"), Some(Scheme::H2c));
    assert_eq!(scheme_from_app_protocol("tcp"), None);
    assert_eq!(scheme_from_app_protocol("mysql"), None);
    assert_eq!(scheme_from_port_name("https-"), Some(Scheme::Https));
    assert_eq!(scheme_from_port_name("metrics"), None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        // Short names over a tiny alphabet, with dashes, so renderings collide often.
        "[ab](-?[ab]){0,3}"
    }

    proptest! {
        #[test]
        fn backend_names_never_collide(
            services in proptest::collection::vec(
                (label(), label(), proptest::collection::btree_set(label(), 1..3)),
                1..25,
            ),
            numbered in any::<bool>(),
        ) {
            let mut index = Index::new();
            for (namespace, name, ports) in &services {
                let mut builder = service(namespace, name);
                for (i, port) in ports.iter().enumerate() {
                    builder = if numbered && i == 0 {
                        builder.unnamed_port(80)
                    } else {
                        builder.port(port, 80 + i32::try_from(i).unwrap())
                    };
                }
                with_service(&mut index, builder.build());
            }
            index.refresh();
            for template in ["{namespace}-{service}-{port}", "{service}-{port}", "{service}"] {
                let template = NameTemplate::parse(template).unwrap();
                let (backends, _) = index.backends(&template);
                let names: BTreeSet<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                prop_assert_eq!(names.len(), backends.len());
                for backend in &backends {
                    prop_assert!(ksd_shared::names::validate_service_name(&backend.name).is_ok());
                }
            }
        }
    }
}
