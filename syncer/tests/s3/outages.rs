//! Storage outages and absences: an S3 outage, deleted objects and an empty listing
//! confirmed after `CONFIRM_POLLS`, nothing written before the first listing, and
//! `STALE_AFTER`.

use std::time::Duration;

use ksd_shared::traefik::TraefikVersion;
use ksd_testbed::process::wait_for;
use ksd_testbed::s3::S3Fixture;
use serde_yaml::Value;

use crate::common::*;

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
    assert!(syncer.log_count("for longer than STALE_AFTER") >= 1);

    // b's exporter is back.
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    let both = syncer.wait_clusters("a, b").await;
    heartbeat.abort();
    assert_eq!(
        both,
        expected_file(&[("a", &a), ("b", &b)], TraefikVersion::V3)
    );
}
