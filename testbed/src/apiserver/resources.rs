//! The resource types the API server serves and their discovery documents.

use serde_json::{Value, json};
use std::borrow::Cow;

use super::events;

/// One served resource type.
#[derive(Debug)]
pub(crate) struct ResourceType {
    /// Position in [`RESOURCES`]; the store keeps one map per resource type.
    pub(crate) index: usize,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
    /// Whether a `status` subresource exists; writes to the main resource then keep the
    /// stored status, as the real server does.
    pub(crate) has_status: bool,
    /// The fields a field selector may name besides `metadata.name` and `metadata.namespace`.
    pub(crate) field_labels: &'static [&'static str],
    /// How objects of this type are kept: as they are served, or as another type's objects.
    pub(crate) view: View,
}

/// Whether a resource type has storage of its own or shows another's objects converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Objects are stored and served as they are.
    Stored,
    /// Core `v1` events: the `events.k8s.io/v1` objects (stored at [`EVENTS`]), converted as
    /// the real server converts them (see `events.rs`).
    CoreEvents,
}

pub(crate) const NAMESPACES: usize = 0;
pub(crate) const SERVICES: usize = 1;
pub(crate) const ENDPOINT_SLICES: usize = 2;
pub(crate) const LEASES: usize = 3;
/// `events.k8s.io/v1` events; core `v1` events are the same objects.
pub(crate) const EVENTS: usize = 4;

/// What a field selector on an `events.k8s.io/v1` event may name.
const EVENT_FIELDS: &[&str] = &[
    "reason",
    "regarding.apiVersion",
    "regarding.fieldPath",
    "regarding.kind",
    "regarding.name",
    "regarding.namespace",
    "regarding.resourceVersion",
    "regarding.uid",
    "reportingController",
    "type",
];

/// What a field selector on a core `v1` event may name (`kubectl describe` uses the
/// `involvedObject` ones).
const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.resourceVersion",
    "involvedObject.uid",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The served resource types. Each has a map in the store at its `index`, except views,
/// whose `index` is the stored type they show.
pub(crate) static RESOURCES: [ResourceType; 6] = [
    ResourceType {
        index: NAMESPACES,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_status: true,
        field_labels: &[],
        view: View::Stored,
    },
    ResourceType {
        index: SERVICES,
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        has_status: true,
        field_labels: &[],
        view: View::Stored,
    },
    ResourceType {
        index: ENDPOINT_SLICES,
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        field_labels: &[],
        view: View::Stored,
    },
    ResourceType {
        index: LEASES,
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        field_labels: &[],
        view: View::Stored,
    },
    ResourceType {
        index: EVENTS,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        field_labels: EVENT_FIELDS,
        view: View::Stored,
    },
    ResourceType {
        index: EVENTS,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        field_labels: CORE_EVENT_FIELDS,
        view: View::CoreEvents,
    },
];

/// The version the server reports; kube-rs and kubectl only show it.
pub(crate) const GIT_VERSION: &str = "v1.33.5";

impl ResourceType {
    /// The type this one's objects are stored as: itself, or for a view the type it shows.
    pub(crate) fn stored(&self) -> &'static ResourceType {
        &RESOURCES[self.index]
    }

    /// A stored object as this type serves it.
    pub(crate) fn present<'v>(&self, object: &'v Value) -> Cow<'v, Value> {
        match self.view {
            View::Stored => Cow::Borrowed(object),
            View::CoreEvents => Cow::Owned(events::to_core(object)),
        }
    }

    /// A body written through this type, as it is stored.
    pub(crate) fn to_stored(&self, object: Value) -> Value {
        match self.view {
            View::Stored => object,
            View::CoreEvents => events::from_core(&object),
        }
    }

    /// `v1` or `group/version`.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The `group` part of an error's details, as the real server fills it.
    pub(crate) fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Looks a resource up by how tests and `kubectl` name it: plural, singular, kind or short
/// name, in any case.
pub(crate) fn resolve(name: &str) -> Option<&'static ResourceType> {
    let lower = name.to_ascii_lowercase();
    // `endpointslices.discovery.k8s.io` names the same thing as `endpointslices`.
    let plain = lower.split('.').next().unwrap_or_default();
    RESOURCES.iter().find(|r| {
        r.plural == plain
            || r.singular == plain
            || r.kind.eq_ignore_ascii_case(plain)
            || r.short_names.contains(&plain)
    })
}

/// The resource type of an object from its `apiVersion` and `kind`.
pub(crate) fn of_object(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The resource served at `group/version/plural`.
pub(crate) fn at_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Group/versions other than the core `v1`.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| (r.group, r.version))
        .collect();
    groups.dedup();
    groups
}

pub(crate) fn version_document() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_document(group: &str, version: &str) -> Value {
    let group_version = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{"groupVersion": group_version, "version": version}],
        "preferredVersion": {"groupVersion": group_version, "version": version}
    })
}

pub(crate) fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| group_document(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: an `APIGroup`, or `None` for an unknown group.
pub(crate) fn group(name: &str) -> Option<Value> {
    groups()
        .into_iter()
        .find(|(g, _)| *g == name)
        .map(|(g, v)| {
            let mut doc = group_document(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/{group}/{version}`: an `APIResourceList`, or `None` when nothing is
/// served there.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let mut entries = vec![json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": r.short_names,
                "categories": r.categories,
            })];
            if r.has_status {
                entries.push(json!({
                    "name": format!("{}/status", r.plural),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
            entries
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources
    }))
}

/// The group/version paths of the OpenAPI v3 index: `api/v1`, `apis/{group}/{version}`.
fn openapi_paths() -> Vec<(String, &'static str, &'static str)> {
    let mut paths = vec![("api/v1".to_owned(), "", "v1")];
    paths.extend(
        groups()
            .into_iter()
            .map(|(g, v)| (format!("apis/{g}/{v}"), g, v)),
    );
    paths
}

/// `/openapi/v3`: the index of group/version documents.
pub(crate) fn openapi_v3_index() -> Value {
    let paths: serde_json::Map<String, Value> = openapi_paths()
        .into_iter()
        .map(|(path, _, _)| {
            // The hash only has to change when the document does, which it never does.
            let url = format!("/openapi/v3/{path}?hash={GIT_VERSION}");
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1 | apis/group/version}`: a document with no schemas whose PATCH
/// operations declare the `fieldValidation` parameter. That is what kubectl looks for to
/// leave validation to the server instead of downloading schemas to validate with itself;
/// this server accepts any fields. Strategic merge patches kubectl then computes from its
/// built-in types.
pub(crate) fn openapi_v3_document(path: &str) -> Option<Value> {
    let (_, group, version) = openapi_paths().into_iter().find(|(p, _, _)| p == path)?;
    let mut paths = serde_json::Map::new();
    for rt in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let root = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let object_path = if rt.namespaced {
            format!("{root}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{root}/{}/{{name}}", rt.plural)
        };
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(
            object_path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", rt.kind),
                    "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind}
                }
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_spelling() {
        for name in ["svc", "Service", "services", "SERVICE"] {
            assert_eq!(resolve(name).map(|r| r.plural), Some("services"), "{name}");
        }
        for name in [
            "EndpointSlice",
            "endpointslices.discovery.k8s.io",
            "endpointslice",
        ] {
            assert_eq!(
                resolve(name).map(|r| r.plural),
                Some("endpointslices"),
                "{name}"
            );
        }
        assert_eq!(resolve("ns").map(|r| r.plural), Some("namespaces"));
        assert_eq!(resolve("lease").map(|r| r.plural), Some("leases"));
        assert!(resolve("pods").is_none());
        assert_eq!(
            of_object("discovery.k8s.io/v1", "EndpointSlice").map(|r| r.index),
            Some(ENDPOINT_SLICES)
        );
        assert!(of_object("v1", "EndpointSlice").is_none());
    }

    #[test]
    fn discovery_documents() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "namespaces",
                "namespaces/status",
                "services",
                "services/status",
                "events"
            ]
        );
        assert!(resource_list("apps", "v1").is_none());
        assert_eq!(group_list()["groups"].as_array().unwrap().len(), 3);
        assert!(group("discovery.k8s.io").is_some());
        assert!(group("events.k8s.io").is_some());
    }
}
