//! A Kubernetes API server double that kube-rs and the real `kubectl` talk to over plain HTTP.
//!
//! [`TestApiServer`] serves `v1` namespaces and services, `discovery.k8s.io/v1` endpointslices,
//! `coordination.k8s.io/v1` leases and `events.k8s.io/v1` events from memory, and core `v1`
//! events as a view of the latter (converted as the real server converts them, with the
//! `involvedObject.*` field selectors `kubectl describe` sends; written through the view, an
//! event is stored converted; patches go through `events.k8s.io`), with the behaviour clients
//! rely on:
//!
//! - discovery (`/version`, `/api`, `/apis`, resource lists); aggregated discovery is not
//!   offered, so clients fall back to the legacy documents; `/openapi/v3` serves documents
//!   without schemas that only tell kubectl to leave field validation to the server, and
//!   `/openapi/v2` answers 404;
//! - get, list (label and field selectors, `limit`/`continue` over a consistent snapshot),
//!   create, update (optimistic concurrency on `metadata.resourceVersion`), patch, delete,
//!   deletecollection, the `status` subresource, `dryRun=All`;
//! - watch with the real server's `resourceVersion` semantics: initial ADDED events for an
//!   unset or `"0"` version, replay after a given version, an `ERROR` event with a 410
//!   `Expired` status for a version older than the retained history, bookmarks, streaming
//!   lists (`sendInitialEvents`), `timeoutSeconds`, and selector filtering that turns an object
//!   leaving the selection into a DELETED event;
//! - faults a test injects: [`TestApiServer::drop_watches`], [`TestApiServer::fail_next`],
//!   [`TestApiServer::stall`], [`TestApiServer::compact`], [`TestApiServer::stop`] and
//!   [`TestApiServer::restart`] on the same port with the same state.
//!
//! Patches: `application/merge-patch+json` is RFC 7386 and `application/json-patch+json`
//! RFC 6902. `application/strategic-merge-patch+json` is a merge patch that also merges the
//! keyed lists of these resources (Service ports by `port`, owner references by `uid`) and
//! honours the `$patch`/`$retainKeys`/`$setElementOrder`/`$deleteFromPrimitiveList`
//! directives. `application/apply-patch+yaml` (server-side apply) creates a missing object
//! and merge-patches an existing one: there is no field ownership, so a field an applier drops
//! from its configuration stays.
//!
//! Deviations a consumer could notice: namespaces come into existence on first write into
//! them; deleting an object deletes at once the objects whose only owner it was (the garbage
//! collector does that a moment later); `managedFields` are not kept; list items leave out
//! `kind` and `apiVersion`, as the real server's JSON does.

mod client;
mod events;
mod http;
mod patch;
mod represent;
mod resources;
mod selector;
mod status;
mod store;

pub use client::{ApiClient, ApiResponse, WatchEnd, WatchEvents};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use status::ApiError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use store::{Filter, Limits, Store};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What can go wrong setting up or driving the server from a test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a directory for the kubeconfig")]
    TempDir(#[source] std::io::Error),
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML")]
    ParseYaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("a YAML document is not a Kubernetes object")]
    ParseDocument(#[source] serde_yaml::Error),
    #[error("{path} is not a usable kubeconfig: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("cannot convert an object to or from JSON")]
    Json(#[source] serde_json::Error),
    #[error("the object was rejected: {code} {reason}: {message}")]
    Rejected {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("request to {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("{what} answered {status}: {message}")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    #[error("the Service {namespace}/{name} does not exist")]
    MissingService { namespace: String, name: String },
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Rejected {
            code: e.code,
            reason: e.reason.to_owned(),
            message: e.message,
        }
    }
}

/// How the server is started.
#[derive(Clone, Debug)]
pub struct ApiServerOptions {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often open watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Changes kept for watches to resume from; older resourceVersions get 410, as after an
    /// etcd compaction.
    pub history_limit: usize,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            history_limit: 20_000,
        }
    }
}

impl ApiServerOptions {
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    pub fn history_limit(mut self, changes: usize) -> Self {
        self.history_limit = changes;
        self
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) watches: AtomicU64,
    pub(crate) lists: AtomicU64,
    pub(crate) active_watches: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct Faults {
    failures_left: AtomicUsize,
    failure_status: AtomicU16,
    stall_millis: AtomicU64,
}

impl Faults {
    /// The status to fail this request with, if a failure is pending.
    pub(crate) fn take_failure(&self) -> Option<u16> {
        self.failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| self.failure_status.load(Ordering::SeqCst))
    }

    pub(crate) fn stall(&self) -> Duration {
        Duration::from_millis(self.stall_millis.load(Ordering::Relaxed))
    }
}

/// State shared by the HTTP handlers, watch tasks and the test-facing handle.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) faults: Faults,
    pub(crate) counters: Counters,
    /// Cancelled to cut every open watch; replaced by a fresh token for later watches.
    watch_cut: Mutex<CancellationToken>,
    pub(crate) bookmark_interval: Duration,
    addr: SocketAddr,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-written, so a panic elsewhere
    // must not take the server down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub(crate) fn watch_cut(&self) -> CancellationToken {
        lock(&self.watch_cut).clone()
    }

    fn cut_watches(&self) {
        let old = std::mem::replace(&mut *lock(&self.watch_cut), CancellationToken::new());
        old.cancel();
    }

    pub(crate) fn server_address(&self) -> String {
        self.addr.to_string()
    }
}

struct Serving {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// The API server double, listening on 127.0.0.1 until dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), ksd_testbed::apiserver::Error> {
/// use ksd_testbed::apiserver::TestApiServer;
/// use ksd_testbed::slices::{Pod, service};
///
/// let server = TestApiServer::start().await?;
/// let web = service("shop", "web").label("k8s-service-discovery", "true").port("http", 80, 8080).build();
/// server.apply_typed(&web)?;
/// server.set_endpoints(&web, &[Pod::ready("web-0", "10.1.0.1")])?;
/// // point a client at server.kubeconfig_path()
/// # Ok(()) }
/// ```
pub struct TestApiServer {
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    _dir: TempDir,
    serving: Mutex<Option<Serving>>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listen_error = |source| Error::Listen { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(listen_error)?;
    // A restart binds the port it just closed; connections of the previous run may still
    // be in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(listen_error)?;
    socket.bind(addr).map_err(listen_error)?;
    socket.listen(1024).map_err(listen_error)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let router = http::router(shared);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let connection = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(error) = connection.await {
                            debug!(%error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Dropping a connection's task closes its socket: clients see the connection reset.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

impl TestApiServer {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(ApiServerOptions::default()).await
    }

    /// Starts a server with the given options.
    pub async fn start_with(options: ApiServerOptions) -> Result<Self, Error> {
        let listener = bind(options.listen).await?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(Limits {
                history: options.history_limit,
                snapshots: 64,
                broadcast: 16_384,
            })),
            faults: Faults::default(),
            counters: Counters::default(),
            watch_cut: Mutex::new(CancellationToken::new()),
            bookmark_interval: options.bookmark_interval.max(Duration::from_millis(10)),
            addr,
        });
        let dir = tempfile::Builder::new()
            .prefix("ksd-apiserver-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let kubeconfig = dir.path().join("kubeconfig");
        let server = Self {
            shared,
            kubeconfig,
            _dir: dir,
            serving: Mutex::new(None),
        };
        server.write_kubeconfig(&server.kubeconfig)?;
        server.serve_on(listener);
        Ok(server)
    }

    fn serve_on(&self, listener: TcpListener) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, self.shared.clone(), shutdown.clone()));
        *lock(&self.serving) = Some(Serving { shutdown, task });
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig for this server: current context with namespace `default` and a user
    /// with a placeholder token. The file lives as long as the server.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig's text.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: ksd-testbed\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: ksd-testbed\n  user:\n    token: ksd-testbed-token\n\
             contexts:\n\
             - name: ksd-testbed\n  context:\n    cluster: ksd-testbed\n    user: ksd-testbed\n    namespace: default\n\
             current-context: ksd-testbed\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes the kubeconfig to another path as well, atomically (a reader polling for the
    /// file never sees it half-written).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let failed = |source| Error::WriteFile {
            path: path.to_owned(),
            source,
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, self.kubeconfig_yaml()).map_err(failed)?;
        std::fs::rename(&partial, path).map_err(failed)
    }

    /// A raw HTTP client for this server.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.url())
    }

    /// Creates or replaces an object by kind, namespace (default `default`) and name, as a
    /// controller would write it: no resourceVersion precondition, status as given. Returns
    /// the stored object. Writing identical content changes nothing.
    pub fn apply(&self, object: Value) -> Result<Value, Error> {
        Ok((*self.shared.store().put(object)?).clone())
    }

    /// [`Self::apply`] for a typed object (k8s-openapi types carry their kind and apiVersion).
    pub fn apply_typed<T: serde::Serialize>(&self, object: &T) -> Result<Value, Error> {
        self.apply(serde_json::to_value(object).map_err(Error::Json)?)
    }

    /// Applies every object of a multi-document YAML text (a `kind: List` is unpacked).
    /// Returns the stored objects.
    pub fn apply_yaml(&self, text: &str) -> Result<Vec<Value>, Error> {
        let mut applied = Vec::new();
        for document in serde_yaml::Deserializer::from_str(text) {
            let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
                .map_err(Error::ParseDocument)?;
            if yaml.is_null() {
                continue;
            }
            let object = serde_json::to_value(yaml).map_err(Error::Json)?;
            let items = match object.get("items").and_then(Value::as_array) {
                Some(items)
                    if object
                        .get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
                {
                    items.clone()
                }
                _ => vec![object],
            };
            for item in items {
                applied.push(self.apply(item)?);
            }
        }
        Ok(applied)
    }

    /// [`Self::apply_yaml`] for a file.
    pub fn apply_file(&self, path: &Path) -> Result<Vec<Value>, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        self.apply_yaml(&text)
    }

    /// Replaces the set of `resource` objects in `namespace` that `label_selector` selects
    /// with `objects`: each is applied, and the selected objects not among them are deleted,
    /// all under one lock, so no client sees a mix of the old and the new set in between.
    pub fn replace_selected(
        &self,
        resource: &str,
        namespace: &str,
        label_selector: &str,
        objects: Vec<Value>,
    ) -> Result<Vec<Value>, Error> {
        let rt = resource_type(resource);
        let labels = selector::LabelSelector::parse(label_selector)
            .map_err(|e| Error::from(ApiError::bad_request(e.0)))?;
        let mut store = self.shared.store();
        let mut kept = Vec::new();
        let mut stored = Vec::new();
        for object in objects {
            let object = store.put(object)?;
            kept.push(object["metadata"]["name"].as_str().unwrap_or("").to_owned());
            stored.push((*object).clone());
        }
        let filter = Filter {
            namespace: rt.namespaced.then(|| namespace.to_owned()),
            labels,
            ..Filter::all(rt)
        };
        let query = store::ListQuery {
            filter,
            limit: None,
            continue_token: None,
        };
        let existing = store.list(&query)?;
        for object in existing.items {
            let name = object["metadata"]["name"].as_str().unwrap_or("");
            if !kept.iter().any(|k| k == name) {
                store.remove(rt, namespace, name);
            }
        }
        Ok(stored)
    }

    /// Deletes an object (cascading to what it solely owns). `resource` is a plural, singular,
    /// kind or short name (`svc`, `Service`, `endpointslices`); `namespace` is ignored for
    /// namespaces. Returns the deleted object.
    ///
    /// # Panics
    /// On a resource name the server does not serve: a mistake in the test.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resource_type(resource);
        self.shared
            .store()
            .remove(rt, namespace, name)
            .map(|o| (*o).clone())
    }

    /// One object, as stored. See [`Self::delete`] for `resource`.
    ///
    /// # Panics
    /// On a resource name the server does not serve.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resource_type(resource);
        self.shared
            .store()
            .get(rt, namespace, name)
            .map(|o| (*o).clone())
    }

    /// Every object of a resource across namespaces, ordered by namespace and name.
    ///
    /// # Panics
    /// On a resource name the server does not serve.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let rt = resource_type(resource);
        self.shared
            .store()
            .all(rt)
            .iter()
            .map(|o| (**o).clone())
            .collect()
    }

    /// Every object of a resource in one namespace.
    ///
    /// # Panics
    /// On a resource name the server does not serve.
    pub fn list_in(&self, resource: &str, namespace: &str) -> Vec<Value> {
        self.list(resource)
            .into_iter()
            .filter(|o| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
            .collect()
    }

    /// The current resourceVersion; it grows with every write.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// HTTP requests received, injected failures included.
    pub fn request_count(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::Relaxed)
    }

    /// Watches started.
    pub fn watch_count(&self) -> u64 {
        self.shared.counters.watches.load(Ordering::Relaxed)
    }

    /// List requests served.
    pub fn list_count(&self) -> u64 {
        self.shared.counters.lists.load(Ordering::Relaxed)
    }

    /// Watches open right now.
    pub fn active_watch_count(&self) -> usize {
        self.shared.counters.active_watches.load(Ordering::Relaxed)
    }

    /// Waits until at least `count` watches are open; false if that did not happen within
    /// `within`.
    pub async fn wait_for_active_watches(&self, count: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.active_watch_count() < count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Ends every open watch abruptly: the response breaks off without its final chunk, as
    /// when a connection to the real server is lost. Later watches are unaffected.
    pub fn drop_watches(&self) {
        self.shared.cut_watches();
    }

    /// The next `count` requests (of any kind) fail with `status` and a `Status` body.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.shared
            .faults
            .failure_status
            .store(status, Ordering::SeqCst);
        self.shared
            .faults
            .failures_left
            .store(count, Ordering::SeqCst);
    }

    /// Delays every response by `delay` until called again with `Duration::ZERO`.
    pub fn stall(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .faults
            .stall_millis
            .store(millis, Ordering::Relaxed);
    }

    /// Clears pending failures and stalls.
    pub fn clear_faults(&self) {
        self.fail_next(0, 500);
        self.stall(Duration::ZERO);
    }

    /// Forgets the change history: watches and `continue` tokens from any older
    /// resourceVersion now get 410 Expired.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Whether the server is listening.
    pub fn is_serving(&self) -> bool {
        lock(&self.serving).is_some()
    }

    /// Stops listening and closes every connection; state is kept for [`Self::restart`].
    pub async fn stop(&self) {
        let serving = lock(&self.serving).take();
        self.shared.cut_watches();
        if let Some(serving) = serving {
            serving.shutdown.cancel();
            if let Err(error) = serving.task.await {
                warn!(%error, "the listener task failed");
            }
        }
    }

    /// Listens again on the same address with the same state. Does nothing if serving.
    pub async fn restart(&self) -> Result<(), Error> {
        if self.is_serving() {
            return Ok(());
        }
        let listener = bind(self.shared.addr).await?;
        self.serve_on(listener);
        Ok(())
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(serving) = lock(&self.serving).take() {
            serving.shutdown.cancel();
        }
        self.shared.cut_watches();
    }
}

fn resource_type(name: &str) -> &'static resources::ResourceType {
    match resources::resolve(name) {
        Some(rt) => rt,
        None => panic!(
            "the API server double serves no resource {name:?} (it serves namespaces, services, endpointslices, leases)"
        ),
    }
}
