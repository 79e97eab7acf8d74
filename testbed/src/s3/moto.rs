//! moto's S3 server: the one a whole test run shares (`KSD_TEST_S3_ENDPOINT`), or one started
//! for a fixture that dies with the test process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ENDPOINT_VAR;

const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared server when `KSD_TEST_S3_ENDPOINT` names one (once it answers), else a new
/// `moto_server` of this fixture's own; and its endpoint.
pub(super) async fn find_or_start() -> anyhow::Result<(Option<MotoServer>, String)> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.trim().is_empty() => {
            let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
            wait_until_answers(&endpoint, Duration::from_secs(10), None)
                .await
                .with_context(|| format!("the S3 server in {ENDPOINT_VAR} ({endpoint})"))?;
            Ok((None, endpoint))
        }
        _ => {
            let moto = MotoServer::start().await?;
            let endpoint = moto.endpoint.clone();
            Ok((Some(moto), endpoint))
        }
    }
}

/// Runs moto so that it dies with the test process, however that ends (even SIGKILL, which
/// skips every destructor): a watcher reads the wrapper's stdin, a pipe whose only writer is
/// the test process, and kills moto at end of file. `sh` exits when moto does, so an early
/// crash is still seen. NB: an asynchronous list's stdin is /dev/null in a non-interactive
/// shell, hence the copy of stdin on fd 3.
const MOTO_WRAPPER: &str = r#"exec 3<&0
"$0" "$@" &
moto=$!
( read -r _ <&3; kill "$moto" 2>/dev/null ) &
wait "$moto""#;

/// A `moto_server` process, stopped when dropped or when the test process dies.
pub(super) struct MotoServer {
    endpoint: String,
    // Dropping it closes the pipe: the wrapper's watcher then kills moto.
    _lifeline: tokio::process::ChildStdin,
    _child: tokio::process::Child,
    _log: tempfile::NamedTempFile,
}

impl MotoServer {
    async fn start() -> anyhow::Result<MotoServer> {
        let program = find_on_path("moto_server").context(
            "moto_server not found on PATH: run scripts/test, or pip install 'moto[server]' in a virtualenv",
        )?;
        // The port is free when chosen but could be taken before moto binds it: retry.
        let mut last_error = None;
        for _ in 0..3 {
            let port = crate::process::free_port();
            let log = tempfile::NamedTempFile::new().context("creating moto's log file")?;
            let mut child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(MOTO_WRAPPER)
                .arg(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log.reopen()?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            let lifeline = child
                .stdin
                .take()
                .context("moto's wrapper has no stdin pipe")?;
            let endpoint = format!("http://127.0.0.1:{port}");
            match wait_until_answers(&endpoint, MOTO_START_TIMEOUT, Some(&mut child)).await {
                Ok(()) => {
                    return Ok(MotoServer {
                        endpoint,
                        _lifeline: lifeline,
                        _child: child,
                        _log: log,
                    });
                }
                Err(err) => {
                    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
                    last_error = Some(err.context(format!("moto_server output:\n{output}")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Polls `endpoint` until it answers HTTP at all (any status).
async fn wait_until_answers(
    endpoint: &str,
    timeout: Duration,
    mut child: Option<&mut tokio::process::Child>,
) -> anyhow::Result<()> {
    let client: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("{endpoint}/")
        .parse()
        .with_context(|| format!("{endpoint:?} is not a URL"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("the S3 server exited with {status} before answering");
        }
        let attempt = tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await;
        if let Ok(Ok(_response)) = attempt {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the S3 server at {endpoint} did not answer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
