//! Helpers shared by the syncer's integration tests: running `ksd-syncer`, writing cluster
//! documents, reading its file and metrics.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use ksd_shared::merge::ClusterDocument;
use ksd_shared::names::ClusterName;
use ksd_shared::traefik::{Document, Limits, TraefikVersion};
use ksd_testbed::process::{Agent, free_port, wait_for};
use ksd_testbed::s3::S3Fixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Poll interval used by the tests.
pub const POLL: Duration = Duration::from_millis(200);
/// Generous bound for anything that should happen within a few polls.
pub const WAIT: Duration = Duration::from_secs(30);

pub const OUTPUT_FILE: &str = "k8s-service-discovery.yml";

/// A running `ksd-syncer` and where it writes.
pub struct Syncer {
    pub agent: Agent,
    pub admin: SocketAddr,
    pub output: PathBuf,
}

/// Builds the environment of one syncer.
pub struct SyncerConfig {
    pub envs: Vec<(String, String)>,
    pub traefik_dir: PathBuf,
    pub args: Vec<String>,
    /// A command the syncer runs under (`faketime -f +5h`), if any.
    pub wrapper: Vec<String>,
}

impl SyncerConfig {
    pub fn new(storage_url: &str, traefik_dir: &Path) -> Self {
        SyncerConfig {
            envs: vec![
                ("STORAGE_URL".into(), storage_url.into()),
                ("TRAEFIK_DIR".into(), traefik_dir.display().to_string()),
                ("POLL_INTERVAL".into(), "200ms".into()),
            ],
            traefik_dir: traefik_dir.to_path_buf(),
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Points the syncer at an S3 fixture (through its counting proxy).
    pub fn s3(fixture: &S3Fixture, prefix: &str, traefik_dir: &Path) -> Self {
        let mut config = SyncerConfig::new(&fixture.storage_url(prefix), traefik_dir);
        config.envs.extend(fixture.env());
        config
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs the syncer as the last argument of `command` (e.g. `["faketime", "-f", "+5h"]`).
    pub fn under(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn spawn(self) -> Syncer {
        let port = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut envs = self.envs;
        envs.push(("ADMIN_ADDR".into(), admin.to_string()));
        let binary = env!("CARGO_BIN_EXE_ksd-syncer");
        let agent = match self.wrapper.split_first() {
            None => Agent::spawn(binary, &self.args, envs, "ksd-syncer").unwrap(),
            Some((command, wrapper_args)) => {
                let mut args = wrapper_args.to_vec();
                args.push(binary.to_owned());
                args.extend(self.args.iter().cloned());
                Agent::spawn(command, &args, envs, "ksd-syncer").unwrap()
            }
        };
        Syncer {
            agent,
            admin,
            output: self.traefik_dir.join(OUTPUT_FILE),
        }
    }

    /// Runs to completion (`--once`, `--dry-run`, bad settings): exit code, stdout, stderr.
    pub async fn run(self) -> (Option<i32>, String, String) {
        let mut syncer = self.spawn();
        let status = syncer
            .agent
            .wait_exit(Duration::from_secs(60))
            .await
            .expect("ksd-syncer did not exit");
        (status.code(), syncer.agent.stdout(), syncer.agent.stderr())
    }
}

impl Syncer {
    pub fn read(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.output).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.read().unwrap_or_default()).unwrap()
    }

    /// Waits until the file satisfies `check`, and returns its bytes.
    pub async fn wait_file(&self, what: &str, check: impl Fn(&str) -> bool) -> Vec<u8> {
        let path = self.output.clone();
        let found = wait_for(what, WAIT, || {
            let bytes = std::fs::read(&path).ok();
            let ok = bytes
                .as_ref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .is_some_and(&check);
            async move { if ok { bytes } else { None } }
        })
        .await;
        match found {
            Ok(bytes) => bytes,
            Err(error) => panic!("{error}\nfile now:\n{}\n{}", self.text(), self.agent.logs()),
        }
    }

    /// Waits until the file lists exactly these clusters in its header.
    pub async fn wait_clusters(&self, clusters: &str) -> Vec<u8> {
        let line = format!("# Clusters: {clusters}\n");
        self.wait_file(&format!("clusters {clusters}"), |text| text.contains(&line))
            .await
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.unwrap_or_default().1
    }

    /// The value of one sample, `name{labels}` exactly as exposed (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Waits until `sample` is at least `at_least`.
    pub async fn wait_metric(&self, sample: &str, at_least: f64) -> f64 {
        let admin = self.admin;
        let result = wait_for(&format!("{sample} >= {at_least}"), WAIT, || async move {
            let text = http_get(admin, "/metrics").await.unwrap_or_default().1;
            let value = metric_value(&text, sample);
            (value >= at_least).then_some(value)
        })
        .await;
        match result {
            Ok(value) => value,
            Err(error) => panic!("{error}\n{}\n{}", self.metrics().await, self.agent.logs()),
        }
    }

    pub async fn ready(&self) -> bool {
        http_get(self.admin, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    }

    /// Log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.agent
            .stderr()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(sample)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

/// A minimal HTTP/1.0 GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// An HTTP-only cluster document: `(service, [ip, ...])`, servers on port 80.
pub fn http_doc(services: &[(&str, &[&str])]) -> String {
    let mut text = String::from("http:\n  services:\n");
    for (name, ips) in services {
        text.push_str(&format!(
            "    {name}:\n      loadBalancer:\n        servers:\n"
        ));
        for ip in *ips {
            text.push_str(&format!("          - url: \"http://{ip}:80\"\n"));
        }
    }
    text
}

pub fn parse_doc(text: &str) -> Document {
    ksd_shared::traefik::parse_cluster_document(text.as_bytes(), &Limits::default()).unwrap()
}

/// The file the syncer should write for these cluster documents.
pub fn expected_file(clusters: &[(&str, &str)], version: TraefikVersion) -> Vec<u8> {
    let documents: Vec<ClusterDocument> = clusters
        .iter()
        .map(|(name, text)| ClusterDocument {
            cluster: ClusterName::parse(name).unwrap(),
            document: parse_doc(text),
        })
        .collect();
    ksd_syncer::compose::compose(&documents, version)
        .unwrap()
        .bytes
}

/// Checks a merged file the way the syncer does before writing it.
pub fn check_merged(bytes: &[u8]) -> Result<Document, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    if !text.starts_with("# Generated by ksd-syncer") {
        return Err(format!("no header: {text:?}"));
    }
    // Plain YAML first: a truncated file would show here.
    let _: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    ksd_syncer::compose::parse_merged(bytes).map_err(|e| e.to_string())
}

pub async fn put(fixture: &S3Fixture, prefix: &str, key: &str, body: impl Into<Vec<u8>>) {
    fixture
        .client()
        .put_object()
        .bucket(fixture.bucket())
        .key(format!("{prefix}{key}"))
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap();
}

pub async fn delete(fixture: &S3Fixture, prefix: &str, key: &str) {
    fixture
        .client()
        .delete_object()
        .bucket(fixture.bucket())
        .key(format!("{prefix}{key}"))
        .send()
        .await
        .unwrap();
}

/// A local cluster-document store, written atomically as the exporter does.
pub async fn local_storage(dir: &Path) -> ksd_runtime::storage::Storage {
    let url = ksd_runtime::storage::StorageUrl::Local {
        dir: dir.to_path_buf(),
    };
    ksd_runtime::storage::Storage::connect(&url, &Default::default())
        .await
        .unwrap()
}

pub async fn put_local(storage: &ksd_runtime::storage::Storage, key: &str, body: &str) {
    storage
        .put(
            key,
            body.as_bytes().to_vec(),
            &Default::default(),
            ksd_runtime::storage::PutCondition::None,
        )
        .await
        .unwrap();
}

pub fn file_url(dir: &Path) -> String {
    format!("file://{}/", dir.display())
}

pub fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Files in `dir` whose extension Traefik loads, other than `keep`.
pub fn config_files_except(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != keep)
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            lower.ends_with(".yml") || lower.ends_with(".yaml") || lower.ends_with(".toml")
        })
        .collect()
}
