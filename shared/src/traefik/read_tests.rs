//! The reader against hostile and malformed documents.

use std::time::{Duration, Instant};

use super::*;
use crate::names::shorten;
use crate::traefik::{DEFAULT_MAX_BYTES, SameSite, StickyCookie, TraefikVersion, render};

fn parse(text: &str) -> Result<Document, DocumentError> {
    parse_cluster_document(text.as_bytes(), &Limits::default())
}

fn refused(text: &str, reason: &str) -> String {
    let shown = shorten(text);
    match parse(text) {
        Ok(doc) => panic!("accepted {shown:?} as {doc:?}"),
        Err(err) => {
            assert_eq!(err.reason(), reason, "{shown:?}: {err}");
            err.to_string()
        }
    }
}

const GOOD: &str = r#"# written by hand
http:
  services:
    web:
      loadBalancer:
        servers:
          - url: http://10.0.0.1:80
          - url: "http://[fd00::1]:8080"
        passHostHeader: false
        sticky:
          cookie:
            name: srv
            secure: true
            httpOnly: false
            sameSite: strict
        healthCheck:
          path: /healthz
          interval: 10s
          timeout: "500ms"
    empty:
      loadBalancer:
        servers: []
tcp:
  services:
    'pg':
      loadBalancer:
        servers:
          - address: "[fd00::2]:5432"
udp:
  services:
    dns:
      loadBalancer: {servers: [{address: "10.0.0.3:53"}]}
"#;

#[test]
fn a_complete_document_is_read() {
    let doc = parse(GOOD).unwrap();
    let http = &doc.http.as_ref().unwrap().services;
    let web = &http["web"].load_balancer;
    assert_eq!(web.servers.len(), 2);
    assert_eq!(web.servers[1].url, "http://[fd00::1]:8080");
    assert_eq!(web.pass_host_header, Some(false));
    let cookie = &web.sticky.as_ref().unwrap().cookie;
    assert_eq!(cookie.name.as_deref(), Some("srv"));
    assert_eq!(cookie.secure, Some(true));
    assert_eq!(cookie.http_only, Some(false));
    assert_eq!(cookie.same_site, Some(SameSite::Strict));
    let health = web.health_check.as_ref().unwrap();
    assert_eq!(health.path, "/healthz");
    assert_eq!(health.interval.unwrap().as_std(), Duration::from_secs(10));
    assert_eq!(health.timeout.unwrap().as_std(), Duration::from_millis(500));
    assert!(http["empty"].load_balancer.servers.is_empty());
    let tcp = &doc.tcp.as_ref().unwrap().services;
    assert_eq!(tcp["pg"].load_balancer.servers[0].address, "[fd00::2]:5432");
    let udp = &doc.udp.as_ref().unwrap().services;
    assert_eq!(udp["dns"].load_balancer.servers[0].address, "10.0.0.3:53");
}

#[test]
fn rendered_documents_read_back() {
    let doc = parse(GOOD).unwrap();
    let rendered = render(&doc, TraefikVersion::V3, "header {{x}}\nsecond line");
    let back = parse_cluster_document(&rendered.bytes, &Limits::default()).unwrap();
    assert_eq!(back, doc.normalized());
}

#[test]
fn empty_and_comment_only_documents_hold_no_services() {
    for text in [
        "",
        "# nothing\n",
        "---\n",
        "\u{FEFF}# bom\n",
        "# No services.\n",
    ] {
        assert_eq!(parse(text).unwrap(), Document::default(), "{text:?}");
    }
}

#[test]
fn size_limit() {
    let limits = Limits { max_bytes: 10 };
    let err = parse_cluster_document(b"# 12345678901", &limits).unwrap_err();
    assert_eq!(err.reason(), "too_large");
    assert!(err.to_string().contains("13 bytes"), "{err}");
    assert!(parse_cluster_document(b"# 1234567", &limits).is_ok());
    assert_eq!(Limits::default().max_bytes, 8 * 1024 * 1024);
}

#[test]
fn not_utf8() {
    let err = parse_cluster_document(b"http:\n  \xff\n", &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "not_utf8");
}

#[test]
fn template_markers_anywhere() {
    let message = refused("# fine\n# {{ .Env }}\n", "template_marker");
    assert!(message.starts_with("line 2:"), "{message}");
    refused(&GOOD.replace("/healthz", "/{{x}}"), "template_marker");
    assert_eq!(
        parse(&GOOD.replace("/healthz", "/{x}"))
            .unwrap_err()
            .reason(),
        "invalid_option"
    );
}

#[test]
fn yaml_syntax_errors_carry_a_line() {
    let message = refused("http:\n  services: [\n", "yaml");
    assert!(message.starts_with("line "), "{message}");
    refused("http: \"unterminated\n", "yaml");
    refused("---\nhttp: {}\n---\ntcp: {}\n", "multiple_documents");
}

#[test]
fn duplicate_keys() {
    let message = refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n    web:\n      loadBalancer:\n        servers: []\n",
        "duplicate_key",
    );
    assert!(
        message.contains("line 6")
            && message.contains("http.services")
            && message.contains("\"web\""),
        "{message}"
    );
    refused(
        "http:\n  services: {}\nhttp:\n  services: {}\n",
        "duplicate_key",
    );
    refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        servers: []\n",
        "duplicate_key",
    );
}

#[test]
fn anchors_aliases_and_tags_are_refused() {
    refused(
        "http:\n  services:\n    web: &lb\n      loadBalancer:\n        servers: []\n    api: *lb\n",
        "unsupported_yaml",
    );
    let message = refused("x: &a 1\n", "unsupported_yaml");
    assert!(message.contains("anchors"), "{message}");
    let message = refused("http: !!map\n  services: {}\n", "unsupported_yaml");
    assert!(message.contains("tags"), "{message}");
}

#[test]
fn an_alias_bomb_is_refused_at_once() {
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..10u8 {
        let (name, prev) = ((b'a' + level) as char, (b'a' + level - 1) as char);
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let started = Instant::now();
    let err = parse(&bomb).unwrap_err();
    assert_eq!(err.reason(), "unsupported_yaml");
    assert_eq!(err.line(), Some(1));
    // Generous bound: expanding the bomb would take minutes and gigabytes.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn deep_nesting_is_refused() {
    let mut deep = String::new();
    for level in 0..20 {
        deep.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
    }
    let message = refused(&deep, "too_deep");
    assert!(
        message.contains("16 levels") && message.starts_with("line 17:"),
        "{message}"
    );
    // Deep flow nesting is stopped by the YAML scanner itself, before any tree is built.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    refused(&deep, "yaml");
}

#[test]
fn only_http_tcp_udp_at_the_root() {
    let message = refused("providers:\n  file: {}\n", "unknown_field");
    assert!(
        message.contains("`providers`") && message.contains("line 1"),
        "{message}"
    );
    refused("tls:\n  certificates: []\n", "not_services_only");
    refused("- http\n", "invalid_type");
    refused("just text\n", "invalid_type");
}

#[test]
fn routers_middlewares_and_transports_are_not_services() {
    for (text, path) in [
        (
            "http:\n  routers:\n    r:\n      rule: Host(`x`)\n      service: web\n",
            "http.routers",
        ),
        (
            "http:\n  middlewares:\n    m:\n      stripPrefix: {prefixes: [/a]}\n",
            "http.middlewares",
        ),
        (
            "http:\n  serversTransports:\n    t:\n      insecureSkipVerify: true\n",
            "http.serversTransports",
        ),
        (
            "tcp:\n  routers:\n    r:\n      rule: HostSNI(`*`)\n      service: pg\n",
            "tcp.routers",
        ),
        (
            "udp:\n  routers:\n    r:\n      service: dns\n",
            "udp.routers",
        ),
    ] {
        let message = refused(text, "not_services_only");
        assert!(
            message.contains(path) && message.contains("only services"),
            "{message}"
        );
    }
}

#[test]
fn only_load_balancer_services() {
    for kind in ["weighted", "failover", "mirroring"] {
        let text = format!("http:\n  services:\n    web:\n      {kind}:\n        services: []\n");
        let message = refused(&text, "unsupported_service");
        assert!(
            message.contains(kind) && message.contains("http.services.web"),
            "{message}"
        );
    }
}

#[test]
fn unknown_fields_are_named() {
    for (from, to, field) in [
        (
            "        passHostHeader: false\n",
            "        passHostHeader: false\n        strategy: wrr\n",
            "strategy",
        ),
        (
            "          - url: http://10.0.0.1:80\n",
            "          - url: http://10.0.0.1:80\n            weight: 2\n",
            "weight",
        ),
        (
            "            name: srv\n",
            "            name: srv\n            maxAge: 10\n",
            "maxAge",
        ),
        (
            "          path: /healthz\n",
            "          path: /healthz\n          port: 81\n",
            "port",
        ),
        (
            "        servers: []\n",
            "        servers: []\n        serversTransport: x\n",
            "serversTransport",
        ),
        ("    web:\n", "    web:\n      extra: 1\n", "extra"),
        ("http:\n", "http:\n  extra: 1\n", "extra"),
        (
            "        passHostHeader",
            "        passhostheader",
            "passhostheader",
        ),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let message = refused(&GOOD.replacen(from, to, 1), "unknown_field");
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    let message = refused(
        "tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers: []\n        terminationDelay: 100\n",
        "unknown_field",
    );
    assert!(
        message.contains("line 6") && message.contains("tcp.services.pg.loadBalancer"),
        "{message}"
    );
}

#[test]
fn empty_elements_traefik_rejects() {
    for text in [
        "http: {}\n",
        "http:\n",
        "http:\n  services: {}\n",
        "http:\n  services:\n",
        "http:\n  services: null\n",
        "tcp:\n  services: {}\n",
        "udp: {}\n",
        "http:\n  services:\n    web: {}\n",
        "http:\n  services:\n    web:\n",
        "http:\n  services:\n    web:\n      loadBalancer: {}\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n",
        "tcp:\n  services:\n    pg:\n      loadBalancer: {}\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: [{}]\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        healthCheck: {}\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky: {}\n",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky:\n          cookie:\n",
    ] {
        let message = refused(text, "empty_element");
        assert!(message.contains("is empty"), "{message}");
    }
    let message = refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n",
        "empty_element",
    );
    assert!(message.contains("servers: []"), "{message}");
}

#[test]
fn servers_may_be_empty_and_cookie_may_be_default() {
    let doc = parse("http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky:\n          cookie: {}\n").unwrap();
    let lb = &doc.http.unwrap().services["web"].load_balancer;
    assert!(lb.servers.is_empty());
    assert_eq!(lb.sticky.as_ref().unwrap().cookie, StickyCookie::default());
    let doc =
        parse("tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers: []\n").unwrap();
    assert!(
        doc.tcp.unwrap().services["pg"]
            .load_balancer
            .servers
            .is_empty()
    );
}

#[test]
fn missing_fields() {
    let message = refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        passHostHeader: true\n",
        "missing_field",
    );
    assert!(message.contains("`servers`"), "{message}");
    refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: [{weight: 1}]\n",
        "unknown_field",
    );
    let message = refused(
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        healthCheck:\n          interval: 5s\n",
        "missing_field",
    );
    assert!(message.contains("`path`"), "{message}");
}

#[test]
fn value_types() {
    for (from, to) in [
        ("passHostHeader: false", "passHostHeader: \"false\""),
        ("passHostHeader: false", "passHostHeader: yes"),
        ("passHostHeader: false", "passHostHeader: 0"),
        ("secure: true", "secure: [true]"),
        ("- url: http://10.0.0.1:80", "- url: [http://10.0.0.1:80]"),
        ("- url: http://10.0.0.1:80", "- url:"),
        ("servers: []", "servers: {}"),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replacen(from, to, 1);
        let err = parse(&text).unwrap_err();
        assert!(
            matches!(err.reason(), "invalid_type" | "empty_element"),
            "{to}: {err}"
        );
    }
    assert!(parse(&GOOD.replace("passHostHeader: false", "passHostHeader: True")).is_ok());
}

#[test]
fn option_values() {
    for (from, to, reason) in [
        ("interval: 10s", "interval: 10", "invalid_value"),
        ("interval: 10s", "interval: 0s", "invalid_option"),
        ("interval: 10s", "interval: -5s", "invalid_option"),
        ("interval: 10s", "interval: 999us", "invalid_option"),
        ("interval: 10s", "interval: 24h0m0.001s", "invalid_option"),
        ("interval: 10s", "interval: 1d", "invalid_value"),
        ("interval: 10s", "interval: 1.5.s", "invalid_value"),
        (
            "interval: 10s",
            "interval: 9223372036854775808ns",
            "invalid_value",
        ),
        ("timeout: \"500ms\"", "timeout: \"25h\"", "invalid_option"),
        ("timeout: \"500ms\"", "timeout: 5 s", "invalid_value"),
        ("sameSite: strict", "sameSite: Strict", "invalid_value"),
        ("sameSite: strict", "sameSite: \"\"", "invalid_value"),
        ("name: srv", "name: \"a;b\"", "invalid_option"),
        ("path: /healthz", "path: healthz", "invalid_option"),
    ] {
        let message = refused(&GOOD.replacen(from, to, 1), reason);
        assert!(message.contains("web"), "{message}");
    }
}

#[test]
fn durations_go_cannot_parse_are_refused_naming_the_field() {
    let message = refused(
        &GOOD.replacen("interval: 10s", "interval: \"3000000h\"", 1),
        "invalid_value",
    );
    assert!(
        message.starts_with("line 18: http.services.web.loadBalancer.healthCheck.interval:")
            && message.contains("3000000h")
            && message.contains("out of range"),
        "{message}"
    );
    let message = refused(
        &GOOD.replacen("timeout: \"500ms\"", "timeout: 48h", 1),
        "invalid_option",
    );
    assert!(
        message.starts_with("line 19: http.services.web.loadBalancer.healthCheck.timeout:")
            && message.contains("24h"),
        "{message}"
    );
}

#[test]
fn go_duration_forms_are_read() {
    for (text, nanos) in [
        ("1.5s", 1_500_000_000),
        ("1h30m", 5_400_000_000_000),
        ("+2s", 2_000_000_000),
        ("1500µs", 1_500_000),
        ("2500us", 2_500_000),
        (".5s", 500_000_000),
    ] {
        let doc = parse(&GOOD.replacen("interval: 10s", &format!("interval: {text}"), 1))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let lb = &doc.http.as_ref().unwrap().services["web"].load_balancer;
        let interval = lb.health_check.as_ref().unwrap().interval.unwrap();
        assert_eq!(interval.get().as_nanos(), nanos, "{text}");
        let rendered = render(&doc, TraefikVersion::V2, "");
        let back = parse_cluster_document(&rendered.bytes, &Limits::default()).unwrap();
        assert_eq!(back, doc.clone().normalized(), "{text}");
    }
}

#[test]
fn merged_documents_allow_pool_names_and_any_size() {
    let text = "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n    web.eu-1:\n      loadBalancer:\n        servers: []\n";
    let doc = parse_merged_document(text.as_bytes()).unwrap();
    assert_eq!(doc.service_count(), 2);
    assert_eq!(parse(text).unwrap_err().reason(), "invalid_name");
    for bad in ["web.EU", "web.a.b", "web@file"] {
        let err = parse_merged_document(text.replace("web.eu-1", bad).as_bytes()).unwrap_err();
        assert_eq!(err.reason(), "invalid_name", "{bad}");
    }
    let big = format!("{text}{}", "# padding\n".repeat(1_000_000));
    assert!(big.len() > DEFAULT_MAX_BYTES);
    assert_eq!(parse_merged_document(big.as_bytes()).unwrap(), doc);
    let err = parse_merged_document(b"# {{ x }}\n").unwrap_err();
    assert_eq!(err.reason(), "template_marker");
}

#[test]
fn content_rules_apply_after_reading() {
    let message = refused(
        &GOOD.replace("http://10.0.0.1:80", "TCP://10.0.0.1:80"),
        "invalid_server",
    );
    assert!(
        message.contains("TCP://10.0.0.1:80")
            && message.contains("http.services.web.loadBalancer.servers[0].url")
            && message.starts_with("line 7:"),
        "{message}"
    );
    refused(
        &GOOD.replace("\"[fd00::2]:5432\"", "\"fd00::2:5432\""),
        "invalid_server",
    );
    refused(
        &GOOD.replace("    web:\n", "    \"web@file\":\n"),
        "invalid_name",
    );
    refused(
        &GOOD.replace("    dns:\n", "    pg:\n"),
        "duplicate_service",
    );
}
