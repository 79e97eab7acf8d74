//! `ksd-runtime`: the I/O that `ksd-exporter` and `ksd-syncer` share.
//!
//! - [`storage`]: where cluster documents live, a [`storage::Storage`] over an S3-compatible
//!   bucket or a local directory, named by a [`storage::StorageUrl`]; listings with ETags,
//!   conditional fetches and writes, object metadata.
//! - [`admin`]: the admin HTTP server (`/livez`, `/readyz`, `/metrics`) and the
//!   [`admin::Health`] flags behind the probes.
//! - [`cli`]: clap argument groups both binaries flatten (storage, admin, logging, run mode)
//!   and their validation into typed settings; [`cli::SettingsError`] names the variable.
//! - [`fault`]: fault injection the supervision tests use (`KSD_FAULT_TASK`), inert unless set.
//! - [`telemetry`]: `tracing` set-up (`RUST_LOG`, text or JSON).
//! - [`shutdown`]: SIGTERM/SIGINT to a `CancellationToken`; a second signal forces the exit.
//! - [`backoff`]: capped exponential backoff with full jitter.
//! - [`atomic`]: replacing a file atomically and durably (temp file, fsync, rename), as both
//!   agents write files.
//! - [`healthcheck`]: the `healthcheck` subcommand, a client of `/readyz` for container health
//!   checks in images without a shell or HTTP client.
//! - [`process`]: process metrics (resident memory) read at scrape time.
//! - [`timing`]: a drop-guard timer for latency histograms.

pub mod admin;
pub mod atomic;
pub mod backoff;
pub mod cli;
pub mod fault;
pub mod healthcheck;
pub mod process;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod timing;

/// An error and its sources on one line (`dispatch failure: io error: ... refused`), for log
/// lines: the top-level messages of the SDKs alone ("dispatch failure", "service error") say
/// nothing useful. A source whose text an earlier part already holds is left out (kube's and
/// the AWS SDK's errors often repeat their sources' messages), and whitespace is collapsed.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |text: String| {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() && !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
    };
    push(err.to_string());
    let mut current = err.source();
    while let Some(e) = current {
        push(e.to_string());
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::error_chain;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_message_repeated_further_down_the_chain_is_written_once() {
        let inner = Layer("NoSuchBucket: gone", None);
        let middle = Layer("service error", Some(Box::new(inner)));
        let outer = Layer(
            "listing failed: HTTP 404 NoSuchBucket: gone",
            Some(Box::new(middle)),
        );
        assert_eq!(
            error_chain(&outer),
            "listing failed: HTTP 404 NoSuchBucket: gone: service error"
        );
    }
}
