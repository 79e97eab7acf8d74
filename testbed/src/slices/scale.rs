//! Replacing a Service's controller-managed slices in a server, which is what scaling a
//! deployment looks like to a watcher: in place ([`TestApiServer::set_endpoints`]) or over
//! HTTP as a controller would ([`scale`]).

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use super::controller::controller_slices_selector;
use super::{Pod, endpoint_slices};
use crate::apiserver::{ApiClient, Error, TestApiServer};

impl TestApiServer {
    /// Replaces the controller-managed EndpointSlices of the Service `svc` names (by
    /// namespace and name) with those [`endpoint_slices`] makes for `pods` from the Service
    /// as stored in the server: new and changed slices are written, slices no longer produced
    /// are deleted, all under one lock. This is what a watcher sees when a deployment scales.
    /// Returns the stored slices.
    pub fn set_endpoints(&self, svc: &Service, pods: &[Pod]) -> Result<Vec<Value>, Error> {
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let stored =
            self.get("services", &namespace, &name)
                .ok_or_else(|| Error::MissingService {
                    namespace: namespace.clone(),
                    name: name.clone(),
                })?;
        let stored: Service = serde_json::from_value(stored).map_err(Error::Json)?;
        let slices = endpoint_slices(&stored, pods)
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Json)?;
        self.replace_selected(
            "endpointslices",
            &namespace,
            &controller_slices_selector(&name),
            slices,
        )
    }
}

/// Percent-encodes a query parameter value.
pub(super) fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn api_failure(what: String, response: &crate::apiserver::ApiResponse) -> Error {
    Error::Api {
        what,
        status: response.status.as_u16(),
        message: response
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// Over HTTP, as a controller would: reads the Service `namespace/name`, writes the slices
/// [`endpoint_slices`] makes for `pods`, and deletes its controller-managed slices that are
/// no longer produced. Returns the number of slices written.
pub async fn scale(
    client: &ApiClient,
    namespace: &str,
    name: &str,
    pods: &[Pod],
) -> Result<usize, Error> {
    let service_path = format!("/api/v1/namespaces/{namespace}/services/{name}");
    let response = client.get(&service_path).await?;
    if response.status.as_u16() == 404 {
        return Err(Error::MissingService {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    if !response.status.is_success() {
        return Err(api_failure(format!("GET {service_path}"), &response));
    }
    let svc: Service = serde_json::from_value(response.body).map_err(Error::Json)?;
    let slices = endpoint_slices(&svc, pods);
    let collection = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
    let mut written = Vec::new();
    for slice in &slices {
        let body = serde_json::to_value(slice).map_err(Error::Json)?;
        let slice_name = slice.metadata.name.clone().unwrap_or_default();
        let path = format!("{collection}/{slice_name}");
        let mut response = client.put(&path, &body).await?;
        if response.status.as_u16() == 404 {
            response = client.post(&collection, &body).await?;
        }
        if !response.status.is_success() {
            return Err(api_failure(format!("writing {path}"), &response));
        }
        written.push(slice_name);
    }
    let list_path = format!(
        "{collection}?labelSelector={}",
        encode_query(&controller_slices_selector(name))
    );
    let response = client.get(&list_path).await?;
    if !response.status.is_success() {
        return Err(api_failure(format!("GET {list_path}"), &response));
    }
    let existing = response
        .body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in existing {
        let Some(item_name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        if written.iter().any(|w| w == item_name) {
            continue;
        }
        let path = format!("{collection}/{item_name}");
        let response = client.delete(&path).await?;
        // Someone else deleting it first is fine.
        if !response.status.is_success() && response.status.as_u16() != 404 {
            return Err(api_failure(format!("DELETE {path}"), &response));
        }
    }
    Ok(written.len())
}
