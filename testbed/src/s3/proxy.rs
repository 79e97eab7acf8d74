//! The proxy in front of moto: it records every request ([`RecordedRequest`], classified as a
//! [`RequestKind`]), cuts connections while the fixture is down, and refuses SQS calls while
//! they are denied.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What an S3 request did, as far as the tests care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// ListObjects(V2) on the bucket.
    List,
    /// GetObject.
    Get,
    /// HeadObject.
    Head,
    /// PutObject (an object upload, not bucket creation).
    Put,
    /// DeleteObject.
    Delete,
    /// CreateBucket, DeleteBucket and other bucket-level calls.
    Bucket,
    Other,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path as sent (percent-encoded), e.g. `/bucket/prefix/a.traefik.yaml`.
    pub path: String,
    pub query: Option<String>,
    pub kind: RequestKind,
    /// Object key within the bucket (decoded, with the prefix), for object requests.
    pub key: Option<String>,
    /// The status moto answered; `None` when the request was cut (outage) or moto failed.
    pub status: Option<u16>,
    /// The body of an object PUT.
    pub body: Option<Vec<u8>>,
}

impl RecordedRequest {
    /// The request reached moto and got an answer.
    pub fn answered(&self) -> bool {
        self.status.is_some()
    }

    /// Answered with a 2xx status.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub(super) struct ProxyState {
    upstream: hyper::Uri,
    bucket: String,
    client: HttpClient<HttpConnector, Full<Bytes>>,
    pub(super) down: watch::Sender<bool>,
    /// SQS calls are answered with AccessDenied.
    pub(super) sqs_denied: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl ProxyState {
    pub(super) fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        // A test that panicked while holding the lock has failed already; the data is fine.
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(request) = self.requests().get_mut(index) {
            request.status = Some(status);
        }
    }
}

/// Starts the proxy to `upstream` for `bucket` on a free local port, until `stop`.
pub(super) async fn start(
    upstream: hyper::Uri,
    bucket: String,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, Arc<ProxyState>)> {
    let (down, _) = watch::channel(false);
    let proxy = Arc::new(ProxyState {
        upstream,
        bucket,
        client: HttpClient::builder(TokioExecutor::new()).build_http(),
        down,
        sqs_denied: AtomicBool::new(false),
        requests: Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the S3 proxy")?;
    let proxy_addr = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, Arc::clone(&proxy), stop));
    Ok((proxy_addr, proxy))
}

async fn accept_loop(listener: TcpListener, state: Arc<ProxyState>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        if *state.down.borrow() {
            // A reset rather than a clean close, as a dead load balancer would give.
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let state = Arc::clone(&state);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut down = state.down.subscribe();
            let service_state = Arc::clone(&state);
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |request| {
                    forward(Arc::clone(&service_state), request)
                }),
            );
            // Going down cuts the connection, with whatever request is in flight on it.
            tokio::select! {
                _ = connection => {}
                _ = down.wait_for(|down| *down) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Hop-by-hop headers, and those that no longer describe the re-sent (fully read) body.
const DROPPED_REQUEST_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::EXPECT,
];

async fn forward(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let method = parts.method.to_string();
    let is_sqs = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|target| target.starts_with("AmazonSQS"));
    if is_sqs && state.sqs_denied.load(Ordering::SeqCst) {
        return Ok(sqs_access_denied());
    }
    let (kind, key) = classify(&parts.method, &path, query.as_deref(), &state.bucket);
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unreadable request body")),
    };
    let index = {
        let mut requests = state.requests();
        requests.push(RecordedRequest {
            method,
            path: path.clone(),
            query: query.clone(),
            kind,
            key,
            status: None,
            body: (kind == RequestKind::Put).then(|| body.to_vec()),
        });
        requests.len() - 1
    };

    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut uri_parts = state.upstream.clone().into_parts();
    uri_parts.path_and_query = match path_and_query.parse() {
        Ok(pq) => Some(pq),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unparsable path")),
    };
    parts.uri = match hyper::Uri::from_parts(uri_parts) {
        Ok(uri) => uri,
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unparsable URI")),
    };
    for name in &DROPPED_REQUEST_HEADERS {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(body.len()),
    );
    // The Host header is kept as the client sent it: moto does not check signatures, and the
    // request must look exactly as the client built it.
    let upstream_request = Request::from_parts(parts, Full::new(body));
    match state.client.request(upstream_request).await {
        Ok(response) => {
            state.set_status(index, response.status().as_u16());
            Ok(response.map(|b| b.boxed()))
        }
        Err(err) => Ok(plain(
            StatusCode::BAD_GATEWAY,
            &format!("S3 server unreachable: {err}"),
        )),
    }
}

/// SQS's answer to a caller the queue policy no longer admits.
fn sqs_access_denied() -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(
        br#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"Access to the resource is denied."}"#,
    ))
    .map_err(|never| match never {})
    .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(message.to_owned()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// Path-style requests: `/bucket` is a bucket call, `/bucket/key...` an object call.
fn classify(
    method: &hyper::Method,
    path: &str,
    query: Option<&str>,
    bucket: &str,
) -> (RequestKind, Option<String>) {
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    if first != bucket {
        return (RequestKind::Other, None);
    }
    let params: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
        .collect();
    if rest.is_empty() {
        let listing_params = [
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "encoding-type",
            "marker",
            "fetch-owner",
        ];
        let kind =
            if *method == hyper::Method::GET && params.iter().all(|p| listing_params.contains(p)) {
                RequestKind::List
            } else {
                RequestKind::Bucket
            };
        return (kind, None);
    }
    let key = percent_decode(rest);
    // Sub-resources (tagging, acl, multipart parts) are not plain object operations.
    let plain_object = params
        .iter()
        .all(|p| *p == "x-id" || p.starts_with("versionId"));
    let kind = match *method {
        _ if !plain_object => RequestKind::Other,
        hyper::Method::GET => RequestKind::Get,
        hyper::Method::HEAD => RequestKind::Head,
        hyper::Method::PUT => RequestKind::Put,
        hyper::Method::DELETE => RequestKind::Delete,
        _ => RequestKind::Other,
    };
    (kind, Some(key))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
