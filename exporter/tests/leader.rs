//! Two exporters with leader election against the test API server: only the Lease holder
//! writes; a killed leader is replaced once its Lease expires, a stopped one hands over at
//! once; the new leader adopts the object without a foreign-writer conflict and never
//! publishes a partial state.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{
    Exporter, Harness, LeaseTimings, Servers, expect, exported, metric, servers_of,
    wait_for_metric, wait_ready,
};
use k8s_openapi::api::core::v1::Service;
use ksd_testbed::process::wait_for;
use ksd_testbed::slices::Pod;

const LEASE: &str = "ksd-exporter-test";

/// Conflicts this exporter reported (0 when the series was never written).
async fn conflicts(exporter: &Exporter) -> f64 {
    metric(
        exporter.admin,
        "ksd_exporter_foreign_writer_conflicts_total",
    )
    .await
    .unwrap()
}

async fn written(exporter: &Exporter) -> f64 {
    metric(
        exporter.admin,
        "ksd_exporter_uploads_total{outcome=\"written\"}",
    )
    .await
    .unwrap_or(0.0)
}

/// Every version of the object the store received is one of `states`: nothing partial (a
/// Service without its endpoints, an empty document) was ever uploaded.
fn assert_only_complete_states(h: &Harness, states: &[Servers]) {
    let bodies = h.s3.put_bodies(&h.key());
    assert!(!bodies.is_empty());
    for body in bodies {
        let servers = servers_of(&body);
        assert!(
            states.contains(&servers),
            "a state that is not one of the complete ones was published: {servers:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_duration() {
    let h = Harness::start("leader-kill").await;
    let web = apply_web_and_api(&h);
    let [first, second, third] = three_complete_states();
    let timings = LeaseTimings {
        duration: "3s",
        renew_deadline: "2s",
        retry_period: "500ms",
    };
    let (mut a, mut b) = a_leads_and_b_stands_by(&h, &timings, &first).await;
    only_the_leader_writes(&h, &web, &mut a, &b, &second).await;
    let handed_over = a_killed_leader_is_replaced(&h, &web, &mut a, &b, &third).await;
    assert_only_complete_states(&h, &[first, second, third]);
    eprintln!("hand-over after SIGKILL: {handed_over:?}");
    assert!(b.agent.is_running());
}

/// Setup: `default/web` and `default/api`, one ready pod each; returns `web`.
fn apply_web_and_api(h: &Harness) -> Service {
    let web = exported("default", "web").port("http", 80, 8080).build();
    let api = exported("default", "api").port("http", 80, 9000).build();
    h.api.apply_typed(&web).unwrap();
    h.api.apply_typed(&api).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.4.0.1")])
        .unwrap();
    h.api
        .set_endpoints(&api, &[Pod::ready("api-0", "10.4.1.1")])
        .unwrap();
    web
}

/// The states published in turn: one, two, then three pods of `web`, one of `api`.
fn three_complete_states() -> [Servers; 3] {
    let first = expect(&[
        ("default-web-http", &["http://10.4.0.1:8080"]),
        ("default-api-http", &["http://10.4.1.1:9000"]),
    ]);
    let second = expect(&[
        (
            "default-web-http",
            &["http://10.4.0.1:8080", "http://10.4.0.2:8080"],
        ),
        ("default-api-http", &["http://10.4.1.1:9000"]),
    ]);
    let third = expect(&[
        (
            "default-web-http",
            &[
                "http://10.4.0.1:8080",
                "http://10.4.0.2:8080",
                "http://10.4.0.3:8080",
            ],
        ),
        ("default-api-http", &["http://10.4.1.1:9000"]),
    ]);
    [first, second, third]
}

/// Exporter a takes the Lease and publishes the first state; exporter b, started after it,
/// is ready and says it stands by while a says it leads.
async fn a_leads_and_b_stands_by(
    h: &Harness,
    timings: &LeaseTimings,
    first: &Servers,
) -> (Exporter, Exporter) {
    let mut a = h.spawn_elected(LEASE, "exporter-a", timings);
    h.wait_for_holder(LEASE, "exporter-a", &[&a]).await;
    h.wait_for_servers(&mut a, first).await;
    let mut b = h.spawn_elected(LEASE, "exporter-b", timings);
    // The standby is ready (healthy, its watches synced) and says it stands by.
    wait_ready(&mut b).await;
    wait_for_metric(&b, "ksd_exporter_leader", 0.0).await;
    wait_for_metric(&a, "ksd_exporter_leader", 1.0).await;
    (a, b)
}

/// While a leads, only a writes: the standby uploaded nothing and a still holds the Lease.
async fn only_the_leader_writes(
    h: &Harness,
    web: &Service,
    a: &mut Exporter,
    b: &Exporter,
    second: &Servers,
) {
    h.api
        .set_endpoints(
            web,
            &[
                Pod::ready("web-0", "10.4.0.1"),
                Pod::ready("web-1", "10.4.0.2"),
            ],
        )
        .unwrap();
    h.wait_for_servers(a, second).await;
    assert_eq!(
        written(b).await,
        0.0,
        "the standby wrote:\n{}",
        b.agent.logs()
    );
    assert_eq!(h.lease_holder(LEASE).as_deref(), Some("exporter-a"));
}

/// The leader dies without releasing; the next change waits for its Lease to expire, then
/// the standby publishes it within the bound, holds the Lease, says it leads and saw no
/// foreign writer; returns the time from the kill to the publication.
async fn a_killed_leader_is_replaced(
    h: &Harness,
    web: &Service,
    a: &mut Exporter,
    b: &Exporter,
    third: &Servers,
) -> Duration {
    a.agent.kill9();
    let killed = Instant::now();
    h.api
        .set_endpoints(
            web,
            &[
                Pod::ready("web-0", "10.4.0.1"),
                Pod::ready("web-1", "10.4.0.2"),
                Pod::ready("web-2", "10.4.0.3"),
            ],
        )
        .unwrap();
    // LEASE_DURATION, plus one retry period for the standby to notice, plus DEBOUNCE, plus
    // room for a slow machine: far below what a rescheduled pod would take.
    let bound = Duration::from_secs(3) + Duration::from_millis(500 + 200) + Duration::from_secs(10);
    let published = wait_for("the standby to publish the change", bound, || async {
        let bytes = h.object().await?;
        (servers_of(&bytes) == *third).then_some(())
    })
    .await;
    if let Err(err) = published {
        panic!("{err} within {bound:?} of the kill\n{}", b.agent.logs());
    }
    let handed_over = killed.elapsed();
    assert_eq!(h.lease_holder(LEASE).as_deref(), Some("exporter-b"));
    assert_eq!(metric(b.admin, "ksd_exporter_leader").await, Some(1.0));
    assert_eq!(
        conflicts(b).await,
        0.0,
        "the new leader reported a foreign writer:\n{}",
        b.agent.logs()
    );
    handed_over
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_releases_the_lease_for_an_immediate_hand_over() {
    let h = Harness::start("leader-term").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.5.0.1")])
        .unwrap();
    let first = expect(&[("default-web-http", &["http://10.5.0.1:8080"])]);
    let second = expect(&[(
        "default-web-http",
        &["http://10.5.0.1:8080", "http://10.5.0.2:8080"],
    )]);
    // A Lease far longer than the test waits: only a release can hand it over in time.
    let timings = LeaseTimings {
        duration: "120s",
        renew_deadline: "60s",
        retry_period: "500ms",
    };
    let mut a = h.spawn_elected(LEASE, "exporter-a", &timings);
    h.wait_for_holder(LEASE, "exporter-a", &[&a]).await;
    h.wait_for_servers(&mut a, &first).await;
    let mut b = h.spawn_elected(LEASE, "exporter-b", &timings);
    wait_ready(&mut b).await;
    wait_for_metric(&b, "ksd_exporter_leader", 0.0).await;

    a.agent.terminate();
    let status = a.agent.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        a.agent.logs()
    );
    assert!(
        a.agent.logs().contains("released the Lease"),
        "{}",
        a.agent.logs()
    );

    h.api
        .set_endpoints(
            &web,
            &[
                Pod::ready("web-0", "10.5.0.1"),
                Pod::ready("web-1", "10.5.0.2"),
            ],
        )
        .unwrap();
    h.wait_for_servers(&mut b, &second).await;
    assert_eq!(h.lease_holder(LEASE).as_deref(), Some("exporter-b"));
    let lease = h.api.get("leases", "default", LEASE).unwrap();
    assert_eq!(
        lease
            .pointer("/spec/leaseTransitions")
            .and_then(|v| v.as_i64()),
        Some(1),
        "{lease}"
    );
    assert_eq!(conflicts(&b).await, 0.0, "{}", b.agent.logs());
    assert_only_complete_states(&h, &[first, second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leader_election_the_exporter_leads_alone() {
    let h = Harness::start("leader-off").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &[Pod::ready("web-0", "10.6.0.1")])
        .unwrap();
    let mut a = h.spawn(&[], &[]);
    h.wait_for_servers(
        &mut a,
        &expect(&[("default-web-http", &["http://10.6.0.1:8080"])]),
    )
    .await;
    assert_eq!(metric(a.admin, "ksd_exporter_leader").await, Some(1.0));
    assert_eq!(h.lease_holder(LEASE), None, "no Lease is created");
}
