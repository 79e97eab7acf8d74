//! A rendered document kept as one block of text per service, so that a change to a few
//! services re-renders only those and the file is re-assembled from the cached blocks.
//!
//! The assembled bytes are exactly what [`super::render`] writes for the same services (the
//! blocks come from the same [`super::render_service`]); the property tests in
//! `shared/tests/properties.rs` hold the two to that.

use std::collections::BTreeMap;

use super::render::{push_header, push_no_services, push_section_head};
use super::{
    Document, LoadBalancer, Protocol, Rendered, Section, SectionVisitor, Service, ServiceName,
    TraefikVersion, render_service,
};

/// Rendered service blocks by section and name.
#[derive(Clone, Debug)]
pub struct Blocks {
    version: TraefikVersion,
    /// `http`, `tcp`, `udp`, in the order they are written.
    sections: [BTreeMap<ServiceName, Box<str>>; 3],
    /// Sum of the blocks' lengths, to size the assembled file in one allocation.
    bytes: usize,
    /// Scratch buffer for rendering one block, reused across calls.
    scratch: String,
}

fn slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Http => 0,
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
    }
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Http, Protocol::Tcp, Protocol::Udp];

impl Blocks {
    /// No services.
    pub fn new(version: TraefikVersion) -> Blocks {
        Blocks {
            version,
            sections: Default::default(),
            bytes: 0,
            scratch: String::new(),
        }
    }

    /// Every service of `doc`, rendered.
    pub fn from_document(doc: &Document, version: TraefikVersion) -> Blocks {
        struct Fill<'a>(&'a mut Blocks);
        impl SectionVisitor for Fill<'_> {
            fn visit<L: LoadBalancer>(&mut self, protocol: Protocol, section: &Section<L>) {
                for (name, service) in &section.services {
                    self.0.set(protocol, name, service);
                }
            }
        }
        let mut blocks = Blocks::new(version);
        doc.visit(&mut Fill(&mut blocks));
        blocks
    }

    pub fn version(&self) -> TraefikVersion {
        self.version
    }

    /// Renders `service` as the block of `name` in `protocol`'s section, replacing any block
    /// that name had there. Returns true when the bytes changed.
    pub fn set<L: LoadBalancer>(
        &mut self,
        protocol: Protocol,
        name: &ServiceName,
        service: &Service<L>,
    ) -> bool {
        self.scratch.clear();
        render_service(&mut self.scratch, name, service, self.version);
        let section = &mut self.sections[slot(protocol)];
        match section.get_mut(name) {
            Some(block) if **block == *self.scratch => false,
            Some(block) => {
                self.bytes = self.bytes - block.len() + self.scratch.len();
                *block = self.scratch.as_str().into();
                true
            }
            None => {
                self.bytes += self.scratch.len();
                section.insert(name.clone(), self.scratch.as_str().into());
                true
            }
        }
    }

    /// Removes `name`'s block from `protocol`'s section. Returns true when there was one.
    pub fn remove(&mut self, protocol: Protocol, name: &ServiceName) -> bool {
        match self.sections[slot(protocol)].remove(name) {
            Some(block) => {
                self.bytes -= block.len();
                true
            }
            None => false,
        }
    }

    /// The block of `name` in `protocol`'s section.
    pub fn get(&self, protocol: Protocol, name: &str) -> Option<&str> {
        self.sections[slot(protocol)].get(name).map(|b| &**b)
    }

    /// The services' names in `protocol`'s section, in the order they are written.
    pub fn names(&self, protocol: Protocol) -> impl Iterator<Item = &ServiceName> {
        self.sections[slot(protocol)].keys()
    }

    /// Number of services over all sections.
    pub fn service_count(&self) -> usize {
        self.sections.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(BTreeMap::is_empty)
    }

    /// Writes the whole file into `out` (cleared first, its capacity reused): the same bytes
    /// [`super::render`] writes for these services with this `header`.
    pub fn assemble_into(&self, header: &str, out: &mut String) {
        out.clear();
        // Exact: a reused buffer only just too small would otherwise double.
        out.reserve_exact(self.bytes + header.len() + 64);
        push_header(out, header);
        if self.is_empty() {
            push_no_services(out);
            return;
        }
        for protocol in PROTOCOLS {
            let section = &self.sections[slot(protocol)];
            if section.is_empty() {
                continue;
            }
            push_section_head(out, protocol);
            for block in section.values() {
                out.push_str(block);
            }
        }
    }

    /// [`Blocks::assemble_into`] into a new [`Rendered`], with its hash.
    pub fn assemble(&self, header: &str) -> Rendered {
        let mut out = String::new();
        self.assemble_into(header, &mut out);
        Rendered::new(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traefik::{AddressLoadBalancer, HttpLoadBalancer, HttpServer, render};

    fn name(text: &str) -> ServiceName {
        text.parse().expect("test name")
    }

    fn http(urls: &[&str]) -> Service<HttpLoadBalancer> {
        Service {
            load_balancer: HttpLoadBalancer {
                servers: urls
                    .iter()
                    .map(|u| HttpServer {
                        url: u.parse().expect("test url"),
                    })
                    .collect(),
                ..HttpLoadBalancer::default()
            },
        }
    }

    #[test]
    fn set_and_remove_track_the_rendered_document() {
        let mut doc = Document::default();
        let mut blocks = Blocks::new(TraefikVersion::V3);
        assert_eq!(blocks.assemble("h"), render(&doc, TraefikVersion::V3, "h"));

        let web = http(&["http://10.0.0.1:80"]);
        assert!(blocks.set(Protocol::Http, &name("web"), &web));
        assert!(!blocks.set(Protocol::Http, &name("web"), &web));
        doc.http
            .get_or_insert_default()
            .services
            .insert(name("web"), web);
        let tcp = Service {
            load_balancer: AddressLoadBalancer::default(),
        };
        blocks.set(Protocol::Tcp, &name("db"), &tcp);
        doc.tcp
            .get_or_insert_default()
            .services
            .insert(name("db"), tcp);
        assert_eq!(blocks.assemble("h"), render(&doc, TraefikVersion::V3, "h"));
        assert_eq!(blocks.service_count(), 2);

        assert!(blocks.remove(Protocol::Http, &name("web")));
        assert!(!blocks.remove(Protocol::Http, &name("web")));
        doc.http = None;
        assert_eq!(blocks.assemble("h"), render(&doc, TraefikVersion::V3, "h"));
        assert_eq!(
            blocks.bytes,
            blocks.get(Protocol::Tcp, "db").map_or(0, str::len)
        );
    }
}
