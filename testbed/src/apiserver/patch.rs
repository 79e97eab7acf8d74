//! The patch formats the API server accepts.
//!
//! - JSON merge patch (RFC 7386), exact.
//! - JSON patch (RFC 6902), exact for `add`, `remove`, `replace`, `move`, `copy` and `test`.
//! - Strategic merge patch, simplified: a merge patch in which the lists the real server merges
//!   by key (`spec.ports` of a Service by `port`, `metadata.ownerReferences` by `uid`,
//!   `status.conditions` by `type`) are merged by that key, `metadata.finalizers` is merged as
//!   a set, and the directives `$patch` (`replace`/`delete`), `$retainKeys`,
//!   `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured. Every other
//!   list is replaced whole, which is what the real server does for the atomic lists of the
//!   resources served here (EndpointSlice `endpoints` and `ports`). That covers what
//!   `kubectl apply` (client side), `kubectl label/annotate` and kube-rs send.

use serde_json::{Map, Value};

/// A patch that could not be applied; answered as a 422 `Status` by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchError(pub(crate) String);

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// How a list at a given path is merged by a strategic merge patch.
enum ListStrategy {
    Replace,
    MergeByKey(&'static str),
    PrimitiveSet,
}

fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    match (kind, path) {
        (_, ["metadata", "ownerReferences"]) => ListStrategy::MergeByKey("uid"),
        (_, ["metadata", "finalizers"]) => ListStrategy::PrimitiveSet,
        (_, ["status", "conditions"]) => ListStrategy::MergeByKey("type"),
        ("Service", ["spec", "ports"]) => ListStrategy::MergeByKey("port"),
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch to an object of `kind`.
pub(crate) fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    kind: &str,
) -> Result<(), PatchError> {
    let mut path = Vec::new();
    strategic_merge_map(target, patch, kind, &mut path)
}

fn strategic_merge_map<'a>(
    target: &mut Value,
    patch: &'a Value,
    kind: &str,
    path: &mut Vec<&'a str>,
) -> Result<(), PatchError> {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch_map.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(PatchError(format!("unknown patch type: {other}"))),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return Ok(());
    };
    if let Some(retain) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (key, value) in patch_map {
        if let Some(list) = key.strip_prefix("$setElementOrder/") {
            orders.push((list, value));
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (target_map.get_mut(list), value.as_array())
            {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        path.push(key.as_str());
        if value.is_null() {
            target_map.remove(key);
        } else if let Value::Array(patch_items) = value {
            let slot = target_map.entry(key.clone()).or_insert(Value::Null);
            merge_list(slot, patch_items, list_strategy(kind, path), kind, path)?;
        } else if value.is_object() {
            let slot = target_map.entry(key.clone()).or_insert(Value::Null);
            strategic_merge_map(slot, value, kind, path)?;
            if slot.is_null() {
                target_map.remove(key);
            }
        } else {
            target_map.insert(key.clone(), value.clone());
        }
        path.pop();
    }
    for (list, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) =
            (target_map.get_mut(list), order.as_array())
        {
            reorder(items, order);
        }
    }
    Ok(())
}

fn merge_list<'a>(
    slot: &mut Value,
    patch_items: &'a [Value],
    strategy: ListStrategy,
    kind: &str,
    path: &mut Vec<&'a str>,
) -> Result<(), PatchError> {
    match strategy {
        ListStrategy::Replace => {
            *slot = Value::Array(
                patch_items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect(),
            );
        }
        ListStrategy::PrimitiveSet => {
            let mut items = slot.as_array().cloned().unwrap_or_default();
            for item in patch_items {
                if !items.contains(item) {
                    items.push(item.clone());
                }
            }
            *slot = Value::Array(items);
        }
        ListStrategy::MergeByKey(merge_key) => {
            let mut items = slot.as_array().cloned().unwrap_or_default();
            for patch_item in patch_items {
                let Some(key_value) = patch_item.get(merge_key) else {
                    return Err(PatchError(format!(
                        "map: {patch_item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let existing = items
                    .iter()
                    .position(|i| i.get(merge_key) == Some(key_value));
                let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (existing, delete) {
                    (Some(index), true) => {
                        items.remove(index);
                    }
                    (None, true) => {}
                    (Some(index), false) => {
                        strategic_merge_map(&mut items[index], patch_item, kind, path)?;
                    }
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_merge_map(&mut fresh, patch_item, kind, path)?;
                        items.push(fresh);
                    }
                }
            }
            *slot = Value::Array(items);
        }
    }
    Ok(())
}

/// `$setElementOrder`: items named in `order` come first, in that order; the others keep
/// their relative order after them.
fn reorder(items: &mut [Value], order: &[Value]) {
    let position = |item: &Value| {
        order.iter().position(|o| match o {
            Value::Object(keys) => keys.iter().all(|(k, v)| item.get(k) == Some(v)),
            primitive => primitive == item,
        })
    };
    items.sort_by_key(|item| position(item).unwrap_or(usize::MAX));
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PatchError(format!("invalid JSON pointer: {pointer:?}")));
    };
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_and_last<'v>(
    doc: &'v mut Value,
    tokens: &[String],
) -> Result<(&'v mut Value, String), PatchError> {
    let Some((last, parents)) = tokens.split_last() else {
        return Err(PatchError("the root cannot be the target here".into()));
    };
    let mut current = doc;
    for token in parents {
        current = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError(format!("path element {token:?} does not exist")))?;
    }
    Ok((current, last.clone()))
}

fn json_get(doc: &Value, pointer: &str) -> Result<Value, PatchError> {
    doc.pointer(pointer)
        .cloned()
        .ok_or_else(|| PatchError(format!("path {pointer:?} does not exist")))
}

fn json_add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    let tokens = split_pointer(pointer)?;
    if tokens.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_and_last(doc, &tokens)?;
    match parent {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| PatchError(format!("invalid array index {last:?}")))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(PatchError(format!("cannot add at {pointer:?}"))),
    }
}

fn json_remove(doc: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let tokens = split_pointer(pointer)?;
    let (parent, last) = parent_and_last(doc, &tokens)?;
    let removed = match parent {
        Value::Object(map) => map.remove(&last),
        Value::Array(items) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| PatchError(format!("path {pointer:?} does not exist")))
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Some(operations) = patch.as_array() else {
        return Err(PatchError(
            "a JSON patch must be an array of operations".into(),
        ));
    };
    for operation in operations {
        let op = operation.get("op").and_then(Value::as_str).unwrap_or("");
        let path = operation
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError(format!("operation {operation} has no path")))?;
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| PatchError(format!("operation {operation} has no value")))
        };
        let from = || {
            operation
                .get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError(format!("operation {operation} has no from")))
        };
        match op {
            "add" => json_add(target, path, value()?)?,
            "remove" => {
                json_remove(target, path)?;
            }
            "replace" => {
                json_remove(target, path)?;
                json_add(target, path, value()?)?;
            }
            "move" => {
                let moved = json_remove(target, from()?)?;
                json_add(target, path, moved)?;
            }
            "copy" => {
                let copied = json_get(target, from()?)?;
                json_add(target, path, copied)?;
            }
            "test" => {
                if json_get(target, path)? != value()? {
                    return Err(PatchError(format!("test operation failed at {path:?}")));
                }
            }
            other => {
                return Err(PatchError(format!(
                    "unknown JSON patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_patch_merges_service_ports_by_port() {
        let mut svc = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
            {"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 9090}, {"port": 80}],
            "ports": [{"port": 80, "targetPort": 8081}]
        }});
        strategic_merge_patch(&mut svc, &patch, "Service").unwrap();
        assert_eq!(
            svc,
            json!({"spec": {"ports": [
                {"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090},
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8081}
            ]}})
        );
        let delete = json!({"spec": {"ports": [{"port": 9090, "$patch": "delete"}]}});
        strategic_merge_patch(&mut svc, &delete, "Service").unwrap();
        assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn strategic_patch_replaces_atomic_lists_and_drops_directives() {
        let mut slice = json!({"ports": [{"port": 1}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
        let patch =
            json!({"endpoints": [{"addresses": ["10.0.0.2"]}], "$retainKeys": ["endpoints"]});
        strategic_merge_patch(&mut slice, &patch, "EndpointSlice").unwrap();
        assert_eq!(slice, json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}));
    }

    #[test]
    fn strategic_patch_labels_and_finalizers() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"],
            "$deleteFromPrimitiveList/finalizers": ["x"]}});
        strategic_merge_patch(&mut obj, &patch, "Service").unwrap();
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["y"]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "items": [1, 2]});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
            {"op": "add", "path": "/items/-", "value": 3},
            {"op": "remove", "path": "/items/0"},
            {"op": "copy", "from": "/items/0", "path": "/first"},
            {"op": "move", "from": "/first", "path": "/moved"},
            {"op": "test", "path": "/moved", "value": 2}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "9", "b/c": "2"}}, "items": [2, 3], "moved": 2})
        );
        let failing = json!([{"op": "test", "path": "/moved", "value": 5}]);
        assert!(json_patch(&mut doc, &failing).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
