//! The rules across values: what a well-formed document may say beyond what each typed value
//! already guarantees.

use super::{Document, DocumentError, LoadBalancer, Protocol, Section, SectionVisitor};
use crate::names::shorten;

/// Checks the rules every cluster document follows, whoever wrote it, beyond its typed values
/// (server URLs and addresses, names, cookie names, paths and durations are valid by
/// construction):
/// - service names are plain names (no per-cluster pool names `<service>.<cluster>`);
/// - a name appears in one section only;
/// - a load balancer lists each server once.
pub fn validate(doc: &Document) -> Result<(), DocumentError> {
    check(doc, false)
}

/// [`validate`] for a merged document: names may also be per-cluster pool names
/// (`<service>.<cluster>`).
pub fn validate_merged(doc: &Document) -> Result<(), DocumentError> {
    check(doc, true)
}

struct Check {
    allow_pools: bool,
    error: Option<DocumentError>,
}

impl SectionVisitor for Check {
    fn visit<L: LoadBalancer>(&mut self, protocol: Protocol, section: &Section<L>) {
        if self.error.is_none() {
            self.error = check_section(protocol, section, self.allow_pools).err();
        }
    }
}

fn check(doc: &Document, allow_pools: bool) -> Result<(), DocumentError> {
    let mut check = Check {
        allow_pools,
        error: None,
    };
    doc.visit(&mut check);
    if let Some(error) = check.error {
        return Err(error);
    }
    unique_across_sections(doc)
}

fn check_section<L: LoadBalancer>(
    protocol: Protocol,
    section: &Section<L>,
    allow_pools: bool,
) -> Result<(), DocumentError> {
    for (name, service) in &section.services {
        if !allow_pools && name.is_pool() {
            return Err(DocumentError::InvalidName {
                line: None,
                path: format!("{}.services", protocol.as_str()),
                message: format!(
                    "{:?}: '.' is reserved: it separates a service from its cluster in pool \
                     names",
                    shorten(name)
                ),
            });
        }
        let servers = service.load_balancer.servers();
        // Our own documents list servers sorted: one pass proves them distinct.
        if servers.windows(2).all(|pair| pair[0] < pair[1]) {
            continue;
        }
        let mut sorted: Vec<&L::Server> = servers.iter().collect();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(DocumentError::InvalidServer {
                line: None,
                path: format!(
                    "{}.services.{}.loadBalancer.servers",
                    protocol.as_str(),
                    shorten(name)
                ),
                message: format!("{:?}: it is listed twice", pair[0].to_string()),
            });
        }
    }
    Ok(())
}

/// Traefik keeps http, tcp and udp services apart, but reports and `main.yml` authors read
/// names across sections: one name, one service. Looked up in the other sections' maps, so
/// the common single-section document costs nothing here.
fn unique_across_sections(doc: &Document) -> Result<(), DocumentError> {
    let http = doc.http.as_ref().map(|s| &s.services);
    let tcp = doc.tcp.as_ref().map(|s| &s.services);
    let udp = doc.udp.as_ref().map(|s| &s.services);
    let duplicate = |name: &str, first: Protocol, second: Protocol| {
        Err(DocumentError::DuplicateService {
            name: shorten(name),
            first: first.as_str(),
            second: second.as_str(),
        })
    };
    for name in tcp.iter().flat_map(|services| services.keys()) {
        if http.is_some_and(|http| http.contains_key(name)) {
            return duplicate(name, Protocol::Http, Protocol::Tcp);
        }
    }
    for name in udp.iter().flat_map(|services| services.keys()) {
        if http.is_some_and(|http| http.contains_key(name)) {
            return duplicate(name, Protocol::Http, Protocol::Udp);
        }
        if tcp.is_some_and(|tcp| tcp.contains_key(name)) {
            return duplicate(name, Protocol::Tcp, Protocol::Udp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::traefik::{
        AddressLoadBalancer, AddressServer, HttpLoadBalancer, HttpServer, HttpService, ServiceName,
        TcpService, UdpService,
    };

    fn name(text: &str) -> ServiceName {
        text.parse().unwrap()
    }

    fn http_doc(service: &str, urls: &[&str]) -> Document {
        let load_balancer = HttpLoadBalancer {
            servers: urls
                .iter()
                .map(|u| HttpServer {
                    url: u.parse().unwrap(),
                })
                .collect(),
            ..HttpLoadBalancer::default()
        };
        let mut services = BTreeMap::new();
        services.insert(name(service), HttpService { load_balancer });
        Document {
            http: Some(Section { services }),
            ..Document::default()
        }
    }

    #[test]
    fn valid_documents_pass() {
        validate(&http_doc(
            "web",
            &["https://10.0.0.2:443", "http://10.0.0.1:80"],
        ))
        .unwrap();
        validate(&http_doc("no-servers", &[])).unwrap();
        validate(&Document::default()).unwrap();
    }

    #[test]
    fn pool_names_only_in_merged_documents() {
        let doc = http_doc("web.eu-1", &[]);
        let err = validate(&doc).unwrap_err();
        assert_eq!(err.reason(), "invalid_name");
        assert!(err.to_string().contains("\"web.eu-1\""), "{err}");
        validate_merged(&doc).unwrap();
    }

    #[test]
    fn a_server_is_listed_once() {
        let doc = http_doc("web", &["http://10.0.0.1:80", "http://10.0.0.1:80"]);
        let err = validate(&doc).unwrap_err();
        assert_eq!(err.reason(), "invalid_server");
        let message = err.to_string();
        assert!(
            message.contains("listed twice")
                && message.contains("http.services.web.loadBalancer.servers")
                && message.contains("http://10.0.0.1:80"),
            "{message}"
        );
        let address = |a: &str| AddressServer {
            address: a.parse().unwrap(),
        };
        let mut tcp = BTreeMap::new();
        tcp.insert(
            name("db"),
            TcpService {
                load_balancer: AddressLoadBalancer {
                    servers: vec![
                        address("10.0.0.2:1"),
                        address("10.0.0.1:1"),
                        address("10.0.0.2:1"),
                    ],
                },
            },
        );
        let err = validate(&Document {
            tcp: Some(Section { services: tcp }),
            ..Document::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("tcp.services.db"), "{err}");
    }

    #[test]
    fn a_name_lives_in_one_section() {
        let mut udp = BTreeMap::new();
        udp.insert(name("dns"), UdpService::default());
        let mut tcp = BTreeMap::new();
        tcp.insert(name("dns"), TcpService::default());
        let err = validate(&Document {
            http: None,
            tcp: Some(Section { services: tcp }),
            udp: Some(Section { services: udp }),
        })
        .unwrap_err();
        assert_eq!(err.reason(), "duplicate_service");
        let message = err.to_string();
        assert!(
            message.contains("\"dns\"") && message.contains("tcp") && message.contains("udp"),
            "{message}"
        );
    }
}
