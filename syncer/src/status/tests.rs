//! The snapshot's answers: explanations, acknowledgements, the HTML page, lines of messages.

#![allow(clippy::unwrap_used)]

use ksd_shared::names::ClusterName;
use ksd_shared::status::{Acknowledgement, ClusterState, SyncerName};

use super::tracker::line_of;
use super::*;

fn sample() -> Snapshot {
    Snapshot {
        syncer: Some("edge-1".into()),
        taken_at: 10,
        synced: true,
        clusters: vec![
            ClusterStatus {
                name: "a".into(),
                key: "a.traefik.yaml".into(),
                etag: Some("\"e2\"".into()),
                state: ClusterState::Rejected,
                reason: Some("invalid_yaml".into()),
                detail: Some("at line 4: <bad> & worse".into()),
                line: Some(4),
                served_etag: Some("\"e1\"".into()),
                servers: 1,
                services: vec![ServiceStatus {
                    name: "default-web-80".into(),
                    protocol: "http".into(),
                    servers: vec!["http://10.0.0.1:80".into()],
                }],
                ..ClusterStatus::default()
            },
            ClusterStatus {
                name: "b".into(),
                key: "b.traefik.yaml".into(),
                etag: Some("\"f1\"".into()),
                state: ClusterState::Served,
                served_etag: Some("\"f1\"".into()),
                servers: 2,
                services: vec![ServiceStatus {
                    name: "default-web-80".into(),
                    protocol: "http".into(),
                    servers: vec!["http://10.1.0.1:80".into(), "http://10.1.0.2:80".into()],
                }],
                ..ClusterStatus::default()
            },
        ],
        conflicts: vec![],
        output: Some(OutputStatus {
            path: "/t/k.yml".into(),
            hash: "abc".into(),
            bytes: 42,
            last_write: Some(9),
        }),
    }
}

#[test]
fn explain_names_contributions_and_reasons() {
    let e = sample().explain("default-web-80.b");
    assert!(e.served);
    assert_eq!(e.service, "default-web-80");
    let clusters: Vec<&str> = e.contributions.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(clusters, ["a", "b"]);
    assert_eq!(e.contributions[1].servers.len(), 2);
    assert_eq!(e.contributions[0].etag.as_deref(), Some("\"e1\""));
    assert_eq!(e.left_out.len(), 1);
    assert!(e.left_out[0].reason.contains("invalid_yaml"), "{e:?}");
    let text = render_explanation(&e);
    assert!(
        text.contains("cluster b (http, version \"f1\"): http://10.1.0.1:80"),
        "{text}"
    );

    let none = sample().explain("nope");
    assert!(!none.served && none.left_out.is_empty());
    assert!(render_explanation(&none).contains("not served"));
}

#[test]
fn acknowledgement_carries_the_cluster_facts() {
    let name = SyncerName::parse("edge-1").unwrap();
    let ack = sample().acknowledgement(&name, 77);
    let a = &ack.clusters[&ClusterName::parse("a").unwrap()];
    assert_eq!(a.state, ClusterState::Rejected);
    assert_eq!(a.line, Some(4));
    assert_eq!(a.services, 1);
    assert_eq!(ack.output_hash.as_deref(), Some("abc"));
    let parsed = Acknowledgement::parse(&ack.to_bytes()).unwrap();
    assert_eq!(parsed, ack);
    assert!(
        !parsed
            .answer(&ClusterName::parse("a").unwrap(), "\"e2\"")
            .is_served()
    );
    assert!(
        parsed
            .answer(&ClusterName::parse("b").unwrap(), "f1")
            .is_served()
    );
}

#[test]
fn html_escapes_and_holds_the_facts() {
    let html = render_html(&sample());
    assert!(html.contains("&lt;bad&gt; &amp; worse"), "{html}");
    assert!(!html.contains("<bad>"));
    assert!(!html.contains("<script"));
    for fact in [
        "invalid_yaml",
        "&quot;e1&quot;",
        "default-web-80",
        "abc",
        "42",
    ] {
        assert!(html.contains(fact), "{fact} missing");
    }
}

#[test]
fn lines_are_read_from_messages() {
    assert_eq!(line_of("mapping error at line 12, column 3"), Some(12));
    assert_eq!(line_of("Line 3: bad"), Some(3));
    assert_eq!(line_of("no position"), None);
}
