//! `ksd-syncer`: parse the settings, set up logging, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use ksd_runtime::cli::{Command, exit_with_settings_error};
use ksd_runtime::healthcheck;
use ksd_runtime::{shutdown, telemetry};
use ksd_syncer::settings::{Args, Settings};

fn main() -> ExitCode {
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
