//! `docker-compose.yml`, checked without a Docker engine or a Compose binary.
//!
//! The file is validated against the Compose Specification's JSON Schema (vendored in
//! `checks/schemas/`, see `SOURCE.md` there), both as written and after interpolation with the
//! values of `.env.example` (the way Compose reads it: `$$` escapes, `${VAR:-default}`,
//! `${VAR:?error}`, and variables passed through by name). Then the structure the deployment
//! relies on is asserted: Traefik and ksd-syncer share the file provider's directory (the
//! directory, not a file, is mounted), the syncer runs unprivileged, images are pinned, MinIO
//! and the bucket creation sit in the `dev` profile, and every variable the file uses is
//! documented in `.env.example`, which holds no other.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use common::{help_env_options, read_repo_file, read_repo_yaml, repo_path, schema_violations};

const TRAEFIK_STATIC_IN_CONTAINER: &str = "/etc/traefik/traefik.yml";

fn compose() -> Value {
    read_repo_yaml("docker-compose.yml")
}

fn compose_schema() -> Value {
    let text = read_repo_file("checks/schemas/compose-spec.json");
    serde_json::from_str(&text).expect("compose-spec.json is JSON")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_object(),
        "docker-compose.yml has no service {name}"
    );
    service
}

/// A service's environment as (name, value); `None` for names passed through without a value.
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    match &service["environment"] {
        Value::Array(entries) => entries
            .iter()
            .map(|entry| {
                let entry = entry.as_str().expect("environment entries are strings");
                match entry.split_once('=') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (entry.to_owned(), None),
                }
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                (name.clone(), value)
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("unexpected environment {other}"),
    }
}

/// Short-syntax volumes as (source, target, options).
fn volumes(service: &Value) -> Vec<(String, String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|volume| {
            let volume = volume.as_str().expect("short volume syntax");
            let mut parts = volume.splitn(3, ':');
            let source = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            let options = parts.next().unwrap_or_default().to_owned();
            (source, target, options)
        })
        .collect()
}

/// `.env.example`: the variables it sets, and those it documents in a comment (`#NAME=...`).
fn env_example() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut set = BTreeMap::new();
    let mut commented = BTreeSet::new();
    for line in read_repo_file(".env.example").lines() {
        let line = line.trim();
        let (is_comment, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let Some((name, value)) = body.split_once('=') else {
            continue;
        };
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_name {
            continue;
        }
        if is_comment {
            commented.insert(name.to_owned());
        } else {
            set.insert(name.to_owned(), value.to_owned());
        }
    }
    (set, commented)
}

/// Compose interpolation of one string. `Err` carries the message of a `${VAR:?message}`
/// whose variable is missing.
fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner_start) = after.strip_prefix('{') {
            let end = inner_start
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text}"))?;
            let expression = &inner_start[..end];
            let name_len = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            let (name, operator) = expression.split_at(name_len);
            let value = env.get(name);
            let non_empty = value.filter(|v| !v.is_empty());
            let replacement = if let Some(default) = operator.strip_prefix(":-") {
                non_empty.cloned().unwrap_or_else(|| default.to_owned())
            } else if let Some(default) = operator.strip_prefix('-') {
                value.cloned().unwrap_or_else(|| default.to_owned())
            } else if let Some(message) = operator.strip_prefix(":?") {
                non_empty
                    .cloned()
                    .ok_or_else(|| format!("{name}: {message}"))?
            } else if let Some(message) = operator.strip_prefix('?') {
                value.cloned().ok_or_else(|| format!("{name}: {message}"))?
            } else if operator.is_empty() {
                value.cloned().unwrap_or_default()
            } else {
                return Err(format!("unsupported interpolation ${{{expression}}}"));
            };
            out.push_str(&replacement);
            rest = &inner_start[end + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(env.get(&after[..name_len]).map_or("", String::as_str));
                rest = &after[name_len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Every variable a string interpolates (`$$` is an escape, not a variable).
fn interpolated_names(text: &str, names: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let body = after.strip_prefix('{').unwrap_or(after);
        let name_len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if name_len > 0 {
            names.insert(body[..name_len].to_owned());
        }
        rest = &body[name_len..];
    }
}

/// Applies `f` to every string value (not keys) of a JSON tree.
fn map_strings(value: &Value, f: &mut dyn FnMut(&str) -> Value) -> Value {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => Value::Array(items.iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), map_strings(v, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn interpolated_compose() -> Value {
    let (env, _) = env_example();
    let mut errors = Vec::new();
    let value = map_strings(&compose(), &mut |s| match interpolate(s, &env) {
        Ok(text) => Value::String(text),
        Err(error) => {
            errors.push(error);
            Value::Null
        }
    });
    assert!(
        errors.is_empty(),
        "with .env.example, interpolation fails: {errors:?}"
    );
    value
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let schema = compose_schema();
    let violations = schema_violations(&schema, &compose());
    assert!(violations.is_empty(), "as written: {violations:#?}");
    let violations = schema_violations(&schema, &interpolated_compose());
    assert!(violations.is_empty(), "interpolated: {violations:#?}");
}

#[test]
fn the_schema_rejects_what_compose_would_reject() {
    let schema = compose_schema();
    for (broken, why) in [
        (
            json!({"services": {"a": {"image": "x:1", "restart_policy": "always"}}}),
            "unknown key",
        ),
        (
            json!({"services": {"a": {"image": "x:1", "profiles": "dev"}}}),
            "profiles is a list",
        ),
        (
            json!({"services": {"a": {"image": "x:1", "cap_drop": "ALL"}}}),
            "cap_drop is a list",
        ),
    ] {
        assert!(
            !schema_violations(&schema, &broken).is_empty(),
            "accepted ({why}): {broken}"
        );
    }
}

#[test]
fn interpolation_follows_compose_rules() {
    let env: BTreeMap<String, String> = [
        ("SET".to_owned(), "v".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]
    .into();
    assert_eq!(interpolate("a$$b", &env).unwrap(), "a$b");
    assert_eq!(interpolate("${SET}-$SET", &env).unwrap(), "v-v");
    assert_eq!(interpolate("${EMPTY:-d}|${EMPTY-d}", &env).unwrap(), "d|");
    assert_eq!(interpolate("${MISSING:-d}", &env).unwrap(), "d");
    assert!(interpolate("${EMPTY:?no}", &env).is_err());
    assert!(interpolate("${MISSING?no}", &env).is_err());
    let mut names = BTreeSet::new();
    interpolated_names("$$ESCAPED ${A:-x} $B ${C:?e}", &mut names);
    assert_eq!(names, ["A", "B", "C"].map(String::from).into());
}

#[test]
fn images_are_pinned_and_the_syncer_is_built_from_this_repository() {
    let compose = compose();
    for (name, service) in compose["services"].as_object().expect("services") {
        let Some(image) = service["image"].as_str() else {
            continue;
        };
        if !service["build"].is_null() {
            continue; // the name given to a local build
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        let tag = last.split_once(':').map(|(_, tag)| tag);
        assert!(
            tag.is_some_and(|t| !t.is_empty() && t != "latest" && !t.contains('$')),
            "{name}: image {image} is not pinned to a version"
        );
    }
    let traefik = str_of(&compose, "/services/traefik/image");
    let version = traefik
        .strip_prefix("traefik:v3.")
        .unwrap_or_else(|| panic!("Traefik v3 expected, found {traefik}"));
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "pin Traefik to a patch release (traefik:v3.N.N), found {traefik}"
    );

    let syncer = service(&compose, "syncer");
    assert_eq!(syncer["build"]["context"], json!("."));
    let target = str_of(syncer, "/build/target");
    assert!(
        read_repo_file("Dockerfile")
            .lines()
            .any(|line| line.starts_with("FROM ") && line.ends_with(&format!(" AS {target}"))),
        "the Dockerfile has no stage {target}"
    );
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    common::str_at(value, pointer)
}

#[test]
fn traefik_and_the_syncer_share_the_dynamic_directory() {
    let compose = compose();
    let static_config = read_repo_yaml("traefik/traefik.yml");
    let provider_dir = str_of(&static_config, "/providers/file/directory");

    let traefik = service(&compose, "traefik");
    let traefik_volumes = volumes(traefik);
    assert!(
        traefik_volumes
            .iter()
            .any(|(source, target, _)| source == "./traefik/traefik.yml"
                && target == TRAEFIK_STATIC_IN_CONTAINER),
        "Traefik must get traefik/traefik.yml at {TRAEFIK_STATIC_IN_CONTAINER}"
    );
    let (host_dir, _, _) = traefik_volumes
        .iter()
        .find(|(_, target, _)| target == provider_dir)
        .unwrap_or_else(|| panic!("nothing is mounted at the provider's directory {provider_dir}"))
        .clone();
    let host_path = repo_path(host_dir.trim_start_matches("./"));
    assert!(
        host_path.is_dir(),
        "{host_dir} must be a directory of the repository"
    );
    assert!(host_path.join("main.yml").is_file(), "{host_dir}/main.yml");

    let syncer = service(&compose, "syncer");
    let env = environment(syncer);
    let traefik_dir = env["TRAEFIK_DIR"].clone().expect("TRAEFIK_DIR has a value");
    assert_eq!(
        traefik_dir, provider_dir,
        "the syncer must write where Traefik reads"
    );
    let syncer_mount = volumes(syncer)
        .into_iter()
        .find(|(_, target, _)| *target == traefik_dir)
        .expect("the syncer mounts TRAEFIK_DIR");
    // The same host directory, writable: a bind mount of the file itself would pin the old
    // inode and miss the syncer's atomic renames.
    assert_eq!(syncer_mount.0, host_dir);
    assert!(
        !syncer_mount.2.split(',').any(|o| o == "ro"),
        "the syncer must be able to write"
    );
    let output_file = env["OUTPUT_FILE"].clone().unwrap_or_default();
    assert!(
        output_file.contains("k8s-service-discovery.yml"),
        "OUTPUT_FILE: {output_file}"
    );
    assert_eq!(env["TRAEFIK_VERSION"], Some("v3".to_owned()));
    // Generated output never lands in git.
    assert!(
        read_repo_file("traefik/dynamic/.gitignore")
            .lines()
            .any(|l| l.trim() == "k8s-service-discovery.yml")
    );
}

#[test]
fn the_syncer_runs_unprivileged() {
    let compose = compose();
    let syncer = service(&compose, "syncer");
    let user = str_of(syncer, "/user");
    assert!(
        !user.is_empty() && !user.starts_with("root") && !user.starts_with("0:") && user != "0",
        "syncer user: {user}"
    );
    let interpolated = interpolated_compose();
    let user = str_of(&interpolated, "/services/syncer/user");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("syncer user {user} is not numeric"));
    assert_ne!(uid, 0);
    assert_eq!(syncer["read_only"], json!(true));
    assert_eq!(syncer["cap_drop"], json!(["ALL"]));
    assert!(syncer["cap_add"].is_null() && syncer["privileged"].is_null());
    assert!(
        syncer["security_opt"]
            .as_array()
            .is_some_and(|o| o.contains(&json!("no-new-privileges:true")))
    );
}

#[test]
fn minio_and_the_bucket_job_are_in_the_dev_profile_only() {
    let compose = compose();
    for name in ["traefik", "syncer"] {
        assert!(
            service(&compose, name)["profiles"].is_null(),
            "{name} always runs"
        );
    }
    for name in ["minio", "minio-init"] {
        assert_eq!(
            service(&compose, name)["profiles"],
            json!(["dev"]),
            "{name}"
        );
    }
    let init = service(&compose, "minio-init");
    assert_eq!(
        init["depends_on"]["minio"]["condition"],
        json!("service_healthy")
    );
    assert!(str_of(init, "/image").starts_with("minio/mc:"));
    let script = init["command"].to_string();
    assert!(
        script.contains("mc mb --ignore-existing"),
        "creates the bucket"
    );
    // The sample documents it uploads exist.
    for (source, _, _) in volumes(init) {
        assert!(
            repo_path(source.trim_start_matches("./")).is_dir(),
            "{source}"
        );
    }
    assert!(!service(&compose, "minio")["healthcheck"].is_null());
}

#[test]
fn every_variable_is_documented_in_env_example_and_env_is_ignored() {
    let compose = compose();
    let mut used = BTreeSet::new();
    map_strings(&compose, &mut |s| {
        interpolated_names(s, &mut used);
        Value::Null
    });
    for service in compose["services"].as_object().expect("services").values() {
        for (name, value) in environment(service) {
            if value.is_none() {
                used.insert(name);
            }
        }
    }
    let (set, commented) = env_example();
    let documented: BTreeSet<String> = set.keys().cloned().chain(commented).collect();
    let undocumented: Vec<_> = used.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in .env.example: {undocumented:?}"
    );
    let unused: Vec<_> = documented.difference(&used).collect();
    assert!(
        unused.is_empty(),
        ".env.example documents unused {unused:?}"
    );

    assert!(
        read_repo_file(".gitignore")
            .lines()
            .any(|l| l.trim() == ".env"),
        ".env must be ignored by git"
    );
}

#[test]
fn the_syncer_gets_only_variables_it_knows() {
    let known: BTreeSet<String> = help_env_options("ksd-syncer")
        .into_iter()
        .map(|o| o.variable)
        .collect();
    let compose = compose();
    for name in environment(service(&compose, "syncer")).keys() {
        assert!(
            known.contains(name) || name.starts_with("AWS_") || name == "RUST_LOG",
            "{name} is not a ksd-syncer variable (--help lists {known:?})"
        );
    }
}

#[test]
fn the_syncer_has_a_health_check_the_distroless_image_can_run() {
    let compose = compose();
    let syncer = service(&compose, "syncer");
    let check = &syncer["healthcheck"];
    let test: Vec<&str> = check["test"]
        .as_array()
        .unwrap_or_else(|| panic!("the syncer has no healthcheck test: {check}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Exec form: the image has no shell for CMD-SHELL, and no curl or wget.
    assert_eq!(test.first(), Some(&"CMD"), "{test:?}");
    assert_eq!(&test[2..], ["healthcheck"], "{test:?}");
    // The path is the image's own binary, as the Dockerfile installs it.
    let dockerfile = read_repo_file("Dockerfile");
    let entrypoint = format!("ENTRYPOINT [\"{}\"]", test[1]);
    assert!(
        dockerfile.contains(&entrypoint),
        "{} is not the syncer image's entrypoint",
        test[1]
    );
    // The subcommand exists in the binary the image ships.
    let help = std::process::Command::new(common::binary("ksd-syncer"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("healthcheck"), "{help}");
    // It reaches the admin server the container configures.
    let environment = environment(syncer);
    assert!(
        environment.contains_key("ADMIN_ADDR"),
        "the check reads ADMIN_ADDR: {environment:?}"
    );
    for field in ["interval", "timeout", "retries"] {
        assert!(!check[field].is_null(), "healthcheck.{field} is not set");
    }
}
