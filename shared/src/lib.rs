//! `ksd-shared`: the pure core that `ksd-exporter` and `ksd-syncer` agree on.
//!
//! Nothing here performs I/O or needs an async runtime, so every rule is tested with plain
//! `#[test]`s and property tests.
//!
//! - [`backend`]: the neutral model, a [`backend::Backend`] (one published port of one Service)
//!   and its [`backend::Target`]s (IP + port), plus the `backends` output format.
//! - [`names`]: cluster names (DNS labels), object keys (`<cluster>.traefik.yaml`), service-name
//!   templates and their collision-free expansion.
//! - [`traefik`]: the Traefik dynamic-configuration model for the services subset the project
//!   writes: [`traefik::document_from_backends`], deterministic rendering ([`traefik::render`]),
//!   strict parsing and validation ([`traefik::parse_cluster_document`] for cluster documents,
//!   [`traefik::parse_merged_document`] for the merged file).
//! - [`duration`]: Go's `time.ParseDuration` grammar and range ([`duration::GoDuration`]), the
//!   health-check bounds ([`duration::ProbeDuration`]) and the settings' [`parse_duration`].
//! - [`status`]: the acknowledgement a named syncer writes at `<prefix>_status/<name>.json`.
//! - [`merge`]: many clusters' documents into one ([`merge::merge`]): a union pool per service
//!   name plus one pool per cluster, with a report of every conflict.

// Tests unwrap freely: a panic there is a failed assertion, not a crash on outside data.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod duration;
pub mod merge;
pub mod names;
pub mod policy;
pub mod status;
pub mod traefik;

/// Hex SHA-256 of some bytes: how both agents tell "same content" apart from "changed".
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

pub use duration::parse_duration;
