//! The exporter against the test API server and S3 (moto): what it publishes, when, and how
//! it starts and stops.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Exporter, Harness, expect, exported, http_get, metric, servers_of, wait_ready};
use k8s_openapi::api::core::v1::Service;
use ksd_testbed::process::{Agent, wait_for};
use ksd_testbed::s3::RequestKind;
use ksd_testbed::slices::{Pod, custom_slice, ready_pods};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_follows_scaling_readiness_and_termination() {
    let h = Harness::start("lifecycle").await;
    let (web, mut exporter) = publish_one_ready_pod(&h).await;
    follow_scaling_and_readiness(&h, &web, &mut exporter).await;
    scale_to_zero_then_delete(&h, &web, &mut exporter).await;
    check_metrics_after_the_lifecycle(&exporter).await;
}

/// Setup: one exported Service with one ready pod; checks the first object is published with
/// the cluster's metadata and a header saying it is generated.
async fn publish_one_ready_pod(h: &Harness) -> (Service, Exporter) {
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();

    let mut exporter = h.spawn(&[], &[]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[("default-web-http", &["http://10.0.0.1:8080"])]),
    )
    .await;
    wait_ready(&mut exporter).await;
    let metadata = h.metadata().await.unwrap();
    assert_eq!(
        metadata.get("cluster").map(String::as_str),
        Some("test-cluster")
    );
    assert!(metadata.contains_key("exporter-version"), "{metadata:?}");
    assert!(metadata.contains_key("generated-at"), "{metadata:?}");
    let text = String::from_utf8(h.object().await.unwrap()).unwrap();
    assert!(
        text.contains("test-cluster") && text.contains("do not edit"),
        "{text}"
    );
    (web, exporter)
}

/// Scaling up adds servers; a failing readiness probe and a terminating pod remove theirs; a
/// pod whose readiness comes back is served again.
async fn follow_scaling_and_readiness(h: &Harness, web: &Service, exporter: &mut Exporter) {
    // Scale up.
    let pods = [
        Pod::ready("web-0", "10.0.0.1"),
        Pod::ready("web-1", "10.0.0.2"),
        Pod::ready("web-2", "10.0.0.3"),
    ];
    h.api.set_endpoints(web, &pods).unwrap();
    h.wait_for_servers(
        exporter,
        &expect(&[(
            "default-web-http",
            &[
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.3:8080",
            ],
        )]),
    )
    .await;

    // A readiness probe fails, another pod terminates.
    let pods = [
        Pod::ready("web-0", "10.0.0.1"),
        Pod::ready("web-1", "10.0.0.2").not_ready(),
        Pod::ready("web-2", "10.0.0.3").terminating(),
    ];
    h.api.set_endpoints(web, &pods).unwrap();
    h.wait_for_servers(
        exporter,
        &expect(&[("default-web-http", &["http://10.0.0.1:8080"])]),
    )
    .await;

    // Readiness comes back.
    let pods = [
        Pod::ready("web-0", "10.0.0.1"),
        Pod::ready("web-1", "10.0.0.2"),
    ];
    h.api.set_endpoints(web, &pods).unwrap();
    h.wait_for_servers(
        exporter,
        &expect(&[(
            "default-web-http",
            &["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        )]),
    )
    .await;
}

/// Scaled to zero, the Service stays with no servers; deleting the Service removes it.
async fn scale_to_zero_then_delete(h: &Harness, web: &Service, exporter: &mut Exporter) {
    // Scaled to zero: the service stays, with no servers.
    h.api.set_endpoints(web, &[]).unwrap();
    h.wait_for_servers(exporter, &expect(&[("default-web-http", &[])]))
        .await;
    let text = String::from_utf8(h.object().await.unwrap()).unwrap();
    assert!(text.contains("servers: []"), "{text}");

    // Deleting the Service removes it.
    h.api.delete("services", "default", "web");
    h.wait_for_servers(exporter, &expect(&[])).await;
}

/// After the lifecycle: at least six uploads written, no backends left, a recent publish
/// timestamp, and the exporter still live.
async fn check_metrics_after_the_lifecycle(exporter: &Exporter) {
    let written = metric(
        exporter.admin,
        "ksd_exporter_uploads_total{outcome=\"written\"}",
    )
    .await
    .unwrap();
    assert!(written >= 6.0, "{written}");
    assert_eq!(
        metric(exporter.admin, "ksd_exporter_backends").await,
        Some(0.0)
    );
    assert!(
        metric(
            exporter.admin,
            "ksd_exporter_last_publish_timestamp_seconds"
        )
        .await
        .unwrap()
            > 1.6e9
    );
    assert_eq!(http_get(exporter.admin, "/livez").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_protocols_families_and_namespaces() {
    let h = Harness::start("shapes").await;
    let multi = apply_every_shape(&h);
    let mut exporter = h.spawn(&[], &[]);
    every_shape_is_published(&h, &mut exporter).await;
    a_malformed_annotation_is_reported_once(&h, &multi, &mut exporter).await;
}

/// Setup: Services with several ports, app protocols, UDP, IPv6 and dual-stack families, two
/// namespaces and a selector-less Service with a slice of its own, each with a pod; returns
/// the multi-port Service, which carries a malformed annotation.
fn apply_every_shape(h: &Harness) -> Service {
    let multi = exported("default", "multi")
        .port("http", 80, 8080)
        .port("admin", 9000, 9090)
        .port("grpc", 50051, 50051)
        .app_protocol("grpc", "kubernetes.io/h2c")
        .port("secure", 443, 8443)
        .app_protocol("secure", "https")
        .annotation("k8s-service-discovery/pass-host-header", "maybe")
        .build();
    let dns = exported("default", "dns")
        .port_proto("dns", 53, 5353, "UDP")
        .build();
    let pg = exported("default", "pg")
        .port("postgres", 5432, 5432)
        .app_protocol("postgres", "tcp")
        .ip_families(&["IPv6"])
        .build();
    let dual = exported("default", "dual")
        .port("http", 80, 8080)
        .ip_families(&["IPv4", "IPv6"])
        .build();
    let v6 = exported("default", "v6")
        .unnamed_port(80, 8080)
        .ip_families(&["IPv6"])
        .build();
    let shop = exported("shop", "web").port("http", 80, 80).build();
    let blog = exported("blog", "web").port("http", 80, 80).build();
    let external = exported("default", "external")
        .port("http", 80, 80)
        .no_selector()
        .build();
    for svc in [&multi, &dns, &pg, &dual, &v6, &shop, &blog, &external] {
        h.api.apply_typed(svc).unwrap();
    }
    h.api
        .set_endpoints(&multi, &[Pod::ready("multi-0", "10.0.1.1")])
        .unwrap();
    h.api
        .set_endpoints(&dns, &[Pod::ready("dns-0", "10.0.2.1")])
        .unwrap();
    h.api
        .set_endpoints(&pg, &[Pod::ready("pg-0", "fd00::5")])
        .unwrap();
    h.api
        .set_endpoints(&dual, &[Pod::dual("dual-0", "10.0.3.1", "fd00::31")])
        .unwrap();
    h.api
        .set_endpoints(&v6, &[Pod::ready("v6-0", "fd00::41")])
        .unwrap();
    h.api
        .set_endpoints(&shop, &[Pod::ready("shop-0", "10.0.4.1")])
        .unwrap();
    h.api
        .set_endpoints(&blog, &[Pod::ready("blog-0", "10.0.5.1")])
        .unwrap();
    let slice = custom_slice("default", "external-1", "external")
        .port("http", 8000, "TCP")
        .address("192.0.2.10")
        .build();
    h.api.apply_typed(&slice).unwrap();
    multi
}

/// Every port, protocol, family and namespace is published under its own name with the
/// right scheme and address form; UDP and TCP services land in their own sections.
async fn every_shape_is_published(h: &Harness, exporter: &mut Exporter) {
    h.wait_for_servers(
        exporter,
        &expect(&[
            ("default-multi-http", &["http://10.0.1.1:8080"]),
            ("default-multi-admin", &["http://10.0.1.1:9090"]),
            ("default-multi-grpc", &["h2c://10.0.1.1:50051"]),
            ("default-multi-secure", &["https://10.0.1.1:8443"]),
            ("default-dns-dns", &["10.0.2.1:5353"]),
            ("default-pg-postgres", &["[fd00::5]:5432"]),
            (
                "default-dual-http",
                &["http://10.0.3.1:8080", "http://[fd00::31]:8080"],
            ),
            ("default-v6-80", &["http://[fd00::41]:8080"]),
            ("shop-web-http", &["http://10.0.4.1:80"]),
            ("blog-web-http", &["http://10.0.5.1:80"]),
            ("default-external-http", &["http://192.0.2.10:8000"]),
        ]),
    )
    .await;

    let doc = common::parse(&h.object().await.unwrap());
    assert!(doc.udp.unwrap().services.contains_key("default-dns-dns"));
    assert!(
        doc.tcp
            .unwrap()
            .services
            .contains_key("default-pg-postgres")
    );
}

/// The malformed annotation is reported once, naming the object, the annotation and why;
/// further changes to the Service's endpoints do not repeat it.
async fn a_malformed_annotation_is_reported_once(
    h: &Harness,
    multi: &Service,
    exporter: &mut Exporter,
) {
    h.api
        .set_endpoints(
            multi,
            &[
                Pod::ready("multi-0", "10.0.1.1"),
                Pod::ready("multi-1", "10.0.1.2"),
            ],
        )
        .unwrap();
    let mut servers = servers_of(&h.object().await.unwrap());
    servers.insert(
        "default-multi-http".to_owned(),
        ["http://10.0.1.1:8080", "http://10.0.1.2:8080"]
            .map(str::to_owned)
            .into(),
    );
    servers.insert(
        "default-multi-admin".to_owned(),
        ["http://10.0.1.1:9090", "http://10.0.1.2:9090"]
            .map(str::to_owned)
            .into(),
    );
    servers.insert(
        "default-multi-grpc".to_owned(),
        ["h2c://10.0.1.1:50051", "h2c://10.0.1.2:50051"]
            .map(str::to_owned)
            .into(),
    );
    servers.insert(
        "default-multi-secure".to_owned(),
        ["https://10.0.1.1:8443", "https://10.0.1.2:8443"]
            .map(str::to_owned)
            .into(),
    );
    h.wait_for_servers(exporter, &servers).await;
    let logs = exporter.agent.stderr();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("k8s-service-discovery/pass-host-header"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains("default/multi"), "{}", warnings[0]);
    assert!(warnings[0].contains("maybe"), "{}", warnings[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_namespace_filters() {
    let h = Harness::start("filters").await;
    let one = ksd_testbed::slices::service("a", "one")
        .label("export", "yes")
        .port("http", 80, 80)
        .build();
    let two = ksd_testbed::slices::service("b", "two")
        .label("export", "yes")
        .port("http", 80, 80)
        .build();
    let three = ksd_testbed::slices::service("c", "three")
        .label("export", "yes")
        .port("http", 80, 80)
        .build();
    let four = ksd_testbed::slices::service("a", "four")
        .label("export", "no")
        .port("http", 80, 80)
        .build();
    for (i, svc) in [&one, &two, &three, &four].into_iter().enumerate() {
        h.api.apply_typed(svc).unwrap();
        h.api
            .set_endpoints(
                svc,
                &[Pod::ready("p", format!("10.0.9.{}", i + 1).as_str())],
            )
            .unwrap();
    }

    // The proof of concept's LABEL_FILTER still works, with a deprecation warning.
    let mut exporter = h.spawn(
        &[],
        &[("LABEL_FILTER", "export=yes"), ("NAMESPACES", "a, b")],
    );
    h.wait_for_servers(
        &mut exporter,
        &expect(&[
            ("a-one-http", &["http://10.0.9.1:80"]),
            ("b-two-http", &["http://10.0.9.2:80"]),
        ]),
    )
    .await;
    assert!(
        exporter
            .agent
            .stderr()
            .contains("LABEL_FILTER is deprecated"),
        "{}",
        exporter.agent.stderr()
    );

    // Labels change: four joins, two leaves.
    let four = ksd_testbed::slices::service("a", "four")
        .label("export", "yes")
        .port("http", 80, 80)
        .build();
    h.api.apply_typed(&four).unwrap();
    let two = ksd_testbed::slices::service("b", "two")
        .label("export", "no")
        .port("http", 80, 80)
        .build();
    h.api.apply_typed(&two).unwrap();
    h.wait_for_servers(
        &mut exporter,
        &expect(&[
            ("a-one-http", &["http://10.0.9.1:80"]),
            ("a-four-http", &["http://10.0.9.4:80"]),
        ]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_object_holds_every_service_present_at_start() {
    const SERVICES: usize = 500;
    let h = Harness::start("startup").await;
    for i in 0..SERVICES {
        let svc = exported(&format!("ns{}", i % 10), &format!("svc{i}"))
            .port("http", 80, 8080)
            .build();
        h.api.apply_typed(&svc).unwrap();
        let base = std::net::Ipv4Addr::new(10, 1, (i / 100) as u8, ((i % 100) * 2) as u8);
        h.api
            .set_endpoints(&svc, &ready_pods(&format!("svc{i}"), 2, base))
            .unwrap();
    }

    let mut exporter = h.spawn(&[], &[]);
    let key = h.key();
    let first = wait_for("the first upload", Duration::from_secs(45), || {
        let bodies = h.s3.put_bodies(&key);
        async move { bodies.into_iter().next() }
    })
    .await;
    let first = match first {
        Ok(first) => first,
        Err(err) => panic!("{err}\n{}", exporter.agent.logs()),
    };
    let servers = servers_of(&first);
    assert_eq!(servers.len(), SERVICES);
    assert!(servers.values().all(|s| s.len() == 2), "{servers:?}");
    assert!(servers.contains_key("ns9-svc499-http"));
    wait_ready(&mut exporter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_means_no_uploads_and_sigterm_keeps_the_object() {
    let h = Harness::start("idle").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();
    let mut exporter = h.spawn(&[], &[]);
    let expected = expect(&[("default-web-http", &["http://10.0.0.1:8080"])]);
    h.wait_for_servers(&mut exporter, &expected).await;
    wait_ready(&mut exporter).await;

    // Nothing changes for 20 s; an unchanged write to the API (same content) is not a change.
    h.s3.reset_counts();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    // Only the slow reads of the syncers' acknowledgements may happen while idle (ACK_INTERVAL,
    // and once after the last publish: listings of the prefix and of `<prefix>_status/`, GETs
    // under `_status/`); nothing writes, and nothing reads the cluster's own object.
    let requests: Vec<_> =
        h.s3.requests()
            .into_iter()
            .filter(|r| {
                let ack_read = r.kind == RequestKind::List
                    || (r.kind == RequestKind::Get && r.path.contains("/_status/"));
                !ack_read
            })
            .collect();
    assert!(
        requests.is_empty(),
        "requests while idle: {requests:#?}\n{}",
        exporter.agent.logs()
    );

    exporter.agent.terminate();
    let status = exporter
        .agent
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the exporter did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", exporter.agent.logs());
    assert_eq!(servers_of(&h.object().await.unwrap()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_and_writes_nothing_once_publishes_and_exits() {
    let h = Harness::start("modes").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();
    let expected = expect(&[("default-web-http", &["http://10.0.0.1:8080"])]);

    let mut dry = h.spawn(&["--dry-run"], &[]);
    let status = dry.agent.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        dry.agent.logs()
    );
    assert_eq!(servers_of(dry.agent.stdout().as_bytes()), expected);
    assert!(h.s3.requests().is_empty(), "{:#?}", h.s3.requests());
    assert!(h.object().await.is_none());

    let mut once = h.spawn(&["--once"], &[]);
    let status = once.agent.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        once.agent.logs()
    );
    assert_eq!(servers_of(&h.object().await.unwrap()), expected);
    assert_eq!(h.s3.put_bodies(&h.key()).len(), 1);

    // --once again with identical content: adopted, not uploaded again.
    let mut again = h.spawn(&["--once"], &[]);
    let status = again.agent.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        again.agent.logs()
    );
    assert_eq!(h.s3.put_bodies(&h.key()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_one_line_naming_the_variable_and_exit_2() {
    let h = Harness::start("settings").await;
    for (extra, remove, variable) in [
        (vec![("CLUSTER_NAME", "")], None, "CLUSTER_NAME"),
        (vec![], Some("CLUSTER_NAME"), "CLUSTER_NAME"),
        (vec![("CLUSTER_NAME", "Not_A_Label")], None, "CLUSTER_NAME"),
        (
            vec![("STORAGE_URL", "http://bucket/prefix/")],
            None,
            "STORAGE_URL",
        ),
        (vec![("DEBOUNCE", "5")], None, "DEBOUNCE"),
        (vec![("MAX_DELAY", "soon")], None, "MAX_DELAY"),
        (vec![("NAME_TEMPLATE", "{nope}")], None, "NAME_TEMPLATE"),
        (vec![("LABEL_SELECTOR", "a b")], None, "LABEL_SELECTOR"),
        (vec![("OUTPUT_FORMATS", "json")], None, "OUTPUT_FORMATS"),
    ] {
        let mut env = h.env(&extra);
        if let Some(remove) = remove {
            env.retain(|(k, _)| k != remove);
        }
        let mut agent = Agent::spawn(
            env!("CARGO_BIN_EXE_ksd-exporter"),
            Vec::<String>::new(),
            env,
            "ksd-exporter",
        )
        .unwrap();
        let status = agent
            .wait_exit(Duration::from_secs(20))
            .await
            .expect("the exporter did not exit");
        assert_eq!(status.code(), Some(2), "{extra:?}\n{}", agent.logs());
        let stderr = agent.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{extra:?}: {stderr}");
        assert!(
            lines[0].starts_with(&format!("error: invalid {variable}: ")),
            "{extra:?}: {stderr}"
        );
    }
    assert!(h.s3.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_format_is_published_next_to_the_traefik_document() {
    let h = Harness::start("formats").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();
    let mut exporter = h.spawn(&[], &[("OUTPUT_FORMATS", "traefik,backends")]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[("default-web-http", &["http://10.0.0.1:8080"])]),
    )
    .await;
    let key = format!("{}{}.backends.yaml", h.prefix, h.cluster);
    let bodies = wait_for("the backends object", Duration::from_secs(20), || {
        let bodies = h.s3.put_bodies(&key);
        async move { bodies.into_iter().last() }
    })
    .await
    .unwrap();
    let doc: ksd_shared::backend::BackendsDocument = serde_yaml::from_slice(&bodies).unwrap();
    assert_eq!(doc.cluster, "test-cluster");
    assert_eq!(doc.backends.len(), 1);
    assert_eq!(doc.backends[0].name, "default-web-http");
    assert_eq!(doc.backends[0].targets.len(), 1);
}
