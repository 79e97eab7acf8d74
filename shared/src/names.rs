//! Names: cluster names, object keys, Traefik service names and the template that makes them.
//!
//! A cluster name is a DNS label and owns exactly one object per format in the bucket
//! (`<cluster>.traefik.yaml`, `<cluster>.backends.yaml`). Service names come from a
//! [`NameTemplate`] (`{namespace}-{service}-{port}` by default) and [`assign_names`] turns a
//! cluster's origins into names that are unique, valid and independent of listing order.
//! [`NameBook`] keeps those names up to date as origins come and go, renaming only the origins
//! whose collision group changed. [`pool_name`] names one cluster's own pool in the merged file.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::backend::Origin;

mod book;

pub use self::book::NameBook;

/// Longest service name a cluster document may carry. Long enough for any
/// `{namespace}-{service}-{port}` of Kubernetes names (63 + 63 + 15 and separators), short
/// enough that a per-cluster pool name stays readable.
pub const MAX_SERVICE_NAME_LEN: usize = 200;

/// Longest DNS label (RFC 1123).
pub const MAX_CLUSTER_NAME_LEN: usize = 63;

/// Hex digits of SHA-256 appended to a renamed or truncated service name.
const HASH_SUFFIX_LEN: usize = 8;

/// Why a name, key or template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid cluster name {name:?}: {reason} (a cluster name is a DNS label: 1-63 characters \
         of a-z, 0-9 and '-', starting and ending with a letter or digit)"
    )]
    InvalidClusterName { name: String, reason: &'static str },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidObjectKey { key: String, reason: String },
    #[error("unknown output format {value:?}: expected \"traefik\" or \"backends\"")]
    UnknownFormat { value: String },
    #[error("invalid name template {template:?}: {reason}")]
    InvalidTemplate { template: String, reason: String },
    #[error(
        "invalid service name {name:?}: {reason} (a service name is 1-200 characters of \
         A-Z, a-z, 0-9, '-' and '_')"
    )]
    InvalidServiceName { name: String, reason: &'static str },
}

/// The name of a cluster: an RFC 1123 DNS label. It names the cluster's objects in the bucket
/// and is the ownership boundary between exporters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// Accepts 1-63 characters of `[a-z0-9-]`, starting and ending with a letter or digit.
    pub fn parse(name: &str) -> Result<ClusterName, NameError> {
        if let Some(reason) = dns_label_problem(name) {
            return Err(NameError::InvalidClusterName {
                name: shorten(name),
                reason,
            });
        }
        Ok(ClusterName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ClusterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClusterName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterName::parse(s)
    }
}

impl Serialize for ClusterName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        ClusterName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// True for an RFC 1123 DNS label: 1-63 characters of `[a-z0-9-]`, starting and ending with a
/// letter or digit. The rule of cluster names and Kubernetes namespace names.
pub fn is_dns_label(name: &str) -> bool {
    dns_label_problem(name).is_none()
}

/// Why `name` is not a DNS label, `None` when it is one.
fn dns_label_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_CLUSTER_NAME_LEN {
        return Some("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("it may contain only lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("it must start and end with a letter or digit");
    }
    None
}

/// The formats an exporter can publish, one object per cluster and format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectFormat {
    /// A Traefik dynamic-configuration document holding only services.
    Traefik,
    /// The neutral [`crate::backend::BackendsDocument`].
    Backends,
}

impl ObjectFormat {
    pub const ALL: [ObjectFormat; 2] = [ObjectFormat::Traefik, ObjectFormat::Backends];

    /// The object-key suffix after the cluster name.
    pub fn suffix(self) -> &'static str {
        match self {
            ObjectFormat::Traefik => ".traefik.yaml",
            ObjectFormat::Backends => ".backends.yaml",
        }
    }

    /// The name used in configuration (`OUTPUT_FORMATS=traefik,backends`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectFormat::Traefik => "traefik",
            ObjectFormat::Backends => "backends",
        }
    }

    /// Reads `traefik` or `backends` (exactly, as written in configuration).
    pub fn parse(value: &str) -> Result<ObjectFormat, NameError> {
        match value {
            "traefik" => Ok(ObjectFormat::Traefik),
            "backends" => Ok(ObjectFormat::Backends),
            other => Err(NameError::UnknownFormat {
                value: shorten(other),
            }),
        }
    }
}

impl fmt::Display for ObjectFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectFormat {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectFormat::parse(s)
    }
}

/// `<cluster>.traefik.yaml` / `<cluster>.backends.yaml`, relative to the storage prefix.
pub fn object_key(cluster: &ClusterName, format: ObjectFormat) -> String {
    format!("{}{}", cluster.as_str(), format.suffix())
}

/// The inverse of [`object_key`] for a key relative to the storage prefix. Anything else found
/// under the prefix (other tools' objects, temp files, keys in "subdirectories") is refused with
/// a reason, so the caller can log it once and skip it.
pub fn parse_object_key(key: &str) -> Result<(ClusterName, ObjectFormat), NameError> {
    for format in ObjectFormat::ALL {
        if let Some(cluster) = key.strip_suffix(format.suffix()) {
            return match ClusterName::parse(cluster) {
                Ok(name) => Ok((name, format)),
                Err(error) => Err(NameError::InvalidObjectKey {
                    key: shorten(key),
                    reason: format!("not <dns-label>{}: {error}", format.suffix()),
                }),
            };
        }
    }
    Err(NameError::InvalidObjectKey {
        key: shorten(key),
        reason: "not <dns-label>.traefik.yaml or <dns-label>.backends.yaml".to_owned(),
    })
}

/// Checks the service-name rule used for every name a cluster document carries: 1-200
/// characters of `[A-Za-z0-9_-]`. No `.` (it separates service and cluster in
/// [`pool_name`]), no `@` (Traefik's provider qualifier), no `{` (Go template syntax).
pub fn validate_service_name(name: &str) -> Result<(), NameError> {
    let refuse = |reason| NameError::InvalidServiceName {
        name: shorten(name),
        reason,
    };
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(refuse("it is longer than 200 characters"));
    }
    for c in name.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => {}
            '.' => {
                return Err(refuse(
                    "'.' is reserved: it separates a service from its cluster in pool names",
                ));
            }
            '@' => return Err(refuse("'@' is Traefik's provider qualifier (name@file)")),
            '{' | '}' => return Err(refuse("braces are Go template syntax for Traefik")),
            _ => {
                return Err(refuse(
                    "it contains a character outside A-Z, a-z, 0-9, '-', '_'",
                ));
            }
        }
    }
    Ok(())
}

/// The rule for names in a merged file: a plain service name ([`validate_service_name`]) or a
/// per-cluster pool name `<service>.<cluster>` ([`pool_name`]).
pub fn validate_pool_or_service_name(name: &str) -> Result<(), NameError> {
    match name.rsplit_once('.') {
        None => validate_service_name(name),
        Some((service, cluster)) => {
            validate_service_name(service)?;
            ClusterName::parse(cluster).map(|_| ())
        }
    }
}

/// The name of one cluster's own pool in the merged file: `<service>.<cluster>`. Plain service
/// names never contain `.` and cluster names are DNS labels, so a pool name can neither collide
/// with a plain name nor with another pool.
pub fn pool_name(service: &str, cluster: &ClusterName) -> String {
    // Built by hand rather than with `format!`: the merge calls this once per pool.
    let mut name = String::with_capacity(service.len() + 1 + cluster.as_str().len());
    name.push_str(service);
    name.push('.');
    name.push_str(cluster.as_str());
    name
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Namespace,
    Service,
    Port,
}

/// A service-name template with the placeholders `{namespace}`, `{service}` and `{port}`.
///
/// Literal text may use `[A-Za-z0-9_-]`; `.`, `@`, `{{` and unknown placeholders are refused
/// when the template is parsed, so a bad `NAME_TEMPLATE` stops the exporter at start-up.
/// The segment `{name}` stands for in a template.
fn placeholder(name: &str) -> Result<Segment, String> {
    match name {
        "namespace" => Ok(Segment::Namespace),
        "service" => Ok(Segment::Service),
        "port" => Ok(Segment::Port),
        other if other.contains('{') => Err("unbalanced '{': no closing '}'".to_owned()),
        other => Err(format!(
            "unknown placeholder {{{other}}}: use {{namespace}}, {{service}} or {{port}}"
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    segments: Vec<Segment>,
}

impl NameTemplate {
    pub const DEFAULT: &'static str = "{namespace}-{service}-{port}";

    pub fn parse(template: &str) -> Result<NameTemplate, NameError> {
        let refuse = |reason: String| NameError::InvalidTemplate {
            template: shorten(template),
            reason,
        };
        if template.is_empty() {
            return Err(refuse("it is empty".to_owned()));
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    if rest.starts_with("{{") {
                        return Err(refuse(
                            "\"{{\" is Go template syntax for Traefik's file provider".to_owned(),
                        ));
                    }
                    let Some(end) = rest.find('}') else {
                        return Err(refuse("unbalanced '{': no closing '}'".to_owned()));
                    };
                    let segment = placeholder(&rest[1..end]).map_err(refuse)?;
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(segment);
                    rest = &rest[end + 1..];
                }
                '}' => return Err(refuse("unbalanced '}': no opening '{'".to_owned())),
                '.' => {
                    return Err(refuse(
                        "'.' is reserved: it separates a service from its cluster in pool names"
                            .to_owned(),
                    ));
                }
                '@' => {
                    return Err(refuse(
                        "'@' is Traefik's provider qualifier and not allowed in names".to_owned(),
                    ));
                }
                'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
                other => {
                    return Err(refuse(format!(
                        "character {other:?} is not allowed: literal text may use A-Z, a-z, 0-9, \
                         '-' and '_'"
                    )));
                }
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        // A template without placeholders names every port of every Service the same; that is
        // never what an operator means, so it is refused instead of silently hashed apart.
        if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
            return Err(refuse(
                "it has no placeholder: use {namespace}, {service} and/or {port}".to_owned(),
            ));
        }
        Ok(NameTemplate {
            source: template.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Expands the template for one origin. Characters a service name may not hold (anything
    /// outside `[A-Za-z0-9_-]`) become `-`. The result may still be empty or too long; use
    /// [`assign_names`] to get valid, unique names.
    pub fn render(&self, origin: &Origin) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            let text = match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Namespace => origin.namespace.as_str(),
                Segment::Service => origin.service.as_str(),
                Segment::Port => origin.port.as_str(),
            };
            out.extend(text.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            }));
        }
        out
    }
}

impl Default for NameTemplate {
    fn default() -> Self {
        NameTemplate {
            source: Self::DEFAULT.to_owned(),
            segments: vec![
                Segment::Namespace,
                Segment::Literal("-".to_owned()),
                Segment::Service,
                Segment::Literal("-".to_owned()),
                Segment::Port,
            ],
        }
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for NameTemplate {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NameTemplate::parse(s)
    }
}

/// Two origins rendered to the same name: `kept` (the smaller origin) keeps `name`, `renamed`
/// is published as `new_name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameCollision {
    pub name: String,
    pub kept: Origin,
    pub renamed: Origin,
    pub new_name: String,
}

impl fmt::Display for NameCollision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} and {} both render to service name {:?}: {} keeps it, {} is published as {:?}",
            self.kept, self.renamed, self.name, self.kept, self.renamed, self.new_name
        )
    }
}

/// Names every origin with `template`, returning the names in input order and every collision.
///
/// Guarantees, whatever the input order:
/// - every name passes [`validate_service_name`];
/// - different origins get different names (equal origins get equal names: the input is
///   expected to hold each origin once);
/// - the result for an origin depends only on the set of origins, not their order.
///
/// When several origins render to the same name (`a-b`/`c` and `a`/`b-c` with the default
/// template), the smallest origin keeps the plain name and each other one gets
/// `-<8 hex digits of sha256("namespace/service/port")>` appended. A name longer than 200
/// characters is truncated and gets the same suffix; a name that renders empty is the suffix
/// alone. In the (astronomically unlikely, but constructible) case that a suffixed name is
/// taken too, the hash input gets a counter (`namespace/service/port/1`, ...) until it is free.
pub fn assign_names(
    template: &NameTemplate,
    origins: &[Origin],
) -> (Vec<String>, Vec<NameCollision>) {
    let distinct: BTreeSet<&Origin> = origins.iter().collect();

    // Each group's members are pushed in Origin order, so the first one is the smallest.
    let mut groups: BTreeMap<String, Vec<&Origin>> = BTreeMap::new();
    for origin in &distinct {
        groups
            .entry(base_name(template, origin))
            .or_default()
            .push(origin);
    }

    let mut taken: HashSet<String> = groups.keys().cloned().collect();
    let mut assigned: BTreeMap<&Origin, String> = BTreeMap::new();
    let mut collisions = Vec::new();
    for (name, members) in &groups {
        let Some((kept, renamed)) = members.split_first() else {
            continue;
        };
        assigned.insert(kept, name.clone());
        for origin in renamed {
            let new_name = free_suffixed_name(name, origin, &mut taken);
            collisions.push(NameCollision {
                name: name.clone(),
                kept: (*kept).clone(),
                renamed: (*origin).clone(),
                new_name: new_name.clone(),
            });
            assigned.insert(origin, new_name);
        }
    }

    let names = origins
        .iter()
        .map(|origin| assigned.get(origin).cloned().unwrap_or_default())
        .collect();
    (names, collisions)
}

/// The name an origin gets when nobody else wants it.
fn base_name(template: &NameTemplate, origin: &Origin) -> String {
    let rendered = template.render(origin);
    if rendered.is_empty() {
        origin_hash(origin, 0)
    } else if rendered.len() > MAX_SERVICE_NAME_LEN {
        suffixed(&rendered, &origin_hash(origin, 0))
    } else {
        rendered
    }
}

/// `base` cut so that `base-hash` fits in [`MAX_SERVICE_NAME_LEN`]. `base` comes from
/// [`NameTemplate::render`] and is ASCII, so any byte index is a character boundary.
fn suffixed(base: &str, hash: &str) -> String {
    let keep = MAX_SERVICE_NAME_LEN - 1 - hash.len();
    let cut = base.get(..keep.min(base.len())).unwrap_or(base);
    format!("{cut}-{hash}")
}

fn free_suffixed_name(base: &str, origin: &Origin, taken: &mut HashSet<String>) -> String {
    let mut attempt = 0u64;
    loop {
        let candidate = suffixed(base, &origin_hash(origin, attempt));
        if taken.insert(candidate.clone()) {
            return candidate;
        }
        attempt += 1;
    }
}

/// First 8 hex digits of `sha256("namespace/service/port")`, or of `".../<attempt>"` on retries.
fn origin_hash(origin: &Origin, attempt: u64) -> String {
    let key = if attempt == 0 {
        format!("{}/{}/{}", origin.namespace, origin.service, origin.port)
    } else {
        format!(
            "{}/{}/{}/{attempt}",
            origin.namespace, origin.service, origin.port
        )
    };
    let mut hash = crate::content_hash(key.as_bytes());
    hash.truncate(HASH_SUFFIX_LEN);
    hash
}

/// A value cut to a length fit for an error message (names can come from untrusted objects).
pub(crate) fn shorten(value: &str) -> String {
    const MAX: usize = 120;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
