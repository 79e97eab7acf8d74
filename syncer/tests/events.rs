//! `ksd-syncer` with bucket event notifications (`S3_EVENT_QUEUE_URL`) against moto: S3
//! notifies an SQS queue of each upload, the syncer fetches the object at once; duplicates,
//! reordering, garbage and deletions are handled as the rules say; a queue that goes away
//! leaves the periodic listing working.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use ksd_testbed::process::wait_for;
use ksd_testbed::s3::{S3Fixture, s3_event};

/// Long enough that no periodic listing happens while a test looks.
const NO_POLL: &str = "60s";
/// A queue task in a 20 s long poll notices a deleted queue on its next call.
const QUEUE_WAIT: Duration = Duration::from_secs(90);

async fn etag(s3: &S3Fixture, key: &str) -> String {
    s3.client()
        .head_object()
        .bucket(s3.bucket())
        .key(key)
        .send()
        .await
        .unwrap()
        .e_tag
        .unwrap()
}

async fn wait_drained(queue: &ksd_testbed::s3::EventQueue) {
    wait_for("the queue to be empty", QUEUE_WAIT, || async {
        (queue.pending().await.ok() == Some(0)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_reaches_the_file_through_an_event_without_a_listing() {
    let s3 = S3Fixture::start().await.unwrap();
    // `+` and `=` come URL-encoded in S3's events.
    let prefix = "k8s+sd=1/";
    let queue = s3.event_queue(prefix).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", NO_POLL)
        .env("S3_EVENT_QUEUE_URL", queue.url())
        .spawn();
    syncer.wait_clusters("a").await;
    // The first listing is done; the next one is a minute away.
    syncer.wait_metric("ksd_syncer_event_queue_up", 1.0).await;
    let lists_before = s3.list_count();

    put(
        &s3,
        prefix,
        "b.traefik.yaml",
        http_doc(&[("api", &["10.1.0.1"])]),
    )
    .await;
    // Well before any listing could have happened (POLL_INTERVAL is 60 s).
    let arrived = wait_for("b through its event", Duration::from_secs(10), || async {
        syncer
            .read()
            .filter(|b| String::from_utf8_lossy(b).contains("# Clusters: a, b\n"))
    })
    .await;
    assert!(arrived.is_ok(), "{}", syncer.agent.logs());
    assert_eq!(s3.list_count(), lists_before, "no listing was needed");
    check_merged(&syncer.read().unwrap()).unwrap();

    assert!(
        syncer
            .metric("ksd_syncer_event_records_total{outcome=\"handled\"}")
            .await
            >= 1.0
    );
    // moto's s3:TestEvent, when the notification was configured.
    assert!(
        syncer
            .metric("ksd_syncer_event_records_total{outcome=\"ignored\"}")
            .await
            >= 1.0
    );
    assert!(
        syncer
            .metric("ksd_syncer_event_messages_received_total")
            .await
            >= 2.0
    );
    assert!(
        syncer
            .metric("ksd_syncer_event_last_received_timestamp_seconds")
            .await
            > 1.6e9
    );
    // Handled messages are deleted.
    wait_drained(&queue).await;
    let (status, body) = http_get(syncer.admin, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("events: receiving, last message"), "{body}");
}

/// Where cluster a settled after two versions: both versions' etags, the file as written
/// for v2, the number of writes so far and the file's modification time.
struct Settled {
    etag1: String,
    etag2: String,
    file: Vec<u8>,
    writes: f64,
    mtime: std::time::SystemTime,
}

/// Uploads v1 then v2 of cluster a, waits for each in the file and for the queue to drain,
/// and notes where things stand.
async fn a_settles_on_v2(
    s3: &S3Fixture,
    prefix: &str,
    queue: &ksd_testbed::s3::EventQueue,
    syncer: &Syncer,
) -> Settled {
    let v1 = http_doc(&[("web", &["10.0.0.1"])]);
    let v2 = http_doc(&[("web", &["10.0.0.2"])]);
    put(s3, prefix, "a.traefik.yaml", v1.clone()).await;
    let etag1 = etag(s3, "dup/a.traefik.yaml").await;
    syncer
        .wait_file("a v1", |t| t.contains("10.0.0.1:80"))
        .await;
    put(s3, prefix, "a.traefik.yaml", v2.clone()).await;
    let etag2 = etag(s3, "dup/a.traefik.yaml").await;
    let file = syncer
        .wait_file("a v2", |t| t.contains("10.0.0.2:80"))
        .await;
    wait_drained(queue).await;
    let writes = syncer
        .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
        .await;
    let mtime = mtime(&syncer.output);
    Settled {
        etag1,
        etag2,
        file,
        writes,
        mtime,
    }
}

/// Redelivered and out of order: v2's event again, then v1's (older sequencer), then
/// things that are not ours, then garbage. Waits until the queue is drained and both garbage
/// messages are counted as invalid.
async fn send_stale_foreign_and_garbage_events(
    s3: &S3Fixture,
    queue: &ksd_testbed::s3::EventQueue,
    syncer: &Syncer,
    settled: &Settled,
) {
    let bucket = s3.bucket().to_owned();
    let key = "dup/a.traefik.yaml";
    let e2 = settled.etag2.trim_matches('"');
    let e1 = settled.etag1.trim_matches('"');
    for body in [
        s3_event(&bucket, "ObjectCreated:Put", key, e2, "00000000000000F2"),
        s3_event(&bucket, "ObjectCreated:Put", key, e2, "00000000000000F2"),
        s3_event(&bucket, "ObjectCreated:Put", key, e1, "00000000000000F1"),
        s3_event(&bucket, "ObjectRemoved:Delete", key, "", "00000000000000F0"),
        s3_event(
            &bucket,
            "ObjectCreated:Put",
            "elsewhere/a.traefik.yaml",
            "x",
            "1",
        ),
        s3_event(
            &bucket,
            "ObjectCreated:Put",
            "dup/a.backends.yaml",
            "x",
            "1",
        ),
        s3_event(
            &bucket,
            "ObjectCreated:Put",
            "dup_status/a.traefik.yaml",
            "x",
            "1",
        ),
        "this is not an event".to_owned(),
        r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#.to_owned(),
    ] {
        queue.send(&body).await.unwrap();
    }
    wait_drained(queue).await;
    syncer
        .wait_metric("ksd_syncer_event_invalid_messages_total", 2.0)
        .await;
}

/// The file is as it was and was not rewritten; the stale events count as unchanged, the
/// foreign ones as ignored, and the garbage is logged and deleted.
async fn nothing_changed(syncer: &Syncer, settled: &Settled) {
    assert_eq!(
        syncer.read().unwrap(),
        settled.file,
        "the file did not change"
    );
    assert_eq!(mtime(&syncer.output), settled.mtime, "nor was it rewritten");
    assert_eq!(
        syncer
            .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
            .await,
        settled.writes
    );
    assert!(
        syncer
            .metric("ksd_syncer_event_records_total{outcome=\"unchanged\"}")
            .await
            >= 3.0,
        "{}",
        syncer.metrics().await
    );
    assert!(
        syncer
            .metric("ksd_syncer_event_records_total{outcome=\"ignored\"}")
            .await
            >= 3.0
    );
    assert!(syncer.log_count("cannot read a queue message; deleting it") >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_reordering_and_garbage_change_nothing() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "dup/";
    let queue = s3.event_queue(prefix).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "other.traefik.yaml",
        http_doc(&[("x", &["10.9.0.1"])]),
    )
    .await;

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", NO_POLL)
        .env("S3_EVENT_QUEUE_URL", queue.url())
        .spawn();
    syncer.wait_clusters("other").await;
    let settled = a_settles_on_v2(&s3, prefix, &queue, &syncer).await;
    send_stale_foreign_and_garbage_events(&s3, &queue, &syncer, &settled).await;
    nothing_changed(&syncer, &settled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_event_drops_the_cluster_only_after_confirming_listings() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "del/";
    let queue = s3.event_queue(prefix).await.unwrap();
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

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", "3s")
        .env("CONFIRM_POLLS", "3")
        .env("S3_EVENT_QUEUE_URL", queue.url())
        .spawn();
    syncer.wait_clusters("a, b").await;
    wait_drained(&queue).await;

    s3.reset_counts();
    delete(&s3, prefix, "b.traefik.yaml").await;
    // moto does not notify deletions: send what S3 would.
    let event = s3_event(
        s3.bucket(),
        "ObjectRemoved:Delete",
        "del/b.traefik.yaml",
        "",
        "00000000000000FF",
    );
    queue.send(&event).await.unwrap();
    queue.send(&event).await.unwrap();

    syncer
        .wait_file("b dropped", |t| t.contains("# Clusters: a\n"))
        .await;
    assert!(
        s3.list_count() >= 3,
        "dropped after {} listings; CONFIRM_POLLS is 3\n{}",
        s3.list_count(),
        syncer.agent.logs()
    );
    assert!(syncer.log_count("kept until confirmed") >= 2);
    assert!(
        syncer
            .metric("ksd_syncer_event_records_total{outcome=\"handled\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_queue_leaves_polling_working() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "gone/";
    let queue = s3.event_queue(prefix).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", "1s")
        .env("S3_EVENT_QUEUE_URL", queue.url())
        .spawn();
    syncer.wait_clusters("a").await;
    syncer.wait_metric("ksd_syncer_event_queue_up", 1.0).await;

    queue.delete().await.unwrap();
    let admin = syncer.admin;
    wait_for("a receive error", QUEUE_WAIT, || async move {
        let text = http_get(admin, "/metrics").await.unwrap_or_default().1;
        (metric_value(
            &text,
            "ksd_syncer_event_queue_errors_total{operation=\"receive\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(syncer.metric("ksd_syncer_event_queue_up").await, 0.0);
    assert!(syncer.log_count("cannot receive bucket events") >= 1);
    let (status, body) = http_get(syncer.admin, "/readyz").await.unwrap();
    assert_eq!(status, 200, "polling still works: {body}");
    assert!(body.contains("events: failing"), "{body}");

    put(
        &s3,
        prefix,
        "b.traefik.yaml",
        http_doc(&[("api", &["10.1.0.1"])]),
    )
    .await;
    syncer.wait_clusters("a, b").await;
    assert!(syncer.ready().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_queue_leaves_polling_working_and_recovers() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "denied/";
    let queue = s3.event_queue(prefix).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    put(
        &s3,
        prefix,
        "a.traefik.yaml",
        http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;

    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("POLL_INTERVAL", "1s")
        .env("S3_EVENT_QUEUE_URL", queue.url())
        .spawn();
    syncer.wait_clusters("a").await;
    syncer.wait_metric("ksd_syncer_event_queue_up", 1.0).await;

    s3.set_sqs_denied(true);
    let admin = syncer.admin;
    wait_for("a refused receive", QUEUE_WAIT, || async move {
        let text = http_get(admin, "/metrics").await.unwrap_or_default().1;
        (metric_value(
            &text,
            "ksd_syncer_event_queue_errors_total{operation=\"receive\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(syncer.metric("ksd_syncer_event_queue_up").await, 0.0);
    assert!(
        syncer.log_count("AccessDenied") >= 1,
        "{}",
        syncer.agent.logs()
    );

    put(
        &s3,
        prefix,
        "b.traefik.yaml",
        http_doc(&[("api", &["10.1.0.1"])]),
    )
    .await;
    syncer.wait_clusters("a, b").await;

    s3.set_sqs_denied(false);
    wait_for("the queue back", QUEUE_WAIT, || async move {
        let text = http_get(admin, "/metrics").await.unwrap_or_default().1;
        (metric_value(&text, "ksd_syncer_event_queue_up") == 1.0).then_some(())
    })
    .await
    .unwrap();
    assert!(syncer.log_count("receiving bucket events again") >= 1);
}
