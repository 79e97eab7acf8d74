//! Services, slices per family and chunked, placeholders, conditions, custom slices.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::scale::encode_query;
use super::*;

#[test]
fn service_builder() {
    let svc = service("shop", "web")
        .label("k8s-service-discovery", "true")
        .port("http", 80, 8080)
        .port_proto("dns", 53, 5353, "UDP")
        .app_protocol("http", "h2c")
        .ip_families(&["IPv4", "IPv6"])
        .build();
    assert_eq!(svc.metadata.namespace.as_deref(), Some("shop"));
    let spec = svc.spec.unwrap();
    let ports = spec.ports.unwrap();
    assert_eq!(ports[0].app_protocol.as_deref(), Some("h2c"));
    assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
    assert_eq!(
        spec.selector.unwrap().get("app").map(String::as_str),
        Some("web")
    );
    let bare = service("a", "b").no_selector().build();
    assert!(bare.spec.unwrap().selector.is_none());
    assert!(bare.metadata.labels.is_none());
    let custom = service("a", "b").selector("tier", "db").build();
    assert_eq!(
        custom.spec.unwrap().selector.unwrap(),
        BTreeMap::from([("tier".to_owned(), "db".to_owned())])
    );
}

#[test]
fn slices_per_family_and_chunked() {
    let mut svc = service("shop", "web")
        .label("team", "a")
        .port("http", 80, 8080)
        .app_protocol("http", "http")
        .ip_families(&["IPv4", "IPv6"])
        .build();
    svc.metadata.uid = Some("uid-1".to_owned());
    let mut pods: Vec<Pod> = (0..150)
        .map(|i| {
            Pod::dual(
                &format!("web-{i}"),
                Ipv4Addr::from(0x0a01_0000 + i),
                Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)),
            )
        })
        .collect();
    pods.push(
        Pod::ready("v4-only", "10.9.9.9")
            .not_ready()
            .on_node("n1")
            .in_zone("z1"),
    );
    let slices = endpoint_slices(&svc, &pods);
    let v4: Vec<&EndpointSlice> = slices.iter().filter(|s| s.address_type == "IPv4").collect();
    let v6: Vec<&EndpointSlice> = slices.iter().filter(|s| s.address_type == "IPv6").collect();
    assert_eq!(v4.len(), 2);
    assert_eq!(v6.len(), 2);
    assert_eq!(v4.iter().map(|s| s.endpoints.len()).sum::<usize>(), 151);
    assert_eq!(v6.iter().map(|s| s.endpoints.len()).sum::<usize>(), 150);
    assert!(
        slices
            .iter()
            .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
    );
    let first = &slices[0];
    let labels = first.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
    assert_eq!(labels["team"], "a");
    let port = &first.ports.as_ref().unwrap()[0];
    assert_eq!(
        (
            port.name.as_deref(),
            port.port,
            port.app_protocol.as_deref()
        ),
        (Some("http"), Some(8080), Some("http"))
    );
    assert_eq!(
        first.metadata.owner_references.as_ref().unwrap()[0].uid,
        "uid-1"
    );
    let last = v4[1].endpoints.last().unwrap();
    assert_eq!(last.conditions.as_ref().unwrap().ready, Some(false));
    assert_eq!(last.node_name.as_deref(), Some("n1"));
    assert_eq!(last.zone.as_deref(), Some("z1"));
    // Names are stable, distinct and look generated.
    let again = endpoint_slices(&svc, &pods);
    let names: Vec<_> = slices
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    let names_again: Vec<_> = again
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, names_again);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("web-") && n.len() == "web-".len() + 5)
    );
}

#[test]
fn no_pods_gives_a_placeholder() {
    let svc = service("a", "web").port("http", 80, 8080).build();
    let slices = endpoint_slices(&svc, &[]);
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
    assert_eq!(slices[0].ports.as_deref(), Some(&[][..]));
    assert!(slices[0].metadata.owner_references.is_none());
}

#[test]
fn terminating_and_publish_not_ready() {
    let svc = service("a", "web")
        .port("http", 80, 8080)
        .publish_not_ready_addresses(true)
        .build();
    let slices = endpoint_slices(&svc, &[Pod::ready("p", "10.0.0.1").terminating()]);
    let conditions = slices[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(conditions.ready, Some(true));
    assert_eq!(conditions.terminating, Some(true));
    assert_eq!(conditions.serving, Some(true));
}

#[test]
fn custom_slices() {
    let slice = custom_slice("a", "db-manual", "db")
        .address_type("IPv6")
        .managed_by("operator.example.com")
        .port("pg", 5432, "TCP")
        .app_protocol("pg", "postgresql")
        .endpoints(&[Pod::dual("db-0", "10.0.0.1", "fd00::1")])
        .build();
    assert_eq!(slice.endpoints.len(), 1);
    assert_eq!(slice.endpoints[0].addresses, ["fd00::1"]);
    let labels = slice.metadata.labels.unwrap();
    assert_eq!(labels[MANAGED_BY_LABEL], "operator.example.com");
    assert_eq!(labels[SERVICE_NAME_LABEL], "db");
    assert_eq!(
        slice.ports.unwrap()[0].app_protocol.as_deref(),
        Some("postgresql")
    );
}

#[test]
fn query_encoding() {
    assert_eq!(encode_query("a/b=c,d"), "a%2Fb%3Dc%2Cd");
}
