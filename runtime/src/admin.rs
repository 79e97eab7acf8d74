//! The admin HTTP server: `/livez`, `/readyz` and `/metrics` on one port (`ADMIN_ADDR`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format that `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness shared between the agent's loops and the probe handler.
///
/// Ready means "what this process publishes is trustworthy": set once the initial sync is
/// done, and false for good once shutdown has begun, so that the endpoint is taken out of
/// rotation before the process goes away.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
    details: Details,
}

/// Lines `/readyz` adds after its verdict, computed when the probe asks (they never change
/// the verdict).
#[derive(Clone, Default)]
struct Details(Arc<std::sync::Mutex<Vec<Detail>>>);

type Detail = Arc<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for Details {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Details")
    }
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Readiness is false from now on, whatever `set_ready` says later.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_shutting_down()
    }

    /// Adds a line to every `/readyz` answer, produced by `detail` at each probe: how a
    /// component that does not decide readiness is doing.
    pub fn add_detail(&self, detail: impl Fn() -> String + Send + Sync + 'static) {
        self.details
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::new(detail));
    }

    fn details(&self) -> String {
        let details: Vec<Detail> = self
            .details
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        details.iter().map(|detail| detail() + "\n").collect()
    }
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (ADMIN_ADDR): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    health: Health,
}

/// Binds `addr` and serves the admin endpoints until `shutdown` is cancelled.
///
/// Binding happens before this returns, so a taken or invalid address is a start-up error.
/// Returns the bound address (useful with port 0) and the server task. Pass a token that is
/// cancelled after the agent's own work has drained if the probes should keep answering
/// during the drain.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), AdminError> {
    serve_with_routes(addr, registry, health, Router::new(), shutdown).await
}

/// As [`serve`], with the agent's own `routes` next to the standard ones.
pub async fn serve_with_routes(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Health,
    routes: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let app = router(AppState { registry, health }).merge(routes);
    let handle = tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await });
        if let Err(err) = server.await {
            tracing::error!(%err, "admin server stopped");
        }
    });
    tracing::info!(addr = %bound, "admin server listening");
    Ok((bound, handle))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let details = state.health.details();
    if state.health.is_ready() {
        (StatusCode::OK, format!("ready\n{details}")).into_response()
    } else if state.health.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{details}"),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            tracing::error!(%err, "encoding metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response()
        }
    }
}
