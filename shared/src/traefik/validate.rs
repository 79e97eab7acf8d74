//! Content rules for a cluster document: what a well-formed document may say.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Document, DocumentError, HttpLoadBalancer, Section};
use crate::names::{NameError, shorten, validate_pool_or_service_name, validate_service_name};

/// Checks the rules every cluster document follows, whoever wrote it:
/// - service names pass [`validate_service_name`], and a name appears in one section only;
/// - an HTTP server `url` is exactly `scheme://IP:port` (scheme `http`, `https` or `h2c`, an IP
///   literal with IPv6 bracketed, port 1-65535; no hostname, userinfo or path);
/// - a TCP/UDP server `address` is exactly `IP:port` or `[IPv6]:port`;
/// - a load balancer lists each server once;
/// - a health-check path starts with `/` and uses URL path/query characters, its durations are
///   positive; a sticky cookie name is `[A-Za-z0-9_-]`.
pub fn validate(doc: &Document) -> Result<(), DocumentError> {
    validate_with(doc, validate_service_name)
}

/// [`validate`] for a merged document: names may also be per-cluster pool names
/// (`<service>.<cluster>`).
pub fn validate_merged(doc: &Document) -> Result<(), DocumentError> {
    validate_with(doc, validate_pool_or_service_name)
}

fn validate_with(
    doc: &Document,
    name_rule: fn(&str) -> Result<(), NameError>,
) -> Result<(), DocumentError> {
    let claim = |name: &str, section: Section| {
        name_rule(name).map_err(|source| DocumentError::InvalidName {
            section: section.as_str(),
            name: shorten(name),
            source,
        })
    };

    if let Some(http) = &doc.http {
        for (name, service) in &http.services {
            claim(name, Section::Http)?;
            let lb = &service.load_balancer;
            check_servers(name, lb.servers.iter().map(|s| s.url.as_str()), check_url)?;
            check_http_options(name, lb)?;
        }
    }
    if let Some(tcp) = &doc.tcp {
        for (name, service) in &tcp.services {
            claim(name, Section::Tcp)?;
            let servers = service.load_balancer.servers.iter();
            check_servers(name, servers.map(|s| s.address.as_str()), check_address)?;
        }
    }
    if let Some(udp) = &doc.udp {
        for (name, service) in &udp.services {
            claim(name, Section::Udp)?;
            let servers = service.load_balancer.servers.iter();
            check_servers(name, servers.map(|s| s.address.as_str()), check_address)?;
        }
    }

    // Traefik keeps http, tcp and udp services apart, but reports and `main.yml` authors read
    // names across sections: one name, one service. Looked up in the other sections' maps, so
    // the common single-section document costs nothing here.
    let http = doc.http.as_ref().map(|s| &s.services);
    let tcp = doc.tcp.as_ref().map(|s| &s.services);
    let udp = doc.udp.as_ref().map(|s| &s.services);
    let duplicate = |name: &str, first: Section, second: Section| DocumentError::DuplicateService {
        name: shorten(name),
        first: first.as_str(),
        second: second.as_str(),
    };
    for name in tcp.iter().flat_map(|services| services.keys()) {
        if http.is_some_and(|http| http.contains_key(name)) {
            return Err(duplicate(name, Section::Http, Section::Tcp));
        }
    }
    for name in udp.iter().flat_map(|services| services.keys()) {
        if http.is_some_and(|http| http.contains_key(name)) {
            return Err(duplicate(name, Section::Http, Section::Udp));
        }
        if tcp.is_some_and(|tcp| tcp.contains_key(name)) {
            return Err(duplicate(name, Section::Tcp, Section::Udp));
        }
    }
    Ok(())
}

fn check_servers<'a>(
    service: &str,
    values: impl Iterator<Item = &'a str>,
    check: fn(&str) -> Result<(), &'static str>,
) -> Result<(), DocumentError> {
    let mut seen = BTreeSet::new();
    for value in values {
        let invalid = |reason| DocumentError::InvalidServer {
            service: shorten(service),
            value: shorten(value),
            reason,
        };
        check(value).map_err(invalid)?;
        if !seen.insert(value) {
            return Err(invalid("it is listed twice"));
        }
    }
    Ok(())
}

/// `scheme://IP:port` and nothing else.
pub(crate) fn check_url(url: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("a server url must be scheme://IP:port");
    };
    match scheme {
        "http" | "https" | "h2c" => check_address(rest),
        _ => Err("the scheme must be http, https or h2c (lowercase)"),
    }
}

/// `IPv4:port` or `[IPv6]:port` and nothing else.
pub(crate) fn check_address(address: &str) -> Result<(), &'static str> {
    if let Some(rest) = address.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once("]:") else {
            return Err("a bracketed IPv6 address must be [IP]:port");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err("the host must be an IP address literal (no hostnames, no zone)");
        }
        return check_port(port);
    }
    let Some((ip, port)) = address.rsplit_once(':') else {
        return Err("the port is missing: expected IP:port");
    };
    if ip.parse::<Ipv4Addr>().is_ok() {
        return check_port(port);
    }
    if ip.parse::<Ipv6Addr>().is_ok() || address.parse::<Ipv6Addr>().is_ok() {
        return Err("an IPv6 address must be bracketed: [IP]:port");
    }
    Err("the host must be an IP address literal (no hostnames, userinfo or paths)")
}

fn check_port(port: &str) -> Result<(), &'static str> {
    const REASON: &str = "the port must be a number 1-65535 with nothing after it (no path)";
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.starts_with('0') {
        return Err(REASON);
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(REASON),
    }
}

fn check_http_options(service: &str, lb: &HttpLoadBalancer) -> Result<(), DocumentError> {
    let invalid =
        |field: &'static str, value: &str, reason: &'static str| DocumentError::InvalidOption {
            service: shorten(service),
            field,
            value: shorten(value),
            reason,
        };
    if let Some(name) = lb.sticky.as_ref().and_then(|s| s.cookie.name.as_deref()) {
        let valid = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(invalid(
                "sticky.cookie.name",
                name,
                "a cookie name is 1-256 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
    }
    if let Some(health_check) = &lb.health_check {
        let path = health_check.path.as_str();
        if !path.starts_with('/') {
            return Err(invalid(
                "healthCheck.path",
                path,
                "the path must start with '/'",
            ));
        }
        if path.len() > 1024 || !path.bytes().all(is_path_byte) {
            return Err(invalid(
                "healthCheck.path",
                path,
                "the path may hold only URL path and query characters (percent-encode others), \
                 at most 1024",
            ));
        }
        for (field, duration) in [
            ("healthCheck.interval", health_check.interval),
            ("healthCheck.timeout", health_check.timeout),
        ] {
            if duration.is_some_and(|d| d.is_zero()) {
                return Err(invalid(
                    field,
                    "0s",
                    "the duration must be greater than zero",
                ));
            }
        }
    }
    Ok(())
}

/// RFC 3986 unreserved, sub-delims, `:`, `@`, `/`, `?` and `%`: no spaces, quotes or braces.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::backend::{HealthCheck, StickyCookie};
    use crate::traefik::{
        AddressLoadBalancer, AddressServer, HttpSection, HttpServer, HttpService, Sticky,
        TcpSection, TcpService, UdpSection, UdpService,
    };

    fn http_doc(name: &str, lb: HttpLoadBalancer) -> Document {
        let mut services = BTreeMap::new();
        services.insert(name.to_owned(), HttpService { load_balancer: lb });
        Document {
            http: Some(HttpSection { services }),
            ..Document::default()
        }
    }

    fn lb(urls: &[&str]) -> HttpLoadBalancer {
        HttpLoadBalancer {
            servers: urls
                .iter()
                .map(|u| HttpServer {
                    url: (*u).to_owned(),
                })
                .collect(),
            ..HttpLoadBalancer::default()
        }
    }

    #[test]
    fn server_urls() {
        for good in [
            "http://10.0.0.1:80",
            "https://10.0.0.1:443",
            "h2c://10.0.0.1:65535",
            "http://[fd00::1]:8080",
            "http://[::ffff:10.0.0.1]:8080",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("TCP://10.0.0.1:80", "scheme"),
            ("HTTP://10.0.0.1:80", "scheme"),
            ("tcp://10.0.0.1:80", "scheme"),
            ("10.0.0.1:80", "scheme://"),
            ("http://fd00::1:8080", "bracketed"),
            ("http://[fd00::1]", "[IP]:port"),
            ("http://[fd00::1%eth0]:80", "IP address literal"),
            ("http://web.default:80", "IP address literal"),
            ("http://user@10.0.0.1:80", "IP address literal"),
            ("http://10.0.0.1", "port is missing"),
            ("http://10.0.0.1:80/path", "port"),
            ("http://10.0.0.1:0", "port"),
            ("http://10.0.0.1:65536", "port"),
            ("http://10.0.0.1:080", "port"),
            ("http://10.0.0.1:+80", "port"),
            ("http://010.0.0.1:80", "IP address literal"),
            ("http://10.0.0.1:80 ", "port"),
            ("http://:80", "IP address literal"),
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn server_addresses() {
        assert_eq!(check_address("10.0.0.1:5432"), Ok(()));
        assert_eq!(check_address("[fd00::1]:5432"), Ok(()));
        assert!(
            check_address("fd00::1:5432")
                .unwrap_err()
                .contains("bracketed")
        );
        assert!(check_address("fd00::1").unwrap_err().contains("bracketed"));
        assert!(check_address("db:5432").is_err());
        assert!(check_address("tcp://10.0.0.1:5432").is_err());
    }

    #[test]
    fn valid_documents_pass() {
        let mut web = lb(&["http://10.0.0.1:80", "https://[fd00::2]:443"]);
        web.sticky = Some(Sticky {
            cookie: StickyCookie {
                name: Some("srv_id-1".to_owned()),
                ..StickyCookie::default()
            },
        });
        web.health_check = Some(HealthCheck {
            path: "/health?full=1&x=%20".to_owned(),
            interval: Some(Duration::from_secs(5)),
            timeout: None,
        });
        validate(&http_doc("default-web-http", web)).unwrap();
        validate(&http_doc("no-servers", lb(&[]))).unwrap();
        validate(&Document::default()).unwrap();
    }

    #[test]
    fn rule_violations_name_service_field_and_value() {
        let err = validate(&http_doc("a.b", lb(&[]))).unwrap_err();
        assert_eq!(err.reason(), "invalid_name");
        assert!(err.to_string().contains("\"a.b\""), "{err}");

        let err = validate(&http_doc("web", lb(&["http://10.0.0.1:80/x"]))).unwrap_err();
        assert_eq!(err.reason(), "invalid_server");
        let message = err.to_string();
        assert!(
            message.contains("\"web\"") && message.contains("http://10.0.0.1:80/x"),
            "{message}"
        );

        let err = validate(&http_doc(
            "web",
            lb(&["http://10.0.0.1:80", "http://10.0.0.1:80"]),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");

        let mut bad_cookie = lb(&[]);
        bad_cookie.sticky = Some(Sticky {
            cookie: StickyCookie {
                name: Some("a b".to_owned()),
                ..StickyCookie::default()
            },
        });
        let err = validate(&http_doc("web", bad_cookie)).unwrap_err();
        assert_eq!(err.reason(), "invalid_option");
        assert!(err.to_string().contains("sticky.cookie.name"), "{err}");

        for (path, interval) in [
            ("health", None),
            ("/a b", None),
            ("/{x}", None),
            ("/ok", Some(Duration::ZERO)),
        ] {
            let mut bad = lb(&[]);
            bad.health_check = Some(HealthCheck {
                path: path.to_owned(),
                interval,
                timeout: None,
            });
            let err = validate(&http_doc("web", bad)).unwrap_err();
            assert_eq!(err.reason(), "invalid_option", "{path}");
            assert!(err.to_string().contains("healthCheck"), "{err}");
        }
    }

    #[test]
    fn tcp_and_udp_addresses_are_checked() {
        let mut tcp = BTreeMap::new();
        tcp.insert(
            "db".to_owned(),
            TcpService {
                load_balancer: AddressLoadBalancer {
                    servers: vec![AddressServer {
                        address: "fd00::1:5432".to_owned(),
                    }],
                },
            },
        );
        let err = validate(&Document {
            tcp: Some(TcpSection { services: tcp }),
            ..Document::default()
        })
        .unwrap_err();
        assert_eq!(err.reason(), "invalid_server");
        assert!(err.to_string().contains("bracketed"), "{err}");
    }

    #[test]
    fn a_name_lives_in_one_section() {
        let mut udp = BTreeMap::new();
        udp.insert("dns".to_owned(), UdpService::default());
        let mut tcp = BTreeMap::new();
        tcp.insert("dns".to_owned(), TcpService::default());
        let err = validate(&Document {
            http: None,
            tcp: Some(TcpSection { services: tcp }),
            udp: Some(UdpSection { services: udp }),
        })
        .unwrap_err();
        assert_eq!(err.reason(), "duplicate_service");
        let message = err.to_string();
        assert!(
            message.contains("\"dns\"") && message.contains("tcp") && message.contains("udp"),
            "{message}"
        );
    }
}
