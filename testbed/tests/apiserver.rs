//! The API server double over HTTP: what a raw client sees (status codes, list pages, watch
//! lines), what kube-rs sees, and a kube-runtime reflector that must stay correct across the
//! faults the server injects.

#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_testbed::apiserver::{ApiClient, ApiServerOptions, TestApiServer, WatchEnd, WatchEvents};
use ksd_testbed::slices::{Pod, ready_pods, service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn kube_client(server: &TestApiServer) -> kube::Client {
    // NB: this build links both of rustls' crypto providers (kube asks for ring, the AWS SDK
    // for aws-lc-rs), so rustls cannot pick one by itself. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn svc_json(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_event(events: &mut WatchEvents) -> Value {
    timeout(WAIT, events.next())
        .await
        .expect("no watch event in time")
        .expect("the watch ended")
}

fn summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test]
async fn label_selectors_cover_every_operator() {
    let server = TestApiServer::start().await.unwrap();
    server
        .apply(svc_json(
            "shop",
            "a",
            json!({"app": "web", "tier": "front"}),
        ))
        .unwrap();
    server
        .apply(svc_json("shop", "b", json!({"app": "web", "tier": "back"})))
        .unwrap();
    server
        .apply(svc_json("shop", "c", json!({"app": "db"})))
        .unwrap();
    server
        .apply(svc_json("other", "d", json!({"app": "web"})))
        .unwrap();
    let client = server.client();
    let select = |selector: &str| {
        let client = client.clone();
        let path = format!(
            "/api/v1/namespaces/shop/services?labelSelector={}",
            selector
                .replace('%', "%25")
                .replace(' ', "%20")
                .replace('=', "%3D")
                .replace(',', "%2C")
                .replace('!', "%21")
                .replace('(', "%28")
                .replace(')', "%29")
        );
        async move { client.get(&path).await.unwrap() }
    };
    let cases: &[(&str, &[&str])] = &[
        ("app=web", &["a", "b"]),
        ("app==web", &["a", "b"]),
        ("app!=web", &["c"]),
        ("tier!=front", &["b", "c"]),
        ("app in (db, web)", &["a", "b", "c"]),
        ("tier notin (front)", &["b", "c"]),
        ("tier", &["a", "b"]),
        ("!tier", &["c"]),
        ("app=web,tier=back", &["b"]),
        ("app in (web),!tier", &[]),
        ("", &["a", "b", "c"]),
    ];
    for (selector, expected) in cases {
        let response = select(selector).await;
        assert_eq!(response.status, 200, "{selector}");
        assert_eq!(names(&response.body), *expected, "selector {selector:?}");
    }
    for bad in ["app in web", "app=(x)", "=x", "app in ()"] {
        let response = select(bad).await;
        assert_eq!(response.status, 400, "{bad:?}");
        assert_eq!(response.body["kind"], "Status");
        assert_eq!(response.body["status"], "Failure");
        assert_eq!(response.body["reason"], "BadRequest");
        assert_eq!(response.body["code"], 400);
    }
    // Field selectors on name and namespace, across namespaces.
    let response = client
        .get("/api/v1/services?fieldSelector=metadata.namespace%3Dother")
        .await
        .unwrap();
    assert_eq!(names(&response.body), ["d"]);
    let response = client
        .get("/api/v1/services?fieldSelector=metadata.name%21%3Da")
        .await
        .unwrap();
    assert_eq!(names(&response.body), ["d", "b", "c"]);
    let response = client
        .get("/api/v1/services?fieldSelector=spec.clusterIP%3D1.2.3.4")
        .await
        .unwrap();
    assert_eq!(response.status, 400);
}

#[tokio::test]
async fn lists_look_like_the_real_server_and_kube_reads_them() {
    let server = TestApiServer::start().await.unwrap();
    server.apply(svc_json("shop", "web", json!({}))).unwrap();
    let response = server
        .client()
        .get("/api/v1/namespaces/shop/services")
        .await
        .unwrap();
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    let list = response.body;
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        server.resource_version().to_string()
    );
    // Like the real server, items carry no kind/apiVersion of their own.
    assert!(list["items"][0].get("kind").is_none());
    assert_eq!(list["items"][0]["metadata"]["name"], "web");

    let client = kube_client(&server).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let listed = services.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("web"));
    let got = services.get("web").await.unwrap();
    assert!(got.metadata.uid.is_some());
    assert!(got.metadata.creation_timestamp.is_some());
    assert_eq!(got.spec.unwrap().cluster_ip.unwrap().split('.').count(), 4);

    // Metadata-only requests get PartialObjectMetadata, as kube's metadata API expects.
    let metadata = services
        .list_metadata(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(metadata.items[0].metadata.name.as_deref(), Some("web"));
    let raw_metadata = server
        .client()
        .request(
            hyper::Method::GET,
            "/api/v1/namespaces/shop/services/web",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw_metadata.body["kind"], "Service");
    let got_metadata = services.get_metadata("web").await.unwrap();
    assert_eq!(got_metadata.types.unwrap().kind, "PartialObjectMetadata");

    // Discovery documents kube's discovery understands.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let kinds: BTreeSet<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| ar.kind)
        .collect();
    for kind in ["Service", "EndpointSlice", "Namespace", "Lease"] {
        assert!(kinds.contains(kind), "{kind} not discovered: {kinds:?}");
    }
    let version = client.apiserver_version().await.unwrap();
    assert!(version.git_version.starts_with("v1.33."));
}

#[tokio::test]
async fn writes_follow_the_real_servers_rules() {
    let server = TestApiServer::start().await.unwrap();
    let client = kube_client(&server).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let web = service("shop", "web").port("http", 80, 8080).build();
    let created = services.create(&PostParams::default(), &web).await.unwrap();
    let first_rv = created.metadata.resource_version.clone().unwrap();
    let duplicate = services
        .create(&PostParams::default(), &web)
        .await
        .unwrap_err();
    match duplicate {
        kube::Error::Api(status) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (409, "AlreadyExists")
            )
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // Update with the current resourceVersion works once; the stale one then conflicts.
    let mut changed = created.clone();
    changed.metadata.labels = Some([("v".to_owned(), "1".to_owned())].into());
    let updated = services
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(first_rv.as_str())
    );
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    let stale = services
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    assert!(matches!(stale, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"));

    // Merge patch, strategic merge patch and server-side apply (create and update).
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["m"], "1");
    let patched = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})),
        )
        .await
        .unwrap();
    let port = &patched.spec.unwrap().ports.unwrap()[0];
    assert_eq!(
        port.name.as_deref(),
        Some("http"),
        "strategic patch merges ports by port"
    );
    let applied = services
        .patch(
            "api",
            &PatchParams::apply("test"),
            &Patch::Apply(service("shop", "api").port("grpc", 9090, 9090).build()),
        )
        .await
        .unwrap();
    assert!(applied.metadata.uid.is_some());
    assert!(server.get("svc", "shop", "api").is_some());

    // Raw errors are Status objects.
    let raw = server.client();
    let missing = raw
        .get("/api/v1/namespaces/shop/services/nope")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["kind"], "Status");
    assert_eq!(missing.body["reason"], "NotFound");
    assert_eq!(missing.body["details"]["name"], "nope");
    let bad_patch = raw
        .patch(
            "/api/v1/namespaces/shop/services/web",
            "text/plain",
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(bad_patch.status, 415);

    // Delete returns the object; deleting a Service deletes the slices it owns.
    server
        .set_endpoints(&web, &[Pod::ready("web-0", "10.1.0.1")])
        .unwrap();
    assert_eq!(server.list_in("endpointslices", "shop").len(), 1);
    let deleted = raw
        .delete("/api/v1/namespaces/shop/services/web")
        .await
        .unwrap();
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["kind"], "Service");
    assert!(server.get("services", "shop", "web").is_none());
    assert!(server.list_in("endpointslices", "shop").is_empty());
}

#[tokio::test]
async fn limit_and_continue_page_through_a_consistent_snapshot() {
    let server = TestApiServer::start().await.unwrap();
    for i in 0..25 {
        server
            .apply(svc_json("shop", &format!("s{i:02}"), json!({})))
            .unwrap();
    }
    let client = server.client();
    let mut seen = Vec::new();
    let mut path = "/api/v1/namespaces/shop/services?limit=10".to_owned();
    let mut pages = 0;
    let mut first_token = None;
    loop {
        let page = client.get(&path).await.unwrap();
        assert_eq!(page.status, 200);
        pages += 1;
        seen.extend(names(&page.body));
        if pages == 1 {
            // Written after the first page: not part of this list.
            server.apply(svc_json("shop", "s99", json!({}))).unwrap();
        }
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => {
                first_token.get_or_insert_with(|| token.to_owned());
                path = format!("/api/v1/namespaces/shop/services?limit=10&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
    assert_eq!(seen, expected);

    // kube's paginated listing gets everything.
    let kube = kube_client(&server).await;
    let services: Api<Service> = Api::namespaced(kube, "shop");
    let page = services
        .list(&ListParams::default().limit(7))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 7);
    assert!(page.metadata.continue_.is_some());

    server.compact();
    let token = first_token.unwrap();
    let expired = client
        .get(&format!(
            "/api/v1/namespaces/shop/services?limit=10&continue={token}"
        ))
        .await
        .unwrap();
    assert_eq!(expired.status, 410);
    assert_eq!(expired.body["reason"], "Expired");
    assert_eq!(expired.body["code"], 410);
}

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

#[tokio::test]
async fn fail_next_and_stall_inject_faults() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client();
    let before = server.request_count();
    server.fail_next(2, 503);
    for _ in 0..2 {
        let failed = client.get("/api/v1/services").await.unwrap();
        assert_eq!(failed.status, 503);
        assert_eq!(failed.body["kind"], "Status");
        assert_eq!(failed.body["reason"], "ServiceUnavailable");
    }
    assert_eq!(client.get("/api/v1/services").await.unwrap().status, 200);
    assert_eq!(server.request_count(), before + 3);

    server.stall(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(client.get("/version").await.unwrap().status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.stall(Duration::ZERO);

    // kube sees the injected status as an API error.
    server.fail_next(1, 500);
    let kube = kube_client(&server).await;
    let services: Api<Service> = Api::all(kube);
    let error = services.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 500),
        "{error:?}"
    );
    assert!(services.list(&ListParams::default()).await.is_ok());
}

#[tokio::test]
async fn stop_and_restart_keep_the_port_and_the_state() {
    let server = TestApiServer::start().await.unwrap();
    server.apply(svc_json("shop", "a", json!({}))).unwrap();
    let rv = server.resource_version();
    let url = server.url();
    let client = server.client();
    let (_, mut events) = client.watch("/api/v1/services?watch=true").await.unwrap();
    next_event(&mut events).await;
    server.stop().await;
    assert!(!server.is_serving());
    assert!(matches!(
        timeout(WAIT, events.next()).await.unwrap(),
        Err(WatchEnd::Broken(_))
    ));
    assert!(ApiClient::new(url.clone()).get("/version").await.is_err());
    // Writes while stopped are part of the state the restarted server serves.
    server.apply(svc_json("shop", "b", json!({}))).unwrap();
    server.restart().await.unwrap();
    assert_eq!(server.url(), url);
    let list = ApiClient::new(url).get("/api/v1/services").await.unwrap();
    assert_eq!(names(&list.body), ["a", "b"]);
    assert!(server.resource_version() > rv);
    // A watch resumes from before the stop.
    let (_, mut events) = client
        .watch(&format!("/api/v1/services?watch=true&resourceVersion={rv}"))
        .await
        .unwrap();
    assert_eq!(
        summary(&next_event(&mut events).await),
        ("ADDED".to_owned(), "b".to_owned())
    );
}

#[tokio::test]
async fn set_endpoints_scales_a_service() {
    let server = TestApiServer::start().await.unwrap();
    let web = service("shop", "web")
        .label("k8s-service-discovery", "true")
        .port("http", 80, 8080)
        .build();
    assert!(
        server.set_endpoints(&web, &[]).is_err(),
        "the Service must exist first"
    );
    server.apply_typed(&web).unwrap();
    let slices_of = |server: &TestApiServer| -> Vec<EndpointSlice> {
        server
            .list_in("endpointslices", "shop")
            .into_iter()
            .map(|s| serde_json::from_value(s).unwrap())
            .collect()
    };
    server
        .set_endpoints(&web, &ready_pods("web", 250, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    let slices = slices_of(&server);
    assert_eq!(slices.len(), 3);
    assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 250);
    let uid = server.get("svc", "shop", "web").unwrap()["metadata"]["uid"].clone();
    assert!(slices.iter().all(|s| {
        s.metadata.owner_references.as_ref().unwrap()[0].uid == uid.as_str().unwrap()
            && s.metadata.labels.as_ref().unwrap()["k8s-service-discovery"] == "true"
    }));
    let rv = server.resource_version();
    server
        .set_endpoints(&web, &ready_pods("web", 2, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    let slices = slices_of(&server);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].endpoints.len(), 2);
    // One slice rewritten in place, two deleted.
    assert_eq!(server.resource_version(), rv + 3);
    // The same endpoints again change nothing.
    server
        .set_endpoints(&web, &ready_pods("web", 2, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    assert_eq!(server.resource_version(), rv + 3);

    // Over HTTP, as the `scale` command does.
    let written = ksd_testbed::slices::scale(
        &server.client(),
        "shop",
        "web",
        &ready_pods("web", 120, Ipv4Addr::new(10, 2, 0, 1)),
    )
    .await
    .unwrap();
    assert_eq!(written, 2);
    let slices = slices_of(&server);
    assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 120);
}

#[tokio::test]
async fn the_binary_serves_seeds_and_scales() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n---\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let binary = env!("CARGO_BIN_EXE_ksd-testbed");
    let mut server = tokio::process::Command::new(binary)
        .args(["apiserver", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--seed")
        .arg(&seed)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    timeout(WAIT, async {
        while !kubeconfig.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the kubeconfig was never written");
    let client = ApiClient::from_kubeconfig(&kubeconfig).unwrap();
    let web = client
        .get("/api/v1/namespaces/demo/services/web")
        .await
        .unwrap();
    assert_eq!(web.status, 200);
    let scaled = tokio::process::Command::new(binary)
        .args([
            "scale",
            "--namespace",
            "demo",
            "--service",
            "web",
            "--replicas",
            "3",
            "--base-ip",
            "10.1.0.",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    let slices = client
        .get("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
        .await
        .unwrap();
    let addresses: Vec<&str> = slices.body["items"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
    // SIGTERM ends it cleanly.
    let pid = server.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = timeout(WAIT, server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

/// What the reflector holds, and what the server holds, as (namespace/name, resourceVersion).
fn state_of_store(reader: &reflector::Store<Service>) -> BTreeSet<(String, String)> {
    reader
        .state()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}/{}",
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default()
                ),
                s.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn state_of_server(server: &TestApiServer, label: &str) -> BTreeSet<(String, String)> {
    server
        .list("services")
        .iter()
        .filter(|s| s["metadata"]["labels"].get(label).is_some())
        .map(|s| {
            (
                format!(
                    "{}/{}",
                    s["metadata"]["namespace"].as_str().unwrap(),
                    s["metadata"]["name"].as_str().unwrap()
                ),
                s["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

async fn converges(server: &TestApiServer, readers: &[&reflector::Store<Service>], what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let expected = state_of_server(server, "export");
        if readers.iter().all(|r| state_of_store(r) == expected) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            for reader in readers {
                eprintln!("store: {:?}", state_of_store(reader));
            }
            panic!("{what}: the reflector did not converge to {expected:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_runtime_reflector_recovers_from_every_fault() {
    let options = ApiServerOptions::default().bookmark_interval(Duration::from_millis(200));
    let server = TestApiServer::start_with(options).await.unwrap();
    for i in 0..30 {
        let labels = if i % 3 == 0 {
            json!({})
        } else {
            json!({"export": "yes"})
        };
        server
            .apply(svc_json(&format!("ns{}", i % 4), &format!("s{i}"), labels))
            .unwrap();
    }
    let client = kube_client(&server).await;
    let mut readers = Vec::new();
    // One reflector lists then watches (with small pages), one uses a streaming list.
    for config in [
        watcher::Config::default().labels("export").page_size(7),
        watcher::Config::default()
            .labels("export")
            .streaming_lists(),
    ] {
        let (reader, writer) = reflector::store();
        let stream = watcher(Api::<Service>::all(client.clone()), config)
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Err(error) = item {
                    eprintln!("watcher error (retried): {error}");
                }
            }
        });
        timeout(Duration::from_secs(30), reader.wait_until_ready())
            .await
            .unwrap()
            .unwrap();
        readers.push(reader);
    }
    let readers: Vec<&reflector::Store<Service>> = readers.iter().collect();
    converges(&server, &readers, "initial list").await;

    server
        .apply(svc_json("ns1", "s1", json!({"export": "yes", "v": "2"})))
        .unwrap();
    server
        .apply(svc_json("ns0", "s0", json!({"export": "yes"})))
        .unwrap();
    server.delete("svc", "ns2", "s2").unwrap();
    converges(&server, &readers, "live events").await;

    server.drop_watches();
    server
        .apply(svc_json("ns3", "new-after-drop", json!({"export": "yes"})))
        .unwrap();
    server
        .apply(svc_json("ns1", "s1", json!({"v": "3"})))
        .unwrap();
    converges(&server, &readers, "after drop_watches").await;

    // Down, changed, compacted, up again: the watchers' versions are gone, so they must
    // list again, and must drop what was deleted meanwhile.
    let watches = server.watch_count();
    let lists = server.list_count();
    server.stop().await;
    server
        .apply(svc_json("ns0", "while-down", json!({"export": "yes"})))
        .unwrap();
    server.delete("svc", "ns3", "new-after-drop").unwrap();
    server.delete("svc", "ns0", "s4").unwrap();
    server.compact();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await.unwrap();
    converges(&server, &readers, "after stop, compact and restart").await;
    assert!(server.watch_count() > watches);
    assert!(
        server.list_count() > lists,
        "the list-then-watch reflector listed again"
    );

    // Failing requests while the watchers reconnect.
    server.fail_next(3, 503);
    server.drop_watches();
    for i in 0..5 {
        server
            .apply(svc_json(
                "ns2",
                &format!("burst{i}"),
                json!({"export": "yes"}),
            ))
            .unwrap();
    }
    converges(&server, &readers, "after injected failures").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_and_a_thousand_slices() {
    let server = TestApiServer::start().await.unwrap();
    for i in 0..10_000 {
        server
            .apply_typed(
                &service(&format!("ns{}", i % 50), &format!("svc{i}"))
                    .label("export", "yes")
                    .port("http", 80, 8080)
                    .build(),
            )
            .unwrap();
    }
    for i in 0..10 {
        let svc = service(&format!("ns{i}"), &format!("svc{i}"))
            .port("http", 80, 8080)
            .build();
        let base = Ipv4Addr::new(10, 100 + i, 0, 1);
        server
            .set_endpoints(&svc, &ready_pods("p", 10_000, base))
            .unwrap();
    }
    assert_eq!(server.list("endpointslices").len(), 1_000);
    let client = kube_client(&server).await;
    let (reader, writer) = reflector::store::<Service>();
    let stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    timeout(Duration::from_secs(120), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 10_000);
    let slices: Api<EndpointSlice> = Api::all(client);
    let listed = slices.list(&ListParams::default()).await.unwrap();
    let endpoints: usize = listed.items.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(endpoints, 100_000);
}

/// Leases as leader election uses them through kube-rs: create (409 when it exists), get,
/// replace conditional on the resourceVersion (409 when it is stale), and a cleared holder.
#[tokio::test]
async fn leases_take_conditional_updates_as_leader_election_needs() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    let server = TestApiServer::start().await.unwrap();
    let client = kube_client(&server).await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let lease = |holder: Option<&str>| Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("leader".to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases
        .create(&PostParams::default(), &lease(Some("a")))
        .await
        .unwrap();
    let first_rv = created.metadata.resource_version.clone().unwrap();
    match leases
        .create(&PostParams::default(), &lease(Some("b")))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a second create: {other:?}"),
    }

    // The holder renews with the resourceVersion it read.
    let mut renewed = leases.get("leader").await.unwrap();
    renewed.spec.as_mut().unwrap().lease_duration_seconds = Some(16);
    let renewed = leases
        .replace("leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(
        renewed.metadata.resource_version.as_deref(),
        Some(first_rv.as_str())
    );

    // A writer holding the first read loses: 409 Conflict, and the Lease is unchanged.
    let mut stale = created.clone();
    stale.spec = lease(Some("b")).spec;
    match leases
        .replace("leader", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (409, "Conflict"),
                "{status:?}"
            );
        }
        other => panic!("a stale replace: {other:?}"),
    }
    let current = leases.get("leader").await.unwrap();
    assert_eq!(
        current.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );

    // Released: the holder is cleared.
    let mut released = current;
    released.spec.as_mut().unwrap().holder_identity = None;
    let released = leases
        .replace("leader", &PostParams::default(), &released)
        .await
        .unwrap();
    assert_eq!(released.spec.unwrap().holder_identity, None);
}
