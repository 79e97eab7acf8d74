//! The I/O part: the SQS client, and the task that long-polls the queue, hands each batch to
//! the sync loop and deletes the messages once it was handled.

use std::time::{Duration, SystemTime};

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message as SqsMessage};
use ksd_runtime::backoff::Backoff;
use ksd_runtime::error_chain;
use ksd_runtime::storage::S3Options;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::{Message, parse_message};
use super::plan::{Notice, notice};
use crate::metrics::EventMetrics;

/// Long-polling wait of one ReceiveMessage call (SQS's maximum).
pub const WAIT_TIME_SECONDS: i32 = 20;
/// Messages per ReceiveMessage call (SQS's maximum).
pub const MAX_MESSAGES: i32 = 10;
/// Covers one long poll plus its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Ceiling of the delay between attempts while the queue fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest message body logged when it cannot be read.
const LOGGED_BODY_CHARS: usize = 200;

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
        let Some(messages) = receive(
            &client,
            &config.queue_url,
            &mut backoff,
            &mut failing,
            &metrics,
            &shutdown,
        )
        .await
        else {
            return;
        };
        if messages.is_empty() {
            continue;
        }
        metrics.messages_received(messages.len(), SystemTime::now());

        let (notices, receipts) = read_messages(&messages, &config, &metrics);
        if !notices.is_empty() && !hand_over(&batches, notices, &shutdown).await {
            return;
        }
        delete(&client, &config.queue_url, receipts, &metrics).await;
    }
}

/// One long poll: the messages received, none after a failure (once its backoff delay has
/// passed), `None` on `shutdown`.
async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    backoff: &mut Backoff,
    failing: &mut bool,
    metrics: &EventMetrics,
    shutdown: &CancellationToken,
) -> Option<Vec<SqsMessage>> {
    let receive = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(MAX_MESSAGES)
        .wait_time_seconds(WAIT_TIME_SECONDS)
        .send();
    let received = tokio::select! {
        () = shutdown.cancelled() => return None,
        received = receive => received,
    };
    match received {
        Ok(output) => {
            if *failing {
                info!(queue = %queue_url, "receiving bucket events again");
                *failing = false;
            }
            metrics.queue_up(true);
            backoff.reset();
            Some(output.messages.unwrap_or_default())
        }
        Err(error) => {
            metrics.queue_error("receive");
            metrics.queue_up(false);
            let delay = backoff.next_delay().max(Duration::from_millis(200));
            warn!(
                queue = %queue_url,
                code = error.code().unwrap_or("none"),
                error = %sdk_error_text(&error),
                retry_in = ?delay,
                "cannot receive bucket events; the periodic listing carries on"
            );
            *failing = true;
            tokio::select! {
                () = shutdown.cancelled() => None,
                () = tokio::time::sleep(delay) => Some(Vec::new()),
            }
        }
    }
}

/// The notices in `messages` and the receipt handles of all of them (every message is
/// deleted once its notices are handled, including those with nothing for us).
fn read_messages(
    messages: &[SqsMessage],
    config: &QueueConfig,
    metrics: &EventMetrics,
) -> (Vec<Notice>, Vec<String>) {
    let mut notices = Vec::new();
    let mut receipts = Vec::new();
    for message in messages {
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
    (notices, receipts)
}

/// Sends the notices to the sync loop and waits until it handled them. `false` when the
/// messages must stay on the queue: `shutdown`, or the loop stopped without handling them.
async fn hand_over(
    batches: &mpsc::Sender<Batch>,
    notices: Vec<Notice>,
    shutdown: &CancellationToken,
) -> bool {
    let (done, handled) = oneshot::channel();
    let sent = tokio::select! {
        () = shutdown.cancelled() => return false,
        sent = batches.send(Batch { notices, done }) => sent,
    };
    if sent.is_err() {
        return false;
    }
    let handled = tokio::select! {
        () = shutdown.cancelled() => return false,
        handled = handled => handled,
    };
    // The loop stopped without handling: leave the messages for the next run.
    handled.is_ok()
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
