//! End to end: two clusters (test API servers) → `ksd-exporter` each → S3 (moto) →
//! `ksd-syncer` → the file Traefik reads, following a scale-up and a scale-down.
//!
//! `ksd-exporter` is another package's binary: `cargo build --bins` (scripts/test does) builds
//! it next to this test.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::*;
use ksd_testbed::apiserver::TestApiServer;
use ksd_testbed::process::{Agent, bin_path, free_port};
use ksd_testbed::s3::S3Fixture;
use ksd_testbed::slices::{Pod, service};
use serde_yaml::Value;

const EXPORT_LABEL: &str = "k8s-service-discovery";

fn spawn_exporter(api: &TestApiServer, s3: &S3Fixture, prefix: &str, cluster: &str) -> Agent {
    let mut env = s3.env();
    env.extend(
        [
            ("CLUSTER_NAME", cluster.to_owned()),
            ("STORAGE_URL", s3.storage_url(prefix)),
            ("KUBECONFIG", api.kubeconfig_path().display().to_string()),
            ("DEBOUNCE", "200ms".to_owned()),
            ("MAX_DELAY", "1s".to_owned()),
            ("ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    Agent::spawn(bin_path("ksd-exporter"), Vec::<String>::new(), env, cluster).unwrap()
}

/// Service name -> sorted server URLs, from the merged file.
fn pools(bytes: &[u8]) -> BTreeMap<String, Vec<String>> {
    let doc: Value = serde_yaml::from_slice(bytes).unwrap();
    let mut pools = BTreeMap::new();
    if let Some(services) = doc["http"]["services"].as_mapping() {
        for (name, service) in services {
            let mut urls: Vec<String> = service["loadBalancer"]["servers"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|s| s["url"].as_str().unwrap().to_owned())
                .collect();
            urls.sort();
            pools.insert(name.as_str().unwrap().to_owned(), urls);
        }
    }
    pools
}

fn expect(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(name, urls)| {
            let mut urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
            urls.sort();
            ((*name).to_owned(), urls)
        })
        .collect()
}

async fn wait_pools(
    syncer: &Syncer,
    exporters: &[&Agent],
    expected: &BTreeMap<String, Vec<String>>,
) {
    let path = syncer.output.clone();
    let result = ksd_testbed::process::wait_for("the merged pools", WAIT, || {
        let found = std::fs::read(&path)
            .ok()
            .filter(|bytes| check_merged(bytes).is_ok())
            .map(|bytes| pools(&bytes));
        async move { (found.as_ref() == Some(expected)).then_some(()) }
    })
    .await;
    if let Err(error) = result {
        let logs: Vec<String> = exporters.iter().map(|a| a.logs()).collect();
        panic!(
            "{error}\nexpected: {expected:#?}\nfile:\n{}\n{}\n{}",
            syncer.text(),
            syncer.agent.logs(),
            logs.join("\n")
        );
    }
}

/// Both clusters' `web` servers, in one pool and in one per cluster: east has one, west two.
fn pools_at_the_start() -> BTreeMap<String, Vec<String>> {
    expect(&[
        (
            "default-web-http",
            &[
                "http://10.0.0.1:8080",
                "http://10.1.0.1:8080",
                "http://10.1.0.2:8080",
            ],
        ),
        ("default-web-http.east", &["http://10.0.0.1:8080"]),
        (
            "default-web-http.west",
            &["http://10.1.0.1:8080", "http://10.1.0.2:8080"],
        ),
    ])
}

/// After east scales `web` up to three servers.
fn pools_after_east_scales_up() -> BTreeMap<String, Vec<String>> {
    expect(&[
        (
            "default-web-http",
            &[
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.3:8080",
                "http://10.1.0.1:8080",
                "http://10.1.0.2:8080",
            ],
        ),
        (
            "default-web-http.east",
            &[
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.3:8080",
            ],
        ),
        (
            "default-web-http.west",
            &["http://10.1.0.1:8080", "http://10.1.0.2:8080"],
        ),
    ])
}

/// After west then scales `web` down to one server.
fn pools_after_west_scales_down() -> BTreeMap<String, Vec<String>> {
    expect(&[
        (
            "default-web-http",
            &[
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.3:8080",
                "http://10.1.0.2:8080",
            ],
        ),
        (
            "default-web-http.east",
            &[
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.3:8080",
            ],
        ),
        ("default-web-http.west", &["http://10.1.0.2:8080"]),
    ])
}

/// The syncer's metrics agree with the file (both clusters accepted, 3 servers in east, 1 in
/// west), and it is ready.
async fn metrics_count_the_final_servers(syncer: &Syncer) {
    assert_eq!(syncer.metric("ksd_syncer_clusters_accepted").await, 2.0);
    assert_eq!(
        syncer.metric("ksd_syncer_servers{cluster=\"east\"}").await,
        3.0
    );
    assert_eq!(
        syncer.metric("ksd_syncer_servers{cluster=\"west\"}").await,
        1.0
    );
    assert!(syncer.ready().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clusters_through_exporters_and_the_bucket_into_one_file() {
    let east = TestApiServer::start().await.unwrap();
    let west = TestApiServer::start().await.unwrap();
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "e2e/";
    let traefik = tempfile::tempdir().unwrap();

    let web = service("default", "web")
        .label(EXPORT_LABEL, "true")
        .port("http", 80, 8080)
        .build();
    // Not exported: no label.
    let internal = service("default", "internal")
        .port("http", 80, 8080)
        .build();
    for api in [&east, &west] {
        api.apply_typed(&web).unwrap();
        api.apply_typed(&internal).unwrap();
        api.set_endpoints(&internal, &[Pod::ready("internal-0", "10.9.0.1")])
            .unwrap();
    }
    east.set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();
    west.set_endpoints(
        &web,
        &[
            Pod::ready("web-0", "10.1.0.1"),
            Pod::ready("web-1", "10.1.0.2"),
        ],
    )
    .unwrap();

    let east_exporter = spawn_exporter(&east, &s3, prefix, "east");
    let west_exporter = spawn_exporter(&west, &s3, prefix, "west");
    let syncer = SyncerConfig::s3(&s3, prefix, traefik.path()).spawn();
    let exporters = [&east_exporter, &west_exporter];

    wait_pools(&syncer, &exporters, &pools_at_the_start()).await;
    assert!(syncer.text().contains("# Clusters: east, west\n"));

    // Scale up in east.
    east.set_endpoints(
        &web,
        &[
            Pod::ready("web-0", "10.0.0.1"),
            Pod::ready("web-1", "10.0.0.2"),
            Pod::ready("web-2", "10.0.0.3"),
        ],
    )
    .unwrap();
    wait_pools(&syncer, &exporters, &pools_after_east_scales_up()).await;

    // Scale down in west.
    west.set_endpoints(&web, &[Pod::ready("web-1", "10.1.0.2")])
        .unwrap();
    wait_pools(&syncer, &exporters, &pools_after_west_scales_down()).await;

    metrics_count_the_final_servers(&syncer).await;
}
