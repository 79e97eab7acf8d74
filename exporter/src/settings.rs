//! Settings: clap arguments (every one also an environment variable) and their validation
//! into [`Settings`] before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::ArgPredicate;
use ksd_runtime::cli::{
    AdminArgs, Command, Deprecation, LogArgs, RunArgs, SettingsError, StorageArgs,
    parse_duration_var, parse_flag_value,
};
use ksd_runtime::storage::{S3Options, StorageUrl};
use ksd_runtime::telemetry::LogFormat;
use ksd_shared::names::{ClusterName, NameError, NameTemplate, ObjectFormat, is_dns_label};

pub const DEFAULT_LABEL_SELECTOR: &str = "k8s-service-discovery";
pub const DEFAULT_DEBOUNCE: &str = "1s";
pub const DEFAULT_MAX_DELAY: &str = "10s";
pub const DEFAULT_HEARTBEAT_INTERVAL: &str = "5m";
pub const DEFAULT_OUTPUT_FORMATS: &str = "traefik";
pub const DEFAULT_LEASE_NAME: &str = "ksd-exporter-leader";
pub const DEFAULT_LEASE_DURATION: &str = "15s";
pub const DEFAULT_LEASE_RENEW_DEADLINE: &str = "10s";
pub const DEFAULT_LEASE_RETRY_PERIOD: &str = "2s";
pub const DEFAULT_ACK_INTERVAL: &str = "1m";

/// The shortest heartbeat accepted: anything faster is an upload loop, not a proof of life.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);

/// Publishes a Kubernetes cluster's Services and ready endpoints as a Traefik
/// dynamic-configuration document in a bucket.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ksd-exporter", version, about, long_about = None)]
pub struct Args {
    /// Name of this cluster, a DNS label; names its objects (<prefix><CLUSTER_NAME>.traefik.yaml)
    /// and must be unique among the exporters sharing a bucket [required]
    // NB: an Option validated by hand, so that a missing value is one `invalid CLUSTER_NAME`
    // line like every other bad setting rather than clap's multi-line usage error.
    #[arg(long, env = "CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// Label selector of the exported Services (Kubernetes syntax; empty selects every Service)
    // NB: an Option so that the deprecated LABEL_FILTER applies only when LABEL_SELECTOR is
    // not set; its presence removes the default.
    #[arg(
        long,
        env = "LABEL_SELECTOR",
        value_name = "SELECTOR",
        default_value = DEFAULT_LABEL_SELECTOR,
        default_value_if("label_filter", ArgPredicate::IsPresent, None)
    )]
    pub label_selector: Option<String>,

    /// Deprecated: use LABEL_SELECTOR
    #[arg(long, env = "LABEL_FILTER", value_name = "SELECTOR", hide = true)]
    pub label_filter: Option<String>,

    /// Namespaces to watch, comma-separated; empty watches all namespaces
    #[arg(long, env = "NAMESPACES", value_name = "LIST", default_value = "")]
    pub namespaces: String,

    /// Traefik service name of each Service port; placeholders {namespace}, {service}, {port}
    /// (the port's name, else its number)
    #[arg(long, env = "NAME_TEMPLATE", value_name = "TEMPLATE", default_value = NameTemplate::DEFAULT)]
    pub name_template: String,

    /// Quiet window: publish once no change has arrived for this long
    #[arg(long, env = "DEBOUNCE", value_name = "DURATION", default_value = DEFAULT_DEBOUNCE)]
    pub debounce: String,

    /// Longest a change waits for the quiet window before it is published anyway
    #[arg(long, env = "MAX_DELAY", value_name = "DURATION", default_value = DEFAULT_MAX_DELAY)]
    pub max_delay: String,

    /// Re-upload unchanged content this often, so the object's age shows the exporter is alive
    #[arg(
        long,
        env = "HEARTBEAT_INTERVAL",
        value_name = "DURATION",
        default_value = DEFAULT_HEARTBEAT_INTERVAL
    )]
    pub heartbeat_interval: String,

    /// Documents to publish, comma-separated: traefik (<CLUSTER_NAME>.traefik.yaml) and/or
    /// backends (<CLUSTER_NAME>.backends.yaml, a neutral list of backends)
    #[arg(long, env = "OUTPUT_FORMATS", value_name = "LIST", default_value = DEFAULT_OUTPUT_FORMATS)]
    pub output_formats: String,

    /// Run several replicas and let only the holder of a coordination.k8s.io/v1 Lease
    /// publish; the others keep their watches warm and take over when it stops renewing
    #[arg(long, env = "LEADER_ELECTION", action = ArgAction::SetTrue, value_parser = parse_flag_value)]
    pub leader_election: bool,

    /// Name of the Lease of leader election; one per exporter deployment
    #[arg(long, env = "LEASE_NAME", value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the Lease; empty means the exporter's own (the service account's, or the
    /// kubeconfig context's)
    #[arg(
        long,
        env = "LEASE_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = ""
    )]
    pub lease_namespace: String,

    /// How long a standby waits, after it last saw the Lease renewed, before taking it over
    #[arg(long, env = "LEASE_DURATION", value_name = "DURATION", default_value = DEFAULT_LEASE_DURATION)]
    pub lease_duration: String,

    /// How long the leader keeps publishing while it cannot renew the Lease; shorter than
    /// LEASE_DURATION
    #[arg(
        long,
        env = "LEASE_RENEW_DEADLINE",
        value_name = "DURATION",
        default_value = DEFAULT_LEASE_RENEW_DEADLINE
    )]
    pub lease_renew_deadline: String,

    /// How often the leader renews the Lease and a standby tries to acquire it; shorter than
    /// LEASE_RENEW_DEADLINE
    #[arg(
        long,
        env = "LEASE_RETRY_PERIOD",
        value_name = "DURATION",
        default_value = DEFAULT_LEASE_RETRY_PERIOD
    )]
    pub lease_retry_period: String,

    /// This replica's holder identity in the Lease; empty means the host (pod) name and a
    /// random suffix
    #[arg(
        long,
        env = "LEASE_HOLDER_IDENTITY",
        value_name = "ID",
        default_value = ""
    )]
    pub lease_holder_identity: String,

    /// Read the syncers' acknowledgements (<prefix>_status/*.json) this often, and once after
    /// each publish; 0s turns reading off
    #[arg(long, env = "ACK_INTERVAL", value_name = "DURATION", default_value = DEFAULT_ACK_INTERVAL)]
    pub ack_interval: String,

    /// Record Kubernetes Events on the exported Services when a syncer's acknowledgement says
    /// they are served, rejected or left out (kubectl describe service shows them); needs
    /// ACK_INTERVAL and RBAC create and patch on events.k8s.io events
    #[arg(long, env = "EVENTS", action = ArgAction::SetTrue, value_parser = parse_flag_value)]
    pub events: bool,

    #[command(flatten)]
    pub storage: StorageArgs,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Validated settings: everything the exporter needs, in typed form.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: ClusterName,
    /// Empty selects every Service.
    pub label_selector: String,
    /// Empty watches all namespaces.
    pub namespaces: Vec<String>,
    pub name_template: NameTemplate,
    pub debounce: Duration,
    pub max_delay: Duration,
    pub heartbeat: Duration,
    /// Never empty; in a fixed order, without duplicates.
    pub formats: Vec<ObjectFormat>,
    /// How often acknowledgements are read; `None` when reading is off.
    pub ack_interval: Option<Duration>,
    /// Whether Events are recorded on the Services (needs `ack_interval`).
    pub events: bool,
    pub storage_url: StorageUrl,
    pub s3: S3Options,
    pub admin_addr: SocketAddr,
    pub log_format: LogFormat,
    pub once: bool,
    pub dry_run: bool,
    /// `Some` with LEADER_ELECTION: publish only while holding this Lease.
    pub leader_election: Option<crate::leader::LeaseSettings>,
    /// Deprecated variables that were used, to be logged once logging is set up.
    pub deprecations: Vec<Deprecation>,
}

impl Args {
    /// Validates every value; the first bad one is reported naming its variable.
    pub fn validate(self) -> Result<Settings, SettingsError> {
        let cluster = self.cluster()?;
        let mut deprecations = Vec::new();
        let label_selector = self.label_selector(&mut deprecations)?;

        let namespaces = parse_namespaces(&self.namespaces)?;
        let name_template = NameTemplate::parse(self.name_template.trim())
            .map_err(|err| SettingsError::new("NAME_TEMPLATE", name_error_message(err)))?;

        let (debounce, max_delay, heartbeat) = self.timings()?;
        let formats = parse_formats(&self.output_formats)?;
        let ack_interval = self.ack_interval()?;
        let (storage_url, s3, storage_deprecations) = self.storage.resolve()?;
        deprecations.extend(storage_deprecations);
        let admin_addr = self.admin.resolve()?;
        let leader_election = if self.leader_election {
            Some(self.lease_settings()?)
        } else {
            None
        };

        Ok(Settings {
            cluster,
            label_selector,
            namespaces,
            name_template,
            debounce,
            max_delay,
            heartbeat,
            formats,
            ack_interval,
            events: self.events,
            storage_url,
            s3,
            admin_addr,
            log_format: self.log.log_format,
            once: self.run.once,
            dry_run: self.run.dry_run,
            leader_election,
            deprecations,
        })
    }

    fn cluster(&self) -> Result<ClusterName, SettingsError> {
        match self.cluster_name.as_deref().map(str::trim) {
            None | Some("") => Err(SettingsError::new(
                "CLUSTER_NAME",
                "it is required: a DNS label naming this cluster's objects, e.g. prod-eu-1",
            )),
            Some(raw) => ClusterName::parse(raw)
                .map_err(|err| SettingsError::new("CLUSTER_NAME", name_error_message(err))),
        }
    }

    /// LABEL_SELECTOR, or the deprecated LABEL_FILTER.
    fn label_selector(&self, deprecations: &mut Vec<Deprecation>) -> Result<String, SettingsError> {
        let label_selector = match (&self.label_selector, &self.label_filter) {
            (Some(selector), filter) => {
                if filter.is_some() {
                    deprecations.push(Deprecation {
                        variable: "LABEL_FILTER",
                        message: "ignored because LABEL_SELECTOR is set; remove it".to_owned(),
                    });
                }
                selector.trim().to_owned()
            }
            // An empty LABEL_FILTER (left in a compose file) counts as unset, as the other
            // deprecated variables do.
            (None, Some(filter)) if filter.trim().is_empty() => {
                deprecations.push(Deprecation {
                    variable: "LABEL_FILTER",
                    message: "empty, ignored; remove it".to_owned(),
                });
                DEFAULT_LABEL_SELECTOR.to_owned()
            }
            (None, Some(filter)) => {
                let filter = filter.trim().to_owned();
                deprecations.push(Deprecation {
                    variable: "LABEL_FILTER",
                    message: format!("use LABEL_SELECTOR={filter}"),
                });
                validate_label_selector(&filter)
                    .map_err(|message| SettingsError::new("LABEL_FILTER", message))?;
                filter
            }
            (None, None) => DEFAULT_LABEL_SELECTOR.to_owned(),
        };
        validate_label_selector(&label_selector)
            .map_err(|message| SettingsError::new("LABEL_SELECTOR", message))?;
        Ok(label_selector)
    }

    /// DEBOUNCE, MAX_DELAY and HEARTBEAT_INTERVAL.
    fn timings(&self) -> Result<(Duration, Duration, Duration), SettingsError> {
        let debounce = parse_duration_var("DEBOUNCE", &self.debounce)?;
        let max_delay = parse_duration_var("MAX_DELAY", &self.max_delay)?;
        if max_delay.is_zero() {
            return Err(SettingsError::new(
                "MAX_DELAY",
                "it must be longer than zero",
            ));
        }
        if max_delay < debounce {
            return Err(SettingsError::new(
                "MAX_DELAY",
                format!(
                    "{} is shorter than DEBOUNCE ({}); the longest hold cannot be shorter than \
                 the quiet window",
                    self.max_delay.trim(),
                    self.debounce.trim()
                ),
            ));
        }
        let heartbeat = parse_duration_var("HEARTBEAT_INTERVAL", &self.heartbeat_interval)?;
        if heartbeat < MIN_HEARTBEAT {
            return Err(SettingsError::new(
                "HEARTBEAT_INTERVAL",
                format!("{} is shorter than 1s", self.heartbeat_interval.trim()),
            ));
        }

        Ok((debounce, max_delay, heartbeat))
    }

    /// ACK_INTERVAL (`None`: off), and that EVENTS has acknowledgements to read.
    fn ack_interval(&self) -> Result<Option<Duration>, SettingsError> {
        let ack_interval = parse_duration_var("ACK_INTERVAL", &self.ack_interval)?;
        if !ack_interval.is_zero() && ack_interval < MIN_HEARTBEAT {
            return Err(SettingsError::new(
                "ACK_INTERVAL",
                format!(
                    "{} is shorter than 1s (0s turns reading off)",
                    self.ack_interval.trim()
                ),
            ));
        }
        let ack_interval = Some(ack_interval).filter(|d| !d.is_zero());
        if self.events && ack_interval.is_none() {
            return Err(SettingsError::new(
                "EVENTS",
                "events come from the syncers' acknowledgements: set ACK_INTERVAL to a \
             duration, not 0s",
            ));
        }
        Ok(ack_interval)
    }

    fn lease_settings(&self) -> Result<crate::leader::LeaseSettings, SettingsError> {
        let name = self.lease_name.trim();
        if !name.split('.').all(is_dns_label) || name.len() > 253 {
            return Err(SettingsError::new(
                "LEASE_NAME",
                format!("{name:?} is not an object name (a DNS subdomain: a-z, 0-9, '-', '.')"),
            ));
        }
        let namespace = self.lease_namespace.trim();
        if !namespace.is_empty() && !is_dns_label(namespace) {
            return Err(SettingsError::new(
                "LEASE_NAMESPACE",
                format!("{namespace:?} is not a namespace name (a DNS label)"),
            ));
        }
        let positive = |variable: &'static str, raw: &str| {
            let value = parse_duration_var(variable, raw)?;
            if value < Duration::from_secs(1) {
                return Err(SettingsError::new(
                    variable,
                    format!("{} is shorter than 1s", raw.trim()),
                ));
            }
            Ok(value)
        };
        let duration = positive("LEASE_DURATION", &self.lease_duration)?;
        let renew_deadline = positive("LEASE_RENEW_DEADLINE", &self.lease_renew_deadline)?;
        let retry_period = parse_duration_var("LEASE_RETRY_PERIOD", &self.lease_retry_period)?;
        if renew_deadline >= duration {
            return Err(SettingsError::new(
                "LEASE_RENEW_DEADLINE",
                format!(
                    "{} is not shorter than LEASE_DURATION {}: a leader that cannot renew must stop before a standby takes over",
                    self.lease_renew_deadline.trim(),
                    self.lease_duration.trim()
                ),
            ));
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(SettingsError::new(
                "LEASE_RETRY_PERIOD",
                format!(
                    "{} must be above 0 and shorter than LEASE_RENEW_DEADLINE {}",
                    self.lease_retry_period.trim(),
                    self.lease_renew_deadline.trim()
                ),
            ));
        }
        let identity = match self.lease_holder_identity.trim() {
            "" => crate::leader::default_identity(),
            id => id.to_owned(),
        };
        Ok(crate::leader::LeaseSettings {
            name: name.to_owned(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            identity,
            duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// The reason of a [`NameError`], without its own "invalid ..." lead (the settings error adds
/// one naming the variable).
fn name_error_message(err: NameError) -> String {
    match err {
        NameError::InvalidClusterName { name, reason } => format!(
            "{name:?}: {reason} (a DNS label: 1-63 characters of a-z, 0-9 and '-', starting and \
             ending with a letter or digit)"
        ),
        NameError::InvalidTemplate { template, reason } => format!("{template:?}: {reason}"),
        other => other.to_string(),
    }
}

fn parse_namespaces(raw: &str) -> Result<Vec<String>, SettingsError> {
    let mut namespaces: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !is_dns_label(item) {
            return Err(SettingsError::new(
                "NAMESPACES",
                format!(
                    "{item:?} is not a namespace name (a DNS label: 1-63 characters of a-z, 0-9 \
                     and '-')"
                ),
            ));
        }
        if !namespaces.iter().any(|n| n == item) {
            namespaces.push(item.to_owned());
        }
    }
    namespaces.sort();
    Ok(namespaces)
}

fn parse_formats(raw: &str) -> Result<Vec<ObjectFormat>, SettingsError> {
    let mut formats = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let format = ObjectFormat::parse(item).map_err(|_| {
            SettingsError::new(
                "OUTPUT_FORMATS",
                format!("unknown format {item:?}: expected traefik and/or backends"),
            )
        })?;
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    if formats.is_empty() {
        return Err(SettingsError::new(
            "OUTPUT_FORMATS",
            "it is empty: name traefik and/or backends",
        ));
    }
    formats.sort();
    Ok(formats)
}

/// Checks a Kubernetes label selector (`key`, `!key`, `key=value`, `key==value`, `key!=value`,
/// `key in (a,b)`, `key notin (a,b)`, comma-separated), so a typo stops the exporter at
/// start-up instead of failing every watch request.
pub fn validate_label_selector(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Ok(());
    }
    for requirement in split_requirements(selector)? {
        check_requirement(requirement.trim())
            .map_err(|reason| format!("{selector:?}: {reason}"))?;
    }
    Ok(())
}

/// Splits on the commas that separate requirements (not those inside `in (...)` sets).
fn split_requirements(selector: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{selector:?}: unbalanced ')'"))?;
            }
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{selector:?}: unbalanced '('"));
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

fn check_requirement(requirement: &str) -> Result<(), String> {
    if requirement.is_empty() {
        return Err("empty requirement (stray comma?)".to_owned());
    }
    if let Some(key) = requirement.strip_prefix('!') {
        return check_key(key.trim());
    }
    let key_end = requirement
        .find(|c: char| c.is_whitespace() || "=!<>(".contains(c))
        .unwrap_or(requirement.len());
    let (key, rest) = requirement.split_at(key_end);
    check_key(key)?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(());
    }
    for op in ["==", "!=", "="] {
        if let Some(value) = rest.strip_prefix(op) {
            return check_value(value.trim());
        }
    }
    for op in ["<", ">"] {
        if let Some(value) = rest.strip_prefix(op) {
            let value = value.trim();
            return value
                .parse::<i64>()
                .map(|_| ())
                .map_err(|_| format!("{value:?} is not an integer (after {op})"));
        }
    }
    for op in ["notin", "in"] {
        if let Some(set) = rest.strip_prefix(op) {
            let set = set.trim();
            let Some(inner) = set.strip_prefix('(').and_then(|s| s.strip_suffix(')')) else {
                return Err(format!("expected ({op} (a,b,...)) after {key:?}"));
            };
            for value in inner.split(',') {
                check_value(value.trim())?;
            }
            return Ok(());
        }
    }
    Err(format!(
        "unexpected {rest:?} after {key:?} (expected =, ==, !=, in, notin or nothing)"
    ))
}

/// `[prefix/]name`: prefix a DNS subdomain, name 1-63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let valid_prefix =
                !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label);
            if !valid_prefix {
                return Err(format!("{key:?}: the prefix is not a DNS subdomain"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "{key:?} is not a label key (1-63 characters of A-Z, a-z, 0-9, '-', '_', '.', \
             starting and ending with a letter or digit, optionally after a DNS prefix and '/')"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_value(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value (at most 63 characters of A-Z, a-z, 0-9, '-', '_', \
             '.', starting and ending with a letter or digit)"
        ))
    }
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
