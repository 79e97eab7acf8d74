//! The syncer's settings: every option is a flag and an environment variable ([`Args`]), turned
//! into a validated [`Settings`] before anything starts. A bad value is one line naming the
//! variable (`error: invalid POLL_INTERVAL: ...`) and exit status 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ksd_runtime::cli::{
    AdminArgs, Deprecation, LogArgs, RunArgs, SettingsError, StorageArgs, parse_duration_var,
};
use ksd_runtime::storage::{S3Options, StorageUrl};
use ksd_runtime::telemetry::LogFormat;
use ksd_shared::policy::{self, AddressPolicy};
use ksd_shared::traefik::TraefikVersion;

use crate::state::Policy;

pub const DEFAULT_TRAEFIK_DIR: &str = "/etc/traefik/dynamic";
pub const DEFAULT_OUTPUT_FILE: &str = "k8s-service-discovery.yml";
pub const DEFAULT_POLL_INTERVAL: &str = "10s";
pub const DEFAULT_CONFIRM_POLLS: &str = "3";
pub const DEFAULT_STALE_AFTER: &str = "off";
pub const DEFAULT_TRAEFIK_VERSION: &str = "v3";
pub const DEFAULT_MAX_OBJECT_BYTES: &str = "8MiB";
pub const DEFAULT_ACK_HEARTBEAT: &str = "5m";

/// Command line and environment of `ksd-syncer`. Values stay raw strings here so that every
/// mistake is reported the same way, naming the variable, by [`Settings::from_args`].
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ksd-syncer",
    version,
    about = "Merges the cluster documents published by ksd-exporter into one Traefik dynamic-configuration file",
    long_about = "Merges the cluster documents published by ksd-exporter (one <cluster>.traefik.yaml \
                  per cluster under STORAGE_URL) into one Traefik dynamic-configuration file, \
                  written atomically into TRAEFIK_DIR whenever it changes.\n\n\
                  Every option is also an environment variable."
)]
pub struct Args {
    #[command(flatten)]
    pub storage: StorageArgs,

    /// Traefik's dynamic-configuration directory (the file provider's `directory`)
    #[arg(long, env = "TRAEFIK_DIR", value_name = "DIR", default_value = DEFAULT_TRAEFIK_DIR)]
    pub traefik_dir: String,

    /// Name of the merged file in TRAEFIK_DIR; ends in .yml or .yaml, no '/'
    #[arg(long, env = "OUTPUT_FILE", value_name = "NAME", default_value = DEFAULT_OUTPUT_FILE)]
    pub output_file: String,

    /// Period of the bucket listing (S3), and of the safety-net rescan of a file:// directory
    #[arg(long, env = "POLL_INTERVAL", value_name = "DURATION", default_value = DEFAULT_POLL_INTERVAL)]
    pub poll_interval: String,

    /// Consecutive listings that must agree before a cluster whose object disappeared is
    /// removed (or an empty listing is applied); at least 1
    #[arg(long, env = "CONFIRM_POLLS", value_name = "N", default_value = DEFAULT_CONFIRM_POLLS)]
    pub confirm_polls: String,

    /// Leave out a cluster whose object the syncer has not seen change (new ETag or
    /// last-modified, as the exporter's heartbeat makes) for this long, on its own clock ("off",
    /// or a duration such as 15m). If every cluster is stale the file is kept as it is
    #[arg(long, env = "STALE_AFTER", value_name = "DURATION|off", default_value = DEFAULT_STALE_AFTER)]
    pub stale_after: String,

    /// Traefik major version the merged file must be valid for: v3 or v2
    #[arg(long, env = "TRAEFIK_VERSION", value_name = "v2|v3", default_value = DEFAULT_TRAEFIK_VERSION)]
    pub traefik_version: String,

    /// Cluster documents larger than this are rejected (bytes; KiB, MiB, GiB suffixes allowed)
    #[arg(long, env = "MAX_OBJECT_BYTES", value_name = "SIZE", default_value = DEFAULT_MAX_OBJECT_BYTES)]
    pub max_object_bytes: String,

    /// Pins clusters to the CIDRs they own: <cluster>=<cidr>[,<cidr>...] entries separated by
    /// ';' (e.g. cluster-a=10.1.0.0/16,fd00:a::/64;cluster-b=10.2.0.0/16). When this or
    /// ALLOWED_CIDRS is set, a server outside its cluster's CIDRs and ALLOWED_CIDRS is left out.
    /// Special-purpose addresses (loopback, link-local, ...) are always left out
    #[arg(long, env = "CLUSTER_CIDRS", value_name = "LIST", default_value = "")]
    pub cluster_cidrs: String,

    /// CIDRs every cluster may use, comma-separated (e.g. 192.0.2.0/24 for a shared range)
    #[arg(long, env = "ALLOWED_CIDRS", value_name = "LIST", default_value = "")]
    pub allowed_cidrs: String,

    /// SQS queue receiving the bucket's S3 event notifications (direct or through
    /// EventBridge): uploads reach the file at once, the listing every POLL_INTERVAL stays as
    /// the safety net. Off when unset; needs an s3:// STORAGE_URL
    #[arg(long, env = "S3_EVENT_QUEUE_URL", value_name = "URL")]
    pub s3_event_queue_url: Option<String>,

    /// This syncer's name, a DNS label: with it, what this syncer serves is acknowledged in
    /// <prefix>_status/<NAME>.json for the exporters; unset, nothing is written to the bucket
    #[arg(long, env = "SYNCER_NAME", value_name = "NAME")]
    pub syncer_name: Option<String>,

    /// Re-write the acknowledgement this often even when nothing changed (with SYNCER_NAME)
    #[arg(long, env = "ACK_HEARTBEAT", value_name = "DURATION", default_value = DEFAULT_ACK_HEARTBEAT)]
    pub ack_heartbeat: String,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<ksd_runtime::cli::Command>,
}

/// Validated settings: what [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub storage_url: StorageUrl,
    pub s3: S3Options,
    /// Deprecated variables that were used, to be logged once logging is set up.
    pub deprecations: Vec<Deprecation>,
    pub admin_addr: SocketAddr,
    pub log_format: LogFormat,
    pub once: bool,
    pub dry_run: bool,
    pub traefik_dir: PathBuf,
    pub output_file: String,
    pub poll_interval: Duration,
    pub confirm_polls: u32,
    pub stale_after: Option<Duration>,
    pub traefik_version: TraefikVersion,
    pub max_object_bytes: u64,
    /// Which servers each cluster may point at.
    pub address_policy: AddressPolicy,
    /// `S3_EVENT_QUEUE_URL`: where bucket event notifications arrive, if anywhere.
    pub event_queue_url: Option<String>,
    /// `SYNCER_NAME`: acknowledgements are written only with a name.
    pub syncer_name: Option<ksd_shared::status::SyncerName>,
    pub ack_heartbeat: Duration,
}

impl Settings {
    /// Validates every raw value; the first bad one is the error.
    pub fn from_args(args: &Args) -> Result<Settings, SettingsError> {
        let (storage_url, s3, deprecations) = args.storage.resolve()?;
        Ok(Settings {
            storage_url: storage_url.clone(),
            s3,
            deprecations,
            admin_addr: args.admin.resolve()?,
            log_format: args.log.log_format,
            once: args.run.once,
            dry_run: args.run.dry_run,
            traefik_dir: parse_traefik_dir(&args.traefik_dir)?,
            output_file: parse_output_file(&args.output_file)?,
            poll_interval: parse_positive_duration("POLL_INTERVAL", &args.poll_interval)?,
            confirm_polls: parse_confirm_polls(&args.confirm_polls)?,
            stale_after: parse_stale_after(&args.stale_after)?,
            traefik_version: TraefikVersion::parse(&args.traefik_version)
                .map_err(|error| SettingsError::new("TRAEFIK_VERSION", error.to_string()))?,
            max_object_bytes: parse_size("MAX_OBJECT_BYTES", &args.max_object_bytes)?,
            address_policy: AddressPolicy::new(
                policy::parse_cluster_cidrs(&args.cluster_cidrs)
                    .map_err(|error| SettingsError::new("CLUSTER_CIDRS", error.to_string()))?,
                policy::parse_cidrs(&args.allowed_cidrs)
                    .map_err(|error| SettingsError::new("ALLOWED_CIDRS", error.to_string()))?,
            ),
            event_queue_url: parse_event_queue_url(
                args.s3_event_queue_url.as_deref(),
                &storage_url,
            )?,
            syncer_name: parse_syncer_name(args.syncer_name.as_deref())?,
            ack_heartbeat: parse_positive_duration("ACK_HEARTBEAT", &args.ack_heartbeat)?,
        })
    }

    /// `TRAEFIK_DIR/OUTPUT_FILE`.
    pub fn output_path(&self) -> PathBuf {
        self.traefik_dir.join(&self.output_file)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            confirm_polls: self.confirm_polls,
            stale_after: self.stale_after,
            max_object_bytes: self.max_object_bytes,
        }
    }
}

fn parse_event_queue_url(
    raw: Option<&str>,
    storage: &StorageUrl,
) -> Result<Option<String>, SettingsError> {
    let Some(raw) = raw.map(str::trim).filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| SettingsError::new("S3_EVENT_QUEUE_URL", message);
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(invalid(format!(
            "{raw:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
        )));
    };
    if !matches!(scheme, "http" | "https") || rest.split('/').filter(|p| !p.is_empty()).count() < 2
    {
        return Err(invalid(format!(
            "{raw:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
        )));
    }
    if !storage.is_s3() {
        return Err(invalid(
            "bucket events need an s3:// STORAGE_URL (a local directory is watched already)"
                .to_owned(),
        ));
    }
    Ok(Some(raw.to_owned()))
}

fn parse_traefik_dir(raw: &str) -> Result<PathBuf, SettingsError> {
    if raw.trim().is_empty() {
        return Err(SettingsError::new("TRAEFIK_DIR", "must not be empty"));
    }
    if raw.contains('\0') {
        return Err(SettingsError::new("TRAEFIK_DIR", "contains a NUL byte"));
    }
    Ok(PathBuf::from(raw))
}

fn parse_output_file(raw: &str) -> Result<String, SettingsError> {
    let invalid = |message: String| SettingsError::new("OUTPUT_FILE", message);
    if raw.is_empty() {
        return Err(invalid("must not be empty".to_owned()));
    }
    if raw.contains('/') || raw.contains('\0') {
        return Err(invalid(format!(
            "{raw:?} must be a file name, without '/' (the directory is TRAEFIK_DIR)"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid(format!("{raw:?} contains a control character")));
    }
    // Traefik compares extensions case-insensitively; so do we.
    let extension = Path::new(raw)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let stem_ok = Path::new(raw)
        .file_stem()
        .is_some_and(|stem| !stem.is_empty() && stem != ".");
    if !matches!(extension.as_deref(), Some("yml" | "yaml")) || !stem_ok {
        return Err(invalid(format!(
            "{raw:?} must end in .yml or .yaml, the extensions Traefik's file provider reads as YAML"
        )));
    }
    Ok(raw.to_owned())
}

fn parse_syncer_name(
    raw: Option<&str>,
) -> Result<Option<ksd_shared::status::SyncerName>, SettingsError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(name) => ksd_shared::status::SyncerName::parse(name)
            .map(Some)
            .map_err(|error| SettingsError::new("SYNCER_NAME", error.to_string())),
    }
}

fn parse_positive_duration(variable: &'static str, raw: &str) -> Result<Duration, SettingsError> {
    let duration = parse_duration_var(variable, raw)?;
    if duration.is_zero() {
        return Err(SettingsError::new(variable, "must be greater than zero"));
    }
    Ok(duration)
}

fn parse_confirm_polls(raw: &str) -> Result<u32, SettingsError> {
    match raw.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err(SettingsError::new(
            "CONFIRM_POLLS",
            "must be at least 1 (1 applies a disappearance at the first listing that shows it)",
        )),
        Err(_) => Err(SettingsError::new(
            "CONFIRM_POLLS",
            format!("{raw:?} is not a whole number"),
        )),
    }
}

fn parse_stale_after(raw: &str) -> Result<Option<Duration>, SettingsError> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_positive_duration("STALE_AFTER", raw)
        .map(Some)
        .map_err(|error| {
            SettingsError::new("STALE_AFTER", format!("{} (or \"off\")", error.message))
        })
}

/// Bytes, with an optional binary (`KiB`, `MiB`, `GiB`) or decimal (`kB`, `MB`, `GB`) unit.
fn parse_size(variable: &'static str, raw: &str) -> Result<u64, SettingsError> {
    let text = raw.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let invalid = || {
        SettingsError::new(
            variable,
            format!(
                "{raw:?} is not a size: expected bytes, optionally with KiB, MiB or GiB (e.g. 8MiB)"
            ),
        )
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| SettingsError::new(variable, format!("{raw:?} is too large")))?;
    if bytes == 0 {
        return Err(SettingsError::new(variable, "must be greater than zero"));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Flags only: the environment of the test run must not leak in.
    fn settings(args: &[&str]) -> Result<Settings, SettingsError> {
        let command = Args::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(std::iter::once("ksd-syncer").chain(args.iter().copied()))
            .unwrap();
        Settings::from_args(&Args::from_arg_matches(&matches).unwrap())
    }

    fn error(args: &[&str]) -> String {
        settings(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.output_path(),
            PathBuf::from("/etc/traefik/dynamic/k8s-service-discovery.yml")
        );
        assert_eq!(s.poll_interval, Duration::from_secs(10));
        assert_eq!(s.confirm_polls, 3);
        assert_eq!(s.stale_after, None);
        assert_eq!(s.traefik_version, TraefikVersion::V3);
        assert_eq!(s.max_object_bytes, 8 * 1024 * 1024);
        assert_eq!(s.admin_addr.to_string(), "0.0.0.0:9090");
        assert!(!s.once && !s.dry_run);
        assert!(!s.address_policy.is_pinned());
    }

    #[test]
    fn address_ranges() {
        let s = settings(&[
            "--cluster-cidrs",
            "cluster-a=10.1.0.0/16,fd00:a::/64;cluster-b=10.2.0.0/16",
            "--allowed-cidrs",
            "192.0.2.0/24",
        ])
        .unwrap();
        let policy = &s.address_policy;
        assert!(
            policy
                .check("cluster-a", "10.1.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            policy
                .check("cluster-b", "10.1.0.1".parse().unwrap())
                .is_err()
        );
        assert!(
            policy
                .check("cluster-b", "192.0.2.9".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn event_queue_url() {
        assert_eq!(settings(&[]).unwrap().event_queue_url, None);
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ksd-events";
        let s = settings(&[
            "--storage-url",
            "s3://bucket/prefix/",
            "--s3-event-queue-url",
            url,
        ])
        .unwrap();
        assert_eq!(s.event_queue_url.as_deref(), Some(url));
        assert_eq!(
            settings(&["--storage-url", "s3://bkt/", "--s3-event-queue-url", " "])
                .unwrap()
                .event_queue_url,
            None
        );
        let bad = error(&[
            "--storage-url",
            "s3://bkt/",
            "--s3-event-queue-url",
            "ksd-events",
        ]);
        assert!(bad.contains("S3_EVENT_QUEUE_URL"), "{bad}");
        assert!(bad.contains("not a queue URL"), "{bad}");
        let bad = error(&[
            "--storage-url",
            "s3://bkt/",
            "--s3-event-queue-url",
            "ftp://x/1/q",
        ]);
        assert!(bad.contains("not a queue URL"), "{bad}");
        let local = error(&[
            "--storage-url",
            "file:///tmp/x/",
            "--s3-event-queue-url",
            url,
        ]);
        assert!(local.contains("s3:// STORAGE_URL"), "{local}");
    }

    #[test]
    fn every_option_parses() {
        let s = settings(&[
            "--storage-url",
            "s3://bucket/prefix/",
            "--traefik-dir",
            "/srv/traefik",
            "--output-file",
            "clusters.yaml",
            "--poll-interval",
            "500ms",
            "--confirm-polls",
            "1",
            "--stale-after",
            "15m",
            "--traefik-version",
            "v2",
            "--max-object-bytes",
            "512KiB",
            "--admin-addr",
            "127.0.0.1:0",
            "--once",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(s.output_path(), PathBuf::from("/srv/traefik/clusters.yaml"));
        assert_eq!(s.poll_interval, Duration::from_millis(500));
        assert_eq!(s.confirm_polls, 1);
        assert_eq!(s.stale_after, Some(Duration::from_secs(900)));
        assert_eq!(s.traefik_version, TraefikVersion::V2);
        assert_eq!(s.max_object_bytes, 512 * 1024);
        assert!(s.once && s.dry_run);
        assert_eq!(
            s.policy(),
            Policy {
                confirm_polls: 1,
                stale_after: Some(Duration::from_secs(900)),
                max_object_bytes: 512 * 1024
            }
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[&str], &str)] = &[
            (&["--output-file", "dir/x.yml"], "invalid OUTPUT_FILE: "),
            (&["--output-file", "x.toml"], "invalid OUTPUT_FILE: "),
            (&["--output-file", "x.yml.tmp"], "invalid OUTPUT_FILE: "),
            (&["--output-file", ".yml"], "invalid OUTPUT_FILE: "),
            (&["--output-file", ""], "invalid OUTPUT_FILE: "),
            (&["--traefik-dir", ""], "invalid TRAEFIK_DIR: "),
            (&["--poll-interval", "10"], "invalid POLL_INTERVAL: "),
            (&["--poll-interval", "0s"], "invalid POLL_INTERVAL: "),
            (&["--confirm-polls", "0"], "invalid CONFIRM_POLLS: "),
            (&["--confirm-polls", "two"], "invalid CONFIRM_POLLS: "),
            (&["--stale-after", "soon"], "invalid STALE_AFTER: "),
            (&["--stale-after", "0s"], "invalid STALE_AFTER: "),
            (&["--traefik-version", "v4"], "invalid TRAEFIK_VERSION: "),
            (
                &["--max-object-bytes", "8 parsecs"],
                "invalid MAX_OBJECT_BYTES: ",
            ),
            (&["--max-object-bytes", "0"], "invalid MAX_OBJECT_BYTES: "),
            (&["--storage-url", "http://x/"], "invalid STORAGE_URL: "),
            (&["--admin-addr", "nowhere"], "invalid ADMIN_ADDR: "),
            (
                &["--cluster-cidrs", "10.0.0.0/8"],
                "invalid CLUSTER_CIDRS: ",
            ),
            (
                &["--cluster-cidrs", "a=10.0.0.1/8"],
                "invalid CLUSTER_CIDRS: ",
            ),
            (
                &["--allowed-cidrs", "10.0.0.0/40"],
                "invalid ALLOWED_CIDRS: ",
            ),
        ];
        for (args, prefix) in cases {
            let shown = error(args);
            assert!(shown.starts_with(prefix), "{args:?}: {shown}");
            assert!(!shown.contains('\n'), "one line: {shown}");
        }
    }

    #[test]
    fn output_file_extension_is_case_insensitive_and_stale_after_off_too() {
        let s = settings(&["--output-file", "K8S.YAML", "--stale-after", "OFF"]).unwrap();
        assert_eq!(s.output_file, "K8S.YAML");
        assert_eq!(s.stale_after, None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("X", "1024").unwrap(), 1024);
        assert_eq!(parse_size("X", "8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("X", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("X", "10kB").unwrap(), 10_000);
        assert!(parse_size("X", "99999999999999GiB").is_err());
        assert!(parse_size("X", "MiB").is_err());
    }

    #[test]
    fn help_documents_every_variable_with_its_default() {
        let help = Args::command().render_long_help().to_string();
        for variable in [
            "STORAGE_URL",
            "TRAEFIK_DIR",
            "OUTPUT_FILE",
            "POLL_INTERVAL",
            "CONFIRM_POLLS",
            "STALE_AFTER",
            "TRAEFIK_VERSION",
            "MAX_OBJECT_BYTES",
            "CLUSTER_CIDRS",
            "ALLOWED_CIDRS",
            "ADMIN_ADDR",
            "LOG_FORMAT",
        ] {
            assert!(
                help.contains(&format!("env: {variable}")),
                "{variable}:\n{help}"
            );
        }
        for default in [
            "/etc/traefik/dynamic",
            "k8s-service-discovery.yml",
            "10s",
            "8MiB",
        ] {
            assert!(
                help.contains(&format!("default: {default}")),
                "{default}:\n{help}"
            );
        }
    }
}
