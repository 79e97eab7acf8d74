//! The demo's sample data stays true: the bucket documents in `deploy/demo/bucket/` (uploaded
//! by the compose file's `dev` profile, merged in `tests/traefik.rs`) are byte for byte what
//! `ksd-exporter --once --dry-run` publishes for the clusters seeded from
//! `deploy/demo/cluster-*.yaml` (which `scripts/first-run` serves). A change to the exporter's
//! output or to a seed that is not carried over to the samples fails here.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, read_repo_file, repo_path, run_ok};

/// A `ksd-testbed apiserver` child process, stopped when dropped.
struct ApiServer {
    child: Child,
    kubeconfig: PathBuf,
}

impl ApiServer {
    fn start(dir: &Path, seed: &Path) -> ApiServer {
        let kubeconfig = dir.join("kubeconfig");
        let log = dir.join("apiserver.log");
        let child = Command::new(binary("ksd-testbed"))
            .arg("apiserver")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--seed")
            .arg(seed)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = ApiServer { child, kubeconfig };
        // The kubeconfig is written after the seed is loaded; the log line follows it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("API server listening") {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("ksd-testbed apiserver exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "API server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sample_documents_are_what_the_exporter_publishes_for_the_seeds() {
    for cluster in ["cluster-a", "cluster-b"] {
        let dir = tempfile::tempdir().unwrap();
        let server = ApiServer::start(
            dir.path(),
            &repo_path(&format!("deploy/demo/{cluster}.yaml")),
        );
        let bucket = dir.path().join("bucket");
        let published = run_ok(
            Command::new(binary("ksd-exporter"))
                .args(["--once", "--dry-run"])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("KUBECONFIG", &server.kubeconfig)
                .env("CLUSTER_NAME", cluster)
                .env("STORAGE_URL", format!("file://{}/", bucket.display()))
                .env("ADMIN_ADDR", "127.0.0.1:0"),
        );
        let sample = read_repo_file(&format!("deploy/demo/bucket/{cluster}.traefik.yaml"));
        assert_eq!(
            published, sample,
            "deploy/demo/bucket/{cluster}.traefik.yaml differs from the exporter's output for deploy/demo/{cluster}.yaml"
        );
        assert!(!bucket.exists(), "--dry-run wrote to storage");
    }
}
