//! The forms an object is served in, chosen by the `Accept` header as the real server does:
//! the object itself, `PartialObjectMetadata` (kube-rs metadata watchers ask for it) or a
//! `Table` (kubectl's human-readable output asks for it).

use super::events;
use super::resources::{ENDPOINT_SLICES, EVENTS, NAMESPACES, ResourceType, SERVICES};
use super::store;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Representation {
    Object,
    PartialMetadata,
    Table,
}

/// The first alternative of the `Accept` header this server can produce.
pub(crate) fn negotiate(headers: &HeaderMap) -> Representation {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for alternative in accept.split(',') {
        let mut parts = alternative.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if media != "application/json" && media != "*/*" && media != "application/*" {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match (param("as"), param("g")) {
            (None, _) => return Representation::Object,
            (Some("Table"), Some("meta.k8s.io")) => return Representation::Table,
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return Representation::PartialMetadata;
            }
            _ => {}
        }
    }
    Representation::Object
}

fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

impl Representation {
    /// One object, as a get or a watch event serves it.
    pub(crate) fn object(self, rt: &ResourceType, object: &Value) -> Value {
        match self {
            Self::Object => rt.present(object).into_owned(),
            Self::PartialMetadata => partial(object),
            Self::Table => table(rt, std::iter::once(object), json!({})),
        }
    }

    /// A list response body.
    pub(crate) fn list(
        self,
        rt: &ResourceType,
        rv: u64,
        items: &[Arc<Value>],
        continue_token: Option<String>,
        remaining: Option<usize>,
    ) -> Vec<u8> {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(token) = continue_token {
            metadata["continue"] = json!(token);
        }
        if let Some(remaining) = remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
        let body = match self {
            Self::Object => return object_list(rt, metadata, items),
            Self::PartialMetadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
                "items": items.iter().map(|i| partial(i)).collect::<Vec<_>>(),
            }),
            Self::Table => table(rt, items.iter().map(|i| &**i), metadata),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// A list item as the real server writes it: without `kind` and `apiVersion`, which the list
/// carries.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_object() {
            Some(map) => serializer.collect_map(
                map.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion")),
            ),
            None => serde::Serialize::serialize(self.0, serializer),
        }
    }
}

fn object_list(rt: &ResourceType, metadata: Value, items: &[Arc<Value>]) -> Vec<u8> {
    let items: Vec<Cow<'_, Value>> = items.iter().map(|i| rt.present(i)).collect();
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        kind: String,
        api_version: String,
        metadata: Value,
        items: Vec<ListItem<'a>>,
    }
    let body = Body {
        kind: rt.list_kind(),
        api_version: rt.api_version(),
        metadata,
        items: items.iter().map(|i| ListItem(i)).collect(),
    };
    // Serializing JSON values into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

fn column(name: &str, format: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

fn text<'v>(object: &'v Value, pointer: &str) -> &'v str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn or_none(value: String) -> String {
    if value.is_empty() {
        "<none>".to_owned()
    } else {
        value
    }
}

/// The columns and cells kubectl shows for each resource, after the real server's printers.
fn table<'a>(
    rt: &ResourceType,
    objects: impl Iterator<Item = &'a Value>,
    metadata: Value,
) -> Value {
    let name = column("Name", "name", 0, "Name must be unique within a namespace.");
    let age = column(
        "Age",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let columns = match rt.index {
        SERVICES => vec![
            name,
            column("Type", "", 0, "The type of the service."),
            column("Cluster-IP", "", 0, "The IP address of the service."),
            column("External-IP", "", 0, "The external IPs of the service."),
            column("Port(s)", "", 0, "The ports of the service."),
            age,
            column("Selector", "", 1, "The selector of the service."),
        ],
        ENDPOINT_SLICES => vec![
            name,
            column(
                "AddressType",
                "",
                0,
                "The type of address carried by the slice.",
            ),
            column("Ports", "", 0, "The ports of the slice."),
            column(
                "Endpoints",
                "",
                0,
                "The addresses of the slice's endpoints.",
            ),
            age,
        ],
        NAMESPACES => vec![
            name,
            column("Status", "", 0, "The phase of the namespace."),
            age,
        ],
        EVENTS => event_columns(),
        _ => vec![
            name,
            column("Holder", "", 0, "The holder of the lease."),
            age,
        ],
    };
    let now = store::now_seconds();
    let rows: Vec<Value> = objects
        .map(|object| {
            let name = text(object, "/metadata/name").to_owned();
            let age = age_of(now, text(object, "/metadata/creationTimestamp"));
            let cells = match rt.index {
                SERVICES => service_cells(object, name, age),
                ENDPOINT_SLICES => slice_cells(object, name, age),
                NAMESPACES => vec![name, text(object, "/status/phase").to_owned(), age],
                EVENTS => event_cells(&events::to_core(object), name, now),
                _ => vec![
                    name,
                    or_none(text(object, "/spec/holderIdentity").to_owned()),
                    age,
                ],
            };
            json!({"cells": cells, "object": partial(object)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The real server's event columns: both event resources print the core form.
fn event_columns() -> Vec<Value> {
    vec![
        column(
            "Last Seen",
            "",
            0,
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        column(
            "Type",
            "",
            0,
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        column(
            "Reason",
            "",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        column("Object", "", 0, "The object that this event is about."),
        column(
            "Subobject",
            "",
            1,
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
        ),
        column(
            "Source",
            "",
            1,
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        column(
            "Message",
            "",
            0,
            "A human-readable description of the status of this operation.",
        ),
        column(
            "First Seen",
            "",
            1,
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        ),
        column(
            "Count",
            "",
            1,
            "The number of times this event has occurred.",
        ),
        column("Name", "name", 1, "Name must be unique within a namespace."),
    ]
}

fn event_cells(core: &Value, name: String, now: u64) -> Vec<String> {
    let last_seen = age_of(now, text(core, "/lastTimestamp"));
    let first_seen = age_of(now, text(core, "/firstTimestamp"));
    let source = match (text(core, "/source/component"), text(core, "/source/host")) {
        (component, "") => component.to_owned(),
        (component, host) => format!("{component}, {host}"),
    };
    let count = core.get("count").and_then(Value::as_i64).unwrap_or(1);
    vec![
        last_seen,
        text(core, "/type").to_owned(),
        text(core, "/reason").to_owned(),
        events::object_cell(core),
        text(core, "/involvedObject/fieldPath").to_owned(),
        source,
        text(core, "/message").trim().to_owned(),
        first_seen,
        count.to_string(),
        name,
    ]
}

fn service_cells(object: &Value, name: String, age: String) -> Vec<String> {
    let spec = object.get("spec").cloned().unwrap_or_default();
    let ports: Vec<String> = spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let external: Vec<&str> = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let selector: Vec<String> = spec
        .get("selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    vec![
        name,
        text(&spec, "/type").to_owned(),
        or_none(text(&spec, "/clusterIP").to_owned()),
        or_none(external.join(",")),
        or_none(ports.join(",")),
        age,
        or_none(selector.join(",")),
    ]
}

fn slice_cells(object: &Value, name: String, age: String) -> Vec<String> {
    let ports: Vec<String> = object
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("port").and_then(Value::as_i64))
        .map(|p| p.to_string())
        .collect();
    let addresses: Vec<&str> = object
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e.get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect();
    let endpoints = match addresses.len() {
        0 => "<none>".to_owned(),
        n if n <= 3 => addresses.join(","),
        n => format!("{} + {} more...", addresses[..3].join(","), n - 3),
    };
    let ports = if ports.is_empty() {
        "<unset>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        name,
        text(object, "/addressType").to_owned(),
        ports,
        endpoints,
        age,
    ]
}

/// Age as kubectl prints it (`45s`, `5m3s`, `3h`, `2d4h`, ...).
fn age_of(now: u64, created: &str) -> String {
    let Some(created) = store::parse_rfc3339(created) else {
        return "<unknown>".to_owned();
    };
    let seconds = now.saturating_sub(created);
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 && seconds % 60 != 0 => format!("{minutes}m{}s", seconds % 60),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 && minutes % 60 != 0 => format!("{hours}h{}m", minutes % 60),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 192 && hours % 24 != 0 => format!("{days}d{}h", hours % 24),
        () if days < 730 => format!("{days}d"),
        () if days % 365 != 0 && days < 2920 => format!("{}y{}d", days / 365, days % 365),
        () => format!("{}y", days / 365),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::apiserver::resources::RESOURCES;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> Representation {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn negotiation() {
        assert_eq!(accept(""), Representation::Object);
        assert_eq!(accept("application/json"), Representation::Object);
        assert_eq!(
            accept(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Representation::Table
        );
        assert_eq!(
            accept("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            Representation::PartialMetadata
        );
        assert_eq!(
            accept("application/vnd.kubernetes.protobuf, application/json"),
            Representation::Object
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age_of(1_000, "1970-01-01T00:16:40Z"), "0s");
        assert_eq!(age_of(100, "1970-01-01T00:00:00Z"), "100s");
        assert_eq!(age_of(303, "1970-01-01T00:00:00Z"), "5m3s");
        assert_eq!(age_of(3 * 3600 + 60, "1970-01-01T00:00:00Z"), "3h1m");
        assert_eq!(age_of(50 * 3600, "1970-01-01T00:00:00Z"), "2d2h");
        assert_eq!(age_of(1, "yesterday"), "<unknown>");
    }

    #[test]
    fn service_and_slice_tables() {
        let svc = json!({"metadata": {"name": "web", "namespace": "a", "creationTimestamp": "1970-01-01T00:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.2", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let t = Representation::Table.object(&RESOURCES[SERVICES], &svc);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[2], "10.96.0.2");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "a");
        let slice = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4", "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        let t = Representation::Table.object(&RESOURCES[ENDPOINT_SLICES], &slice);
        assert_eq!(
            t["rows"][0]["cells"][3],
            "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."
        );
    }
}
