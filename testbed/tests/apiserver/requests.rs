//! Requests one at a time: selectors, lists, writes and pagination, as the real server
//! answers them.

use super::*;

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
}

#[tokio::test]
async fn errors_are_status_objects_and_deletes_cascade() {
    let server = TestApiServer::start().await.unwrap();
    let web = service("shop", "web").port("http", 80, 8080).build();
    server.apply_typed(&web).unwrap();
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
