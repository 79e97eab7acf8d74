//! Why a document was refused, and the limits a cluster document must stay within.

use crate::backend::Protocol;
use crate::names::NameError;

/// Default for [`Limits::max_bytes`]: 8 MiB, room for tens of thousands of services.
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Bounds on what [`super::parse_cluster_document`] accepts.
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

/// `line N: ` when the line is known.
fn at(line: &Option<usize>) -> String {
    line.map(|line| format!("line {line}: "))
        .unwrap_or_default()
}

/// Why a cluster document was refused. Each message names the line, the field path
/// (`http.services.web.loadBalancer.healthCheck.interval`) and the value at fault, so an
/// operator can fix the document from the log line alone.
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
    #[error("line {line}: {path}: {message}")]
    DuplicateKey {
        line: usize,
        path: String,
        message: String,
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
    #[error("line {line}: {path}: {message}")]
    UnknownField {
        line: usize,
        path: String,
        message: String,
    },
    #[error("line {line}: {path}: {message}")]
    MissingField {
        line: usize,
        path: String,
        message: String,
    },
    #[error("line {line}: {path} is empty{hint}; Traefik refuses empty elements")]
    EmptyElement {
        line: usize,
        path: String,
        hint: &'static str,
    },
    #[error("line {line}: {path}: {message}")]
    InvalidType {
        line: usize,
        path: String,
        message: String,
    },
    #[error("{}{path}: {message}", at(.line))]
    InvalidValue {
        line: Option<usize>,
        path: String,
        message: String,
    },
    #[error("{}{path}: {message}", at(.line))]
    InvalidName {
        line: Option<usize>,
        path: String,
        message: String,
    },
    #[error("{}{path}: server {message}", at(.line))]
    InvalidServer {
        line: Option<usize>,
        path: String,
        message: String,
    },
    #[error("{}{path}: {message}", at(.line))]
    InvalidOption {
        line: Option<usize>,
        path: String,
        message: String,
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
            | DocumentError::InvalidType { line, .. } => Some(*line),
            DocumentError::InvalidValue { line, .. }
            | DocumentError::InvalidName { line, .. }
            | DocumentError::InvalidServer { line, .. }
            | DocumentError::InvalidOption { line, .. } => *line,
            DocumentError::TooLarge { .. }
            | DocumentError::NotUtf8 { .. }
            | DocumentError::DuplicateService { .. } => None,
        }
    }

    /// The field path the error points at (`http.services.web.loadBalancer`), when known.
    pub fn path(&self) -> Option<&str> {
        match self {
            DocumentError::DuplicateKey { path, .. }
            | DocumentError::NotServicesOnly { path, .. }
            | DocumentError::UnsupportedService { path, .. }
            | DocumentError::UnknownField { path, .. }
            | DocumentError::MissingField { path, .. }
            | DocumentError::EmptyElement { path, .. }
            | DocumentError::InvalidType { path, .. }
            | DocumentError::InvalidValue { path, .. }
            | DocumentError::InvalidName { path, .. }
            | DocumentError::InvalidServer { path, .. }
            | DocumentError::InvalidOption { path, .. } => Some(path),
            _ => None,
        }
    }

    /// A name refused in `protocol`'s services, outside of reading text.
    pub(crate) fn invalid_name(protocol: Protocol, source: NameError) -> Self {
        DocumentError::InvalidName {
            line: None,
            path: format!("{}.services", protocol.as_str()),
            message: source.to_string(),
        }
    }
}
