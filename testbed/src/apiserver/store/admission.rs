//! What the server checks and fills in on a write: types, namespaces, names, the
//! validation consumers trip over, and the defaults they read back.

use super::Store;
use crate::apiserver::resources::{ENDPOINT_SLICES, NAMESPACES, ResourceType, SERVICES};
use crate::apiserver::status::ApiError;
use serde_json::{Map, Value, json};

/// Fills in `kind` and `apiVersion`, rejecting a body of another type.
pub(super) fn check_type(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    }
    let api_version = rt.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    Ok(())
}

/// The namespace an object is written to: the request's, which the body must agree with.
pub(super) fn object_namespace(
    rt: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<String, ApiError> {
    if !rt.namespaced {
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("namespace");
        }
        return Ok(String::new());
    }
    let in_body = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let namespace = match (namespace, in_body) {
        (Some(path), Some(body)) if path != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(path), _) => path.to_owned(),
        (None, Some(body)) => body,
        (None, None) => return Err(ApiError::bad_request("a namespace is required")),
    };
    object["metadata"]["namespace"] = json!(namespace);
    Ok(namespace)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// The validation the consumers of this server can trip over; the real server checks much
/// more.
pub(super) fn validate(rt: &ResourceType, name: &str, object: &Value) -> Result<(), ApiError> {
    if !valid_name(name) {
        return Err(ApiError::invalid(
            rt,
            name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if let Some(labels) = object.pointer("/metadata/labels") {
        let all_strings = labels
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !labels.is_null() && !all_strings {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.labels: Invalid value: label values must be strings",
            ));
        }
    }
    match rt.index {
        SERVICES => {
            let ports = object.pointer("/spec/ports").and_then(Value::as_array);
            for (i, port) in ports.into_iter().flatten().enumerate() {
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "spec.ports[{i}].port: Invalid value: {number}: must be between 1 and 65535, inclusive"
                        ),
                    ));
                }
            }
        }
        ENDPOINT_SLICES => {
            match object.get("addressType").and_then(Value::as_str) {
                Some("IPv4" | "IPv6" | "FQDN") => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "addressType: Unsupported value: \"{other}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
                        ),
                    ));
                }
                None => return Err(ApiError::invalid(rt, name, "addressType: Required value")),
            }
            let endpoints = object.get("endpoints").and_then(Value::as_array);
            if endpoints.is_some_and(|e| e.len() > 1000) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "endpoints: Too many: must have at most 1000 items",
                ));
            }
            for (i, endpoint) in endpoints.into_iter().flatten().enumerate() {
                let addresses = endpoint.get("addresses").and_then(Value::as_array);
                if addresses.is_none_or(|a| a.is_empty() || a.len() > 100) {
                    return Err(ApiError::invalid(
                        rt,
                        name,
                        format!(
                            "endpoints[{i}].addresses: Required value: must contain at least 1 address"
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The defaults the real server applies that consumers read back.
pub(super) fn default_object(rt: &ResourceType, name: &str, object: &mut Value, store: &mut Store) {
    match rt.index {
        NAMESPACES => {
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if object.pointer("/spec/finalizers").is_none() {
                object["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if object.pointer("/status/phase").is_none() {
                object["status"]["phase"] = json!("Active");
            }
        }
        SERVICES => default_service(object, store),
        ENDPOINT_SLICES => {
            if let Some(ports) = object.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    if port.get("protocol").is_none() {
                        port["protocol"] = json!("TCP");
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_service(object: &mut Value, store: &mut Store) {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    if spec.get("type").is_none() {
        spec["type"] = json!("ClusterIP");
    }
    if spec.get("sessionAffinity").is_none() {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("protocol").is_none() {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none() {
                port["targetPort"] = port.get("port").cloned().unwrap_or(Value::Null);
            }
        }
    }
    if spec["type"] == "ExternalName" {
        return;
    }
    if spec.get("internalTrafficPolicy").is_none() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    let (families, policy) = ip_families(spec);
    spec["ipFamilyPolicy"] = json!(policy);
    spec["ipFamilies"] = json!(families);
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if cluster_ip == "None" {
        spec["clusterIPs"] = json!(["None"]);
    } else if spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_none_or(|ips| ips.len() < families.len())
    {
        let mut ips: Vec<String> = Vec::new();
        for (i, family) in families.iter().enumerate() {
            if i == 0 && !cluster_ip.is_empty() {
                ips.push(cluster_ip.clone());
            } else {
                ips.push(store.allocate_ip(family));
            }
        }
        spec["clusterIP"] = json!(ips[0]);
        spec["clusterIPs"] = json!(ips);
    }
    if object.get("status").is_none() {
        object["status"] = json!({"loadBalancer": {}});
    }
}

/// The IP families and family policy of a Service's spec, defaulted as on a dual-stack
/// cluster: a Service that prefers or requires both families gets both.
fn ip_families(spec: &Value) -> (Vec<String>, String) {
    let mut families: Vec<String> = spec
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if families.is_empty() {
        families.push("IPv4".to_owned());
    }
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if families.len() > 1 {
                "RequireDualStack".to_owned()
            } else {
                "SingleStack".to_owned()
            }
        });
    if policy != "SingleStack" && families.len() == 1 {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(other.to_owned());
    }
    (families, policy)
}

/// ClusterIPs are immutable; an update that omits them keeps the allocated ones.
pub(super) fn keep_allocated_ips(current: &Value, object: &mut Value) {
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = object
            .pointer(&format!("/spec/{field}"))
            .is_none_or(|v| v.is_null() || v == "");
        if missing && let Some(value) = current.pointer(&format!("/spec/{field}")) {
            if !object.get("spec").is_some_and(Value::is_object) {
                object["spec"] = json!({});
            }
            object["spec"][field] = value.clone();
        }
    }
}

/// Whether anything besides metadata and status differs: what bumps `generation`.
pub(super) fn content_differs(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(a) != strip(b)
}
