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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The variable naming a moto server shared by a whole test run.
pub const ENDPOINT_VAR: &str = "KSD_TEST_S3_ENDPOINT";
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";

const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

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
        let (moto, moto_endpoint) = match std::env::var(ENDPOINT_VAR) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
                wait_until_answers(&endpoint, Duration::from_secs(10), None)
                    .await
                    .with_context(|| format!("the S3 server in {ENDPOINT_VAR} ({endpoint})"))?;
                (None, endpoint)
            }
            _ => {
                let moto = MotoServer::start().await?;
                let endpoint = moto.endpoint.clone();
                (Some(moto), endpoint)
            }
        };

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
        let (down, _) = watch::channel(false);
        let proxy = Arc::new(ProxyState {
            upstream,
            bucket: bucket.clone(),
            client: HttpClient::builder(TokioExecutor::new()).build_http(),
            down,
            sqs_denied: std::sync::atomic::AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the S3 proxy")?;
        let proxy_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&proxy), stop.clone()));

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

    /// Creates a fresh SQS queue on moto and makes the bucket notify it of every
    /// `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` under `prefix`. moto then sends an
    /// `s3:TestEvent` and, for each upload, an `ObjectCreated:Put` record (it does not notify
    /// deletions: tests send those with [`EventQueue::send`]).
    pub async fn event_queue(&self, prefix: &str) -> anyhow::Result<EventQueue> {
        use aws_sdk_s3::types::{
            Event, FilterRule, FilterRuleName, NotificationConfiguration,
            NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
        };
        let sqs = sqs_client(&self.moto_endpoint);
        let name = format!("ksd-events-{}", unique_bucket_name());
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?
            .queue_url
            .context("moto returned no queue URL")?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .context("reading the queue ARN")?
            .attributes
            .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .context("moto returned no queue ARN")?;
        let mut queue = QueueConfiguration::builder()
            .id("ksd")
            .queue_arn(&arn)
            .events(Event::from("s3:ObjectCreated:*"))
            .events(Event::from("s3:ObjectRemoved:*"));
        if !prefix.is_empty() {
            queue = queue.filter(
                NotificationConfigurationFilter::builder()
                    .key(
                        S3KeyFilter::builder()
                            .filter_rules(
                                FilterRule::builder()
                                    .name(FilterRuleName::Prefix)
                                    .value(prefix)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            );
        }
        self.client
            .put_bucket_notification_configuration()
            .bucket(&self.bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(queue.build().context("queue configuration")?)
                    .build(),
            )
            .send()
            .await
            .context("configuring the bucket's notifications")?;
        Ok(EventQueue {
            client: sqs,
            url,
            arn,
        })
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

/// An SQS queue on moto that receives a fixture bucket's event notifications.
pub struct EventQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    arn: String,
}

impl EventQueue {
    /// The queue URL, for `S3_EVENT_QUEUE_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Sends a message as S3 would (for events moto does not emit, duplicates, garbage).
    pub async fn send(&self, body: &str) -> anyhow::Result<()> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .context("sending a message")?;
        Ok(())
    }

    /// One long poll of up to `wait` for up to 10 messages: their bodies and receipt handles.
    pub async fn receive(&self, wait: Duration) -> anyhow::Result<Vec<(String, String)>> {
        let seconds = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(seconds)
            .send()
            .await
            .context("receiving messages")?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m.body.unwrap_or_default(),
                    m.receipt_handle.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Deletes one received message.
    pub async fn delete_message(&self, receipt: &str) -> anyhow::Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .context("deleting a message")?;
        Ok(())
    }

    /// Messages on the queue, visible or being handled (moto counts exactly).
    pub async fn pending(&self) -> anyhow::Result<usize> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .context("reading the queue's attributes")?
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    /// Deletes the queue, as an operator tearing it down would.
    pub async fn delete(&self) -> anyhow::Result<()> {
        self.client
            .delete_queue()
            .queue_url(&self.url)
            .send()
            .await
            .context("deleting the queue")?;
        Ok(())
    }
}

/// An S3 event notification body with one record, as S3 sends it to a queue (`key` is
/// URL-encoded here, as S3 does).
pub fn s3_event(bucket: &str, event_name: &str, key: &str, etag: &str, sequencer: &str) -> String {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": REGION,
            "eventTime": "2026-01-01T00:00:00.000Z",
            "eventName": event_name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "ksd",
                "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {"key": form_encode(key), "size": 1, "eTag": etag, "sequencer": sequencer}
            }
        }]
    })
    .to_string()
}

fn form_encode(key: &str) -> String {
    let mut out = String::new();
    for byte in key.bytes() {
        match byte {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "ksd-testbed",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn unique_bucket_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("ksd-{}-{n}-{salt:08x}", std::process::id())
}

/// Runs moto so that it dies with the test process, however that ends (even SIGKILL, which
/// skips every destructor): a watcher reads the wrapper's stdin, a pipe whose only writer is
/// the test process, and kills moto at end of file. `sh` exits when moto does, so an early
/// crash is still seen. NB: an asynchronous list's stdin is /dev/null in a non-interactive
/// shell, hence the copy of stdin on fd 3.
const MOTO_WRAPPER: &str = r#"exec 3<&0
"$0" "$@" &
moto=$!
( read -r _ <&3; kill "$moto" 2>/dev/null ) &
wait "$moto""#;

/// A `moto_server` process, stopped when dropped or when the test process dies.
struct MotoServer {
    endpoint: String,
    // Dropping it closes the pipe: the wrapper's watcher then kills moto.
    _lifeline: tokio::process::ChildStdin,
    _child: tokio::process::Child,
    _log: tempfile::NamedTempFile,
}

impl MotoServer {
    async fn start() -> anyhow::Result<MotoServer> {
        let program = find_on_path("moto_server").context(
            "moto_server not found on PATH: run scripts/test, or pip install 'moto[server]' in a virtualenv",
        )?;
        // The port is free when chosen but could be taken before moto binds it: retry.
        let mut last_error = None;
        for _ in 0..3 {
            let port = crate::process::free_port();
            let log = tempfile::NamedTempFile::new().context("creating moto's log file")?;
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(MOTO_WRAPPER)
                .arg(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log.reopen()?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            let lifeline = child
                .stdin
                .take()
                .context("moto's wrapper has no stdin pipe")?;
            let endpoint = format!("http://127.0.0.1:{port}");
            match wait_until_answers(&endpoint, MOTO_START_TIMEOUT, Some(&mut child)).await {
                Ok(()) => {
                    return Ok(MotoServer {
                        endpoint,
                        _lifeline: lifeline,
                        _child: child,
                        _log: log,
                    });
                }
                Err(err) => {
                    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
                    last_error = Some(err.context(format!("moto_server output:\n{output}")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Polls `endpoint` until it answers HTTP at all (any status).
async fn wait_until_answers(
    endpoint: &str,
    timeout: Duration,
    mut child: Option<&mut tokio::process::Child>,
) -> anyhow::Result<()> {
    let client: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("{endpoint}/")
        .parse()
        .with_context(|| format!("{endpoint:?} is not a URL"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the S3 server exited with {status} before answering");
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await;
        if let Ok(Ok(_response)) = attempt {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the S3 server at {endpoint} did not answer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct ProxyState {
    upstream: hyper::Uri,
    bucket: String,
    client: HttpClient<HttpConnector, Full<Bytes>>,
    down: watch::Sender<bool>,
    /// SQS calls are answered with AccessDenied.
    sqs_denied: std::sync::atomic::AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl ProxyState {
    fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
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
        return Ok(response);
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
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn classifies_path_style_requests() {
        let b = "bkt";
        let get = hyper::Method::GET;
        let put = hyper::Method::PUT;
        assert_eq!(
            classify(
                &get,
                "/bkt",
                Some("list-type=2&prefix=p%2F&delimiter=%2F"),
                b
            ),
            (RequestKind::List, None)
        );
        assert_eq!(classify(&get, "/bkt/", None, b), (RequestKind::List, None));
        assert_eq!(
            classify(&get, "/bkt", Some("location"), b),
            (RequestKind::Bucket, None)
        );
        assert_eq!(classify(&put, "/bkt", None, b), (RequestKind::Bucket, None));
        assert_eq!(
            classify(&get, "/bkt/p/a.traefik.yaml", Some("x-id=GetObject"), b),
            (RequestKind::Get, Some("p/a.traefik.yaml".into()))
        );
        assert_eq!(
            classify(&put, "/bkt/p/a%20b.yaml", Some("x-id=PutObject"), b),
            (RequestKind::Put, Some("p/a b.yaml".into()))
        );
        assert_eq!(
            classify(&put, "/bkt/k", Some("tagging"), b).0,
            RequestKind::Other
        );
        assert_eq!(
            classify(&hyper::Method::DELETE, "/bkt/k", None, b).0,
            RequestKind::Delete
        );
        assert_eq!(classify(&get, "/other/k", None, b).0, RequestKind::Other);
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
