//! Per-Service options read from annotations under [`PREFIX`].
//!
//! Only options that Traefik v2.11 and v3 both accept are offered, so a cluster document stays
//! valid whichever version the syncer targets. A malformed value never fails anything: the
//! option is ignored and a [`Problem`] says which annotation and why, for the caller to log.
//!
//! | annotation | value |
//! |---|---|
//! | `scheme` | `http`, `https` or `h2c`, for every HTTP port |
//! | `scheme.<port>` | the same, for one port (name or number); wins over `scheme` |
//! | `tcp-ports` | comma list of port names/numbers published as `tcp.services` |
//! | `exclude-ports` | comma list of port names/numbers not published at all |
//! | `pass-host-header` | `true` or `false` |
//! | `sticky-cookie` | `true` (Traefik names the cookie), `false`, or a cookie name |
//! | `sticky-cookie-secure`, `sticky-cookie-http-only` | `true` or `false` |
//! | `sticky-cookie-same-site` | `none`, `lax` or `strict` |
//! | `health-check-path` | an absolute path, e.g. `/healthz`; turns the health check on |
//! | `health-check-interval`, `health-check-timeout` | durations, e.g. `10s`, `500ms` |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ksd_shared::backend::{HealthCheck, HttpOptions, SameSite, Scheme, StickyCookie};
use ksd_shared::traefik::{CookieName, HealthPath, ProbeDuration};

/// Prefix of every annotation the exporter reads.
pub const PREFIX: &str = "k8s-service-discovery/";

const SCHEME: &str = "scheme";
const SCHEME_PORT: &str = "scheme.";
const TCP_PORTS: &str = "tcp-ports";
const EXCLUDE_PORTS: &str = "exclude-ports";
const PASS_HOST_HEADER: &str = "pass-host-header";
const STICKY_COOKIE: &str = "sticky-cookie";
const STICKY_COOKIE_SECURE: &str = "sticky-cookie-secure";
const STICKY_COOKIE_HTTP_ONLY: &str = "sticky-cookie-http-only";
const STICKY_COOKIE_SAME_SITE: &str = "sticky-cookie-same-site";
const HEALTH_CHECK_PATH: &str = "health-check-path";
const HEALTH_CHECK_INTERVAL: &str = "health-check-interval";
const HEALTH_CHECK_TIMEOUT: &str = "health-check-timeout";

/// What a Service's annotations ask for. Port references are kept as written (a port name or
/// number); the index resolves them against the Service's ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Scheme for every HTTP port of the Service.
    pub scheme: Option<Scheme>,
    /// Scheme for one port, by port name or number.
    pub port_schemes: BTreeMap<String, Scheme>,
    /// Ports published as TCP services.
    pub tcp_ports: BTreeSet<String>,
    /// Ports not published.
    pub exclude_ports: BTreeSet<String>,
    /// Load-balancer options of every HTTP port.
    pub http: HttpOptions,
}

/// An annotation that was ignored, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Full annotation key, e.g. `k8s-service-discovery/pass-host-header`.
    pub annotation: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation {} ignored: {}", self.annotation, self.reason)
    }
}

/// Reads the exporter's annotations out of a Service's annotations (other keys are skipped).
/// Every malformed or unknown annotation under [`PREFIX`] yields a [`Problem`]; the rest still
/// applies.
pub fn parse<'a, I>(annotations: I) -> (ServiceOptions, Vec<Problem>)
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut reading = Reading::default();
    for (key, raw) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        if let Err(reason) = reading.read(key, name, raw.trim()) {
            reading.problem(key, reason);
        }
    }
    reading.finish()
}

/// The annotations read so far; options that need another annotation (a cookie's attributes,
/// a health check's timings) wait for the end.
#[derive(Default)]
struct Reading<'a> {
    options: ServiceOptions,
    problems: Vec<Problem>,
    sticky: Option<StickyCookie>,
    sticky_attributes: Vec<(&'a str, StickyAttribute)>,
    health_path: Option<HealthPath>,
    health_interval: Option<(&'a str, ProbeDuration)>,
    health_timeout: Option<(&'a str, ProbeDuration)>,
}

impl<'a> Reading<'a> {
    fn problem(&mut self, key: &str, reason: String) {
        self.problems.push(Problem {
            annotation: key.to_owned(),
            reason,
        });
    }

    /// One annotation: `key` in full, `name` without the prefix.
    fn read(&mut self, key: &'a str, name: &str, value: &str) -> Result<(), String> {
        let options = &mut self.options;
        match name {
            SCHEME => options.scheme = Some(parse_scheme(value)?),
            TCP_PORTS => options.tcp_ports = parse_port_list(value)?,
            EXCLUDE_PORTS => options.exclude_ports = parse_port_list(value)?,
            PASS_HOST_HEADER => options.http.pass_host_header = Some(parse_bool(value)?),
            STICKY_COOKIE => self.sticky = parse_sticky(value)?,
            STICKY_COOKIE_SECURE => {
                let on = parse_bool(value)?;
                self.sticky_attributes
                    .push((key, StickyAttribute::Secure(on)));
            }
            STICKY_COOKIE_HTTP_ONLY => {
                let on = parse_bool(value)?;
                self.sticky_attributes
                    .push((key, StickyAttribute::HttpOnly(on)));
            }
            STICKY_COOKIE_SAME_SITE => {
                let same_site = parse_same_site(value)?;
                self.sticky_attributes
                    .push((key, StickyAttribute::SameSite(same_site)));
            }
            HEALTH_CHECK_PATH => self.health_path = Some(parse_path(value)?),
            HEALTH_CHECK_INTERVAL => {
                self.health_interval = Some((key, parse_probe_duration(value)?))
            }
            HEALTH_CHECK_TIMEOUT => self.health_timeout = Some((key, parse_probe_duration(value)?)),
            _ => match name.strip_prefix(SCHEME_PORT) {
                Some(port) if is_port_reference(port) => {
                    options
                        .port_schemes
                        .insert(port.to_owned(), parse_scheme(value)?);
                }
                Some(port) => return Err(format!("{port:?} is not a port name or number")),
                None => {
                    return Err(format!(
                        "unknown annotation (known: {})",
                        known_annotations().join(", ")
                    ));
                }
            },
        }
        Ok(())
    }

    /// The options, with the cookie's attributes and the health check's timings applied where
    /// the annotation they need is set (a problem each where it is not), and the problems sorted.
    fn finish(mut self) -> (ServiceOptions, Vec<Problem>) {
        match self.sticky.as_mut() {
            Some(cookie) => {
                for (_, attribute) in std::mem::take(&mut self.sticky_attributes) {
                    match attribute {
                        StickyAttribute::Secure(on) => cookie.secure = Some(on),
                        StickyAttribute::HttpOnly(on) => cookie.http_only = Some(on),
                        StickyAttribute::SameSite(s) => cookie.same_site = Some(s),
                    }
                }
            }
            None => {
                for (key, _) in std::mem::take(&mut self.sticky_attributes) {
                    self.problem(key, format!("needs {PREFIX}{STICKY_COOKIE} to be set"));
                }
            }
        }
        self.options.http.sticky_cookie = self.sticky.take();

        let (interval, timeout) = (self.health_interval.take(), self.health_timeout.take());
        match self.health_path.take() {
            Some(path) => {
                self.options.http.health_check = Some(HealthCheck {
                    path,
                    interval: interval.map(|(_, d)| d),
                    timeout: timeout.map(|(_, d)| d),
                });
            }
            None => {
                for (key, _) in interval.into_iter().chain(timeout) {
                    self.problem(key, format!("needs {PREFIX}{HEALTH_CHECK_PATH} to be set"));
                }
            }
        }

        self.problems.sort();
        (self.options, self.problems)
    }
}

/// Every annotation name the exporter knows, without the prefix (`scheme.<port>` as a pattern).
pub fn known_annotations() -> Vec<&'static str> {
    vec![
        SCHEME,
        "scheme.<port>",
        TCP_PORTS,
        EXCLUDE_PORTS,
        PASS_HOST_HEADER,
        STICKY_COOKIE,
        STICKY_COOKIE_SECURE,
        STICKY_COOKIE_HTTP_ONLY,
        STICKY_COOKIE_SAME_SITE,
        HEALTH_CHECK_PATH,
        HEALTH_CHECK_INTERVAL,
        HEALTH_CHECK_TIMEOUT,
    ]
}

enum StickyAttribute {
    Secure(bool),
    HttpOnly(bool),
    SameSite(SameSite),
}

fn parse_scheme(value: &str) -> Result<Scheme, String> {
    match value.to_ascii_lowercase().as_str() {
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        "h2c" => Ok(Scheme::H2c),
        _ => Err(format!("{value:?} is not a scheme (http, https, h2c)")),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!("{value:?} is not true or false"))
    }
}

fn parse_same_site(value: &str) -> Result<SameSite, String> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Ok(SameSite::None),
        "lax" => Ok(SameSite::Lax),
        "strict" => Ok(SameSite::Strict),
        _ => Err(format!("{value:?} is not none, lax or strict")),
    }
}

/// `true`: a cookie Traefik names itself; `false`: no stickiness; else the cookie's name, with
/// the syncer's own rule ([`CookieName`]), so that a name it would refuse never gets the whole
/// cluster document rejected there.
fn parse_sticky(value: &str) -> Result<Option<StickyCookie>, String> {
    if value.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    if value.eq_ignore_ascii_case("true") {
        return Ok(Some(StickyCookie::default()));
    }
    if value.is_empty() {
        return Err("empty value (true, false or a cookie name)".to_owned());
    }
    let name = value.parse::<CookieName>().map_err(|e| e.to_string())?;
    Ok(Some(StickyCookie {
        name: Some(name),
        ..StickyCookie::default()
    }))
}

/// An absolute path of URL path and query characters ([`HealthPath`]).
fn parse_path(value: &str) -> Result<HealthPath, String> {
    value.parse::<HealthPath>().map_err(|e| e.to_string())
}

/// Go's duration grammar within the health-check bounds ([`ProbeDuration`]).
fn parse_probe_duration(value: &str) -> Result<ProbeDuration, String> {
    ProbeDuration::parse(value).map_err(|e| e.to_string())
}

fn parse_port_list(value: &str) -> Result<BTreeSet<String>, String> {
    let mut ports = BTreeSet::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !is_port_reference(item) {
            return Err(format!("{item:?} is not a port name or number"));
        }
        ports.insert(item.to_owned());
    }
    Ok(ports)
}

/// A Service port number (1-65535) or a port name (lowercase letters, digits and `-`, as
/// Kubernetes requires of port names).
pub fn is_port_reference(s: &str) -> bool {
    if s.is_empty() || s.len() > 63 {
        return false;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u16>().is_ok_and(|n| n > 0);
    }
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> (ServiceOptions, Vec<Problem>) {
        parse(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    fn key(name: &str) -> String {
        format!("{PREFIX}{name}")
    }

    #[test]
    fn no_annotations_means_defaults() {
        let (options, problems) = parse_pairs(&[]);
        assert_eq!(options, ServiceOptions::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn foreign_annotations_are_skipped() {
        let (options, problems) = parse_pairs(&[
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("k8s-service-discovery", "true"),
            ("other/scheme", "https"),
        ]);
        assert_eq!(options, ServiceOptions::default());
        assert!(problems.is_empty());
    }

    #[test]
    fn every_option_parses() {
        let (options, problems) = parse_pairs(&[
            (&key("scheme"), "HTTPS"),
            (&key("scheme.grpc"), "h2c"),
            (&key("scheme.8080"), "http"),
            (&key("tcp-ports"), "postgres, 6379"),
            (&key("exclude-ports"), "metrics"),
            (&key("pass-host-header"), "false"),
            (&key("sticky-cookie"), "route"),
            (&key("sticky-cookie-secure"), "true"),
            (&key("sticky-cookie-http-only"), "TRUE"),
            (&key("sticky-cookie-same-site"), "Lax"),
            (&key("health-check-path"), "/healthz"),
            (&key("health-check-interval"), "10s"),
            (&key("health-check-timeout"), "500ms"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(options.scheme, Some(Scheme::Https));
        assert_eq!(options.port_schemes.get("grpc"), Some(&Scheme::H2c));
        assert_eq!(options.port_schemes.get("8080"), Some(&Scheme::Http));
        assert_eq!(
            options.tcp_ports,
            BTreeSet::from(["postgres".to_owned(), "6379".to_owned()])
        );
        assert_eq!(
            options.exclude_ports,
            BTreeSet::from(["metrics".to_owned()])
        );
        assert_eq!(options.http.pass_host_header, Some(false));
        assert_eq!(
            options.http.sticky_cookie,
            Some(StickyCookie {
                name: Some("route".parse().unwrap()),
                secure: Some(true),
                http_only: Some(true),
                same_site: Some(SameSite::Lax),
            })
        );
        assert_eq!(
            options.http.health_check,
            Some(HealthCheck {
                path: "/healthz".parse().unwrap(),
                interval: Some("10s".parse().unwrap()),
                timeout: Some("500ms".parse().unwrap()),
            })
        );
    }

    #[test]
    fn sticky_cookie_true_lets_traefik_name_it() {
        let (options, problems) = parse_pairs(&[(&key("sticky-cookie"), "true")]);
        assert!(problems.is_empty());
        assert_eq!(options.http.sticky_cookie, Some(StickyCookie::default()));
    }

    #[test]
    fn sticky_cookie_false_turns_it_off_and_orphans_attributes() {
        let (options, problems) = parse_pairs(&[
            (&key("sticky-cookie"), "false"),
            (&key("sticky-cookie-secure"), "true"),
        ]);
        assert_eq!(options.http.sticky_cookie, None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].annotation, key("sticky-cookie-secure"));
        assert!(problems[0].reason.contains("sticky-cookie"));
    }

    #[test]
    fn bad_cookie_names_are_refused() {
        for bad in ["a b", "a;b", "{{x}}", "a=b", "é", "a.b", ""] {
            let (options, problems) = parse_pairs(&[(&key("sticky-cookie"), bad)]);
            assert_eq!(options.http.sticky_cookie, None, "{bad:?}");
            assert_eq!(problems.len(), 1, "{bad:?}");
            assert_eq!(problems[0].annotation, key("sticky-cookie"));
        }
    }

    #[test]
    fn malformed_values_are_reported_and_ignored() {
        let cases = [
            ("scheme", "ftp"),
            ("scheme.web", "tcp"),
            ("pass-host-header", "yes"),
            ("sticky-cookie-same-site", "sometimes"),
            ("health-check-path", "healthz"),
            ("health-check-path", "/a b"),
            ("health-check-path", "/{{.Env}}"),
            ("health-check-interval", "10"),
            ("health-check-timeout", "0s"),
            ("tcp-ports", "db, Bad_Name"),
            ("exclude-ports", "70000"),
            ("scheme.Not_A_Port", "https"),
            ("schema", "https"),
        ];
        for (name, value) in cases {
            let annotation = key(name);
            let mut pairs = vec![(annotation.as_str(), value)];
            // Give the health-check durations their path so only the bad value is reported.
            let path = key("health-check-path");
            if name.starts_with("health-check-") && name != "health-check-path" {
                pairs.push((path.as_str(), "/ok"));
            }
            let (options, problems) = parse(pairs);
            assert_eq!(problems.len(), 1, "{name}={value}: {problems:?}");
            assert_eq!(problems[0].annotation, annotation, "{name}={value}");
            assert!(!problems[0].reason.is_empty());
            assert_eq!(options.scheme, None);
            assert!(options.port_schemes.is_empty());
            assert!(options.tcp_ports.is_empty());
            assert!(options.exclude_ports.is_empty());
            assert_eq!(options.http.pass_host_header, None);
            assert_eq!(options.http.sticky_cookie, None);
        }
    }

    #[test]
    fn one_bad_annotation_does_not_spoil_the_others() {
        let (options, problems) = parse_pairs(&[
            (&key("scheme"), "gopher"),
            (&key("pass-host-header"), "true"),
        ]);
        assert_eq!(options.scheme, None);
        assert_eq!(options.http.pass_host_header, Some(true));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("gopher"));
    }

    #[test]
    fn health_check_durations_need_a_path() {
        let (options, problems) = parse_pairs(&[
            (&key("health-check-interval"), "5s"),
            (&key("health-check-timeout"), "1s"),
        ]);
        assert_eq!(options.http.health_check, None);
        assert_eq!(problems.len(), 2);
        assert!(
            problems
                .iter()
                .all(|p| p.reason.contains("health-check-path"))
        );
    }

    #[test]
    fn health_check_path_alone_is_enough() {
        let (options, problems) = parse_pairs(&[(&key("health-check-path"), " /ready ")]);
        assert!(problems.is_empty());
        assert_eq!(
            options.http.health_check,
            Some(HealthCheck {
                path: "/ready".parse().unwrap(),
                interval: None,
                timeout: None,
            })
        );
    }

    #[test]
    fn empty_port_lists_are_empty() {
        let (options, problems) = parse_pairs(&[(&key("tcp-ports"), " , ")]);
        assert!(problems.is_empty());
        assert!(options.tcp_ports.is_empty());
    }

    #[test]
    fn port_references() {
        for good in ["http", "grpc-web", "1", "65535", "p8080"] {
            assert!(is_port_reference(good), "{good}");
        }
        for bad in ["", "0", "65536", "-x", "x-", "Web", "a_b", "a.b"] {
            assert!(!is_port_reference(bad), "{bad}");
        }
    }

    #[test]
    fn problems_name_the_annotation_in_their_message() {
        let (_, problems) = parse_pairs(&[(&key("pass-host-header"), "maybe")]);
        let text = problems[0].to_string();
        assert!(
            text.contains("k8s-service-discovery/pass-host-header"),
            "{text}"
        );
        assert!(text.contains("maybe"), "{text}");
    }
}
