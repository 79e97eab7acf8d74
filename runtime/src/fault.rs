//! Fault injection for the supervision tests of both agents: `KSD_FAULT_TASK=<task>:panic` (or
//! `:return`) makes that task panic (or end) one second after it started, as a bug would.
//! Unset in production; deliberately not a setting (no flag, not in `--help`).

use std::time::Duration;

use tokio::task::JoinHandle;

/// The environment variable the tests set.
pub const VARIABLE: &str = "KSD_FAULT_TASK";

/// `handle` itself, or, when [`VARIABLE`] names `task`, a task that aborts it after a second
/// and then ends (`:return`) or panics (`:panic`) in its place.
pub fn inject(task: &'static str, handle: JoinHandle<()>) -> JoinHandle<()> {
    let Ok(value) = std::env::var(VARIABLE) else {
        return handle;
    };
    let Some((name, mode)) = value.split_once(':') else {
        return handle;
    };
    if name != task {
        return handle;
    }
    let panic = mode == "panic";
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        handle.abort();
        assert!(!panic, "fault injected into task {task} ({VARIABLE})");
    })
}
