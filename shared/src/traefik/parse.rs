//! The strict reader for cluster documents fetched from the bucket.
//!
//! A document is read in three steps: byte-level checks (size, UTF-8, `{{`), a YAML event
//! stream turned into a small tree with line numbers (refusing anchors, aliases, tags,
//! duplicate keys and deep nesting while it is read, so an alias bomb costs nothing), and a
//! decoder that walks the tree with a path (`http.services.web.loadBalancer`) and refuses
//! anything outside the services-only format. The result is then [`validate`]d.

use std::collections::BTreeMap;
use std::time::Duration;

use yaml_rust2::Event;
use yaml_rust2::parser::Parser;
use yaml_rust2::scanner::TScalarStyle;

use super::{
    AddressLoadBalancer, AddressServer, Document, HttpLoadBalancer, HttpSection, HttpServer,
    HttpService, Sticky, TcpSection, TcpService, UdpSection, UdpService, validate, validate_merged,
};
use crate::backend::{HealthCheck, SameSite, StickyCookie};
use crate::names::{NameError, shorten};

/// Default for [`Limits::max_bytes`]: 8 MiB, room for tens of thousands of services.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Deepest nesting a document may have. The format needs 7 levels
/// (`http.services.<name>.loadBalancer.sticky.cookie.<field>`).
const MAX_DEPTH: usize = 16;

/// Bounds on what [`parse_cluster_document`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Larger documents are refused before they are parsed.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why a cluster document was refused. Each message names the line, path, service, field or
/// value at fault, so an operator can fix the document from the log line alone.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is {size} bytes, more than the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("the document is not valid UTF-8: {source}")]
    NotUtf8 {
        #[source]
        source: std::str::Utf8Error,
    },
    #[error(
        "line {line}: \"{{{{\" is not allowed anywhere in a document: Traefik's file provider \
         reads files as Go templates"
    )]
    TemplateMarker { line: usize },
    #[error("line {line}: invalid YAML: {message}")]
    Yaml { line: usize, message: String },
    #[error("line {line}: a second YAML document; an object holds exactly one document")]
    MultipleDocuments { line: usize },
    #[error(
        "line {line}: YAML {feature} are not allowed: the format needs none, and aliases can \
         expand without bound"
    )]
    UnsupportedYaml { line: usize, feature: &'static str },
    #[error("line {line}: nested more than {max} levels deep")]
    TooDeep { line: usize, max: usize },
    #[error("line {line}: {path}: duplicate key {key:?}")]
    DuplicateKey {
        line: usize,
        path: String,
        key: String,
    },
    #[error(
        "line {line}: {path}: documents hold only services (http.services, tcp.services, \
         udp.services); routers, middlewares, transports and TLS belong in Traefik's own \
         configuration"
    )]
    NotServicesOnly { line: usize, path: String },
    #[error(
        "line {line}: {path}: `{kind}` services are not supported; every service is a \
         `loadBalancer`"
    )]
    UnsupportedService {
        line: usize,
        path: String,
        kind: String,
    },
    #[error("line {line}: {path}: unknown field `{field}`, expected {expected}")]
    UnknownField {
        line: usize,
        path: String,
        field: String,
        expected: &'static str,
    },
    #[error("line {line}: {path}: missing field `{field}`")]
    MissingField {
        line: usize,
        path: String,
        field: &'static str,
    },
    #[error("line {line}: {path} is empty{hint}; Traefik refuses empty elements")]
    EmptyElement {
        line: usize,
        path: String,
        hint: &'static str,
    },
    #[error("line {line}: {path}: expected {expected}, found {found}")]
    InvalidType {
        line: usize,
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("line {line}: {path}: {reason}")]
    InvalidValue {
        line: usize,
        path: String,
        reason: String,
    },
    #[error("{section}.services: {source}")]
    InvalidName {
        section: &'static str,
        name: String,
        #[source]
        source: NameError,
    },
    #[error("service {service:?}: server {value:?}: {reason}")]
    InvalidServer {
        service: String,
        value: String,
        reason: &'static str,
    },
    #[error("service {service:?}: {field} {value:?}: {reason}")]
    InvalidOption {
        service: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "service {name:?} is defined in both {first}.services and {second}.services; a name \
         must be unique across http, tcp and udp"
    )]
    DuplicateService {
        name: String,
        first: &'static str,
        second: &'static str,
    },
}

impl DocumentError {
    /// A short, stable label for metrics (`reason="too_large"`).
    pub fn reason(&self) -> &'static str {
        match self {
            DocumentError::TooLarge { .. } => "too_large",
            DocumentError::NotUtf8 { .. } => "not_utf8",
            DocumentError::TemplateMarker { .. } => "template_marker",
            DocumentError::Yaml { .. } => "yaml",
            DocumentError::MultipleDocuments { .. } => "multiple_documents",
            DocumentError::UnsupportedYaml { .. } => "unsupported_yaml",
            DocumentError::TooDeep { .. } => "too_deep",
            DocumentError::DuplicateKey { .. } => "duplicate_key",
            DocumentError::NotServicesOnly { .. } => "not_services_only",
            DocumentError::UnsupportedService { .. } => "unsupported_service",
            DocumentError::UnknownField { .. } => "unknown_field",
            DocumentError::MissingField { .. } => "missing_field",
            DocumentError::EmptyElement { .. } => "empty_element",
            DocumentError::InvalidType { .. } => "invalid_type",
            DocumentError::InvalidValue { .. } => "invalid_value",
            DocumentError::InvalidName { .. } => "invalid_name",
            DocumentError::InvalidServer { .. } => "invalid_server",
            DocumentError::InvalidOption { .. } => "invalid_option",
            DocumentError::DuplicateService { .. } => "duplicate_service",
        }
    }

    /// The 1-based line the error points at, when it comes from reading the text.
    pub fn line(&self) -> Option<usize> {
        match self {
            DocumentError::TemplateMarker { line }
            | DocumentError::Yaml { line, .. }
            | DocumentError::MultipleDocuments { line }
            | DocumentError::UnsupportedYaml { line, .. }
            | DocumentError::TooDeep { line, .. }
            | DocumentError::DuplicateKey { line, .. }
            | DocumentError::NotServicesOnly { line, .. }
            | DocumentError::UnsupportedService { line, .. }
            | DocumentError::UnknownField { line, .. }
            | DocumentError::MissingField { line, .. }
            | DocumentError::EmptyElement { line, .. }
            | DocumentError::InvalidType { line, .. }
            | DocumentError::InvalidValue { line, .. } => Some(*line),
            DocumentError::TooLarge { .. }
            | DocumentError::NotUtf8 { .. }
            | DocumentError::InvalidName { .. }
            | DocumentError::InvalidServer { .. }
            | DocumentError::InvalidOption { .. }
            | DocumentError::DuplicateService { .. } => None,
        }
    }
}

/// Reads one cluster's Traefik document, strictly.
///
/// Refused, in this order: more than `limits.max_bytes` bytes; not UTF-8; `{{` anywhere
/// (comments included: Traefik's template pass sees them); invalid YAML, several documents,
/// anchors, aliases or tags, duplicate keys, deep nesting; root keys other than `http`, `tcp`,
/// `udp`; `routers`, `middlewares`, `serversTransports` and root `tls` (documents hold only
/// services); services other than `loadBalancer`; unknown fields (names are case-sensitive);
/// empty elements Traefik rejects (`http: {}`, `services: {}`, `services: null`,
/// `loadBalancer: {}`, `healthCheck: {}`, ...). `servers: []` is accepted. Then the content
/// must pass [`validate`]. An empty or comment-only document is an empty [`Document`].
pub fn parse_cluster_document(bytes: &[u8], limits: &Limits) -> Result<Document, DocumentError> {
    if bytes.len() > limits.max_bytes {
        return Err(DocumentError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let doc = read(bytes)?;
    validate(&doc)?;
    Ok(doc)
}

/// Reads a merged file (the output of [`crate::merge::merge`] and [`super::render`]) with the
/// same rules as [`parse_cluster_document`], except that per-cluster pool names
/// (`<service>.<cluster>`, see [`crate::names::pool_name`]) are allowed and there is no size
/// limit (the file is our own, and 100,000 pools take about 16 MB). The syncer reads every file
/// back this way before writing it, so Traefik is never given one these rules would refuse.
pub fn parse_merged_document(bytes: &[u8]) -> Result<Document, DocumentError> {
    let doc = read(bytes)?;
    validate_merged(&doc)?;
    Ok(doc)
}

/// Everything but the content rules and the size limit.
fn read(bytes: &[u8]) -> Result<Document, DocumentError> {
    let text = std::str::from_utf8(bytes).map_err(|source| DocumentError::NotUtf8 { source })?;
    if let Some(at) = text.find("{{") {
        return Err(DocumentError::TemplateMarker {
            line: line_of(text, at),
        });
    }
    // YAML allows a byte-order mark; the event parser does not skip it.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let root = load(text)?;
    decode_document(root)
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()
        .get(..byte)
        .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
        + 1
}

// ---------------------------------------------------------------------------------------------
// YAML events -> tree

#[derive(Debug)]
struct Node {
    line: usize,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// A plain `null`, `~` or nothing.
    Null,
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    value: Node,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Sequence(_) => "a sequence",
            Value::Mapping(_) => "a mapping",
        }
    }
}

enum Frame {
    Sequence {
        line: usize,
        items: Vec<Node>,
    },
    Mapping {
        line: usize,
        entries: Vec<Entry>,
        /// The key whose value is being read.
        pending: Option<(String, usize)>,
    },
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Reads the event stream into a tree. Stops at the first anchor, alias or tag, so an alias
/// bomb is refused before anything is expanded (nothing ever is).
fn load(text: &str) -> Result<Option<Node>, DocumentError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|error| DocumentError::Yaml {
            line: error.marker().line(),
            message: error.info().to_owned(),
        })?;
        let line = mark.line();
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(DocumentError::MultipleDocuments { line });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(DocumentError::UnsupportedYaml {
                    line,
                    feature: "aliases",
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                refuse_anchor_and_tag(line, anchor, tag.is_some())?;
                let plain = style == TScalarStyle::Plain;
                let value = if plain && is_null(&text) {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                Node { line, value }
            }
            Event::SequenceStart(anchor, tag) => {
                refuse_anchor_and_tag(line, anchor, tag.is_some())?;
                refuse_depth(line, stack.len())?;
                stack.push(Frame::Sequence {
                    line,
                    items: Vec::new(),
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                refuse_anchor_and_tag(line, anchor, tag.is_some())?;
                refuse_depth(line, stack.len())?;
                stack.push(Frame::Mapping {
                    line,
                    entries: Vec::new(),
                    pending: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Sequence { line, items }) => Node {
                    line,
                    value: Value::Sequence(items),
                },
                Some(Frame::Mapping { line, entries, .. }) => {
                    if let Some(duplicate) = first_duplicate(&entries) {
                        return Err(DocumentError::DuplicateKey {
                            line: duplicate.line,
                            path: path_of(&stack),
                            key: shorten(&duplicate.key),
                        });
                    }
                    Node {
                        line,
                        value: Value::Mapping(entries),
                    }
                }
                None => {
                    return Err(DocumentError::Yaml {
                        line,
                        message: "unexpected end of a collection".to_owned(),
                    });
                }
            },
        };
        attach(&mut stack, &mut root, node)?;
    }
    Ok(root)
}

fn refuse_anchor_and_tag(line: usize, anchor: usize, tagged: bool) -> Result<(), DocumentError> {
    // The parser numbers anchors from 1; 0 means "no anchor".
    if anchor != 0 {
        return Err(DocumentError::UnsupportedYaml {
            line,
            feature: "anchors",
        });
    }
    if tagged {
        return Err(DocumentError::UnsupportedYaml {
            line,
            feature: "tags",
        });
    }
    Ok(())
}

fn refuse_depth(line: usize, depth: usize) -> Result<(), DocumentError> {
    if depth >= MAX_DEPTH {
        return Err(DocumentError::TooDeep {
            line,
            max: MAX_DEPTH,
        });
    }
    Ok(())
}

/// Puts a finished node where it belongs: the root, a sequence item, a mapping key or value.
fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) -> Result<(), DocumentError> {
    let Some((top, below)) = stack.split_last_mut() else {
        *root = Some(node);
        return Ok(());
    };
    match top {
        Frame::Sequence { items, .. } => items.push(node),
        Frame::Mapping {
            entries, pending, ..
        } => match pending.take() {
            Some((key, line)) => entries.push(Entry {
                key,
                line,
                value: node,
            }),
            None => {
                let key = match node.value {
                    Value::Scalar { text, .. } => text,
                    other => {
                        let found = other.kind();
                        return Err(DocumentError::InvalidType {
                            line: node.line,
                            path: path_of(below),
                            expected: "a mapping key that is a non-null scalar",
                            found,
                        });
                    }
                };
                *pending = Some((key, node.line));
            }
        },
    }
    Ok(())
}

/// The entry that repeats an earlier key, first in document order. Checked when the mapping
/// ends, by sorting references rather than hashing copies of every key: the services map of a
/// merged file has 100,000 keys, already in order.
fn first_duplicate(entries: &[Entry]) -> Option<&Entry> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].key.cmp(&entries[b].key).then(a.cmp(&b)));
    order
        .windows(2)
        .filter(|pair| entries[pair[0]].key == entries[pair[1]].key)
        .map(|pair| pair[1])
        .min()
        .and_then(|index| entries.get(index))
}

/// The path of the collection on top of the stack, from the frames below it: each holds the
/// key (or index) leading to the frame above it.
fn path_of(below: &[Frame]) -> String {
    let mut path = String::new();
    for frame in below {
        match frame {
            Frame::Sequence { items, .. } => path.push_str(&format!("[{}]", items.len())),
            Frame::Mapping { pending, .. } => {
                if let Some((key, _)) = pending {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&shorten(key));
                }
            }
        }
    }
    if path.is_empty() {
        "the root".to_owned()
    } else {
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Tree -> Document

/// Where a node sits in the document, for error messages. Built on the stack as the decoder
/// descends and only formatted when an error is reported: a 100,000-service merged file is read
/// without allocating a path per node.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => f.write_str("the root"),
            Path::Key(Path::Root, key) => f.write_str(&shorten(key)),
            Path::Key(parent, key) => write!(f, "{parent}.{}", shorten(key)),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

fn decode_document(root: Option<Node>) -> Result<Document, DocumentError> {
    let mut doc = Document::default();
    let Some(root) = root else {
        return Ok(doc);
    };
    let entries = match root.value {
        // An empty document, or one of comments only: no services.
        Value::Null => return Ok(doc),
        Value::Mapping(entries) => entries,
        other => {
            return Err(DocumentError::InvalidType {
                line: root.line,
                path: "the root".to_owned(),
                expected: "a mapping with http, tcp and/or udp",
                found: other.kind(),
            });
        }
    };
    for Entry { key, line, value } in entries {
        match key.as_str() {
            "http" => {
                let services = decode_section(value, "http", line, decode_http_service)?;
                doc.http = Some(HttpSection { services });
            }
            "tcp" => {
                let services = decode_section(value, "tcp", line, |node, path| {
                    decode_address_service(node, path)
                        .map(|load_balancer| TcpService { load_balancer })
                })?;
                doc.tcp = Some(TcpSection { services });
            }
            "udp" => {
                let services = decode_section(value, "udp", line, |node, path| {
                    decode_address_service(node, path)
                        .map(|load_balancer| UdpService { load_balancer })
                })?;
                doc.udp = Some(UdpSection { services });
            }
            "tls" => {
                return Err(DocumentError::NotServicesOnly {
                    line,
                    path: "tls".to_owned(),
                });
            }
            _ => {
                return Err(DocumentError::UnknownField {
                    line,
                    path: "the root".to_owned(),
                    field: shorten(&key),
                    expected: "`http`, `tcp` or `udp`",
                });
            }
        }
    }
    Ok(doc)
}

/// A mapping that must hold at least one entry. `hint` follows "is empty" in the message.
fn non_empty_mapping(
    node: Node,
    path: &Path<'_>,
    key_line: usize,
    hint: &'static str,
) -> Result<Vec<Entry>, DocumentError> {
    match node.value {
        Value::Mapping(entries) if !entries.is_empty() => Ok(entries),
        Value::Mapping(_) => Err(DocumentError::EmptyElement {
            line: node.line,
            path: path.to_string(),
            hint,
        }),
        Value::Null => Err(DocumentError::EmptyElement {
            line: key_line,
            path: path.to_string(),
            hint,
        }),
        other => Err(DocumentError::InvalidType {
            line: node.line,
            path: path.to_string(),
            expected: "a mapping",
            found: other.kind(),
        }),
    }
}

/// `http:`, `tcp:` or `udp:`: only `services`, which must hold at least one service.
fn decode_section<S>(
    node: Node,
    section: &'static str,
    key_line: usize,
    decode_service: impl Fn(Node, &Path<'_>) -> Result<S, DocumentError>,
) -> Result<BTreeMap<String, S>, DocumentError> {
    let root = Path::Root;
    let section_path = root.key(section);
    let entries = non_empty_mapping(
        node,
        &section_path,
        key_line,
        " (leave the section out instead)",
    )?;
    // Collected first and built at once: keys arrive sorted in our own files, and a bulk build
    // from sorted input skips a search per key. Duplicates were refused while reading.
    let mut services = Vec::new();
    for Entry { key, line, value } in entries {
        let path = section_path.key(&key);
        match key.as_str() {
            "services" => {
                let list =
                    non_empty_mapping(value, &path, line, " (leave the section out instead)")?;
                for Entry { key, line, value } in list {
                    let service_path = path.key(&key);
                    let entries = non_empty_mapping(value, &service_path, line, "")?;
                    let service =
                        decode_service_kind(entries, &service_path, line, &decode_service)?;
                    services.push((key, service));
                }
            }
            "routers" | "middlewares" | "serversTransports" | "tls" => {
                return Err(DocumentError::NotServicesOnly {
                    line,
                    path: path.to_string(),
                });
            }
            _ => {
                return Err(DocumentError::UnknownField {
                    line,
                    path: section.to_owned(),
                    field: shorten(&key),
                    expected: "`services`",
                });
            }
        }
    }
    Ok(services.into_iter().collect())
}

/// A service is exactly one `loadBalancer`.
fn decode_service_kind<S>(
    entries: Vec<Entry>,
    path: &Path<'_>,
    key_line: usize,
    decode_service: &impl Fn(Node, &Path<'_>) -> Result<S, DocumentError>,
) -> Result<S, DocumentError> {
    let mut decoded = None;
    for Entry { key, line, value } in entries {
        match key.as_str() {
            "loadBalancer" => {
                let lb_path = path.key(&key);
                if matches!(&value.value, Value::Null) {
                    return Err(DocumentError::EmptyElement {
                        line,
                        path: lb_path.to_string(),
                        hint: "",
                    });
                }
                decoded = Some(decode_service(value, &lb_path)?);
            }
            "weighted" | "failover" | "mirroring" => {
                return Err(DocumentError::UnsupportedService {
                    line,
                    path: path.to_string(),
                    kind: key,
                });
            }
            _ => {
                return Err(DocumentError::UnknownField {
                    line,
                    path: path.to_string(),
                    field: shorten(&key),
                    expected: "`loadBalancer`",
                });
            }
        }
    }
    // Unreachable with a non-empty mapping whose every key is checked above, but an error
    // beats an assumption.
    decoded.ok_or_else(|| DocumentError::MissingField {
        line: key_line,
        path: path.to_string(),
        field: "loadBalancer",
    })
}

fn decode_http_service(node: Node, path: &Path<'_>) -> Result<HttpService, DocumentError> {
    let lb_line = node.line;
    let entries = non_empty_mapping(node, path, lb_line, "")?;
    let mut lb = HttpLoadBalancer::default();
    let mut has_servers = false;
    for Entry { key, line, value } in entries {
        let field_path = path.key(&key);
        match key.as_str() {
            "servers" => {
                has_servers = true;
                for (index, server) in decode_servers(value, &field_path, line)?
                    .into_iter()
                    .enumerate()
                {
                    let url = decode_server(server, &field_path.index(index), "url")?;
                    lb.servers.push(HttpServer { url });
                }
            }
            "passHostHeader" => lb.pass_host_header = Some(decode_bool(value, &field_path)?),
            "sticky" => lb.sticky = Some(decode_sticky(value, &field_path, line)?),
            "healthCheck" => lb.health_check = Some(decode_health_check(value, &field_path, line)?),
            _ => {
                return Err(unknown_field(
                    line,
                    path,
                    &key,
                    "`servers`, `passHostHeader`, `sticky` or `healthCheck`",
                ));
            }
        }
    }
    if !has_servers {
        return Err(DocumentError::MissingField {
            line: lb_line,
            path: path.to_string(),
            field: "servers",
        });
    }
    Ok(HttpService { load_balancer: lb })
}

fn decode_address_service(
    node: Node,
    path: &Path<'_>,
) -> Result<AddressLoadBalancer, DocumentError> {
    let lb_line = node.line;
    let entries = non_empty_mapping(node, path, lb_line, "")?;
    let mut lb = AddressLoadBalancer::default();
    let mut has_servers = false;
    for Entry { key, line, value } in entries {
        let field_path = path.key(&key);
        match key.as_str() {
            "servers" => {
                has_servers = true;
                for (index, server) in decode_servers(value, &field_path, line)?
                    .into_iter()
                    .enumerate()
                {
                    let address = decode_server(server, &field_path.index(index), "address")?;
                    lb.servers.push(AddressServer { address });
                }
            }
            _ => return Err(unknown_field(line, path, &key, "`servers`")),
        }
    }
    if !has_servers {
        return Err(DocumentError::MissingField {
            line: lb_line,
            path: path.to_string(),
            field: "servers",
        });
    }
    Ok(lb)
}

fn unknown_field(line: usize, path: &Path<'_>, key: &str, expected: &'static str) -> DocumentError {
    DocumentError::UnknownField {
        line,
        path: path.to_string(),
        field: shorten(key),
        expected,
    }
}

/// `servers:` is a sequence, possibly empty (`servers: []`, a 503 in Traefik).
fn decode_servers(
    node: Node,
    path: &Path<'_>,
    key_line: usize,
) -> Result<Vec<Node>, DocumentError> {
    match node.value {
        Value::Sequence(items) => Ok(items),
        Value::Null => Err(DocumentError::EmptyElement {
            line: key_line,
            path: path.to_string(),
            hint: " (write `servers: []` for a pool without servers)",
        }),
        other => Err(DocumentError::InvalidType {
            line: node.line,
            path: path.to_string(),
            expected: "a sequence of servers",
            found: other.kind(),
        }),
    }
}

/// One server: a mapping with exactly the one field `field` (`url` or `address`).
fn decode_server(
    node: Node,
    path: &Path<'_>,
    field: &'static str,
) -> Result<String, DocumentError> {
    let line = node.line;
    let entries = non_empty_mapping(node, path, line, "")?;
    let mut value = None;
    for Entry {
        key,
        line: key_line,
        value: node,
    } in entries
    {
        if key == field {
            value = Some(decode_string(node, &path.key(&key))?);
        } else {
            let expected = if field == "url" { "`url`" } else { "`address`" };
            return Err(unknown_field(key_line, path, &key, expected));
        }
    }
    value.ok_or_else(|| DocumentError::MissingField {
        line,
        path: path.to_string(),
        field,
    })
}

fn decode_string(node: Node, path: &Path<'_>) -> Result<String, DocumentError> {
    match node.value {
        Value::Scalar { text, .. } => Ok(text),
        other => Err(DocumentError::InvalidType {
            line: node.line,
            path: path.to_string(),
            expected: "a string",
            found: other.kind(),
        }),
    }
}

fn decode_bool(node: Node, path: &Path<'_>) -> Result<bool, DocumentError> {
    if let Value::Scalar { text, plain: true } = &node.value {
        match text.as_str() {
            "true" | "True" | "TRUE" => return Ok(true),
            "false" | "False" | "FALSE" => return Ok(false),
            _ => {}
        }
    }
    Err(DocumentError::InvalidType {
        line: node.line,
        path: path.to_string(),
        expected: "true or false (unquoted)",
        found: match node.value {
            Value::Scalar { .. } => "another scalar",
            other => other.kind(),
        },
    })
}

fn decode_duration(node: Node, path: &Path<'_>) -> Result<Duration, DocumentError> {
    let line = node.line;
    let text = decode_string(node, path)?;
    crate::parse_duration(&text).map_err(|reason| DocumentError::InvalidValue {
        line,
        path: path.to_string(),
        reason,
    })
}

fn decode_sticky(node: Node, path: &Path<'_>, key_line: usize) -> Result<Sticky, DocumentError> {
    let entries = non_empty_mapping(
        node,
        path,
        key_line,
        " (a sticky load balancer needs `cookie`)",
    )?;
    let mut cookie = None;
    for Entry { key, line, value } in entries {
        match key.as_str() {
            "cookie" => cookie = Some(decode_cookie(value, &path.key(&key), line)?),
            _ => return Err(unknown_field(line, path, &key, "`cookie`")),
        }
    }
    cookie
        .map(|cookie| Sticky { cookie })
        .ok_or_else(|| DocumentError::MissingField {
            line: key_line,
            path: path.to_string(),
            field: "cookie",
        })
}

fn decode_cookie(
    node: Node,
    path: &Path<'_>,
    key_line: usize,
) -> Result<StickyCookie, DocumentError> {
    let entries = match node.value {
        // `cookie: {}` is Traefik's documented way to ask for a default cookie.
        Value::Mapping(entries) => entries,
        Value::Null => {
            return Err(DocumentError::EmptyElement {
                line: key_line,
                path: path.to_string(),
                hint: " (write `cookie: {}` for a default cookie)",
            });
        }
        other => {
            return Err(DocumentError::InvalidType {
                line: node.line,
                path: path.to_string(),
                expected: "a mapping",
                found: other.kind(),
            });
        }
    };
    let mut cookie = StickyCookie::default();
    for Entry { key, line, value } in entries {
        let field_path = path.key(&key);
        match key.as_str() {
            "name" => cookie.name = Some(decode_string(value, &field_path)?),
            "secure" => cookie.secure = Some(decode_bool(value, &field_path)?),
            "httpOnly" => cookie.http_only = Some(decode_bool(value, &field_path)?),
            "sameSite" => {
                let value_line = value.line;
                cookie.same_site = Some(match decode_string(value, &field_path)?.as_str() {
                    "none" => SameSite::None,
                    "lax" => SameSite::Lax,
                    "strict" => SameSite::Strict,
                    other => {
                        return Err(DocumentError::InvalidValue {
                            line: value_line,
                            path: field_path.to_string(),
                            reason: format!(
                                "{:?} is not none, lax or strict (leave sameSite out for the \
                                 default)",
                                shorten(other)
                            ),
                        });
                    }
                });
            }
            _ => {
                return Err(unknown_field(
                    line,
                    path,
                    &key,
                    "`name`, `secure`, `httpOnly` or `sameSite`",
                ));
            }
        }
    }
    Ok(cookie)
}

fn decode_health_check(
    node: Node,
    path: &Path<'_>,
    key_line: usize,
) -> Result<HealthCheck, DocumentError> {
    let entries = non_empty_mapping(node, path, key_line, "")?;
    let mut check_path = None;
    let mut interval = None;
    let mut timeout = None;
    for Entry { key, line, value } in entries {
        let field_path = path.key(&key);
        match key.as_str() {
            "path" => check_path = Some(decode_string(value, &field_path)?),
            "interval" => interval = Some(decode_duration(value, &field_path)?),
            "timeout" => timeout = Some(decode_duration(value, &field_path)?),
            _ => {
                return Err(unknown_field(
                    line,
                    path,
                    &key,
                    "`path`, `interval` or `timeout`",
                ));
            }
        }
    }
    let Some(check_path) = check_path else {
        return Err(DocumentError::MissingField {
            line: key_line,
            path: path.to_string(),
            field: "path",
        });
    };
    Ok(HealthCheck {
        path: check_path,
        interval,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::traefik::{TraefikVersion, render};

    fn parse(text: &str) -> Result<Document, DocumentError> {
        parse_cluster_document(text.as_bytes(), &Limits::default())
    }

    fn refused(text: &str, reason: &str) -> String {
        let shown = shorten(text);
        match parse(text) {
            Ok(doc) => panic!("accepted {shown:?} as {doc:?}"),
            Err(err) => {
                assert_eq!(err.reason(), reason, "{shown:?}: {err}");
                err.to_string()
            }
        }
    }

    const GOOD: &str = r#"# written by hand
http:
  services:
    web:
      loadBalancer:
        servers:
          - url: http://10.0.0.1:80
          - url: "http://[fd00::1]:8080"
        passHostHeader: false
        sticky:
          cookie:
            name: srv
            secure: true
            httpOnly: false
            sameSite: strict
        healthCheck:
          path: /healthz
          interval: 10s
          timeout: "500ms"
    empty:
      loadBalancer:
        servers: []
tcp:
  services:
    'pg':
      loadBalancer:
        servers:
          - address: "[fd00::2]:5432"
udp:
  services:
    dns:
      loadBalancer: {servers: [{address: "10.0.0.3:53"}]}
"#;

    #[test]
    fn a_complete_document_is_read() {
        let doc = parse(GOOD).unwrap();
        let http = &doc.http.as_ref().unwrap().services;
        let web = &http["web"].load_balancer;
        assert_eq!(web.servers.len(), 2);
        assert_eq!(web.servers[1].url, "http://[fd00::1]:8080");
        assert_eq!(web.pass_host_header, Some(false));
        let cookie = &web.sticky.as_ref().unwrap().cookie;
        assert_eq!(cookie.name.as_deref(), Some("srv"));
        assert_eq!(cookie.secure, Some(true));
        assert_eq!(cookie.http_only, Some(false));
        assert_eq!(cookie.same_site, Some(SameSite::Strict));
        let health = web.health_check.as_ref().unwrap();
        assert_eq!(health.path, "/healthz");
        assert_eq!(health.interval, Some(Duration::from_secs(10)));
        assert_eq!(health.timeout, Some(Duration::from_millis(500)));
        assert!(http["empty"].load_balancer.servers.is_empty());
        let tcp = &doc.tcp.as_ref().unwrap().services;
        assert_eq!(tcp["pg"].load_balancer.servers[0].address, "[fd00::2]:5432");
        let udp = &doc.udp.as_ref().unwrap().services;
        assert_eq!(udp["dns"].load_balancer.servers[0].address, "10.0.0.3:53");
    }

    #[test]
    fn rendered_documents_read_back() {
        let doc = parse(GOOD).unwrap();
        let rendered = render(&doc, TraefikVersion::V3, "header {{x}}\nsecond line");
        let back = parse_cluster_document(&rendered.bytes, &Limits::default()).unwrap();
        assert_eq!(back, doc.normalized());
    }

    #[test]
    fn empty_and_comment_only_documents_hold_no_services() {
        for text in [
            "",
            "# nothing\n",
            "---\n",
            "\u{FEFF}# bom\n",
            "# No services.\n",
        ] {
            assert_eq!(parse(text).unwrap(), Document::default(), "{text:?}");
        }
    }

    #[test]
    fn size_limit() {
        let limits = Limits { max_bytes: 10 };
        let err = parse_cluster_document(b"# 12345678901", &limits).unwrap_err();
        assert_eq!(err.reason(), "too_large");
        assert!(err.to_string().contains("13 bytes"), "{err}");
        assert!(parse_cluster_document(b"# 1234567", &limits).is_ok());
        assert_eq!(Limits::default().max_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn not_utf8() {
        let err = parse_cluster_document(b"http:\n  \xff\n", &Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "not_utf8");
    }

    #[test]
    fn template_markers_anywhere() {
        let message = refused("# fine\n# {{ .Env }}\n", "template_marker");
        assert!(message.starts_with("line 2:"), "{message}");
        refused(&GOOD.replace("/healthz", "/{{x}}"), "template_marker");
        assert_eq!(
            parse(&GOOD.replace("/healthz", "/{x}"))
                .unwrap_err()
                .reason(),
            "invalid_option"
        );
    }

    #[test]
    fn yaml_syntax_errors_carry_a_line() {
        let message = refused("http:\n  services: [\n", "yaml");
        assert!(message.starts_with("line "), "{message}");
        refused("http: \"unterminated\n", "yaml");
        refused("---\nhttp: {}\n---\ntcp: {}\n", "multiple_documents");
    }

    #[test]
    fn duplicate_keys() {
        let message = refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n    web:\n      loadBalancer:\n        servers: []\n",
            "duplicate_key",
        );
        assert!(
            message.contains("line 6")
                && message.contains("http.services")
                && message.contains("\"web\""),
            "{message}"
        );
        refused(
            "http:\n  services: {}\nhttp:\n  services: {}\n",
            "duplicate_key",
        );
        refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        servers: []\n",
            "duplicate_key",
        );
    }

    #[test]
    fn anchors_aliases_and_tags_are_refused() {
        refused(
            "http:\n  services:\n    web: &lb\n      loadBalancer:\n        servers: []\n    api: *lb\n",
            "unsupported_yaml",
        );
        let message = refused("x: &a 1\n", "unsupported_yaml");
        assert!(message.contains("anchors"), "{message}");
        let message = refused("http: !!map\n  services: {}\n", "unsupported_yaml");
        assert!(message.contains("tags"), "{message}");
    }

    #[test]
    fn an_alias_bomb_is_refused_at_once() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for level in 1..10u8 {
            let (name, prev) = ((b'a' + level) as char, (b'a' + level - 1) as char);
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let started = Instant::now();
        let err = parse(&bomb).unwrap_err();
        assert_eq!(err.reason(), "unsupported_yaml");
        assert_eq!(err.line(), Some(1));
        // Generous bound: expanding the bomb would take minutes and gigabytes.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = String::new();
        for level in 0..20 {
            deep.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        let message = refused(&deep, "too_deep");
        assert!(
            message.contains("16 levels") && message.starts_with("line 17:"),
            "{message}"
        );
        // Deep flow nesting is stopped by the YAML scanner itself, before any tree is built.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        refused(&deep, "yaml");
    }

    #[test]
    fn only_http_tcp_udp_at_the_root() {
        let message = refused("providers:\n  file: {}\n", "unknown_field");
        assert!(
            message.contains("`providers`") && message.contains("line 1"),
            "{message}"
        );
        refused("tls:\n  certificates: []\n", "not_services_only");
        refused("- http\n", "invalid_type");
        refused("just text\n", "invalid_type");
    }

    #[test]
    fn routers_middlewares_and_transports_are_not_services() {
        for (text, path) in [
            (
                "http:\n  routers:\n    r:\n      rule: Host(`x`)\n      service: web\n",
                "http.routers",
            ),
            (
                "http:\n  middlewares:\n    m:\n      stripPrefix: {prefixes: [/a]}\n",
                "http.middlewares",
            ),
            (
                "http:\n  serversTransports:\n    t:\n      insecureSkipVerify: true\n",
                "http.serversTransports",
            ),
            (
                "tcp:\n  routers:\n    r:\n      rule: HostSNI(`*`)\n      service: pg\n",
                "tcp.routers",
            ),
            (
                "udp:\n  routers:\n    r:\n      service: dns\n",
                "udp.routers",
            ),
        ] {
            let message = refused(text, "not_services_only");
            assert!(
                message.contains(path) && message.contains("only services"),
                "{message}"
            );
        }
    }

    #[test]
    fn only_load_balancer_services() {
        for kind in ["weighted", "failover", "mirroring"] {
            let text =
                format!("http:\n  services:\n    web:\n      {kind}:\n        services: []\n");
            let message = refused(&text, "unsupported_service");
            assert!(
                message.contains(kind) && message.contains("http.services.web"),
                "{message}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        for (from, to, field) in [
            (
                "        passHostHeader: false\n",
                "        passHostHeader: false\n        strategy: wrr\n",
                "strategy",
            ),
            (
                "          - url: http://10.0.0.1:80\n",
                "          - url: http://10.0.0.1:80\n            weight: 2\n",
                "weight",
            ),
            (
                "            name: srv\n",
                "            name: srv\n            maxAge: 10\n",
                "maxAge",
            ),
            (
                "          path: /healthz\n",
                "          path: /healthz\n          port: 81\n",
                "port",
            ),
            (
                "        servers: []\n",
                "        servers: []\n        serversTransport: x\n",
                "serversTransport",
            ),
            ("    web:\n", "    web:\n      extra: 1\n", "extra"),
            ("http:\n", "http:\n  extra: 1\n", "extra"),
            (
                "        passHostHeader",
                "        passhostheader",
                "passhostheader",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let message = refused(&GOOD.replacen(from, to, 1), "unknown_field");
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
        let message = refused(
            "tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers: []\n        terminationDelay: 100\n",
            "unknown_field",
        );
        assert!(
            message.contains("line 6") && message.contains("tcp.services.pg.loadBalancer"),
            "{message}"
        );
    }

    #[test]
    fn empty_elements_traefik_rejects() {
        for text in [
            "http: {}\n",
            "http:\n",
            "http:\n  services: {}\n",
            "http:\n  services:\n",
            "http:\n  services: null\n",
            "tcp:\n  services: {}\n",
            "udp: {}\n",
            "http:\n  services:\n    web: {}\n",
            "http:\n  services:\n    web:\n",
            "http:\n  services:\n    web:\n      loadBalancer: {}\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n",
            "tcp:\n  services:\n    pg:\n      loadBalancer: {}\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: [{}]\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        healthCheck: {}\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky: {}\n",
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky:\n          cookie:\n",
        ] {
            let message = refused(text, "empty_element");
            assert!(message.contains("is empty"), "{message}");
        }
        let message = refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers:\n",
            "empty_element",
        );
        assert!(message.contains("servers: []"), "{message}");
    }

    #[test]
    fn servers_may_be_empty_and_cookie_may_be_default() {
        let doc = parse("http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        sticky:\n          cookie: {}\n").unwrap();
        let lb = &doc.http.unwrap().services["web"].load_balancer;
        assert!(lb.servers.is_empty());
        assert_eq!(lb.sticky.as_ref().unwrap().cookie, StickyCookie::default());
        let doc = parse("tcp:\n  services:\n    pg:\n      loadBalancer:\n        servers: []\n")
            .unwrap();
        assert!(
            doc.tcp.unwrap().services["pg"]
                .load_balancer
                .servers
                .is_empty()
        );
    }

    #[test]
    fn missing_fields() {
        let message = refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        passHostHeader: true\n",
            "missing_field",
        );
        assert!(message.contains("`servers`"), "{message}");
        refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: [{weight: 1}]\n",
            "unknown_field",
        );
        let message = refused(
            "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n        healthCheck:\n          interval: 5s\n",
            "missing_field",
        );
        assert!(message.contains("`path`"), "{message}");
    }

    #[test]
    fn value_types() {
        for (from, to) in [
            ("passHostHeader: false", "passHostHeader: \"false\""),
            ("passHostHeader: false", "passHostHeader: yes"),
            ("passHostHeader: false", "passHostHeader: 0"),
            ("secure: true", "secure: [true]"),
            ("- url: http://10.0.0.1:80", "- url: [http://10.0.0.1:80]"),
            ("- url: http://10.0.0.1:80", "- url:"),
            ("servers: []", "servers: {}"),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text).unwrap_err();
            assert!(
                matches!(err.reason(), "invalid_type" | "empty_element"),
                "{to}: {err}"
            );
        }
        assert!(parse(&GOOD.replace("passHostHeader: false", "passHostHeader: True")).is_ok());
    }

    #[test]
    fn option_values() {
        for (from, to, reason) in [
            ("interval: 10s", "interval: 10", "invalid_value"),
            ("interval: 10s", "interval: 1.5s", "invalid_value"),
            ("interval: 10s", "interval: 0s", "invalid_option"),
            ("sameSite: strict", "sameSite: Strict", "invalid_value"),
            ("sameSite: strict", "sameSite: \"\"", "invalid_value"),
            ("name: srv", "name: \"a;b\"", "invalid_option"),
            ("path: /healthz", "path: healthz", "invalid_option"),
        ] {
            let message = refused(&GOOD.replacen(from, to, 1), reason);
            assert!(message.contains("web"), "{message}");
        }
    }

    #[test]
    fn merged_documents_allow_pool_names_and_any_size() {
        let text = "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n    web.eu-1:\n      loadBalancer:\n        servers: []\n";
        let doc = parse_merged_document(text.as_bytes()).unwrap();
        assert_eq!(doc.service_count(), 2);
        assert_eq!(parse(text).unwrap_err().reason(), "invalid_name");
        for bad in ["web.EU", "web.a.b", "web@file"] {
            let err = parse_merged_document(text.replace("web.eu-1", bad).as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "invalid_name", "{bad}");
        }
        let big = format!("{text}{}", "# padding\n".repeat(1_000_000));
        assert!(big.len() > DEFAULT_MAX_BYTES);
        assert_eq!(parse_merged_document(big.as_bytes()).unwrap(), doc);
        let err = parse_merged_document(b"# {{ x }}\n").unwrap_err();
        assert_eq!(err.reason(), "template_marker");
    }

    #[test]
    fn content_rules_apply_after_reading() {
        let message = refused(
            &GOOD.replace("http://10.0.0.1:80", "TCP://10.0.0.1:80"),
            "invalid_server",
        );
        assert!(
            message.contains("TCP://10.0.0.1:80") && message.contains("\"web\""),
            "{message}"
        );
        refused(
            &GOOD.replace("\"[fd00::2]:5432\"", "\"fd00::2:5432\""),
            "invalid_server",
        );
        refused(
            &GOOD.replace("    web:\n", "    \"web@file\":\n"),
            "invalid_name",
        );
        refused(
            &GOOD.replace("    dns:\n", "    pg:\n"),
            "duplicate_service",
        );
    }
}
