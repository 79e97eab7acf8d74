//! Injected faults, and a kube-runtime reflector that stays correct across all of them.

use super::*;

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

/// Two synced reflectors over the exported Services: one lists then watches (with small
/// pages), one uses a streaming list.
async fn start_reflectors(server: &TestApiServer) -> Vec<reflector::Store<Service>> {
    let client = kube_client(server).await;
    let mut readers = Vec::new();
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
    readers
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
    let readers = start_reflectors(&server).await;
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
