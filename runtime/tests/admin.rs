//! The admin server over real HTTP on a loopback port.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use ksd_runtime::admin::{self, AdminError, Health, METRICS_CONTENT_TYPE};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// A minimal HTTP/1.1 GET, so the test depends on nothing but a socket.
async fn get(addr: std::net::SocketAddr, path: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn start() -> (
    std::net::SocketAddr,
    Health,
    CancellationToken,
    tokio::task::JoinHandle<()>,
    Counter,
) {
    let mut registry = Registry::with_prefix("ksd");
    let uploads = Counter::default();
    registry.register("test_uploads", "Uploads done in this test", uploads.clone());
    let health = Health::new();
    let token = CancellationToken::new();
    let (addr, handle) = admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(registry),
        health.clone(),
        token.clone(),
    )
    .await
    .unwrap();
    (addr, health, token, handle, uploads)
}

#[tokio::test]
async fn probes_follow_health() {
    let (addr, health, token, handle, _) = start().await;
    assert_ne!(addr.port(), 0);

    assert_eq!(get(addr, "/livez").await.status, 200);
    let not_ready = get(addr, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.body.contains("not ready"));

    health.set_ready(true);
    assert!(health.is_ready());
    assert_eq!(get(addr, "/readyz").await.status, 200);

    health.set_ready(false);
    assert_eq!(get(addr, "/readyz").await.status, 503);
    health.set_ready(true);

    health.set_shutting_down();
    assert!(!health.is_ready());
    let draining = get(addr, "/readyz").await;
    assert_eq!(draining.status, 503);
    assert!(draining.body.contains("shutting down"));
    // Readiness does not come back once shutdown has begun.
    health.set_ready(true);
    assert_eq!(get(addr, "/readyz").await.status, 503);
    // Liveness is unaffected.
    assert_eq!(get(addr, "/livez").await.status, 200);

    assert_eq!(get(addr, "/nope").await.status, 404);

    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the server stops when the token is cancelled")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn metrics_are_exposed_in_openmetrics_text() {
    let (addr, _health, token, _handle, uploads) = start().await;
    uploads.inc_by(3);
    let answer = get(addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .head
            .contains(&format!("content-type: {METRICS_CONTENT_TYPE}")),
        "{}",
        answer.head
    );
    assert!(
        answer
            .body
            .contains("# HELP ksd_test_uploads Uploads done in this test."),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("ksd_test_uploads_total 3"),
        "{}",
        answer.body
    );
    assert!(answer.body.trim_end().ends_with("# EOF"), "{}", answer.body);
    token.cancel();
}

#[tokio::test]
async fn a_taken_address_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = admin::serve(
        addr,
        Arc::new(Registry::default()),
        Health::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let AdminError::Bind { addr: reported, .. } = &err;
    assert_eq!(*reported, addr);
    assert!(err.to_string().contains("ADMIN_ADDR"), "{err}");
}
