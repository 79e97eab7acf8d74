//! The exporter's side of the trust boundary: special-purpose endpoint addresses are never
//! published (checked in the object and in the file a syncer writes from it), and a task that
//! ends or panics stops the process instead of leaving a zombie that answers its probes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Harness, expect, exported, metric, wait_ready};
use ksd_testbed::process::{Agent, wait_for};
use ksd_testbed::slices::Pod;

const SPECIAL: [&str; 6] = [
    "127.0.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "::1",
    "::ffff:127.0.0.1",
    "fe80::1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_purpose_endpoints_are_never_published_s3() {
    let h = Harness::start("special-s3").await;
    let web = exported("default", "web")
        .port("http", 80, 8080)
        .ip_family_policy("RequireDualStack")
        .ip_families(&["IPv4", "IPv6"])
        .build();
    h.api.apply_typed(&web).unwrap();
    let mut pods = vec![Pod::ready("web-0", "10.0.0.1")];
    for (i, ip) in SPECIAL.iter().enumerate() {
        pods.push(Pod::ready(&format!("bad-{i}"), *ip));
    }
    h.api.set_endpoints(&web, &pods).unwrap();

    let mut exporter = h.spawn(&[], &[]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[("default-web-http", &["http://10.0.0.1:8080"])]),
    )
    .await;
    wait_ready(&mut exporter).await;
    assert_eq!(
        metric(exporter.admin, "ksd_exporter_refused_endpoints").await,
        Some(6.0)
    );
    let logged = exporter
        .agent
        .stderr()
        .lines()
        .filter(|l| l.contains("left an endpoint out"))
        .count();
    assert_eq!(logged, 6, "{}", exporter.agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_purpose_endpoints_never_reach_traefiks_file_local() {
    let h = Harness::start("special-local").await;
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    let url = format!("file://{}/", store.path().display());
    let db = exported("default", "db")
        .port("pg", 5432, 5432)
        .ip_family_policy("RequireDualStack")
        .ip_families(&["IPv4", "IPv6"])
        .build();
    h.api.apply_typed(&db).unwrap();
    let mut pods = vec![Pod::ready("db-0", "10.0.0.7")];
    for (i, ip) in SPECIAL.iter().enumerate() {
        pods.push(Pod::ready(&format!("bad-{i}"), *ip));
    }
    h.api.set_endpoints(&db, &pods).unwrap();
    let mut exporter = h.spawn(&[], &[("STORAGE_URL", &url)]);
    wait_ready(&mut exporter).await;

    let syncer_admin = format!("127.0.0.1:{}", ksd_testbed::process::free_port());
    let traefik_dir = traefik.path().display().to_string();
    let syncer = Agent::spawn(
        ksd_testbed::process::bin_path("ksd-syncer"),
        Vec::<String>::new(),
        vec![
            ("STORAGE_URL".into(), url.clone()),
            ("TRAEFIK_DIR".into(), traefik_dir),
            ("POLL_INTERVAL".into(), "200ms".into()),
            ("ADMIN_ADDR".into(), syncer_admin),
        ],
        "ksd-syncer",
    )
    .unwrap();
    let output = traefik.path().join("k8s-service-discovery.yml");
    let text = wait_for("the syncer's file", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&output).ok();
        async move { text.filter(|t| t.contains("# Clusters: test-cluster")) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", exporter.agent.logs(), syncer.logs()));
    assert!(text.contains("\"http://10.0.0.7:5432\""), "{text}");
    for bad in ["127.0.0.1", "169.254", "0.0.0.0", "::1", "ffff", "fe80"] {
        assert!(!text.contains(bad), "{bad} in\n{text}");
    }
    // Nothing was left for the syncer to refuse: the exporter had already.
    assert!(
        !syncer.stderr().contains("left a server out"),
        "{}",
        syncer.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_or_panics_stops_the_exporter() {
    for (fault, task) in [
        ("publish:panic", "publish"),
        ("watch:return", "watch"),
        ("admin-server:panic", "admin-server"),
    ] {
        let h = Harness::start(&format!("zombie-{task}")).await;
        let web = exported("default", "web").port("http", 80, 8080).build();
        h.api.apply_typed(&web).unwrap();
        h.api
            .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
            .unwrap();
        let mut exporter = h.spawn(&[], &[("KSD_FAULT_TASK", fault)]);
        let status = exporter
            .agent
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{fault}: still running\n{}", exporter.agent.logs()));
        assert_eq!(status.code(), Some(1), "{fault}: {}", exporter.agent.logs());
        let stderr = exporter.agent.stderr();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("ERROR") && l.contains(&format!("task {task} ended"))),
            "{fault}: {stderr}"
        );
    }
}
