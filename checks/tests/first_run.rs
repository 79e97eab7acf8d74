//! `scripts/first-run`, end to end and non-interactively: two API server doubles, an exporter
//! per cluster, the syncer, a scale-up, and the merged Traefik file following it.
//!
//! The script builds the binaries itself when run by hand; here it is given the ones this test
//! run already has (`KSD_BIN_DIR`), since a `cargo build` inside `cargo test` would wait on
//! the build directory's lock. Its work directory is a temporary one (`KSD_DEMO_DIR`).

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::{binary, describe_output, read_repo_file, repo_path, run};

const OUTPUT: &str = "traefik/dynamic/k8s-service-discovery.yml";

fn urls(document: &Value, service: &str) -> Vec<String> {
    document["http"]["services"][service]["loadBalancer"]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers for {service} in {document}"))
        .iter()
        .map(|server| common::str_at(server, "/url").to_owned())
        .collect()
}

/// Processes whose command line mentions `dir` (the script's children all do, through their
/// kubeconfig, storage or output paths).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ);
        if cmdline.contains(&needle) || environ.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[test]
fn first_run_shows_a_scale_up_reaching_traefiks_file() {
    let bin_dir = binary("ksd-syncer")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    for name in ["ksd-exporter", "ksd-testbed"] {
        binary(name);
    }
    let demo = tempfile::tempdir().unwrap();

    let output = run(Command::new(repo_path("scripts/first-run"))
        .current_dir(repo_path(""))
        .env("KSD_DEMO_DIR", demo.path())
        .env("KSD_BIN_DIR", &bin_dir)
        .env("KSD_DEMO_TIMEOUT", "120"));
    let logs = std::fs::read_dir(demo.path().join("logs"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    format!(
                        "--- {}\n{}",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    assert!(
        output.status.success(),
        "scripts/first-run failed\n{}\n{logs}",
        describe_output(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);

    // The scaled pool has the new pods, and the union pool counts both clusters.
    let merged_text = std::fs::read_to_string(demo.path().join(OUTPUT)).unwrap();
    let merged = common::yaml_documents(&merged_text).remove(0);
    let cluster_a: Vec<String> = (11..=15).map(|i| format!("http://10.1.0.{i}:80")).collect();
    assert_eq!(
        urls(&merged, "default-angular-blue-http.cluster-a"),
        cluster_a,
        "{merged_text}"
    );
    assert_eq!(
        urls(&merged, "default-angular-blue-http.cluster-b"),
        ["http://10.2.0.11:80"]
    );
    assert_eq!(urls(&merged, "default-angular-blue-http").len(), 6);
    assert_eq!(urls(&merged, "default-angular-green-http").len(), 4);

    // The administrator's file sits next to it, untouched.
    assert_eq!(
        std::fs::read_to_string(demo.path().join("traefik/dynamic/main.yml")).unwrap(),
        read_repo_file("traefik/dynamic/main.yml")
    );

    // It showed the change and said where the files are.
    assert!(
        stdout.contains("+") && stdout.contains("10.1.0.15:80"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('+') && l.contains("http://10.1.0.14:80")),
        "the diff shows the new servers:\n{stdout}"
    );
    assert!(stdout.contains(&demo.path().join("bucket").display().to_string()));
    assert!(stdout.contains("default-angular-blue-http.cluster-a now has 5 servers"));

    // And it stopped everything it started.
    let left = processes_using(demo.path());
    assert!(left.is_empty(), "still running: {left:#?}");
}
