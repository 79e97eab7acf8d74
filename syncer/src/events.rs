//! Bucket event notifications: S3 tells an SQS queue about every upload and deletion, and the
//! syncer acts on the ones that concern its cluster documents at once instead of waiting for
//! the next listing. The periodic listing stays as the safety net for lost events.
//!
//! - The pure part: [`parse_message`] reads a message body (S3's own notification, the same
//!   wrapped by SNS, or an EventBridge event) into [`Record`]s; [`notice`] keeps the ones for a
//!   `<cluster>.traefik.yaml` directly under the prefix; [`Sequencers::plan`] turns a batch of
//!   [`Notice`]s into fetches and listings, dropping what the syncer already has.
//! - The I/O part: [`run_queue`] long-polls the queue, hands each batch to the sync loop, waits
//!   until it was handled and only then deletes the messages. Errors back off and never stop
//!   anything else.
//!
//! Delivery is at least once and unordered, so nothing here trusts an event's content: a
//! creation event only says "fetch this key" (the conditional GET decides, and the event's ETag
//! only saves the GET when it names the version already processed), and a deletion event only
//! asks for a listing (only listings confirm an absence).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::S3Options;
use ksd_shared::names::{self, ClusterName, ObjectFormat};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::EventMetrics;
use crate::state::{FetchRequest, State};

/// Long-polling wait of one ReceiveMessage call (SQS's maximum).
pub const WAIT_TIME_SECONDS: i32 = 20;
/// Messages per ReceiveMessage call (SQS's maximum).
pub const MAX_MESSAGES: i32 = 10;
/// Covers one long poll plus its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling of the delay between attempts while the queue fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Keys whose last sequencer is remembered; beyond this the memory starts over (it only saves
/// requests, correctness never depends on it).
const MAX_SEQUENCERS: usize = 4096;
/// Longest message body logged when it cannot be read.
const LOGGED_BODY_CHARS: usize = 200;

/// What an event says happened to an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ObjectCreated:*` (S3) or `Object Created` (EventBridge).
    Created,
    /// `ObjectRemoved:*`, `LifecycleExpiration:*` (S3) or `Object Deleted` (EventBridge).
    Removed,
    /// Anything else (restores, replication, tagging, ...): not ours.
    Other(String),
}

/// One object event, as read from a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub bucket: Option<String>,
    /// The full key, decoded.
    pub key: String,
    pub kind: Kind,
    pub etag: Option<String>,
    /// Orders events on one key (hex, compared after left-padding with zeros).
    pub sequencer: Option<String>,
}

/// A message body, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `s3:TestEvent`, sent when a notification configuration is saved.
    Test,
    Records(Vec<Record>),
}

/// Why a message body could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("neither an S3 event notification nor an EventBridge S3 event")]
    UnknownShape,
    #[error("record {index}: {reason}")]
    BadRecord { index: usize, reason: String },
}

/// Reads one message body: S3's notification (`{"Records": [...]}`), the same delivered
/// through SNS (`{"Type": "Notification", "Message": "..."}`), S3's test event, or an
/// EventBridge event (`{"detail-type": "Object Created", "detail": {...}}`).
pub fn parse_message(body: &str) -> Result<Message, ParseError> {
    let value: Value =
        serde_json::from_str(body).map_err(|error| ParseError::NotJson(error.to_string()))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, unwrap_sns: bool) -> Result<Message, ParseError> {
    let Some(object) = value.as_object() else {
        return Err(ParseError::UnknownShape);
    };
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Message::Test);
    }
    if let Some(records) = object.get("Records") {
        let records = records.as_array().ok_or(ParseError::UnknownShape)?;
        return records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                s3_record(record).map_err(|reason| ParseError::BadRecord { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Message::Records);
    }
    if let Some(detail) = object.get("detail")
        && object.get("source").and_then(Value::as_str) == Some("aws.s3")
    {
        let detail_type = object
            .get("detail-type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return eventbridge_record(detail_type, detail)
            .map(|record| Message::Records(vec![record]))
            .map_err(|reason| ParseError::BadRecord { index: 0, reason });
    }
    if unwrap_sns
        && object.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = object.get("Message").and_then(Value::as_str)
    {
        let inner: Value =
            serde_json::from_str(inner).map_err(|error| ParseError::NotJson(error.to_string()))?;
        return parse_value(&inner, false);
    }
    Err(ParseError::UnknownShape)
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |value, name| value.get(name))
        .and_then(Value::as_str)
}

fn s3_record(record: &Value) -> Result<Record, String> {
    let name = text(record, &["eventName"]).ok_or("no eventName")?;
    // S3 writes `ObjectCreated:Put`; some compatible stores add an `s3:` in front.
    let bare = name.strip_prefix("s3:").unwrap_or(name);
    let kind = if bare.starts_with("ObjectCreated:") {
        Kind::Created
    } else if bare.starts_with("ObjectRemoved:") || bare.starts_with("LifecycleExpiration:") {
        Kind::Removed
    } else {
        Kind::Other(name.to_owned())
    };
    let raw_key = text(record, &["s3", "object", "key"]).ok_or("no s3.object.key")?;
    // S3 URL-encodes keys in notifications, with `+` for a space.
    let key =
        form_decode(raw_key).ok_or_else(|| format!("key {raw_key:?} is not URL-encoded UTF-8"))?;
    Ok(Record {
        bucket: text(record, &["s3", "bucket", "name"]).map(str::to_owned),
        key,
        kind,
        etag: text(record, &["s3", "object", "eTag"])
            .or_else(|| text(record, &["s3", "object", "etag"]))
            .filter(|etag| !etag.is_empty())
            .map(str::to_owned),
        sequencer: text(record, &["s3", "object", "sequencer"]).map(str::to_owned),
    })
}

fn eventbridge_record(detail_type: &str, detail: &Value) -> Result<Record, String> {
    let kind = match detail_type {
        "Object Created" => Kind::Created,
        "Object Deleted" => Kind::Removed,
        other => Kind::Other(other.to_owned()),
    };
    // EventBridge carries the key as it is, not URL-encoded.
    let key = text(detail, &["object", "key"]).ok_or("no detail.object.key")?;
    Ok(Record {
        bucket: text(detail, &["bucket", "name"]).map(str::to_owned),
        key: key.to_owned(),
        kind,
        etag: text(detail, &["object", "etag"])
            .filter(|etag| !etag.is_empty())
            .map(str::to_owned),
        sequencer: text(detail, &["object", "sequencer"]).map(str::to_owned),
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte. `None` for a
/// malformed escape or bytes that are not UTF-8.
pub fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// What a record asks of the syncer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Fetch the object (unless `etag` names the version already processed).
    Created { etag: Option<String> },
    /// List the prefix: only listings confirm an absence.
    Removed,
}

/// A record about one of our cluster documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub cluster: ClusterName,
    /// Relative to the prefix, as storage keys are.
    pub key: String,
    pub change: Change,
    pub sequencer: Option<String>,
}

/// Why a record is not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    OtherBucket,
    OtherPrefix,
    /// Under a "directory" below the prefix (`<prefix>_status/...`, `<prefix>x/y`).
    SubPrefix,
    /// `<cluster>.backends.yaml` and other formats the exporters share the prefix with.
    OtherFormat,
    InvalidKey,
    OtherEvent,
}

/// Keeps a record when it is about a `<cluster>.traefik.yaml` directly under `prefix` in
/// `bucket`.
pub fn notice(record: &Record, bucket: &str, prefix: &str) -> Result<Notice, Ignored> {
    if record.bucket.as_deref().is_some_and(|b| b != bucket) {
        return Err(Ignored::OtherBucket);
    }
    let key = record
        .key
        .strip_prefix(prefix)
        .ok_or(Ignored::OtherPrefix)?;
    if key.is_empty() || key.contains('/') {
        return Err(Ignored::SubPrefix);
    }
    let change = match &record.kind {
        Kind::Created => Change::Created {
            etag: record.etag.clone(),
        },
        Kind::Removed => Change::Removed,
        Kind::Other(_) => return Err(Ignored::OtherEvent),
    };
    match names::parse_object_key(key) {
        Ok((cluster, ObjectFormat::Traefik)) => Ok(Notice {
            cluster,
            key: key.to_owned(),
            change,
            sequencer: record.sequencer.clone(),
        }),
        Ok(_) => Err(Ignored::OtherFormat),
        Err(_) => Err(Ignored::InvalidKey),
    }
}

/// Compares two S3 sequencers: hexadecimal strings of possibly different lengths, compared
/// after left-padding the shorter with zeros.
pub fn compare_sequencers(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{s:0>width$}").to_ascii_uppercase();
    pad(a).cmp(&pad(b))
}

/// What a batch of notices calls for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Conditional fetches, one per cluster at most.
    pub fetches: Vec<FetchRequest>,
    /// A deletion was announced: list the prefix now.
    pub list: bool,
    /// Notices that needed nothing: the version is already processed, or an event at least as
    /// recent for the same key was already handled.
    pub unchanged: usize,
}

/// The last sequencer handled per key, so that duplicates and events older than one already
/// handled cost nothing.
#[derive(Debug, Default)]
pub struct Sequencers {
    last: HashMap<String, String>,
}

impl Sequencers {
    /// Plans a batch against what the state already has.
    pub fn plan(&mut self, notices: &[Notice], state: &State) -> Plan {
        // The latest notice per key; notices without a sequencer are all kept (the fetch
        // decides).
        let mut latest: Vec<&Notice> = Vec::new();
        let mut unchanged = 0;
        for notice in notices {
            let older_than_handled = match (&notice.sequencer, self.last.get(&notice.key)) {
                (Some(new), Some(seen)) => compare_sequencers(new, seen) != Ordering::Greater,
                _ => false,
            };
            if older_than_handled {
                unchanged += 1;
                continue;
            }
            if let Some(sequencer) = &notice.sequencer {
                if self.last.len() >= MAX_SEQUENCERS && !self.last.contains_key(&notice.key) {
                    self.last.clear();
                }
                self.last.insert(notice.key.clone(), sequencer.clone());
            }
            latest.push(notice);
        }
        // Within the batch, only the last event per key matters.
        let mut plan = Plan::default();
        let mut seen_keys: Vec<&str> = Vec::new();
        for notice in latest.iter().rev() {
            if seen_keys.contains(&notice.key.as_str()) {
                unchanged += 1;
                continue;
            }
            seen_keys.push(&notice.key);
            match &notice.change {
                Change::Removed => plan.list = true,
                Change::Created { etag } => {
                    if etag
                        .as_deref()
                        .is_some_and(|etag| state.has_processed(&notice.cluster, etag))
                    {
                        unchanged += 1;
                        continue;
                    }
                    plan.fetches.push(FetchRequest {
                        cluster: notice.cluster.clone(),
                        key: notice.key.clone(),
                        if_none_match: state.processed_etag(&notice.cluster).map(str::to_owned),
                    });
                }
            }
        }
        plan.unchanged = unchanged;
        plan
    }
}

/// Notices from one batch of messages, for the sync loop. Dropping it without calling
/// [`Batch::handled`] (the loop stopped) leaves the messages on the queue.
#[derive(Debug)]
pub struct Batch {
    pub notices: Vec<Notice>,
    done: oneshot::Sender<()>,
}

impl Batch {
    /// Tells the queue task the notices were acted on: their messages can be deleted.
    pub fn handled(self) {
        let _ = self.done.send(());
    }
}

/// Where the queue is and what the syncer watches.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub queue_url: String,
    pub bucket: String,
    pub prefix: String,
}

/// An SQS client from the same AWS SDK chain as the S3 client (region, credentials,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SQS`, retries). With no endpoint configured, a queue
/// URL on `sqs.<region>.amazonaws.com` sets the region, so a queue in another region than the
/// default still works.
pub async fn client(queue_url: &str, opts: &S3Options) -> aws_sdk_sqs::Client {
    let sdk = ksd_runtime::storage::sdk_config(opts, None, OPERATION_TIMEOUT).await;
    let mut builder = aws_sdk_sqs::config::Builder::from(&sdk);
    let endpoint_configured = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some_and(|v| !v.is_empty());
    if !endpoint_configured && let Some(region) = region_of_queue_url(queue_url) {
        builder = builder.region(aws_sdk_sqs::config::Region::new(region));
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

/// `https://sqs.eu-west-1.amazonaws.com/123/q` → `eu-west-1`.
pub fn region_of_queue_url(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split('/').next()?;
    let region = host.strip_prefix("sqs.")?.split('.').next()?;
    (!region.is_empty() && host.contains(".amazonaws.com")).then(|| region.to_owned())
}

/// Long-polls the queue until `shutdown`, sending each batch of notices to `batches` and
/// deleting its messages once the loop says it was handled. Messages that cannot be read and
/// messages with nothing for us are deleted at once.
pub async fn run_queue(
    client: aws_sdk_sqs::Client,
    config: QueueConfig,
    batches: mpsc::Sender<Batch>,
    metrics: EventMetrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
    let mut failing = false;
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = check_queue(&client, &config.queue_url) => {}
    }
    loop {
        let receive = client
            .receive_message()
            .queue_url(&config.queue_url)
            .max_number_of_messages(MAX_MESSAGES)
            .wait_time_seconds(WAIT_TIME_SECONDS)
            .send();
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = receive => received,
        };
        let messages = match received {
            Ok(output) => {
                if failing {
                    info!(queue = %config.queue_url, "receiving bucket events again");
                    failing = false;
                }
                metrics.queue_up(true);
                backoff.reset();
                output.messages.unwrap_or_default()
            }
            Err(error) => {
                metrics.queue_error("receive");
                metrics.queue_up(false);
                let delay = backoff.next_delay().max(Duration::from_millis(200));
                warn!(
                    queue = %config.queue_url,
                    code = error.code().unwrap_or("none"),
                    error = %sdk_error_text(&error),
                    retry_in = ?delay,
                    "cannot receive bucket events; the periodic listing carries on"
                );
                failing = true;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        metrics.messages_received(messages.len(), SystemTime::now());

        let mut notices = Vec::new();
        let mut receipts = Vec::new();
        for message in &messages {
            if let Some(handle) = message.receipt_handle() {
                receipts.push(handle.to_owned());
            }
            let body = message.body().unwrap_or_default();
            match parse_message(body) {
                Ok(Message::Test) => {
                    metrics.records("ignored", 1);
                    debug!("bucket test event");
                }
                Ok(Message::Records(records)) => {
                    for record in records {
                        match notice(&record, &config.bucket, &config.prefix) {
                            Ok(notice) => notices.push(notice),
                            Err(reason) => {
                                metrics.records("ignored", 1);
                                debug!(key = %record.key, ?reason, "ignoring a bucket event");
                            }
                        }
                    }
                }
                Err(error) => {
                    metrics.invalid_message();
                    let shown: String = body.chars().take(LOGGED_BODY_CHARS).collect();
                    warn!(
                        message_id = message.message_id().unwrap_or_default(),
                        %error,
                        body = %shown,
                        "cannot read a queue message; deleting it"
                    );
                }
            }
        }

        if !notices.is_empty() {
            let (done, handled) = oneshot::channel();
            let sent = tokio::select! {
                () = shutdown.cancelled() => return,
                sent = batches.send(Batch { notices, done }) => sent,
            };
            if sent.is_err() {
                return;
            }
            let handled = tokio::select! {
                () = shutdown.cancelled() => return,
                handled = handled => handled,
            };
            // The loop stopped without handling: leave the messages for the next run.
            if handled.is_err() {
                return;
            }
        }
        delete(&client, &config.queue_url, receipts, &metrics).await;
    }
}

/// Logs whether the queue is reachable at start-up (`sqs:GetQueueAttributes`).
async fn check_queue(client: &aws_sdk_sqs::Client, queue_url: &str) {
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await;
    match attributes {
        Ok(output) => {
            let arn = output
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
                .map(String::as_str)
                .unwrap_or("unknown");
            info!(queue = %queue_url, arn, "receiving bucket events");
        }
        Err(error) => warn!(
            queue = %queue_url,
            code = error.code().unwrap_or("none"),
            error = %sdk_error_text(&error),
            "cannot read the event queue's attributes; receiving will be tried anyway"
        ),
    }
}

async fn delete(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    receipts: Vec<String>,
    metrics: &EventMetrics,
) {
    if receipts.is_empty() {
        return;
    }
    let mut entries = Vec::with_capacity(receipts.len());
    for (index, receipt) in receipts.into_iter().enumerate() {
        match DeleteMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .receipt_handle(receipt)
            .build()
        {
            Ok(entry) => entries.push(entry),
            Err(error) => warn!(%error, "cannot build a message deletion"),
        }
    }
    match client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(output) => {
            for failed in output.failed() {
                metrics.queue_error("delete");
                warn!(
                    code = failed.code(),
                    message = failed.message().unwrap_or_default(),
                    "a handled message could not be deleted; it will be delivered again"
                );
            }
        }
        Err(error) => {
            metrics.queue_error("delete");
            warn!(
                code = error.code().unwrap_or("none"),
                error = %sdk_error_text(&error),
                "handled messages could not be deleted; they will be delivered again"
            );
        }
    }
}

fn sdk_error_text<E, R>(error: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => service
            .message()
            .map_or_else(|| error_chain(service), str::to_owned),
        None => error_chain(error),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn s3_body(event: &str, key: &str, etag: &str, sequencer: &str) -> String {
        serde_json::json!({
            "Records": [{
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": event,
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": "bkt", "arn": "arn:aws:s3:::bkt"},
                    "object": {"key": key, "size": 12, "eTag": etag, "sequencer": sequencer}
                }
            }]
        })
        .to_string()
    }

    fn records(body: &str) -> Vec<Record> {
        match parse_message(body).unwrap() {
            Message::Records(records) => records,
            Message::Test => panic!("a test event"),
        }
    }

    #[test]
    fn reads_s3_notifications() {
        let body = s3_body(
            "ObjectCreated:Put",
            "ksd/east.traefik.yaml",
            "0123abcd",
            "0A1B",
        );
        assert_eq!(
            records(&body),
            vec![Record {
                bucket: Some("bkt".into()),
                key: "ksd/east.traefik.yaml".into(),
                kind: Kind::Created,
                etag: Some("0123abcd".into()),
                sequencer: Some("0A1B".into()),
            }]
        );
        let removed = records(&s3_body("ObjectRemoved:Delete", "k", "", "1"));
        assert_eq!(removed[0].kind, Kind::Removed);
        assert_eq!(removed[0].etag, None);
        let marker = records(&s3_body("ObjectRemoved:DeleteMarkerCreated", "k", "", "1"));
        assert_eq!(marker[0].kind, Kind::Removed);
        let expired = records(&s3_body("LifecycleExpiration:Delete", "k", "", "1"));
        assert_eq!(expired[0].kind, Kind::Removed);
        let restore = records(&s3_body("ObjectRestore:Completed", "k", "", "1"));
        assert_eq!(
            restore[0].kind,
            Kind::Other("ObjectRestore:Completed".into())
        );
    }

    #[test]
    fn decodes_keys() {
        let key = records(&s3_body("ObjectCreated:Put", "a+b%2Bc%3Ad%C3%A9", "e", "1"))
            .remove(0)
            .key;
        assert_eq!(key, "a b+c:dé");
        assert_eq!(
            form_decode("p%2Fx.traefik.yaml").unwrap(),
            "p/x.traefik.yaml"
        );
        assert_eq!(form_decode("bad%zz"), None);
        assert_eq!(form_decode("cut%4"), None);
        assert_eq!(form_decode("%FF"), None);
        let body = s3_body("ObjectCreated:Put", "bad%zz", "e", "1");
        assert!(matches!(
            parse_message(&body),
            Err(ParseError::BadRecord { index: 0, .. })
        ));
    }

    #[test]
    fn reads_the_test_event() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"bkt","RequestId":"1","HostId":"2"}"#;
        assert_eq!(parse_message(body).unwrap(), Message::Test);
    }

    #[test]
    fn reads_eventbridge_events() {
        let body = serde_json::json!({
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "111122223333",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:s3:::bkt"],
            "detail": {
                "version": "0",
                "bucket": {"name": "bkt"},
                "object": {"key": "ksd/a b.traefik.yaml", "size": 5, "etag": "b1946ac9", "sequencer": "00617F08299329D189"},
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "reason": "PutObject"
            }
        })
        .to_string();
        assert_eq!(
            records(&body),
            vec![Record {
                bucket: Some("bkt".into()),
                key: "ksd/a b.traefik.yaml".into(),
                kind: Kind::Created,
                etag: Some("b1946ac9".into()),
                sequencer: Some("00617F08299329D189".into()),
            }]
        );
        let deleted = body.replace("Object Created", "Object Deleted");
        assert_eq!(records(&deleted)[0].kind, Kind::Removed);
        let tagged = body.replace("Object Created", "Object Tags Added");
        assert_eq!(
            records(&tagged)[0].kind,
            Kind::Other("Object Tags Added".into())
        );
    }

    #[test]
    fn unwraps_sns_notifications() {
        let inner = s3_body("ObjectCreated:Put", "ksd/a.traefik.yaml", "e", "1");
        let body = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m",
            "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": inner,
        })
        .to_string();
        assert_eq!(records(&body)[0].key, "ksd/a.traefik.yaml");
        // Only one level of wrapping.
        let twice = serde_json::json!({"Type": "Notification", "Message": body}).to_string();
        assert_eq!(parse_message(&twice), Err(ParseError::UnknownShape));
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            parse_message("not json"),
            Err(ParseError::NotJson(_))
        ));
        assert!(matches!(parse_message(""), Err(ParseError::NotJson(_))));
        assert_eq!(parse_message("[1,2]"), Err(ParseError::UnknownShape));
        assert_eq!(
            parse_message(r#"{"hello":"world"}"#),
            Err(ParseError::UnknownShape)
        );
        assert_eq!(
            parse_message(r#"{"Records":{}}"#),
            Err(ParseError::UnknownShape)
        );
        assert!(matches!(
            parse_message(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#),
            Err(ParseError::BadRecord { index: 0, .. })
        ));
        // An EventBridge event from another service is not ours.
        assert_eq!(
            parse_message(r#"{"source":"aws.ec2","detail-type":"x","detail":{}}"#),
            Err(ParseError::UnknownShape)
        );
        assert_eq!(
            parse_message(r#"{"Type":"Notification","Message":"{}"}"#),
            Err(ParseError::UnknownShape)
        );
    }

    fn record(key: &str, kind: Kind) -> Record {
        Record {
            bucket: Some("bkt".into()),
            key: key.into(),
            kind,
            etag: Some("\"e1\"".into()),
            sequencer: Some("01".into()),
        }
    }

    #[test]
    fn keeps_cluster_documents_directly_under_the_prefix() {
        let kept = notice(
            &record("ksd/east.traefik.yaml", Kind::Created),
            "bkt",
            "ksd/",
        )
        .unwrap();
        assert_eq!(kept.cluster.as_str(), "east");
        assert_eq!(kept.key, "east.traefik.yaml");
        assert_eq!(
            kept.change,
            Change::Created {
                etag: Some("\"e1\"".into())
            }
        );
        let removed = notice(&record("east.traefik.yaml", Kind::Removed), "bkt", "").unwrap();
        assert_eq!(removed.change, Change::Removed);

        let ignored = |key: &str, kind: Kind, bucket: &str| {
            notice(&record(key, kind), bucket, "ksd/").unwrap_err()
        };
        assert_eq!(
            ignored("ksd/east.traefik.yaml", Kind::Created, "other"),
            Ignored::OtherBucket
        );
        assert_eq!(
            ignored("other/east.traefik.yaml", Kind::Created, "bkt"),
            Ignored::OtherPrefix
        );
        assert_eq!(
            ignored("ksd_status/east.traefik.yaml", Kind::Created, "bkt"),
            Ignored::OtherPrefix
        );
        assert_eq!(
            ignored("ksd/_status/east.traefik.yaml", Kind::Created, "bkt"),
            Ignored::SubPrefix
        );
        assert_eq!(ignored("ksd/", Kind::Created, "bkt"), Ignored::SubPrefix);
        assert_eq!(
            ignored("ksd/east.backends.yaml", Kind::Created, "bkt"),
            Ignored::OtherFormat
        );
        assert_eq!(
            ignored("ksd/East Side.traefik.yaml", Kind::Created, "bkt"),
            Ignored::InvalidKey
        );
        assert_eq!(
            ignored("ksd/notes.txt", Kind::Created, "bkt"),
            Ignored::InvalidKey
        );
        assert_eq!(
            ignored(
                "ksd/east.traefik.yaml",
                Kind::Other("ObjectRestore:Post".into()),
                "bkt"
            ),
            Ignored::OtherEvent
        );
    }

    #[test]
    fn orders_sequencers_after_padding() {
        assert_eq!(compare_sequencers("0A", "0B"), Ordering::Less);
        assert_eq!(compare_sequencers("B", "0A"), Ordering::Greater);
        assert_eq!(compare_sequencers("00ff", "FF"), Ordering::Equal);
        assert_eq!(compare_sequencers("100", "FF"), Ordering::Greater);
    }

    fn created(cluster: &str, etag: &str, sequencer: Option<&str>) -> Notice {
        Notice {
            cluster: ClusterName::parse(cluster).unwrap(),
            key: format!("{cluster}.traefik.yaml"),
            change: Change::Created {
                etag: Some(etag.into()),
            },
            sequencer: sequencer.map(str::to_owned),
        }
    }

    fn removed(cluster: &str, sequencer: Option<&str>) -> Notice {
        Notice {
            change: Change::Removed,
            ..created(cluster, "", sequencer)
        }
    }

    #[test]
    fn plans_one_fetch_per_new_version() {
        let state = State::new();
        let mut sequencers = Sequencers::default();
        let plan = sequencers.plan(
            &[
                created("a", "\"1\"", Some("10")),
                created("a", "\"2\"", Some("20")),
                created("b", "\"1\"", None),
            ],
            &state,
        );
        assert_eq!(
            plan.fetches
                .iter()
                .map(|f| (f.cluster.as_str(), f.if_none_match.clone()))
                .collect::<Vec<_>>(),
            vec![("b", None), ("a", None)]
        );
        assert!(!plan.list);
        assert_eq!(plan.unchanged, 1);

        // Duplicates and older events on the same key need nothing.
        let again = sequencers.plan(
            &[
                created("a", "\"2\"", Some("20")),
                created("a", "\"1\"", Some("10")),
            ],
            &state,
        );
        assert_eq!(again.fetches, vec![]);
        assert_eq!(again.unchanged, 2);
        // A deletion older than the creation handled is no reason to list.
        let stale_delete = sequencers.plan(&[removed("a", Some("15"))], &state);
        assert!(!stale_delete.list);
        // A newer one is.
        let delete = sequencers.plan(&[removed("a", Some("30"))], &state);
        assert!(delete.list);
        assert_eq!(delete.fetches, vec![]);
        // A creation then a deletion in one batch: the deletion, the later, decides.
        let both = sequencers.plan(
            &[created("b", "\"3\"", Some("40")), removed("b", Some("41"))],
            &state,
        );
        assert!(both.list);
        assert_eq!(both.fetches, vec![]);
    }

    #[test]
    fn skips_versions_already_processed() {
        use crate::state::{FetchOutcome, Policy};
        let mut state = State::new();
        let policy = Policy {
            confirm_polls: 3,
            stale_after: None,
            max_object_bytes: 1 << 20,
        };
        let a = ClusterName::parse("a").unwrap();
        let events = state.apply_fetched(
            vec![(
                a.clone(),
                "a.traefik.yaml".into(),
                FetchOutcome::Object {
                    bytes: b"http:\n  services: {}\n".to_vec(),
                    etag: "\"1\"".into(),
                },
            )],
            &policy,
        );
        assert_eq!(events.len(), 1, "{events:?}");
        let mut sequencers = Sequencers::default();
        // The same version, spelt without quotes as S3 events do: no fetch.
        let plan = sequencers.plan(&[created("a", "1", None)], &state);
        assert_eq!(plan.fetches, vec![]);
        assert_eq!(plan.unchanged, 1);
        // Another version: a fetch conditional on the one processed.
        let plan = sequencers.plan(&[created("a", "2", None)], &state);
        assert_eq!(plan.fetches.len(), 1);
        assert_eq!(plan.fetches[0].if_none_match.as_deref(), Some("\"1\""));
    }

    #[test]
    fn reads_the_region_of_aws_queue_urls() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_queue_url("http://127.0.0.1:5000/123/q"), None);
        assert_eq!(region_of_queue_url("https://sqs.example.com/1/q"), None);
    }
}
