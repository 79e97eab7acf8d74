//! Idle behaviour: polls that change nothing list once and never fetch or write, and a
//! restart with the same inputs leaves the file alone.

use std::time::Duration;

use ksd_testbed::process::wait_for;
use ksd_testbed::s3::{RequestKind, S3Fixture};

use crate::common::*;

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
