//! The event queue: an SQS queue on moto receiving a fixture bucket's notifications
//! ([`S3Fixture::event_queue`]), and S3 event bodies for tests to send ([`s3_event`]).

use std::time::Duration;

use anyhow::Context;

use super::{ACCESS_KEY_ID, REGION, S3Fixture, SECRET_ACCESS_KEY, unique_bucket_name};

impl S3Fixture {
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
