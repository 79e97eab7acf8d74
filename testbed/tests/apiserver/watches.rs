//! Watches: replay from a resourceVersion, initial events, streaming lists, bookmarks, expiry.

use super::*;

#[tokio::test]
async fn watch_from_a_resource_version_replays_exactly_the_later_events() {
    let server = TestApiServer::start().await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    server.apply(svc_json("shop", "b", json!({}))).unwrap();
    server.apply(svc_json("other", "x", json!({}))).unwrap();
    let from = server.resource_version();
    server
        .apply(svc_json("shop", "a", json!({"v": "2"})))
        .unwrap();
    server.delete("svc", "shop", "b").unwrap();
    server.apply(svc_json("shop", "c", json!({}))).unwrap();
    server.apply(svc_json("other", "y", json!({}))).unwrap();
    let (status, mut events) = server
        .client()
        .watch(&format!(
            "/api/v1/namespaces/shop/services?watch=true&resourceVersion={from}"
        ))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut replayed = Vec::new();
    let mut last_rv = from;
    for _ in 0..3 {
        let event = next_event(&mut events).await;
        let rv: u64 = event["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > last_rv, "resourceVersions increase");
        last_rv = rv;
        assert_eq!(event["object"]["kind"], "Service");
        replayed.push(summary(&event));
    }
    assert_eq!(
        replayed,
        [
            ("MODIFIED".to_owned(), "a".to_owned()),
            ("DELETED".to_owned(), "b".to_owned()),
            ("ADDED".to_owned(), "c".to_owned()),
        ]
    );
    // Then live events, and nothing from the other namespace.
    server.apply(svc_json("other", "z", json!({}))).unwrap();
    server.apply(svc_json("shop", "d", json!({}))).unwrap();
    assert_eq!(
        summary(&next_event(&mut events).await),
        ("ADDED".to_owned(), "d".to_owned())
    );
    assert!(server.watch_count() >= 1);
}

#[tokio::test]
async fn watch_without_a_version_starts_with_the_current_state() {
    let server = TestApiServer::start().await.unwrap();
    server
        .apply(svc_json("shop", "a", json!({"export": "yes"})))
        .unwrap();
    server
        .apply(svc_json("shop", "b", json!({"export": "no"})))
        .unwrap();
    for rv in ["", "&resourceVersion=0"] {
        let (_, mut events) = server
            .client()
            .watch(&format!(
                "/api/v1/services?watch=1&labelSelector=export%3Dyes{rv}"
            ))
            .await
            .unwrap();
        assert_eq!(
            summary(&next_event(&mut events).await),
            ("ADDED".to_owned(), "a".to_owned())
        );
    }
    // Selector filtering: an object leaving the selection is DELETED, entering it ADDED.
    let (_, mut events) = server
        .client()
        .watch(&format!(
            "/api/v1/services?watch=true&labelSelector=export%3Dyes&resourceVersion={}",
            server.resource_version()
        ))
        .await
        .unwrap();
    server
        .apply(svc_json("shop", "a", json!({"export": "no"})))
        .unwrap();
    server
        .apply(svc_json("shop", "b", json!({"export": "yes"})))
        .unwrap();
    server
        .apply(svc_json("shop", "b", json!({"export": "yes", "v": "2"})))
        .unwrap();
    let got: Vec<(String, String)> = [
        next_event(&mut events).await,
        next_event(&mut events).await,
        next_event(&mut events).await,
    ]
    .iter()
    .map(summary)
    .collect();
    assert_eq!(
        got,
        [
            ("DELETED".to_owned(), "a".to_owned()),
            ("ADDED".to_owned(), "b".to_owned()),
            ("MODIFIED".to_owned(), "b".to_owned()),
        ]
    );
}

#[tokio::test]
async fn streaming_lists_end_the_initial_events_with_a_bookmark() {
    let server = TestApiServer::start().await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    server.apply(svc_json("shop", "b", json!({}))).unwrap();
    let (_, mut events) = server
        .client()
        .watch("/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        .await
        .unwrap();
    assert_eq!(summary(&next_event(&mut events).await).0, "ADDED");
    assert_eq!(summary(&next_event(&mut events).await).0, "ADDED");
    let end = next_event(&mut events).await;
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        end["object"]["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    // Without allowWatchBookmarks the request is invalid, as on the real server.
    let (status, _) = server
        .client()
        .watch(
            "/api/v1/services?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
}

#[tokio::test]
async fn bookmarks_arrive_and_timeout_seconds_closes_the_stream() {
    let options = ApiServerOptions::default().bookmark_interval(Duration::from_millis(100));
    let server = TestApiServer::start_with(options).await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    let rv = server.resource_version();
    let (_, mut events) = server
        .client()
        .watch(&format!(
            "/api/v1/services?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=2"
        ))
        .await
        .unwrap();
    let bookmark = next_event(&mut events).await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Service");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        rv.to_string()
    );
    assert_eq!(
        bookmark["object"].as_object().unwrap().len(),
        3,
        "a bookmark carries only kind, apiVersion and metadata: {bookmark}"
    );
    assert_eq!(bookmark["object"]["metadata"].as_object().unwrap().len(), 1);
    // A write to another resource moves the bookmarks' resourceVersion on.
    server
        .apply(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"namespace": "shop", "name": "leader"}, "spec": {}}),
        )
        .unwrap();
    let later = server.resource_version().to_string();
    loop {
        let event = next_event(&mut events).await;
        assert_eq!(
            event["type"], "BOOKMARK",
            "no Lease event on a Service watch"
        );
        if event["object"]["metadata"]["resourceVersion"] == later.as_str() {
            break;
        }
    }
    // timeoutSeconds=2: the server ends the response properly.
    let end = timeout(WAIT, async {
        loop {
            if let Err(end) = events.next().await {
                return end;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, WatchEnd::Closed);
}

#[tokio::test]
async fn drop_watches_breaks_every_open_stream() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client();
    let (_, mut first) = client.watch("/api/v1/services?watch=true").await.unwrap();
    let (_, mut second) = client
        .watch("/apis/discovery.k8s.io/v1/endpointslices?watch=true")
        .await
        .unwrap();
    assert!(server.wait_for_active_watches(2, WAIT).await);
    assert_eq!(server.watch_count(), 2);
    server.drop_watches();
    for events in [&mut first, &mut second] {
        let end = timeout(WAIT, events.next()).await.unwrap();
        assert!(matches!(end, Err(WatchEnd::Broken(_))), "{end:?}");
    }
    // New watches work.
    let (_, mut third) = client.watch("/api/v1/services?watch=true").await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    assert_eq!(
        summary(&next_event(&mut third).await),
        ("ADDED".to_owned(), "a".to_owned())
    );
    assert_eq!(server.watch_count(), 3);
}

#[tokio::test]
async fn an_expired_resource_version_gets_410_on_the_watch() {
    let server = TestApiServer::start().await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    let old = server.resource_version();
    server.apply(svc_json("shop", "b", json!({}))).unwrap();
    server.compact();
    let (status, mut events) = server
        .client()
        .watch(&format!(
            "/api/v1/services?watch=true&resourceVersion={old}"
        ))
        .await
        .unwrap();
    assert_eq!(
        status, 200,
        "the real server reports expiry inside the stream"
    );
    let error = next_event(&mut events).await;
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version")
    );
    assert_eq!(
        timeout(WAIT, events.next()).await.unwrap().unwrap_err(),
        WatchEnd::Closed
    );
    // The current version is still fine.
    let (_, mut events) = server
        .client()
        .watch(&format!(
            "/api/v1/services?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await
        .unwrap();
    server.apply(svc_json("shop", "c", json!({}))).unwrap();
    assert_eq!(
        summary(&next_event(&mut events).await),
        ("ADDED".to_owned(), "c".to_owned())
    );

    // A bounded history compacts by itself.
    let small = TestApiServer::start_with(ApiServerOptions::default().history_limit(5))
        .await
        .unwrap();
    let start = small.resource_version();
    for i in 0..10 {
        small
            .apply(svc_json("shop", &format!("s{i}"), json!({})))
            .unwrap();
    }
    let (_, mut events) = small
        .client()
        .watch(&format!(
            "/api/v1/services?watch=true&resourceVersion={start}"
        ))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await["object"]["code"], 410);
}
