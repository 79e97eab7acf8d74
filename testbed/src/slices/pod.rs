//! [`Pod`]: what the EndpointSlice controller reads from a pod.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address given to a [`Pod`] constructor: an address type or a literal.
pub trait PodIp {
    fn into_ip(self) -> IpAddr;
}

impl PodIp for IpAddr {
    fn into_ip(self) -> IpAddr {
        self
    }
}

impl PodIp for Ipv4Addr {
    fn into_ip(self) -> IpAddr {
        IpAddr::V4(self)
    }
}

impl PodIp for Ipv6Addr {
    fn into_ip(self) -> IpAddr {
        IpAddr::V6(self)
    }
}

impl PodIp for &str {
    /// # Panics
    /// On a string that is not an IP address: a typo in the test.
    fn into_ip(self) -> IpAddr {
        match self.parse() {
            Ok(ip) => ip,
            Err(_) => panic!("{self:?} is not an IP address"),
        }
    }
}

/// What the EndpointSlice controller reads from a pod. The condition fields are written to
/// the endpoint as they are (`None` leaves the condition unset, which consumers must read as
/// ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node: Option<String>,
    pub zone: Option<String>,
}

impl Pod {
    /// A running, ready pod with one IP.
    pub fn ready(name: &str, ip: impl PodIp) -> Self {
        Self {
            name: name.to_owned(),
            ips: vec![ip.into_ip()],
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
            node: None,
            zone: None,
        }
    }

    /// A ready pod with an IPv4 and an IPv6 address.
    pub fn dual(name: &str, v4: impl PodIp, v6: impl PodIp) -> Self {
        let mut pod = Self::ready(name, v4);
        pod.ips.push(v6.into_ip());
        pod
    }

    /// A pod whose endpoint carries no conditions at all.
    pub fn without_conditions(name: &str, ip: impl PodIp) -> Self {
        Self::ready(name, ip).conditions(None, None, None)
    }

    /// Running but failing its readiness probe.
    pub fn not_ready(mut self) -> Self {
        self.ready = Some(false);
        self.serving = Some(false);
        self
    }

    /// Being deleted: not ready; still serving if it was (graceful termination).
    pub fn terminating(mut self) -> Self {
        self.terminating = Some(true);
        self.ready = Some(false);
        self
    }

    /// Sets the three conditions as given.
    pub fn conditions(
        mut self,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        self.ready = ready;
        self.serving = serving;
        self.terminating = terminating;
        self
    }

    /// Adds an address (of the other family, for a dual-stack pod).
    pub fn with_ip(mut self, ip: impl PodIp) -> Self {
        self.ips.push(ip.into_ip());
        self
    }

    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    pub fn in_zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }
}

/// `count` ready pods `<prefix>-0`, `<prefix>-1`, ... with consecutive IPv4 addresses from
/// `first_ip`.
pub fn ready_pods(prefix: &str, count: usize, first_ip: Ipv4Addr) -> Vec<Pod> {
    let base = u32::from(first_ip);
    (0..count)
        .map(|i| {
            let offset = u32::try_from(i).unwrap_or(u32::MAX);
            let ip = Ipv4Addr::from(base.wrapping_add(offset));
            Pod::ready(&format!("{prefix}-{i}"), ip)
        })
        .collect()
}
