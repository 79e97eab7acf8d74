//! `ksd-syncer` against an S3 server (moto behind the testbed's counting proxy): merging,
//! rejections, outages, confirmation of deletions, idle behaviour, `--once` and `--dry-run`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use ksd_shared::traefik::TraefikVersion;
use ksd_testbed::process::wait_for;
use ksd_testbed::s3::{RequestKind, S3Fixture};
use serde_yaml::Value;

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

/// One bad version of cluster `b` per case, uploaded over a good one. Each case asserts on its
/// own: the reason is counted, the file still holds `a` and `b`'s last good version.
#[tokio::test(flavor = "multi_thread")]
async fn rejected_documents_keep_the_last_good_version() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "reject/";
    let dir = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("MAX_OBJECT_BYTES", "4KiB")
        .spawn();
    let good = syncer.wait_clusters("a, b").await;
    assert_eq!(
        good,
        expected_file(&[("a", &a), ("b", &b)], TraefikVersion::V3)
    );
    let mtime_before = mtime(&syncer.output);

    let lb = "    api:\n      loadBalancer:\n        servers:\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid YAML", "http:\n  services: [unclosed\n".into(), "yaml"),
        (
            "routers",
            format!("{b}  routers:\n    r:\n      rule: \"Host(`x`)\"\n      service: api\n"),
            "not_services_only",
        ),
        (
            "middlewares",
            format!("{b}  middlewares:\n    m:\n      stripPrefix:\n        prefixes: [\"/x\"]\n"),
            "not_services_only",
        ),
        (
            "unknown field",
            format!("{b}        weightz: 3\n"),
            "unknown_field",
        ),
        (
            "foreign scheme",
            format!("http:\n  services:\n{lb}          - url: \"TCP://10.1.0.1:80\"\n"),
            "invalid_server",
        ),
        (
            "unbracketed IPv6",
            format!("http:\n  services:\n{lb}          - url: \"http://fd00::1:80\"\n"),
            "invalid_server",
        ),
        (
            "template marker",
            format!("# {{{{ .Env }}}}\n{b}"),
            "template_marker",
        ),
        (
            "alias bomb",
            "a: &a [\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\nd: [*c,*c,*c,*c]\n".into(),
            "unsupported_yaml",
        ),
        (
            "over MAX_OBJECT_BYTES",
            format!("{b}{}", "#".repeat(5000) + "\n"),
            "too_large",
        ),
    ];

    for (case, body, reason) in &cases {
        let sample = format!("ksd_syncer_rejections_total{{reason=\"{reason}\"}}");
        let before = syncer.metric(&sample).await;
        s3.reset_counts();
        put(&s3, prefix, "b.traefik.yaml", body.clone()).await;
        syncer.wait_metric(&sample, before + 1.0).await;
        assert_eq!(
            syncer.read().unwrap(),
            good,
            "{case}: the file keeps a and b's last good version"
        );
        assert_eq!(
            syncer
                .metric(&format!(
                    "ksd_syncer_clusters_rejected{{reason=\"{reason}\"}}"
                ))
                .await,
            1.0,
            "{case}"
        );
        let gets_of_b = s3
            .requests()
            .iter()
            .filter(|r| {
                r.kind == RequestKind::Get && r.key.as_deref() == Some("reject/b.traefik.yaml")
            })
            .count();
        if *reason == "too_large" {
            assert_eq!(
                gets_of_b, 0,
                "{case}: refused from the listing, not downloaded"
            );
        } else {
            assert_eq!(gets_of_b, 1, "{case}: fetched once");
        }
    }
    assert_eq!(mtime(&syncer.output), mtime_before, "no write at all");

    // Several polls later each version was still reported once.
    let polls = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    syncer
        .wait_metric("ksd_syncer_polls_total{outcome=\"ok\"}", polls + 5.0)
        .await;
    assert_eq!(
        syncer.log_count("rejected cluster document"),
        cases.len(),
        "{}",
        syncer.agent.stderr()
    );

    // Keys: another format is ignored silently; a key naming no cluster is reported once.
    s3.reset_counts();
    put(&s3, prefix, "a.backends.yaml", "cluster: a\nbackends: []\n").await;
    put(&s3, prefix, "Not_A_Cluster.traefik.yaml", a.clone()).await;
    syncer.wait_metric("ksd_syncer_invalid_keys", 1.0).await;
    let polls = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    syncer
        .wait_metric("ksd_syncer_polls_total{outcome=\"ok\"}", polls + 5.0)
        .await;
    assert_eq!(
        syncer.log_count("Not_A_Cluster.traefik.yaml"),
        1,
        "reported once"
    );
    assert_eq!(syncer.log_count("a.backends.yaml"), 0, "ignored silently");
    assert_eq!(s3.get_count(), 0, "neither is fetched");
    assert_eq!(syncer.read().unwrap(), good);

    // The other clusters are unaffected: a's update applies while b stays at its last good.
    let a2 = http_doc(&[("web", &["10.0.0.9"])]);
    put(&s3, prefix, "a.traefik.yaml", a2.clone()).await;
    let expected = expected_file(&[("a", &a2), ("b", &b)], TraefikVersion::V3);
    syncer
        .wait_file("a's update", |text| text.as_bytes() == expected.as_slice())
        .await;

    // A fixed b replaces the rejection.
    let b2 = http_doc(&[("api", &["10.1.0.2"])]);
    put(&s3, prefix, "b.traefik.yaml", b2.clone()).await;
    let expected = expected_file(&[("a", &a2), ("b", &b2)], TraefikVersion::V3);
    syncer
        .wait_file("b fixed", |text| text.as_bytes() == expected.as_slice())
        .await;
    assert_eq!(
        syncer
            .metric("ksd_syncer_clusters_rejected{reason=\"too_large\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_changes_nothing_and_the_file_updates_once_back() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "outage/";
    let dir = tempfile::tempdir().unwrap();
    let v1 = http_doc(&[("web", &["10.0.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", v1.clone()).await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    let before = syncer.wait_clusters("a").await;
    let mtime_before = mtime(&syncer.output);

    s3.set_down(true);
    // Changed behind the proxy: the syncer cannot see it while the store is "down".
    let v2 = http_doc(&[("web", &["10.0.0.2"])]);
    put(&s3, prefix, "a.traefik.yaml", v2.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(
            syncer.read().unwrap(),
            before,
            "the file changed during the outage"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(mtime(&syncer.output), mtime_before);
    assert!(
        syncer
            .metric("ksd_syncer_polls_total{outcome=\"error\"}")
            .await
            >= 3.0
    );
    assert!(
        syncer.ready().await,
        "readiness survives an outage: the file is still good"
    );

    s3.set_down(false);
    let expected = expected_file(&[("a", &v2)], TraefikVersion::V3);
    syncer
        .wait_file("the update after the outage", |t| {
            t.as_bytes() == expected.as_slice()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_object_is_removed_only_after_confirm_polls() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "delete/";
    let dir = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    // A longer interval so that "after two polls, before the third" is a wide window.
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", "1s")
        .env("CONFIRM_POLLS", "3")
        .spawn();
    let both = syncer.wait_clusters("a, b").await;

    delete(&s3, prefix, "b.traefik.yaml").await;
    let lists_at_delete = s3.list_count();
    wait_for("two listings after the delete", WAIT, || {
        let n = s3.list_count();
        async move { (n >= lists_at_delete + 2).then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(
        syncer.read().unwrap(),
        both,
        "still there after CONFIRM_POLLS - 1 listings without it"
    );
    assert!(syncer.metric("ksd_syncer_clusters_missing").await >= 1.0);

    let expected = expected_file(&[("a", &a)], TraefikVersion::V3);
    syncer
        .wait_file("b removed", |t| t.as_bytes() == expected.as_slice())
        .await;
    assert!(
        s3.list_count() >= lists_at_delete + 3,
        "removed after {} listings",
        s3.list_count() - lists_at_delete
    );
    assert_eq!(syncer.log_count("absence confirmed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listing_going_empty_is_applied_after_confirm_polls_as_a_valid_empty_file() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "empty/";
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("CONFIRM_POLLS", "2")
        .spawn();
    syncer.wait_clusters("a").await;
    delete(&s3, prefix, "a.traefik.yaml").await;
    let bytes = syncer.wait_clusters("none").await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.lines().all(|l| l.starts_with('#')),
        "comment only: {text}"
    );
    check_merged(&bytes).unwrap();
    let parsed: Option<Value> = serde_yaml::from_str(&text).unwrap();
    assert!(matches!(parsed, None | Some(Value::Null)), "{parsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_polls_list_once_and_never_fetch_or_write() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "idle/";
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    put(
        &s3,
        prefix,
        "b.traefik.yaml",
        http_doc(&[("api", &["10.1.0.1"])]),
    )
    .await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    syncer.wait_clusters("a, b").await;
    // Let the start-up cycle settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mtime_before = mtime(&syncer.output);
    let writes_before = syncer
        .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
        .await;
    let polls_before = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    s3.reset_counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls_after = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    let lists = s3.list_count();
    let requests = s3.requests();
    let polls = polls_after - polls_before;

    assert!(polls >= 5.0, "polls happened: {polls}");
    // A listing may be in flight at either end of the window.
    assert!(
        (lists as f64 - polls).abs() <= 1.0,
        "one listing per poll: {lists} listings, {polls} polls"
    );
    assert_eq!(s3.get_count(), 0, "no GET: {requests:?}");
    assert!(
        requests.iter().all(|r| r.kind == RequestKind::List),
        "only listings: {requests:?}"
    );
    assert_eq!(
        syncer
            .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
            .await,
        writes_before
    );
    assert_eq!(mtime(&syncer.output), mtime_before);
}

/// The file validated against SchemaStore's schemas for the Traefik version it targets.
#[tokio::test(flavor = "multi_thread")]
async fn output_validates_against_schemastore_v2_and_v3() {
    let s3 = S3Fixture::start().await.unwrap();
    let a = "http:
  services:
    web:
      loadBalancer:
        servers:
          - url: \"http://10.0.0.1:8080\"
          - url: \"https://[fd00::1]:8443\"
        passHostHeader: false
        sticky:
          cookie:
            name: lb
            secure: true
            httpOnly: true
            sameSite: lax
        healthCheck:
          path: /healthz
          interval: 10s
          timeout: 3s
    grpc:
      loadBalancer:
        servers:
          - url: \"h2c://10.0.0.2:9000\"
tcp:
  services:
    db:
      loadBalancer:
        servers:
          - address: \"10.0.0.3:5432\"
          - address: \"[fd00::3]:5432\"
udp:
  services:
    dns:
      loadBalancer:
        servers:
          - address: \"10.0.0.4:53\"
";
    let b = http_doc(&[("web", &["10.1.0.1"])]);
    let schema_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../checks/schemas");
    for (version, prefix) in [("v3", "schema-v3/"), ("v2", "schema-v2/")] {
        put(&s3, prefix, "a.traefik.yaml", a).await;
        put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (code, _, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
            .env("TRAEFIK_VERSION", version)
            .arg("--once")
            .run()
            .await;
        assert_eq!(code, Some(0), "{stderr}");
        let bytes = std::fs::read(dir.path().join(OUTPUT_FILE)).unwrap();
        let instance: serde_json::Value = serde_yaml::from_slice(&bytes).unwrap();
        let schema_path = schema_dir.join(format!("traefik-{version}-file-provider.json"));
        let schema: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&schema_path)
                .unwrap_or_else(|e| panic!("schema {} missing: {e}", schema_path.display())),
        )
        .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{version}: {errors:?}\n{instance:#}");
        assert!(instance["http"]["services"]["web.a"].is_object());
    }

    // `servers: []` is valid for Traefik (503) and for the syncer, and fails only the
    // schema's minItems.
    let prefix = "schema-empty/";
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
        .arg("--once")
        .run()
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let instance: serde_json::Value =
        serde_yaml::from_slice(&std::fs::read(dir.path().join(OUTPUT_FILE)).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(schema_dir.join("traefik-v3-file-provider.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(!errors.is_empty(), "servers: [] should fail minItems");
    for error in &errors {
        assert!(error.starts_with("/http/services/web"), "{error}");
    }
    // With one server in each empty list, nothing else is wrong.
    let mut patched = instance.clone();
    for service in ["web", "web.a"] {
        let servers = &mut patched["http"]["services"][service]["loadBalancer"]["servers"];
        assert_eq!(*servers, serde_json::json!([]), "{service}");
        *servers = serde_json::json!([{ "url": "http://10.0.0.1:80" }]);
    }
    let errors: Vec<String> = validator
        .iter_errors(&patched)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn once_writes_and_exits_and_fails_when_the_listing_fails() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "once/";
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
        .arg("--once")
        .run()
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(
        std::fs::read(dir.path().join(OUTPUT_FILE)).unwrap(),
        expected_file(&[("a", &a)], TraefikVersion::V3)
    );

    s3.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
        .arg("--once")
        .run()
        .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("listing the storage prefix failed"),
        "{stderr}"
    );
    assert!(!dir.path().join(OUTPUT_FILE).exists());
    s3.set_down(false);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_document_and_writes_nothing() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "dry/";
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
        .arg("--once")
        .arg("--dry-run")
        .run()
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.as_bytes(),
        expected_file(&[("a", &a)], TraefikVersion::V3).as_slice()
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Long-running dry run: prints again when the document changes, still writes nothing.
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("DRY_RUN", "true")
        .spawn();
    let path = dir.path().to_path_buf();
    wait_for("first print", WAIT, || {
        let out = syncer.agent.stdout();
        async move { out.contains("# Clusters: a\n").then_some(()) }
    })
    .await
    .unwrap();
    put(
        &s3,
        prefix,
        "b.traefik.yaml",
        http_doc(&[("api", &["10.1.0.1"])]),
    )
    .await;
    wait_for("second print", WAIT, || {
        let out = syncer.agent.stdout();
        async move { out.contains("# Clusters: a, b\n").then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(
        syncer
            .agent
            .stdout()
            .matches("# Generated by ksd-syncer")
            .count(),
        2
    );
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_written_before_the_first_successful_listing() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "first/";
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join(OUTPUT_FILE);
    std::fs::write(&output, "# from a previous run\n").unwrap();

    s3.set_down(true);
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    syncer
        .wait_metric("ksd_syncer_polls_total{outcome=\"error\"}", 2.0)
        .await;
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "# from a previous run\n"
    );
    assert!(!syncer.ready().await, "not ready before a successful cycle");

    s3.set_down(false);
    syncer.wait_clusters("a").await;
    wait_for("ready", WAIT, || async {
        syncer.ready().await.then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_setting_is_one_line_and_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("POLL_INTERVAL", "10"),
        ("CONFIRM_POLLS", "0"),
        ("OUTPUT_FILE", "x.toml"),
        ("TRAEFIK_VERSION", "v1"),
        ("STALE_AFTER", "later"),
        ("MAX_OBJECT_BYTES", "lots"),
    ] {
        let (code, _, stderr) = SyncerConfig::new(&file_url(dir.path()), dir.path())
            .env(variable, value)
            .run()
            .await;
        assert_eq!(code, Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{variable}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: invalid {variable}: ")),
            "{variable}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_the_same_inputs_leaves_the_file_alone_and_sigterm_exits_cleanly() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "restart/";
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    let mut first = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    let bytes = first.wait_clusters("a").await;
    first.agent.terminate();
    let status = first.agent.wait_exit(WAIT).await.expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", first.agent.logs());
    let mtime_before = mtime(&first.output);

    let second = SyncerConfig::s3(&s3, prefix, dir.path()).spawn();
    wait_for("ready", WAIT, || async {
        second.ready().await.then_some(())
    })
    .await
    .unwrap();
    assert_eq!(second.read().unwrap(), bytes);
    assert_eq!(
        mtime(&second.output),
        mtime_before,
        "adopted, not rewritten"
    );
    assert_eq!(
        second
            .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_after_leaves_out_clusters_whose_object_is_not_refreshed() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "stale/";
    let dir = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("STALE_AFTER", "3s")
        .spawn();
    syncer.wait_clusters("a, b").await;

    // a's exporter keeps re-uploading the same content (a heartbeat); b's has stopped.
    let heartbeat = {
        let client = s3.client();
        let bucket = s3.bucket().to_owned();
        let a = a.clone();
        tokio::spawn(async move {
            loop {
                client
                    .put_object()
                    .bucket(&bucket)
                    .key(format!("{prefix}a.traefik.yaml"))
                    .body(aws_sdk_s3::primitives::ByteStream::from(
                        a.clone().into_bytes(),
                    ))
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    syncer.wait_clusters("a").await;
    assert_eq!(syncer.metric("ksd_syncer_clusters_stale").await, 1.0);
    assert!(syncer.log_count("older than STALE_AFTER") >= 1);

    // b's exporter is back.
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    let both = syncer.wait_clusters("a, b").await;
    heartbeat.abort();
    assert_eq!(
        both,
        expected_file(&[("a", &a), ("b", &b)], TraefikVersion::V3)
    );
}
