//! What the exporter published: each Service's Traefik service names, and the ETag of the
//! Traefik object that carries them.
//!
//! The names come from the backends a snapshot was rendered from (after naming, collision
//! suffixes and the address policy), so they are exactly the names in the published document.
//! The publisher sends a [`Publication`] after each complete publish; readers (the event
//! recorder) only look at it.

use std::collections::BTreeMap;
use std::sync::Arc;

use ksd_shared::backend::Backend;

use crate::index::ServiceKey;

/// The Traefik service names of every Service in one document, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceNames(BTreeMap<ServiceKey, Vec<String>>);

impl ServiceNames {
    pub fn from_backends(backends: &[Backend]) -> ServiceNames {
        let mut names: BTreeMap<ServiceKey, Vec<String>> = BTreeMap::new();
        for backend in backends {
            let key = ServiceKey::new(&backend.origin.namespace, &backend.origin.service);
            names.entry(key).or_default().push(backend.name.clone());
        }
        for list in names.values_mut() {
            list.sort();
        }
        ServiceNames(names)
    }

    /// From each Service's Traefik service names; a Service without any publishes nothing and
    /// is left out.
    pub fn from_names(names: impl IntoIterator<Item = (ServiceKey, Vec<String>)>) -> ServiceNames {
        let mut names: BTreeMap<ServiceKey, Vec<String>> = names
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .collect();
        for list in names.values_mut() {
            list.sort();
        }
        ServiceNames(names)
    }

    pub fn get(&self, service: &ServiceKey) -> Option<&[String]> {
        self.0.get(service).map(Vec::as_slice)
    }

    pub fn contains(&self, service: &ServiceKey) -> bool {
        self.0.contains_key(service)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &[String])> {
        self.0.iter().map(|(k, v)| (k, v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The Traefik document in the bucket, as this process last published it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The ETag the store gave the Traefik object.
    pub etag: String,
    pub services: Arc<ServiceNames>,
}
