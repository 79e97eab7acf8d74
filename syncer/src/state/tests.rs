//! The rules of [`super::State`], one scenario each.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

const T0: Duration = Duration::from_secs(1_700_000_000);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + T0
}

/// The syncer's monotonic clock in tests: a fixed origin, moved by hand.
fn clock() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn policy() -> Policy {
    Policy {
        confirm_polls: 3,
        stale_after: None,
        max_object_bytes: 1024,
    }
}

fn cluster(name: &str) -> ClusterName {
    ClusterName::parse(name).unwrap()
}

fn listed(key: &str, etag: &str) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        etag: format!("\"{etag}\""),
        size: 100,
        last_modified: Some(now()),
    }
}

fn doc(service: &str, ip: &str) -> Vec<u8> {
    format!(
        "http:\n  services:\n    {service}:\n      loadBalancer:\n        servers:\n          - url: \"http://{ip}:80\"\n"
    )
    .into_bytes()
}

fn object(bytes: Vec<u8>, etag: &str) -> FetchOutcome {
    FetchOutcome::Object {
        bytes,
        etag: format!("\"{etag}\""),
    }
}

/// One cycle where every planned fetch is answered by `answer`.
fn cycle(
    state: &mut State,
    listing: &[ObjectInfo],
    answer: impl Fn(&FetchRequest) -> FetchOutcome,
) -> (Vec<FetchRequest>, Vec<Event>) {
    let plan = state.plan(listing, &policy());
    let fetched = plan
        .iter()
        .map(|r| (r.cluster.clone(), answer(r)))
        .collect();
    let events = state.apply(listing, fetched, &policy(), clock());
    (plan, events)
}

fn published(state: &State) -> Vec<(String, Document)> {
    match state.decide(&policy()) {
        Decision::Publish(docs) => docs
            .into_iter()
            .map(|(cluster, document)| (cluster.to_string(), (*document).clone()))
            .collect(),
        Decision::Hold(hold) => panic!("held: {hold:?}"),
    }
}

fn parsed(bytes: &[u8]) -> Document {
    traefik::parse_cluster_document(bytes, &Limits::default()).unwrap()
}

#[test]
fn fetches_only_changed_etags_with_if_none_match() {
    let mut state = State::new();
    let listing = [listed("a.traefik.yaml", "1")];
    let (plan, events) = cycle(&mut state, &listing, |_| {
        object(doc("web", "10.0.0.1"), "1")
    });
    assert_eq!(
        plan,
        vec![FetchRequest {
            cluster: cluster("a"),
            key: "a.traefik.yaml".into(),
            if_none_match: None,
        }]
    );
    assert!(matches!(&events[..], [Event::Accepted { servers: 1, .. }]));

    let revision = state.revision();
    let (plan, events) = cycle(&mut state, &listing, |_| unreachable!());
    assert!(plan.is_empty() && events.is_empty());
    assert_eq!(state.revision(), revision, "an idle poll changes nothing");

    let listing = [listed("a.traefik.yaml", "2")];
    let (plan, _) = cycle(&mut state, &listing, |_| {
        object(doc("web", "10.0.0.2"), "2")
    });
    assert_eq!(plan[0].if_none_match.as_deref(), Some("\"1\""));
    assert_eq!(
        published(&state),
        vec![("a".into(), parsed(&doc("web", "10.0.0.2")))]
    );
}

#[test]
fn not_modified_remembers_the_listing_etag() {
    let mut state = State::new();
    cycle(&mut state, &[listed("a.traefik.yaml", "1")], |_| {
        object(doc("web", "10.0.0.1"), "1")
    });
    // Same object, ETag spelt differently in the listing (weak, unquoted).
    let listing = [ObjectInfo {
        etag: "W/1-x".into(),
        ..listed("a.traefik.yaml", "1")
    }];
    let (plan, events) = cycle(&mut state, &listing, |_| FetchOutcome::NotModified);
    assert_eq!(plan.len(), 1);
    assert!(events.is_empty());
    let (plan, _) = cycle(&mut state, &listing, |_| unreachable!());
    assert!(plan.is_empty(), "asked once, not on every poll");
    assert_eq!(published(&state).len(), 1);
}

#[test]
fn weak_and_quoted_etags_compare_equal() {
    assert!(same_etag("\"abc\"", "abc"));
    assert!(same_etag("W/\"abc\"", "\"abc\""));
    assert!(!same_etag("\"abc\"", "\"abd\""));
}

#[test]
fn other_formats_are_ignored_and_garbage_keys_reported_once() {
    let mut state = State::new();
    let listing = [
        listed("a.backends.yaml", "b"),
        listed("notes.txt", "n"),
        listed("A.traefik.yaml", "u"),
        listed("a.traefik.yaml", "1"),
    ];
    let (plan, events) = cycle(&mut state, &listing, |_| {
        object(doc("web", "10.0.0.1"), "1")
    });
    assert_eq!(plan.len(), 1, "{plan:?}");
    let invalid: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::InvalidKey { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(invalid, vec!["notes.txt", "A.traefik.yaml"]);
    assert_eq!(state.summary().invalid_keys, 2);

    let (_, events) = cycle(&mut state, &listing, |_| unreachable!());
    assert!(events.is_empty(), "reported once: {events:?}");

    // Gone, then back: reported again.
    cycle(&mut state, &listing[3..], |_| unreachable!());
    let (_, events) = cycle(&mut state, &listing, |_| unreachable!());
    assert_eq!(events.len(), 2);
}

#[test]
fn a_rejected_version_keeps_the_last_good_one_and_is_reported_once() {
    let mut state = State::new();
    cycle(
        &mut state,
        &[listed("a.traefik.yaml", "1"), listed("b.traefik.yaml", "1")],
        |r| object(doc(&format!("svc-{}", r.cluster), "10.0.0.1"), "1"),
    );
    let before = published(&state);

    let listing = [listed("a.traefik.yaml", "2"), listed("b.traefik.yaml", "1")];
    let bad = b"http:\n  routers:\n    r:\n      rule: Host(`x`)\n      service: s\n".to_vec();
    let (plan, events) = cycle(&mut state, &listing, |_| object(bad.clone(), "2"));
    assert_eq!(plan.len(), 1);
    match &events[..] {
        [
            Event::Rejected {
                cluster: c,
                reason,
                keeps_last_good: true,
                etag,
                ..
            },
        ] => {
            assert_eq!(c.as_str(), "a");
            assert_eq!(*reason, "not_services_only");
            assert_eq!(etag, "\"2\"");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        published(&state),
        before,
        "a keeps its last good document, b unaffected"
    );
    assert_eq!(
        state.summary().rejected,
        BTreeMap::from([("not_services_only", 1)])
    );

    let (plan, events) = cycle(&mut state, &listing, |_| unreachable!());
    assert!(plan.is_empty() && events.is_empty(), "once per ETag");

    // A fixed version replaces the rejection.
    let listing = [listed("a.traefik.yaml", "3"), listed("b.traefik.yaml", "1")];
    cycle(&mut state, &listing, |_| {
        object(doc("svc-a", "10.0.0.9"), "3")
    });
    assert!(state.summary().rejected.is_empty());
    assert_eq!(published(&state)[0].1, parsed(&doc("svc-a", "10.0.0.9")));
}

#[test]
fn a_first_version_that_is_rejected_publishes_nothing_for_that_cluster() {
    let mut state = State::new();
    let listing = [listed("a.traefik.yaml", "1"), listed("b.traefik.yaml", "1")];
    let (_, events) = cycle(&mut state, &listing, |r| {
        if r.cluster.as_str() == "a" {
            object(b"{{ bad".to_vec(), "1")
        } else {
            object(doc("web", "10.0.0.1"), "1")
        }
    });
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            reason: "template_marker",
            keeps_last_good: false,
            ..
        }
    )));
    assert_eq!(published(&state).len(), 1);
    assert_eq!(published(&state)[0].0, "b");
}

#[test]
fn too_large_in_the_listing_is_rejected_without_a_fetch() {
    let mut state = State::new();
    let big = ObjectInfo {
        size: 2048,
        ..listed("a.traefik.yaml", "1")
    };
    let (plan, events) = cycle(&mut state, std::slice::from_ref(&big), |_| unreachable!());
    assert!(plan.is_empty());
    assert!(matches!(
        &events[..],
        [Event::Rejected {
            reason: REASON_TOO_LARGE,
            ..
        }]
    ));
    let (_, events) = cycle(&mut state, &[big], |_| unreachable!());
    assert!(events.is_empty());
    assert_eq!(
        state.summary().rejected,
        BTreeMap::from([(REASON_TOO_LARGE, 1)])
    );
}

#[test]
fn too_large_on_fetch_and_by_the_parser_share_the_reason() {
    let mut state = State::new();
    let (_, events) = cycle(&mut state, &[listed("a.traefik.yaml", "1")], |_| {
        FetchOutcome::TooLarge
    });
    assert!(matches!(
        &events[..],
        [Event::Rejected {
            reason: REASON_TOO_LARGE,
            ..
        }]
    ));
    let (_, events) = cycle(&mut state, &[listed("a.traefik.yaml", "2")], |_| {
        object(vec![b'#'; 2000], "2")
    });
    assert!(matches!(
        &events[..],
        [Event::Rejected {
            reason: REASON_TOO_LARGE,
            ..
        }]
    ));
}

#[test]
fn an_absent_cluster_is_removed_only_after_confirm_polls() {
    let mut state = State::new();
    let both = [listed("a.traefik.yaml", "1"), listed("b.traefik.yaml", "1")];
    cycle(&mut state, &both, |r| {
        object(doc(&format!("svc-{}", r.cluster), "10.0.0.1"), "1")
    });
    let only_b = [listed("b.traefik.yaml", "1")];
    for poll in 1..3 {
        let (_, events) = cycle(&mut state, &only_b, |_| unreachable!());
        assert!(matches!(&events[..], [Event::Missing { polls, .. }] if *polls == poll));
        assert_eq!(
            published(&state).len(),
            2,
            "still published after {poll} polls"
        );
        assert_eq!(state.summary().missing, 1);
    }
    let (_, events) = cycle(&mut state, &only_b, |_| unreachable!());
    assert!(matches!(&events[..], [Event::Removed { .. }]));
    assert_eq!(published(&state).len(), 1);
}

#[test]
fn a_cluster_that_returns_before_confirmation_stays() {
    let mut state = State::new();
    let listing = [listed("a.traefik.yaml", "1")];
    cycle(&mut state, &listing, |_| {
        object(doc("web", "10.0.0.1"), "1")
    });
    for _ in 0..2 {
        cycle(&mut state, &[], |_| unreachable!());
    }
    let (plan, events) = cycle(&mut state, &listing, |_| unreachable!());
    assert!(plan.is_empty(), "known ETag, no fetch");
    assert_eq!(
        events,
        vec![Event::Returned {
            cluster: cluster("a")
        }]
    );
    for _ in 0..2 {
        cycle(&mut state, &[], |_| unreachable!());
    }
    assert_eq!(published(&state).len(), 1, "the count restarted");
}

#[test]
fn an_empty_listing_at_start_is_held_until_confirmed() {
    let mut state = State::new();
    assert_eq!(state.decide(&policy()), Decision::Hold(Hold::NotSynced));
    for polls in 1..3 {
        cycle(&mut state, &[], |_| unreachable!());
        assert_eq!(
            state.decide(&policy()),
            Decision::Hold(Hold::EmptyListing {
                polls,
                confirm_polls: 3
            })
        );
    }
    cycle(&mut state, &[], |_| unreachable!());
    assert_eq!(state.decide(&policy()), Decision::Publish(Vec::new()));
}

#[test]
fn nothing_is_decided_before_every_listed_object_was_fetched() {
    let mut state = State::new();
    let listing = [listed("a.traefik.yaml", "1"), listed("b.traefik.yaml", "1")];
    cycle(&mut state, &listing, |r| {
        if r.cluster.as_str() == "a" {
            FetchOutcome::Failed
        } else {
            object(doc("web", "10.0.0.1"), "1")
        }
    });
    assert_eq!(state.decide(&policy()), Decision::Hold(Hold::NotSynced));
    let (plan, _) = cycle(&mut state, &listing, |_| {
        object(doc("api", "10.0.0.2"), "1")
    });
    assert_eq!(plan.len(), 1, "only the failed one is fetched again");
    assert_eq!(published(&state).len(), 2);

    // Once synced, a failed fetch keeps the last good document.
    let listing = [listed("a.traefik.yaml", "2"), listed("b.traefik.yaml", "1")];
    cycle(&mut state, &listing, |_| FetchOutcome::Failed);
    assert_eq!(published(&state).len(), 2);
}

#[test]
fn staleness_is_measured_on_the_syncers_own_clock() {
    let policy = Policy {
        stale_after: Some(Duration::from_secs(60)),
        ..policy()
    };
    let at = |secs: u64| clock() + Duration::from_secs(secs);
    let mut state = State::new();
    // An object whose last-modified is a day old (or in the future: a skewed store) is
    // fresh when first seen: only our clock counts.
    let skewed = |key: &str, etag: &str, modified: SystemTime| ObjectInfo {
        last_modified: Some(modified),
        ..listed(key, etag)
    };
    let day = Duration::from_secs(86_400);
    let listing = [
        skewed("a.traefik.yaml", "1", now() - day),
        skewed("b.traefik.yaml", "1", now() + day),
    ];
    let plan = state.plan(&listing, &policy);
    assert_eq!(plan.len(), 2);
    let fetched = plan
        .iter()
        .map(|r| {
            (
                r.cluster.clone(),
                object(doc(&format!("s-{}", r.cluster), "10.0.0.1"), "1"),
            )
        })
        .collect();
    state.apply(&listing, fetched, &policy, at(0));
    let Decision::Publish(docs) = state.decide(&policy) else {
        panic!("held")
    };
    assert_eq!(docs.len(), 2, "both fresh whatever their timestamps");

    // b's heartbeat (same ETag, new last-modified) keeps it fresh; a does not change.
    let listing = [
        skewed("a.traefik.yaml", "1", now() - day),
        skewed("b.traefik.yaml", "1", now() + day + Duration::from_secs(30)),
    ];
    assert!(
        state.plan(&listing, &policy).is_empty(),
        "a heartbeat is not fetched"
    );
    let events = state.apply(&listing, Vec::new(), &policy, at(50));
    assert!(events.is_empty(), "{events:?}");
    let events = state.apply(&listing, Vec::new(), &policy, at(61));
    assert!(
        matches!(&events[..], [Event::Stale { cluster, .. }] if cluster.as_str() == "a"),
        "{events:?}"
    );
    let Decision::Publish(docs) = state.decide(&policy) else {
        panic!("held")
    };
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].0.as_str(), "b");
    assert_eq!(state.summary().stale, 1);

    // a's exporter comes back: a new last-modified is enough.
    let listing = [
        skewed("a.traefik.yaml", "1", now()),
        skewed("b.traefik.yaml", "1", now() + day + Duration::from_secs(30)),
    ];
    let events = state.apply(&listing, Vec::new(), &policy, at(62));
    assert!(events.contains(&Event::Fresh {
        cluster: cluster("a")
    }));

    // Both silent for longer than STALE_AFTER: the file stays as it is.
    let events = state.apply(&listing, Vec::new(), &policy, at(200));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        state.decide(&policy),
        Decision::Hold(Hold::NothingServable {
            listed: 2,
            stale: 2,
            rejected: 0
        })
    );
}

#[test]
fn all_rejected_holds_the_file_but_a_confirmed_empty_listing_empties_it() {
    let mut state = State::new();
    let listing = [listed("a.traefik.yaml", "1")];
    cycle(&mut state, &listing, |_| object(b"{{ bad".to_vec(), "1"));
    assert_eq!(
        state.decide(&policy()),
        Decision::Hold(Hold::NothingServable {
            listed: 1,
            stale: 0,
            rejected: 1
        })
    );
    for _ in 0..3 {
        cycle(&mut state, &[], |_| unreachable!());
    }
    assert_eq!(state.decide(&policy()), Decision::Publish(Vec::new()));
}

#[test]
fn a_restored_cluster_keeps_serving_when_its_current_object_is_rejected() {
    let mut state = State::new();
    let seeded = state.restore(vec![
        ClusterDocument {
            cluster: cluster("a"),
            document: parsed(&doc("web", "10.0.0.1")),
        },
        ClusterDocument {
            cluster: cluster("b"),
            document: parsed(&doc("api", "10.0.0.2")),
        },
    ]);
    assert_eq!(seeded, 2);
    assert_eq!(state.decide(&policy()), Decision::Hold(Hold::NotSynced));
    let listing = [listed("a.traefik.yaml", "1"), listed("b.traefik.yaml", "1")];
    let (_, events) = cycle(&mut state, &listing, |r| {
        if r.cluster.as_str() == "a" {
            object(b"{{ bad".to_vec(), "1")
        } else {
            object(doc("api", "10.0.0.3"), "1")
        }
    });
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            keeps_last_good: true,
            ..
        }
    )));
    assert_eq!(
        published(&state),
        vec![
            ("a".into(), parsed(&doc("web", "10.0.0.1"))),
            ("b".into(), parsed(&doc("api", "10.0.0.3")))
        ]
    );
    assert_eq!(state.restored_clusters(), vec![cluster("a")]);
}

#[test]
fn summary_counts_servers_per_published_cluster() {
    let mut state = State::new();
    let two = b"http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n          - url: \"http://10.0.0.1:80\"\n          - url: \"http://10.0.0.2:80\"\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"10.0.0.3:5432\"\n".to_vec();
    cycle(&mut state, &[listed("a.traefik.yaml", "1")], |_| {
        object(two.clone(), "1")
    });
    let summary = state.summary();
    assert_eq!(summary.seen, 1);
    assert_eq!(summary.published, 1);
    assert_eq!(summary.servers, BTreeMap::from([(cluster("a"), 3)]));
}

#[test]
fn conflicts_are_noted_once_per_change() {
    let mut state = State::new();
    let conflict = Conflict {
        service: "web".into(),
        kind: ksd_shared::merge::ConflictKind::Options,
        winner: cluster("a"),
        loser: cluster("b"),
    };
    assert!(!state.note_conflicts(&[]));
    assert!(state.note_conflicts(std::slice::from_ref(&conflict)));
    assert!(!state.note_conflicts(std::slice::from_ref(&conflict)));
    assert!(state.note_conflicts(&[]));
}
