//! `ksd-syncer`: parse the settings, set up logging, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use ksd_runtime::cli::{Command, exit_with_settings_error};
use ksd_runtime::healthcheck;
use ksd_runtime::{shutdown, telemetry};
use ksd_syncer::settings::{Args, Settings};

/// mimalloc rather than the system allocator: the syncer replaces multi-megabyte buffers and
/// many small per-service values on every change, and glibc's arenas keep the freed memory
/// (resident memory grew with the number of changes); mimalloc returns it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `ksd-syncer explain NAME`: asks a running syncer's admin port about one Traefik service.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ksd-syncer explain",
    about = "Asks a running ksd-syncer (its admin port) which clusters contribute which servers to one Traefik service, and why any is left out"
)]
struct ExplainArgs {
    /// The Traefik service name (`<namespace>-<service>-<port>`, or `<name>.<cluster>`)
    #[arg(value_name = "NAME")]
    service: String,
    /// The syncer's admin address
    #[arg(
        long,
        env = "ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    admin_addr: String,
    /// Print the JSON answer instead of text
    #[arg(long)]
    json: bool,
}

fn explain(args: ExplainArgs) -> ExitCode {
    // A listen address of 0.0.0.0 is asked on the loopback interface.
    let addr = args.admin_addr.replace("0.0.0.0", "127.0.0.1");
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        eprintln!(
            "error: invalid ADMIN_ADDR: {:?} is not host:port",
            args.admin_addr
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ksd_syncer::status::explain(addr, &args.service)) {
        Ok((explanation, text)) => {
            if args.json {
                match serde_json::to_string_pretty(&explanation) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{text}");
            }
            if explanation.served {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "explain") {
        let args = std::env::args_os()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a);
        return explain(ExplainArgs::parse_from(args));
    }
    let args = Args::parse();
    if args.command == Some(Command::Healthcheck) {
        return match args.admin.resolve() {
            Ok(addr) => healthcheck::run(addr),
            Err(error) => exit_with_settings_error(&error),
        };
    }
    let settings =
        Settings::from_args(&args).unwrap_or_else(|error| exit_with_settings_error(&error));
    telemetry::init(settings.log_format);
    for deprecation in &settings.deprecations {
        tracing::warn!(variable = deprecation.variable, "{deprecation}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown::on_signals();
        ksd_syncer::run(settings, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %ksd_syncer::error_chain(&error), "ksd-syncer failed");
            ExitCode::FAILURE
        }
    }
}
