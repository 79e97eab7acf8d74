//! Generators shared by the property and schema tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ksd_shared::backend::{HealthCheck, SameSite, Scheme, StickyCookie, Target};
use ksd_shared::traefik::{
    AddressLoadBalancer, AddressServer, Document, GoDuration, HttpLoadBalancer, HttpSection,
    HttpServer, HttpService, ProbeDuration, ServiceName, Sticky, TcpSection, TcpService,
    UdpSection, UdpService,
};
use proptest::prelude::*;

pub fn target() -> impl Strategy<Value = Target> {
    let ip = prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ];
    (ip, 1..=u16::MAX).prop_map(|(ip, port)| Target { ip, port })
}

pub fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![Just(Scheme::Http), Just(Scheme::Https), Just(Scheme::H2c)]
}

/// Every health-check duration the model accepts, weighted towards round values.
pub fn duration() -> impl Strategy<Value = ProbeDuration> {
    let min = ProbeDuration::MIN.get().as_nanos();
    let max = ProbeDuration::MAX.get().as_nanos();
    prop_oneof![
        (1i64..=86_400).prop_map(|s| s * 1_000_000_000),
        (1i64..=86_400_000).prop_map(|ms| ms * 1_000_000),
        (1i64..=24).prop_map(|h| h * 3_600_000_000_000),
        min..=max,
    ]
    .prop_map(|nanos| ProbeDuration::new(GoDuration::from_nanos(nanos)).unwrap())
}

pub fn cookie() -> impl Strategy<Value = StickyCookie> {
    let same_site = prop_oneof![
        Just(SameSite::None),
        Just(SameSite::Lax),
        Just(SameSite::Strict)
    ];
    (
        proptest::option::of("[A-Za-z0-9_-]{1,24}".prop_map(|n| n.parse().unwrap())),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(same_site),
    )
        .prop_map(|(name, secure, http_only, same_site)| StickyCookie {
            name,
            secure,
            http_only,
            same_site,
        })
}

pub fn health_check() -> impl Strategy<Value = HealthCheck> {
    (
        "/[A-Za-z0-9/._~%-]{0,24}(\\?[a-z]{1,5}=[A-Za-z0-9&=]{0,8})?",
        proptest::option::of(duration()),
        proptest::option::of(duration()),
    )
        .prop_map(|(path, interval, timeout)| HealthCheck {
            path: path.parse().unwrap(),
            interval,
            timeout,
        })
}

pub fn http_load_balancer() -> impl Strategy<Value = HttpLoadBalancer> {
    (
        proptest::collection::vec((target(), scheme()), 0..5),
        proptest::option::of(any::<bool>()),
        proptest::option::of(cookie()),
        proptest::option::of(health_check()),
    )
        .prop_map(
            |(servers, pass_host_header, cookie, health_check)| HttpLoadBalancer {
                servers: servers
                    .into_iter()
                    .map(|(target, scheme)| HttpServer {
                        url: target.server_url(scheme).unwrap(),
                    })
                    .collect(),
                pass_host_header,
                sticky: cookie.map(|cookie| Sticky { cookie }),
                health_check,
            },
        )
}

pub fn address_load_balancer() -> impl Strategy<Value = AddressLoadBalancer> {
    proptest::collection::vec(target(), 0..5).prop_map(|targets| AddressLoadBalancer {
        servers: targets
            .into_iter()
            .map(|t| AddressServer {
                address: t.server_address().unwrap(),
            })
            .collect(),
    })
}

#[derive(Clone, Debug)]
pub enum AnyService {
    Http(HttpLoadBalancer),
    Tcp(AddressLoadBalancer),
    Udp(AddressLoadBalancer),
}

pub fn any_service() -> impl Strategy<Value = AnyService> {
    prop_oneof![
        3 => http_load_balancer().prop_map(AnyService::Http),
        1 => address_load_balancer().prop_map(AnyService::Tcp),
        1 => address_load_balancer().prop_map(AnyService::Udp),
    ]
}

/// Puts services into their sections; empty sections are left out.
pub fn assemble(services: BTreeMap<String, AnyService>) -> Document {
    let services = services
        .into_iter()
        .map(|(name, service)| (ServiceName::parse(&name).unwrap(), service));
    let mut http = BTreeMap::new();
    let mut tcp = BTreeMap::new();
    let mut udp = BTreeMap::new();
    for (name, service) in services {
        match service {
            AnyService::Http(load_balancer) => {
                http.insert(name, HttpService { load_balancer });
            }
            AnyService::Tcp(load_balancer) => {
                tcp.insert(name, TcpService { load_balancer });
            }
            AnyService::Udp(load_balancer) => {
                udp.insert(name, UdpService { load_balancer });
            }
        }
    }
    Document {
        http: (!http.is_empty()).then_some(HttpSection { services: http }),
        tcp: (!tcp.is_empty()).then_some(TcpSection { services: tcp }),
        udp: (!udp.is_empty()).then_some(UdpSection { services: udp }),
    }
}

/// A document that passes `validate` once rendered (render de-duplicates servers).
pub fn document() -> impl Strategy<Value = Document> {
    proptest::collection::btree_map("[A-Za-z0-9_-]{1,40}", any_service(), 0..8).prop_map(assemble)
}

/// Documents over a small set of names, so that clusters share (and fight over) services.
pub fn clashing_document() -> impl Strategy<Value = Document> {
    // `a` and `a-b`: a name that prefixes another before a '-' sorts differently once
    // `.<cluster>` is appended; the merge must not care.
    proptest::collection::btree_map("[ab][ab-]{0,2}", any_service(), 0..5).prop_map(assemble)
}

/// What `parse_cluster_document(render(doc))` gives back: the normalized document, with a
/// cookie that has no field set written as `secure: false` (the emitter never writes `{}`).
pub fn canonical(doc: &Document) -> Document {
    let mut doc = doc.clone().normalized();
    for service in doc.http.iter_mut().flat_map(|s| s.services.values_mut()) {
        if let Some(sticky) = &mut service.load_balancer.sticky
            && sticky.cookie == StickyCookie::default()
        {
            sticky.cookie.secure = Some(false);
        }
    }
    doc
}

/// A hand-picked document using every field the model has.
pub fn rich_document() -> Document {
    let mut services = BTreeMap::new();
    services.insert(
        "default-web-http".to_owned(),
        AnyService::Http(HttpLoadBalancer {
            servers: vec![
                HttpServer {
                    url: "http://10.0.0.1:8080".parse().unwrap(),
                },
                HttpServer {
                    url: "http://[fd00::1]:8080".parse().unwrap(),
                },
            ],
            pass_host_header: Some(true),
            sticky: Some(Sticky {
                cookie: StickyCookie {
                    name: Some("srv".parse().unwrap()),
                    secure: Some(true),
                    http_only: Some(true),
                    same_site: Some(SameSite::Lax),
                },
            }),
            health_check: Some(HealthCheck {
                path: "/healthz".parse().unwrap(),
                interval: Some("10s".parse().unwrap()),
                timeout: Some("1500ms".parse().unwrap()),
            }),
        }),
    );
    services.insert(
        "default-grpc-grpc".to_owned(),
        AnyService::Http(HttpLoadBalancer {
            servers: vec![HttpServer {
                url: "h2c://10.0.0.2:9090".parse().unwrap(),
            }],
            sticky: Some(Sticky::default()),
            ..HttpLoadBalancer::default()
        }),
    );
    services.insert(
        "db-postgres-5432".to_owned(),
        AnyService::Tcp(AddressLoadBalancer {
            servers: vec![
                AddressServer {
                    address: "10.0.1.1:5432".parse().unwrap(),
                },
                AddressServer {
                    address: "[fd00::2]:5432".parse().unwrap(),
                },
            ],
        }),
    );
    services.insert(
        "kube-system-dns-53".to_owned(),
        AnyService::Udp(AddressLoadBalancer {
            servers: vec![AddressServer {
                address: "10.0.2.1:53".parse().unwrap(),
            }],
        }),
    );
    assemble(services)
}
