use std::process::ExitCode;

use clap::Parser as _;
use ksd_exporter::{Args, run};
use ksd_runtime::cli::{Command, exit_with_settings_error};
use ksd_runtime::error_chain;
use ksd_runtime::healthcheck;
use ksd_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.command == Some(Command::Healthcheck) {
        return match args.admin.resolve() {
            Ok(addr) => healthcheck::run(addr),
            Err(err) => exit_with_settings_error(&err),
        };
    }
    let settings = match args.validate() {
        Ok(settings) => settings,
        Err(err) => exit_with_settings_error(&err),
    };
    telemetry::init(settings.log_format);
    for deprecation in &settings.deprecations {
        tracing::warn!(variable = deprecation.variable, "{deprecation}");
    }
    match run(settings, shutdown::on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}
