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
//! - [`status`]: the acknowledgement a named syncer writes at `<prefix>_status/<name>.json`.
//! - [`merge`]: many clusters' documents into one ([`merge::merge`]): a union pool per service
//!   name plus one pool per cluster, with a report of every conflict.

// Tests unwrap freely: a panic there is a failed assertion, not a crash on outside data.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod merge;
pub mod names;
pub mod status;
pub mod traefik;

/// Hex SHA-256 of some bytes: how both agents tell "same content" apart from "changed".
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Parses a duration written with units: `500ms`, `5s`, `5m`, `1h`, `1m30s` (units `ns`, `us`,
/// `ms`, `s`, `m`, `h`). A bare number is refused: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let number: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let nanos_per_unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: a unit is required (ms, s, m, h), e.g. \"5s\""
                ));
            }
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(nanos_per_unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("invalid duration {text:?}: too large"))?;
    // The remainder is < 1e9 and always fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(std::time::Duration::new(secs, nanos))
}
