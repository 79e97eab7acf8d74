//! What the exporter publishes, kept per Service: named backends after the address policy,
//! checked with the syncer's rules and rendered as one block per Traefik service.
//!
//! [`Published::update`] brings up to date only the Services the last [`Index::refresh`]
//! recomputed, plus those whose names a collision moved ([`NameBook`]), and
//! [`Published::snapshot`] assembles the objects from the cached blocks. The bytes are those
//! [`document::build`] writes for [`Index::backends`] after [`document::apply_address_policy`]
//! (the property tests in `index/tests/published.rs` hold the two to that):
//! - names are unique across Services, so every Traefik service comes from one Service and a
//!   Service's own document (its backends through `document_from_backends` and `validate`)
//!   holds exactly the blocks the whole document holds for it;
//! - a Service whose document is invalid keeps every snapshot from being built, as an invalid
//!   whole document does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ksd_shared::backend::{Backend, Origin, Protocol};
use ksd_shared::names::{ClusterName, NameBook, NameCollision, NameTemplate, ObjectFormat};
use ksd_shared::traefik::{
    self, Blocks, Document, DocumentError, LoadBalancer, Section, SectionVisitor, ServiceName,
};

use super::{Index, PortBackend, ServiceKey};
use crate::document::{self, DocumentBuildError, RefusedTarget, Snapshot};
use crate::publication::ServiceNames;

/// The published state of one Service.
#[derive(Debug, Default)]
struct Entry {
    /// Its distinct origins, as entered in the name book.
    origins: Vec<Origin>,
    /// Its backends, named and sorted, after the address policy: kept for the `backends`
    /// format, and when its document is invalid (to report why).
    backends: Vec<Backend>,
    /// Its backends' names (after the address policy), for what a publication announces.
    names: Vec<String>,
    backend_count: usize,
    /// Servers after the address policy.
    servers: usize,
    /// The Traefik services its backends render to.
    blocks: Vec<(Protocol, ServiceName)>,
    refused: Vec<RefusedTarget>,
    /// Servers before the address policy.
    computed_servers: usize,
    /// Whether its document failed the checks (it then has no blocks).
    invalid: bool,
}

/// Named backends, refused targets and rendered blocks of every exported Service.
#[derive(Debug)]
pub struct Published {
    cluster: ClusterName,
    formats: Vec<ObjectFormat>,
    /// Whether a configured format needs every backend (`backends`).
    keep_backends: bool,
    header: String,
    names: NameBook,
    blocks: Blocks,
    services: HashMap<ServiceKey, Entry>,
    /// Every Service's Traefik service names, rebuilt only when a name changes.
    service_names: Arc<ServiceNames>,
    /// Services whose document is invalid.
    invalid: BTreeSet<ServiceKey>,
    refused: BTreeSet<RefusedTarget>,
    backends: usize,
    computed_servers: usize,
    servers: usize,
}

impl Published {
    /// Nothing published yet.
    pub fn new(cluster: ClusterName, template: NameTemplate, formats: &[ObjectFormat]) -> Self {
        Published {
            header: document::header(&cluster),
            cluster,
            formats: formats.to_vec(),
            keep_backends: formats.contains(&ObjectFormat::Backends),
            names: NameBook::new(template),
            blocks: Blocks::new(document::TRAEFIK_VERSION),
            services: HashMap::new(),
            service_names: Arc::default(),
            invalid: BTreeSet::new(),
            refused: BTreeSet::new(),
            backends: 0,
            computed_servers: 0,
            servers: 0,
        }
    }

    /// Brings the Services `index` recomputed since the last update up to date. Call
    /// [`Index::refresh`] first.
    pub fn update(&mut self, index: &mut Index) {
        let keys = index.take_recomputed();
        let mut removed = Vec::new();
        let mut added = Vec::new();
        for key in &keys {
            let old = self
                .services
                .get(key)
                .map_or(&[][..], |e| e.origins.as_slice());
            let new = distinct_origins(index.ports(key));
            removed.extend(old.iter().filter(|o| !new.contains(o)).cloned());
            added.extend(new.into_iter().filter(|o| !old.contains(o)));
        }
        let renamed = self.names.update(removed, added);
        let mut touched: BTreeSet<ServiceKey> = keys.into_iter().collect();
        touched.extend(
            renamed
                .into_iter()
                .map(|origin| ServiceKey::new(origin.namespace, origin.service)),
        );
        let names_before: Vec<Option<Vec<String>>> = touched
            .iter()
            .map(|key| self.services.get(key).map(|e| e.names.clone()))
            .collect();
        // Every old block goes first: a name one Service gives up may be another's now.
        for key in &touched {
            self.withdraw(key);
        }
        for key in &touched {
            self.enter(key, index.ports(key));
        }
        // Endpoints moving (the common change) leave every name as it was.
        let names_after = touched
            .iter()
            .map(|key| self.services.get(key).map(|e| &e.names));
        if !names_before.iter().map(Option::as_ref).eq(names_after) {
            self.service_names = Arc::new(ServiceNames::from_names(
                self.services
                    .iter()
                    .map(|(key, entry)| (key.clone(), entry.names.clone())),
            ));
        }
    }

    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Every name collision, as [`ksd_shared::names::assign_names`] reports them.
    pub fn collisions(&self) -> Vec<NameCollision> {
        self.names.collisions()
    }

    /// Every target the address policy leaves out.
    pub fn refused(&self) -> &BTreeSet<RefusedTarget> {
        &self.refused
    }

    /// Number of backends (published Service ports).
    pub fn backend_count(&self) -> usize {
        self.backends
    }

    /// Servers before the address policy.
    pub fn computed_server_count(&self) -> usize {
        self.computed_servers
    }

    /// The objects to publish, in every configured format.
    pub fn snapshot(&self) -> Result<Snapshot, DocumentBuildError> {
        if let Some(key) = self.invalid.iter().next() {
            let backends = self.services.get(key).map_or(&[][..], |e| &e.backends);
            let source = match service_document(backends) {
                Err(source) => source,
                // Not reached: an entry is invalid only when its document is.
                Ok(_) => DocumentError::InvalidName {
                    line: None,
                    path: key.to_string(),
                    message: "refused".to_owned(),
                },
            };
            return Err(DocumentBuildError::Invalid {
                cluster: self.cluster.to_string(),
                source,
            });
        }
        let mut outputs = Vec::with_capacity(self.formats.len());
        for format in &self.formats {
            let bytes = match format {
                ObjectFormat::Traefik => {
                    let mut text = String::new();
                    self.blocks.assemble_into(&self.header, &mut text);
                    text.into_bytes()
                }
                ObjectFormat::Backends => document::backends_bytes(&self.cluster, self.all())?,
            };
            outputs.push(document::output(&self.cluster, *format, bytes));
        }
        Ok(Snapshot {
            outputs,
            backends: self.backends,
            servers: self.servers,
            services: Arc::clone(&self.service_names),
            first_change: None,
        })
    }

    /// Every backend after the address policy, sorted.
    fn all(&self) -> Vec<Backend> {
        let mut all: Vec<Backend> = self
            .services
            .values()
            .flat_map(|entry| entry.backends.iter().cloned())
            .collect();
        all.sort();
        all
    }

    /// Takes what `key` published out of the totals and the blocks.
    fn withdraw(&mut self, key: &ServiceKey) {
        let Some(entry) = self.services.remove(key) else {
            return;
        };
        for (protocol, name) in &entry.blocks {
            self.blocks.remove(*protocol, name);
        }
        for target in &entry.refused {
            self.refused.remove(target);
        }
        self.invalid.remove(key);
        self.backends -= entry.backend_count;
        self.computed_servers -= entry.computed_servers;
        self.servers -= entry.servers;
    }

    /// Names, filters, checks and renders the backends of `key`.
    fn enter(&mut self, key: &ServiceKey, ports: &[PortBackend]) {
        if ports.is_empty() {
            return;
        }
        let mut backends: Vec<Backend> = ports
            .iter()
            .map(|port| Backend {
                name: self.names.name(&port.origin).unwrap_or_default().to_owned(),
                origin: port.origin.clone(),
                protocol: port.protocol,
                scheme: port.scheme,
                options: port.options.clone(),
                targets: port.targets.clone(),
            })
            .collect();
        backends.sort();
        let computed_servers = server_count(&backends);
        let (backends, refused) = document::apply_address_policy(backends);
        let mut entry = Entry {
            origins: distinct_origins(ports),
            refused: refused.into_iter().collect(),
            computed_servers,
            ..Entry::default()
        };
        match service_document(&backends) {
            Ok(doc) => doc.visit(&mut Fill {
                blocks: &mut self.blocks,
                entered: &mut entry.blocks,
            }),
            Err(_) => {
                entry.invalid = true;
                self.invalid.insert(key.clone());
            }
        }
        entry.backend_count = backends.len();
        entry.servers = server_count(&backends);
        entry.names = backends.iter().map(|b| b.name.clone()).collect();
        if self.keep_backends || entry.invalid {
            entry.backends = backends;
        }
        self.refused.extend(entry.refused.iter().cloned());
        self.backends += entry.backend_count;
        self.computed_servers += entry.computed_servers;
        self.servers += entry.servers;
        self.services.insert(key.clone(), entry);
    }
}

/// One Service's backends as a checked document.
fn service_document(backends: &[Backend]) -> Result<Document, DocumentError> {
    let doc = traefik::document_from_backends(backends)?;
    traefik::validate(&doc)?;
    Ok(doc)
}

/// Renders every service of a document into the blocks, recording which it set.
struct Fill<'a> {
    blocks: &'a mut Blocks,
    entered: &'a mut Vec<(Protocol, ServiceName)>,
}

impl SectionVisitor for Fill<'_> {
    fn visit<L: LoadBalancer>(&mut self, protocol: Protocol, section: &Section<L>) {
        for (name, service) in &section.services {
            self.blocks.set(protocol, name, service);
            self.entered.push((protocol, name.clone()));
        }
    }
}

fn distinct_origins(ports: &[PortBackend]) -> Vec<Origin> {
    let mut origins: Vec<Origin> = ports.iter().map(|p| p.origin.clone()).collect();
    origins.sort();
    origins.dedup();
    origins
}

fn server_count(backends: &[Backend]) -> usize {
    backends.iter().map(|b| b.targets.len()).sum()
}
