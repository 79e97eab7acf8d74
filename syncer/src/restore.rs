//! The last good state across a restart, rebuilt from the file the previous run wrote.
//!
//! The merged file holds every cluster's own pool under `<service>.<cluster>` (with that
//! cluster's servers and options) and names the clusters in its header (`# Clusters: a, b`),
//! so it is all the state a restart needs: no separate state directory, nothing to keep in
//! step, and the read-only root filesystem and compose setup work unchanged. At start the
//! syncer reads it (bounded, non-blocking) and seeds each cluster's last good document; a
//! cluster whose current object is then rejected keeps serving what Traefik serves for it
//! now. A fetched, accepted version replaces the seed as usual; a cluster whose object is no
//! longer listed is removed after `CONFIRM_POLLS` listings, as any other.
//!
//! What is lost: services the address policy or the administrator's names had left out were
//! not in the file, so they are not restored either (they would be left out again anyway).

use std::collections::BTreeMap;

use ksd_shared::merge::ClusterDocument;
use ksd_shared::names::ClusterName;
use ksd_shared::traefik::{self, Document, Section, ServiceName};

/// The clusters' documents a merged file implies, from its per-cluster pools and header.
pub fn from_merged_file(bytes: &[u8]) -> Result<Vec<ClusterDocument>, traefik::DocumentError> {
    let merged = traefik::parse_merged_document(bytes)?;
    let mut documents: BTreeMap<ClusterName, Document> = BTreeMap::new();
    for cluster in header_clusters(bytes) {
        documents.entry(cluster).or_default();
    }
    split_pools(merged, &mut documents);
    Ok(documents
        .into_iter()
        .map(|(cluster, document)| ClusterDocument {
            cluster,
            document: document.normalized(),
        })
        .collect())
}

/// `<service>.<cluster>`, or `None` for a union pool (no `.`: plain names never hold one).
fn split_pool_name(name: &str) -> Option<(&str, ClusterName)> {
    let (service, cluster) = name.rsplit_once('.')?;
    if service.is_empty() {
        return None;
    }
    ClusterName::parse(cluster).ok().map(|c| (service, c))
}

/// Moves every per-cluster pool of `merged` into its cluster's document, under the plain name.
fn split_pools(merged: Document, documents: &mut BTreeMap<ClusterName, Document>) {
    fn split<L>(
        section: Option<Section<L>>,
        documents: &mut BTreeMap<ClusterName, Document>,
        pick: fn(&mut Document) -> &mut Option<Section<L>>,
    ) {
        for (name, service) in section.into_iter().flat_map(|s| s.services) {
            let Some((plain, cluster)) = split_pool_name(&name) else {
                continue;
            };
            // A pool name is `<service>.<cluster>`, so the plain part is a valid name; one
            // that is not cannot have come from this syncer and is skipped.
            let Ok(plain) = ServiceName::parse(plain) else {
                continue;
            };
            let doc = documents.entry(cluster).or_default();
            pick(doc)
                .get_or_insert_with(Section::default)
                .services
                .insert(plain, service);
        }
    }
    split(merged.http, documents, |d| &mut d.http);
    split(merged.tcp, documents, |d| &mut d.tcp);
    split(merged.udp, documents, |d| &mut d.udp);
}

/// The clusters the header comment names (`# Clusters: a, b` or `# Clusters: none`).
fn header_clusters(bytes: &[u8]) -> Vec<ClusterName> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| {
            line.trim_start_matches('#')
                .trim()
                .strip_prefix("Clusters:")
        })
        // `none` is how the header says there are none (a cluster of that name that exports no
        // service is not restored; one with services is, from its pools).
        .filter(|list| list.trim() != "none")
        .flat_map(|list| list.split(','))
        .filter_map(|name| ClusterName::parse(name.trim()).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use ksd_shared::traefik::{Limits, TraefikVersion, parse_cluster_document};

    use super::*;

    fn doc(cluster: &str, yaml: &str) -> ClusterDocument {
        ClusterDocument {
            cluster: ClusterName::parse(cluster).unwrap(),
            document: parse_cluster_document(yaml.as_bytes(), &Limits::default()).unwrap(),
        }
    }

    #[test]
    fn a_composed_file_gives_back_every_clusters_document() {
        let a = doc(
            "a",
            "http:\n  services:\n    web:\n      loadBalancer:\n        passHostHeader: false\n        servers:\n          - url: \"http://10.0.0.1:80\"\ntcp:\n  services:\n    db:\n      loadBalancer:\n        servers:\n          - address: \"10.0.0.2:5432\"\n",
        );
        let b = doc(
            "b",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n          - url: \"http://10.1.0.1:80\"\nudp:\n  services:\n    dns:\n      loadBalancer:\n        servers:\n          - address: \"10.1.0.2:53\"\n",
        );
        let empty = doc("c", "# nothing exported\n");
        let composed =
            crate::compose::compose(&[a.clone(), b.clone(), empty.clone()], TraefikVersion::V3)
                .unwrap();
        let restored = from_merged_file(&composed.bytes).unwrap();
        assert_eq!(restored, vec![a, b, empty]);
    }

    #[test]
    fn a_file_that_is_not_ours_restores_nothing() {
        assert!(from_merged_file(b"http:\n  routers: {}\n").is_err());
        assert_eq!(from_merged_file(b"# Clusters: none\n").unwrap(), Vec::new());
    }
}
