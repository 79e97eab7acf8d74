//! The trust boundary, through the real `ksd-syncer` and the file Traefik would read: what a
//! cluster document cannot make the syncer write (special-purpose or foreign addresses, the
//! administrator's service names), and what cannot make it empty, freeze or lose the file
//! (all clusters stale or rejected, a clock hours ahead, a restart while a cluster's object is
//! invalid, a FIFO or a huge file in the store, a task that dies). Each runs against a local
//! directory and against S3 where the store matters.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::*;
use ksd_testbed::process::wait_for;
use ksd_testbed::s3::S3Fixture;
use serde_yaml::Value;

/// Where the cluster documents of one test live.
enum Store {
    Local {
        dir: tempfile::TempDir,
        storage: ksd_runtime::storage::Storage,
    },
    S3 {
        fixture: Box<S3Fixture>,
        prefix: String,
    },
}

impl Store {
    async fn local() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let storage = local_storage(dir.path()).await;
        Store::Local { dir, storage }
    }

    async fn s3(prefix: &str) -> Store {
        Store::S3 {
            fixture: Box::new(S3Fixture::start().await.unwrap()),
            prefix: prefix.to_owned(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Store::Local { .. } => "file://",
            Store::S3 { .. } => "s3://",
        }
    }

    async fn put(&self, key: &str, body: &str) {
        match self {
            Store::Local { storage, .. } => put_local(storage, key, body).await,
            Store::S3 { fixture, prefix } => put(fixture, prefix, key, body.to_owned()).await,
        }
    }

    async fn delete(&self, key: &str) {
        match self {
            Store::Local { storage, .. } => storage.delete(key).await.unwrap(),
            Store::S3 { fixture, prefix } => delete(fixture, prefix, key).await,
        }
    }

    fn syncer(&self, traefik_dir: &Path) -> SyncerConfig {
        match self {
            Store::Local { dir, .. } => SyncerConfig::new(&file_url(dir.path()), traefik_dir),
            Store::S3 { fixture, prefix } => SyncerConfig::s3(fixture, prefix, traefik_dir),
        }
    }
}

fn yaml(bytes: &[u8]) -> Value {
    serde_yaml::from_slice(bytes).unwrap()
}

fn servers(doc: &Value, service: &str) -> Vec<String> {
    doc["http"]["services"][service]["loadBalancer"]["servers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("http.services.{service} missing in {doc:?}"))
        .iter()
        .map(|s| s["url"].as_str().unwrap().to_owned())
        .collect()
}

fn has_service(doc: &Value, service: &str) -> bool {
    !doc["http"]["services"][service].is_null()
}

/// Waits until the syncer has completed `n` more successful listings: whatever it would do
/// with the current inputs, it has done.
async fn polls(syncer: &Syncer, n: f64) {
    let sample = "ksd_syncer_polls_total{outcome=\"ok\"}";
    let now = syncer.metric(sample).await;
    syncer.wait_metric(sample, now + n).await;
}

// 1. Addresses nobody should route to.

async fn special_purpose_and_foreign_addresses_are_left_out(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    let a = http_doc(&[(
        "web",
        &[
            "10.1.0.5",
            "169.254.169.254",
            "127.0.0.1",
            "0.0.0.0",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:169.254.169.254]",
            "10.2.0.7",
        ],
    )]);
    let b = http_doc(&[("api", &["10.2.0.5", "10.1.0.9"])]);
    store.put("a.traefik.yaml", &a).await;
    store.put("b.traefik.yaml", &b).await;
    let syncer = store
        .syncer(traefik.path())
        .env("CLUSTER_CIDRS", "a=10.1.0.0/16;b=10.2.0.0/16")
        .spawn();
    let doc = yaml(&syncer.wait_clusters("a, b").await);
    let name = store.name();
    assert_eq!(servers(&doc, "web"), ["http://10.1.0.5:80"], "{name}");
    assert_eq!(servers(&doc, "web.a"), ["http://10.1.0.5:80"], "{name}");
    assert_eq!(servers(&doc, "api"), ["http://10.2.0.5:80"], "{name}");
    assert_eq!(servers(&doc, "api.b"), ["http://10.2.0.5:80"], "{name}");
    let text = syncer.text();
    for bad in [
        "169.254",
        "127.0.0.1",
        "0.0.0.0",
        "[::1]",
        "ffff",
        "10.2.0.7",
        "10.1.0.9",
    ] {
        assert!(!text.contains(bad), "{name}: {bad} in\n{text}");
    }

    for (cluster, reason, count) in [
        ("a", "link_local", 2.0),
        ("a", "loopback", 3.0),
        ("a", "unspecified", 1.0),
        ("a", "outside_allowed_ranges", 1.0),
        ("b", "outside_allowed_ranges", 1.0),
    ] {
        let sample =
            format!("ksd_syncer_excluded_servers{{cluster=\"{cluster}\",reason=\"{reason}\"}}");
        assert_eq!(syncer.metric(&sample).await, count, "{name}: {sample}");
    }
    // Logged once per change, naming cluster, service and address.
    polls(&syncer, 5.0).await;
    let lines: Vec<String> = syncer
        .agent
        .stderr()
        .lines()
        .filter(|l| l.contains("left a server out") && l.contains("169.254.169.254:80"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{name}: {lines:#?}");
    assert!(
        lines[0].contains("cluster=a") && lines[0].contains("service=web"),
        "{name}: {}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn special_purpose_and_foreign_addresses_are_left_out_local() {
    special_purpose_and_foreign_addresses_are_left_out(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn special_purpose_and_foreign_addresses_are_left_out_s3() {
    special_purpose_and_foreign_addresses_are_left_out(Store::s3("addresses/").await).await;
}

// 2. Names the administrator owns.

const MAIN_YML: &str = "http:\n  routers:\n    blue:\n      rule: Host(`blue.example`)\n      service: angular-blue-green\n  services:\n    angular-blue-green:\n      loadBalancer:\n        servers:\n          - url: http://192.0.2.10:80\n";

async fn administrator_names_are_never_taken_over(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    let main = traefik.path().join("main.yml");
    std::fs::write(&main, MAIN_YML).unwrap();
    let a = http_doc(&[
        ("angular-blue-green", &["10.1.0.1"]),
        ("other", &["10.1.0.2"]),
        ("templated", &["10.1.0.3"]),
    ]);
    store.put("a.traefik.yaml", &a).await;
    let syncer = store.syncer(traefik.path()).spawn();
    let name = store.name();

    let doc = yaml(&syncer.wait_clusters("a").await);
    assert!(!has_service(&doc, "angular-blue-green"), "{name}: {doc:?}");
    assert_eq!(
        servers(&doc, "angular-blue-green.a"),
        ["http://10.1.0.1:80"]
    );
    assert_eq!(servers(&doc, "other"), ["http://10.1.0.2:80"]);
    assert_eq!(syncer.metric("ksd_syncer_excluded_services").await, 1.0);
    assert!(syncer.log_count("the administrator's files in TRAEFIK_DIR define this name") >= 1);

    // A TOML file in a sub-directory, and a file Traefik would render as a template first:
    // their names are protected too, the broken one reported.
    let sub = traefik.path().join("more");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(
        sub.join("extra.toml"),
        "[http.services.other.loadBalancer]\n[[http.services.other.loadBalancer.servers]]\nurl = \"http://192.0.2.11:80\"\n",
    )
    .unwrap();
    std::fs::write(
        traefik.path().join("templated.yml"),
        "http:\n  services:\n{{ range $i := until 1 }}\n    templated:\n      loadBalancer:\n        servers: [ {url: \"http://192.0.2.12:80\"} ]\n{{ end }}\n",
    )
    .unwrap();
    let doc = yaml(
        &syncer
            .wait_file("other and templated left out", |text| {
                let doc: Value = serde_yaml::from_str(text).unwrap();
                !has_service(&doc, "other") && !has_service(&doc, "templated")
            })
            .await,
    );
    assert_eq!(servers(&doc, "other.a"), ["http://10.1.0.2:80"], "{name}");
    assert_eq!(
        servers(&doc, "templated.a"),
        ["http://10.1.0.3:80"],
        "{name}"
    );
    assert_eq!(syncer.metric("ksd_syncer_admin_file_problems").await, 1.0);
    assert!(syncer.log_count("cannot fully read an administrator file") >= 1);

    // The administrator drops a definition: the exported one comes back.
    std::fs::remove_file(sub.join("extra.toml")).unwrap();
    let doc = yaml(
        &syncer
            .wait_file("other back", |text| {
                let doc: Value = serde_yaml::from_str(text).unwrap();
                has_service(&doc, "other")
            })
            .await,
    );
    assert_eq!(servers(&doc, "other"), ["http://10.1.0.2:80"]);
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        MAIN_YML,
        "never written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn administrator_names_are_never_taken_over_local() {
    administrator_names_are_never_taken_over(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn administrator_names_are_never_taken_over_s3() {
    administrator_names_are_never_taken_over(Store::s3("admin-names/").await).await;
}

// 3. An empty file by accident.

async fn all_stale_keeps_the_file_until_the_listing_is_confirmed_empty(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    store.put("a.traefik.yaml", &a).await;
    store.put("b.traefik.yaml", &b).await;
    let syncer = store
        .syncer(traefik.path())
        .env("STALE_AFTER", "2s")
        .spawn();
    let both = syncer.wait_clusters("a, b").await;
    let name = store.name();

    // No exporter heartbeats: both go stale, the file stays.
    syncer
        .wait_metric("ksd_syncer_held{reason=\"nothing_servable\"}", 1.0)
        .await;
    assert_eq!(syncer.metric("ksd_syncer_clusters_stale").await, 2.0);
    polls(&syncer, 3.0).await;
    assert_eq!(syncer.read().unwrap(), both, "{name}: the file is kept");
    assert!(syncer.log_count("the file stays as it is rather than serving nothing") >= 1);

    // a's exporter is back (same content, new upload): only a is served.
    store.put("a.traefik.yaml", &a).await;
    let only_a = syncer.wait_clusters("a").await;
    assert!(String::from_utf8(only_a).unwrap().contains("10.0.0.1"));
    assert_eq!(
        syncer
            .metric("ksd_syncer_held{reason=\"nothing_servable\"}")
            .await,
        0.0
    );

    // Every object deleted: confirmed over CONFIRM_POLLS, then the file serves nothing.
    store.delete("a.traefik.yaml").await;
    store.delete("b.traefik.yaml").await;
    let none = syncer.wait_clusters("none").await;
    assert!(check_merged(&none).unwrap().is_empty(), "{name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_stale_keeps_the_file_until_the_listing_is_confirmed_empty_local() {
    all_stale_keeps_the_file_until_the_listing_is_confirmed_empty(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_stale_keeps_the_file_until_the_listing_is_confirmed_empty_s3() {
    all_stale_keeps_the_file_until_the_listing_is_confirmed_empty(Store::s3("all-stale/").await)
        .await;
}

async fn all_rejected_keeps_the_current_file(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    // A file already in place that is not one this syncer can rebuild state from (an older
    // release's, or restored from a backup): it must not be replaced by an empty one.
    let output = traefik.path().join(OUTPUT_FILE);
    let previous = "# previous release\nhttp:\n  services:\n    web:\n      loadBalancer:\n        servers:\n          - url: \"http://10.0.0.1:80\"\n";
    std::fs::write(&output, previous).unwrap();
    store
        .put(
            "a.traefik.yaml",
            "http:\n  routers:\n    r:\n      rule: Host(`x`)\n      service: s\n",
        )
        .await;
    store.put("b.traefik.yaml", "{{ template }}\n").await;
    let syncer = store.syncer(traefik.path()).spawn();
    syncer
        .wait_metric("ksd_syncer_held{reason=\"nothing_servable\"}", 1.0)
        .await;
    syncer
        .wait_metric(
            "ksd_syncer_clusters_rejected{reason=\"not_services_only\"}",
            1.0,
        )
        .await;
    polls(&syncer, 3.0).await;
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        previous,
        "{}",
        store.name()
    );

    // A good version of one cluster: the file follows again.
    store
        .put("a.traefik.yaml", &http_doc(&[("web", &["10.0.0.2"])]))
        .await;
    let doc = yaml(&syncer.wait_clusters("a").await);
    assert_eq!(servers(&doc, "web"), ["http://10.0.0.2:80"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_rejected_keeps_the_current_file_local() {
    all_rejected_keeps_the_current_file(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_rejected_keeps_the_current_file_s3() {
    all_rejected_keeps_the_current_file(Store::s3("all-rejected/").await).await;
}

// 4. Clock skew.

async fn a_syncer_clock_hours_ahead_sees_fresh_clusters(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    store.put("a.traefik.yaml", &a).await;
    store.put("b.traefik.yaml", &b).await;
    let syncer = store
        .syncer(traefik.path())
        .env("STALE_AFTER", "1h")
        .under(&["faketime", "-f", "+5h"])
        .spawn();
    let bytes = syncer.wait_clusters("a, b").await;
    polls(&syncer, 3.0).await;
    assert_eq!(syncer.metric("ksd_syncer_clusters_stale").await, 0.0);
    assert_eq!(syncer.read().unwrap(), bytes, "{}", store.name());
    // The syncer really runs five hours ahead: its last-write timestamp says so.
    let written = syncer
        .metric("ksd_syncer_last_write_timestamp_seconds")
        .await;
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(written > host + 4.0 * 3600.0, "{written} vs {host}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syncer_clock_hours_ahead_sees_fresh_clusters_local() {
    a_syncer_clock_hours_ahead_sees_fresh_clusters(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syncer_clock_hours_ahead_sees_fresh_clusters_s3() {
    a_syncer_clock_hours_ahead_sees_fresh_clusters(Store::s3("skew/").await).await;
}

// 5. Last good state across a restart.

async fn a_restart_keeps_serving_a_cluster_whose_object_is_now_invalid(store: Store) {
    let traefik = tempfile::tempdir().unwrap();
    let a = "http:\n  services:\n    web:\n      loadBalancer:\n        passHostHeader: false\n        servers:\n          - url: \"http://10.0.0.1:80\"\n          - url: \"http://10.0.0.2:80\"\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"10.0.0.3:5432\"\n";
    let b = http_doc(&[("web", &["10.1.0.1"])]);
    store.put("a.traefik.yaml", a).await;
    store.put("b.traefik.yaml", &b).await;
    let mut first = store.syncer(traefik.path()).spawn();
    let before = yaml(&first.wait_clusters("a, b").await);
    first.agent.terminate();
    assert!(first.agent.wait_exit(WAIT).await.unwrap().success());

    // While no syncer runs, a's object turns invalid and b moves.
    store.put("a.traefik.yaml", "{{ broken\n").await;
    store
        .put("b.traefik.yaml", &http_doc(&[("web", &["10.1.0.2"])]))
        .await;
    let second = store.syncer(traefik.path()).spawn();
    let after = yaml(
        &second
            .wait_file("b's new server", |text| text.contains("10.1.0.2"))
            .await,
    );
    second
        .wait_metric(
            "ksd_syncer_clusters_rejected{reason=\"template_marker\"}",
            1.0,
        )
        .await;
    let name = store.name();
    assert_eq!(
        after["http"]["services"]["web.a"], before["http"]["services"]["web.a"],
        "{name}"
    );
    assert_eq!(after["tcp"], before["tcp"], "{name}");
    assert_eq!(
        servers(&after, "web"),
        [
            "http://10.0.0.1:80",
            "http://10.0.0.2:80",
            "http://10.1.0.2:80"
        ],
        "{name}"
    );
    assert!(second.log_count("restored each cluster's last served pools") >= 1);
    assert!(second.text().contains("# Clusters: a, b\n"));
    assert_eq!(second.metric("ksd_syncer_restored_clusters").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_serving_a_cluster_whose_object_is_now_invalid_local() {
    a_restart_keeps_serving_a_cluster_whose_object_is_now_invalid(Store::local().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_serving_a_cluster_whose_object_is_now_invalid_s3() {
    a_restart_keeps_serving_a_cluster_whose_object_is_now_invalid(Store::s3("restart/").await)
        .await;
}

// 6. A store entry that stalls everything (a local directory: S3 has neither FIFOs nor
// unbounded reads, its GETs are refused over MAX_OBJECT_BYTES by the s3 tests).

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_and_huge_files_in_the_store_cannot_stall_a_cycle() {
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    let storage = local_storage(store.path()).await;
    put_local(
        &storage,
        "a.traefik.yaml",
        &http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    // 300 MB (sparse: cheap to make, as slow as any to read whole) and FIFOs named like cluster
    // objects, in the store and in Traefik's directory.
    let huge = std::fs::File::create(store.path().join("huge.traefik.yaml")).unwrap();
    huge.set_len(300 * 1024 * 1024).unwrap();
    mkfifo(&store.path().join("fifo.traefik.yaml"));
    mkfifo(&traefik.path().join("admin.yml"));

    let syncer = SyncerConfig::new(&file_url(store.path()), traefik.path()).spawn();
    let doc = yaml(&syncer.wait_clusters("a").await);
    assert_eq!(servers(&doc, "web"), ["http://10.0.0.1:80"]);
    syncer
        .wait_metric("ksd_syncer_clusters_rejected{reason=\"too_large\"}", 1.0)
        .await;

    // Still syncing: a change goes through.
    put_local(
        &storage,
        "a.traefik.yaml",
        &http_doc(&[("web", &["10.0.0.2"])]),
    )
    .await;
    let doc = yaml(
        &syncer
            .wait_file("a's new server", |text| text.contains("10.0.0.2"))
            .await,
    );
    assert_eq!(servers(&doc, "web"), ["http://10.0.0.2:80"]);
    // The huge file was never read whole (the old behaviour peaked above 300 MiB).
    let peak = peak_rss_kib(syncer.agent.pid());
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
}

// 7. A zombie syncer: a supervised task that ends takes the process down, naming it.

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_panics_or_ends_stops_the_syncer_with_an_error() {
    for (fault, task) in [
        ("sync-loop:panic", "sync-loop"),
        ("admin-server:return", "admin-server"),
    ] {
        let store = tempfile::tempdir().unwrap();
        let traefik = tempfile::tempdir().unwrap();
        let storage = local_storage(store.path()).await;
        put_local(
            &storage,
            "a.traefik.yaml",
            &http_doc(&[("web", &["10.0.0.1"])]),
        )
        .await;
        let mut syncer = SyncerConfig::new(&file_url(store.path()), traefik.path())
            .env("KSD_FAULT_TASK", fault)
            .spawn();
        let status = syncer.agent.wait_exit(WAIT).await.expect("still running");
        assert_eq!(status.code(), Some(1), "{fault}: {}", syncer.agent.logs());
        let stderr = syncer.agent.stderr();
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("ERROR") && l.contains(&format!("task {task} ended"))),
            "{fault}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fault_hook_is_inert_when_unset() {
    // The same setup without the hook keeps running and serving: the exits above are the
    // hook's doing, not the setup's.
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    let storage = local_storage(store.path()).await;
    put_local(
        &storage,
        "a.traefik.yaml",
        &http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    let mut syncer = SyncerConfig::new(&file_url(store.path()), traefik.path()).spawn();
    syncer.wait_clusters("a").await;
    polls(&syncer, 10.0).await;
    assert!(syncer.agent.is_running());
    let found = wait_for("ready", WAIT, || async {
        syncer.ready().await.then_some(())
    })
    .await;
    assert!(found.is_ok());
}
