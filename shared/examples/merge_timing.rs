//! Times a merge and render at production scale: 50 clusters x 2,000 services x 1 server.
//!
//! `cargo run --release -p ksd-shared --example merge_timing`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ksd_shared::merge::{ClusterDocument, merge};
use ksd_shared::names::ClusterName;
use ksd_shared::traefik::{
    Document, HttpLoadBalancer, HttpSection, HttpServer, HttpService, ServiceName, TraefikVersion,
    parse_merged_document, render,
};

const CLUSTERS: usize = 50;
const SERVICES: usize = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut clusters = Vec::with_capacity(CLUSTERS);
    for c in 0..CLUSTERS {
        let mut services = BTreeMap::new();
        for s in 0..SERVICES {
            let url = format!("http://10.{}.{}.{}:8080", c, s / 250, s % 250);
            let load_balancer = HttpLoadBalancer {
                servers: vec![HttpServer {
                    url: url.parse().expect("a valid URL"),
                }],
                ..HttpLoadBalancer::default()
            };
            services.insert(
                ServiceName::parse(&format!("ns{}-svc{s}-http", s % 40)).expect("a valid name"),
                HttpService { load_balancer },
            );
        }
        clusters.push(ClusterDocument {
            cluster: ClusterName::parse(&format!("cluster-{c:02}"))?,
            document: Document {
                http: Some(HttpSection { services }),
                ..Document::default()
            },
        });
    }

    // The best of a few runs: the machine may be busy with other work.
    let mut best: Option<(Duration, Duration, usize, usize)> = None;
    for _ in 0..5 {
        let started = Instant::now();
        let merged = merge(&clusters);
        let merge_time = started.elapsed();
        let rendered = render(&merged.document, TraefikVersion::V3, "merged by ksd-syncer");
        let total = started.elapsed();
        let run = (
            total,
            merge_time,
            merged.document.service_count(),
            rendered.bytes.len(),
        );
        if best.is_none_or(|(fastest, ..)| total < fastest) {
            best = Some(run);
        }
    }
    if let Some((total, merge_time, services, bytes)) = best {
        println!(
            "{CLUSTERS} clusters x {SERVICES} services -> {services} services, {bytes} bytes: \
             merge {merge_time:?}, merge + render {total:?} (best of 5)"
        );
    }

    // Reading the merged file back, as the syncer does before writing it.
    let merged = merge(&clusters);
    let rendered = render(&merged.document, TraefikVersion::V3, "merged by ksd-syncer");
    let started = Instant::now();
    let back = parse_merged_document(&rendered.bytes)?;
    println!(
        "parse_merged_document: {:?} for {} services",
        started.elapsed(),
        back.service_count()
    );
    Ok(())
}
