//! Reading a queue message's body: S3's notification, the same wrapped by SNS, S3's test
//! event, or an EventBridge event, into [`Record`]s.

use serde_json::Value;

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
