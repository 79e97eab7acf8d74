//! Waiting on what a running agent writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ksd_testbed::process::Agent;

use crate::files::poll_until_contains;
use crate::{Error, Result};

/// How often the file is looked at while waiting.
const POLL: Duration = Duration::from_millis(1);
/// How long one blocking wait lasts before the agent is checked again.
const CHECK_EVERY: Duration = Duration::from_secs(1);

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
