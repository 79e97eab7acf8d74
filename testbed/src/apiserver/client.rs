//! A small HTTP client for the API server double: what the `ksd-testbed scale` command and
//! tests that look at raw responses (status codes, watch lines) need, without a Kubernetes
//! client in between.

use super::Error;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::Path;

/// A plain-HTTP client bound to one server URL.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// A response with its JSON body (`Value::Null` when the body is not JSON).
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Value,
}

impl ApiClient {
    /// A client for `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client for the server of a kubeconfig's current context.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let config: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|source| Error::ParseYaml {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |why: &str| Error::Kubeconfig {
            path: path.to_owned(),
            reason: why.to_owned(),
        };
        let current = config
            .get("current-context")
            .and_then(serde_yaml::Value::as_str)
            .ok_or_else(|| invalid("no current-context"))?;
        let named = |list: &str, name: &str| {
            config
                .get(list)
                .and_then(serde_yaml::Value::as_sequence)
                .and_then(|items| {
                    items
                        .iter()
                        .find(|i| i.get("name").and_then(serde_yaml::Value::as_str) == Some(name))
                })
                .cloned()
        };
        let context =
            named("contexts", current).ok_or_else(|| invalid("current context not found"))?;
        let cluster_name = context
            .get("context")
            .and_then(|c| c.get("cluster"))
            .and_then(serde_yaml::Value::as_str)
            .ok_or_else(|| invalid("context has no cluster"))?;
        let cluster =
            named("clusters", cluster_name).ok_or_else(|| invalid("cluster not found"))?;
        let server = cluster
            .get("cluster")
            .and_then(|c| c.get("server"))
            .and_then(serde_yaml::Value::as_str)
            .ok_or_else(|| invalid("cluster has no server"))?;
        Ok(Self::new(server))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/json");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Http {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        self.http.request(request).await.map_err(|e| Error::Http {
            url,
            reason: e.to_string(),
        })
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<ApiResponse, Error> {
        let bytes = match body {
            Some(body) => serde_json::to_vec(body).map_err(Error::Json)?,
            None => Vec::new(),
        };
        let response = self.send(method, path, content_type, bytes).await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Http {
                url: format!("{}{path}", self.base),
                reason: e.to_string(),
            })?
            .to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(ApiResponse {
            status,
            content_type,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<ApiResponse, Error> {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<ApiResponse, Error> {
        self.request(Method::POST, path, Some("application/json"), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<ApiResponse, Error> {
        self.request(Method::PUT, path, Some("application/json"), Some(body))
            .await
    }

    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<ApiResponse, Error> {
        self.request(Method::PATCH, path, Some(content_type), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<ApiResponse, Error> {
        self.request(Method::DELETE, path, None, None).await
    }

    /// Opens a watch (`path` carries the query, `watch=true` included) and returns its status
    /// and its events as they arrive.
    pub async fn watch(&self, path: &str) -> Result<(StatusCode, WatchEvents), Error> {
        let response = self.send(Method::GET, path, None, Vec::new()).await?;
        let status = response.status();
        Ok((
            status,
            WatchEvents {
                body: response.into_body(),
                buffer: Vec::new(),
            },
        ))
    }
}

/// The events of one watch response, one JSON document a line.
#[derive(Debug)]
pub struct WatchEvents {
    body: Incoming,
    buffer: Vec<u8>,
}

/// How a watch stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The server finished the response properly.
    Closed,
    /// The connection broke mid-response.
    Broken(String),
}

impl WatchEvents {
    /// The next event, or how the stream ended.
    pub async fn next(&mut self) -> Result<Value, WatchEnd> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map_err(|e| WatchEnd::Broken(format!("not a JSON line: {e}")));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(WatchEnd::Broken(e.to_string())),
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => {
                    return Err(WatchEnd::Closed);
                }
                None => return Err(WatchEnd::Broken("the stream ended mid-line".into())),
            }
        }
    }
}
