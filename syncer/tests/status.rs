//! What a syncer serves, as it tells it: `/status`, `/`, `/status/services/NAME`,
//! `ksd-syncer explain`, and the acknowledgement it writes with `SYNCER_NAME` (S3 via moto).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use ksd_runtime::storage::{Fetched, Storage};
use ksd_shared::names::ClusterName;
use ksd_shared::status::{Acknowledgement, Answer, ClusterState};
use ksd_testbed::process::wait_for;
use ksd_testbed::s3::S3Fixture;

fn storage(s3: &S3Fixture, prefix: &str) -> Storage {
    Storage::from_s3_client(s3.client(), s3.bucket(), prefix)
}

async fn etag_of(root: &Storage, key: &str) -> String {
    root.list()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| o.etag)
        .unwrap()
}

/// Waits until `syncer`'s acknowledgement answers `check`, returning it.
async fn wait_ack(
    status: &Storage,
    syncer: &str,
    what: &str,
    check: impl Fn(&Acknowledgement) -> bool,
) -> Acknowledgement {
    let key = format!("{syncer}.json");
    let result = wait_for(what, WAIT, || {
        let key = key.clone();
        let check = &check;
        async move {
            let Ok(Fetched::Object(object)) = status.get(&key, None).await else {
                return None;
            };
            let ack = Acknowledgement::parse_keyed(&key, &object.bytes).unwrap();
            check(&ack).then_some(ack)
        }
    })
    .await;
    result.unwrap()
}

fn explain(admin: std::net::SocketAddr, service: &str) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ksd-syncer"))
        .args(["explain", service, "--admin-addr", &admin.to_string()])
        .env_remove("ADMIN_ADDR")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Two clusters' documents in the bucket, and three syncers reading them: `edge-strict`
/// (objects of at most 300 bytes), `edge-open`, and one without `SYNCER_NAME`.
///
/// Fields are declared in the reverse order of their creation so that they drop as the
/// locals of one function would.
struct Scene {
    b: ClusterName,
    a: ClusterName,
    anonymous: Syncer,
    open: Syncer,
    strict: Syncer,
    _dirs: Vec<tempfile::TempDir>,
    etag_b: String,
    etag_a: String,
    status: Storage,
    root: Storage,
    prefix: &'static str,
    s3: S3Fixture,
}

/// Puts a small document for cluster a and a large one (over 300 bytes) for cluster b, then
/// starts the three syncers.
async fn setup() -> Scene {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "status/";
    let root = storage(&s3, prefix);
    let status = root.child("_status").await.unwrap();
    let small = http_doc(&[("web", &["10.0.0.1"])]);
    let large = http_doc(&[(
        "web",
        &[
            "10.1.0.1",
            "10.1.0.2",
            "10.1.0.3",
            "10.1.0.4",
            "10.1.0.5",
            "10.1.0.6",
            "10.1.0.7",
            "10.1.0.8",
            "10.1.0.9",
            "10.1.0.10",
            "10.1.0.11",
            "10.1.0.12",
        ],
    )]);
    assert!(small.len() < 300 && large.len() > 300);
    put(&s3, prefix, "a.traefik.yaml", small.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", large.clone()).await;
    let etag_a = etag_of(&root, "a.traefik.yaml").await;
    let etag_b = etag_of(&root, "b.traefik.yaml").await;

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let strict = SyncerConfig::s3(&s3, prefix, dirs[0].path())
        .env("SYNCER_NAME", "edge-strict")
        .env("MAX_OBJECT_BYTES", "300")
        .spawn();
    let open = SyncerConfig::s3(&s3, prefix, dirs[1].path())
        .env("SYNCER_NAME", "edge-open")
        .spawn();
    let anonymous = SyncerConfig::s3(&s3, prefix, dirs[2].path()).spawn();

    let a = ClusterName::parse("a").unwrap();
    let b = ClusterName::parse("b").unwrap();
    Scene {
        b,
        a,
        anonymous,
        open,
        strict,
        _dirs: dirs,
        etag_b,
        etag_a,
        status,
        root,
        prefix,
        s3,
    }
}

/// `edge-strict` acknowledges a as served and b as rejected (too large); `edge-open`
/// acknowledges both as served, with b's 12 servers and the hash of its output.
async fn named_syncers_acknowledge(scene: &Scene) {
    let (a, b) = (&scene.a, &scene.b);
    let (etag_a, etag_b) = (&scene.etag_a, &scene.etag_b);
    let ack = wait_ack(
        &scene.status,
        "edge-strict",
        "edge-strict acknowledges",
        |ack| {
            ack.clusters.len() == 2
                && ack.answer(a, etag_a).is_served()
                && matches!(ack.answer(b, etag_b), Answer::Rejected { .. })
        },
    )
    .await;
    assert!(ack.answer(a, etag_a).is_served(), "{ack:?}");
    match ack.answer(b, etag_b) {
        Answer::Rejected { reason, .. } => assert_eq!(reason, "too_large"),
        other => panic!("b on edge-strict: {other:?}"),
    }
    let ack = wait_ack(
        &scene.status,
        "edge-open",
        "edge-open acknowledges",
        |ack| {
            ack.clusters.len() == 2
                && ack.output_hash.is_some()
                && ack.answer(a, etag_a).is_served()
                && ack.answer(b, etag_b).is_served()
        },
    )
    .await;
    assert!(ack.answer(a, etag_a).is_served(), "{ack:?}");
    assert!(ack.answer(b, etag_b).is_served(), "{ack:?}");
    assert_eq!(ack.clusters[b].servers, 12);
    assert!(ack.output_hash.is_some());
}

/// The syncer without `SYNCER_NAME` serves too, and wrote nothing to the bucket: only the
/// two named acknowledgements and the two documents are there.
async fn the_anonymous_syncer_serves_and_writes_nothing(scene: &Scene) {
    scene.anonymous.wait_clusters("a, b").await;
    let keys: Vec<String> = scene
        .status
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["edge-open.json", "edge-strict.json"]);
    let root_keys: Vec<String> = scene
        .root
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(root_keys, ["a.traefik.yaml", "b.traefik.yaml"]);
}

/// `/status` on `edge-strict`: the same facts as JSON, down to each cluster's state, reason,
/// servers and the hash of the file it wrote. Returns that hash.
async fn status_json_states_the_facts(scene: &Scene) -> String {
    let strict = &scene.strict;
    let (code, body) = http_get(strict.admin, "/status").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["syncer"], "edge-strict");
    assert_eq!(json["synced"], true);
    let clusters = json["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(clusters[0]["name"], "a");
    assert_eq!(clusters[0]["state"], "served");
    assert_eq!(clusters[0]["key"], "a.traefik.yaml");
    assert_eq!(clusters[0]["etag"], scene.etag_a.as_str());
    assert_eq!(clusters[0]["services"][0]["name"], "web");
    assert_eq!(
        clusters[0]["services"][0]["servers"][0],
        "http://10.0.0.1:80"
    );
    assert!(clusters[0]["lastModified"].as_u64().is_some());
    assert_eq!(clusters[1]["name"], "b");
    assert_eq!(clusters[1]["state"], "rejected");
    assert_eq!(clusters[1]["reason"], "too_large");
    assert_eq!(clusters[1]["servers"], 0);
    let hash = json["output"]["hash"].as_str().unwrap();
    assert_eq!(
        hash,
        ksd_shared::content_hash(&std::fs::read(&strict.output).unwrap())
    );
    hash.to_owned()
}

/// `/` on `edge-strict`: the same facts in HTML (including the output's `hash`), without
/// scripts.
async fn the_root_page_states_the_facts_in_html(scene: &Scene, hash: &str) {
    let (code, html) = http_get(scene.strict.admin, "/").await.unwrap();
    assert_eq!(code, 200);
    for fact in [
        "edge-strict",
        "too_large",
        "rejected",
        "served",
        "http://10.0.0.1:80",
        hash,
        "a.traefik.yaml",
        "b.traefik.yaml",
    ] {
        assert!(html.contains(fact), "{fact} missing from\n{html}");
    }
    assert!(!html.contains("<script"), "{html}");
}

/// `/status/services/NAME` on `edge-open`: which clusters contributed to one service, with
/// b's etag; 404 for a service nobody serves.
async fn one_service_is_explained_over_http(scene: &Scene) {
    let open = &scene.open;
    let (code, body) = http_get(open.admin, "/status/services/web").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let explained: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(explained["served"], true);
    let contributors: Vec<&str> = explained["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(contributors, ["a", "b"]);
    assert_eq!(explained["contributions"][1]["etag"], scene.etag_b.as_str());
    let (code, _) = http_get(open.admin, "/status/services/nothing-here")
        .await
        .unwrap();
    assert_eq!(code, 404);
}

/// `ksd-syncer explain`: exit 0 and the contributing servers for a served service, exit 1
/// and "not served" for one nobody serves.
fn the_explain_command_says_the_same(scene: &Scene) {
    let (code, stdout, stderr) = explain(scene.open.admin, "web");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("service web: served"), "{stdout}");
    assert!(stdout.contains("cluster a (http"), "{stdout}");
    assert!(stdout.contains("http://10.1.0.6:80"), "{stdout}");
    let (code, stdout, _) = explain(scene.strict.admin, "nothing-here");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("not served"), "{stdout}");
}

/// The large document shrinks: `edge-strict` now serves it, and says so in its
/// acknowledgement.
async fn a_shrunken_document_is_served_by_the_strict_syncer(scene: &Scene) {
    let b = &scene.b;
    put(
        &scene.s3,
        scene.prefix,
        "b.traefik.yaml",
        http_doc(&[("web", &["10.2.0.9"])]),
    )
    .await;
    let etag_b2 = etag_of(&scene.root, "b.traefik.yaml").await;
    assert_ne!(scene.etag_b, etag_b2);
    let ack = wait_ack(
        &scene.status,
        "edge-strict",
        "edge-strict serves b",
        |ack| ack.answer(b, &etag_b2).is_served(),
    )
    .await;
    assert_eq!(ack.clusters[b].state, ClusterState::Served);
    assert_eq!(ack.clusters[b].servers, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_named_syncers_acknowledge_what_they_serve_and_say_why_not() {
    let scene = setup().await;
    named_syncers_acknowledge(&scene).await;
    the_anonymous_syncer_serves_and_writes_nothing(&scene).await;
    let hash = status_json_states_the_facts(&scene).await;
    the_root_page_states_the_facts_in_html(&scene, &hash).await;
    one_service_is_explained_over_http(&scene).await;
    the_explain_command_says_the_same(&scene);
    a_shrunken_document_is_served_by_the_strict_syncer(&scene).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syncer_name_that_is_no_dns_label_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = SyncerConfig::new(&file_url(dir.path()), dir.path())
        .env("SYNCER_NAME", "Edge_1")
        .run()
        .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SYNCER_NAME"), "{stderr}");
    assert!(stderr.contains("DNS label"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_reports_an_unreachable_syncer() {
    let port = ksd_testbed::process::free_port();
    let (code, _, stderr) = explain(format!("127.0.0.1:{port}").parse().unwrap(), "web");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_lists_what_the_guard_left_out_and_why() {
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    std::fs::write(
        traefik.path().join("main.yml"),
        "http:\n  services:\n    admin:\n      loadBalancer:\n        servers:\n          - url: \"http://192.0.2.1:80\"\n",
    )
    .unwrap();
    std::fs::write(
        store.path().join("a.traefik.yaml"),
        http_doc(&[
            ("web", &["10.0.0.1", "127.0.0.1"]),
            ("admin", &["10.0.0.2"]),
        ]),
    )
    .unwrap();
    let syncer = SyncerConfig::new(&file_url(store.path()), traefik.path()).spawn();
    syncer.wait_clusters("a").await;

    let left_out = wait_for("the status lists both exclusions", WAIT, || async {
        let (code, body) = http_get(syncer.admin, "/status").await?;
        assert_eq!(code, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let left_out = json["clusters"][0]["leftOut"].as_array()?.clone();
        (left_out.len() == 2).then_some(left_out)
    })
    .await
    .unwrap();
    let facts: Vec<(&str, &str)> = left_out
        .iter()
        .map(|l| {
            (
                l["service"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        [("admin", "administrator_owned"), ("web", "address_policy")]
    );
    let detail = left_out[1]["detail"].as_str().unwrap();
    assert!(detail.contains("http://127.0.0.1:80"), "{detail}");

    // The refused server is not listed as served.
    let (_, body) = http_get(syncer.admin, "/status").await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let services = json["clusters"][0]["services"].as_array().unwrap();
    let web = services.iter().find(|s| s["name"] == "web").unwrap();
    assert_eq!(web["servers"], serde_json::json!(["http://10.0.0.1:80"]));

    let (_, stdout, stderr) = explain(syncer.admin, "admin");
    assert!(stdout.contains("administrator_owned"), "{stdout}{stderr}");
}
