//! One Traefik service's answer: [`Snapshot::explain`] (served at `/status/services/NAME`),
//! the `ksd-syncer explain NAME` client that asks a running syncer for it ([`explain()`]),
//! and its rendering as text.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use ksd_shared::names;
use ksd_shared::status::ClusterState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ClusterLeftOut, Contribution, Explanation, Snapshot};

impl Snapshot {
    /// The answer for one Traefik service name (a cluster's own pool `NAME.cluster` counts
    /// as `NAME`).
    pub fn explain(&self, service: &str) -> Explanation {
        let wanted = service.split_once('.').map_or(service, |(s, _)| s);
        let mut explanation = Explanation {
            service: wanted.to_owned(),
            ..Explanation::default()
        };
        for cluster in &self.clusters {
            if let Some(left) = cluster.left_out.iter().find(|l| l.service == wanted) {
                explanation.left_out.push(ClusterLeftOut {
                    cluster: cluster.name.clone(),
                    state: cluster.state,
                    reason: match &left.detail {
                        Some(detail) => format!("{}: {detail}", left.reason),
                        None => left.reason.clone(),
                    },
                });
            }
            let Some(found) = cluster.services.iter().find(|s| s.name == wanted) else {
                continue;
            };
            match cluster.state {
                ClusterState::Served | ClusterState::Missing => {}
                ClusterState::Rejected => explanation.left_out.push(ClusterLeftOut {
                    cluster: cluster.name.clone(),
                    state: cluster.state,
                    reason: format!(
                        "the latest version {} was rejected ({}); the servers below are from \
                         the older version {}",
                        cluster.etag.as_deref().unwrap_or("?"),
                        cluster.reason.as_deref().unwrap_or("unknown"),
                        cluster.served_etag.as_deref().unwrap_or("?"),
                    ),
                }),
                _ => {}
            }
            explanation.contributions.push(Contribution {
                cluster: cluster.name.clone(),
                etag: cluster.served_etag.clone(),
                protocol: found.protocol.clone(),
                servers: found.servers.clone(),
            });
        }
        // A stale cluster's services are not in the file: they are known from its document.
        for cluster in self
            .clusters
            .iter()
            .filter(|c| c.state == ClusterState::Stale)
        {
            explanation.left_out.push(ClusterLeftOut {
                cluster: cluster.name.clone(),
                state: cluster.state,
                reason: "the cluster's object is older than STALE_AFTER".to_owned(),
            });
        }
        explanation.served = !explanation.contributions.is_empty();
        explanation.conflicts = self
            .conflicts
            .iter()
            .filter(|c| c.service == wanted)
            .cloned()
            .collect();
        explanation
    }
}

/// Asks the syncer at `admin` about one Traefik service: the JSON of `/status/services/NAME`
/// and a readable rendering of it.
pub async fn explain(admin: SocketAddr, service: &str) -> Result<(Explanation, String), String> {
    if names::validate_pool_or_service_name(service).is_err() {
        return Err(format!(
            "{service:?} is not a Traefik service name (letters, digits, '-', '_', and '.' before a cluster)"
        ));
    }
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .map_err(|_| format!("connecting to {admin} timed out"))?
    .map_err(|e| format!("cannot connect to the syncer's admin port {admin}: {e}"))?;
    let request = format!(
        "GET /status/services/{service} HTTP/1.0\r\nHost: {admin}\r\nAccept: application/json\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request to {admin}: {e}"))?;
    let mut response = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        (&mut stream)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut response),
    )
    .await
    .map_err(|_| format!("{admin} did not answer within 10s"))?
    .map_err(|e| format!("reading the answer of {admin}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{admin} sent no HTTP answer"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{admin} sent no HTTP status"))?;
    if code != 200 && code != 404 {
        return Err(format!("{admin} answered HTTP {code}: {}", body.trim()));
    }
    let explanation: Explanation = serde_json::from_str(body)
        .map_err(|e| format!("{admin} answered something that is not an explanation: {e}"))?;
    let text = render_explanation(&explanation);
    Ok((explanation, text))
}

/// The explanation as lines of text.
pub fn render_explanation(e: &Explanation) -> String {
    let mut out = String::new();
    if e.served {
        let _ = writeln!(out, "service {}: served", e.service);
    } else if e.left_out.is_empty() {
        let _ = writeln!(
            out,
            "service {}: not served; no cluster known to this syncer exports it",
            e.service
        );
    } else {
        let _ = writeln!(out, "service {}: not served", e.service);
    }
    for c in &e.contributions {
        let _ = writeln!(
            out,
            "  cluster {} ({}, version {}): {}",
            c.cluster,
            c.protocol,
            c.etag.as_deref().unwrap_or("?"),
            if c.servers.is_empty() {
                "no servers".to_owned()
            } else {
                c.servers.join(", ")
            }
        );
    }
    for l in &e.left_out {
        let _ = writeln!(
            out,
            "  left out: cluster {} ({}): {}",
            l.cluster,
            l.state.as_str(),
            l.reason
        );
    }
    for c in &e.conflicts {
        let _ = writeln!(out, "  conflict: {}", c.message);
    }
    out
}
