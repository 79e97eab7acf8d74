//! Running the project's binaries as child processes in tests, and waiting for conditions.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The path of a workspace binary built next to the running test executable
/// (`target/debug/<name>`; tests live in `target/debug/deps/`).
///
/// Panics with a hint when it has not been built: tests in other crates than the binary's
/// cannot make Cargo build it for them.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|err| panic!("cannot locate the test executable: {err}"));
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable location {}", exe.display()));
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!("binary {name} not built: run `cargo build --bins` (scripts/test does)");
    }
    path
}

/// A free TCP port on 127.0.0.1 (free when chosen: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|err| panic!("cannot find a free port: {err}"))
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Variables passed through from the test's own environment; everything else is cleared so
/// that the developer's shell (AWS_*, KUBECONFIG, STORAGE_URL, ...) cannot leak into a test.
const PASSED_THROUGH: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];
const DEFAULT_RUST_LOG: &str = "info";

/// A spawned binary whose output goes to files, killed when dropped.
///
/// When dropped during a panic (a failing test) it prints its logs to stderr, so the failure
/// comes with the agent's side of the story.
pub struct Agent {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `path` with `args` and a clean environment: `PATH`, `HOME`, `TMPDIR`, `LANG`,
    /// `RUST_LOG=info` and `RUST_BACKTRACE=1`, then `envs` (which may override them).
    pub fn spawn(
        path: impl AsRef<Path>,
        args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
        envs: Vec<(String, String)>,
        name: &str,
    ) -> anyhow::Result<Agent> {
        let path = path.as_ref();
        let dir = tempfile::Builder::new()
            .prefix(&format!("ksd-{name}-logs-"))
            .tempdir()
            .context("creating a log directory")?;
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let stdout = std::fs::File::create(&stdout_path).context("creating stdout.log")?;
        let stderr = std::fs::File::create(&stderr_path).context("creating stderr.log")?;

        let mut command = tokio::process::Command::new(path);
        command.args(args).env_clear();
        for variable in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(variable) {
                command.env(variable, value);
            }
        }
        command
            .env("RUST_LOG", DEFAULT_RUST_LOG)
            .env("RUST_BACKTRACE", "1")
            .envs(envs)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", path.display()))?;
        let pid = child
            .id()
            .context("the child exited before it could be seen")?;
        Ok(Agent {
            name: name.to_owned(),
            child,
            pid,
            stdout_path,
            stderr_path,
            status: None,
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM (a graceful stop request).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Kills at once (SIGKILL), as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        let _ = self.child.start_kill();
    }

    fn signal(&self, signal: &str) {
        // Through the `kill` command: sending a signal directly needs unsafe libc calls.
        let _ = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.status {
            return Some(status);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                Some(status)
            }
            _ => None,
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything written to stderr (the logs) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Both streams, labelled, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "----- {name} (pid {pid}) stdout -----\n{out}\n----- {name} stderr -----\n{err}\n----- end of {name} -----",
            name = self.name,
            pid = self.pid,
            out = self.stdout(),
            err = self.stderr(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        // kill_on_drop sends SIGKILL when the child is dropped right after this.
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_value_or_names_what_timed_out() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { done.then_some(42) }
        })
        .await
        .unwrap();
        assert_eq!(value, 42);
        let err = wait_for("nothing", Duration::from_millis(250), || async {
            None::<()>
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("nothing") && err.contains("250ms"), "{err}");
    }

    #[tokio::test]
    async fn agent_captures_output_with_a_clean_environment() {
        let mut agent = Agent::spawn(
            "/bin/sh",
            [
                "-c",
                "echo out; echo err >&2; echo \"${AWS_REGION:-unset} $EXTRA $RUST_LOG\"",
            ],
            vec![("EXTRA".into(), "given".into())],
            "sh",
        )
        .unwrap();
        let status = agent.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert!(status.success());
        assert_eq!(agent.stdout(), "out\nunset given info\n");
        assert_eq!(agent.stderr(), "err\n");
        assert!(agent.logs().contains("err"));
    }

    #[tokio::test]
    async fn terminate_stops_a_running_process() {
        let mut agent = Agent::spawn("/bin/sh", ["-c", "sleep 30"], vec![], "sleeper").unwrap();
        assert!(agent.is_running());
        assert!(agent.wait_exit(Duration::from_millis(200)).await.is_none());
        agent.terminate();
        let status = agent.wait_exit(Duration::from_secs(10)).await.unwrap();
        assert!(!status.success());
        assert!(!agent.is_running());
    }

    /// A port held by a listener is never handed out. (Whether a port stays free after it is
    /// handed out depends on every other process on the machine, so that is not asserted.)
    #[test]
    fn free_ports_are_not_ports_in_use() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held_port = held.local_addr().unwrap().port();
        for _ in 0..50 {
            let port = free_port();
            assert_ne!(port, 0);
            assert_ne!(port, held_port);
        }
    }
}
