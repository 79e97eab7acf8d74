//! Signals to one cancellation token: the first SIGTERM/SIGINT asks for a graceful stop, a
//! second one stops the process at once.

use tokio_util::sync::CancellationToken;

/// Exit code after a forced stop (128 + SIGINT, as shells report an interrupted command).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token cancelled by the first SIGTERM or SIGINT. A second signal exits the process
/// immediately with [`FORCED_EXIT_CODE`], for an operator who does not want to wait for
/// in-flight work. Must be called inside a Tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    // Registered here, before returning, so a signal that arrives while the caller is still
    // starting up is already handled rather than killing the process with the default action.
    let mut signals = Signals::register();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(
            signal = first,
            "shutting down: finishing in-flight work (send the signal again to force)"
        );
        cancel.cancel();
        let second = signals.next().await;
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::error!(%err, signal = name, "cannot listen for the signal");
                None
            }
        };
        Signals {
            term: open(SignalKind::terminate(), "SIGTERM"),
            int: open(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn next(&mut self) -> &'static str {
        async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    if stream.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => "SIGTERM",
            () = recv(&mut self.int) => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
impl Signals {
    fn register() -> Signals {
        Signals {}
    }

    async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(err) => {
                tracing::error!(%err, "cannot listen for Ctrl-C");
                std::future::pending().await
            }
        }
    }
}

/// Joins an optional task: its result when there is one, pending forever when there is none,
/// so that an optional task can sit in a `select!` beside the ones that always run.
pub async fn join_optional<T>(
    handle: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
