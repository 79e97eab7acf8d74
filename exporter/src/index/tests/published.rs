//! The published state, updated per Service, against everything computed from scratch.

use std::collections::BTreeMap;

use ksd_shared::names::{ClusterName, ObjectFormat};
use proptest::prelude::*;

use super::*;
use crate::document::{self, Snapshot};

const FORMATS: [ObjectFormat; 2] = [ObjectFormat::Traefik, ObjectFormat::Backends];

fn cluster() -> ClusterName {
    ClusterName::parse("c1").unwrap()
}

/// What a publish from scratch gives for `index`: every backend named at once, the address
/// policy, the whole document built, validated and rendered.
fn from_scratch(index: &mut Index, template: &NameTemplate) -> Result<Snapshot, String> {
    from_scratch_in(index, template, &FORMATS)
}

fn from_scratch_in(
    index: &mut Index,
    template: &NameTemplate,
    formats: &[ObjectFormat],
) -> Result<Snapshot, String> {
    index.refresh();
    let (backends, _) = index.backends(template);
    let (backends, _) = document::apply_address_policy(backends);
    document::build(&cluster(), formats, &backends).map_err(|e| e.to_string())
}

fn published(index: &mut Index, published: &mut Published) -> Result<Snapshot, String> {
    index.refresh();
    published.update(index);
    published.snapshot().map_err(|e| e.to_string())
}

#[test]
fn one_slice_change_renders_one_block_and_the_same_bytes() {
    let template = NameTemplate::default();
    let mut index = Index::new();
    let mut state = Published::new(cluster(), template.clone(), &FORMATS);
    for name in ["api", "web"] {
        with_service(&mut index, service("ns", name).port("http", 80).build());
        with_slice(
            &mut index,
            slice("ns", &format!("{name}-1"), name)
                .port("http", 8080)
                .ready("10.0.0.1")
                .ready("127.0.0.1")
                .build(),
        );
    }
    let first = published(&mut index, &mut state).unwrap();
    assert_eq!(first, from_scratch(&mut index, &template).unwrap());
    assert_eq!(state.refused().len(), 2, "loopback is left out");
    assert_eq!(state.backend_count(), 2);

    with_slice(
        &mut index,
        slice("ns", "web-1", "web")
            .port("http", 8080)
            .ready("10.0.0.2")
            .build(),
    );
    index.refresh();
    assert_eq!(index.take_recomputed(), [ServiceKey::new("ns", "web")]);
    with_slice(
        &mut index,
        slice("ns", "web-1", "web")
            .port("http", 8080)
            .ready("10.0.0.3")
            .build(),
    );
    let second = published(&mut index, &mut state).unwrap();
    assert_ne!(second, first);
    assert_eq!(second, from_scratch(&mut index, &template).unwrap());
    assert_eq!(state.refused().len(), 1);
    let text = String::from_utf8(second.outputs[0].bytes.clone()).unwrap();
    assert!(text.contains("http://10.0.0.3:8080") && !text.contains("10.0.0.2"));
}

#[test]
fn a_collision_moves_the_name_of_another_service() {
    let template = NameTemplate::default();
    let mut index = Index::new();
    let mut state = Published::new(cluster(), template.clone(), &FORMATS);
    with_service(&mut index, service("a-b", "c").port("p", 80).build());
    published(&mut index, &mut state).unwrap();
    // `a`/`b-c` renders to the same name and is the smaller origin: it takes `a-b-c-p`.
    with_service(&mut index, service("a", "b-c").port("p", 80).build());
    let snapshot = published(&mut index, &mut state).unwrap();
    assert_eq!(snapshot, from_scratch(&mut index, &template).unwrap());
    assert_eq!(state.collisions().len(), 1);
    with_service(&mut index, service("a", "b-c").port("other", 80).build());
    let snapshot = published(&mut index, &mut state).unwrap();
    assert_eq!(snapshot, from_scratch(&mut index, &template).unwrap());
    assert!(state.collisions().is_empty());
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    Service {
        namespace: usize,
        name: usize,
        /// (port name, protocol) per port; `None` deletes the Service.
        ports: Option<Vec<(usize, usize)>>,
    },
    Slice {
        namespace: usize,
        slice: usize,
        service: usize,
        port: usize,
        /// (address, condition) per endpoint; `None` deletes the slice.
        endpoints: Option<Vec<(usize, usize)>>,
    },
    Publish,
}

// Small pools so that names collide under every template and slices move between Services.
const NAMESPACES: [&str; 2] = ["a", "a-b"];
const SERVICES: [&str; 3] = ["b-c", "c", "web"];
const PORTS: [&str; 3] = ["c", "http", "p-q"];
const ADDRESSES: [&str; 6] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "127.0.0.1",
    "169.254.169.254",
    "192.168.1.1",
];

fn step() -> impl Strategy<Value = Step> {
    let ports = proptest::collection::vec((0..PORTS.len(), 0..4usize), 0..3);
    let endpoints = proptest::collection::vec((0..ADDRESSES.len(), 0..3usize), 0..4);
    prop_oneof![
        3 => (0..NAMESPACES.len(), 0..SERVICES.len(), proptest::option::weighted(0.8, ports))
            .prop_map(|(namespace, name, ports)| Step::Service { namespace, name, ports }),
        5 => (
            0..NAMESPACES.len(),
            0..3usize,
            0..SERVICES.len(),
            0..PORTS.len(),
            proptest::option::weighted(0.8, endpoints),
        )
            .prop_map(|(namespace, slice, service, port, endpoints)| Step::Slice {
                namespace,
                slice,
                service,
                port,
                endpoints,
            }),
        2 => Just(Step::Publish),
    ]
}

fn build_service(namespace: &str, name: &str, ports: &[(usize, usize)]) -> Service {
    let mut builder = service(namespace, name);
    for (i, (port, protocol)) in ports.iter().enumerate() {
        let number = 80 + i32::try_from(i).unwrap();
        builder = match protocol {
            0 => builder.port(PORTS[*port], number),
            1 => builder.port_proto(PORTS[*port], number, "UDP"),
            2 => builder.app_port(PORTS[*port], number, "tcp"),
            _ => builder.unnamed_port(number),
        };
    }
    builder.build()
}

fn build_slice(
    namespace: &str,
    name: &str,
    owner: &str,
    port: &str,
    endpoints: &[(usize, usize)],
) -> EndpointSlice {
    let mut builder = slice(namespace, name, owner)
        .port(port, 8080)
        .port("", 9090);
    for (address, condition) in endpoints {
        builder = match condition {
            0 => builder.ready(ADDRESSES[*address]),
            1 => builder.terminating_serving(ADDRESSES[*address]),
            _ => builder.not_ready(ADDRESSES[*address]),
        };
    }
    builder.build()
}

proptest! {
    #[test]
    fn incremental_publishing_gives_the_bytes_of_a_publish_from_scratch(
        steps in proptest::collection::vec(step(), 1..40),
        template in prop_oneof![
            Just("{namespace}-{service}-{port}"),
            Just("{service}-{port}"),
            Just("{service}"),
        ],
    ) {
        let template = NameTemplate::parse(template).unwrap();
        let mut index = Index::new();
        let mut state = Published::new(cluster(), template.clone(), &FORMATS);
        // The same history published in the Traefik format alone (no backends kept).
        let mut twin = Index::new();
        let mut traefik_only = Published::new(cluster(), template.clone(), &[ObjectFormat::Traefik]);
        // The objects as they are now, to build a fresh index from at every publish.
        let mut services: BTreeMap<(usize, usize), Service> = BTreeMap::new();
        let mut slices: BTreeMap<(usize, usize), EndpointSlice> = BTreeMap::new();
        for step in steps.into_iter().chain([Step::Publish]) {
            match step {
                Step::Service { namespace, name, ports } => {
                    let built = build_service(NAMESPACES[namespace], SERVICES[name], ports.as_deref().unwrap_or(&[]));
                    if ports.is_some() {
                        with_service(&mut index, built.clone());
                        with_service(&mut twin, built.clone());
                        services.insert((namespace, name), built);
                    } else {
                        let (key, _) = service_facts(&built).unwrap();
                        index.delete_service(&key);
                        twin.delete_service(&key);
                        services.remove(&(namespace, name));
                    }
                }
                Step::Slice { namespace, slice, service, port, endpoints } => {
                    let built = build_slice(
                        NAMESPACES[namespace],
                        &format!("s{slice}"),
                        SERVICES[service],
                        PORTS[port],
                        endpoints.as_deref().unwrap_or(&[]),
                    );
                    if endpoints.is_some() {
                        with_slice(&mut index, built.clone());
                        with_slice(&mut twin, built.clone());
                        slices.insert((namespace, slice), built);
                    } else {
                        let (key, _) = slice_facts(&built).unwrap();
                        index.delete_slice(&key);
                        twin.delete_slice(&key);
                        slices.remove(&(namespace, slice));
                    }
                }
                Step::Publish => {
                    let incremental = published(&mut index, &mut state);
                    let mut fresh = Index::new();
                    for built in services.values() {
                        with_service(&mut fresh, built.clone());
                    }
                    for built in slices.values() {
                        with_slice(&mut fresh, built.clone());
                    }
                    prop_assert_eq!(&incremental, &from_scratch(&mut fresh, &template));
                    prop_assert_eq!(
                        published(&mut twin, &mut traefik_only),
                        from_scratch_in(&mut fresh, &template, &[ObjectFormat::Traefik])
                    );
                    let (backends, collisions) = fresh.backends(&template);
                    prop_assert_eq!(state.collisions(), collisions);
                    let (_, refused) = document::apply_address_policy(backends);
                    prop_assert_eq!(state.refused(), &refused);
                }
            }
        }
    }
}
