//! Which server addresses a cluster may publish: the address policy both agents apply.
//!
//! Two layers, checked in this order:
//! 1. **Special-purpose addresses are always refused**, whatever else is configured: loopback,
//!    unspecified ("this network", `0.0.0.0/8`, `::`), link-local (`169.254.0.0/16`, which holds
//!    the cloud metadata address, and `fe80::/10`), multicast, the limited broadcast address,
//!    the known cloud metadata addresses outside link-local (`fd00:ec2::254`,
//!    `100.100.100.200`), and the same IPv4 addresses written in an IPv6 form that reaches them:
//!    IPv4-mapped (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`) and the NAT64
//!    well-known prefix (`64:ff9b::a9fe:a9fe`).
//! 2. **Pinned ranges**, when the operator configured any: a cluster's servers must lie in the
//!    CIDRs pinned for that cluster (`CLUSTER_CIDRS`) or in the ranges allowed for every cluster
//!    (`ALLOWED_CIDRS`). Once either is set, a cluster without pinned ranges may use the global
//!    ones only.
//!
//! Pure: no I/O, no dependency on the Traefik model; callers extract the [`IpAddr`] of each
//! server and ask [`AddressPolicy::check`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use ipnet::IpNet;

/// Why an address was refused. [`Refusal::as_str`] is a stable label for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    Loopback,
    Unspecified,
    LinkLocal,
    Multicast,
    Broadcast,
    /// A cloud metadata address outside the link-local range.
    Metadata,
    /// Not in the cluster's pinned CIDRs nor in the globally allowed ones.
    OutsideAllowedRanges,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::Unspecified => "unspecified",
            Refusal::LinkLocal => "link_local",
            Refusal::Multicast => "multicast",
            Refusal::Broadcast => "broadcast",
            Refusal::Metadata => "metadata",
            Refusal::OutsideAllowedRanges => "outside_allowed_ranges",
        }
    }

    /// True for the refusals of the default policy (layer 1), whatever the configuration.
    pub fn is_special_purpose(self) -> bool {
        self != Refusal::OutsideAllowedRanges
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Loopback => "a loopback address",
            Refusal::Unspecified => "an unspecified address",
            Refusal::LinkLocal => "a link-local address (this covers the cloud metadata service)",
            Refusal::Multicast => "a multicast address",
            Refusal::Broadcast => "the broadcast address",
            Refusal::Metadata => "a cloud metadata service address",
            Refusal::OutsideAllowedRanges => {
                "outside the CIDRs pinned for the cluster (CLUSTER_CIDRS) and ALLOWED_CIDRS"
            }
        })
    }
}

/// Cloud metadata services reachable outside the link-local range.
const METADATA_V4: [Ipv4Addr; 1] = [Ipv4Addr::new(100, 100, 100, 200)];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// The default policy: why `ip` may never be a server, or `None` if it may.
pub fn special_purpose(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => special_purpose_v4(v4),
        IpAddr::V6(v6) => special_purpose_v6(v6),
    }
}

fn special_purpose_v4(ip: Ipv4Addr) -> Option<Refusal> {
    if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.octets()[0] == 0 {
        // 0.0.0.0/8, "this host on this network": Linux connects 0.0.0.0 to the local host.
        Some(Refusal::Unspecified)
    } else if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else if ip.is_broadcast() {
        Some(Refusal::Broadcast)
    } else if METADATA_V4.contains(&ip) {
        Some(Refusal::Metadata)
    } else {
        None
    }
}

fn special_purpose_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    // An IPv4 address in IPv6 clothing reaches the IPv4 address: judge that one.
    if let Some(v4) = embedded_v4(ip) {
        return special_purpose_v4(v4);
    }
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else if METADATA_V6.contains(&ip) {
        Some(Refusal::Metadata)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (deprecated, still routed by some stacks) and NAT64 `64:ff9b::a.b.c.d`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // `::` and `::1` are handled before; anything else in ::/96 is IPv4-compatible.
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// A setting that names CIDRs could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{value:?} is not a CIDR (expected e.g. 10.1.0.0/16 or fd00:a::/64): {reason}")]
    Cidr { value: String, reason: String },
    #[error(
        "{entry:?} is not <cluster>=<cidr>[,<cidr>...] (entries are separated by ';', e.g. \
         cluster-a=10.1.0.0/16,fd00:a::/64;cluster-b=10.2.0.0/16)"
    )]
    Entry { entry: String },
    #[error("cluster {cluster:?} is listed twice")]
    Duplicate { cluster: String },
    #[error("cluster name {cluster:?} is not a DNS label")]
    Cluster { cluster: String },
}

/// Reads `10.0.0.0/8,fd00::/8` (commas or whitespace between). A bare address means a single
/// host (`/32` or `/128`). Host bits set are refused (`10.1.2.3/16` is likely a typo).
pub fn parse_cidrs(value: &str) -> Result<Vec<IpNet>, PolicyError> {
    let mut nets = Vec::new();
    for item in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        nets.push(parse_cidr(item)?);
    }
    Ok(nets)
}

fn parse_cidr(item: &str) -> Result<IpNet, PolicyError> {
    let error = |reason: String| PolicyError::Cidr {
        value: item.to_owned(),
        reason,
    };
    if !item.contains('/') {
        let ip: IpAddr = item.parse().map_err(|e| error(format!("{e}")))?;
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = item.parse().map_err(|e| error(format!("{e}")))?;
    if net.trunc() != net {
        return Err(error(format!(
            "host bits are set; the network is {}",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Reads `cluster-a=10.1.0.0/16,fd00:a::/64;cluster-b=10.2.0.0/16` (entries separated by `;`
/// or newlines). Cluster names are DNS labels, as the object keys.
pub fn parse_cluster_cidrs(value: &str) -> Result<BTreeMap<String, Vec<IpNet>>, PolicyError> {
    let mut clusters = BTreeMap::new();
    for entry in value
        .split([';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((cluster, cidrs)) = entry.split_once('=') else {
            return Err(PolicyError::Entry {
                entry: entry.to_owned(),
            });
        };
        let cluster = cluster.trim();
        if crate::names::ClusterName::parse(cluster).is_err() {
            return Err(PolicyError::Cluster {
                cluster: cluster.to_owned(),
            });
        }
        let nets = parse_cidrs(cidrs)?;
        if nets.is_empty() {
            return Err(PolicyError::Entry {
                entry: entry.to_owned(),
            });
        }
        if clusters.insert(cluster.to_owned(), nets).is_some() {
            return Err(PolicyError::Duplicate {
                cluster: cluster.to_owned(),
            });
        }
    }
    Ok(clusters)
}

/// The whole policy: the default refusals plus the operator's ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    clusters: BTreeMap<String, Vec<IpNet>>,
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// The default policy only: special-purpose addresses refused, anything else allowed.
    pub fn special_purpose_only() -> Self {
        AddressPolicy::default()
    }

    /// `clusters`: each cluster's own ranges; `allowed`: ranges every cluster may use.
    pub fn new(clusters: BTreeMap<String, Vec<IpNet>>, allowed: Vec<IpNet>) -> Self {
        AddressPolicy { clusters, allowed }
    }

    /// Whether servers are restricted to configured ranges.
    pub fn is_pinned(&self) -> bool {
        !self.clusters.is_empty() || !self.allowed.is_empty()
    }

    /// The ranges `cluster` may use, when ranges are configured.
    pub fn ranges(&self, cluster: &str) -> impl Iterator<Item = &IpNet> {
        self.clusters
            .get(cluster)
            .into_iter()
            .flatten()
            .chain(&self.allowed)
    }

    /// Whether `cluster` may publish a server at `ip`.
    pub fn check(&self, cluster: &str, ip: IpAddr) -> Result<(), Refusal> {
        if let Some(refusal) = special_purpose(ip) {
            return Err(refusal);
        }
        if !self.is_pinned() {
            return Ok(());
        }
        // An IPv4-mapped address is compared as the IPv4 address it reaches.
        let candidates = [Some(ip), as_v4(ip)];
        let inside = self
            .ranges(cluster)
            .any(|net| candidates.iter().flatten().any(|ip| net.contains(ip)));
        if inside {
            Ok(())
        } else {
            Err(Refusal::OutsideAllowedRanges)
        }
    }
}

fn as_v4(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_purpose_addresses_are_refused_in_every_spelling() {
        let cases = [
            ("127.0.0.1", Refusal::Loopback),
            ("127.255.0.9", Refusal::Loopback),
            ("::1", Refusal::Loopback),
            ("0.0.0.0", Refusal::Unspecified),
            ("0.1.2.3", Refusal::Unspecified),
            ("::", Refusal::Unspecified),
            ("169.254.169.254", Refusal::LinkLocal),
            ("fe80::1", Refusal::LinkLocal),
            ("febf::1", Refusal::LinkLocal),
            ("224.0.0.1", Refusal::Multicast),
            ("239.255.255.250", Refusal::Multicast),
            ("ff02::1", Refusal::Multicast),
            ("255.255.255.255", Refusal::Broadcast),
            ("fd00:ec2::254", Refusal::Metadata),
            ("100.100.100.200", Refusal::Metadata),
            // IPv4-mapped
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::ffff:169.254.169.254", Refusal::LinkLocal),
            ("::ffff:0.0.0.0", Refusal::Unspecified),
            ("::ffff:224.0.0.1", Refusal::Multicast),
            ("::ffff:255.255.255.255", Refusal::Broadcast),
            // IPv4-compatible
            ("::127.0.0.1", Refusal::Loopback),
            ("::169.254.169.254", Refusal::LinkLocal),
            ("::a9fe:a9fe", Refusal::LinkLocal),
            // NAT64 well-known prefix
            ("64:ff9b::169.254.169.254", Refusal::LinkLocal),
            ("64:ff9b::7f00:1", Refusal::Loopback),
        ];
        for (addr, want) in cases {
            assert_eq!(special_purpose(ip(addr)), Some(want), "{addr}");
            assert_eq!(
                AddressPolicy::special_purpose_only().check("a", ip(addr)),
                Err(want),
                "{addr}"
            );
        }
    }

    #[test]
    fn ordinary_addresses_pass_the_default_policy() {
        for addr in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "8.8.8.8",
            "fd00::1",
            "fd00:ec2::253",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "64:ff9b::808:808",
            "fec0::1",
        ] {
            assert_eq!(special_purpose(ip(addr)), None, "{addr}");
            assert!(
                AddressPolicy::special_purpose_only()
                    .check("a", ip(addr))
                    .is_ok()
            );
        }
    }

    #[test]
    fn pinned_clusters_stay_in_their_ranges() {
        let clusters =
            parse_cluster_cidrs("cluster-a=10.1.0.0/16,fd00:a::/64; cluster-b=10.2.0.0/16")
                .unwrap();
        let policy = AddressPolicy::new(clusters, parse_cidrs("192.0.2.0/24").unwrap());
        assert!(policy.is_pinned());
        assert!(policy.check("cluster-a", ip("10.1.2.3")).is_ok());
        assert!(policy.check("cluster-a", ip("fd00:a::5")).is_ok());
        assert!(policy.check("cluster-a", ip("::ffff:10.1.2.3")).is_ok());
        assert!(policy.check("cluster-a", ip("192.0.2.7")).is_ok(), "global");
        assert_eq!(
            policy.check("cluster-a", ip("10.2.0.1")),
            Err(Refusal::OutsideAllowedRanges),
            "b's range"
        );
        assert_eq!(
            policy.check("cluster-b", ip("fd00:a::5")),
            Err(Refusal::OutsideAllowedRanges)
        );
        assert!(policy.check("cluster-b", ip("10.2.255.255")).is_ok());
        // A cluster nobody pinned may use the global ranges only.
        assert!(policy.check("cluster-c", ip("192.0.2.1")).is_ok());
        assert_eq!(
            policy.check("cluster-c", ip("10.1.0.1")),
            Err(Refusal::OutsideAllowedRanges)
        );
    }

    #[test]
    fn pinning_never_reopens_special_purpose_addresses() {
        let clusters = parse_cluster_cidrs("a=0.0.0.0/0,::/0").unwrap();
        let policy = AddressPolicy::new(clusters, parse_cidrs("127.0.0.0/8").unwrap());
        assert_eq!(policy.check("a", ip("127.0.0.1")), Err(Refusal::Loopback));
        assert_eq!(
            policy.check("a", ip("169.254.169.254")),
            Err(Refusal::LinkLocal)
        );
        assert!(policy.check("a", ip("203.0.113.9")).is_ok());
    }

    #[test]
    fn cidr_settings_are_parsed_strictly() {
        assert_eq!(parse_cidrs("").unwrap(), Vec::<IpNet>::new());
        assert_eq!(
            parse_cidrs("10.0.0.0/8, fd00::/8 192.0.2.1").unwrap(),
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "fd00::/8".parse().unwrap(),
                "192.0.2.1/32".parse().unwrap()
            ]
        );
        assert!(matches!(
            parse_cidrs("10.1.2.3/16"),
            Err(PolicyError::Cidr { .. })
        ));
        assert!(matches!(
            parse_cidrs("10.0.0.0/33"),
            Err(PolicyError::Cidr { .. })
        ));
        assert!(matches!(
            parse_cidrs("example.com"),
            Err(PolicyError::Cidr { .. })
        ));
        assert!(matches!(
            parse_cluster_cidrs("a=10.0.0.0/8;a=10.1.0.0/16"),
            Err(PolicyError::Duplicate { .. })
        ));
        assert!(matches!(
            parse_cluster_cidrs("10.0.0.0/8"),
            Err(PolicyError::Entry { .. })
        ));
        assert!(matches!(
            parse_cluster_cidrs("a="),
            Err(PolicyError::Entry { .. })
        ));
        assert!(matches!(
            parse_cluster_cidrs("Not_A_Label=10.0.0.0/8"),
            Err(PolicyError::Cluster { .. })
        ));
        let parsed = parse_cluster_cidrs("a=10.0.0.0/8\nb=10.1.0.0/16;").unwrap();
        assert_eq!(parsed.len(), 2);
        let err = parse_cidrs("10.1.2.3/16").unwrap_err().to_string();
        assert!(err.contains("10.1.0.0/16"), "{err}");
    }
}
