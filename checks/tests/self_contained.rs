//! The build and the tests read nothing outside the repository.
//!
//! A clone on a new machine has no sibling directories, so a test that reads
//! `<repo>/../something` passes only where that happens to exist. Every relative path written
//! as a string literal in Rust sources, manifests and scripts is resolved against the directory
//! it is relative to (the crate for Rust sources and manifests, the repository root for scripts,
//! which `cd` there first) and must stay inside the repository.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Component, Path, PathBuf};

use common::repo_root;

/// Directories that are not the project's sources.
const SKIPPED_DIRS: [&str; 4] = [".git", "target", ".venv", "node_modules"];

/// Relative paths (`../x`, `./../x`, `a/../../x`) inside double- or single-quoted literals.
fn relative_literals(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['"', '\''] {
        let mut parts = text.split(quote);
        // Every odd part sits between two quotes.
        parts.next();
        while let Some(inside) = parts.next() {
            if inside.contains("..") && !inside.contains('\n') && inside.len() < 300 {
                found.push(inside.to_owned());
            }
            parts.next();
        }
    }
    found
}

/// `base.join(relative)`, normalized without touching the file system; `None` when a `..`
/// climbs above `root`.
fn stays_inside(root: &Path, base: &Path, relative: &str) -> bool {
    let Ok(start) = base.strip_prefix(root) else {
        return false;
    };
    let mut depth: Vec<Component<'_>> = start.components().collect();
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(_) => depth.push(component),
            Component::CurDir => {}
            // An absolute path is not relative; other checks own those.
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    true
}

/// The nearest directory at or above `file` holding a `Cargo.toml`, else the repository root.
fn crate_dir(root: &Path, file: &Path) -> PathBuf {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.join("Cargo.toml").is_file() {
            return d.to_path_buf();
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    root.to_path_buf()
}

fn is_scanned(root: &Path, path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let relative = path.strip_prefix(root).unwrap_or(path);
    let in_script_dir = relative.starts_with("scripts") || relative.starts_with(".ci");
    name.ends_with(".rs") || name == "Cargo.toml" || name.ends_with(".sh") || in_script_dir
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                walk(root, &path, out);
            }
        } else if file_type.is_file() && is_scanned(root, &path) {
            out.push(path);
        }
    }
}

fn violations(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    walk(root, root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let relative = file.strip_prefix(root).unwrap_or(&file);
        let is_script = relative.starts_with("scripts") || relative.starts_with(".ci");
        let base = if is_script {
            root.to_path_buf()
        } else {
            crate_dir(root, &file)
        };
        for literal in relative_literals(&text) {
            // Only what looks like a path: `..` as a whole path component.
            let path_like = literal.split('/').any(|part| part == "..");
            if path_like && !stays_inside(root, &base, &literal) {
                found.push(format!("{}: {literal:?}", relative.display()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn no_source_refers_to_a_path_above_the_repository() {
    let found = violations(&repo_root());
    assert!(
        found.is_empty(),
        "these paths climb out of the repository; a fresh clone has nothing there, so vendor \
         what they point at:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_an_escaping_path() {
    // Assembled at run time so that this file does not hold the literal it plants.
    let up = "..";
    let escaping = format!("{up}/{up}/shared/x.json");
    let outside = format!("{up}/outside");
    let root = tempfile::tempdir().unwrap();
    let krate = root.path().join("shared");
    std::fs::create_dir_all(krate.join("tests")).unwrap();
    std::fs::write(krate.join("Cargo.toml"), "[package]\n").unwrap();
    std::fs::write(
        krate.join("tests/schema.rs"),
        format!(r#"let ok = dir.join("{up}/checks/schemas"); let bad = dir.join("{escaping}");"#),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("scripts")).unwrap();
    std::fs::write(
        root.path().join("scripts/test"),
        format!("cd \"$(dirname \"$0\")/{up}\"\ncat '{outside}'\n"),
    )
    .unwrap();
    let found = violations(root.path());
    assert_eq!(
        found,
        [
            format!("scripts/test: {outside:?}"),
            format!("shared/tests/schema.rs: {escaping:?}"),
        ],
        "{found:?}"
    );
}
