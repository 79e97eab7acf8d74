//! Reading messages, keeping notices, planning batches, and queue URLs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::cmp::Ordering;

use ksd_shared::names::ClusterName;

use super::*;
use crate::state::State;

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
