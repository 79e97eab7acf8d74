//! The exporter reading the syncers' acknowledgements (`<prefix>_status/<name>.json`) from S3
//! (moto): its metrics say which syncer serves the current document, and follow both a new
//! document and new acknowledgements.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Exporter, Harness, expect, exported, metric, syncer, wait_metrics};
use k8s_openapi::api::core::v1::Service;
use ksd_runtime::storage::{PutCondition, Storage};
use ksd_shared::names::ClusterName;
use ksd_shared::status::{Acknowledgement, ClusterAck, ClusterState, SyncerName};
use ksd_testbed::process::{Agent, wait_for};
use ksd_testbed::slices::{Pod, ready_pods};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn ack(syncer: &str, cluster: &str, written_at: u64, entry: ClusterAck) -> Vec<u8> {
    let mut ack = Acknowledgement::new(SyncerName::parse(syncer).unwrap(), written_at);
    ack.clusters
        .insert(ClusterName::parse(cluster).unwrap(), entry);
    ack.to_bytes()
}

fn served(etag: &str) -> ClusterAck {
    ClusterAck {
        etag: Some(etag.to_owned()),
        served_etag: Some(etag.to_owned()),
        state: ClusterState::Served,
        servers: 1,
        services: 1,
        ..ClusterAck::default()
    }
}

async fn put(status: &Storage, name: &str, bytes: Vec<u8>) {
    status
        .put(name, bytes, &BTreeMap::new(), PutCondition::None)
        .await
        .unwrap();
}

async fn etag(h: &Harness, root: &Storage) -> String {
    let key = format!("{}.traefik.yaml", h.cluster);
    root.list()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key == key)
        .map(|o| o.etag)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_metrics_follow_acknowledgements_and_new_documents() {
    let h = Harness::start("acks").await;
    let root = Storage::from_s3_client(h.s3.client(), h.s3.bucket(), &h.prefix);
    let status = root.child("_status").await.unwrap();
    let (web, mut exporter, first) = publish_one_pod(&h, &root).await;
    one_acknowledgement_of_each_kind(&status, &exporter, &first).await;
    let second =
        a_new_document_outdates_an_acknowledgement(&h, &root, &web, &mut exporter, &first).await;
    a_syncer_catches_up_and_a_removed_one_goes(&status, &exporter, &second).await;
}

/// Setup: one exported Service with one pod, an exporter reading acknowledgements every
/// second; returns the Service, the exporter and the published document's etag.
async fn publish_one_pod(h: &Harness, root: &Storage) -> (Service, Exporter, String) {
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.0.0.1")])
        .unwrap();

    let mut exporter = h.spawn(&[], &[("ACK_INTERVAL", "1s")]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[("default-web-http", &["http://10.0.0.1:8080"])]),
    )
    .await;
    let first = etag(h, root).await;
    (web, exporter, first)
}

/// A syncer serving the current version counts as serving, with its acknowledgement's age;
/// one that rejected it or serves an older one does not; a file of an unknown schema version
/// is refused and counted as invalid.
async fn one_acknowledgement_of_each_kind(status: &Storage, exporter: &Exporter, first: &str) {
    // edge-a serves the current version; edge-b rejected it; edge-c has not seen it yet; a
    // fourth file is of an unknown schema version and is refused.
    put(
        status,
        "edge-a.json",
        ack("edge-a", "test-cluster", now() - 100, served(first)),
    )
    .await;
    put(
        status,
        "edge-b.json",
        ack(
            "edge-b",
            "test-cluster",
            now(),
            ClusterAck {
                etag: Some(first.to_owned()),
                state: ClusterState::Rejected,
                reason: Some("too_large".into()),
                ..ClusterAck::default()
            },
        ),
    )
    .await;
    put(
        status,
        "edge-c.json",
        ack("edge-c", "test-cluster", now(), served("\"an-older-etag\"")),
    )
    .await;
    put(
        status,
        "edge-d.json",
        br#"{"apiVersion":"ksd.status/v1","schemaVersion":7,"syncer":"edge-d","writtenAt":1}"#
            .to_vec(),
    )
    .await;
    wait_metrics(
        exporter,
        "edge-a served, edge-b and edge-c not, edge-d refused",
        &[
            ("ksd_exporter_syncer_serving{syncer=\"edge-a\"}", Some(1.0)),
            ("ksd_exporter_syncer_serving{syncer=\"edge-b\"}", Some(0.0)),
            ("ksd_exporter_syncer_serving{syncer=\"edge-c\"}", Some(0.0)),
            ("ksd_exporter_syncer_serving{syncer=\"edge-d\"}", None),
            ("ksd_exporter_ack_errors_total{kind=\"invalid\"}", Some(1.0)),
        ],
    )
    .await;
    let age = metric(
        exporter.admin,
        "ksd_exporter_syncer_ack_age_seconds{syncer=\"edge-a\"}",
    )
    .await
    .unwrap();
    assert!(age >= 100.0, "edge-a wrote 100s ago, age {age}");
}

/// A new document: the acknowledgement of the previous version no longer counts as serving;
/// returns the new document's etag.
async fn a_new_document_outdates_an_acknowledgement(
    h: &Harness,
    root: &Storage,
    web: &Service,
    exporter: &mut Exporter,
    first: &str,
) -> String {
    // A new document: edge-a's acknowledgement is about the previous version now.
    h.api
        .set_endpoints(
            web,
            &[
                Pod::ready("web-0", "10.0.0.1"),
                Pod::ready("web-1", "10.0.0.2"),
            ],
        )
        .unwrap();
    h.wait_for_servers(
        exporter,
        &expect(&[(
            "default-web-http",
            &["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        )]),
    )
    .await;
    let second = etag(h, root).await;
    assert_ne!(first, second);
    wait_metrics(
        exporter,
        "edge-a no longer serving the current version",
        &[("ksd_exporter_syncer_serving{syncer=\"edge-a\"}", Some(0.0))],
    )
    .await;
    second
}

/// A syncer that catches up serves again; a removed acknowledgement takes its series with it;
/// the exporter itself never writes an acknowledgement.
async fn a_syncer_catches_up_and_a_removed_one_goes(
    status: &Storage,
    exporter: &Exporter,
    second: &str,
) {
    // edge-a catches up; edge-b's acknowledgement is removed and its series goes with it.
    put(
        status,
        "edge-a.json",
        ack("edge-a", "test-cluster", now(), served(second)),
    )
    .await;
    status.delete("edge-b.json").await.unwrap();
    wait_metrics(
        exporter,
        "edge-a serving again, edge-b gone",
        &[
            ("ksd_exporter_syncer_serving{syncer=\"edge-a\"}", Some(1.0)),
            ("ksd_exporter_syncer_serving{syncer=\"edge-b\"}", None),
            (
                "ksd_exporter_syncer_ack_age_seconds{syncer=\"edge-b\"}",
                None,
            ),
        ],
    )
    .await;
    // The exporter only reads acknowledgements: it never wrote any.
    let names: Vec<String> = status
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(names, ["edge-a.json", "edge-c.json", "edge-d.json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ack_interval_is_refused_at_start() {
    let h = Harness::start("acks-setting").await;
    let mut exporter = h.spawn(&[], &[("ACK_INTERVAL", "500ms")]);
    let status = exporter.agent.wait_exit(Duration::from_secs(20)).await;
    let logs = exporter.agent.logs();
    assert!(status.is_some_and(|s| !s.success()), "{logs}");
    assert!(logs.contains("ACK_INTERVAL"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_syncers_one_rejecting_the_document() {
    let h = Harness::start("acks-e2e").await;
    let (web, exporter) = publish_three_pods(&h).await;
    let size = h.object().await.unwrap().len();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (_open, _strict) = start_an_open_and_a_strict_syncer(&h, &exporter, size, &dirs).await;
    let pods = over_the_limit_the_strict_syncer_rejects(&h, &web, &exporter, size).await;
    back_under_the_limit_both_serve(&h, &web, &exporter, &pods).await;
}

/// Setup: one exported Service with three ready pods, published by an exporter reading
/// acknowledgements every second.
async fn publish_three_pods(h: &Harness) -> (Service, Exporter) {
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    let pods = ready_pods("web", 3, std::net::Ipv4Addr::new(10, 0, 0, 1));
    h.api.set_endpoints(&web, &pods).unwrap();
    let mut exporter = h.spawn(&[], &[("ACK_INTERVAL", "1s")]);
    h.wait_for_servers(
        &mut exporter,
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
    (web, exporter)
}

/// Two real syncers, one limited to a little more than the current document (`size` bytes):
/// both serve it.
async fn start_an_open_and_a_strict_syncer(
    h: &Harness,
    exporter: &Exporter,
    size: usize,
    dirs: &[tempfile::TempDir; 2],
) -> (Agent, Agent) {
    // Room for this document and a little more, not for the one with many more servers below.
    let limit = (size + 200).to_string();
    let open = syncer(h, "edge-open", dirs[0].path(), &[]);
    let strict = syncer(
        h,
        "edge-strict",
        dirs[1].path(),
        &[("MAX_OBJECT_BYTES", &limit)],
    );
    wait_metrics(
        exporter,
        "both syncers serve the document",
        &[
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-open\"}",
                Some(1.0),
            ),
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-strict\"}",
                Some(1.0),
            ),
        ],
    )
    .await;
    (open, strict)
}

/// Many more servers: over the strict syncer's limit, which rejects the document while the
/// other serves it, and the exporter's log names the syncer and the reason; returns the pods.
async fn over_the_limit_the_strict_syncer_rejects(
    h: &Harness,
    web: &Service,
    exporter: &Exporter,
    size: usize,
) -> Vec<Pod> {
    // Many more servers: over edge-strict's limit, which rejects it; edge-open serves it.
    let pods = ready_pods("big", 40, std::net::Ipv4Addr::new(10, 0, 1, 1));
    h.api.set_endpoints(web, &pods).unwrap();
    wait_for("the larger document", Duration::from_secs(30), || async {
        let bytes = h.object().await?;
        (bytes.len() > size + 200).then_some(())
    })
    .await
    .unwrap();
    wait_metrics(
        exporter,
        "edge-open serves, edge-strict rejects",
        &[
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-open\"}",
                Some(1.0),
            ),
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-strict\"}",
                Some(0.0),
            ),
        ],
    )
    .await;
    // Serving drops to 0 as soon as the new version is published and not yet processed; the
    // rejection itself reaches the exporter with the next acknowledgement (ACK_INTERVAL).
    let named = wait_for(
        "the exporter's log names the syncer and the reason",
        Duration::from_secs(30),
        || async {
            let logs = exporter.agent.logs();
            logs.lines()
                .any(|l| l.contains("edge-strict") && l.contains("too_large"))
                .then_some(())
        },
    )
    .await;
    assert!(named.is_ok(), "{}", exporter.agent.logs());
    pods
}

/// Back under the limit: both syncers serve again.
async fn back_under_the_limit_both_serve(
    h: &Harness,
    web: &Service,
    exporter: &Exporter,
    pods: &[Pod],
) {
    // Back under the limit: both serve again.
    h.api.set_endpoints(web, &pods[..2]).unwrap();
    wait_metrics(
        exporter,
        "both serve the smaller document",
        &[
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-open\"}",
                Some(1.0),
            ),
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-strict\"}",
                Some(1.0),
            ),
        ],
    )
    .await;
}
