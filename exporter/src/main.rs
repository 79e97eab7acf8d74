use std::process::ExitCode;

use clap::Parser as _;
use ksd_exporter::{Args, run};
use ksd_runtime::cli::exit_with_settings_error;
use ksd_runtime::error_chain;
use ksd_runtime::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Args::parse().validate() {
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
