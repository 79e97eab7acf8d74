//! `ksd-bench`: measurements of `ksd-exporter` and `ksd-syncer` against the project's targets.
//!
//! The binaries in `src/bin/` are run by hand in release mode and print what they measured;
//! they assert nothing (see `README.md` and `docs/BENCHMARKS.md`). This library holds what they
//! share:
//!
//! - [`stats`]: [`stats::Summary`] (median, p90, p99, max) of a set of durations;
//! - [`procfs`]: a process's resident memory ([`procfs::Memory`]: `VmRSS`, `VmHWM`);
//! - [`workload`]: the synthetic states: one exporter cluster ([`workload::ExporterShape`],
//!   Services and EndpointSlices built with the testbed's builders) and the syncer's many
//!   cluster documents ([`workload::SyncerShape`]), each with a way to change one server and
//!   the text that shows the change arrived ([`workload::server_marker`]);
//! - [`files`]: noticing that a file was replaced with a given content, by polling its
//!   metadata ([`files::poll_until_contains`]) or through file events ([`files::DirWatch`]);
//! - [`binaries`]: where the agents' release binaries are;
//! - [`agents`]: the syncer's environment, waiting on a running agent's output while checking
//!   it is still alive, and ending a run ([`agents::finish`]);
//! - [`s3`]: uploading a cluster document as an exporter would;
//! - [`floor`]: the I/O an exporter change cannot avoid (object write, slice read).

#![cfg_attr(test, allow(clippy::unwrap_used))] // a failed unwrap is a failed test

pub mod agents;
pub mod binaries;
pub mod files;
pub mod floor;
pub mod procfs;
pub mod s3;
pub mod stats;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while setting up or taking a measurement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no {field} line")]
    MissingField { path: PathBuf, field: &'static str },
    #[error("cannot locate the running executable")]
    CurrentExe(#[source] std::io::Error),
    #[error(
        "{name} not found at {path}: build it first with `cargo build --release -p {name}` \
         (or point {variable} at a binary)"
    )]
    MissingBinary {
        name: &'static str,
        variable: &'static str,
        path: PathBuf,
    },
    #[error("cannot watch {path} for changes")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the file watcher of {path} stopped")]
    WatcherGone { path: PathBuf },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("{name} exited ({status}) while waiting for {what}\n{logs}")]
    AgentExited {
        name: String,
        status: String,
        what: String,
        logs: String,
    },
    #[error("a blocking wait failed to complete")]
    Blocking(#[source] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
