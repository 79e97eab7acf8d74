//! Acknowledgements: what one syncer serves, written back into the bucket for the exporters.
//!
//! A syncer started with a name (`SYNCER_NAME`, a DNS label) writes one small JSON document,
//! [`Acknowledgement`], at `<prefix>_status/<name>.json`: per cluster the ETag of the version it
//! last processed, the ETag of the version in Traefik's file, the state (served, rejected with
//! reason and line, stale, missing for N polls), the servers and services it serves and the
//! services it left out with the reason. An exporter reads its own cluster's entry from every
//! acknowledgement and asks [`Acknowledgement::answer`] "is my object with ETag X served?".
//!
//! The directory name starts with `_`, which no DNS label contains, so it can never be mistaken
//! for a cluster's object; and it is a "sub-directory" of the prefix, which cluster listings
//! never descend into. The schema is written down in `docs/status.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{ClusterName, NameError};

/// The sub-prefix (directory) holding the acknowledgements, relative to the storage prefix.
pub const STATUS_DIR: &str = "_status";

/// The `apiVersion` of every acknowledgement this code writes and reads.
pub const API_VERSION: &str = "ksd.status/v1";

/// The `schemaVersion` this code writes. Readers accept exactly this version: fields may be
/// added to version 1 (readers ignore them), anything incompatible gets a new version.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest acknowledgement a reader accepts. A syncer's entry per cluster is small (counts and
/// reasons, left-out services capped at [`MAX_LEFT_OUT`]), so this holds thousands of clusters.
pub const MAX_ACK_BYTES: u64 = 4 * 1024 * 1024;

/// Left-out services listed per cluster; the rest are only counted (`leftOutTotal`).
pub const MAX_LEFT_OUT: usize = 100;

/// Why an acknowledgement or a syncer name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error(
        "invalid syncer name {name:?}: {reason} (a syncer name is a DNS label: 1-63 characters \
         of a-z, 0-9 and '-', starting and ending with a letter or digit)"
    )]
    InvalidSyncerName { name: String, reason: String },
    #[error("invalid status key {key:?}: expected <syncer-name>.json")]
    InvalidKey { key: String },
    #[error("acknowledgement is not valid JSON for schema {API_VERSION}: {0}")]
    Json(String),
    #[error(
        "unsupported acknowledgement version: apiVersion {api_version:?}, schemaVersion \
         {schema_version:?} (this build reads apiVersion {API_VERSION:?}, schemaVersion \
         {SCHEMA_VERSION})"
    )]
    UnsupportedVersion {
        api_version: Option<String>,
        schema_version: Option<u64>,
    },
    #[error(
        "acknowledgement {key:?} names syncer {inside:?}; only syncer {expected:?} writes that key"
    )]
    WrongSyncer {
        key: String,
        inside: String,
        expected: String,
    },
}

/// The name of a syncer: a DNS label, like a cluster name, checked by the same rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SyncerName(String);

impl SyncerName {
    pub fn parse(name: &str) -> Result<SyncerName, StatusError> {
        match ClusterName::parse(name) {
            Ok(label) => Ok(SyncerName(label.as_str().to_owned())),
            Err(NameError::InvalidClusterName { name, reason }) => {
                Err(StatusError::InvalidSyncerName {
                    name,
                    reason: reason.to_owned(),
                })
            }
            Err(other) => Err(StatusError::InvalidSyncerName {
                name: crate::names::shorten(name),
                reason: other.to_string(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<name>.json`: the key inside [`STATUS_DIR`].
    pub fn file_name(&self) -> String {
        format!("{}.json", self.0)
    }

    /// `_status/<name>.json`: the key relative to the storage prefix.
    pub fn key(&self) -> String {
        format!("{STATUS_DIR}/{}", self.file_name())
    }

    /// The inverse of [`SyncerName::file_name`]: a key listed inside [`STATUS_DIR`].
    pub fn from_file_name(key: &str) -> Result<SyncerName, StatusError> {
        let stem = key
            .strip_suffix(".json")
            .ok_or_else(|| StatusError::InvalidKey {
                key: crate::names::shorten(key),
            })?;
        SyncerName::parse(stem).map_err(|_| StatusError::InvalidKey {
            key: crate::names::shorten(key),
        })
    }
}

impl fmt::Display for SyncerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SyncerName {
    type Error = StatusError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SyncerName::parse(&value)
    }
}

impl From<SyncerName> for String {
    fn from(value: SyncerName) -> String {
        value.0
    }
}

/// One syncer's acknowledgement (the whole `<name>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acknowledgement {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    pub syncer: SyncerName,
    /// When the syncer wrote this document, in seconds since the Unix epoch (its own clock).
    pub written_at: u64,
    /// SHA-256 (hex) of the file the syncer last wrote for Traefik; `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    /// Every cluster the syncer knows, by name.
    #[serde(default)]
    pub clusters: BTreeMap<ClusterName, ClusterAck>,
}

/// What one syncer does with one cluster's document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAck {
    /// ETag of the latest version the syncer processed (accepted or rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// ETag of the version whose services are in Traefik's file; differs from `etag` when the
    /// latest version was rejected and an older one is still served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_etag: Option<String>,
    pub state: ClusterState,
    /// Machine-readable reason of a rejection (`too_large`, `invalid_yaml`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The human-readable rejection message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The 1-based line of the document the rejection points at, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Consecutive listings without the cluster's object (state `missing`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_polls: u32,
    /// Servers of this cluster in Traefik's file.
    #[serde(default)]
    pub servers: u64,
    /// Services of this cluster in Traefik's file.
    #[serde(default)]
    pub services: u64,
    /// Services of this cluster the syncer left out, with the reason (at most
    /// [`MAX_LEFT_OUT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    /// All left-out services, including those not listed in `leftOut`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out_total: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The state of one cluster on one syncer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterState {
    /// The latest version is in Traefik's file.
    Served,
    /// The latest version was refused; `servedEtag`, if any, is an older version still served.
    Rejected,
    /// The object is older than the syncer's `STALE_AFTER`: the cluster is left out.
    Stale,
    /// The object is absent from the syncer's listings (`missingPolls`); the last good version
    /// stays until the absence is confirmed.
    Missing,
    /// Listed but not yet fetched (the syncer has just started or the store failed).
    #[default]
    Pending,
    /// A state written by a newer syncer that this build does not know.
    #[serde(other)]
    Unknown,
}

impl ClusterState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Served => "served",
            ClusterState::Rejected => "rejected",
            ClusterState::Stale => "stale",
            ClusterState::Missing => "missing",
            ClusterState::Pending => "pending",
            ClusterState::Unknown => "unknown",
        }
    }
}

/// One service a syncer left out of Traefik's file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    /// The Traefik service name as the cluster's document spells it.
    pub service: String,
    /// Why: `administrator_owned`, `address_policy`, `conflict`, ...
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answer to "is my object with this ETag served by this syncer?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The version is in Traefik's file. `left_out` lists services of it the syncer did not
    /// serve (the rest are served).
    Served {
        servers: u64,
        services: u64,
        left_out: Vec<LeftOut>,
    },
    /// The version was refused. `older_served` tells whether an older version still is.
    Rejected {
        reason: String,
        detail: Option<String>,
        line: Option<u64>,
        older_served: bool,
    },
    /// The syncer's object is stale: the cluster is left out.
    Stale,
    /// The syncer does not see the object in its listings.
    Missing { polls: u32 },
    /// The syncer has not processed this version yet (it reports `seen`, another ETag or none).
    NotYetSeen { seen: Option<String> },
    /// The syncer does not know this cluster at all.
    UnknownCluster,
    /// A state this build does not know.
    Unknown { state: String },
}

impl Answer {
    pub fn is_served(&self) -> bool {
        matches!(self, Answer::Served { .. })
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Served {
                servers,
                services,
                left_out,
            } => {
                write!(f, "served: {services} services, {servers} servers")?;
                if !left_out.is_empty() {
                    write!(f, ", {} left out", left_out.len())?;
                }
                Ok(())
            }
            Answer::Rejected {
                reason,
                detail,
                line,
                older_served,
            } => {
                write!(f, "rejected ({reason})")?;
                if let Some(line) = line {
                    write!(f, " at line {line}")?;
                }
                if let Some(detail) = detail {
                    write!(f, ": {detail}")?;
                }
                if *older_served {
                    f.write_str("; an older version is still served")?;
                }
                Ok(())
            }
            Answer::Stale => f.write_str("left out: the object is stale"),
            Answer::Missing { polls } => {
                write!(f, "the object is missing from {polls} listings")
            }
            Answer::NotYetSeen { seen: Some(seen) } => {
                write!(f, "not yet processed (the syncer last processed {seen})")
            }
            Answer::NotYetSeen { seen: None } => f.write_str("not yet processed"),
            Answer::UnknownCluster => f.write_str("the syncer does not know this cluster"),
            Answer::Unknown { state } => write!(f, "unknown state {state:?}"),
        }
    }
}

impl Acknowledgement {
    /// An empty acknowledgement of `syncer` at `written_at` (seconds since the epoch).
    pub fn new(syncer: SyncerName, written_at: u64) -> Acknowledgement {
        Acknowledgement {
            api_version: API_VERSION.to_owned(),
            schema_version: SCHEMA_VERSION,
            syncer,
            written_at,
            output_hash: None,
            clusters: BTreeMap::new(),
        }
    }

    /// Reads an acknowledgement. Unknown fields are ignored (a newer syncer may add some); a
    /// different `apiVersion` or `schemaVersion` is refused before any other field is read.
    pub fn parse(bytes: &[u8]) -> Result<Acknowledgement, StatusError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Header {
            api_version: Option<String>,
            schema_version: Option<serde_json::Value>,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| StatusError::Json(e.to_string()))?;
        let schema_version = header.schema_version.as_ref().and_then(|v| v.as_u64());
        if header.api_version.as_deref() != Some(API_VERSION)
            || schema_version != Some(u64::from(SCHEMA_VERSION))
        {
            return Err(StatusError::UnsupportedVersion {
                api_version: header.api_version.map(|v| crate::names::shorten(&v)),
                schema_version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| StatusError::Json(e.to_string()))
    }

    /// Reads the acknowledgement listed as `file_name` in [`STATUS_DIR`], refusing one whose
    /// `syncer` field is not the name in its key (a syncer writes only its own key).
    pub fn parse_keyed(file_name: &str, bytes: &[u8]) -> Result<Acknowledgement, StatusError> {
        let expected = SyncerName::from_file_name(file_name)?;
        let ack = Acknowledgement::parse(bytes)?;
        if ack.syncer != expected {
            return Err(StatusError::WrongSyncer {
                key: crate::names::shorten(file_name),
                inside: ack.syncer.to_string(),
                expected: expected.to_string(),
            });
        }
        Ok(ack)
    }

    /// The document as written: compact JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these plain types cannot fail (string keys, no maps with other keys).
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Is `cluster`'s object with `etag` served by this syncer, and if not, why.
    pub fn answer(&self, cluster: &ClusterName, etag: &str) -> Answer {
        let Some(ack) = self.clusters.get(cluster) else {
            return Answer::UnknownCluster;
        };
        let processed = ack.etag.as_deref().is_some_and(|e| same_etag(e, etag));
        match ack.state {
            ClusterState::Missing => Answer::Missing {
                polls: ack.missing_polls,
            },
            ClusterState::Stale if processed => Answer::Stale,
            _ if !processed => Answer::NotYetSeen {
                seen: ack.etag.clone(),
            },
            ClusterState::Served => {
                if ack
                    .served_etag
                    .as_deref()
                    .is_none_or(|e| same_etag(e, etag))
                {
                    Answer::Served {
                        servers: ack.servers,
                        services: ack.services,
                        left_out: ack.left_out.clone(),
                    }
                } else {
                    Answer::NotYetSeen {
                        seen: ack.served_etag.clone(),
                    }
                }
            }
            ClusterState::Rejected => Answer::Rejected {
                reason: ack.reason.clone().unwrap_or_else(|| "unknown".to_owned()),
                detail: ack.detail.clone(),
                line: ack.line,
                older_served: ack.served_etag.is_some(),
            },
            ClusterState::Pending => Answer::NotYetSeen {
                seen: ack.etag.clone(),
            },
            ClusterState::Stale => Answer::Stale,
            ClusterState::Unknown => Answer::Unknown {
                state: ack.state.as_str().to_owned(),
            },
        }
    }
}

/// ETags compare without their quotes and weak marker, as S3 and local stores spell them
/// differently.
pub fn same_etag(a: &str, b: &str) -> bool {
    fn bare(etag: &str) -> &str {
        etag.trim().trim_start_matches("W/").trim_matches('"')
    }
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ObjectFormat, parse_object_key};

    fn cluster(name: &str) -> ClusterName {
        ClusterName::parse(name).unwrap()
    }

    fn ack_with(name: &str, entry: ClusterAck) -> Acknowledgement {
        let mut ack = Acknowledgement::new(SyncerName::parse("edge-1").unwrap(), 1_700_000_000);
        ack.clusters.insert(cluster(name), entry);
        ack
    }

    #[test]
    fn syncer_names_are_dns_labels() {
        let name = SyncerName::parse("edge-1").unwrap();
        assert_eq!(name.key(), "_status/edge-1.json");
        assert_eq!(name.file_name(), "edge-1.json");
        for bad in ["", "Edge", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            let err = SyncerName::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid syncer name"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(
            SyncerName::from_file_name("edge-1.json").unwrap().as_str(),
            "edge-1"
        );
        for bad in ["edge-1", "edge-1.yaml", "Edge.json", ".json", "a/b.json"] {
            assert!(SyncerName::from_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_keys_are_never_cluster_objects() {
        let key = SyncerName::parse("edge-1").unwrap().key();
        assert!(parse_object_key(&key).is_err());
        assert!(parse_object_key(STATUS_DIR).is_err());
        // Even a status key that ends like a cluster object is refused: `_` is no DNS label.
        assert!(parse_object_key("_status/a.traefik.yaml").is_err());
        assert!(parse_object_key(&format!("{STATUS_DIR}.traefik.yaml")).is_err());
        assert!(matches!(
            parse_object_key("a.traefik.yaml"),
            Ok((_, ObjectFormat::Traefik))
        ));
    }

    #[test]
    fn round_trip_and_unknown_fields() {
        let mut ack = ack_with(
            "prod",
            ClusterAck {
                etag: Some("\"e1\"".into()),
                served_etag: Some("\"e1\"".into()),
                state: ClusterState::Served,
                servers: 3,
                services: 2,
                left_out: vec![LeftOut {
                    service: "default-admin-80".into(),
                    reason: "administrator_owned".into(),
                    detail: None,
                }],
                left_out_total: 1,
                ..ClusterAck::default()
            },
        );
        ack.output_hash = Some("ab".repeat(32));
        let bytes = ack.to_bytes();
        assert_eq!(Acknowledgement::parse(&bytes).unwrap(), ack);

        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        value["futureField"] = serde_json::json!({"x": 1});
        value["clusters"]["prod"]["futureToo"] = serde_json::json!(true);
        let parsed = Acknowledgement::parse(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(parsed, ack);
    }

    #[test]
    fn unknown_state_is_kept_as_unknown() {
        let text = br#"{"apiVersion":"ksd.status/v1","schemaVersion":1,"syncer":"edge-1",
            "writtenAt":1,"clusters":{"prod":{"etag":"e","state":"quarantined"}}}"#;
        let ack = Acknowledgement::parse(text).unwrap();
        assert_eq!(ack.clusters[&cluster("prod")].state, ClusterState::Unknown);
        assert!(matches!(
            ack.answer(&cluster("prod"), "e"),
            Answer::Unknown { .. }
        ));
    }

    #[test]
    fn wrong_versions_are_refused_clearly() {
        for (text, needle) in [
            (
                r#"{"apiVersion":"ksd.status/v1","schemaVersion":2,"syncer":"a","writtenAt":1}"#,
                "schemaVersion Some(2)",
            ),
            (
                r#"{"apiVersion":"ksd.status/v9","schemaVersion":1,"syncer":"a","writtenAt":1}"#,
                "ksd.status/v9",
            ),
            (r#"{"syncer":"a","writtenAt":1}"#, "apiVersion None"),
        ] {
            let err = Acknowledgement::parse(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, StatusError::UnsupportedVersion { .. }),
                "{text}"
            );
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = Acknowledgement::parse(b"not json").unwrap_err();
        assert!(matches!(err, StatusError::Json(_)), "{err}");
        let err = Acknowledgement::parse(
            br#"{"apiVersion":"ksd.status/v1","schemaVersion":1,"syncer":"Bad_Name","writtenAt":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid syncer name"), "{err}");
    }

    #[test]
    fn a_syncer_may_only_write_its_own_key() {
        let bytes = Acknowledgement::new(SyncerName::parse("edge-1").unwrap(), 5).to_bytes();
        assert!(Acknowledgement::parse_keyed("edge-1.json", &bytes).is_ok());
        let err = Acknowledgement::parse_keyed("edge-2.json", &bytes).unwrap_err();
        assert!(matches!(err, StatusError::WrongSyncer { .. }), "{err}");
    }

    /// A served cluster: served at its etag (quotes and weak markers aside), not yet seen at
    /// another, and a cluster the acknowledgement does not name is unknown.
    fn served_answers(prod: &ClusterName) {
        let served = ack_with(
            "prod",
            ClusterAck {
                etag: Some("\"e1\"".into()),
                served_etag: Some("\"e1\"".into()),
                state: ClusterState::Served,
                servers: 4,
                services: 2,
                ..ClusterAck::default()
            },
        );
        // Quotes and weak markers do not matter.
        assert_eq!(
            served.answer(prod, "e1"),
            Answer::Served {
                servers: 4,
                services: 2,
                left_out: vec![]
            }
        );
        assert!(served.answer(prod, "W/\"e1\"").is_served());
        assert_eq!(
            served.answer(prod, "\"e2\""),
            Answer::NotYetSeen {
                seen: Some("\"e1\"".into())
            }
        );
        assert_eq!(
            served.answer(&cluster("other"), "e1"),
            Answer::UnknownCluster
        );
    }

    /// A rejected latest version: the reason, detail and line, and that an older version is
    /// still served; the older etag does not count as served.
    fn rejected_answers(prod: &ClusterName) {
        let rejected = ack_with(
            "prod",
            ClusterAck {
                etag: Some("\"e2\"".into()),
                served_etag: Some("\"e1\"".into()),
                state: ClusterState::Rejected,
                reason: Some("invalid_yaml".into()),
                detail: Some("bad indentation".into()),
                line: Some(7),
                ..ClusterAck::default()
            },
        );
        let answer = rejected.answer(prod, "\"e2\"");
        assert_eq!(
            answer,
            Answer::Rejected {
                reason: "invalid_yaml".into(),
                detail: Some("bad indentation".into()),
                line: Some(7),
                older_served: true
            }
        );
        assert_eq!(
            answer.to_string(),
            "rejected (invalid_yaml) at line 7: bad indentation; an older version is still served"
        );
        // The older version's exporter is long gone: asking about e1 is "not the latest".
        assert!(!rejected.answer(prod, "\"e1\"").is_served());
    }

    /// A missing cluster counts its polls; a stale one says it is stale.
    fn missing_and_stale_answers(prod: &ClusterName) {
        let missing = ack_with(
            "prod",
            ClusterAck {
                etag: Some("e1".into()),
                state: ClusterState::Missing,
                missing_polls: 2,
                ..ClusterAck::default()
            },
        );
        assert_eq!(missing.answer(prod, "e1"), Answer::Missing { polls: 2 });

        let stale = ack_with(
            "prod",
            ClusterAck {
                etag: Some("e1".into()),
                state: ClusterState::Stale,
                ..ClusterAck::default()
            },
        );
        assert_eq!(stale.answer(prod, "e1"), Answer::Stale);
    }

    #[test]
    fn answers() {
        let prod = cluster("prod");
        served_answers(&prod);
        rejected_answers(&prod);
        missing_and_stale_answers(&prod);
    }
}
