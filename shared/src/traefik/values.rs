//! The typed values of a document: each is checked once, when it is built or deserialized,
//! and renders only to text Traefik's decoder reads back to the same value.

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backend::Scheme;
use crate::names::{
    ClusterName, NameError, pool_name, shorten, validate_pool_or_service_name,
    validate_service_name,
};

/// Why a value was refused; the text names the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {reason}")]
pub struct ValueError {
    pub value: String,
    pub reason: &'static str,
}

impl ValueError {
    fn new(value: &str, reason: &'static str) -> ValueError {
        ValueError {
            value: shorten(value),
            reason,
        }
    }
}

/// Deserializes a `FromStr` type from a string, refusing inside the visitor so that the
/// reader's error carries the value's own line.
pub struct FromStrVisitor<T>(std::marker::PhantomData<T>);

impl<T> FromStrVisitor<T> {
    pub fn new() -> Self {
        FromStrVisitor(std::marker::PhantomData)
    }
}

impl<T> Default for FromStrVisitor<T> {
    fn default() -> Self {
        FromStrVisitor::new()
    }
}

impl<T> serde::de::Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

/// Implements `Display` through `as_str`-like rendering, and serde through text.
macro_rules! text_serde {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(FromStrVisitor::<$type>::new())
            }
        }
    };
}

/// A server's IP address and port (1-65535): Traefik's TCP/UDP `address`, and the host part
/// of an HTTP server `url`. Written `IPv4:port` or `[IPv6]:port`, never with a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerAddress {
    ip: IpAddr,
    port: u16,
}

impl ServerAddress {
    /// Any IP and a port other than 0.
    pub fn new(ip: IpAddr, port: u16) -> Result<ServerAddress, ValueError> {
        if port == 0 {
            return Err(ValueError::new(
                &SocketAddr::new(ip, port).to_string(),
                PORT_REASON,
            ));
        }
        Ok(ServerAddress { ip, port })
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

const PORT_REASON: &str = "the port must be a number 1-65535 with nothing after it (no path)";

impl FromStr for ServerAddress {
    type Err = ValueError;

    /// `IPv4:port` or `[IPv6]:port` and nothing else: no hostname, zone, userinfo or path, no
    /// leading zeros or sign in the port.
    fn from_str(address: &str) -> Result<ServerAddress, ValueError> {
        let refuse = |reason| ValueError::new(address, reason);
        let (ip, port) = if let Some(rest) = address.strip_prefix('[') {
            let (ip, port) = rest
                .split_once("]:")
                .ok_or_else(|| refuse("a bracketed IPv6 address must be [IP]:port"))?;
            let ip = ip.parse::<Ipv6Addr>().map_err(|_| {
                refuse("the host must be an IP address literal (no hostnames, no zone)")
            })?;
            (IpAddr::V6(ip), port)
        } else {
            let (ip, port) = address
                .rsplit_once(':')
                .ok_or_else(|| refuse("the port is missing: expected IP:port"))?;
            match ip.parse::<Ipv4Addr>() {
                Ok(ip) => (IpAddr::V4(ip), port),
                Err(_) if ip.parse::<Ipv6Addr>().is_ok() || address.parse::<Ipv6Addr>().is_ok() => {
                    return Err(refuse("an IPv6 address must be bracketed: [IP]:port"));
                }
                Err(_) => {
                    return Err(refuse(
                        "the host must be an IP address literal (no hostnames, userinfo or paths)",
                    ));
                }
            }
        };
        let digits_only = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        match port.parse::<u16>() {
            Ok(port) if digits_only && port > 0 && !port_has_leading_zero(port, address) => {
                Ok(ServerAddress { ip, port })
            }
            _ => Err(refuse(PORT_REASON)),
        }
    }
}

/// True when the text's port (its last digits) is longer than the number: `080`.
fn port_has_leading_zero(port: u16, address: &str) -> bool {
    let written = address.len() - address.rfind(':').map_or(0, |i| i + 1);
    written != port.to_string().len()
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SocketAddr` writes IPv6 bracketed, and never a zone or flow label when there is none.
        self.socket_addr().fmt(f)
    }
}

text_serde!(ServerAddress);

impl FromStr for Scheme {
    type Err = ValueError;

    /// Exactly `http`, `https` or `h2c` (lowercase, as Traefik compares them).
    fn from_str(text: &str) -> Result<Scheme, ValueError> {
        match text {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            "h2c" => Ok(Scheme::H2c),
            _ => Err(ValueError::new(
                text,
                "the scheme must be http, https or h2c (lowercase)",
            )),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An HTTP server's `url`: `scheme://address`, nothing else (no path, query or userinfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerUrl {
    scheme: Scheme,
    address: ServerAddress,
}

impl ServerUrl {
    pub fn new(scheme: Scheme, address: ServerAddress) -> ServerUrl {
        ServerUrl { scheme, address }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn address(&self) -> ServerAddress {
        self.address
    }
}

impl FromStr for ServerUrl {
    type Err = ValueError;

    fn from_str(url: &str) -> Result<ServerUrl, ValueError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| ValueError::new(url, "a server url must be scheme://IP:port"))?;
        let scheme = scheme.parse::<Scheme>().map_err(|e| ValueError {
            value: shorten(url),
            reason: e.reason,
        })?;
        let address = rest.parse::<ServerAddress>().map_err(|e| ValueError {
            value: shorten(url),
            reason: e.reason,
        })?;
        Ok(ServerUrl { scheme, address })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.address)
    }
}

text_serde!(ServerUrl);

/// Compares with text Traefik reads (`"http://10.0.0.1:80"`): equal when the text is a valid
/// value and that value is this one. For tests and lookups.
macro_rules! eq_text {
    ($type:ty) => {
        impl PartialEq<str> for $type {
            fn eq(&self, other: &str) -> bool {
                other.parse::<$type>().is_ok_and(|value| value == *self)
            }
        }

        impl PartialEq<&str> for $type {
            fn eq(&self, other: &&str) -> bool {
                *self == **other
            }
        }
    };
}

eq_text!(ServerUrl);
eq_text!(ServerAddress);

/// A string newtype whose every value passed `$check`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(text: &str) -> Result<Self, ValueError> {
                let check: fn(&str) -> Result<(), &'static str> = $check;
                check(text).map_err(|reason| ValueError::new(text, reason))?;
                Ok($name(text.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        text_serde!($name);
    };
}

checked_string!(
    /// A sticky cookie's `name`: 1-256 characters of `[A-Za-z0-9_-]` (HTTP token characters
    /// no browser or proxy mangles).
    CookieName,
    |name| {
        let valid = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(())
        } else {
            Err("a cookie name is 1-256 characters of A-Z, a-z, 0-9, '-' and '_'")
        }
    }
);

checked_string!(
    /// A health-check `path`: starts with `/`, at most 1024 bytes of URL path and query
    /// characters (RFC 3986 unreserved, sub-delims, `:`, `@`, `/`, `?`, `%`): no spaces,
    /// quotes or braces.
    HealthPath,
    |path| {
        if !path.starts_with('/') {
            return Err("the path must start with '/'");
        }
        if path.len() > 1024 || !path.bytes().all(is_path_byte) {
            return Err(
                "the path may hold only URL path and query characters (percent-encode \
                 others), at most 1024",
            );
        }
        Ok(())
    }
);

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// A Traefik service name: a plain service name ([`validate_service_name`]) or a per-cluster
/// pool name `<service>.<cluster>` ([`pool_name`]). Cluster documents carry only plain names
/// ([`ServiceName::is_pool`] is false); merged files carry both.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    /// A plain service name.
    pub fn parse(name: &str) -> Result<ServiceName, NameError> {
        validate_service_name(name)?;
        Ok(ServiceName(name.to_owned()))
    }

    /// A plain service name or a per-cluster pool name.
    pub fn parse_pool_or_service(name: &str) -> Result<ServiceName, NameError> {
        validate_pool_or_service_name(name)?;
        Ok(ServiceName(name.to_owned()))
    }

    /// `<service>.<cluster>`; valid whenever `service` is a plain name.
    pub fn pool(service: &ServiceName, cluster: &ClusterName) -> ServiceName {
        ServiceName(pool_name(service, cluster))
    }

    /// True for a per-cluster pool name.
    pub fn is_pool(&self) -> bool {
        self.0.contains('.')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for ServiceName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ServiceName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ServiceName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl FromStr for ServiceName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<ServiceName, NameError> {
        ServiceName::parse_pool_or_service(name)
    }
}

text_serde!(ServiceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        for good in [
            "http://10.0.0.1:80",
            "https://10.0.0.1:443",
            "h2c://10.0.0.1:65535",
            "http://[fd00::1]:8080",
            "http://[::ffff:10.0.0.1]:8080",
        ] {
            let url: ServerUrl = good.parse().unwrap();
            assert_eq!(url.to_string(), good);
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
            let err = bad.parse::<ServerUrl>().unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(bad.trim()),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn server_addresses() {
        let v4: ServerAddress = "10.0.0.1:5432".parse().unwrap();
        assert_eq!(
            (v4.ip().to_string(), v4.port()),
            ("10.0.0.1".to_owned(), 5432)
        );
        assert_eq!(
            "[fd00::1]:5432"
                .parse::<ServerAddress>()
                .unwrap()
                .to_string(),
            "[fd00::1]:5432"
        );
        for (bad, why) in [
            ("fd00::1:5432", "bracketed"),
            ("fd00::1", "bracketed"),
            ("db:5432", "IP address"),
            ("tcp://10.0.0.1:5432", "IP address"),
        ] {
            let err = bad.parse::<ServerAddress>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(ServerAddress::new("10.0.0.1".parse().unwrap(), 0).is_err());
    }

    #[test]
    fn cookie_names_and_paths() {
        assert!("srv_id-1".parse::<CookieName>().is_ok());
        for bad in ["", "a b", "a;b", &"x".repeat(257)] {
            assert!(bad.parse::<CookieName>().is_err(), "{bad}");
        }
        assert!("/health?full=1&x=%20".parse::<HealthPath>().is_ok());
        for bad in [
            "health",
            "/a b",
            "/{x}",
            "/\"",
            &format!("/{}", "a".repeat(1024)),
        ] {
            assert!(bad.parse::<HealthPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names() {
        let web = ServiceName::parse("web").unwrap();
        assert!(!web.is_pool());
        let pool = ServiceName::pool(&web, &ClusterName::parse("eu-1").unwrap());
        assert_eq!(pool, "web.eu-1");
        assert!(pool.is_pool());
        assert!(ServiceName::parse("web.eu-1").is_err());
        assert_eq!("web.eu-1".parse::<ServiceName>().unwrap(), pool);
        for bad in ["web.EU", "web.a.b", "web@file", ""] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad}");
        }
    }
}
