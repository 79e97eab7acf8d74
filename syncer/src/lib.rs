//! `ksd-syncer`: keeps one Traefik dynamic-configuration file in step with the cluster documents
//! that `ksd-exporter`s publish in a bucket.
//!
//! It lists the storage prefix (S3 on [`Settings::poll_interval`]; a local directory on file
//! events, with the same period as a safety net), fetches only the objects whose ETag changed,
//! validates each cluster's document on its own, merges them all with
//! [`ksd_shared::merge::merge`], and writes the result atomically into Traefik's directory when
//! its bytes change.
//!
//! - [`settings`]: the command line / environment ([`settings::Args`]) and the validated
//!   [`Settings`].
//! - [`state`]: the pure core. [`state::State`] remembers every cluster's last good document
//!   and decides what to fetch, what the answers mean and what the file should hold.
//! - [`status`]: what this syncer serves, on the admin port (`/`, `/status`,
//!   `/status/services/NAME`), for `ksd-syncer explain`, and as the acknowledgement in the bucket.
//! - [`output`]: the output file: atomic replacement, temporary-file hygiene, change detection.
//! - [`guard`]: what no cluster may put in the file: servers the address policy refuses
//!   ([`ksd_shared::policy`], per cluster) and services named like the administrator's own;
//!   [`admin_files`] reads those names from `TRAEFIK_DIR`.
//! - [`restore`]: each cluster's last served document, rebuilt at start from the file the
//!   previous run wrote.
//! - [`events`]: bucket event notifications from SQS (`S3_EVENT_QUEUE_URL`): what a message
//!   says, and the task that receives them.
//! - `sync`: the one task that performs the I/O the state asks for, with timeouts, backoff and
//!   metrics ([`metrics`]).
//!
//! [`run`] is the whole agent; `main.rs` only parses settings and installs logging.

pub mod admin_files;
pub mod compose;
pub mod events;
pub mod guard;
pub mod metrics;
pub mod output;
pub mod restore;
pub mod settings;
pub mod state;
pub mod status;
mod sync;

use std::path::PathBuf;

pub use settings::Settings;
pub use sync::run;

pub use ksd_runtime::error_chain;

/// Everything that can stop the syncer or fail one of its operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open storage")]
    Storage(#[source] ksd_runtime::storage::StorageError),

    #[error("listing the storage prefix failed")]
    List(#[source] ksd_runtime::storage::StorageError),

    #[error("listing the storage prefix timed out after {0:?}")]
    ListTimeout(std::time::Duration),

    #[error("{count} cluster object(s) could not be fetched")]
    Incomplete { count: usize },

    #[error("cannot start the admin server")]
    Admin(#[source] ksd_runtime::admin::AdminError),

    #[error("interrupted by shutdown")]
    Cancelled,

    #[error("output file {path}: {step} failed")]
    OutputIo {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("writing {path} timed out after {after:?}")]
    OutputTimeout {
        path: PathBuf,
        after: std::time::Duration,
    },

    #[error("the merged document does not pass validation; nothing was written")]
    InvalidOutput(#[source] ksd_shared::traefik::DocumentError),

    #[error("cannot watch {path} for changes")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },

    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),

    #[error("a blocking file operation failed to complete")]
    Blocking(#[source] tokio::task::JoinError),

    #[error("task {task} ended unexpectedly ({detail})")]
    TaskEnded { task: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
