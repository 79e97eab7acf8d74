//! Command-line and environment settings shared by both binaries, as clap argument groups to
//! `#[command(flatten)]`, and their validation into typed values.
//!
//! Every option is also an environment variable (`--storage-url` / `STORAGE_URL`), so
//! `--help` documents both. Raw values are validated before anything starts; a bad one is a
//! [`SettingsError`] that names the variable, reported by [`exit_with_settings_error`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::{ArgPredicate, BoolishValueParser};

use crate::storage::{LegacyMinio, S3Options, StorageError, StorageUrl};
use crate::telemetry::LogFormat;

/// Where documents live when nothing is configured.
pub const DEFAULT_STORAGE_URL: &str = "file:///var/lib/ksd/";
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:9090";

/// A setting that cannot be used: `invalid VARIABLE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {message}")]
pub struct SettingsError {
    /// The environment variable's name (the flag is its lowercase, dashed form).
    pub variable: &'static str,
    pub message: String,
}

impl SettingsError {
    pub fn new(variable: &'static str, message: impl Into<String>) -> SettingsError {
        SettingsError {
            variable,
            message: message.into(),
        }
    }
}

/// Parses a duration setting such as `DEBOUNCE=500ms` (units `ms`, `s`, `m`, `h`).
pub fn parse_duration_var(variable: &'static str, raw: &str) -> Result<Duration, SettingsError> {
    ksd_shared::parse_duration(raw).map_err(|message| SettingsError::new(variable, message))
}

/// Reports a bad setting as one line on stderr and exits with status 2 (a usage error, as
/// clap's own parse errors).
pub fn exit_with_settings_error(err: &SettingsError) -> ! {
    eprintln!("error: {err}");
    std::process::exit(2)
}

/// A deprecated variable that was used, for the binary to log as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    pub variable: &'static str,
    /// What to use instead, or why the value was ignored.
    pub message: String,
}

impl fmt::Display for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is deprecated: {}", self.variable, self.message)
    }
}

// NB: a `//` comment, not a doc comment: clap would turn a flattened group's doc into
// the binary's `about` text.
// Where cluster documents are stored.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StorageArgs {
    /// Where cluster documents live: s3://bucket/prefix/ (any S3-compatible store; endpoint,
    /// region and credentials come from the AWS SDK's standard variables such as
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID) or file:///dir/ (a local directory)
    // NB: an Option so that "given explicitly" can be told apart from the default: the
    // deprecated MINIO_BUCKET applies only when STORAGE_URL is not set, and its presence
    // removes the default.
    #[arg(
        long,
        env = "STORAGE_URL",
        value_name = "URL",
        default_value = DEFAULT_STORAGE_URL,
        default_value_if("minio_bucket", ArgPredicate::IsPresent, None)
    )]
    pub storage_url: Option<String>,

    /// Path-style S3 addressing (https://host/bucket/key), needed by MinIO and Garage [default:
    /// on when AWS_ENDPOINT_URL is set, else off]
    #[arg(
        long,
        env = "S3_FORCE_PATH_STYLE",
        value_name = "BOOL",
        value_parser = BoolishValueParser::new()
    )]
    pub s3_force_path_style: Option<bool>,

    /// Deprecated: use AWS_ENDPOINT_URL
    #[arg(long, env = "MINIO_ENDPOINT", value_name = "HOST:PORT", hide = true)]
    pub minio_endpoint: Option<String>,

    /// Deprecated: use AWS_ACCESS_KEY_ID
    #[arg(long, env = "MINIO_ACCESS_KEY_ID", value_name = "ID", hide = true)]
    pub minio_access_key_id: Option<String>,

    /// Deprecated: use AWS_SECRET_ACCESS_KEY
    #[arg(
        long,
        env = "MINIO_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub minio_secret_access_key: Option<String>,

    /// Deprecated: use STORAGE_URL=s3://bucket/
    #[arg(long, env = "MINIO_BUCKET", value_name = "BUCKET", hide = true)]
    pub minio_bucket: Option<String>,

    /// Deprecated: put the scheme in AWS_ENDPOINT_URL (https://...)
    #[arg(
        long,
        env = "MINIO_SSL_ENABLED",
        value_name = "BOOL",
        hide = true,
        value_parser = BoolishValueParser::new()
    )]
    pub minio_ssl_enabled: Option<bool>,
}

impl StorageArgs {
    /// Validates the storage settings. Deprecated `MINIO_*` values apply only where no
    /// standard setting overrides them (`STORAGE_URL`, `AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`); each one that was set yields a
    /// [`Deprecation`].
    pub fn resolve(&self) -> Result<(StorageUrl, S3Options, Vec<Deprecation>), SettingsError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`StorageArgs::resolve`] with the process environment replaced by `env`.
    fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(StorageUrl, S3Options, Vec<Deprecation>), SettingsError> {
        let env_set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        let mut deprecations = Deprecations::default();
        let url = self.storage_url(&mut deprecations)?;
        let mut legacy = LegacyMinio {
            ssl_enabled: self.minio_ssl_enabled,
            ..LegacyMinio::default()
        };
        let aws_endpoint = env_set("AWS_ENDPOINT_URL_S3") || env_set("AWS_ENDPOINT_URL");
        self.legacy_endpoint(aws_endpoint, &mut legacy, &mut deprecations)?;
        self.legacy_credentials(env_set("AWS_ACCESS_KEY_ID"), &mut legacy, &mut deprecations)?;
        if legacy.bucket.is_none() {
            legacy.bucket = non_empty(&self.minio_bucket).map(str::to_owned);
        }
        let options = S3Options {
            force_path_style: self.s3_force_path_style,
            legacy,
        };
        Ok((url, options, deprecations.0))
    }

    /// `STORAGE_URL`, else the deprecated `MINIO_BUCKET` as `s3://<bucket>/`, else the default.
    fn storage_url(&self, deprecations: &mut Deprecations) -> Result<StorageUrl, SettingsError> {
        let bucket = non_empty(&self.minio_bucket);
        match (non_empty(&self.storage_url), bucket) {
            (Some(raw), bucket) => {
                if bucket.is_some() {
                    deprecations.add(
                        "MINIO_BUCKET",
                        "ignored because STORAGE_URL is set; remove it",
                    );
                }
                parse_url("STORAGE_URL", raw)
            }
            (None, Some(bucket)) => {
                let raw = format!("s3://{bucket}/");
                let url = parse_url("MINIO_BUCKET", &raw)?;
                deprecations.add("MINIO_BUCKET", format!("use STORAGE_URL={url}"));
                Ok(url)
            }
            (None, None) => parse_url("STORAGE_URL", DEFAULT_STORAGE_URL),
        }
    }

    /// `MINIO_ENDPOINT` and `MINIO_SSL_ENABLED`, unless `AWS_ENDPOINT_URL(_S3)` is set.
    fn legacy_endpoint(
        &self,
        aws_endpoint: bool,
        legacy: &mut LegacyMinio,
        deprecations: &mut Deprecations,
    ) -> Result<(), SettingsError> {
        if let Some(endpoint) = non_empty(&self.minio_endpoint) {
            if aws_endpoint {
                deprecations.add(
                    "MINIO_ENDPOINT",
                    "ignored because AWS_ENDPOINT_URL is set; remove it",
                );
            } else {
                validate_endpoint(endpoint)?;
                legacy.endpoint = Some(endpoint.to_owned());
                let url = legacy.endpoint_url().unwrap_or_default();
                deprecations.add("MINIO_ENDPOINT", format!("use AWS_ENDPOINT_URL={url}"));
            }
        }
        if self.minio_ssl_enabled.is_some() {
            deprecations.add(
                "MINIO_SSL_ENABLED",
                "put the scheme in AWS_ENDPOINT_URL (https://... or http://...)",
            );
        }
        Ok(())
    }

    /// `MINIO_ACCESS_KEY_ID` and `MINIO_SECRET_ACCESS_KEY`, both or neither, unless
    /// `AWS_ACCESS_KEY_ID` is set.
    fn legacy_credentials(
        &self,
        aws_key: bool,
        legacy: &mut LegacyMinio,
        deprecations: &mut Deprecations,
    ) -> Result<(), SettingsError> {
        match (
            non_empty(&self.minio_access_key_id),
            non_empty(&self.minio_secret_access_key),
        ) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(SettingsError::new(
                "MINIO_SECRET_ACCESS_KEY",
                "must be set together with MINIO_ACCESS_KEY_ID",
            )),
            (None, Some(_)) => Err(SettingsError::new(
                "MINIO_ACCESS_KEY_ID",
                "must be set together with MINIO_SECRET_ACCESS_KEY",
            )),
            (Some(_), Some(_)) if aws_key => {
                for variable in ["MINIO_ACCESS_KEY_ID", "MINIO_SECRET_ACCESS_KEY"] {
                    deprecations.add(
                        variable,
                        "ignored because AWS_ACCESS_KEY_ID is set; remove it",
                    );
                }
                Ok(())
            }
            (Some(id), Some(secret)) => {
                legacy.access_key_id = Some(id.to_owned());
                legacy.secret_access_key = Some(secret.to_owned());
                deprecations.add("MINIO_ACCESS_KEY_ID", "use AWS_ACCESS_KEY_ID");
                deprecations.add("MINIO_SECRET_ACCESS_KEY", "use AWS_SECRET_ACCESS_KEY");
                Ok(())
            }
        }
    }
}

/// The deprecated settings met while resolving, in order.
#[derive(Default)]
struct Deprecations(Vec<Deprecation>);

impl Deprecations {
    fn add(&mut self, variable: &'static str, message: impl Into<String>) {
        self.0.push(Deprecation {
            variable,
            message: message.into(),
        });
    }
}

/// An empty variable (`MINIO_BUCKET=` in a compose file) counts as unset.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_url(variable: &'static str, raw: &str) -> Result<StorageUrl, SettingsError> {
    StorageUrl::parse(raw).map_err(|err| match err {
        StorageError::InvalidUrl { url, reason } => {
            SettingsError::new(variable, format!("{url:?}: {reason}"))
        }
        other => SettingsError::new(variable, other.to_string()),
    })
}

fn validate_endpoint(endpoint: &str) -> Result<(), SettingsError> {
    if endpoint.contains(char::is_whitespace) {
        return Err(SettingsError::new(
            "MINIO_ENDPOINT",
            format!("{endpoint:?} contains whitespace"),
        ));
    }
    if let Some((scheme, rest)) = endpoint.split_once("://") {
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(SettingsError::new(
                "MINIO_ENDPOINT",
                format!("{endpoint:?}: the scheme must be http or https"),
            ));
        }
        if rest.is_empty() {
            return Err(SettingsError::new(
                "MINIO_ENDPOINT",
                format!("{endpoint:?} has no host"),
            ));
        }
    }
    Ok(())
}

// NB: a `//` comment, not a doc comment: clap would turn a flattened group's doc into
// the binary's `about` text.
// The admin server (`/livez`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin server (/livez, /readyz, /metrics), host:port
    #[arg(long, env = "ADMIN_ADDR", value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: String,
}

impl AdminArgs {
    /// Parses `ADMIN_ADDR`: `0.0.0.0:9090`, `127.0.0.1:9090`, `[::]:9090`, or `:9090` for
    /// every IPv4 interface.
    pub fn resolve(&self) -> Result<SocketAddr, SettingsError> {
        let raw = self.admin_addr.trim();
        let full = match raw.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => raw.to_owned(),
        };
        full.parse().map_err(|_| {
            SettingsError::new(
                "ADMIN_ADDR",
                format!(
                    "{raw:?} is not an address: expected IP:PORT such as 0.0.0.0:9090 or [::]:9090"
                ),
            )
        })
    }
}

// NB: a `//` comment, not a doc comment: clap would turn a flattened group's doc into
// the binary's `about` text.
// Log output.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LogArgs {
    /// Log line format (levels come from RUST_LOG, default info)
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

// NB: a `//` comment, not a doc comment: clap would turn a flattened group's doc into
// the binary's `about` text.
// How long the process runs and whether it writes.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RunArgs {
    /// Run one cycle, then exit (0 on success)
    #[arg(long, env = "ONCE", action = ArgAction::SetTrue, value_parser = parse_flag_value)]
    pub once: bool,

    /// Print what would be written to stdout and write nothing
    #[arg(long, env = "DRY_RUN", action = ArgAction::SetTrue, value_parser = parse_flag_value)]
    pub dry_run: bool,
}

/// Subcommands both binaries accept; without one, the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Ask the running agent's /readyz on ADMIN_ADDR whether it is ready; exit 0 if it is, 1
    /// if not (a container health check for images without a shell or HTTP client)
    Healthcheck,
}

/// The value of a flag's variable (`ONCE=true`): boolean words as clap's boolish parser
/// takes them (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`), and empty for false, so that
/// `ONCE=` in a compose file means "not set" rather than an error.
pub fn parse_flag_value(raw: &str) -> Result<bool, String> {
    let value = raw.trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "false" | "no" | "n" | "off" | "0" | "f" => Ok(false),
        "true" | "yes" | "y" | "on" | "1" | "t" => Ok(true),
        _ => Err(format!("{raw:?} is not a boolean (true or false)")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        run: RunArgs,
    }

    /// Parses flags only: the `env = ...` bindings are removed so that the tests do not
    /// depend on the shell they run in; the environment-dependent part of resolving goes
    /// through `resolve_with`.
    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches =
            command.try_get_matches_from(std::iter::once("ksd").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn storage(args: &[&str]) -> StorageArgs {
        parse(args).storage
    }

    #[test]
    fn defaults() {
        let cli = parse(&[]);
        let (url, opts, deprecations) = cli.storage.resolve_with(no_env).unwrap();
        assert_eq!(url.to_string(), DEFAULT_STORAGE_URL);
        assert_eq!(opts, S3Options::default());
        assert!(deprecations.is_empty());
        assert_eq!(
            cli.admin.resolve().unwrap(),
            "0.0.0.0:9090".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cli.log.log_format, LogFormat::Text);
        assert!(!cli.run.once && !cli.run.dry_run);
    }

    #[test]
    fn storage_url_and_path_style() {
        let args = storage(&[
            "--storage-url",
            "s3://b-1/p",
            "--s3-force-path-style",
            "false",
        ]);
        let (url, opts, deprecations) = args.resolve_with(no_env).unwrap();
        assert_eq!(
            url,
            StorageUrl::S3 {
                bucket: "b-1".into(),
                prefix: "p/".into()
            }
        );
        assert_eq!(opts.force_path_style, Some(false));
        assert!(deprecations.is_empty());
        let args = storage(&["--s3-force-path-style", "yes"]);
        assert_eq!(
            args.resolve_with(no_env).unwrap().1.force_path_style,
            Some(true)
        );
    }

    #[test]
    fn bad_storage_url_names_the_variable() {
        let err = storage(&["--storage-url", "http://x/"])
            .resolve_with(no_env)
            .unwrap_err();
        assert_eq!(err.variable, "STORAGE_URL");
        let shown = err.to_string();
        assert!(
            shown.starts_with("invalid STORAGE_URL: \"http://x/\""),
            "{shown}"
        );
        assert!(shown.contains("s3://bucket/prefix/"), "{shown}");
    }

    #[test]
    fn minio_bucket_applies_only_without_storage_url() {
        let (url, opts, deprecations) = storage(&["--minio-bucket", "legacy"])
            .resolve_with(no_env)
            .unwrap();
        assert_eq!(url.to_string(), "s3://legacy/");
        assert_eq!(opts.legacy.bucket.as_deref(), Some("legacy"));
        assert_eq!(deprecations.len(), 1);
        assert_eq!(deprecations[0].variable, "MINIO_BUCKET");
        assert!(
            deprecations[0]
                .to_string()
                .contains("STORAGE_URL=s3://legacy/")
        );

        let (url, _, deprecations) =
            storage(&["--minio-bucket", "legacy", "--storage-url", "s3://new/x/"])
                .resolve_with(no_env)
                .unwrap();
        assert_eq!(url.to_string(), "s3://new/x/");
        assert_eq!(deprecations.len(), 1);
        assert!(deprecations[0].message.contains("ignored"));

        // An explicit STORAGE_URL equal to the default still wins.
        let (url, _, _) = storage(&[
            "--minio-bucket",
            "legacy",
            "--storage-url",
            DEFAULT_STORAGE_URL,
        ])
        .resolve_with(no_env)
        .unwrap();
        assert_eq!(url.to_string(), DEFAULT_STORAGE_URL);

        let err = storage(&["--minio-bucket", "Bad_Bucket"])
            .resolve_with(no_env)
            .unwrap_err();
        assert_eq!(err.variable, "MINIO_BUCKET");
    }

    #[test]
    fn minio_endpoint_and_credentials_map_to_the_sdk_settings() {
        let args = storage(&[
            "--minio-bucket",
            "b-1",
            "--minio-endpoint",
            "minio:9000",
            "--minio-access-key-id",
            "id",
            "--minio-secret-access-key",
            "secret",
            "--minio-ssl-enabled",
            "true",
        ]);
        let (_, opts, deprecations) = args.resolve_with(no_env).unwrap();
        assert_eq!(
            opts.legacy.endpoint_url().as_deref(),
            Some("https://minio:9000")
        );
        assert_eq!(opts.legacy.access_key_id.as_deref(), Some("id"));
        assert_eq!(opts.legacy.secret_access_key.as_deref(), Some("secret"));
        let mut named: Vec<&str> = deprecations.iter().map(|d| d.variable).collect();
        named.sort();
        assert_eq!(
            named,
            [
                "MINIO_ACCESS_KEY_ID",
                "MINIO_BUCKET",
                "MINIO_ENDPOINT",
                "MINIO_SECRET_ACCESS_KEY",
                "MINIO_SSL_ENABLED"
            ]
        );
        let endpoint = deprecations
            .iter()
            .find(|d| d.variable == "MINIO_ENDPOINT")
            .unwrap();
        assert!(
            endpoint
                .message
                .contains("AWS_ENDPOINT_URL=https://minio:9000")
        );
        // The secret never appears in a message.
        assert!(
            deprecations
                .iter()
                .all(|d| !d.to_string().contains("secret\""))
        );
    }

    #[test]
    fn standard_variables_override_legacy_ones() {
        let args = storage(&[
            "--minio-endpoint",
            "minio:9000",
            "--minio-access-key-id",
            "id",
            "--minio-secret-access-key",
            "secret",
        ]);
        let env = env_of(&[
            ("AWS_ENDPOINT_URL", "http://garage:3900"),
            ("AWS_ACCESS_KEY_ID", "other"),
        ]);
        let (_, opts, deprecations) = args.resolve_with(env).unwrap();
        assert_eq!(opts.legacy.endpoint, None);
        assert_eq!(opts.legacy.access_key_id, None);
        assert_eq!(opts.legacy.secret_access_key, None);
        assert_eq!(deprecations.len(), 3);
        assert!(deprecations.iter().all(|d| d.message.contains("ignored")));

        let env = env_of(&[("AWS_ENDPOINT_URL_S3", "http://garage:3900")]);
        let (_, opts, _) = storage(&["--minio-endpoint", "minio:9000"])
            .resolve_with(env)
            .unwrap();
        assert_eq!(opts.legacy.endpoint, None);
    }

    #[test]
    fn half_a_credential_pair_is_an_error() {
        let err = storage(&["--minio-access-key-id", "id"])
            .resolve_with(no_env)
            .unwrap_err();
        assert_eq!(err.variable, "MINIO_SECRET_ACCESS_KEY");
        let err = storage(&["--minio-secret-access-key", "s"])
            .resolve_with(no_env)
            .unwrap_err();
        assert_eq!(err.variable, "MINIO_ACCESS_KEY_ID");
    }

    #[test]
    fn bad_minio_endpoint_is_an_error() {
        for bad in ["ftp://x:1", "http://", "a b:9000"] {
            let err = storage(&["--minio-endpoint", bad])
                .resolve_with(no_env)
                .unwrap_err();
            assert_eq!(err.variable, "MINIO_ENDPOINT", "{bad}");
        }
    }

    #[test]
    fn admin_addr_forms() {
        let addr = |raw: &str| {
            AdminArgs {
                admin_addr: raw.to_owned(),
            }
            .resolve()
        };
        assert_eq!(addr("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(addr("[::]:9090").unwrap().to_string(), "[::]:9090");
        assert_eq!(addr(":9091").unwrap().to_string(), "0.0.0.0:9091");
        for bad in ["localhost", "9090", "1.2.3.4:99999", ""] {
            let err = addr(bad).unwrap_err();
            assert_eq!(err.variable, "ADMIN_ADDR");
            assert!(err.to_string().starts_with("invalid ADMIN_ADDR: "), "{err}");
        }
    }

    #[test]
    fn durations_name_the_variable() {
        assert_eq!(
            parse_duration_var("DEBOUNCE", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration_var("MAX_DELAY", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["5", "", "5 parsecs", "-1s"] {
            let err = parse_duration_var("POLL_INTERVAL", bad).unwrap_err();
            assert_eq!(err.variable, "POLL_INTERVAL");
            assert!(
                err.to_string().starts_with("invalid POLL_INTERVAL: "),
                "{err}"
            );
        }
    }

    #[test]
    fn log_format_and_run_flags() {
        let cli = parse(&["--log-format", "json", "--once", "--dry-run"]);
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert!(cli.run.once && cli.run.dry_run);
        assert!(try_parse(&["--log-format", "xml"]).is_err());
    }

    #[test]
    fn flag_variables_take_boolean_words() {
        for yes in ["true", "1", "yes", "ON"] {
            assert_eq!(parse_flag_value(yes), Ok(true), "{yes}");
        }
        for no in ["", "false", "0", "no", "off"] {
            assert_eq!(parse_flag_value(no), Ok(false), "{no}");
        }
        assert!(parse_flag_value("bogus").is_err());
    }

    #[test]
    fn help_lists_every_variable_and_hides_the_deprecated_ones() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for variable in [
            "STORAGE_URL",
            "S3_FORCE_PATH_STYLE",
            "ADMIN_ADDR",
            "LOG_FORMAT",
            "ONCE",
            "DRY_RUN",
        ] {
            assert!(
                help.contains(&format!("env: {variable}")),
                "{variable} in\n{help}"
            );
        }
        assert!(help.contains(DEFAULT_STORAGE_URL), "{help}");
        assert!(!help.contains("MINIO_"), "{help}");
    }
}
