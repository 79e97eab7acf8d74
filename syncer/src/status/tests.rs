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
                services: Arc::new(vec![ServiceStatus {
                    name: "default-web-80".into(),
                    protocol: "http".into(),
                    servers: vec!["http://10.0.0.1:80".into()],
                }]),
                ..ClusterStatus::default()
            },
            ClusterStatus {
                name: "b".into(),
                key: "b.traefik.yaml".into(),
                etag: Some("\"f1\"".into()),
                state: ClusterState::Served,
                served_etag: Some("\"f1\"".into()),
                servers: 2,
                services: Arc::new(vec![ServiceStatus {
                    name: "default-web-80".into(),
                    protocol: "http".into(),
                    servers: vec!["http://10.1.0.1:80".into(), "http://10.1.0.2:80".into()],
                }]),
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

/// A state with clusters `a` and `b`, each exporting `web` with one server, both in the file.
mod tracked {
    use std::time::{Duration, Instant, SystemTime};

    use ksd_runtime::storage::ObjectInfo;
    use ksd_shared::names::ClusterName;
    use ksd_shared::policy::Refusal;

    use crate::guard::{Exclusion, Kind};
    use crate::state::{FetchOutcome, Policy, State};
    use crate::status::{ServiceStatus, Tracker};

    fn policy() -> Policy {
        Policy {
            confirm_polls: 3,
            stale_after: None,
            max_object_bytes: 4096,
        }
    }

    fn document(servers: &[&str]) -> Vec<u8> {
        let mut text =
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n".to_owned();
        for server in servers {
            text.push_str(&format!("          - url: \"http://{server}:80\"\n"));
        }
        text.into_bytes()
    }

    /// Lists `objects` (cluster, ETag, servers) and fetches every changed one.
    fn cycle(state: &mut State, objects: &[(&str, &str, &[&str])]) {
        let listing: Vec<ObjectInfo> = objects
            .iter()
            .map(|(cluster, etag, _)| ObjectInfo {
                key: format!("{cluster}.traefik.yaml"),
                etag: format!("\"{etag}\""),
                size: 100,
                last_modified: Some(SystemTime::UNIX_EPOCH),
            })
            .collect();
        let plan = state.plan(&listing, &policy());
        let fetched = plan
            .iter()
            .map(|request| {
                let (_, etag, servers) = objects
                    .iter()
                    .find(|(cluster, _, _)| request.cluster.as_str() == *cluster)
                    .unwrap();
                let outcome = FetchOutcome::Object {
                    bytes: document(servers),
                    etag: format!("\"{etag}\""),
                };
                (request.cluster.clone(), outcome)
            })
            .collect();
        state.apply(&listing, fetched, &policy(), Instant::now());
    }

    fn services<'a>(snapshot: &'a crate::status::Snapshot, cluster: &str) -> &'a [ServiceStatus] {
        let found = snapshot
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .unwrap();
        &found.services
    }

    fn servers(snapshot: &crate::status::Snapshot, cluster: &str) -> Vec<String> {
        services(snapshot, cluster)
            .iter()
            .flat_map(|s| s.servers.clone())
            .collect()
    }

    #[test]
    fn a_clusters_services_follow_its_document_and_refusals_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut state = State::new();
        let mut tracker = Tracker::new(None);
        cycle(
            &mut state,
            &[("a", "a1", &["10.0.0.1"]), ("b", "b1", &["10.1.0.1"])],
        );
        let first = tracker.snapshot(&state, now);
        assert_eq!(servers(&first, "a"), ["http://10.0.0.1:80"]);
        assert_eq!(servers(&first, "b"), ["http://10.1.0.1:80"]);

        // b's server moves; a's list is the one already built, b's is new.
        cycle(
            &mut state,
            &[("a", "a1", &["10.0.0.1"]), ("b", "b2", &["10.1.0.2"])],
        );
        let second = tracker.snapshot(&state, now);
        let a = |s: &crate::status::Snapshot| {
            s.clusters
                .iter()
                .find(|c| c.name == "a")
                .unwrap()
                .services
                .clone()
        };
        assert!(std::sync::Arc::ptr_eq(&a(&first), &a(&second)));
        assert_eq!(servers(&second, "b"), ["http://10.1.0.2:80"]);
        let b = second.clusters.iter().find(|c| c.name == "b").unwrap();
        assert_eq!(b.servers, 1);

        // The same document with a server refused: the refused server is not listed.
        cycle(
            &mut state,
            &[
                ("a", "a2", &["10.0.0.1", "127.0.0.1"]),
                ("b", "b2", &["10.1.0.2"]),
            ],
        );
        let refusal = Exclusion::Server {
            cluster: ClusterName::parse("a").unwrap(),
            kind: Kind::Http,
            service: "web".to_owned(),
            server: "http://127.0.0.1:80".to_owned(),
            reason: Refusal::Loopback,
        };
        tracker.observe_exclusions(std::slice::from_ref(&refusal), &state);
        let third = tracker.snapshot(&state, now);
        assert_eq!(servers(&third, "a"), ["http://10.0.0.1:80"]);
        let a_status = third.clusters.iter().find(|c| c.name == "a").unwrap();
        assert_eq!(a_status.servers, 1);

        // The refusal lifted (the policy changed with the same document): listed again.
        tracker.observe_exclusions(&[], &state);
        let fourth = tracker.snapshot(&state, now);
        assert_eq!(
            servers(&fourth, "a"),
            ["http://10.0.0.1:80", "http://127.0.0.1:80"]
        );

        // A cluster gone from the state is gone from the snapshot.
        for _ in 0..policy().confirm_polls {
            cycle(&mut state, &[("b", "b2", &["10.1.0.2"])]);
        }
        let fifth = tracker.snapshot(&state, now);
        assert!(fifth.clusters.iter().all(|c| c.name != "a"), "{fifth:?}");
    }
}
