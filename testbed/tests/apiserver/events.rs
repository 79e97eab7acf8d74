//! Events: recorded through `events.k8s.io/v1`, read through core `v1` as the real server
//! converts them, with the field selectors `kubectl describe` sends.

use super::*;

fn recorded(name: &str, service: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "shop"},
        "eventTime": "2026-01-02T03:04:05.000001Z",
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": service, "uid": uid},
        "reason": "Served", "note": format!("served {service}"), "type": "Normal", "action": "Publish",
        "reportingController": "ksd-exporter", "reportingInstance": "pod-1"
    })
}

#[tokio::test]
async fn core_events_show_the_recorded_events_converted() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client();
    let web = client
        .post(
            "/api/v1/namespaces/shop/services",
            &svc_json("shop", "web", json!({})),
        )
        .await
        .unwrap();
    let uid = web.body["metadata"]["uid"].as_str().unwrap().to_owned();
    for (name, service, uid) in [("web.1", "web", uid.as_str()), ("db.1", "db", "other")] {
        let created = client
            .post(
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                &recorded(name, service, uid),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.body);
    }
    // What `kubectl describe service web` asks for.
    let selector = format!(
        "involvedObject.name=web,involvedObject.namespace=shop,involvedObject.kind=Service,involvedObject.uid={uid}"
    );
    let list = client
        .get(&format!(
            "/api/v1/namespaces/shop/events?fieldSelector={}&limit=500",
            selector.replace('=', "%3D").replace(',', "%2C")
        ))
        .await
        .unwrap();
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["kind"], "EventList");
    assert_eq!(list.body["apiVersion"], "v1");
    assert_eq!(names(&list.body), ["web.1"]);
    let event = &list.body["items"][0];
    assert_eq!(event["involvedObject"]["uid"], uid.as_str());
    assert_eq!(event["message"], "served web");
    assert_eq!(event["source"]["component"], "ksd-exporter");
    assert_eq!(event["count"], 1);
    assert!(event.get("note").is_none(), "{event}");

    // A series recorded through the events API shows as the count.
    let patched = client
        .patch(
            "/apis/events.k8s.io/v1/namespaces/shop/events/web.1",
            "application/merge-patch+json",
            &json!({"series": {"count": 2, "lastObservedTime": "2026-01-02T04:00:00.000000Z"}}),
        )
        .await
        .unwrap();
    assert_eq!(patched.status, 200, "{}", patched.body);
    let core = client
        .get("/api/v1/namespaces/shop/events/web.1")
        .await
        .unwrap();
    assert_eq!(core.body["count"], 2);
    assert_eq!(core.body["lastTimestamp"], "2026-01-02T04:00:00Z");
    // The same objects, stored once.
    let stored = client
        .get("/apis/events.k8s.io/v1/namespaces/shop/events?fieldSelector=regarding.name%3Ddb")
        .await
        .unwrap();
    assert_eq!(names(&stored.body), ["db.1"]);
    assert_eq!(stored.body["items"][0]["note"], "served db");
    let unknown = client
        .get("/api/v1/namespaces/shop/events?fieldSelector=regarding.name%3Ddb")
        .await
        .unwrap();
    assert_eq!(unknown.status, 400, "core events have no regarding field");
}

#[tokio::test]
async fn a_core_event_is_stored_as_an_events_api_event_and_watched_converted() {
    let server = TestApiServer::start().await.unwrap();
    let client = server.client();
    let (status, mut events) = client
        .watch("/api/v1/namespaces/shop/events?watch=true&fieldSelector=involvedObject.name%3Dweb")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let core = json!({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.2", "namespace": "shop"},
        "involvedObject": {"kind": "Service", "namespace": "shop", "name": "web"},
        "message": "written as a core event", "reason": "Test", "type": "Warning",
        "source": {"component": "kubectl"}, "count": 3
    });
    let created = client
        .post("/api/v1/namespaces/shop/events", &core)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["apiVersion"], "v1");
    let event = next_event(&mut events).await;
    assert_eq!(summary(&event), ("ADDED".to_owned(), "web.2".to_owned()));
    assert_eq!(event["object"]["message"], "written as a core event");
    let stored = client
        .get("/apis/events.k8s.io/v1/namespaces/shop/events/web.2")
        .await
        .unwrap();
    assert_eq!(stored.body["note"], "written as a core event");
    assert_eq!(stored.body["deprecatedSource"]["component"], "kubectl");
    assert_eq!(stored.body["deprecatedCount"], 3);
    assert_eq!(server.list("events").len(), 1, "one object, two views");
}
