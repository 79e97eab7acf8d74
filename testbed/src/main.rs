//! `ksd-testbed`: the Kubernetes API server double as a standalone process, and a command
//! that scales a Service's endpoints in it. Used by the demo and by hand.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ksd_testbed::apiserver::{ApiClient, ApiServerOptions, TestApiServer};
use ksd_testbed::slices::{self, ready_pods};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ksd-testbed",
    version,
    about = "Test bed for k8s-service-discovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Kubernetes API server double until SIGTERM or Ctrl-C.
    Apiserver {
        /// Address to listen on (plain HTTP).
        #[arg(long, env = "KSD_TESTBED_LISTEN", default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Where to write a kubeconfig that points at the server.
        #[arg(long, env = "KSD_TESTBED_KUBECONFIG")]
        kubeconfig: PathBuf,
        /// Multi-document YAML files of Namespaces, Services and EndpointSlices to load.
        #[arg(long = "seed", value_name = "FILE")]
        seeds: Vec<PathBuf>,
        /// How often watches that ask for bookmarks get one.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        bookmark_interval: Duration,
    },
    /// Replace a Service's EndpointSlices with N ready pods, over HTTP.
    Scale {
        /// Kubeconfig of the server (its current context's cluster).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        replicas: usize,
        /// First pod IP; the others follow it (`10.1.0.` is read as `10.1.0.1`).
        #[arg(long, default_value = "10.1.0.1")]
        base_ip: String,
    },
}

/// `10.1.0.` (a prefix, as the demo scripts write it) or a full address.
fn first_ip(text: &str) -> anyhow::Result<Ipv4Addr> {
    let full = if text.ends_with('.') {
        format!("{text}1")
    } else {
        text.to_owned()
    };
    full.parse().with_context(|| {
        format!("--base-ip {text:?} is not an IPv4 address or a prefix like 10.1.0.")
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Apiserver {
            listen,
            kubeconfig,
            seeds,
            bookmark_interval,
        } => {
            let options = ApiServerOptions::default()
                .listen(listen)
                .bookmark_interval(bookmark_interval);
            let server = TestApiServer::start_with(options).await?;
            for seed in &seeds {
                let objects = server
                    .apply_file(seed)
                    .with_context(|| format!("cannot load {}", seed.display()))?;
                tracing::info!(file = %seed.display(), objects = objects.len(), "seed loaded");
            }
            server.write_kubeconfig(&kubeconfig)?;
            tracing::info!(url = %server.url(), kubeconfig = %kubeconfig.display(), "API server listening");
            shutdown_signal().await?;
            server.stop().await;
            Ok(())
        }
        Command::Scale {
            kubeconfig,
            namespace,
            service,
            replicas,
            base_ip,
        } => {
            let client = ApiClient::from_kubeconfig(&kubeconfig)?;
            let pods = ready_pods(&service, replicas, first_ip(&base_ip)?);
            let written = slices::scale(&client, &namespace, &service, &pods).await?;
            println!("{namespace}/{service}: {replicas} ready pods in {written} EndpointSlices");
            Ok(())
        }
    }
}
