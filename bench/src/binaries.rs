//! Where the agents' binaries are.
//!
//! The benchmarks measure the binaries as shipped, so they run the ones built next to
//! themselves: `cargo run --release -p ksd-bench --bin ...` runs from `target/release/`, where
//! `cargo build --release -p ksd-exporter -p ksd-syncer` puts the agents. (The testbed's
//! `bin_path` looks in `target/debug/`, which is right for tests and wrong here.)

use std::path::PathBuf;

use crate::{Error, Result};

/// One of the agents' binaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    Exporter,
    Syncer,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::Exporter => "ksd-exporter",
            Agent::Syncer => "ksd-syncer",
        }
    }

    /// The variable that overrides the binary's location.
    pub fn variable(self) -> &'static str {
        match self {
            Agent::Exporter => "KSD_BENCH_EXPORTER_BIN",
            Agent::Syncer => "KSD_BENCH_SYNCER_BIN",
        }
    }

    /// The binary: [`Agent::variable`] when set, else the file of that name next to the
    /// running executable.
    pub fn path(self) -> Result<PathBuf> {
        let path = match std::env::var_os(self.variable()) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => {
                let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
                let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
                dir.join(format!("{}{}", self.name(), std::env::consts::EXE_SUFFIX))
            }
        };
        if !path.is_file() {
            return Err(Error::MissingBinary {
                name: self.name(),
                variable: self.variable(),
                path,
            });
        }
        Ok(path)
    }
}

/// Whether this benchmark was compiled with optimisations: numbers from a debug build say
/// nothing about production and are flagged as such.
pub fn optimized() -> bool {
    !cfg!(debug_assertions)
}

/// A line to print first: what was measured with what.
pub fn build_note() -> &'static str {
    if optimized() {
        "build: release"
    } else {
        "build: DEBUG (numbers are not representative; run with --release)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables() {
        assert_eq!(Agent::Exporter.name(), "ksd-exporter");
        assert_eq!(Agent::Syncer.variable(), "KSD_BENCH_SYNCER_BIN");
    }
}
