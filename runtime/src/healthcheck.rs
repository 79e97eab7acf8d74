//! `ksd-syncer healthcheck` / `ksd-exporter healthcheck`: asks the running agent's `/readyz`
//! on `ADMIN_ADDR` and exits 0 when it answers 200, 1 otherwise, as `traefik healthcheck`
//! does. The images are distroless (no shell, no curl), so a compose or Docker `HEALTHCHECK`
//! runs the binary itself.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// How long the whole check may take; container health checks have their own timeout too.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("cannot reach the admin server at {addr} (ADMIN_ADDR)")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading /readyz from {addr} failed")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}/readyz answered {status}: {body}")]
    NotReady {
        addr: SocketAddr,
        status: String,
        body: String,
    },
    #[error("{addr}/readyz answered something that is not HTTP")]
    Malformed { addr: SocketAddr },
}

/// The address to connect to for a listen address: a wildcard listener is reached on the
/// loopback address of its family.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Sends `GET /readyz` to the agent listening on `listen`; `Ok` when it answers 200.
pub fn check(listen: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let addr = target(listen);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HealthcheckError::Connect { addr, source })?;
    let io = |source| HealthcheckError::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ksd-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    // The body is a word; a runaway answer is cut off.
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HealthcheckError::Malformed { addr });
    };
    if !version.starts_with("HTTP/") {
        return Err(HealthcheckError::Malformed { addr });
    }
    if code == "200" {
        return Ok(());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default();
    Err(HealthcheckError::NotReady {
        addr,
        status: status_line.trim().to_owned(),
        body,
    })
}

/// Runs the check and turns it into the process's exit status, with one line on stderr when
/// the agent is not healthy.
pub fn run(listen: SocketAddr) -> ExitCode {
    match check(listen, TIMEOUT) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unhealthy: {}", crate::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::admin::{self, Health};

    #[test]
    fn wildcards_are_reached_on_loopback() {
        assert_eq!(
            target("0.0.0.0:9090".parse().unwrap()),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            target("[::]:9090".parse().unwrap()),
            "[::1]:9090".parse().unwrap()
        );
        assert_eq!(
            target("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse().unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follows_readiness_of_the_admin_server() {
        let health = Health::new();
        let stop = CancellationToken::new();
        let (addr, task) = admin::serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Registry::default()),
            health.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
        let probe = move || tokio::task::spawn_blocking(move || check(addr, TIMEOUT));

        let err = probe().await.unwrap().unwrap_err();
        assert!(
            matches!(&err, HealthcheckError::NotReady { status, body, .. }
                if status.contains("503") && body == "not ready"),
            "{err:?}"
        );
        health.set_ready(true);
        probe().await.unwrap().unwrap();
        health.set_shutting_down();
        let err = probe().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("shutting down"), "{err}");

        stop.cancel();
        task.await.unwrap();
        let err = probe().await.unwrap().unwrap_err();
        assert!(matches!(err, HealthcheckError::Connect { .. }), "{err:?}");
    }
}
