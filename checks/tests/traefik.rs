//! Traefik's configuration as shipped in `traefik/`.
//!
//! The static file must parse and point the file provider at the directory ksd-syncer writes;
//! `dynamic/main.yml` must pass the Traefik v3 file-provider JSON Schema (SchemaStore's, vendored in
//! `checks/schemas/`); and together with what ksd-syncer writes for the sample clusters
//! (`deploy/demo/bucket/`, merged by the real binary with `--once --dry-run`), every service a
//! router or a composite service names must exist, and no name may be defined twice (Traefik
//! would silently keep one of them).

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use common::{
    binary, read_repo_file, read_repo_yaml, repo_path, run_ok, schema_violations, str_at,
};

const DYNAMIC_DIR: &str = "/etc/traefik/dynamic";
const CLUSTERS: [&str; 2] = ["cluster-a", "cluster-b"];

fn v3_schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/traefik-v3-file-provider.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn main_yml() -> Value {
    read_repo_yaml("traefik/dynamic/main.yml")
}

/// Runs `ksd-syncer --once --dry-run` over a `file://` directory holding the sample clusters'
/// documents and returns the merged file it would write.
fn syncer_output_for_the_samples() -> Value {
    let work = tempfile::tempdir().unwrap();
    let bucket = work.path().join("bucket");
    let dynamic = work.path().join("dynamic");
    std::fs::create_dir_all(&bucket).unwrap();
    std::fs::create_dir_all(&dynamic).unwrap();
    for cluster in CLUSTERS {
        let name = format!("{cluster}.traefik.yaml");
        std::fs::copy(
            repo_path(&format!("deploy/demo/bucket/{name}")),
            bucket.join(&name),
        )
        .unwrap();
    }
    let mut command = Command::new(binary("ksd-syncer"));
    command
        .args(["--once", "--dry-run"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STORAGE_URL", format!("file://{}/", bucket.display()))
        .env("TRAEFIK_DIR", &dynamic)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text");
    let stdout = run_ok(&mut command);
    assert!(
        std::fs::read_dir(&dynamic).unwrap().next().is_none(),
        "--dry-run wrote into TRAEFIK_DIR"
    );
    let documents = common::yaml_documents(&stdout);
    assert_eq!(documents.len(), 1, "one document on stdout:\n{stdout}");
    documents.into_iter().next().unwrap()
}

/// Names of the HTTP services a document defines.
fn http_services(document: &Value) -> BTreeSet<String> {
    document["http"]["services"]
        .as_object()
        .map(|services| services.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every service name a document refers to, with where it is referred from.
fn references(document: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (router, spec) in document["http"]["routers"]
        .as_object()
        .into_iter()
        .flatten()
    {
        found.push((
            format!("router {router}"),
            str_at(spec, "/service").to_owned(),
        ));
    }
    for (service, spec) in document["http"]["services"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let from = format!("service {service}");
        for child in spec["weighted"]["services"]
            .as_array()
            .into_iter()
            .flatten()
        {
            found.push((from.clone(), str_at(child, "/name").to_owned()));
        }
        for key in ["service", "fallback"] {
            if let Some(name) = spec["failover"][key].as_str() {
                found.push((from.clone(), name.to_owned()));
            }
        }
        if let Some(name) = spec["mirroring"]["service"].as_str() {
            found.push((from.clone(), name.to_owned()));
        }
        for mirror in spec["mirroring"]["mirrors"]
            .as_array()
            .into_iter()
            .flatten()
        {
            found.push((from.clone(), str_at(mirror, "/name").to_owned()));
        }
    }
    found
}

fn server_count(document: &Value, service: &str) -> usize {
    document["http"]["services"][service]["loadBalancer"]["servers"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn the_static_configuration_watches_the_dynamic_directory() {
    let config = read_repo_yaml("traefik/traefik.yml");
    let known_roots: BTreeSet<&str> = [
        "global",
        "entryPoints",
        "providers",
        "ping",
        "metrics",
        "log",
        "accessLog",
        "api",
        "serversTransport",
        "tcpServersTransport",
        "tracing",
        "experimental",
        "certificatesResolvers",
        "core",
        "hostResolver",
        "spiffe",
        "ocsp",
    ]
    .into();
    for key in config.as_object().expect("a mapping").keys() {
        assert!(
            known_roots.contains(key.as_str()),
            "unknown static option {key}"
        );
    }
    let file = &config["providers"]["file"];
    assert_eq!(file["directory"], json!(DYNAMIC_DIR));
    assert_eq!(file["watch"], json!(true));
    assert!(
        file["filename"].is_null(),
        "directory mode, not a single file"
    );

    let entry_points = config["entryPoints"].as_object().expect("entryPoints");
    for owner in ["/ping/entryPoint", "/metrics/prometheus/entryPoint"] {
        let entry_point = str_at(&config, owner);
        assert!(
            entry_points.contains_key(entry_point),
            "{owner}: {entry_point}"
        );
    }
    for (name, entry_point) in entry_points {
        let address = str_at(entry_point, "/address");
        assert!(
            address.starts_with(':') && address[1..].parse::<u16>().is_ok(),
            "entry point {name}: address {address}"
        );
    }
    // Durations need units in v3 (a bare number means seconds).
    if let Some(throttle) = config["providers"]["providersThrottleDuration"].as_str() {
        assert!(
            throttle.ends_with('s') || throttle.ends_with('m'),
            "{throttle}"
        );
    }
}

#[test]
fn main_yml_matches_the_traefik_v3_schema() {
    let violations = schema_violations(&v3_schema(), &main_yml());
    assert!(violations.is_empty(), "{violations:#?}");
    let text = read_repo_file("traefik/dynamic/main.yml");
    // Traefik renders every file as a Go template first.
    assert!(
        !text.contains("{{"),
        "main.yml must not contain template markers"
    );
}

#[test]
fn the_schema_rejects_broken_documents() {
    let schema = v3_schema();
    for broken in [
        json!({"http": {"routers": {"r": {"rule": "Host(`a`)", "service": "s", "servic": "t"}}}}),
        json!({"http": {"services": {"s": {"loadBalancer": {"servers": []}}}}}),
        json!({"http": {"services": {"s": {"weighted": {"services": [{"name": "a"}]}, "failover": {}}}}}),
    ] {
        assert!(
            !schema_violations(&schema, &broken).is_empty(),
            "accepted {broken}"
        );
    }
}

#[test]
fn routes_use_entry_points_the_static_configuration_defines() {
    let config = read_repo_yaml("traefik/traefik.yml");
    let entry_points = config["entryPoints"].as_object().expect("entryPoints");
    let main = main_yml();
    let routers = main["http"]["routers"].as_object().expect("routers");
    assert!(!routers.is_empty());
    for (name, router) in routers {
        let used = router["entryPoints"]
            .as_array()
            .unwrap_or_else(|| panic!("router {name}: name its entry points"));
        for entry_point in used {
            let entry_point = entry_point.as_str().expect("string");
            assert!(
                entry_points.contains_key(entry_point),
                "router {name}: {entry_point}"
            );
        }
    }
    // The proof of concept's route, under the new names.
    assert_eq!(
        main["http"]["routers"]["angular"]["rule"],
        json!("Host(`angular.local`)")
    );
    let weighted = &main["http"]["services"][str_at(&main, "/http/routers/angular/service")];
    assert_eq!(
        weighted["weighted"]["services"],
        json!([
            {"name": "default-angular-blue-http", "weight": 3},
            {"name": "default-angular-green-http", "weight": 1}
        ])
    );
}

#[test]
fn main_yml_and_the_syncer_output_reference_only_services_that_exist() {
    let main = main_yml();
    let output = syncer_output_for_the_samples();

    let violations = schema_violations(&v3_schema(), &output);
    assert!(violations.is_empty(), "syncer output: {violations:#?}");
    assert!(
        output["http"]["routers"].is_null() && output["http"]["middlewares"].is_null(),
        "the syncer writes services only"
    );

    // Union pools and per-cluster pools, with the sample's servers.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let samples: Vec<Value> = CLUSTERS
        .iter()
        .map(|c| read_repo_yaml(&format!("deploy/demo/bucket/{c}.traefik.yaml")))
        .collect();
    for (cluster, sample) in CLUSTERS.iter().zip(&samples) {
        for service in http_services(sample) {
            let count = server_count(sample, &service);
            *expected.entry(service.clone()).or_default() += count;
            expected.insert(format!("{service}.{cluster}"), count);
        }
    }
    for (service, count) in &expected {
        assert_eq!(
            server_count(&output, service),
            *count,
            "servers of {service} in the merged file"
        );
    }

    let generated = http_services(&output);
    let administered = http_services(&main);
    let twice: Vec<_> = generated.intersection(&administered).collect();
    assert!(twice.is_empty(), "defined in both files: {twice:?}");

    let all: BTreeSet<&String> = generated.iter().chain(&administered).collect();
    for document in [&main, &output] {
        for (from, name) in references(document) {
            let name = name.strip_suffix("@file").unwrap_or(&name).to_owned();
            assert!(
                all.contains(&name),
                "{from} refers to {name}, which neither main.yml nor the syncer defines"
            );
        }
    }
    // The example really uses both kinds of pool.
    let referenced: BTreeSet<String> = references(&main).into_iter().map(|(_, n)| n).collect();
    assert!(referenced.contains("default-angular-blue-http"));
    assert!(referenced.iter().any(|n| n.ends_with(".cluster-a")));
    assert!(referenced.iter().any(|n| n.ends_with(".cluster-b")));
}
