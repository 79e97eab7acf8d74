//! `ksd-runtime`: the I/O that `ksd-exporter` and `ksd-syncer` share.
//!
//! - [`storage`]: where cluster documents live, a [`storage::Storage`] over an S3-compatible
//!   bucket or a local directory, named by a [`storage::StorageUrl`]; listings with ETags,
//!   conditional fetches and writes, object metadata.
//! - [`admin`]: the admin HTTP server (`/livez`, `/readyz`, `/metrics`) and the
//!   [`admin::Health`] flags behind the probes.
//! - [`cli`]: clap argument groups both binaries flatten (storage, admin, logging, run mode)
//!   and their validation into typed settings; [`cli::SettingsError`] names the variable.
//! - [`telemetry`]: `tracing` set-up (`RUST_LOG`, text or JSON).
//! - [`shutdown`]: SIGTERM/SIGINT to a `CancellationToken`; a second signal forces the exit.
//! - [`backoff`]: capped exponential backoff with full jitter.

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
