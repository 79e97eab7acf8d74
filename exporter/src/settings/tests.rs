//! The exporter's settings: what is accepted, what is refused and how it is reported.

use clap::{CommandFactory, FromArgMatches};

use super::*;

/// Parses flags only (environment bindings removed), so tests do not depend on the shell.
fn args(flags: &[&str]) -> Args {
    let command = Args::command().mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(std::iter::once("ksd-exporter").chain(flags.iter().copied()))
        .unwrap();
    Args::from_arg_matches(&matches).unwrap()
}

fn settings(flags: &[&str]) -> Result<Settings, SettingsError> {
    args(flags).validate()
}

fn error(flags: &[&str]) -> SettingsError {
    settings(flags).unwrap_err()
}

#[test]
fn defaults() {
    let s = settings(&["--cluster-name", "prod-1"]).unwrap();
    assert_eq!(s.cluster.as_str(), "prod-1");
    assert_eq!(s.label_selector, "k8s-service-discovery");
    assert!(s.namespaces.is_empty());
    assert_eq!(s.name_template.as_str(), "{namespace}-{service}-{port}");
    assert_eq!(s.debounce, Duration::from_secs(1));
    assert_eq!(s.max_delay, Duration::from_secs(10));
    assert_eq!(s.heartbeat, Duration::from_secs(300));
    assert_eq!(s.formats, [ObjectFormat::Traefik]);
    assert!(!s.once && !s.dry_run);
    assert!(s.leader_election.is_none());
    assert!(s.deprecations.is_empty());
    assert!(!s.events);
}

#[test]
fn events_need_the_acknowledgements() {
    let s = settings(&["--cluster-name", "c", "--events"]).unwrap();
    assert!(s.events);
    let err = error(&["--cluster-name", "c", "--events", "--ack-interval", "0s"]);
    assert!(err.to_string().starts_with("invalid EVENTS: "), "{err}");
}

#[test]
fn leader_election() {
    let s = settings(&["--cluster-name", "c", "--leader-election"]).unwrap();
    let lease = s.leader_election.unwrap();
    assert_eq!(lease.name, "ksd-exporter-leader");
    assert_eq!(lease.namespace, None);
    assert_eq!(lease.duration, Duration::from_secs(15));
    assert_eq!(lease.renew_deadline, Duration::from_secs(10));
    assert_eq!(lease.retry_period, Duration::from_secs(2));
    assert!(!lease.identity.is_empty());

    let s = settings(&[
        "--cluster-name",
        "c",
        "--leader-election",
        "--lease-name",
        "ksd.exporter-a",
        "--lease-namespace",
        "ops",
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "3s",
        "--lease-retry-period",
        "500ms",
        "--lease-holder-identity",
        "pod-a",
    ])
    .unwrap();
    let lease = s.leader_election.unwrap();
    assert_eq!(lease.name, "ksd.exporter-a");
    assert_eq!(lease.namespace.as_deref(), Some("ops"));
    assert_eq!(lease.identity, "pod-a");
    assert_eq!(lease.retry_period, Duration::from_millis(500));

    for (flags, variable) in [
        (&["--lease-name", "Lease_1"][..], "LEASE_NAME"),
        (&["--lease-namespace", "a.b"][..], "LEASE_NAMESPACE"),
        (&["--lease-duration", "500ms"][..], "LEASE_DURATION"),
        (
            &["--lease-renew-deadline", "15s"][..],
            "LEASE_RENEW_DEADLINE",
        ),
        (&["--lease-retry-period", "10s"][..], "LEASE_RETRY_PERIOD"),
        (&["--lease-retry-period", "0s"][..], "LEASE_RETRY_PERIOD"),
    ] {
        let mut all = vec!["--cluster-name", "c", "--leader-election"];
        all.extend_from_slice(flags);
        assert_eq!(error(&all).variable, variable, "{flags:?}");
    }
    // Without LEADER_ELECTION the Lease settings are not used, so not checked.
    assert!(settings(&["--cluster-name", "c", "--lease-name", "Bad_"]).is_ok());
}

#[test]
fn cluster_name_is_required_and_a_dns_label() {
    for flags in [&[][..], &["--cluster-name", ""], &["--cluster-name", "  "]] {
        let err = error(flags);
        assert_eq!(err.variable, "CLUSTER_NAME");
        assert!(
            err.to_string()
                .starts_with("invalid CLUSTER_NAME: it is required"),
            "{err}"
        );
    }
    let err = error(&["--cluster-name", "Prod_1"]);
    assert_eq!(err.variable, "CLUSTER_NAME");
    assert!(err.to_string().contains("\"Prod_1\""), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn every_option() {
    let s = settings(&[
        "--cluster-name",
        "c",
        "--label-selector",
        "app in (web, api),tier!=db",
        "--namespaces",
        "b, a,,b",
        "--name-template",
        "{service}-{port}",
        "--debounce",
        "250ms",
        "--max-delay",
        "2s",
        "--heartbeat-interval",
        "1m",
        "--output-formats",
        "backends,traefik",
        "--storage-url",
        "s3://bucket/prefix/",
        "--admin-addr",
        "127.0.0.1:0",
        "--once",
    ])
    .unwrap();
    assert_eq!(s.label_selector, "app in (web, api),tier!=db");
    assert_eq!(s.namespaces, ["a", "b"]);
    assert_eq!(s.name_template.as_str(), "{service}-{port}");
    assert_eq!(s.debounce, Duration::from_millis(250));
    assert_eq!(s.max_delay, Duration::from_secs(2));
    assert_eq!(s.heartbeat, Duration::from_secs(60));
    assert_eq!(s.formats, [ObjectFormat::Traefik, ObjectFormat::Backends]);
    assert_eq!(s.storage_url.to_string(), "s3://bucket/prefix/");
    assert_eq!(s.admin_addr.to_string(), "127.0.0.1:0");
    assert!(s.once);
}

#[test]
fn label_filter_is_a_deprecated_label_selector() {
    let s = settings(&["--cluster-name", "c", "--label-filter", "export=yes"]).unwrap();
    assert_eq!(s.label_selector, "export=yes");
    assert_eq!(s.deprecations.len(), 1);
    assert_eq!(s.deprecations[0].variable, "LABEL_FILTER");
    assert!(
        s.deprecations[0]
            .message
            .contains("LABEL_SELECTOR=export=yes")
    );

    let s = settings(&[
        "--cluster-name",
        "c",
        "--label-filter",
        "old",
        "--label-selector",
        "new",
    ])
    .unwrap();
    assert_eq!(s.label_selector, "new");
    assert!(s.deprecations[0].message.contains("ignored"));

    let err = error(&["--cluster-name", "c", "--label-filter", "a b"]);
    assert_eq!(err.variable, "LABEL_FILTER");

    let s = settings(&["--cluster-name", "c", "--label-filter", ""]).unwrap();
    assert_eq!(s.label_selector, DEFAULT_LABEL_SELECTOR);
    assert_eq!(s.deprecations.len(), 1);
}

#[test]
fn an_empty_label_selector_selects_everything() {
    let s = settings(&["--cluster-name", "c", "--label-selector", ""]).unwrap();
    assert_eq!(s.label_selector, "");
}

#[test]
fn bad_values_name_their_variable() {
    for (flag, value, variable) in [
        ("--label-selector", "app=(x)", "LABEL_SELECTOR"),
        ("--label-selector", "a b", "LABEL_SELECTOR"),
        ("--namespaces", "Default", "NAMESPACES"),
        ("--name-template", "{nope}", "NAME_TEMPLATE"),
        ("--name-template", "{service}.{port}", "NAME_TEMPLATE"),
        ("--debounce", "5", "DEBOUNCE"),
        ("--max-delay", "soon", "MAX_DELAY"),
        ("--max-delay", "0s", "MAX_DELAY"),
        ("--max-delay", "500ms", "MAX_DELAY"),
        ("--heartbeat-interval", "10ms", "HEARTBEAT_INTERVAL"),
        ("--heartbeat-interval", "", "HEARTBEAT_INTERVAL"),
        ("--output-formats", "json", "OUTPUT_FORMATS"),
        ("--output-formats", ",", "OUTPUT_FORMATS"),
        ("--storage-url", "http://bucket/", "STORAGE_URL"),
        ("--admin-addr", "localhost", "ADMIN_ADDR"),
    ] {
        let err = error(&["--cluster-name", "c", flag, value]);
        assert_eq!(err.variable, variable, "{flag} {value}: {err}");
        let line = err.to_string();
        assert!(line.starts_with(&format!("invalid {variable}: ")), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn label_selectors() {
    for good in [
        "",
        "k8s-service-discovery",
        "!legacy",
        "app=web",
        "app==web",
        "app!=web",
        "app=",
        "example.com/export=true",
        "app in (web,api)",
        "app notin (web)",
        "app in (web, api), tier=front, !old",
        "replicas>2",
    ] {
        assert!(validate_label_selector(good).is_ok(), "{good}");
    }
    for bad in [
        "a b",
        "app=(web)",
        "app in web",
        "app in (web",
        "app)",
        ",app",
        "app,,tier",
        "-app",
        "app=-web",
        "Example.com/x=1",
        "replicas>two",
        &"x".repeat(64),
    ] {
        assert!(validate_label_selector(bad).is_err(), "{bad}");
    }
}

#[test]
fn help_lists_every_variable() {
    let help = Args::command().render_long_help().to_string();
    for variable in [
        "CLUSTER_NAME",
        "LABEL_SELECTOR",
        "NAMESPACES",
        "NAME_TEMPLATE",
        "DEBOUNCE",
        "MAX_DELAY",
        "HEARTBEAT_INTERVAL",
        "OUTPUT_FORMATS",
        "STORAGE_URL",
        "ADMIN_ADDR",
        "LOG_FORMAT",
        "LEADER_ELECTION",
        "LEASE_NAME",
        "LEASE_NAMESPACE",
        "LEASE_DURATION",
        "LEASE_RENEW_DEADLINE",
        "LEASE_RETRY_PERIOD",
        "LEASE_HOLDER_IDENTITY",
        "ACK_INTERVAL",
        "EVENTS",
    ] {
        assert!(
            help.contains(&format!("env: {variable}")),
            "{variable} in\n{help}"
        );
    }
    assert!(!help.contains("LABEL_FILTER"), "{help}");
}
