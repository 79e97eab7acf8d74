//! Merging: every cluster into the union and per-cluster pools, and conflicting options
//! resolved the same whatever the upload order.

use ksd_shared::traefik::TraefikVersion;
use ksd_testbed::s3::S3Fixture;
use serde_yaml::Value;

use crate::common::*;

fn servers(doc: &Value, section: &str, service: &str) -> Vec<String> {
    let field = if section == "http" { "url" } else { "address" };
    doc[section]["services"][service]["loadBalancer"]["servers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{section}.services.{service} missing in {doc:?}"))
        .iter()
        .map(|s| s[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_clusters_merge_into_union_and_per_cluster_pools() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "merge/";
    let dir = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1", "10.0.0.2"])]);
    let b = format!(
        "{}tcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"[fd00::5]:5432\"\n",
        http_doc(&[("web", &["10.1.0.1"])])
    );
    let c = http_doc(&[("api", &["10.2.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    put(&s3, prefix, "c.traefik.yaml", c.clone()).await;

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    let bytes = syncer.wait_clusters("a, b, c").await;
    let doc: Value = serde_yaml::from_slice(&bytes).unwrap();

    assert_eq!(
        servers(&doc, "http", "web"),
        [
            "http://10.0.0.1:80",
            "http://10.0.0.2:80",
            "http://10.1.0.1:80"
        ],
        "the union pool holds every cluster's servers"
    );
    assert_eq!(
        servers(&doc, "http", "web.a"),
        ["http://10.0.0.1:80", "http://10.0.0.2:80"]
    );
    assert_eq!(servers(&doc, "http", "web.b"), ["http://10.1.0.1:80"]);
    assert_eq!(servers(&doc, "http", "api"), ["http://10.2.0.1:80"]);
    assert_eq!(servers(&doc, "http", "api.c"), ["http://10.2.0.1:80"]);
    assert_eq!(servers(&doc, "tcp", "db"), ["[fd00::5]:5432"]);
    assert_eq!(servers(&doc, "tcp", "db.b"), ["[fd00::5]:5432"]);
    assert_eq!(
        bytes,
        expected_file(&[("a", &a), ("b", &b), ("c", &c)], TraefikVersion::V3)
    );
    check_merged(&bytes).unwrap();

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&syncer.output)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);

    syncer
        .wait_metric("ksd_syncer_clusters_accepted", 3.0)
        .await;
    assert_eq!(
        syncer.metric("ksd_syncer_servers{cluster=\"a\"}").await,
        2.0
    );
    assert_eq!(
        syncer.metric("ksd_syncer_servers{cluster=\"b\"}").await,
        2.0
    );
    assert_eq!(syncer.metric("ksd_syncer_clusters_seen").await, 3.0);
    assert!(syncer.ready().await);
    assert!(
        syncer
            .metric("ksd_syncer_last_write_timestamp_seconds")
            .await
            > 1.6e9
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_options_resolve_the_same_whatever_the_upload_order() {
    let s3 = S3Fixture::start().await.unwrap();
    let a = format!(
        "{}        passHostHeader: true\n",
        http_doc(&[("web", &["10.0.0.1"])])
    );
    let b = format!(
        "{}        passHostHeader: false\n",
        http_doc(&[("web", &["10.1.0.1"])])
    );

    let mut results = Vec::new();
    for (run, order) in [("one", ["a", "b"]), ("two", ["b", "a"])] {
        let prefix = format!("conflict-{run}/");
        let dir = tempfile::tempdir().unwrap();
        let syncer = SyncerConfig::s3(&s3, &prefix, dir.path())
            .env("CONFIRM_POLLS", "1")
            .spawn();
        let first = order[0];
        let body = |name: &str| if name == "a" { a.clone() } else { b.clone() };
        put(&s3, &prefix, &format!("{first}.traefik.yaml"), body(first)).await;
        syncer.wait_clusters(first).await;
        put(
            &s3,
            &prefix,
            &format!("{}.traefik.yaml", order[1]),
            body(order[1]),
        )
        .await;
        let bytes = syncer.wait_clusters("a, b").await;
        syncer.wait_metric("ksd_syncer_conflicts", 1.0).await;
        assert!(
            syncer.log_count("clusters disagree") >= 1,
            "{}",
            syncer.agent.logs()
        );
        results.push(bytes);
    }
    assert_eq!(results[0], results[1], "same clusters, same bytes");
    let doc: Value = serde_yaml::from_slice(&results[0]).unwrap();
    let services = &doc["http"]["services"];
    assert_eq!(
        services["web"]["loadBalancer"]["passHostHeader"],
        Value::Bool(true)
    );
    assert_eq!(
        services["web.a"]["loadBalancer"]["passHostHeader"],
        Value::Bool(true)
    );
    assert_eq!(
        services["web.b"]["loadBalancer"]["passHostHeader"],
        Value::Bool(false)
    );
    assert_eq!(servers(&doc, "http", "web").len(), 2);
}
