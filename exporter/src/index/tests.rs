//! The rules, one Service at a time.

use super::testing::{service, slice};
use super::*;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_shared::backend::{Backend, HealthCheck, Protocol, Scheme, StickyCookie, Target};
use ksd_shared::names::NameTemplate;

fn with_service(index: &mut Index, svc: Service) -> bool {
    let (key, facts) = service_facts(&svc).unwrap();
    index.apply_service(key, facts)
}

fn with_slice(index: &mut Index, s: EndpointSlice) -> bool {
    let (key, facts) = slice_facts(&s).unwrap();
    index.apply_slice(key, facts)
}

fn build(index: &mut Index) -> Vec<Backend> {
    index.refresh();
    index.backends(&NameTemplate::default()).0
}

fn backend<'a>(backends: &'a [Backend], name: &str) -> &'a Backend {
    backends
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name} in {backends:#?}"))
}

fn addrs(b: &Backend) -> Vec<String> {
    b.targets.iter().map(Target::address).collect()
}

fn one_service(svc: Service, slices: Vec<EndpointSlice>) -> (Vec<Backend>, Vec<Warning>) {
    let mut index = Index::new();
    with_service(&mut index, svc);
    for s in slices {
        with_slice(&mut index, s);
    }
    let warnings = index.refresh();
    (index.backends(&NameTemplate::default()).0, warnings)
}

#[test]
fn one_port_one_backend_named_by_namespace_service_port() {
    let (backends, warnings) = one_service(
        service("default", "web").port("http", 80).build(),
        vec![
            slice("default", "web-abc", "web")
                .port("http", 8080)
                .ready("10.0.0.2")
                .ready("10.0.0.1")
                .build(),
        ],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(backends.len(), 1);
    let web = &backends[0];
    assert_eq!(web.name, "default-web-http");
    assert_eq!(web.protocol, Protocol::Http);
    assert_eq!(web.scheme, Scheme::Http);
    assert_eq!(addrs(web), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(
        web.origin,
        Origin {
            namespace: "default".into(),
            service: "web".into(),
            port: "http".into()
        }
    );
}

#[test]
fn readiness_rules() {
    let (backends, _) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .not_ready("10.0.0.2")
                .terminating("10.0.0.3")
                .terminating_but_ready("10.0.0.4")
                .bare("10.0.0.5")
                .build(),
        ],
    );
    assert_eq!(
        addrs(&backends[0]),
        ["10.0.0.1:80", "10.0.0.5:80"],
        "ready and unset publish; not ready and terminating do not"
    );
}

#[test]
fn serving_terminating_endpoints_only_when_no_endpoint_is_ready() {
    let with_ready = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .terminating_serving("10.0.0.2")
                .build(),
        ],
    )
    .0;
    assert_eq!(addrs(&with_ready[0]), ["10.0.0.1:80"]);

    let without_ready = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .not_ready("10.0.0.1")
                .terminating_serving("10.0.0.2")
                .terminating("10.0.0.3")
                .build(),
            slice("ns", "web-2", "web")
                .port("http", 80)
                .terminating_serving("10.0.0.4")
                .build(),
        ],
    )
    .0;
    assert_eq!(
        addrs(&without_ready[0]),
        ["10.0.0.2:80", "10.0.0.4:80"],
        "with no ready endpoint, the serving terminating ones drain"
    );
}

#[test]
fn no_ready_endpoint_still_publishes_the_service_empty() {
    let (backends, _) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .terminating("10.0.0.3")
                .not_ready("10.0.0.2")
                .build(),
        ],
    );
    assert_eq!(backends.len(), 1);
    assert!(backends[0].targets.is_empty());

    let (backends, _) = one_service(service("ns", "lonely").port("http", 80).build(), vec![]);
    assert_eq!(backends.len(), 1);
    assert!(backends[0].targets.is_empty());
}

#[test]
fn only_the_first_address_of_an_endpoint_counts() {
    let (backends, _) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .endpoint_with_addresses(&["10.0.0.1", "10.0.0.9"])
                .build(),
        ],
    );
    assert_eq!(addrs(&backends[0]), ["10.0.0.1:80"]);
}

#[test]
fn duplicates_across_slices_collapse() {
    let (backends, _) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .build(),
            slice("ns", "web-2", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .ready("10.0.0.2")
                .build(),
        ],
    );
    assert_eq!(addrs(&backends[0]), ["10.0.0.1:80", "10.0.0.2:80"]);
}

#[test]
fn dual_stack_publishes_both_families_bracketing_ipv6() {
    let (backends, warnings) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-v4", "web")
                .port("http", 8080)
                .ready("10.0.0.1")
                .build(),
            slice("ns", "web-v6", "web")
                .ipv6()
                .port("http", 8080)
                .ready("fd00::1")
                .build(),
        ],
    );
    assert!(warnings.is_empty());
    let web = &backends[0];
    assert_eq!(addrs(web), ["10.0.0.1:8080", "[fd00::1]:8080"]);
    let urls: Vec<String> = web.targets.iter().map(|t| t.url(web.scheme)).collect();
    assert_eq!(urls, ["http://10.0.0.1:8080", "http://[fd00::1]:8080"]);
}

#[test]
fn multi_port_services_match_slice_ports_by_name() {
    let (backends, _) = one_service(
        service("ns", "app")
            .port("http", 80)
            .port("admin", 9000)
            .port("missing", 7000)
            .build(),
        vec![
            slice("ns", "app-1", "app")
                .port("admin", 9090)
                .port("http", 8080)
                .ready("10.0.0.1")
                .build(),
        ],
    );
    assert_eq!(backends.len(), 3);
    assert_eq!(addrs(backend(&backends, "ns-app-http")), ["10.0.0.1:8080"]);
    assert_eq!(addrs(backend(&backends, "ns-app-admin")), ["10.0.0.1:9090"]);
    assert!(backend(&backends, "ns-app-missing").targets.is_empty());
}

#[test]
fn an_unnamed_port_matches_the_unnamed_slice_port_and_is_named_by_number() {
    let (backends, _) = one_service(
        service("ns", "web").unnamed_port(80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port("", 8080)
                .ready("10.0.0.1")
                .build(),
        ],
    );
    assert_eq!(backends[0].name, "ns-web-80");
    assert_eq!(addrs(&backends[0]), ["10.0.0.1:8080"]);
}

#[test]
fn slice_ports_without_a_number_contribute_nothing() {
    let (backends, _) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-1", "web")
                .port_without_number("http")
                .ready("10.0.0.1")
                .build(),
        ],
    );
    assert!(backends[0].targets.is_empty());
}

#[test]
fn schemes_from_app_protocol() {
    for (app, scheme) in [
        ("http", Scheme::Http),
        ("https", Scheme::Https),
        ("h2c", Scheme::H2c),
        ("kubernetes.io/h2c", Scheme::H2c),
        ("kubernetes.io/ws", Scheme::Http),
        ("kubernetes.io/wss", Scheme::Https),
    ] {
        // The port name says otherwise: appProtocol wins.
        let (backends, warnings) = one_service(
            service("ns", "web").app_port("grpc", 80, app).build(),
            vec![],
        );
        assert!(warnings.is_empty(), "{app}: {warnings:?}");
        assert_eq!(backends[0].protocol, Protocol::Http, "{app}");
        assert_eq!(backends[0].scheme, scheme, "{app}");
    }
}

#[test]
fn schemes_from_port_names() {
    for (name, scheme) in [
        ("https", Scheme::Https),
        ("https-admin", Scheme::Https),
        ("h2c", Scheme::H2c),
        ("grpc", Scheme::H2c),
        ("grpc-api", Scheme::H2c),
        ("http", Scheme::Http),
        ("web", Scheme::Http),
        ("httpsx", Scheme::Http),
        ("grpcx", Scheme::Http),
    ] {
        let (backends, _) = one_service(service("ns", "web").port(name, 80).build(), vec![]);
        assert_eq!(backends[0].scheme, scheme, "{name}");
    }
}

#[test]
fn unknown_app_protocol_falls_back_to_the_port_name_with_a_warning() {
    let (backends, warnings) = one_service(
        service("ns", "web")
            .app_port("https", 443, "example.com/custom")
            .build(),
        vec![],
    );
    assert_eq!(backends[0].scheme, Scheme::Https);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].reason.contains("example.com/custom"));
    assert_eq!(warnings[0].object, "ns/web");
}

#[test]
fn tcp_and_udp_ports() {
    let (backends, warnings) = one_service(
        service("ns", "db")
            .app_port("postgres", 5432, "tcp")
            .port("redis", 6379)
            .port_proto("dns", 53, "UDP")
            .annotation("k8s-service-discovery/tcp-ports", "redis")
            .build(),
        vec![
            slice("ns", "db-1", "db")
                .port("postgres", 5432)
                .port("redis", 6379)
                .port("dns", 5353)
                .ready("fd00::7")
                .build(),
        ],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(backend(&backends, "ns-db-postgres").protocol, Protocol::Tcp);
    assert_eq!(backend(&backends, "ns-db-redis").protocol, Protocol::Tcp);
    let dns = backend(&backends, "ns-db-dns");
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(addrs(dns), ["[fd00::7]:5353"]);
}

#[test]
fn tcp_ports_may_name_ports_by_number() {
    let (backends, _) = one_service(
        service("ns", "db")
            .port("db", 5432)
            .annotation("k8s-service-discovery/tcp-ports", "5432")
            .build(),
        vec![],
    );
    assert_eq!(backends[0].protocol, Protocol::Tcp);
}

#[test]
fn sctp_is_skipped_with_a_warning() {
    let (backends, warnings) = one_service(
        service("ns", "sig")
            .port_proto("sctp", 9999, "SCTP")
            .port("http", 80)
            .build(),
        vec![],
    );
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0].name, "ns-sig-http");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].reason.contains("SCTP"));
}

#[test]
fn excluded_ports_are_not_published() {
    let (backends, warnings) = one_service(
        service("ns", "web")
            .port("http", 80)
            .port("metrics", 9090)
            .annotation("k8s-service-discovery/exclude-ports", "metrics")
            .build(),
        vec![],
    );
    assert!(warnings.is_empty());
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0].name, "ns-web-http");
}

#[test]
fn scheme_annotations_win_per_port_over_service_over_inference() {
    let (backends, warnings) = one_service(
        service("ns", "web")
            .port("http", 80)
            .app_port("api", 81, "h2c")
            .port("admin", 82)
            .annotation("k8s-service-discovery/scheme", "https")
            .annotation("k8s-service-discovery/scheme.82", "h2c")
            .build(),
        vec![],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(backend(&backends, "ns-web-http").scheme, Scheme::Https);
    assert_eq!(backend(&backends, "ns-web-api").scheme, Scheme::Https);
    assert_eq!(backend(&backends, "ns-web-admin").scheme, Scheme::H2c);
}

#[test]
fn annotations_naming_missing_ports_are_reported() {
    let (backends, warnings) = one_service(
        service("ns", "web")
            .port("http", 80)
            .annotation("k8s-service-discovery/tcp-ports", "db")
            .annotation("k8s-service-discovery/exclude-ports", "8080")
            .annotation("k8s-service-discovery/scheme.grpc", "h2c")
            .build(),
        vec![],
    );
    assert_eq!(backends.len(), 1);
    let annotations: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w.annotation.as_deref())
        .collect();
    assert_eq!(
        annotations,
        [
            "k8s-service-discovery/exclude-ports",
            "k8s-service-discovery/scheme.grpc",
            "k8s-service-discovery/tcp-ports",
        ]
    );
}

#[test]
fn scheme_on_a_tcp_port_and_tcp_on_a_udp_port_are_reported() {
    let (backends, warnings) = one_service(
        service("ns", "x")
            .app_port("db", 5432, "tcp")
            .port_proto("dns", 53, "UDP")
            .annotation("k8s-service-discovery/scheme.db", "https")
            .annotation("k8s-service-discovery/tcp-ports", "dns")
            .build(),
        vec![],
    );
    assert_eq!(backend(&backends, "ns-x-db").protocol, Protocol::Tcp);
    assert_eq!(backend(&backends, "ns-x-dns").protocol, Protocol::Udp);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

#[test]
fn http_options_apply_to_http_ports_only() {
    let (backends, warnings) = one_service(
        service("ns", "web")
            .port("http", 80)
            .app_port("db", 5432, "tcp")
            .annotation("k8s-service-discovery/pass-host-header", "false")
            .annotation("k8s-service-discovery/sticky-cookie", "true")
            .annotation("k8s-service-discovery/health-check-path", "/healthz")
            .annotation("k8s-service-discovery/health-check-interval", "5s")
            .build(),
        vec![],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let http = backend(&backends, "ns-web-http");
    assert_eq!(http.options.pass_host_header, Some(false));
    assert_eq!(http.options.sticky_cookie, Some(StickyCookie::default()));
    assert_eq!(
        http.options.health_check,
        Some(HealthCheck {
            path: "/healthz".parse().unwrap(),
            interval: Some("5s".parse().unwrap()),
            timeout: None
        })
    );
    assert!(backend(&backends, "ns-web-db").options.is_empty());
}

#[test]
fn http_options_on_a_service_without_http_ports_are_reported() {
    let (_, warnings) = one_service(
        service("ns", "db")
            .app_port("db", 5432, "tcp")
            .annotation("k8s-service-discovery/pass-host-header", "true")
            .build(),
        vec![],
    );
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].reason.contains("HTTP ports only"));
}

#[test]
fn malformed_annotations_warn_naming_object_and_annotation_but_publish() {
    let (backends, warnings) = one_service(
        service("shop", "cart")
            .port("http", 80)
            .annotation("k8s-service-discovery/pass-host-header", "perhaps")
            .build(),
        vec![],
    );
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0].options.pass_host_header, None);
    assert_eq!(warnings.len(), 1);
    let text = warnings[0].to_string();
    assert!(text.contains("shop/cart"), "{text}");
    assert!(
        text.contains("k8s-service-discovery/pass-host-header"),
        "{text}"
    );
    assert!(text.contains("perhaps"), "{text}");
}

#[test]
fn fqdn_slices_and_bad_addresses_are_skipped_with_warnings() {
    let (backends, warnings) = one_service(
        service("ns", "web").port("http", 80).build(),
        vec![
            slice("ns", "web-fqdn", "web")
                .address_type("FQDN")
                .port("http", 80)
                .ready("example.com")
                .build(),
            slice("ns", "web-v4", "web")
                .port("http", 80)
                .ready("10.0.0.1")
                .ready("not-an-ip")
                .build(),
        ],
    );
    assert_eq!(addrs(&backends[0]), ["10.0.0.1:80"]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.kind == "EndpointSlice"));
    assert!(warnings.iter().any(|w| w.object == "ns/web-fqdn"));
    assert!(warnings.iter().any(|w| w.reason.contains("not-an-ip")));
}

mod changes;
mod published;
