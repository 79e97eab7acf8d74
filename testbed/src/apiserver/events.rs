//! Events: the `events.k8s.io/v1` objects and the core `v1` view of them.
//!
//! Events are stored as `events.k8s.io/v1` objects, which is what recorders write today. The
//! core `v1` `events` resource serves the same objects converted as the real server converts
//! them (`regarding` is `involvedObject`, `note` is `message`, `reportingController` is
//! `reportingComponent`, `deprecatedSource`/`deprecatedFirstTimestamp`/
//! `deprecatedLastTimestamp`/`deprecatedCount` are `source`/`firstTimestamp`/`lastTimestamp`/
//! `count`), and, where an event written through `events.k8s.io` leaves those legacy fields
//! empty, fills them from the new ones: `source.component` from `reportingController`,
//! `source.host` from `reportingInstance`, `firstTimestamp` from `eventTime`, `lastTimestamp`
//! and `count` from `series` (or `eventTime` and 1 without one). That is what `kubectl describe`
//! and `kubectl get events`, which read core events, show.

use serde_json::{Map, Value, json};

/// Fields that keep their name in both forms.
const SHARED: &[&str] = &[
    "metadata",
    "action",
    "reason",
    "type",
    "eventTime",
    "series",
    "related",
    "reportingInstance",
];

/// (events.k8s.io name, core name) of the renamed fields.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn copy(from: &Value, into: &mut Map<String, Value>, source: &str, target: &str) {
    if let Some(value) = from.get(source).filter(|v| !v.is_null()) {
        into.insert(target.to_owned(), value.clone());
    }
}

/// An `events.k8s.io/v1` event as a core `v1` event.
pub(crate) fn to_core(event: &Value) -> Value {
    let mut core = Map::new();
    core.insert("kind".to_owned(), json!("Event"));
    core.insert("apiVersion".to_owned(), json!("v1"));
    for field in SHARED {
        copy(event, &mut core, field, field);
    }
    for (new, old) in RENAMED {
        copy(event, &mut core, new, old);
    }
    fill_legacy_fields(event, &mut core);
    Value::Object(core)
}

/// The legacy fields an event written through `events.k8s.io` leaves empty.
fn fill_legacy_fields(event: &Value, core: &mut Map<String, Value>) {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    let source_empty = core
        .get("source")
        .and_then(Value::as_object)
        .is_none_or(|s| s.is_empty());
    if source_empty && let Some(component) = text("/reportingController") {
        let mut source = json!({"component": component});
        if let Some(host) = text("/reportingInstance") {
            source["host"] = json!(host);
        }
        core.insert("source".to_owned(), source);
    }
    let event_time = text("/eventTime").map(to_seconds);
    if !core.contains_key("firstTimestamp")
        && let Some(first) = &event_time
    {
        core.insert("firstTimestamp".to_owned(), json!(first));
    }
    let last_observed = text("/series/lastObservedTime").map(to_seconds);
    if !core.contains_key("lastTimestamp")
        && let Some(last) = last_observed.as_ref().or(event_time.as_ref())
    {
        core.insert("lastTimestamp".to_owned(), json!(last));
    }
    if !core.contains_key("count") {
        let count = event
            .pointer("/series/count")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        core.insert("count".to_owned(), json!(count));
    }
}

/// `2026-01-02T03:04:05.123456Z` (a `MicroTime`) as `2026-01-02T03:04:05Z` (a `Time`).
fn to_seconds(micro: &str) -> String {
    match micro.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => micro.to_owned(),
    }
}

/// A core `v1` event as the `events.k8s.io/v1` event it is stored as.
pub(crate) fn from_core(core: &Value) -> Value {
    if !core.is_object() {
        // Left to the store's type check, which refuses it with the real server's message.
        return core.clone();
    }
    let mut event = Map::new();
    event.insert("kind".to_owned(), json!("Event"));
    event.insert("apiVersion".to_owned(), json!("events.k8s.io/v1"));
    for field in SHARED {
        copy(core, &mut event, field, field);
    }
    for (new, old) in RENAMED {
        copy(core, &mut event, old, new);
    }
    Value::Object(event)
}

/// The object column of `kubectl get events`: `kind/name`, the kind in lower case.
pub(crate) fn object_cell(core: &Value) -> String {
    let kind = core
        .pointer("/involvedObject/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = core
        .pointer("/involvedObject/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}/{name}", kind.to_ascii_lowercase())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn recorded() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "shop"},
            "eventTime": "2026-01-02T03:04:05.123456Z",
            "regarding": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "shop", "uid": "u-1"},
            "reason": "Served", "note": "served by edge-1", "type": "Normal", "action": "Publish",
            "reportingController": "ksd-exporter", "reportingInstance": "pod-1"
        })
    }

    #[test]
    fn an_event_reads_as_a_core_event() {
        let core = to_core(&recorded());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["uid"], "u-1");
        assert_eq!(core["message"], "served by edge-1");
        assert_eq!(core["reportingComponent"], "ksd-exporter");
        assert_eq!(
            core["source"],
            json!({"component": "ksd-exporter", "host": "pod-1"})
        );
        assert_eq!(core["firstTimestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(core["lastTimestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(core["count"], 1);
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(object_cell(&core), "service/web");
    }

    #[test]
    fn a_series_gives_the_count_and_the_last_time() {
        let mut event = recorded();
        event["series"] = json!({"count": 3, "lastObservedTime": "2026-01-02T04:00:00.000001Z"});
        let core = to_core(&event);
        assert_eq!(core["count"], 3);
        assert_eq!(core["lastTimestamp"], "2026-01-02T04:00:00Z");
        assert_eq!(core["series"]["count"], 3);
    }

    #[test]
    fn a_core_event_is_stored_as_an_events_api_event() {
        let core = json!({
            "metadata": {"name": "x"}, "involvedObject": {"kind": "Service", "name": "web"},
            "message": "hello", "reason": "Test", "source": {"component": "kubectl"}, "count": 2
        });
        let event = from_core(&core);
        assert_eq!(event["apiVersion"], "events.k8s.io/v1");
        assert_eq!(event["regarding"]["name"], "web");
        assert_eq!(event["note"], "hello");
        assert_eq!(event["deprecatedSource"]["component"], "kubectl");
        assert_eq!(event["deprecatedCount"], 2);
        assert_eq!(to_core(&event)["source"]["component"], "kubectl");
    }
}
