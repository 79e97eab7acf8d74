//! From records to work: [`notice`] keeps the records about our cluster documents, and
//! [`Sequencers::plan`] turns a batch of [`Notice`]s into fetches and listings, dropping what
//! the syncer already has.

use std::cmp::Ordering;
use std::collections::HashMap;

use ksd_shared::names::{self, ClusterName, ObjectFormat};

use super::message::{Kind, Record};
use crate::state::{FetchRequest, State};

/// Keys whose last sequencer is remembered; beyond this the memory starts over (it only saves
/// requests, correctness never depends on it).
const MAX_SEQUENCERS: usize = 4096;

/// What a record asks of the syncer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Fetch the object (unless `etag` names the version already processed).
    Created { etag: Option<String> },
    /// List the prefix: only listings confirm an absence.
    Removed,
}

/// A record about one of our cluster documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub cluster: ClusterName,
    /// Relative to the prefix, as storage keys are.
    pub key: String,
    pub change: Change,
    pub sequencer: Option<String>,
}

/// Why a record is not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    OtherBucket,
    OtherPrefix,
    /// Under a "directory" below the prefix (`<prefix>_status/...`, `<prefix>x/y`).
    SubPrefix,
    /// `<cluster>.backends.yaml` and other formats the exporters share the prefix with.
    OtherFormat,
    InvalidKey,
    OtherEvent,
}

/// Keeps a record when it is about a `<cluster>.traefik.yaml` directly under `prefix` in
/// `bucket`.
pub fn notice(record: &Record, bucket: &str, prefix: &str) -> Result<Notice, Ignored> {
    if record.bucket.as_deref().is_some_and(|b| b != bucket) {
        return Err(Ignored::OtherBucket);
    }
    let key = record
        .key
        .strip_prefix(prefix)
        .ok_or(Ignored::OtherPrefix)?;
    if key.is_empty() || key.contains('/') {
        return Err(Ignored::SubPrefix);
    }
    let change = match &record.kind {
        Kind::Created => Change::Created {
            etag: record.etag.clone(),
        },
        Kind::Removed => Change::Removed,
        Kind::Other(_) => return Err(Ignored::OtherEvent),
    };
    match names::parse_object_key(key) {
        Ok((cluster, ObjectFormat::Traefik)) => Ok(Notice {
            cluster,
            key: key.to_owned(),
            change,
            sequencer: record.sequencer.clone(),
        }),
        Ok(_) => Err(Ignored::OtherFormat),
        Err(_) => Err(Ignored::InvalidKey),
    }
}

/// Compares two S3 sequencers: hexadecimal strings of possibly different lengths, compared
/// after left-padding the shorter with zeros.
pub fn compare_sequencers(a: &str, b: &str) -> Ordering {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{s:0>width$}").to_ascii_uppercase();
    pad(a).cmp(&pad(b))
}

/// What a batch of notices calls for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Conditional fetches, one per cluster at most.
    pub fetches: Vec<FetchRequest>,
    /// A deletion was announced: list the prefix now.
    pub list: bool,
    /// Notices that needed nothing: the version is already processed, or an event at least as
    /// recent for the same key was already handled.
    pub unchanged: usize,
}

/// The last sequencer handled per key, so that duplicates and events older than one already
/// handled cost nothing.
#[derive(Debug, Default)]
pub struct Sequencers {
    last: HashMap<String, String>,
}

impl Sequencers {
    /// Plans a batch against what the state already has.
    pub fn plan(&mut self, notices: &[Notice], state: &State) -> Plan {
        // The latest notice per key; notices without a sequencer are all kept (the fetch
        // decides).
        let mut latest: Vec<&Notice> = Vec::new();
        let mut unchanged = 0;
        for notice in notices {
            let older_than_handled = match (&notice.sequencer, self.last.get(&notice.key)) {
                (Some(new), Some(seen)) => compare_sequencers(new, seen) != Ordering::Greater,
                _ => false,
            };
            if older_than_handled {
                unchanged += 1;
                continue;
            }
            if let Some(sequencer) = &notice.sequencer {
                if self.last.len() >= MAX_SEQUENCERS && !self.last.contains_key(&notice.key) {
                    self.last.clear();
                }
                self.last.insert(notice.key.clone(), sequencer.clone());
            }
            latest.push(notice);
        }
        // Within the batch, only the last event per key matters.
        let mut plan = Plan::default();
        let mut seen_keys: Vec<&str> = Vec::new();
        for notice in latest.iter().rev() {
            if seen_keys.contains(&notice.key.as_str()) {
                unchanged += 1;
                continue;
            }
            seen_keys.push(&notice.key);
            match &notice.change {
                Change::Removed => plan.list = true,
                Change::Created { etag } => {
                    if etag
                        .as_deref()
                        .is_some_and(|etag| state.has_processed(&notice.cluster, etag))
                    {
                        unchanged += 1;
                        continue;
                    }
                    plan.fetches.push(FetchRequest {
                        cluster: notice.cluster.clone(),
                        key: notice.key.clone(),
                        if_none_match: state.processed_etag(&notice.cluster).map(str::to_owned),
                    });
                }
            }
        }
        plan.unchanged = unchanged;
        plan
    }
}
