//! `EVENTS=true`: the exporter records on each Service what every named syncer does with it,
//! as Kubernetes Events that the API and the real `kubectl describe service` show, from two
//! real syncers of which one rejects the document; and nothing without it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::{Exporter, Harness, expect, exported, metric, syncer, wait_metrics};
use k8s_openapi::api::core::v1::Service;
use ksd_testbed::process::{Agent, wait_for};
use ksd_testbed::slices::{Pod, ready_pods};
use serde_json::Value;

/// The Service's events in core `v1` form, as `kubectl describe` lists them: (type, reason,
/// message, count), sorted.
async fn events_of(h: &Harness, name: &str, uid: &str) -> Vec<(String, String, String, i64)> {
    let selector = format!(
        "involvedObject.name={name},involvedObject.namespace=default,involvedObject.kind=Service,involvedObject.uid={uid}"
    );
    let path = format!(
        "/api/v1/namespaces/default/events?fieldSelector={}",
        selector.replace('=', "%3D").replace(',', "%2C")
    );
    let list = h.api.client().get(&path).await.unwrap();
    let text = |e: &Value, f: &str| e[f].as_str().unwrap_or_default().to_owned();
    let mut events: Vec<_> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let count = e["count"].as_i64().unwrap_or(0);
            (
                text(e, "type"),
                text(e, "reason"),
                text(e, "message"),
                count,
            )
        })
        .collect();
    events.sort();
    events
}

/// Waits until the Service's events are exactly `expected` (type, reason, message, count).
async fn wait_events(
    h: &Harness,
    exporter: &Exporter,
    uid: &str,
    what: &str,
    expected: &[(&str, &str, &str, i64)],
) {
    let mut expected: Vec<(String, String, String, i64)> = expected
        .iter()
        .map(|(t, r, m, c)| ((*t).to_owned(), (*r).to_owned(), (*m).to_owned(), *c))
        .collect();
    expected.sort();
    let result = wait_for(what, Duration::from_secs(60), || async {
        (events_of(h, "web", uid).await == expected).then_some(())
    })
    .await;
    if let Err(err) = result {
        panic!(
            "{err}: expected {expected:#?}\nfound {:#?}\n{}",
            events_of(h, "web", uid).await,
            exporter.agent.logs()
        );
    }
}

fn kubectl_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("kubectl not found on PATH: run scripts/test"))
}

/// The `Events:` section of `kubectl describe service NAME`.
async fn describe_events(h: &Harness, name: &str) -> String {
    let cache = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(kubectl_binary())
        .arg("--kubeconfig")
        .arg(h.api.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["describe", "service", name, "-n", "default"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split_once("Events:")
        .map(|(_, events)| events.to_owned())
        .unwrap_or_else(|| panic!("no Events section: {stdout}"))
}

fn line_with<'a>(section: &'a str, needle: &str) -> &'a str {
    section
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in {section}"))
}

const SERVED_OPEN: &str = "Served by syncer edge-open as default-web-http";
const SERVED_STRICT: &str = "Served by syncer edge-strict as default-web-http";
const REJECTED_STRICT: &str =
    "Syncer edge-strict rejected the document of cluster test-cluster (too_large)";

/// A Service `web` exported with EVENTS=true, its large document published, and two syncers:
/// edge-open, and edge-strict whose MAX_OBJECT_BYTES fits the small document only.
struct Setup {
    h: Harness,
    web: Service,
    uid: String,
    exporter: Exporter,
    small: Vec<Pod>,
    large: Vec<Pod>,
    _syncers: [Agent; 2],
    _dirs: [tempfile::TempDir; 2],
}

async fn setup() -> Setup {
    let h = Harness::start("events").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    let uid = h.api.apply_typed(&web).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let small = ready_pods("web", 2, Ipv4Addr::new(10, 0, 0, 1));
    h.api.set_endpoints(&web, &small).unwrap();
    let mut exporter = h.spawn(&[], &[("ACK_INTERVAL", "1s"), ("EVENTS", "true")]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[(
            "default-web-http",
            &["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        )]),
    )
    .await;
    let size = h.object().await.unwrap().len();
    // Room for the small document, not for the large one.
    let limit = (size + 200).to_string();
    let large = ready_pods("big", 40, Ipv4Addr::new(10, 0, 1, 1));
    h.api.set_endpoints(&web, &large).unwrap();
    wait_for("the large document", Duration::from_secs(30), || async {
        (h.object().await?.len() > size + 200).then_some(())
    })
    .await
    .unwrap();

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let open = syncer(&h, "edge-open", dirs[0].path(), &[]);
    let strict = syncer(
        &h,
        "edge-strict",
        dirs[1].path(),
        &[("MAX_OBJECT_BYTES", &limit)],
    );
    wait_metrics(
        &exporter,
        "edge-open serves, edge-strict does not",
        &[
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-open\"}",
                Some(1.0),
            ),
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-strict\"}",
                Some(0.0),
            ),
        ],
    )
    .await;
    Setup {
        h,
        web,
        uid,
        exporter,
        small,
        large,
        _syncers: [open, strict],
        _dirs: dirs,
    }
}

/// Served by edge-open, Rejected by edge-strict, in the API and in `kubectl describe`;
/// returns the rejection's note.
async fn served_and_rejected(s: &Setup) -> String {
    let Setup {
        h, exporter, uid, ..
    } = s;
    let found = wait_for("the rejection's event", Duration::from_secs(60), || async {
        let events = events_of(h, "web", uid).await;
        events
            .iter()
            .find(|(_, reason, _, _)| reason == "Rejected")
            .map(|(_, _, message, _)| message.clone())
    })
    .await
    .unwrap();
    assert!(found.starts_with(REJECTED_STRICT), "{found}");
    let rejected = found.as_str();
    wait_events(
        h,
        exporter,
        uid,
        "Served by edge-open, Rejected by edge-strict",
        &[
            ("Normal", "Served", SERVED_OPEN, 1),
            ("Warning", "Rejected", rejected, 1),
        ],
    )
    .await;
    let described = describe_events(h, "web").await;
    let served_line = line_with(&described, SERVED_OPEN);
    assert!(served_line.contains("Normal") && served_line.contains("ksd-exporter"));
    let rejected_line = line_with(&described, "rejected the document");
    assert!(rejected_line.contains("Warning") && rejected_line.contains("too_large"));

    found
}

/// The document shrinks under edge-strict's limit: served by both. edge-open's state did not
/// change, so it gets no new event.
async fn served_by_both(s: &Setup, rejected: &str) {
    let Setup {
        h,
        web,
        uid,
        exporter,
        small,
        ..
    } = s;
    h.api.set_endpoints(web, small).unwrap();
    wait_events(
        h,
        exporter,
        uid,
        "Served by both",
        &[
            ("Normal", "Served", SERVED_OPEN, 1),
            ("Normal", "Served", SERVED_STRICT, 1),
            ("Warning", "Rejected", rejected, 1),
        ],
    )
    .await;
    wait_metrics(
        exporter,
        "both serve; three events recorded",
        &[
            (
                "ksd_exporter_syncer_serving{syncer=\"edge-strict\"}",
                Some(1.0),
            ),
            (
                "ksd_exporter_events_recorded_total{reason=\"Served\"}",
                Some(2.0),
            ),
            (
                "ksd_exporter_events_recorded_total{reason=\"Rejected\"}",
                Some(1.0),
            ),
            ("ksd_exporter_events_dropped_total", Some(0.0)),
        ],
    )
    .await;
}

/// Over the limit again: rejected, now while the small version is still served, which is a
/// new state. Then small and large once more: both states recur, as the series of the events
/// recorded for them.
async fn states_recur_as_series(s: &Setup, rejected: &str) {
    let Setup {
        h,
        web,
        uid,
        exporter,
        small,
        large,
        ..
    } = s;
    let rejected_older = rejected.replace(
        "it serves none of this cluster's services",
        "it still serves an older version",
    );
    h.api.set_endpoints(web, large).unwrap();
    wait_events(
        h,
        exporter,
        uid,
        "rejected while an older version is served",
        &[
            ("Normal", "Served", SERVED_OPEN, 1),
            ("Normal", "Served", SERVED_STRICT, 1),
            ("Warning", "Rejected", rejected, 1),
            ("Warning", "Rejected", &rejected_older, 1),
        ],
    )
    .await;
    h.api.set_endpoints(web, small).unwrap();
    wait_events(
        h,
        exporter,
        uid,
        "served by edge-strict again, as a series",
        &[
            ("Normal", "Served", SERVED_OPEN, 1),
            ("Normal", "Served", SERVED_STRICT, 2),
            ("Warning", "Rejected", rejected, 1),
            ("Warning", "Rejected", &rejected_older, 1),
        ],
    )
    .await;
    h.api.set_endpoints(web, large).unwrap();
    wait_events(
        h,
        exporter,
        uid,
        "the same rejection again, as a series",
        &[
            ("Normal", "Served", SERVED_OPEN, 1),
            ("Normal", "Served", SERVED_STRICT, 2),
            ("Warning", "Rejected", rejected, 1),
            ("Warning", "Rejected", &rejected_older, 2),
        ],
    )
    .await;
    let described = describe_events(h, "web").await;
    assert!(
        line_with(&described, "still serves an older version").contains("(x2 over"),
        "{described}"
    );
    assert_eq!(
        metric(
            exporter.admin,
            "ksd_exporter_event_errors_total{operation=\"create\"}"
        )
        .await,
        None,
        "no write failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_say_which_syncer_serves_and_which_rejects() {
    let s = setup().await;
    let rejected = served_and_rejected(&s).await;
    served_by_both(&s, &rejected).await;
    states_recur_as_series(&s, &rejected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_no_event_is_recorded() {
    let h = Harness::start("events-off").await;
    let web = exported("default", "web").port("http", 80, 8080).build();
    h.api.apply_typed(&web).unwrap();
    h.api
        .set_endpoints(&web, &ready_pods("web", 2, Ipv4Addr::new(10, 0, 0, 1)))
        .unwrap();
    let mut exporter = h.spawn(&[], &[("ACK_INTERVAL", "1s")]);
    h.wait_for_servers(
        &mut exporter,
        &expect(&[(
            "default-web-http",
            &["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        )]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _syncer = syncer(&h, "edge-open", dir.path(), &[]);
    wait_metrics(
        &exporter,
        "edge-open serves",
        &[(
            "ksd_exporter_syncer_serving{syncer=\"edge-open\"}",
            Some(1.0),
        )],
    )
    .await;
    // Several more readings of the serving acknowledgement: still no event.
    let admin = exporter.admin;
    let reads = metric(admin, "ksd_exporter_ack_reads_total").await.unwrap();
    wait_for(
        "three more readings",
        Duration::from_secs(30),
        || async move {
            (metric(admin, "ksd_exporter_ack_reads_total").await? >= reads + 3.0).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        h.api.list("events").is_empty(),
        "{:?}",
        h.api.list("events")
    );
    assert_eq!(
        metric(
            admin,
            "ksd_exporter_events_recorded_total{reason=\"Served\"}"
        )
        .await,
        None
    );
}
