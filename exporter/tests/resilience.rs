//! The exporter under faults: lost watches, 410 Gone, an API server restart, an S3 outage, and
//! a second writer of the same object.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Exporter, Harness, expect, exported, metric, servers_of, wait_ready};
use k8s_openapi::api::core::v1::Service;
use ksd_testbed::process::wait_for;
use ksd_testbed::slices::Pod;

/// The servers of `other/api` in [`watch_faults_never_publish_a_partial_state`].
const API_SERVERS: &[&str] = &["h2c://10.3.0.1:9000"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_faults_never_publish_a_partial_state() {
    let h = Harness::start("watch-faults").await;
    let (web, stable, mut exporter) = publish_two_services(&h).await;
    recover_from_each_watch_fault(&h, &web, &stable, &mut exporter).await;
    a_re_list_was_counted(&mut exporter).await;
    no_uploaded_version_lost_a_ready_server(&h);
}

/// Setup: `default/web` with two stable ready pods and `other/api` with one, published;
/// returns the web Service, its stable pods and the exporter.
async fn publish_two_services(h: &Harness) -> (Service, Vec<Pod>, Exporter) {
    let web = exported("default", "web").port("http", 80, 8080).build();
    let api = exported("other", "api").port("grpc", 9000, 9000).build();
    h.api.apply_typed(&web).unwrap();
    h.api.apply_typed(&api).unwrap();
    let stable = vec![
        Pod::ready("web-0", "10.2.0.1"),
        Pod::ready("web-1", "10.2.0.2"),
    ];
    h.api.set_endpoints(&web, &stable).unwrap();
    h.api
        .set_endpoints(&api, &[Pod::ready("api-0", "10.3.0.1")])
        .unwrap();
    let mut exporter = h.spawn(&[], &[]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[
            (
                "default-web-http",
                &["http://10.2.0.1:8080", "http://10.2.0.2:8080"],
            ),
            ("other-api-grpc", API_SERVERS),
        ]),
    )
    .await;
    (web, stable, exporter)
}

/// Each fault (dropped watches, 410 Gone, an API server restart), then a change that proves
/// the exporter recovered from it: a pod added to `web` is published with the stable ones.
async fn recover_from_each_watch_fault(
    h: &Harness,
    web: &Service,
    stable: &[Pod],
    exporter: &mut Exporter,
) {
    let faults = ["drop watches", "410 Gone", "API restart"];
    for (i, fault) in faults.iter().enumerate() {
        match *fault {
            "drop watches" => h.api.drop_watches(),
            "410 Gone" => {
                h.api.compact();
                h.api.drop_watches();
            }
            _ => {
                h.api.stop().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                h.api.restart().await.unwrap();
            }
        }
        let extra_ip = format!("10.2.1.{}", i + 1);
        let mut pods = stable.to_vec();
        pods.push(Pod::ready("web-extra", extra_ip.as_str()));
        h.api.set_endpoints(web, &pods).unwrap();
        let extra_url = format!("http://{extra_ip}:8080");
        h.wait_for_servers(
            exporter,
            &expect(&[
                (
                    "default-web-http",
                    &[
                        "http://10.2.0.1:8080",
                        "http://10.2.0.2:8080",
                        extra_url.as_str(),
                    ],
                ),
                ("other-api-grpc", API_SERVERS),
            ]),
        )
        .await;
    }
}

/// The exporter is still running and counted at least one re-list of a watch.
async fn a_re_list_was_counted(exporter: &mut Exporter) {
    assert!(exporter.agent.is_running());
    let restarts = metric(
        exporter.admin,
        "ksd_exporter_watch_restarts_total{resource=\"endpointslices\"}",
    )
    .await
    .unwrap_or(0.0)
        + metric(
            exporter.admin,
            "ksd_exporter_watch_restarts_total{resource=\"services\"}",
        )
        .await
        .unwrap_or(0.0);
    assert!(
        restarts >= 1.0,
        "no re-list counted\n{}",
        exporter.agent.logs()
    );
}

/// Every version the S3 server received still had the servers that stayed ready.
fn no_uploaded_version_lost_a_ready_server(h: &Harness) {
    let bodies = h.s3.put_bodies(&h.key());
    assert!(bodies.len() >= 4, "{} uploads", bodies.len());
    for body in &bodies {
        let servers = servers_of(body);
        let web = servers.get("default-web-http").unwrap_or_else(|| {
            panic!(
                "a version lost the web service:\n{}",
                String::from_utf8_lossy(body)
            )
        });
        for url in ["http://10.2.0.1:8080", "http://10.2.0.2:8080"] {
            assert!(
                web.contains(url),
                "a version lost {url}:\n{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            servers.get("other-api-grpc").map(|s| s.len()),
            Some(1),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_is_survived_and_the_latest_state_published_after() {
    let h = Harness::start("s3-outage").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.4.0.1")])
        .unwrap();
    let mut exporter = h.spawn(&[], &[]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[("default-web-http", &["http://10.4.0.1:8080"])]),
    )
    .await;
    wait_ready(&mut exporter).await;

    h.s3.set_down(true);
    h.api
        .set_endpoints(
            &web,
            &[
                Pod::ready("web-0", "10.4.0.1"),
                Pod::ready("web-1", "10.4.0.2"),
            ],
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    h.api
        .set_endpoints(
            &web,
            &[
                Pod::ready("web-0", "10.4.0.1"),
                Pod::ready("web-1", "10.4.0.2"),
                Pod::ready("web-2", "10.4.0.3"),
            ],
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(exporter.agent.is_running(), "{}", exporter.agent.logs());
    // Nothing got through during the outage.
    assert_eq!(
        servers_of(&h.object().await.unwrap()),
        expect(&[("default-web-http", &["http://10.4.0.1:8080"])])
    );
    let errors = metric(
        exporter.admin,
        "ksd_exporter_uploads_total{outcome=\"error\"}",
    )
    .await
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "{}", exporter.agent.logs());

    h.s3.set_down(false);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[(
            "default-web-http",
            &[
                "http://10.4.0.1:8080",
                "http://10.4.0.2:8080",
                "http://10.4.0.3:8080",
            ],
        )]),
    )
    .await;
    assert!(exporter.agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_exporters_with_the_same_cluster_name_are_reported() {
    let h = Harness::start("conflict").await;
    let a = exported("a", "web").port("http", 80, 80).build();
    let b = exported("b", "web").port("http", 80, 80).build();
    h.api.apply_typed(&a).unwrap();
    h.api.apply_typed(&b).unwrap();
    h.api
        .set_endpoints(&a, &[Pod::ready("a-0", "10.5.0.1")])
        .unwrap();
    h.api
        .set_endpoints(&b, &[Pod::ready("b-0", "10.5.1.1")])
        .unwrap();

    // Two "clusters" (different namespaces) misconfigured with the same CLUSTER_NAME; a short
    // heartbeat makes each rewrite the object the other replaced.
    let short = [("HEARTBEAT_INTERVAL", "2s")];
    let mut first = h.spawn(&[], &[short[0], ("NAMESPACES", "a")]);
    h.wait_for_servers(
        &mut first,
        &expect(&[("a-web-http", &["http://10.5.0.1:80"])]),
    )
    .await;
    let mut second = h.spawn(&[], &[short[0], ("NAMESPACES", "b")]);

    let reported = wait_for(
        "a conflict to be reported",
        Duration::from_secs(30),
        || async {
            for exporter in [&first, &second] {
                let conflicts = metric(
                    exporter.admin,
                    "ksd_exporter_foreign_writer_conflicts_total",
                )
                .await
                .unwrap_or(0.0);
                let logged = exporter
                    .agent
                    .stderr()
                    .lines()
                    .any(|l| l.contains("ERROR") && l.contains("is CLUSTER_NAME unique?"));
                if conflicts >= 1.0 && logged {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    if let Err(err) = reported {
        panic!("{err}\n{}\n{}", first.agent.logs(), second.agent.logs());
    }
    let logs = format!("{}{}", first.agent.stderr(), second.agent.stderr());
    let line = logs
        .lines()
        .find(|l| l.contains("is CLUSTER_NAME unique?"))
        .unwrap();
    assert!(line.contains("test-cluster.traefik.yaml"), "{line}");
    assert!(line.contains("another writer replaced it"), "{line}");
    assert!(first.agent.is_running() && second.agent.is_running());
}
