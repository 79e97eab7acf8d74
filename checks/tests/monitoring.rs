//! `deploy/monitoring/`: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`, one test at least per alert), the Prometheus Operator component holds
//! the same rules, and every metric the dashboard and the rules use is one that the running
//! binaries serve on `/metrics`. The binaries' `healthcheck` subcommands are exercised on the
//! way: they answer 1 before the agents are ready and 0 once they are.
//!
//! `promtool` comes from Debian's `prometheus` package (`scripts/test` installs it); without
//! it these tests fail, they never skip.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{binary, describe_output, read_repo_file, read_repo_yaml, repo_path, run};

const ALERTS: &str = "deploy/monitoring/alerts.yaml";
const ALERT_TESTS: &str = "deploy/monitoring/tests/alerts.test.yaml";
const DASHBOARD: &str = "deploy/monitoring/dashboard.json";
const PROMETHEUS_RULE: &str = "deploy/monitoring/component/prometheusrule.yaml";

fn promtool() -> PathBuf {
    common::require_tool(
        "promtool",
        "`apt-get install prometheus` (Debian's package ships promtool; scripts/test installs it)",
    )
}

#[test]
fn alert_rules_pass_promtool_check() {
    let output = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(repo_path(ALERTS)));
    assert!(output.status.success(), "{}", describe_output(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let output = run(Command::new(promtool())
        .args(["test", "rules"])
        .arg(repo_path(ALERT_TESTS)));
    assert!(output.status.success(), "{}", describe_output(&output));
}

#[test]
fn a_promtool_test_fails_when_an_alert_does_not_fire_as_expected() {
    // The unit tests can fail: the same tests against rules whose thresholds never match.
    let dir = tempfile::tempdir().unwrap();
    let broken = read_repo_file(ALERTS).replace("> 0", "> 1000000");
    std::fs::write(dir.path().join("alerts.yaml"), broken).unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    let tests = dir.path().join("tests").join("alerts.test.yaml");
    std::fs::write(&tests, read_repo_file(ALERT_TESTS)).unwrap();
    let output = run(Command::new(promtool()).args(["test", "rules"]).arg(&tests));
    assert!(!output.status.success(), "{}", describe_output(&output));
}

fn alert_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_alert_has_a_unit_test_that_expects_it_to_fire() {
    let alerts = alert_names(&read_repo_yaml(ALERTS));
    let required: BTreeSet<&str> = [
        "KsdClusterStale",
        "KsdClusterRejected",
        "KsdSyncerWritesFailing",
        "KsdSyncerNotWriting",
        "KsdExporterPublishFailing",
        "KsdExporterForeignWriter",
        "KsdExporterNoLeader",
    ]
    .into();
    for name in &required {
        assert!(alerts.contains(*name), "no alert {name} in {ALERTS}");
    }
    let tests = read_repo_yaml(ALERT_TESTS);
    let mut firing = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(case["alertname"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(
        firing, alerts,
        "alerts without a firing unit test (or tests of unknown alerts)"
    );
}

#[test]
fn the_prometheus_rule_of_the_component_holds_the_same_rules() {
    let alerts = read_repo_yaml(ALERTS);
    let rule = read_repo_yaml(PROMETHEUS_RULE);
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "{PROMETHEUS_RULE} differs from {ALERTS}: regenerate it"
    );
}

#[test]
fn the_component_adds_a_pod_monitor_to_an_overlay() {
    let dir = tempfile::tempdir().unwrap();
    // kustomize takes only relative paths; climb from the temporary directory to the root.
    let up: String = dir.path().components().skip(1).map(|_| "../").collect();
    let relative = |p: &str| {
        format!(
            "{up}{}",
            repo_path(p).display().to_string().trim_start_matches('/')
        )
    };
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources:\n  - {}\ncomponents:\n  - {}\n",
            relative("deploy/overlays/aws"),
            relative("deploy/monitoring/component")
        ),
    )
    .unwrap();
    let output = run(Command::new(common::kubectl())
        .arg("kustomize")
        .arg(dir.path()));
    assert!(output.status.success(), "{}", describe_output(&output));
    let objects = common::yaml_documents(&String::from_utf8_lossy(&output.stdout));
    let of_kind =
        |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };
    let monitors = of_kind("PodMonitor");
    assert_eq!(monitors.len(), 1);
    let deployment = of_kind("Deployment")[0];
    assert_eq!(
        monitors[0]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        monitors[0]["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    let port = monitors[0]["spec"]["podMetricsEndpoints"][0]["port"]
        .as_str()
        .unwrap();
    let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["name"] == port),
        "the PodMonitor scrapes port {port:?}, which the container does not name: {ports}"
    );
    assert_eq!(of_kind("PrometheusRule").len(), 1);
}

/// Metric names in PromQL expressions: every `ksd_*` and `process_*` identifier.
fn metric_names_in(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (expr[i..].starts_with("ksd_") || expr[i..].starts_with("process_")) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            into.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
}

fn dashboard_and_rule_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(&read_repo_file(DASHBOARD)).unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            metric_names_in(target["expr"].as_str().unwrap(), &mut names);
            exprs += 1;
        }
    }
    assert!(exprs >= 10, "the dashboard has {exprs} queries");
    let alerts = read_repo_yaml(ALERTS);
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            metric_names_in(rule["expr"].as_str().unwrap(), &mut names);
        }
    }
    names
}

/// Every series name a `/metrics` text can hold: each family's `# TYPE` with the suffixes of
/// its type, and every sample's name.
fn served_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// A child process killed when the test ends.
struct Running {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Running {
    fn spawn(name: &'static str, command: &mut Command, dir: &Path) -> Running {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running { child, name, log }
    }

    fn logs(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", ksd_testbed::process::free_port())
        .parse()
        .unwrap()
}

/// `<binary> healthcheck` with `ADMIN_ADDR=addr`: whether it exited 0, and its stderr.
fn healthcheck(binary_name: &str, addr: SocketAddr) -> (bool, String) {
    let output = run(Command::new(binary(binary_name))
        .arg("healthcheck")
        .env_clear()
        .env("ADMIN_ADDR", addr.to_string()));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wait_healthy(binary_name: &str, addr: SocketAddr, agents: &[&Running]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (healthy, stderr) = healthcheck(binary_name, addr);
        if healthy {
            assert!(stderr.is_empty(), "{stderr}");
            return;
        }
        assert!(
            stderr.starts_with("unhealthy: "),
            "an unhealthy check explains itself on stderr: {stderr:?}"
        );
        if Instant::now() > deadline {
            let logs: Vec<String> = agents.iter().map(|a| a.logs()).collect();
            panic!(
                "{binary_name} healthcheck never passed: {stderr}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap()
}

#[test]
fn every_metric_the_dashboard_and_the_rules_use_is_served_by_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let traefik = dir.path().join("dynamic");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::create_dir_all(&traefik).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let storage_url = format!("file://{}/", bucket.display());

    // Nothing listens yet: both checks fail.
    let exporter_admin = free_addr();
    let syncer_admin = free_addr();
    assert!(!healthcheck("ksd-exporter", exporter_admin).0);
    assert!(!healthcheck("ksd-syncer", syncer_admin).0);

    let api = Running::spawn(
        "ksd-testbed",
        Command::new(binary("ksd-testbed"))
            .arg("apiserver")
            .arg("--listen")
            .arg(free_addr().to_string())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--seed")
            .arg(repo_path("deploy/demo/cluster-a.yaml")),
        dir.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "no kubeconfig\n{}", api.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let exporter = Running::spawn(
        "ksd-exporter",
        Command::new(binary("ksd-exporter"))
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .env("CLUSTER_NAME", "monitoring-check")
            .env("LABEL_SELECTOR", "")
            .env("STORAGE_URL", &storage_url)
            .env("ADMIN_ADDR", exporter_admin.to_string())
            .env("LEADER_ELECTION", "true")
            .env("DEBOUNCE", "100ms"),
        dir.path(),
    );
    wait_healthy("ksd-exporter", exporter_admin, &[&api, &exporter]);
    // A cluster document the syncer rejects, so that the per-reason series exist (a family
    // without members is not served at all).
    std::fs::write(
        bucket.join("broken.traefik.yaml"),
        "http: [this is not a document\n",
    )
    .unwrap();
    let syncer = Running::spawn(
        "ksd-syncer",
        Command::new(binary("ksd-syncer"))
            .env_clear()
            .env("STORAGE_URL", &storage_url)
            .env("TRAEFIK_DIR", &traefik)
            .env("ADMIN_ADDR", syncer_admin.to_string())
            .env("POLL_INTERVAL", "1s"),
        dir.path(),
    );
    wait_healthy("ksd-syncer", syncer_admin, &[&api, &exporter, &syncer]);

    let mut served = served_names(&scrape(exporter_admin));
    served.extend(served_names(&scrape(syncer_admin)));
    let used = dashboard_and_rule_metrics();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or the rules but served by neither binary: {missing:?}\nserved: {served:?}"
    );
    // The process metrics the memory panel shows are real numbers.
    assert!(served.contains("process_resident_memory_bytes"));
}

#[test]
fn metric_names_are_found_in_expressions() {
    let mut names = BTreeSet::new();
    metric_names_in(
        "histogram_quantile(0.9, sum by (le) (rate(ksd_syncer_cycle_duration_seconds_bucket{job=~\"x\"}[5m]))) + process_resident_memory_bytes - my_ksd_x",
        &mut names,
    );
    assert_eq!(
        names,
        [
            "ksd_syncer_cycle_duration_seconds_bucket",
            "process_resident_memory_bytes"
        ]
        .map(String::from)
        .into()
    );
    let served = served_names(
        "# TYPE ksd_a counter\n# TYPE ksd_b histogram\nksd_b_bucket{le=\"1\"} 0\n# TYPE ksd_c gauge\nksd_c 1\n",
    );
    assert!(
        served.contains("ksd_a_total")
            && served.contains("ksd_b_count")
            && served.contains("ksd_c")
    );
    assert!(!served.contains("ksd_a"));
}
