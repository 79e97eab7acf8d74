use std::collections::BTreeMap;
use std::time::Duration;

use ksd_shared::status::Answer;
use prometheus_client::encoding::text::encode;

use super::recorder::TokenBucket;
use super::*;
use crate::acks::SyncerView;
use crate::publication::ServiceNames;

fn published(etag: &str) -> Publication {
    let names = ServiceNames::from_backends(&[
        backend("shop", "web", "shop-web-http"),
        backend("shop", "db", "shop-db-5432"),
    ]);
    Publication {
        etag: etag.to_owned(),
        services: Arc::new(names),
    }
}

fn backend(namespace: &str, service: &str, name: &str) -> ksd_shared::backend::Backend {
    ksd_shared::backend::Backend {
        name: name.to_owned(),
        origin: ksd_shared::backend::Origin {
            namespace: namespace.into(),
            service: service.into(),
            port: "p".into(),
        },
        protocol: ksd_shared::backend::Protocol::Http,
        scheme: ksd_shared::backend::Scheme::Http,
        options: Default::default(),
        targets: Default::default(),
    }
}

fn reading(etag: &str, answers: &[(&str, Answer)]) -> Reading {
    Reading {
        etag: Some(etag.to_owned()),
        syncers: answers
            .iter()
            .map(|(name, answer)| {
                let view = SyncerView {
                    written_at: 0,
                    answer: answer.clone(),
                };
                (SyncerName::parse(name).unwrap(), view)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

fn served() -> Answer {
    Answer::Served {
        servers: 0,
        services: 2,
        left_out: vec![],
    }
}

fn rejected() -> Answer {
    Answer::Rejected {
        reason: "too_large".into(),
        detail: None,
        line: None,
        older_served: false,
    }
}

fn drain(rx: &mut mpsc::Receiver<Intent>) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    while let Ok(intent) = rx.try_recv() {
        out.push((
            intent.service.to_string(),
            intent.syncer.to_string(),
            intent.state.reason(),
        ));
    }
    out.sort();
    out
}

#[test]
fn only_changes_of_the_published_version_become_events() {
    let (published_tx, published_rx) = watch::channel(None);
    let metrics = Arc::new(EventMetrics::default());
    let (mut tracker, mut rx) = channel(published_rx, metrics);
    let first = reading("\"e1\"", &[("edge-1", served()), ("edge-2", rejected())]);
    tracker.observe(&first);
    assert!(drain(&mut rx).is_empty(), "nothing published yet");
    published_tx.send_replace(Some(published("e2")));
    tracker.observe(&first);
    assert!(
        drain(&mut rx).is_empty(),
        "the reading is about another version"
    );
    published_tx.send_replace(Some(published("e1")));
    tracker.observe(&first);
    assert_eq!(
        drain(&mut rx),
        [
            ("shop/db".into(), "edge-1".into(), "Served"),
            ("shop/db".into(), "edge-2".into(), "Rejected"),
            ("shop/web".into(), "edge-1".into(), "Served"),
            ("shop/web".into(), "edge-2".into(), "Rejected"),
        ]
    );
    tracker.observe(&first);
    assert!(drain(&mut rx).is_empty(), "the same states again");
    let pending = reading("e1", &[("edge-1", served()), ("edge-2", Answer::Stale)]);
    tracker.observe(&pending);
    assert!(drain(&mut rx).is_empty(), "stale says nothing new");
    let both = reading("e1", &[("edge-1", served()), ("edge-2", served())]);
    tracker.observe(&both);
    assert_eq!(
        drain(&mut rx),
        [
            ("shop/db".into(), "edge-2".into(), "Served"),
            ("shop/web".into(), "edge-2".into(), "Served"),
        ]
    );
}

#[test]
fn a_full_queue_drops_and_counts_and_tries_again() {
    let (_published_tx, published_rx) = watch::channel(Some(published("e1")));
    let metrics = Arc::new(EventMetrics::default());
    let (tx, mut rx) = mpsc::channel(1);
    let mut tracker = Tracker::new(published_rx, tx, metrics.clone());
    let one = reading("e1", &[("edge-1", served())]);
    tracker.observe(&one);
    assert_eq!(metrics.dropped.get(), 1);
    assert_eq!(drain(&mut rx).len(), 1);
    tracker.observe(&one);
    assert_eq!(drain(&mut rx).len(), 1, "the dropped one again");
    tracker.observe(&one);
    assert!(drain(&mut rx).is_empty());
    let mut registry = Registry::default();
    let registered = EventMetrics::register(&mut registry);
    registered.recorded("Served");
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("ksd_exporter_events_dropped_total 0"),
        "{text}"
    );
    assert!(
        text.contains("ksd_exporter_events_recorded_total{reason=\"Served\"} 1"),
        "{text}"
    );
}

#[test]
fn the_token_bucket_allows_a_burst_then_the_rate() {
    let start = tokio::time::Instant::now();
    let mut bucket = TokenBucket::new(2.0, 3);
    for _ in 0..3 {
        assert_eq!(bucket.take(start), Duration::ZERO);
    }
    assert_eq!(bucket.take(start), Duration::from_millis(500));
    let later = start + Duration::from_secs(10);
    assert_eq!(
        bucket.take(later),
        Duration::ZERO,
        "refilled, up to the burst"
    );
}
