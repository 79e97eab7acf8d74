//! What a syncer's answer means for one Service, and what an event says about it.

use ksd_shared::names::ClusterName;
use ksd_shared::status::{Answer, SyncerName};

use crate::index::ServiceKey;

/// The most an event's note holds (the Events API refuses more than 1 kB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// One Service's state on one syncer, as far as events tell it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Every Traefik service of the Service is served.
    Served { names: Vec<String> },
    /// The syncer rejected the cluster's document, so none of it is served from this version.
    Rejected {
        reason: String,
        detail: Option<String>,
        line: Option<u64>,
        older_served: bool,
    },
    /// The syncer left some of the Service's Traefik services out: (name, reason, detail).
    LeftOut {
        services: Vec<(String, String, Option<String>)>,
    },
}

/// One event to record: a Service's new state on a syncer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Intent {
    pub service: ServiceKey,
    pub syncer: SyncerName,
    pub state: State,
}

/// The state `answer` gives a Service published as `names`; `None` for the answers that say
/// nothing yet (not processed, missing, stale, unknown), which record no event.
pub fn state_of(answer: &Answer, names: &[String]) -> Option<State> {
    match answer {
        Answer::Served { left_out, .. } => {
            let services: Vec<_> = left_out
                .iter()
                .filter(|l| names.contains(&l.service))
                .map(|l| (l.service.clone(), l.reason.clone(), l.detail.clone()))
                .collect();
            Some(if services.is_empty() {
                State::Served {
                    names: names.to_vec(),
                }
            } else {
                State::LeftOut { services }
            })
        }
        Answer::Rejected {
            reason,
            detail,
            line,
            older_served,
        } => Some(State::Rejected {
            reason: reason.clone(),
            detail: detail.clone(),
            line: *line,
            older_served: *older_served,
        }),
        _ => None,
    }
}

impl State {
    /// The event's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            State::Served { .. } => "Served",
            State::Rejected { .. } => "Rejected",
            State::LeftOut { .. } => "LeftOut",
        }
    }

    /// Whether the event is a warning (`type: Warning`) rather than `Normal`.
    pub fn is_warning(&self) -> bool {
        !matches!(self, State::Served { .. })
    }

    /// The event's `note`, at most [`MAX_NOTE_BYTES`].
    pub fn note(&self, syncer: &SyncerName, cluster: &ClusterName) -> String {
        let text = match self {
            State::Served { names } => {
                format!("Served by syncer {syncer} as {}", names.join(", "))
            }
            State::Rejected {
                reason,
                detail,
                line,
                older_served,
            } => {
                let mut text = format!(
                    "Syncer {syncer} rejected the document of cluster {cluster} ({reason})"
                );
                if let Some(line) = line {
                    text.push_str(&format!(" at line {line}"));
                }
                if let Some(detail) = detail {
                    text.push_str(&format!(": {detail}"));
                }
                text.push_str(if *older_served {
                    "; it still serves an older version"
                } else {
                    "; it serves none of this cluster's services"
                });
                text
            }
            State::LeftOut { services } => {
                let parts: Vec<String> = services
                    .iter()
                    .map(|(name, reason, detail)| match detail {
                        Some(detail) => format!("{name} ({reason}: {detail})"),
                        None => format!("{name} ({reason})"),
                    })
                    .collect();
                format!("Syncer {syncer} left out {}", parts.join("; "))
            }
        };
        truncate(text, MAX_NOTE_BYTES)
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use ksd_shared::status::LeftOut;

    use super::*;

    fn names() -> Vec<String> {
        vec!["shop-web-grpc".to_owned(), "shop-web-http".to_owned()]
    }

    #[test]
    fn answers_become_states() {
        let served = Answer::Served {
            servers: 3,
            services: 2,
            left_out: vec![LeftOut {
                service: "other-http".into(),
                reason: "administrator_owned".into(),
                detail: None,
            }],
        };
        assert_eq!(
            state_of(&served, &names()),
            Some(State::Served { names: names() }),
            "another Service left out does not concern this one"
        );
        let left_out = Answer::Served {
            servers: 3,
            services: 2,
            left_out: vec![LeftOut {
                service: "shop-web-http".into(),
                reason: "address_policy".into(),
                detail: Some("127.0.0.1:80: loopback".into()),
            }],
        };
        let state = state_of(&left_out, &names()).unwrap();
        assert!(state.is_warning());
        assert_eq!(state.reason(), "LeftOut");
        let syncer = SyncerName::parse("edge-1").unwrap();
        let cluster = ClusterName::parse("eu-1").unwrap();
        assert_eq!(
            state.note(&syncer, &cluster),
            "Syncer edge-1 left out shop-web-http (address_policy: 127.0.0.1:80: loopback)"
        );
        for quiet in [
            Answer::Stale,
            Answer::NotYetSeen { seen: None },
            Answer::Missing { polls: 1 },
            Answer::UnknownCluster,
        ] {
            assert_eq!(state_of(&quiet, &names()), None, "{quiet}");
        }
    }

    #[test]
    fn notes_say_who_and_why() {
        let syncer = SyncerName::parse("edge-2").unwrap();
        let cluster = ClusterName::parse("eu-1").unwrap();
        let rejected = State::Rejected {
            reason: "too_large".into(),
            detail: Some("the object is over 100 bytes".into()),
            line: None,
            older_served: false,
        };
        assert_eq!(
            rejected.note(&syncer, &cluster),
            "Syncer edge-2 rejected the document of cluster eu-1 (too_large): the object is over \
             100 bytes; it serves none of this cluster's services"
        );
        let served = State::Served { names: names() };
        assert_eq!(
            served.note(&syncer, &cluster),
            "Served by syncer edge-2 as shop-web-grpc, shop-web-http"
        );
        let long = State::Served {
            names: vec!["é".repeat(1000)],
        };
        let note = long.note(&syncer, &cluster);
        assert!(note.len() <= MAX_NOTE_BYTES && note.ends_with("..."));
    }
}
