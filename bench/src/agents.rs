//! Running an agent for a measurement: its environment (the syncer's), waiting on what it
//! writes, and ending the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ksd_testbed::process::Agent;

use crate::files::poll_until_contains;
use crate::{Error, Result};

/// The file the syncer benchmarks have the syncer write in its Traefik directory.
pub const SYNCER_OUTPUT_FILE: &str = "k8s-service-discovery.yml";

/// How often the file is looked at while waiting.
const POLL: Duration = Duration::from_millis(1);
/// How long one blocking wait lasts before the agent is checked again.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The environment of a syncer reading `storage_url` and writing [`SYNCER_OUTPUT_FILE`] into
/// `traefik_dir`, polling every `poll_interval` when one is given (else at its default), with
/// its admin server on a free port and `info` logs.
pub fn syncer_env(
    storage_url: String,
    poll_interval: Option<Duration>,
    traefik_dir: &Path,
) -> Vec<(String, String)> {
    let poll = poll_interval.map(|every| ("POLL_INTERVAL", format!("{}ms", every.as_millis())));
    [("STORAGE_URL", storage_url)]
        .into_iter()
        .chain(poll)
        .chain([
            ("TRAEFIK_DIR", traefik_dir.display().to_string()),
            ("OUTPUT_FILE", SYNCER_OUTPUT_FILE.to_owned()),
            ("ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ])
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Waits until the file at `path` contains `needle`, for at most `timeout`; returns the instant
/// the version holding it was first seen. Fails early, with the agent's logs, if `agent` exits.
pub async fn wait_for_content(
    agent: &mut Agent,
    path: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<Instant> {
    let start = Instant::now();
    loop {
        let (owned_path, owned_needle): (PathBuf, String) = (path.to_owned(), needle.to_owned());
        let left = timeout.saturating_sub(start.elapsed());
        let attempt = tokio::task::spawn_blocking(move || {
            poll_until_contains(&owned_path, &owned_needle, POLL, left.min(CHECK_EVERY))
        })
        .await
        .map_err(Error::Blocking)?;
        match attempt {
            Ok(seen) => return Ok(seen),
            Err(Error::Timeout { .. }) => {}
            Err(other) => return Err(other),
        }
        let what = format!("{needle:?} in {}", path.display());
        if let Some(status) = agent.try_exit() {
            return Err(Error::AgentExited {
                name: agent.name().to_owned(),
                status: status.to_string(),
                what,
                logs: agent.logs(),
            });
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what,
                after: timeout,
            });
        }
    }
}

/// Stops `agent` with SIGTERM and waits up to `grace` for it to exit; whether it did.
pub async fn stop(agent: &mut Agent, grace: Duration) -> bool {
    agent.terminate();
    agent.wait_exit(grace).await.is_some()
}

/// Ends a measured run of `agent`: fails, with its logs, if it exited during the run; else
/// stops it (SIGTERM, 15 s of grace) and notes when it did not stop in time. `role` names the
/// agent in both messages (`"syncer"`).
pub async fn finish(agent: &mut Agent, role: &str) -> anyhow::Result<()> {
    if let Some(status) = agent.try_exit() {
        anyhow::bail!(
            "the {role} exited during the run ({status})\n{}",
            agent.logs()
        );
    }
    if !stop(agent, Duration::from_secs(15)).await {
        println!("note: the {role} did not stop within 15s of SIGTERM");
    }
    Ok(())
}
