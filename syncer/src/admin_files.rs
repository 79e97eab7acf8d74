//! The administrator's own files in Traefik's directory, read for one purpose: the service names
//! they define, which no cluster may take over (Traefik keeps the first definition of a name in
//! file-name order, so an exported name that sorts first would silently win).
//!
//! Every `.yml`, `.yaml` and `.toml` file (any case) in `TRAEFIK_DIR` and below, dotfiles
//! included, as Traefik's file provider reads them, except the syncer's own output file. Files
//! are only ever opened for reading, non-blocking and bounded ([`ADMIN_FILE_LIMIT`]); symlinked
//! directories are not followed (no loops). A file is read again only when its size,
//! modification time or inode change, so a rescan on every cycle costs one `stat` per file.
//!
//! A file that does not parse (a Go template Traefik renders first, a typo) is reported and
//! scanned line by line for what looks like service names, which are protected all the same.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ksd_runtime::storage::bounded::{self, BoundedRead};

use crate::guard::{AdminNames, Kind};

/// Administrator files larger than this are not read; what they define cannot be protected.
pub const ADMIN_FILE_LIMIT: u64 = 8 * 1024 * 1024;
/// Directories below `TRAEFIK_DIR` deeper than this are not visited.
const MAX_DEPTH: usize = 16;

/// A problem with one administrator file, reported when the file changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub detail: String,
    /// Names still read from it by the line scan.
    pub salvaged: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

#[derive(Clone, Debug)]
struct Scanned {
    stamp: Stamp,
    names: AdminNames,
    problem: Option<Problem>,
}

/// What a rescan found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// True when the names differ from the previous scan.
    pub changed: bool,
    /// Problems of files read in this scan (new or changed files only).
    pub new_problems: Vec<Problem>,
    /// Files currently with a problem.
    pub problem_files: usize,
    /// Files read in this scan.
    pub read: usize,
}

/// Keeps the names of the administrator's files, rereading only what changed.
#[derive(Debug)]
pub struct AdminFiles {
    dir: PathBuf,
    output: PathBuf,
    files: BTreeMap<PathBuf, Scanned>,
    names: AdminNames,
}

impl AdminFiles {
    /// `output`: the syncer's own file, never counted as the administrator's.
    pub fn new(dir: &Path, output: &Path) -> Self {
        AdminFiles {
            dir: dir.to_path_buf(),
            output: output.to_path_buf(),
            files: BTreeMap::new(),
            names: AdminNames::new(),
        }
    }

    /// Every name the administrator's files define, as of the last [`AdminFiles::rescan`].
    pub fn names(&self) -> &AdminNames {
        &self.names
    }

    /// Walks the directory again. Blocking (run it on the blocking pool). A missing directory
    /// defines no names; files that vanished take their names with them.
    pub fn rescan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let mut found = Vec::new();
        collect(&self.dir, 0, &mut found);
        let mut files = BTreeMap::new();
        for (path, meta) in found {
            if path == self.output {
                continue;
            }
            let stamp = stamp(&meta);
            let scanned = match self.files.remove(&path) {
                Some(known) if known.stamp == stamp => known,
                _ => {
                    scan.read += 1;
                    let scanned = read_names(&path, stamp);
                    if let Some(problem) = &scanned.problem {
                        scan.new_problems.push(problem.clone());
                    }
                    scanned
                }
            };
            files.insert(path, scanned);
        }
        let mut names = AdminNames::new();
        for scanned in files.values() {
            names.extend(scanned.names.clone());
            if scanned.problem.is_some() {
                scan.problem_files += 1;
            }
        }
        self.files = files;
        scan.changed = names != self.names;
        self.names = names;
        scan
    }
}

fn stamp(meta: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        ino: meta.ino(),
    }
}

fn is_config_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .is_some_and(|e| matches!(e.as_str(), "yml" | "yaml" | "toml"))
}

fn collect(dir: &Path, depth: usize, found: &mut Vec<(PathBuf, fs::Metadata)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                collect(&path, depth + 1, found);
            }
            continue;
        }
        if !is_config_name(&path) {
            continue;
        }
        // Follows a symlinked file (ConfigMap mounts); a dangling link defines nothing.
        if let Ok(meta) = fs::metadata(&path)
            && meta.is_file()
        {
            found.push((path, meta));
        }
    }
}

fn read_names(path: &Path, stamp: Stamp) -> Scanned {
    let problem = |detail: String, names: &AdminNames| Problem {
        path: path.to_path_buf(),
        detail,
        salvaged: names.len(),
    };
    let bytes = match bounded::read_regular_file(path, ADMIN_FILE_LIMIT) {
        Ok(BoundedRead::Read { bytes, .. }) => bytes,
        Ok(BoundedRead::Missing | BoundedRead::NotRegular) => {
            return Scanned {
                stamp,
                names: AdminNames::new(),
                problem: None,
            };
        }
        Ok(BoundedRead::TooLarge { size, limit }) => {
            let names = AdminNames::new();
            return Scanned {
                stamp,
                problem: Some(problem(
                    format!("{size} bytes, over the limit of {limit}: its names are not protected"),
                    &names,
                )),
                names,
            };
        }
        Err(error) => {
            let names = AdminNames::new();
            return Scanned {
                stamp,
                problem: Some(problem(unreadable(&error), &names)),
                names,
            };
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let toml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let parsed = if toml {
        parse_toml(&text)
    } else {
        parse_yaml(&text)
    };
    match parsed {
        Ok(names) => Scanned {
            stamp,
            names,
            problem: None,
        },
        Err(detail) => {
            let names = if toml {
                scan_toml(&text)
            } else {
                scan_yaml(&text)
            };
            Scanned {
                stamp,
                problem: Some(problem(detail, &names)),
                names,
            }
        }
    }
}

fn unreadable(error: &io::Error) -> String {
    format!("cannot read it: {error}")
}

/// Names under `http|tcp|udp` → `services` in a YAML document. Section keys are matched
/// case-insensitively, as Traefik's decoder does.
pub fn parse_yaml(text: &str) -> Result<AdminNames, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut names = AdminNames::new();
    let Some(root) = value.as_mapping() else {
        return Ok(names);
    };
    for (section, body) in root {
        let Some(kind) = section
            .as_str()
            .and_then(|s| Kind::parse(&s.to_ascii_lowercase()))
        else {
            continue;
        };
        let Some(body) = body.as_mapping() else {
            continue;
        };
        for (key, services) in body {
            if !key
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("services"))
            {
                continue;
            }
            for name in services.as_mapping().into_iter().flat_map(|m| m.keys()) {
                match name {
                    serde_yaml::Value::String(name) => names.insert(kind, name.clone()),
                    serde_yaml::Value::Number(n) => names.insert(kind, n.to_string()),
                    serde_yaml::Value::Bool(b) => names.insert(kind, b.to_string()),
                    _ => {}
                }
            }
        }
    }
    Ok(names)
}

/// Names under `[http|tcp|udp.services]` in a TOML document.
pub fn parse_toml(text: &str) -> Result<AdminNames, String> {
    let document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("not valid TOML: {}", e.message()))?;
    let mut names = AdminNames::new();
    for (section, body) in document.as_table().iter() {
        let Some(kind) = Kind::parse(&section.to_ascii_lowercase()) else {
            continue;
        };
        let Some(body) = body.as_table_like() else {
            continue;
        };
        for (key, services) in body.iter() {
            if !key.eq_ignore_ascii_case("services") {
                continue;
            }
            if let Some(services) = services.as_table_like() {
                for (name, _) in services.iter() {
                    names.insert(kind, name);
                }
            }
        }
    }
    Ok(names)
}

fn unquote(token: &str) -> &str {
    let token = token.trim();
    token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| token.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
        .unwrap_or(token)
}

/// The line scan for a YAML file that does not parse: the keys one level below a `services:`
/// that sits below `http:`, `tcp:` or `udp:`, by indentation.
pub fn scan_yaml(text: &str) -> AdminNames {
    let mut names = AdminNames::new();
    let mut section: Option<(Kind, usize)> = None;
    let mut services: Option<usize> = None;
    let mut child: Option<usize> = None;
    for line in text.lines() {
        let content = line.trim_start();
        // Template actions on lines of their own (`{{ range ... }}`) say nothing about the
        // structure around them.
        if content.is_empty()
            || content.starts_with('#')
            || content.starts_with("---")
            || content.starts_with("{{")
        {
            continue;
        }
        let indent = line.len() - content.len();
        let key = content
            .split_once(':')
            .map(|(k, _)| unquote(k))
            .filter(|k| !k.is_empty() && !k.starts_with('-'));
        if let Some(level) = services {
            if indent > level {
                let level = *child.get_or_insert(indent);
                if indent == level
                    && let (Some(key), Some((kind, _))) = (key, section)
                {
                    names.insert(kind, key);
                }
                continue;
            }
            services = None;
            child = None;
        }
        if let Some((_, level)) = section {
            if indent > level {
                if key.is_some_and(|k| k.eq_ignore_ascii_case("services")) {
                    services = Some(indent);
                }
                continue;
            }
            section = None;
        }
        if let Some(kind) = key.and_then(|k| Kind::parse(&k.to_ascii_lowercase())) {
            section = Some((kind, indent));
        }
    }
    names
}

/// The line scan for a TOML file that does not parse: table headers
/// `[http.services.<name>...]`.
pub fn scan_toml(text: &str) -> AdminNames {
    let mut names = AdminNames::new();
    for line in text.lines() {
        let header = line.trim();
        let Some(inner) = header
            .strip_prefix('[')
            .map(|h| h.trim_start_matches('['))
            .and_then(|h| h.split(']').next())
        else {
            continue;
        };
        let parts = split_dotted(inner);
        if let [section, services, name, ..] = parts.as_slice()
            && services.eq_ignore_ascii_case("services")
            && let Some(kind) = Kind::parse(&section.to_ascii_lowercase())
        {
            names.insert(kind, name.clone());
        }
    }
    names
}

/// Splits a TOML dotted key, keeping quoted parts whole.
fn split_dotted(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in key.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => parts.push(std::mem::take(&mut current).trim().to_owned()),
            (None, c) => current.push(c),
        }
    }
    parts.push(current.trim().to_owned());
    parts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const MAIN_YML: &str = "http:\n  routers:\n    r:\n      rule: Host(`x`)\n      service: angular-blue-green\n  services:\n    angular-blue-green:\n      loadBalancer:\n        servers:\n          - url: http://192.0.2.1:80\n    \"quoted\":\n      loadBalancer:\n        servers: []\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: 192.0.2.1:5432\n";

    #[test]
    fn yaml_names_by_kind() {
        let names = parse_yaml(MAIN_YML).unwrap();
        assert!(names.contains(Kind::Http, "angular-blue-green"));
        assert!(names.contains(Kind::Http, "quoted"));
        assert!(names.contains(Kind::Tcp, "db"));
        assert!(!names.contains(Kind::Http, "db"));
        assert!(!names.contains(Kind::Http, "r"), "routers are not services");
        assert_eq!(names.len(), 3);
        assert_eq!(scan_yaml(MAIN_YML), names, "the line scan agrees");
    }

    #[test]
    fn toml_names_by_kind() {
        let text = "[http.routers.r]\nrule = \"Host(`x`)\"\nservice = \"web\"\n\n[http.services.web.loadBalancer]\n[[http.services.web.loadBalancer.servers]]\nurl = \"http://192.0.2.1:80\"\n\n[http.services.\"dotted.name\".loadBalancer]\n\n[udp.services.dns.loadBalancer]\n";
        let names = parse_toml(text).unwrap();
        assert!(names.contains(Kind::Http, "web"));
        assert!(names.contains(Kind::Http, "dotted.name"));
        assert!(names.contains(Kind::Udp, "dns"));
        assert_eq!(names.len(), 3);
        assert_eq!(scan_toml(text), names);
        // Inline tables too.
        let inline = "http = { services = { api = { loadBalancer = { servers = [] } } } }\n";
        assert!(parse_toml(inline).unwrap().contains(Kind::Http, "api"));
    }

    #[test]
    fn unparsable_files_are_reported_and_their_names_still_protected() {
        let tmp = tempfile::tempdir().unwrap();
        let broken = "http:\n  services:\n    {{ if true }}\n    templated:\n      loadBalancer:\n        servers: [\n";
        fs::write(tmp.path().join("broken.yml"), broken).unwrap();
        fs::write(
            tmp.path().join("broken.toml"),
            "[http.services.tomlsvc.loadBalancer]\nurl = \n",
        )
        .unwrap();
        let mut files = AdminFiles::new(tmp.path(), &tmp.path().join("out.yml"));
        let scan = files.rescan();
        assert_eq!(scan.new_problems.len(), 2, "{scan:?}");
        assert!(scan.new_problems.iter().all(|p| p.salvaged == 1));
        assert!(files.names().contains(Kind::Http, "templated"));
        assert!(files.names().contains(Kind::Http, "tomlsvc"));
    }

    #[test]
    fn rescans_read_only_what_changed_recursively_and_skip_the_output() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub/.hidden");
        fs::create_dir_all(&sub).unwrap();
        fs::write(tmp.path().join("main.yml"), MAIN_YML).unwrap();
        fs::write(
            sub.join("extra.YAML"),
            "http:\n  services:\n    deep:\n      loadBalancer:\n        servers: []\n",
        )
        .unwrap();
        fs::write(
            tmp.path().join("notes.txt"),
            "http:\n  services:\n    no: {}\n",
        )
        .unwrap();
        let output = tmp.path().join("out.yml");
        fs::write(
            &output,
            "http:\n  services:\n    ours:\n      loadBalancer:\n        servers: []\n",
        )
        .unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(tmp.path().join("fifo.yml"))
            .status()
            .unwrap();
        assert!(status.success());

        let mut files = AdminFiles::new(tmp.path(), &output);
        let scan = files.rescan();
        assert!(scan.changed);
        assert_eq!(scan.read, 2, "{scan:?}");
        assert!(files.names().contains(Kind::Http, "deep"));
        assert!(!files.names().contains(Kind::Http, "ours"));
        assert!(!files.names().contains(Kind::Http, "no"));

        let scan = files.rescan();
        assert!(!scan.changed);
        assert_eq!(scan.read, 0, "unchanged files are not read again");

        fs::remove_file(sub.join("extra.YAML")).unwrap();
        let scan = files.rescan();
        assert!(scan.changed);
        assert!(!files.names().contains(Kind::Http, "deep"));
    }
}
