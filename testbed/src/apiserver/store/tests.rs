#![allow(clippy::unwrap_used)]

use super::*;
use crate::apiserver::resources::{ENDPOINT_SLICES, SERVICES};

fn store() -> Store {
    Store::new(Limits {
        history: 100,
        snapshots: 8,
        broadcast: 64,
    })
}

fn svc(ns: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 80}]}})
}

#[test]
fn timestamps() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    for secs in [0, 951_782_400, 1_735_689_599, 4_102_444_800] {
        assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
    }
    assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
}

#[test]
fn create_defaults_and_versions() {
    let mut s = store();
    let before = s.resource_version();
    let created = s.put(svc("shop", "web", json!({}))).unwrap();
    assert!(s.resource_version() > before);
    assert_eq!(created["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(created["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(created["spec"]["ipFamilies"], json!(["IPv4"]));
    assert!(
        created["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    // The namespace came into existence.
    assert!(s.get(&RESOURCES[NAMESPACES], "", "shop").is_some());
    // Same content again: no write.
    let rv = s.resource_version();
    let again = s.put(svc("shop", "web", json!({}))).unwrap();
    assert_eq!(s.resource_version(), rv);
    assert_eq!(again["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(again["spec"]["clusterIP"], created["spec"]["clusterIP"]);
}

#[test]
fn update_conflicts_on_stale_version() {
    let mut s = store();
    let rt = &RESOURCES[SERVICES];
    let created = s.put(svc("a", "web", json!({}))).unwrap();
    let mut stale = (*created).clone();
    s.put(svc("a", "web", json!({"x": "1"}))).unwrap();
    stale["metadata"]["labels"] = json!({"y": "2"});
    let err = s
        .update(rt, Some("a"), "web", stale, Target::Main, false)
        .unwrap_err();
    assert_eq!((err.code, err.reason), (409, "Conflict"));
    let err = s
        .create(rt, Some("a"), svc("a", "web", json!({})), false)
        .unwrap_err();
    assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
}

#[test]
fn pagination_is_consistent_and_expires_with_compaction() {
    let mut s = store();
    for i in 0..5 {
        s.put(svc("a", &format!("s{i}"), json!({}))).unwrap();
    }
    let query = |token: Option<String>| ListQuery {
        filter: Filter::all(&RESOURCES[SERVICES]),
        limit: Some(2),
        continue_token: token,
    };
    let first = s.list(&query(None)).unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.remaining, Some(3));
    // A write between pages does not show up in later pages.
    s.put(svc("a", "s9", json!({}))).unwrap();
    let second = s.list(&query(first.continue_token.clone())).unwrap();
    let third = s.list(&query(second.continue_token.clone())).unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.continue_token.is_none());
    assert_eq!(third.rv, first.rv);
    s.compact();
    let err = s.list(&query(second.continue_token)).unwrap_err();
    assert_eq!((err.code, err.reason), (410, "Expired"));
}

#[test]
fn history_bound_compacts() {
    let mut s = Store::new(Limits {
        history: 3,
        snapshots: 8,
        broadcast: 64,
    });
    let start = s.resource_version();
    for i in 0..5 {
        s.put(svc("default", &format!("s{i}"), json!({}))).unwrap();
    }
    let filter = Filter::all(&RESOURCES[SERVICES]);
    assert!(matches!(
        s.start_watch(&filter, Some(start)).0,
        WatchStart::Expired { .. }
    ));
    match s.start_watch(&filter, Some(s.resource_version() - 2)).0 {
        WatchStart::Replay(changes) => assert_eq!(changes.len(), 2),
        _ => panic!("expected a replay"),
    }
}

#[test]
fn deleting_an_owner_deletes_what_it_owns() {
    let mut s = store();
    let web = s.put(svc("a", "web", json!({}))).unwrap();
    let uid = web["metadata"]["uid"].clone();
    s.put(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "a", "name": "web-x", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": uid}]},
        "addressType": "IPv4", "endpoints": []}),
    )
    .unwrap();
    s.put(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "a", "name": "manual"}, "addressType": "IPv4", "endpoints": []}),
    )
    .unwrap();
    s.remove(&RESOURCES[SERVICES], "a", "web").unwrap();
    let slices = s.all(&RESOURCES[ENDPOINT_SLICES]);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0]["metadata"]["name"], "manual");
}

#[test]
fn selector_filtering_turns_unmatching_into_deleted() {
    let mut s = store();
    let filter = Filter {
        labels: LabelSelector::parse("export=yes").unwrap(),
        ..Filter::all(&RESOURCES[SERVICES])
    };
    let (_, _, mut rx) = s.start_watch(&filter, None);
    s.put(svc("a", "web", json!({"export": "yes"}))).unwrap();
    s.put(svc("a", "web", json!({"export": "no"}))).unwrap();
    s.put(svc("a", "web", json!({"export": "yes"}))).unwrap();
    let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|c| filter.event(&c).map(|(t, _)| t))
        .collect();
    assert_eq!(kinds, ["ADDED", "DELETED", "ADDED"]);
}
