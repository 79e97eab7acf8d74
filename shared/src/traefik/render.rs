//! The YAML emitter. Hand-written so that the bytes are a stable contract: the same document
//! always gives the same bytes, whatever serializer version is linked, and the output avoids
//! every construct Traefik's file provider trips over (`{}`, `null`, `{{`, unitless durations).

use std::fmt::Write as _;

use super::{
    Document, HealthCheck, HttpLoadBalancer, LoadBalancer, Protocol, SameSite, Section,
    SectionVisitor, Service, StickyCookie, TraefikVersion,
};

/// A rendered document and its [`crate::content_hash`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub hash: String,
}

impl Rendered {
    pub(crate) fn new(text: String) -> Rendered {
        let bytes = text.into_bytes();
        let hash = crate::content_hash(&bytes);
        Rendered { bytes, hash }
    }
}

/// Comment written when a document holds no services. Traefik reads a comment-only file as an
/// empty configuration, which is what an exporter with nothing to publish means.
pub(crate) const NO_SERVICES_COMMENT: &str = "No services.";

/// Renders `doc` as YAML for Traefik's file provider.
///
/// - `header` lines come first, each as a `# ` comment (`{{` in them is broken up, line breaks
///   start a new comment line);
/// - services are sorted by name, servers sorted and de-duplicated;
/// - names, URLs, addresses and every string value are double-quoted scalars, booleans are
///   `true`/`false`, durations carry units (`"10s"`);
/// - a load balancer without servers is `servers: []` (Traefik answers 503 for it);
/// - a document without services is only comments.
///
/// `render` expects a document that passed [`super::validate`] (or the merge of such
/// documents); it never fails, and even for other input it never writes `{{` or `{}`.
pub fn render(doc: &Document, version: TraefikVersion, header: &str) -> Rendered {
    let mut out = String::with_capacity(estimate_len(doc) + header.len() + 64);
    push_header(&mut out, header);
    if doc.is_empty() {
        push_no_services(&mut out);
        return Rendered::new(out);
    }
    let mut emitter = Emitter { out, version };
    doc.visit(&mut emitter);
    Rendered::new(emitter.out)
}

struct Emitter {
    out: String,
    version: TraefikVersion,
}

impl SectionVisitor for Emitter {
    fn visit<L: LoadBalancer>(&mut self, protocol: Protocol, section: &Section<L>) {
        if section.services.is_empty() {
            return;
        }
        let out = &mut self.out;
        push_section_head(out, protocol);
        for (name, service) in &section.services {
            render_service(out, name, service, self.version);
        }
    }
}

/// `<protocol>:\n  services:\n`, the line pair that opens a section.
pub(crate) fn push_section_head(out: &mut String, protocol: Protocol) {
    out.push_str(protocol.as_str());
    out.push_str(":\n  services:\n");
}

/// Appends one service's block, `    "<name>":\n      loadBalancer:\n...`, exactly as
/// [`render`] writes it inside its section. A rendered file is the header, then per section its
/// head and its services' blocks in name order, which is what [`super::Blocks`] assembles.
pub fn render_service<L: LoadBalancer>(
    out: &mut String,
    name: &str,
    service: &Service<L>,
    version: TraefikVersion,
) {
    out.push_str("    ");
    push_quoted(out, name);
    out.push_str(":\n      loadBalancer:\n");
    push_servers(out, L::SERVER_FIELD, service.load_balancer.servers());
    if let Some(http) = service.load_balancer.http_options() {
        push_http_options(out, http, version);
    }
}

/// The header comment lines [`render`] writes first.
pub(crate) fn push_header(out: &mut String, header: &str) {
    for line in header.lines() {
        push_comment(out, line);
    }
}

/// The comment a document without services consists of (after the header).
pub(crate) fn push_no_services(out: &mut String) {
    push_comment(out, NO_SERVICES_COMMENT);
}

/// A generous guess at the output size, so a 100,000-service merged file is written without
/// repeated reallocation.
fn estimate_len(doc: &Document) -> usize {
    struct Estimate(usize);
    impl SectionVisitor for Estimate {
        fn visit<L: LoadBalancer>(&mut self, _: Protocol, section: &Section<L>) {
            for (name, service) in &section.services {
                self.0 += name.len() + 224 + service.load_balancer.servers().len() * 64;
            }
        }
    }
    let mut estimate = Estimate(0);
    doc.visit(&mut estimate);
    estimate.0
}

fn push_http_options(out: &mut String, lb: &HttpLoadBalancer, version: TraefikVersion) {
    if let Some(pass_host_header) = lb.pass_host_header {
        push_bool(out, 8, "passHostHeader", pass_host_header);
    }
    if let Some(sticky) = &lb.sticky {
        out.push_str("        sticky:\n          cookie:\n");
        push_cookie(out, &sticky.cookie);
    }
    if let Some(health_check) = &lb.health_check {
        push_health_check(out, health_check);
    }

    // The one gate for version-specific output. Every option the model carries exists in both
    // Traefik v2.11 and v3, so both versions get the same bytes today. A v3-only field (server
    // `weight`, `preservePath`, LB `strategy`, sticky `maxAge`/`path`/`domain`, ...) must be
    // written only in the V3 arm: v2 rejects it as an unknown field, which blocks the whole
    // directory. The match is exhaustive so that a new version has to be decided here.
    match version {
        TraefikVersion::V2 | TraefikVersion::V3 => {}
    }
}

/// `servers:` with one `- <field>: "<value>"` item per distinct server, sorted; `servers: []`
/// when there are none. Server values (IP literals, ports, schemes) never need escaping.
fn push_servers<S: Ord + std::fmt::Display>(out: &mut String, field: &str, servers: &[S]) {
    if servers.is_empty() {
        out.push_str("        servers: []\n");
        return;
    }
    let mut sorted: Vec<&S> = servers.iter().collect();
    if !servers.windows(2).all(|pair| pair[0] < pair[1]) {
        sorted.sort_unstable();
        sorted.dedup();
    }
    out.push_str("        servers:\n");
    for server in sorted {
        // Infallible: writing to a String.
        let _ = writeln!(out, "          - {field}: \"{server}\"");
    }
}

fn push_cookie(out: &mut String, cookie: &StickyCookie) {
    const INDENT: usize = 12;
    let mut wrote = false;
    if let Some(name) = &cookie.name {
        push_string(out, INDENT, "name", name);
        wrote = true;
    }
    if let Some(secure) = cookie.secure {
        push_bool(out, INDENT, "secure", secure);
        wrote = true;
    }
    if let Some(http_only) = cookie.http_only {
        push_bool(out, INDENT, "httpOnly", http_only);
        wrote = true;
    }
    if let Some(same_site) = cookie.same_site {
        let value = match same_site {
            SameSite::None => "none",
            SameSite::Lax => "lax",
            SameSite::Strict => "strict",
        };
        push_string(out, INDENT, "sameSite", value);
        wrote = true;
    }
    // NB: a cookie with every field at its default would be `cookie: {}`, which this emitter
    // never writes. `secure: false` is Traefik's default in v2 and v3, so writing it keeps
    // the meaning (sticky sessions with a default cookie) and the mapping non-empty.
    if !wrote {
        push_bool(out, INDENT, "secure", false);
    }
}

fn push_health_check(out: &mut String, health_check: &HealthCheck) {
    const INDENT: usize = 10;
    out.push_str("        healthCheck:\n");
    push_string(out, INDENT, "path", &health_check.path);
    // Durations are written as Go reads them, always with a unit.
    if let Some(interval) = health_check.interval {
        push_string(out, INDENT, "interval", &interval.to_string());
    }
    if let Some(timeout) = health_check.timeout {
        push_string(out, INDENT, "timeout", &timeout.to_string());
    }
}

fn push_key(out: &mut String, indent: usize, key: &str) {
    out.extend(std::iter::repeat_n(' ', indent));
    out.push_str(key);
    out.push_str(": ");
}

fn push_string(out: &mut String, indent: usize, key: &str, value: &str) {
    push_key(out, indent, key);
    push_quoted(out, value);
    out.push('\n');
}

fn push_bool(out: &mut String, indent: usize, key: &str, value: bool) {
    push_key(out, indent, key);
    out.push_str(if value { "true" } else { "false" });
    out.push('\n');
}

/// A YAML double-quoted scalar. Escapes what YAML requires (`"`, `\`, control and
/// non-printable characters, line separators) and also `{`, as `\x7B`: Traefik renders each
/// file as a Go template first, and an escaped brace can never form `{{` (or `{}`).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    // Names, URLs and addresses almost never need escaping: copy them whole.
    if value
        .bytes()
        .all(|b| (0x20..0x7F).contains(&b) && !matches!(b, b'"' | b'\\' | b'{'))
    {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '{' => out.push_str("\\x7B"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                // Infallible: writing to a String.
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Characters outside YAML's printable set, plus those some YAML readers take as line breaks
/// or byte-order marks.
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1F}'
        | '\u{7F}'..='\u{9F}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{FEFF}'
        | '\u{FFFE}'
        | '\u{FFFF}')
}

/// `# text`, with characters that would end the comment or open a Go template made harmless.
fn push_comment(out: &mut String, text: &str) {
    out.push('#');
    if !text.is_empty() {
        out.push(' ');
    }
    let mut previous = ' ';
    for c in text.trim_end().chars() {
        let c = if needs_escape(c) { ' ' } else { c };
        // `{{` opens a Go template and `{}` is what the output promises never to contain.
        if previous == '{' && (c == '{' || c == '}') {
            out.push(' ');
        }
        out.push(c);
        previous = c;
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::traefik::{
        AddressLoadBalancer, AddressServer, HttpSection, HttpServer, HttpService, ServiceName,
        Sticky, TcpSection, TcpService, UdpSection, UdpService,
    };

    fn name(text: &str) -> ServiceName {
        text.parse().unwrap()
    }

    fn text(doc: &Document, header: &str) -> String {
        String::from_utf8(render(doc, TraefikVersion::V3, header).bytes).unwrap()
    }

    fn http_service(urls: &[&str]) -> HttpService {
        HttpService {
            load_balancer: HttpLoadBalancer {
                servers: urls
                    .iter()
                    .map(|u| HttpServer {
                        url: u.parse().unwrap(),
                    })
                    .collect(),
                ..HttpLoadBalancer::default()
            },
        }
    }

    /// `web` with every load-balancer option set, and its servers out of order and repeated.
    fn web_with_every_option() -> HttpService {
        let mut web = http_service(&[
            "http://10.0.0.2:8080",
            "http://10.0.0.1:8080",
            "http://10.0.0.2:8080",
        ]);
        web.load_balancer.pass_host_header = Some(false);
        web.load_balancer.sticky = Some(Sticky {
            cookie: StickyCookie {
                name: Some("srv".parse().unwrap()),
                secure: Some(true),
                http_only: Some(true),
                same_site: Some(SameSite::Lax),
            },
        });
        web.load_balancer.health_check = Some(HealthCheck {
            path: "/healthz".parse().unwrap(),
            interval: Some("10s".parse().unwrap()),
            timeout: Some("2.5s".parse().unwrap()),
        });
        web
    }

    /// A document with all three sections: [`web_with_every_option`] and an empty HTTP
    /// service, an IPv6 TCP service and a UDP one.
    fn full_document() -> Document {
        let mut http = BTreeMap::new();
        http.insert(name("default-web-http"), web_with_every_option());
        http.insert(name("a-empty"), http_service(&[]));
        let mut tcp = BTreeMap::new();
        tcp.insert(
            name("db-pg-5432"),
            TcpService {
                load_balancer: AddressLoadBalancer {
                    servers: vec![AddressServer {
                        address: "[fd00::1]:5432".parse().unwrap(),
                    }],
                },
            },
        );
        let mut udp = BTreeMap::new();
        udp.insert(
            name("dns-53"),
            UdpService {
                load_balancer: AddressLoadBalancer {
                    servers: vec![AddressServer {
                        address: "10.0.0.9:53".parse().unwrap(),
                    }],
                },
            },
        );
        Document {
            http: Some(HttpSection { services: http }),
            tcp: Some(TcpSection { services: tcp }),
            udp: Some(UdpSection { services: udp }),
        }
    }

    /// [`full_document`] as rendered with a two-line header: services sorted, servers sorted
    /// and deduplicated, the duration in milliseconds.
    const FULL_DOCUMENT_TEXT: &str = r#"# Generated by ksd-exporter.
# Do not edit.
http:
  services:
    "a-empty":
      loadBalancer:
        servers: []
    "default-web-http":
      loadBalancer:
        servers:
          - url: "http://10.0.0.1:8080"
          - url: "http://10.0.0.2:8080"
        passHostHeader: false
        sticky:
          cookie:
            name: "srv"
            secure: true
            httpOnly: true
            sameSite: "lax"
        healthCheck:
          path: "/healthz"
          interval: "10s"
          timeout: "2500ms"
tcp:
  services:
    "db-pg-5432":
      loadBalancer:
        servers:
          - address: "[fd00::1]:5432"
udp:
  services:
    "dns-53":
      loadBalancer:
        servers:
          - address: "10.0.0.9:53"
"#;

    #[test]
    fn full_document_layout() {
        let doc = full_document();
        let expected = FULL_DOCUMENT_TEXT;
        assert_eq!(
            text(&doc, "Generated by ksd-exporter.\nDo not edit."),
            expected
        );
        let rendered = render(
            &doc,
            TraefikVersion::V3,
            "Generated by ksd-exporter.\nDo not edit.",
        );
        assert_eq!(rendered.hash, crate::content_hash(expected.as_bytes()));
    }

    #[test]
    fn versions_render_the_model_identically() {
        let mut services = BTreeMap::new();
        services.insert(name("web"), http_service(&["h2c://10.0.0.1:80"]));
        let doc = Document {
            http: Some(HttpSection { services }),
            ..Document::default()
        };
        assert_eq!(
            render(&doc, TraefikVersion::V2, "").bytes,
            render(&doc, TraefikVersion::V3, "").bytes
        );
    }

    #[test]
    fn empty_documents_are_comments_only() {
        let empty_sections = Document {
            http: Some(HttpSection::default()),
            tcp: Some(TcpSection::default()),
            udp: None,
        };
        for doc in [Document::default(), empty_sections] {
            let out = text(&doc, "cluster eu-1");
            assert_eq!(out, "# cluster eu-1\n# No services.\n");
        }
        assert_eq!(text(&Document::default(), ""), "# No services.\n");
    }

    #[test]
    fn a_cookie_with_only_defaults_is_not_an_empty_mapping() {
        let mut web = http_service(&["http://10.0.0.1:80"]);
        web.load_balancer.sticky = Some(Sticky::default());
        let mut services = BTreeMap::new();
        services.insert(name("web"), web);
        let out = text(
            &Document {
                http: Some(HttpSection { services }),
                ..Document::default()
            },
            "",
        );
        assert!(
            out.contains("        sticky:\n          cookie:\n            secure: false\n"),
            "{out}"
        );
        assert!(!out.contains("{}"));
    }

    #[test]
    fn strings_are_escaped_and_braces_never_pair() {
        let mut out = String::new();
        push_quoted(&mut out, "a\"b\\c{{d}}\n\u{1}\u{85}é");
        assert_eq!(out, r#""a\"b\\c\x7B\x7Bd}}\n\u0001\u0085é""#);
        let mut out = String::new();
        push_comment(&mut out, "x {{ y }} {} {{{\r\u{2028}end  ");
        assert_eq!(out, "# x { { y }} { } { { {  end\n");
    }
}
