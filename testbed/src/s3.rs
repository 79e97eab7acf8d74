//! An S3 server for tests: moto's server, a fresh bucket per fixture, and an in-process proxy in
//! front of it that records every request and can simulate an outage.
//!
//! The binaries under test get the proxy's URL as `AWS_ENDPOINT_URL` ([`S3Fixture::env`]);
//! the test itself can reach moto directly ([`S3Fixture::client`]) to change objects behind
//! the agents' backs, without those requests being counted.
//!
//! [`S3Fixture::event_queue`] adds an SQS queue (moto's too) that receives the bucket's event
//! notifications; the proxy forwards SQS calls as well and can refuse them
//! ([`S3Fixture::set_sqs_denied`]) as a queue policy that no longer admits the caller would.
//!
//! moto: `KSD_TEST_S3_ENDPOINT` names a server shared by the whole test run (started by the
//! test script); without it each fixture starts its own `moto_server`, which is slower.
//!
//! The parts: `proxy` (the recording, fault-injecting proxy and what it records), `moto`
//! (finding or starting the server) and `queue` (the event queue and S3 event bodies).

mod moto;
mod proxy;
mod queue;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tokio_util::sync::CancellationToken;

use moto::MotoServer;
use proxy::ProxyState;
pub use proxy::{RecordedRequest, RequestKind};
pub use queue::{EventQueue, s3_event};

/// The variable naming a moto server shared by a whole test run.
pub const ENDPOINT_VAR: &str = "KSD_TEST_S3_ENDPOINT";
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A moto server, a bucket of its own and a recording, fault-injecting proxy.
pub struct S3Fixture {
    bucket: String,
    moto_endpoint: String,
    proxy_addr: SocketAddr,
    proxy: Arc<ProxyState>,
    stop: CancellationToken,
    client: aws_sdk_s3::Client,
    // Declared last: dropped (killed) after the proxy stops.
    _moto: Option<MotoServer>,
}

impl S3Fixture {
    /// Finds or starts moto, creates a fresh bucket and starts the proxy. Must be called
    /// inside a Tokio runtime (the proxy runs on it).
    pub async fn start() -> anyhow::Result<S3Fixture> {
        let (moto, moto_endpoint) = moto::find_or_start().await?;

        let client = s3_client(&moto_endpoint);
        let bucket = unique_bucket_name();
        client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {bucket} on {moto_endpoint}"))?;

        let upstream: hyper::Uri = moto_endpoint
            .parse()
            .with_context(|| format!("S3 endpoint {moto_endpoint:?} is not a URL"))?;
        let stop = CancellationToken::new();
        let (proxy_addr, proxy) = proxy::start(upstream, bucket.clone(), stop.clone()).await?;

        Ok(S3Fixture {
            bucket,
            moto_endpoint,
            proxy_addr,
            proxy,
            stop,
            client,
            _moto: moto,
        })
    }

    /// The proxy's URL: what the binaries get as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// moto's own URL (requests to it are not recorded and never fail on `set_down`).
    pub fn moto_endpoint(&self) -> &str {
        &self.moto_endpoint
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/prefix/` (`s3://bucket/` for an empty prefix).
    pub fn storage_url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}/", self.bucket)
        } else {
            format!("s3://{}/{prefix}/", self.bucket)
        }
    }

    /// The environment that points a binary at this fixture through the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A client talking to moto directly, for tests to change objects behind the agents' backs.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client.clone()
    }

    /// A client going through the proxy: its requests are recorded and fail during an outage.
    pub fn proxy_client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint())
    }

    /// `true`: the proxy resets new connections and cuts open ones, as an S3 outage would,
    /// while moto keeps its data. `false`: back to normal.
    pub fn set_down(&self, down: bool) {
        self.proxy.down.send_replace(down);
    }

    pub fn is_down(&self) -> bool {
        *self.proxy.down.borrow()
    }

    /// Every request the proxy has read since the start (or the last [`S3Fixture::reset_counts`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.proxy.requests().clone()
    }

    /// Requests of `kind` that moto answered (any status).
    pub fn count(&self, kind: RequestKind) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.kind == kind && r.answered())
            .count()
    }

    /// Answered `method` requests of `kind`; `method` as in `"GET"`.
    pub fn count_method(&self, method: &str, kind: RequestKind) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.kind == kind && r.answered() && r.method.eq_ignore_ascii_case(method))
            .count()
    }

    /// Listings answered.
    pub fn list_count(&self) -> usize {
        self.count(RequestKind::List)
    }

    /// Object GETs answered (including 304 and 404).
    pub fn get_count(&self) -> usize {
        self.count(RequestKind::Get)
    }

    /// Object PUTs answered (including refused conditional writes), not bucket creation.
    pub fn put_count(&self) -> usize {
        self.count(RequestKind::Put)
    }

    /// Bodies of the PUTs of `key` (the full key, prefix included) that moto stored (2xx),
    /// oldest first: every version the server received.
    pub fn put_bodies(&self, key: &str) -> Vec<Vec<u8>> {
        self.proxy
            .requests()
            .iter()
            .filter(|r| {
                r.kind == RequestKind::Put && r.succeeded() && r.key.as_deref() == Some(key)
            })
            .filter_map(|r| r.body.clone())
            .collect()
    }

    /// `true`: every SQS call through the proxy is refused with `AccessDenied` (HTTP 403), as
    /// after a queue policy change; S3 calls go on. `false`: back to normal.
    pub fn set_sqs_denied(&self, denied: bool) {
        self.proxy.sqs_denied.store(denied, Ordering::SeqCst);
    }

    /// Forgets every recorded request.
    pub fn reset_counts(&self) {
        self.proxy.requests().clear();
    }
}

impl Drop for S3Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A client with static test credentials, path style, and short timeouts so that a test of an
/// outage does not wait for the SDK's defaults.
fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10))
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "ksd-testbed",
        ))
        .force_path_style(true)
        .timeout_config(timeouts)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn unique_bucket_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("ksd-{}-{n}-{salt:08x}", std::process::id())
}
