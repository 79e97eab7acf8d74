//! What the exporter's integration tests share: a test API server, an S3 fixture with a
//! prefix of the test's own, the real `ksd-exporter` binary, and readers for what it wrote.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use ksd_runtime::storage::{Fetched, Storage};
use ksd_shared::traefik::{
    Document, Limits, LoadBalancer, Protocol, Section, SectionVisitor, parse_cluster_document,
};
use ksd_testbed::apiserver::TestApiServer;
use ksd_testbed::process::{Agent, free_port, wait_for};
use ksd_testbed::s3::S3Fixture;
use ksd_testbed::slices::{ServiceBuilder, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The label the default LABEL_SELECTOR selects.
pub const EXPORT_LABEL: &str = "k8s-service-discovery";

/// Service name -> servers (URLs or addresses), across the http, tcp and udp sections.
pub type Servers = BTreeMap<String, BTreeSet<String>>;

pub struct Harness {
    pub api: TestApiServer,
    pub s3: S3Fixture,
    pub prefix: String,
    pub cluster: String,
}

/// A running exporter and its admin address.
pub struct Exporter {
    pub agent: Agent,
    pub admin: SocketAddr,
}

impl Harness {
    /// A fresh API server and bucket; objects go under `<test>/`.
    pub async fn start(test: &str) -> Harness {
        let api = TestApiServer::start().await.unwrap();
        let s3 = S3Fixture::start().await.unwrap();
        Harness {
            api,
            s3,
            prefix: format!("{test}/"),
            cluster: "test-cluster".to_owned(),
        }
    }

    /// The Traefik object's full key in the bucket.
    pub fn key(&self) -> String {
        format!("{}{}.traefik.yaml", self.prefix, self.cluster)
    }

    /// The environment of an exporter for this harness, with short timings, then `extra`.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.s3.env();
        env.extend(
            [
                (
                    "KUBECONFIG",
                    self.api.kubeconfig_path().display().to_string(),
                ),
                ("CLUSTER_NAME", self.cluster.clone()),
                ("STORAGE_URL", self.s3.storage_url(&self.prefix)),
                ("DEBOUNCE", "200ms".to_owned()),
                ("MAX_DELAY", "1s".to_owned()),
                ("HEARTBEAT_INTERVAL", "5m".to_owned()),
                ("RUST_LOG", "info,ksd_exporter=debug".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        env
    }

    /// Starts `ksd-exporter` with `args` and [`Harness::env`] plus `extra`.
    pub fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> Exporter {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin_text = admin.to_string();
        let mut extra = extra.to_vec();
        if !extra.iter().any(|(k, _)| *k == "ADMIN_ADDR") {
            extra.push(("ADMIN_ADDR", &admin_text));
        }
        let agent = Agent::spawn(
            env!("CARGO_BIN_EXE_ksd-exporter"),
            args,
            self.env(&extra),
            "ksd-exporter",
        )
        .unwrap();
        Exporter { agent, admin }
    }

    /// The stored Traefik object, read from moto directly.
    pub async fn object(&self) -> Option<Vec<u8>> {
        let storage = Storage::from_s3_client(self.s3.client(), self.s3.bucket(), &self.prefix);
        match storage
            .get(&format!("{}.traefik.yaml", self.cluster), None)
            .await
            .unwrap()
        {
            Fetched::Object(object) => Some(object.bytes),
            _ => None,
        }
    }

    /// The stored object's metadata.
    pub async fn metadata(&self) -> Option<BTreeMap<String, String>> {
        let storage = Storage::from_s3_client(self.s3.client(), self.s3.bucket(), &self.prefix);
        match storage
            .get(&format!("{}.traefik.yaml", self.cluster), None)
            .await
            .unwrap()
        {
            Fetched::Object(object) => Some(object.metadata),
            _ => None,
        }
    }

    /// Waits until the stored object holds exactly `expected`.
    pub async fn wait_for_servers(&self, exporter: &mut Exporter, expected: &Servers) {
        let result = wait_for(
            "the object to hold the expected servers",
            Duration::from_secs(30),
            || async {
                let bytes = self.object().await?;
                (&servers_of(&bytes) == expected).then_some(())
            },
        )
        .await;
        if let Err(err) = result {
            let found = self
                .object()
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            panic!(
                "{err}\nexpected: {expected:#?}\nstored: {found:#?}\nrunning: {}\n{}",
                exporter.agent.is_running(),
                exporter.agent.logs()
            );
        }
    }
}

/// A Service with the label the default selector exports.
pub fn exported(namespace: &str, name: &str) -> ServiceBuilder {
    service(namespace, name).label(EXPORT_LABEL, "true")
}

/// Parses a cluster document as the syncer would (strictly), panicking if it is refused.
pub fn parse(bytes: &[u8]) -> Document {
    parse_cluster_document(bytes, &Limits::default()).unwrap_or_else(|err| {
        panic!(
            "the published document is refused: {err}\n{}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Every service of a document with its servers.
pub fn servers_of(bytes: &[u8]) -> Servers {
    struct Collect(Servers);
    impl SectionVisitor for Collect {
        fn visit<L: LoadBalancer>(&mut self, _: Protocol, section: &Section<L>) {
            for (name, svc) in &section.services {
                let servers = svc.load_balancer.servers().iter();
                self.0
                    .insert(name.to_string(), servers.map(ToString::to_string).collect());
            }
        }
    }
    let mut collect = Collect(Servers::new());
    parse(bytes).visit(&mut collect);
    collect.0
}

/// Builds an expected [`Servers`] map.
pub fn expect(entries: &[(&str, &[&str])]) -> Servers {
    entries
        .iter()
        .map(|(name, servers)| {
            (
                (*name).to_owned(),
                servers.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

/// A plain HTTP/1.0 GET: `(status, body)`, `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of a metric line such as `ksd_exporter_uploads_total{outcome="written"}`.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics").await?;
    body.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Waits until the exporter reports ready on `/readyz`.
pub async fn wait_ready(exporter: &mut Exporter) {
    let admin = exporter.admin;
    let result = wait_for(
        "/readyz to answer 200",
        Duration::from_secs(30),
        || async move {
            let (status, _) = http_get(admin, "/readyz").await?;
            (status == 200).then_some(())
        },
    )
    .await;
    if let Err(err) = result {
        panic!("{err}\n{}", exporter.agent.logs());
    }
}

/// The Lease timings of a leader-election test.
pub struct LeaseTimings {
    pub duration: &'static str,
    pub renew_deadline: &'static str,
    pub retry_period: &'static str,
}

impl Harness {
    /// Starts an exporter with leader election on the Lease `lease` (in the kubeconfig's
    /// namespace, `default`), as holder `identity`.
    pub fn spawn_elected(&self, lease: &str, identity: &str, timings: &LeaseTimings) -> Exporter {
        self.spawn(
            &[],
            &[
                ("LEADER_ELECTION", "true"),
                ("LEASE_NAME", lease),
                ("LEASE_HOLDER_IDENTITY", identity),
                ("LEASE_DURATION", timings.duration),
                ("LEASE_RENEW_DEADLINE", timings.renew_deadline),
                ("LEASE_RETRY_PERIOD", timings.retry_period),
            ],
        )
    }

    /// The Lease's `holderIdentity` (empty when released), `None` when there is no Lease.
    pub fn lease_holder(&self, lease: &str) -> Option<String> {
        let object = self.api.get("leases", "default", lease)?;
        Some(
            object
                .pointer("/spec/holderIdentity")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// Waits until `identity` holds the Lease.
    pub async fn wait_for_holder(&self, lease: &str, identity: &str, exporters: &[&Exporter]) {
        let result = wait_for("the Lease's holder", Duration::from_secs(30), || async {
            (self.lease_holder(lease).as_deref() == Some(identity)).then_some(())
        })
        .await;
        if let Err(err) = result {
            let logs: Vec<String> = exporters.iter().map(|e| e.agent.logs()).collect();
            panic!(
                "{err}: expected {identity}, found {:?}\n{}",
                self.lease_holder(lease),
                logs.join("\n----\n")
            );
        }
    }
}

/// Waits until a metric of `exporter` has `value`.
pub async fn wait_for_metric(exporter: &Exporter, series: &str, value: f64) {
    let admin = exporter.admin;
    let result = wait_for(series, Duration::from_secs(30), || async move {
        (metric(admin, series).await == Some(value)).then_some(())
    })
    .await;
    if let Err(err) = result {
        panic!(
            "{err}: expected {value}, found {:?}\n{}",
            metric(admin, series).await,
            exporter.agent.logs()
        );
    }
}

/// Waits until `/metrics` shows every `(series, value)` of `expected` (`None`: absent).
pub async fn wait_metrics(exporter: &Exporter, what: &str, expected: &[(&str, Option<f64>)]) {
    let admin: SocketAddr = exporter.admin;
    let expected: Vec<(String, Option<f64>)> = expected
        .iter()
        .map(|(s, v)| ((*s).to_owned(), *v))
        .collect();
    let result = wait_for(what, Duration::from_secs(30), || {
        let expected = expected.clone();
        async move {
            for (series, value) in &expected {
                if metric(admin, series).await != *value {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    if let Err(err) = result {
        let (_, body) = http_get(admin, "/metrics").await.unwrap_or_default();
        panic!("{err}\n{body}\n{}", exporter.agent.logs());
    }
}

/// Starts a real `ksd-syncer` named `name` on the harness's prefix, writing into `dir`.
pub fn syncer(h: &Harness, name: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Agent {
    let mut env = h.s3.env();
    env.extend(
        [
            ("STORAGE_URL", h.s3.storage_url(&h.prefix)),
            ("TRAEFIK_DIR", dir.display().to_string()),
            ("POLL_INTERVAL", "200ms".to_owned()),
            ("SYNCER_NAME", name.to_owned()),
            (
                "ADMIN_ADDR",
                format!("127.0.0.1:{}", ksd_testbed::process::free_port()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    for (k, v) in extra {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    Agent::spawn(
        ksd_testbed::process::bin_path("ksd-syncer"),
        &[] as &[&str],
        env,
        "ksd-syncer",
    )
    .unwrap()
}
