//! The README's configuration reference must say what the binaries' `--help` says.
//!
//! `ksd-exporter --help` and `ksd-syncer --help` are run (with none of their variables set) and
//! every option with `[env: NAME=]` is collected with its `[default: X]`. README.md must hold,
//! for each binary, a table that lists exactly those variables with the same defaults.
//!
//! # The layout this test reads
//!
//! ```markdown
//! ### ksd-exporter
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `STORAGE_URL` | `file:///var/lib/ksd/` | Where cluster documents live ... |
//! | `CLUSTER_NAME` | — | Required. A DNS label that names the object ... |
//! | `S3_FORCE_PATH_STYLE` | on when `AWS_ENDPOINT_URL` is set, else off | ... |
//! | `AWS_REGION` | — | The AWS SDK's region ... |
//! ```
//!
//! - Each binary's table follows a heading (any level) whose text names that binary
//!   (`ksd-exporter` or `ksd-syncer`, backticks allowed) and not the other one. The table is the
//!   first one after that heading, before the next heading.
//! - Its header row is `| variable | default | meaning |` (case-insensitive, cells trimmed),
//!   followed by the `|---|---|---|` separator row.
//! - One row per variable. First cell: the variable's name in backticks, alone.
//! - Second cell: the default exactly as `--help` prints it inside `[default: ...]`. Backticks
//!   are removed and runs of whitespace collapsed before comparing, so `` `10s` `` and `10s`
//!   both match `[default: 10s]`. When `--help` prints no default, the cell is empty, `—`,
//!   `-`, `none`, `(none)`, `required` or `(required)`.
//! - Third cell: free text. A `|` inside any cell is written `\|`.
//! - The table lists every variable the binary's `--help` shows, once, and nothing else, with
//!   two exceptions that may be listed with any default: the AWS SDK's `AWS_*` variables and
//!   `RUST_LOG`. Deprecated aliases (`MINIO_*`, `LABEL_FILTER`) are hidden from `--help`, so
//!   they are documented outside these two tables.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{EnvOption, help_env_options, parse_help, repo_path};

const BINARIES: [&str; 2] = ["ksd-exporter", "ksd-syncer"];
const HEADER: [&str; 3] = ["variable", "default", "meaning"];
const NO_DEFAULT: [&str; 7] = ["", "—", "-", "none", "(none)", "required", "(required)"];

/// One row of a configuration table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    variable: String,
    /// The default cell with backticks removed and whitespace collapsed.
    default: String,
    line: usize,
}

/// Splits a table row into trimmed cells, honouring `\|`.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().unwrap().push('|');
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn heading_text(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let hashes = trimmed.chars().take_while(|c| *c == '#').count();
    ((1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' '))
        .then(|| trimmed[hashes..].trim())
}

/// Finds `binary`'s configuration table in a README; `Err` says what is wrong with the layout.
fn config_table(readme: &str, binary: &str) -> Result<Vec<Row>, String> {
    let other = BINARIES
        .iter()
        .find(|b| **b != binary)
        .expect("two binaries");
    let lines = markdown_lines(readme);
    let table_start = table_after_heading(&lines, binary, other)?;
    check_header_and_separator(&lines, table_start, binary)?;
    table_rows(&lines, table_start, binary)
}

/// The README's lines, with those inside fenced code blocks blanked: they are not Markdown,
/// and a `# comment` there is no heading.
fn markdown_lines(readme: &str) -> Vec<&str> {
    let mut in_fence = false;
    readme
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                ""
            } else if in_fence {
                ""
            } else {
                line
            }
        })
        .collect()
}

/// The index of the first table line after the heading that names `binary` and not `other`,
/// before the next heading.
fn table_after_heading(lines: &[&str], binary: &str, other: &str) -> Result<usize, String> {
    let heading_at = lines
        .iter()
        .position(|line| {
            heading_text(line).is_some_and(|text| text.contains(binary) && !text.contains(other))
        })
        .ok_or_else(|| format!("no heading naming `{binary}` (and not `{other}`)"))?;

    let mut index = heading_at + 1;
    loop {
        let Some(line) = lines.get(index) else {
            return Err(format!("no table after the `{binary}` heading"));
        };
        if heading_text(line).is_some() {
            return Err(format!(
                "no table between the `{binary}` heading (line {}) and the next heading (line {})",
                heading_at + 1,
                index + 1
            ));
        }
        if line.trim_start().starts_with('|') {
            return Ok(index);
        }
        index += 1;
    }
}

/// The table at `table_start` starts with the `| variable | default | meaning |` header and
/// the `|---|---|---|` separator.
fn check_header_and_separator(
    lines: &[&str],
    table_start: usize,
    binary: &str,
) -> Result<(), String> {
    let header: Vec<String> = cells(lines[table_start])
        .into_iter()
        .map(|c| c.to_lowercase())
        .collect();
    if header != HEADER {
        return Err(format!(
            "line {}: the `{binary}` table's header is {header:?}, expected | variable | default | meaning |",
            table_start + 1
        ));
    }
    let separator = lines.get(table_start + 1).copied().unwrap_or_default();
    let separator_cells = cells(separator);
    if separator_cells.len() != 3
        || !separator_cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
    {
        return Err(format!(
            "line {}: expected the |---|---|---| separator",
            table_start + 2
        ));
    }
    Ok(())
}

/// The rows after the table's header and separator, up to its first non-table line: each one
/// variable in backticks and two more cells; at least one.
fn table_rows(lines: &[&str], table_start: usize, binary: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (offset, line) in lines[table_start + 2..].iter().enumerate() {
        if !line.trim_start().starts_with('|') {
            break;
        }
        let number = table_start + 3 + offset;
        let row = cells(line);
        if row.len() != 3 {
            return Err(format!("line {number}: {} cells, expected 3", row.len()));
        }
        let variable = row[0]
            .strip_prefix('`')
            .and_then(|v| v.strip_suffix('`'))
            .filter(|v| {
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .ok_or_else(|| {
                format!(
                    "line {number}: the first cell must be one variable in backticks, found {:?}",
                    row[0]
                )
            })?;
        rows.push(Row {
            variable: variable.to_owned(),
            default: common::collapse_whitespace(&row[1].replace('`', "")),
            line: number,
        });
    }
    if rows.is_empty() {
        return Err(format!("the `{binary}` table has no rows"));
    }
    Ok(rows)
}

/// Every disagreement between a binary's options and its README table.
fn disagreements(binary: &str, options: &[EnvOption], rows: &[Row]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for row in rows {
        if let Some(first) = seen.insert(&row.variable, row.line) {
            problems.push(format!(
                "line {}: {} is listed again (first on line {first})",
                row.line, row.variable
            ));
        }
    }
    let mut by_name: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in rows {
        by_name.entry(row.variable.as_str()).or_insert(row);
    }
    for option in options {
        let Some(row) = by_name.get(option.variable.as_str()) else {
            problems.push(format!(
                "{} ({}) is missing from the `{binary}` table",
                option.variable, option.flag
            ));
            continue;
        };
        match &option.default {
            Some(default) => {
                let expected = common::collapse_whitespace(default);
                if row.default != expected {
                    problems.push(format!(
                        "line {}: {} default is {:?} in the README, {:?} in --help",
                        row.line, option.variable, row.default, expected
                    ));
                }
            }
            None => {
                if !NO_DEFAULT.contains(&row.default.to_lowercase().as_str()) {
                    problems.push(format!(
                        "line {}: {} has no default in --help, the README says {:?}",
                        row.line, option.variable, row.default
                    ));
                }
            }
        }
    }
    let known: BTreeSet<&str> = options.iter().map(|o| o.variable.as_str()).collect();
    for row in rows {
        let exempt = row.variable.starts_with("AWS_") || row.variable == "RUST_LOG";
        if !known.contains(row.variable.as_str()) && !exempt {
            problems.push(format!(
                "line {}: {} is not a variable of {binary} (its --help lists {known:?})",
                row.line, row.variable
            ));
        }
    }
    problems
}

/// The rows a README would need, for the failure message.
fn suggested_table(options: &[EnvOption]) -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for option in options {
        let default = option
            .default
            .as_deref()
            .map_or("—".to_owned(), |d| format!("`{d}`"));
        table.push_str(&format!("| `{}` | {default} | ... |\n", option.variable));
    }
    table
}

#[test]
fn readme_configuration_reference_matches_help() {
    let path = repo_path("README.md");
    let mut problems = Vec::new();
    let mut suggestions = String::new();
    let readme = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        problems.push(format!("cannot read {}: {e}", path.display()));
        String::new()
    });
    for binary in BINARIES {
        let options = help_env_options(binary);
        match config_table(&readme, binary) {
            Ok(rows) => {
                let found = disagreements(binary, &options, &rows);
                if !found.is_empty() {
                    suggestions
                        .push_str(&format!("\n### {binary}\n\n{}", suggested_table(&options)));
                }
                problems.extend(found);
            }
            Err(layout) => {
                problems.push(format!("{binary}: {layout}"));
                suggestions.push_str(&format!("\n### {binary}\n\n{}", suggested_table(&options)));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README.md and --help disagree:\n- {}\n\nThe tables --help implies (layout: see checks/tests/readme.rs):\n{suggestions}",
        problems.join("\n- ")
    );
}

// The reader itself, on README text written here, so its rules are proven without the real
// README and binaries.

fn options() -> Vec<EnvOption> {
    parse_help(
        "Usage: ksd-syncer [OPTIONS]\n\nOptions:\n      --storage-url <URL>\n          Where documents live\n          \n          [env: STORAGE_URL=]\n          [default: file:///var/lib/ksd/]\n\n      --s3-force-path-style <BOOL>\n          Path-style [default: on when AWS_ENDPOINT_URL is set, else off]\n          \n          [env: S3_FORCE_PATH_STYLE=]\n\n      --cluster-name <NAME>\n          Required\n          \n          [env: CLUSTER_NAME=]\n\n      --once\n          One cycle\n          \n          [env: ONCE=]\n\n  -h, --help\n          Print help\n",
    )
}

#[test]
fn help_parsing_finds_variables_and_defaults() {
    let found = options();
    let pairs: Vec<(&str, Option<&str>)> = found
        .iter()
        .map(|o| (o.variable.as_str(), o.default.as_deref()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("STORAGE_URL", Some("file:///var/lib/ksd/")),
            (
                "S3_FORCE_PATH_STYLE",
                Some("on when AWS_ENDPOINT_URL is set, else off")
            ),
            ("CLUSTER_NAME", None),
            ("ONCE", None),
        ]
    );
    assert_eq!(found[0].flag, "--storage-url");
    // Short help puts everything on one line.
    let short = parse_help(
        "Options:\n      --poll-interval <DURATION>  Period [env: POLL_INTERVAL=] [default: 10s]\n  -h, --help  Print help\n",
    );
    assert_eq!(short.len(), 1);
    assert_eq!(short[0].variable, "POLL_INTERVAL");
    assert_eq!(short[0].default.as_deref(), Some("10s"));
}

const GOOD: &str = "# Project\n\n## Configuration\n\n### `ksd-syncer`\n\nText.\n\n| Variable | Default | Meaning |\n|---|:--|---|\n| `STORAGE_URL` | `file:///var/lib/ksd/` | where \\| what |\n| `S3_FORCE_PATH_STYLE` | on when `AWS_ENDPOINT_URL` is set, else off | path style |\n| `CLUSTER_NAME` | — | required |\n| `ONCE` | | one cycle |\n| `AWS_REGION` | `us-east-1` | SDK |\n\n### ksd-exporter\n\n| variable | default | meaning |\n|---|---|---|\n| `X` | — | x |\n";

#[test]
fn a_matching_table_passes() {
    let rows = config_table(GOOD, "ksd-syncer").unwrap();
    assert_eq!(rows.len(), 5);
    assert!(disagreements("ksd-syncer", &options(), &rows).is_empty());
}

#[test]
fn every_disagreement_is_reported() {
    let readme = GOOD
        .replace("`file:///var/lib/ksd/`", "`file:///tmp/`")
        .replace(
            "| `ONCE` | | one cycle |\n",
            "| `LABEL_FILTER` | — | old |\n| `CLUSTER_NAME` | — | again |\n",
        )
        .replace(
            "| `CLUSTER_NAME` | — | required |",
            "| `CLUSTER_NAME` | `none-such` | required |",
        );
    let rows = config_table(&readme, "ksd-syncer").unwrap();
    let problems = disagreements("ksd-syncer", &options(), &rows);
    let text = problems.join("\n");
    assert!(text.contains("STORAGE_URL default"), "{text}");
    assert!(text.contains("ONCE (--once) is missing"), "{text}");
    assert!(text.contains("LABEL_FILTER is not a variable"), "{text}");
    assert!(text.contains("CLUSTER_NAME is listed again"), "{text}");
    assert!(text.contains("CLUSTER_NAME has no default"), "{text}");
}

#[test]
fn layout_errors_are_explained() {
    assert!(
        config_table("# x\n", "ksd-syncer")
            .unwrap_err()
            .contains("no heading")
    );
    assert!(
        config_table("## ksd-syncer\n\n## next\n| a |", "ksd-syncer")
            .unwrap_err()
            .contains("no table between")
    );
    assert!(
        config_table("## ksd-syncer\n| name | value |\n|---|---|\n", "ksd-syncer")
            .unwrap_err()
            .contains("header")
    );
    assert!(
        config_table(
            "## ksd-syncer\n| variable | default | meaning |\n|---|---|---|\n| STORAGE_URL | x | y |\n",
            "ksd-syncer"
        )
        .unwrap_err()
        .contains("backticks")
    );
    // A heading naming both binaries is not either one's table.
    assert!(
        config_table(
            "## ksd-exporter and ksd-syncer\n| variable | default | meaning |\n",
            "ksd-syncer"
        )
        .is_err()
    );
}
