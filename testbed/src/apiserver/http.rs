//! The HTTP face of the server: routing, discovery, CRUD, list and watch, fault injection.

use super::Shared;
use super::represent::{self, Representation};
use super::resources::{self, ResourceType, View};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{
    Change, DeleteOptions, Filter, ListQuery, PatchKind, Propagation, Target, WatchStart,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The largest request body accepted; generous, as a test may write very large objects.
const BODY_LIMIT: usize = 256 << 20;

/// Watch output is gathered into chunks of about this size before it is sent.
const CHUNK: usize = 64 << 10;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    json_bytes(code, body)
}

fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response {
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(code, &error.status());
    if error.code == 429 {
        // The real server tells throttled clients when to come back.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    debug!(%method, %uri, "request");
    if let Some(code) = shared.faults.take_failure() {
        return error_response(&ApiError::injected(code));
    }
    let stall = shared.faults.stall();
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    match route(&shared, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => {
            debug!(%method, %uri, %error, "request refused");
            error_response(&error)
        }
    }
}

enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiV3Index,
    OpenApiV3(String),
    Collection {
        rt: &'static ResourceType,
        namespace: Option<String>,
        /// `/watch/...` paths and watches on one object.
        watch_name: Option<Option<String>>,
    },
    Object {
        rt: &'static ResourceType,
        namespace: Option<String>,
        name: String,
        status: bool,
    },
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["api", version] => Some(Route::Resources(String::new(), (*version).to_owned())),
        ["apis", group] => Some(Route::Group((*group).to_owned())),
        ["apis", group, version] => {
            Some(Route::Resources((*group).to_owned(), (*version).to_owned()))
        }
        ["openapi", "v3"] => Some(Route::OpenApiV3Index),
        ["openapi", "v3", rest @ ..] => Some(Route::OpenApiV3(rest.join("/"))),
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => None,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let namespaced =
        |plural: &str| resources::at_path(group, version, plural).filter(|r| r.namespaced);
    let cluster =
        |plural: &str| resources::at_path(group, version, plural).filter(|r| !r.namespaced);
    let route = match rest {
        [plural] => Route::Collection {
            rt: resources::at_path(group, version, plural)?,
            namespace: None,
            watch_name: watch.then_some(None),
        },
        ["namespaces", ns, plural] if namespaced(plural).is_some() => Route::Collection {
            rt: namespaced(plural)?,
            namespace: Some((*ns).to_owned()),
            watch_name: watch.then_some(None),
        },
        ["namespaces", ns, plural, name] if namespaced(plural).is_some() => {
            let rt = namespaced(plural)?;
            if watch {
                Route::Collection {
                    rt,
                    namespace: Some((*ns).to_owned()),
                    watch_name: Some(Some((*name).to_owned())),
                }
            } else {
                Route::Object {
                    rt,
                    namespace: Some((*ns).to_owned()),
                    name: (*name).to_owned(),
                    status: false,
                }
            }
        }
        ["namespaces", ns, plural, name, "status"] if !watch => Route::Object {
            rt: namespaced(plural)?
                .has_status
                .then(|| namespaced(plural))??,
            namespace: Some((*ns).to_owned()),
            name: (*name).to_owned(),
            status: true,
        },
        [plural, name] => {
            let rt = cluster(plural)?;
            if watch {
                Route::Collection {
                    rt,
                    namespace: None,
                    watch_name: Some(Some((*name).to_owned())),
                }
            } else {
                Route::Object {
                    rt,
                    namespace: None,
                    name: (*name).to_owned(),
                    status: false,
                }
            }
        }
        [plural, name, "status"] if !watch => Route::Object {
            rt: cluster(plural)?.has_status.then(|| cluster(plural))??,
            namespace: None,
            name: (*name).to_owned(),
            status: true,
        },
        _ => return None,
    };
    Some(route)
}

type Params = HashMap<String, String>;

fn params_of(uri: &Uri) -> Result<Params, ApiError> {
    Query::<Params>::try_from_uri(uri)
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

fn param<'p>(params: &'p Params, name: &str) -> Option<&'p str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn is_true(params: &Params, name: &str) -> bool {
    matches!(param(params, name), Some("true" | "1"))
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let route = parse_route(uri.path()).ok_or_else(ApiError::no_route)?;
    let params = params_of(uri)?;
    let get_only = |value: Option<Value>| {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        value
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route)
    };
    match route {
        Route::Version => get_only(Some(resources::version_document())),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        // NB: kubectl asks for aggregated discovery (`as=APIGroupDiscoveryList`) first; a plain
        // `application/json` answer makes it fall back to these legacy documents.
        Route::CoreVersions => get_only(Some(resources::core_versions(&shared.server_address()))),
        Route::Groups => get_only(Some(resources::group_list())),
        Route::Group(group) => get_only(resources::group(&group)),
        Route::Resources(group, version) => get_only(resources::resource_list(&group, &version)),
        Route::OpenApiV3Index => get_only(Some(resources::openapi_v3_index())),
        Route::OpenApiV3(path) => get_only(resources::openapi_v3_document(&path)),
        Route::Collection {
            rt,
            namespace,
            watch_name,
        } => collection(
            shared, method, rt, namespace, watch_name, &params, headers, body,
        ),
        Route::Object {
            rt,
            namespace,
            name,
            status,
        } => {
            let target = if status { Target::Status } else { Target::Main };
            let request = ObjectRequest {
                rt,
                namespace: namespace.as_deref(),
                name: &name,
                target,
                dry_run: param(&params, "dryRun") == Some("All"),
            };
            object(shared, method, &request, &params, headers, body)
        }
    }
}

/// A request to a collection: list, watch, create, deletecollection.
#[allow(clippy::too_many_arguments)]
fn collection(
    shared: &Arc<Shared>,
    method: &Method,
    rt: &'static ResourceType,
    namespace: Option<String>,
    watch_name: Option<Option<String>>,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let filter = filter_of(rt, namespace, params, watch_name.clone().flatten())?;
    let dry_run = param(params, "dryRun") == Some("All");
    match *method {
        Method::GET if watch_name.is_some() || is_true(params, "watch") => {
            watch(shared, filter, params, represent::negotiate(headers))
        }
        Method::GET => list(shared, filter, params, represent::negotiate(headers)),
        Method::POST => {
            if rt.namespaced && filter.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            // A view's body is converted to the stored type and written as that.
            let object = rt.to_stored(parse_body(headers, body)?);
            let created =
                shared
                    .store()
                    .create(rt.stored(), filter.namespace.as_deref(), object, dry_run)?;
            Ok(json_response(StatusCode::CREATED, &rt.present(&created)))
        }
        Method::DELETE => {
            let options = delete_options(params, body)?;
            let deleted = shared.store().delete_collection(&filter, &options, dry_run);
            let rv = shared.store().resource_version();
            let body = Representation::Object.list(rt, rv, &deleted, None, None);
            Ok(json_bytes(StatusCode::OK, body))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The object a request names.
struct ObjectRequest<'r> {
    rt: &'static ResourceType,
    namespace: Option<&'r str>,
    name: &'r str,
    target: Target,
    dry_run: bool,
}

/// A request to one object: get, update, patch, delete.
fn object(
    shared: &Arc<Shared>,
    method: &Method,
    request: &ObjectRequest<'_>,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ObjectRequest {
        rt,
        namespace: ns,
        name,
        target,
        dry_run,
    } = *request;
    match *method {
        Method::GET => {
            let object = shared
                .store()
                .get(rt, ns.unwrap_or(""), name)
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            let object = represent::negotiate(headers).object(rt, &object);
            Ok(json_response(StatusCode::OK, &object))
        }
        Method::PUT => {
            let object = rt.to_stored(parse_body(headers, body)?);
            let updated = shared
                .store()
                .update(rt.stored(), ns, name, object, target, dry_run)?;
            Ok(json_response(StatusCode::OK, &rt.present(&updated)))
        }
        // Patches apply to the stored form; a view is written through its stored type.
        Method::PATCH if rt.view == View::Stored => {
            let kind = patch_kind(headers, params)?;
            let patch = if kind == PatchKind::Apply {
                parse_yaml(body)?
            } else {
                parse_json(body)?
            };
            let (object, created) = shared
                .store()
                .patch(rt, ns, name, kind, &patch, target, dry_run)?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &object))
        }
        Method::DELETE if target != Target::Status => {
            let options = delete_options(params, body)?;
            let deleted = shared.store().delete(rt, ns, name, &options, dry_run)?;
            Ok(json_response(StatusCode::OK, &rt.present(&deleted)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The kind of a PATCH from its content type.
fn patch_kind(headers: &HeaderMap, params: &Params) -> Result<PatchKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let kind = match media {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchKind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if kind == PatchKind::Apply && param(params, "fieldManager").is_none() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    Ok(kind)
}

fn filter_of(
    rt: &'static ResourceType,
    namespace: Option<String>,
    params: &Params,
    name: Option<String>,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(param(params, "labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.0))?;
    let mut field_text = param(params, "fieldSelector").unwrap_or("").to_owned();
    if let Some(name) = name {
        if !field_text.is_empty() {
            field_text.push(',');
        }
        field_text.push_str(&format!("metadata.name={name}"));
    }
    let fields = FieldSelector::parse(&field_text, rt.field_labels)
        .map_err(|e| ApiError::bad_request(e.0))?;
    Ok(Filter {
        resource: rt,
        namespace,
        labels,
        fields,
    })
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn parse_yaml(body: &Bytes) -> Result<Value, ApiError> {
    let yaml: serde_yaml::Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))?;
    serde_json::to_value(yaml)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON document: {e}")))
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    if yaml {
        parse_yaml(body)
    } else {
        parse_json(body)
    }
}

fn delete_options(params: &Params, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        parse_json(body)?
    };
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let policy = text("/propagationPolicy")
        .or_else(|| param(params, "propagationPolicy").map(str::to_owned));
    let orphan = policy.as_deref() == Some("Orphan")
        || body.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    Ok(DeleteOptions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        propagation: if orphan {
            Propagation::Orphan
        } else {
            Propagation::Cascade
        },
    })
}

fn list(
    shared: &Arc<Shared>,
    filter: Filter,
    params: &Params,
    representation: Representation,
) -> Result<Response, ApiError> {
    shared.counters.lists.fetch_add(1, Ordering::Relaxed);
    let limit = match param(params, "limit") {
        Some(limit) => Some(
            limit
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        ),
        None => None,
    };
    let rt = filter.resource;
    let query = ListQuery {
        filter,
        limit,
        continue_token: param(params, "continue").map(str::to_owned),
    };
    let page = shared.store().list(&query)?;
    let body = representation.list(
        rt,
        page.rv,
        &page.items,
        page.continue_token,
        page.remaining,
    );
    Ok(json_bytes(StatusCode::OK, body))
}

fn watch(
    shared: &Arc<Shared>,
    filter: Filter,
    params: &Params,
    representation: Representation,
) -> Result<Response, ApiError> {
    let bookmarks = is_true(params, "allowWatchBookmarks");
    let send_initial = is_true(params, "sendInitialEvents");
    if send_initial {
        if param(params, "resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::new(
                422,
                "Invalid",
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !bookmarks {
            return Err(ApiError::new(
                422,
                "Invalid",
                "allowWatchBookmarks: Required value: sendInitialEvents requires allowWatchBookmarks to be true",
            ));
        }
    }
    let from = match param(params, "resourceVersion") {
        _ if send_initial => None,
        None | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}"))
        })?),
    };
    let timeout = match param(params, "timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds: Invalid value: {t:?}"))
        })?)),
        None => None,
    };
    let (start, synced, events) = shared.store().start_watch(&filter, from);
    let cut = shared.watch_cut();
    shared.counters.watches.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let task = WatchTask {
        shared: shared.clone(),
        filter,
        tx,
        cut,
        buffer: Vec::with_capacity(CHUNK),
        synced,
        bookmarks,
        representation,
    };
    tokio::spawn(task.run(start, events, send_initial, timeout));
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// One open watch: writes newline-delimited events into the response body.
struct WatchTask {
    shared: Arc<Shared>,
    filter: Filter,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    cut: CancellationToken,
    buffer: Vec<u8>,
    /// The resourceVersion every event up to which this watch has seen; bookmarks carry it.
    synced: u64,
    bookmarks: bool,
    representation: Representation,
}

/// Why a watch stops writing.
enum Stop {
    /// The client went away, or the watch ended normally.
    Closed,
    /// `drop_watches()` or `stop()`: end the body with an error, as a broken connection.
    Cut,
}

struct ActiveWatch(Arc<Shared>);

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.0
            .counters
            .active_watches
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl WatchTask {
    async fn run(
        mut self,
        start: WatchStart,
        events: broadcast::Receiver<Arc<Change>>,
        send_initial: bool,
        timeout: Option<Duration>,
    ) {
        self.shared
            .counters
            .active_watches
            .fetch_add(1, Ordering::Relaxed);
        let _active = ActiveWatch(self.shared.clone());
        let deadline = timeout.map(|t| Instant::now() + t);
        let outcome = self.stream(start, events, send_initial, deadline).await;
        if let Err(Stop::Cut) = outcome {
            let abort = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "watch cut");
            // The body may be full and unread; the connection is going away regardless.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(Err(abort))).await;
        }
    }

    async fn stream(
        &mut self,
        start: WatchStart,
        mut events: broadcast::Receiver<Arc<Change>>,
        send_initial: bool,
        deadline: Option<Instant>,
    ) -> Result<(), Stop> {
        match start {
            WatchStart::Expired { requested, oldest } => {
                // The real server accepts the watch and then reports the expiry as an event.
                let status =
                    ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
                        .status();
                self.write("ERROR", &status);
                return self.flush().await;
            }
            WatchStart::Initial(objects) => {
                for object in objects {
                    self.write_object("ADDED", &object);
                    if self.buffer.len() >= CHUNK {
                        self.flush().await?;
                    }
                }
            }
            WatchStart::Replay(changes) => {
                for change in changes {
                    if let Some((kind, object)) = self.filter.event(&change) {
                        self.write_object(kind, &object);
                    }
                    if self.buffer.len() >= CHUNK {
                        self.flush().await?;
                    }
                }
            }
        }
        if send_initial {
            self.write_bookmark(true);
        }
        self.flush().await?;
        let interval = self.shared.bookmark_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        let cut = self.cut.clone();
        loop {
            tokio::select! {
                biased;
                () = cut.cancelled() => return Err(Stop::Cut),
                () = self.tx.closed() => return Err(Stop::Closed),
                () = sleep_until(deadline) => {
                    if self.bookmarks {
                        self.drain(&mut events)?;
                        self.write_bookmark(false);
                    }
                    return self.flush().await;
                }
                received = events.recv() => {
                    match received {
                        Ok(change) => self.apply(&change),
                        // A watcher that cannot keep up is closed, as the real server does;
                        // the client resumes from the last resourceVersion it saw.
                        Err(_) => return self.flush().await,
                    }
                    self.drain(&mut events)?;
                    self.flush().await?;
                }
                _ = ticker.tick(), if self.bookmarks => {
                    self.drain(&mut events)?;
                    self.write_bookmark(false);
                    self.flush().await?;
                }
            }
        }
    }

    fn apply(&mut self, change: &Change) {
        self.synced = self.synced.max(change.rv);
        if let Some((kind, object)) = self.filter.event(change) {
            self.write_object(kind, &object);
        }
    }

    /// An object event in the representation the client asked for.
    fn write_object(&mut self, kind: &str, object: &Value) {
        match self.representation {
            Representation::Object => {
                let presented = self.filter.resource.present(object);
                self.write(kind, &presented);
            }
            other => {
                let converted = other.object(self.filter.resource, object);
                self.write(kind, &converted);
            }
        }
    }

    /// Takes every change already delivered, so a bookmark never claims a resourceVersion
    /// whose events are still unsent.
    fn drain(&mut self, events: &mut broadcast::Receiver<Arc<Change>>) -> Result<(), Stop> {
        loop {
            match events.try_recv() {
                Ok(change) => self.apply(&change),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(()),
                Err(_) => return Err(Stop::Closed),
            }
        }
    }

    fn write(&mut self, kind: &str, object: &Value) {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            object: &'a Value,
        }
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buffer, &Event { kind, object });
        self.buffer.push(b'\n');
    }

    fn write_bookmark(&mut self, initial_events_end: bool) {
        let rt = self.filter.resource;
        let mut metadata = json!({"resourceVersion": self.synced.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let bookmark =
            json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata});
        self.write("BOOKMARK", &bookmark);
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.buffer.reserve(CHUNK);
        tokio::select! {
            sent = self.tx.send(Ok(chunk)) => sent.map_err(|_| Stop::Closed),
            () = self.cut.cancelled() => Err(Stop::Cut),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
