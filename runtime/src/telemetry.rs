//! Logging: `tracing` to stderr, filtered by `RUST_LOG`, as text or JSON (`LOG_FORMAT`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. `RUST_LOG` selects levels (`info` when unset); an invalid
/// `RUST_LOG` falls back to `info` with a warning rather than silencing the process. Calling
/// it again (tests) keeps the first subscriber.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(raw) if !raw.trim().is_empty() => match EnvFilter::try_new(&raw) {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new(DEFAULT_FILTER), Some((raw, err))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or log collectors.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok()
        && let Some((raw, err)) = bad_filter
    {
        tracing::warn!(rust_log = %raw, %err, "invalid RUST_LOG, logging at info");
    }
}
