//! The strict reader: byte checks, the [`prepass`](super::prepass), then serde (`serde_yaml`)
//! straight into the typed model, then [`validate`]. Every value is checked by its type while
//! it is deserialized; a serde error becomes a [`DocumentError`] that keeps the line and the
//! field path (`http.services.web.loadBalancer.healthCheck.interval`).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::prepass::{self, Root};
use super::{
    AddressLoadBalancer, Document, DocumentError, HttpLoadBalancer, Limits, LoadBalancer, Section,
    Service, ServiceName, validate, validate_merged,
};

/// Reads one cluster's Traefik document, strictly.
///
/// Refused, in this order: more than `limits.max_bytes` bytes; not UTF-8; `{{` anywhere
/// (comments included: Traefik's template pass sees them); invalid YAML, several documents,
/// anchors, aliases or tags, deep nesting, empty elements Traefik rejects (`http: {}`,
/// `services: {}`, `services: null`, `loadBalancer: {}`, `healthCheck: {}`, ...; `servers: []`
/// and `cookie: {}` are fine); then, while serde reads: root keys other than `http`, `tcp`,
/// `udp`; `routers`, `middlewares`, `serversTransports` and root `tls` (documents hold only
/// services); services other than `loadBalancer`; unknown fields (names are case-sensitive);
/// duplicate keys; every value its type refuses (server URLs and addresses, names, cookie
/// names, paths, durations Go cannot parse or outside the health-check bounds). Then the
/// document must pass [`validate`]. An empty or comment-only document is an empty [`Document`].
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

/// Everything but the cross-value rules and the size limit.
fn read(bytes: &[u8]) -> Result<Document, DocumentError> {
    let text = std::str::from_utf8(bytes).map_err(|source| DocumentError::NotUtf8 { source })?;
    if let Some(at) = text.find("{{") {
        return Err(DocumentError::TemplateMarker {
            line: line_of(text, at),
        });
    }
    // YAML allows a byte-order mark; the event parser does not skip it.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let found = prepass::check(text)?;
    if found.root == Root::Empty {
        return Ok(Document::default());
    }
    let read = serde_yaml::from_str::<Document>(text).map_err(|_| {
        // Read again to learn the path: the fast path pays nothing for it.
        let deserializer = serde_yaml::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Document>(deserializer) {
            Ok(_) => DocumentError::Yaml {
                line: 1,
                message: "the document reads differently on a second pass".to_owned(),
            },
            Err(error) => from_serde(&error),
        }
    });
    // The first fault in the document wins: an empty element the pre-pass saw, or what serde
    // refused before it (`providers: {file: {}}` is an unknown field, not an empty one).
    match (read, found.empty) {
        (Ok(doc), None) => Ok(doc),
        (Ok(_), Some(empty)) => Err(empty),
        (Err(error), None) => Err(error),
        (Err(error), Some(empty)) => {
            if error.line().unwrap_or(usize::MAX) < empty.line().unwrap_or(0) {
                Err(error)
            } else {
                Err(empty)
            }
        }
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()
        .get(..byte)
        .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
        + 1
}

// ---------------------------------------------------------------------------------------------
// Refusals raised while deserializing, recognised again when the error is classified.

const NOT_SERVICES_ONLY: &str = "documents hold only services";
const UNSUPPORTED_SERVICE: &str = "only loadBalancer services are supported";
const DUPLICATE_KEY: &str = "duplicate key";
const PROBE_BOUNDS: &str = crate::duration::PROBE_BOUNDS;

/// A value that is refused whatever it holds, with `message`. Refused from inside the
/// deserializer, so the error carries the value's own line and path.
struct Refuse(&'static str);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = IgnoredAny;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<IgnoredAny, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Refuse {
    type Value = IgnoredAny;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<IgnoredAny, A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<IgnoredAny, A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<IgnoredAny, E> {
        Err(E::custom(self.0))
    }
}

/// A mapping's key: one of `known` (by index), or one of `refused` (read its value with
/// [`Refuse`]). Anything else is an unknown field, refused at the key's own line.
#[derive(Clone, Copy)]
struct Fields {
    known: &'static [&'static str],
    refused: &'static [&'static str],
    message: &'static str,
}

enum Field {
    Known(usize),
    Refused(&'static str),
}

impl<'de> DeserializeSeed<'de> for Fields {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Fields {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
        if let Some(index) = self.known.iter().position(|k| *k == key) {
            Ok(Field::Known(index))
        } else if self.refused.contains(&key) {
            Ok(Field::Refused(self.message))
        } else {
            Err(E::unknown_field(key, self.known))
        }
    }
}

/// Reads the value of a [`Field::Known`] key once; a second one is a duplicate.
fn read_once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DocumentVisitor;

        const FIELDS: Fields = Fields {
            known: &["http", "tcp", "udp"],
            refused: &["tls"],
            message: NOT_SERVICES_ONLY,
        };

        impl<'de> Visitor<'de> for DocumentVisitor {
            type Value = Document;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with http, tcp and/or udp")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut doc = Document::default();
                while let Some(field) = map.next_key_seed(FIELDS)? {
                    match field {
                        Field::Known(0) => read_once(&mut map, &mut doc.http, "http")?,
                        Field::Known(1) => read_once(&mut map, &mut doc.tcp, "tcp")?,
                        Field::Known(_) => read_once(&mut map, &mut doc.udp, "udp")?,
                        Field::Refused(message) => {
                            map.next_value_seed(Refuse(message))?;
                        }
                    }
                }
                Ok(doc)
            }
        }

        d.deserialize_map(DocumentVisitor)
    }
}

impl<'de, L> Deserialize<'de> for Section<L>
where
    L: LoadBalancer + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SectionVisitor<L>(PhantomData<L>);

        const FIELDS: Fields = Fields {
            known: &["services"],
            refused: &["routers", "middlewares", "serversTransports", "tls"],
            message: NOT_SERVICES_ONLY,
        };

        impl<'de, L: LoadBalancer + Deserialize<'de>> Visitor<'de> for SectionVisitor<L> {
            type Value = Section<L>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with `services`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Section<L>, A::Error> {
                let mut services: Option<Services<L>> = None;
                while let Some(field) = map.next_key_seed(FIELDS)? {
                    match field {
                        Field::Known(_) => read_once(&mut map, &mut services, "services")?,
                        Field::Refused(message) => {
                            map.next_value_seed(Refuse(message))?;
                        }
                    }
                }
                let services = services.ok_or_else(|| de::Error::missing_field("services"))?;
                Ok(Section {
                    services: services.0,
                })
            }
        }

        d.deserialize_map(SectionVisitor(PhantomData))
    }
}

/// The services of a section: each name valid and given once.
struct Services<L>(BTreeMap<ServiceName, Service<L>>);

/// A service name not yet in the map, refused at the key's own line.
struct NewName<'a, V>(&'a BTreeMap<ServiceName, V>);

impl<'de, V> DeserializeSeed<'de> for NewName<'_, V> {
    type Value = ServiceName;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ServiceName, D::Error> {
        d.deserialize_str(self)
    }
}

impl<V> Visitor<'_> for NewName<'_, V> {
    type Value = ServiceName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ServiceName, E> {
        if self.0.contains_key(name) {
            let shown = crate::names::shorten(name);
            return Err(E::custom(format!("{DUPLICATE_KEY} {shown:?}")));
        }
        ServiceName::parse_pool_or_service(name).map_err(E::custom)
    }
}

impl<'de, L: LoadBalancer + Deserialize<'de>> Deserialize<'de> for Services<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServicesVisitor<L>(PhantomData<L>);

        impl<'de, L: LoadBalancer + Deserialize<'de>> Visitor<'de> for ServicesVisitor<L> {
            type Value = Services<L>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of service names to services")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Services<L>, A::Error> {
                let mut services = BTreeMap::new();
                while let Some(name) = map.next_key_seed(NewName(&services))? {
                    let service = map.next_value::<Service<L>>()?;
                    services.insert(name, service);
                }
                Ok(Services(services))
            }
        }

        d.deserialize_map(ServicesVisitor(PhantomData))
    }
}

impl<'de, L: LoadBalancer + Deserialize<'de>> Deserialize<'de> for Service<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServiceVisitor<L>(PhantomData<L>);

        const FIELDS: Fields = Fields {
            known: &["loadBalancer"],
            refused: &["weighted", "failover", "mirroring"],
            message: UNSUPPORTED_SERVICE,
        };

        impl<'de, L: LoadBalancer + Deserialize<'de>> Visitor<'de> for ServiceVisitor<L> {
            type Value = Service<L>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with `loadBalancer`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Service<L>, A::Error> {
                let mut load_balancer = None;
                while let Some(field) = map.next_key_seed(FIELDS)? {
                    match field {
                        Field::Known(_) => {
                            read_once(&mut map, &mut load_balancer, "loadBalancer")?;
                        }
                        Field::Refused(message) => {
                            map.next_value_seed(Refuse(message))?;
                        }
                    }
                }
                let load_balancer =
                    load_balancer.ok_or_else(|| de::Error::missing_field("loadBalancer"))?;
                Ok(Service { load_balancer })
            }
        }

        d.deserialize_map(ServiceVisitor(PhantomData))
    }
}

// Keep the generic impls honest: both kinds of load balancer are readable.
const _: fn() = || {
    fn readable<'de, T: Deserialize<'de>>() {}
    readable::<Section<HttpLoadBalancer>>();
    readable::<Section<AddressLoadBalancer>>();
};

// ---------------------------------------------------------------------------------------------
// serde errors -> DocumentError

/// Classifies a serde error by its message (serde's own wording for unknown, missing and
/// duplicate fields and wrong types; the refusals above) and by the field it points at (the
/// typed values' own refusals).
fn from_serde(error: &serde_path_to_error::Error<serde_yaml::Error>) -> DocumentError {
    let inner = error.inner();
    let location = inner.location();
    let line = location.as_ref().map_or(1, serde_yaml::Location::line);
    let (path, message) = split_message(inner, location.as_ref(), &error.path().to_string());
    let last = path.rsplit(['.', ']']).next().unwrap_or_default();
    if message == NOT_SERVICES_ONLY {
        return DocumentError::NotServicesOnly { line, path };
    }
    if message == UNSUPPORTED_SERVICE {
        let parent = path
            .rsplit_once('.')
            .map_or("the root", |(p, _)| p)
            .to_owned();
        return DocumentError::UnsupportedService {
            line,
            path: parent,
            kind: last.to_owned(),
        };
    }
    let starts = |prefix: &str| message.starts_with(prefix);
    if starts("unknown field") {
        DocumentError::UnknownField {
            line,
            path,
            message,
        }
    } else if starts("missing field") {
        DocumentError::MissingField {
            line,
            path,
            message,
        }
    } else if starts("duplicate field") || starts(DUPLICATE_KEY) {
        DocumentError::DuplicateKey {
            line,
            path,
            message,
        }
    } else if starts("invalid type") || starts("invalid length") {
        DocumentError::InvalidType {
            line,
            path,
            message,
        }
    } else if starts("recursion limit") || starts("repetition limit") {
        DocumentError::Yaml { line, message }
    } else {
        value_refused(Some(line), path, message)
    }
}

/// A typed value's own refusal, classified by the field it points at (the path's last
/// segment).
fn value_refused(line: Option<usize>, path: String, message: String) -> DocumentError {
    match path.rsplit(['.', ']']).next().unwrap_or_default() {
        "url" | "address" => DocumentError::InvalidServer {
            line,
            path,
            message,
        },
        "services" => DocumentError::InvalidName {
            line,
            path,
            message,
        },
        "name" | "path" => DocumentError::InvalidOption {
            line,
            path,
            message,
        },
        // Go reads it, the project's bounds refuse it.
        "interval" | "timeout" if message.contains(PROBE_BOUNDS) => DocumentError::InvalidOption {
            line,
            path,
            message,
        },
        _ => DocumentError::InvalidValue {
            line,
            path,
            message,
        },
    }
}

/// serde_yaml's message as (path, message): without the position it appends, and with the
/// path it prefixes taken apart. That path is the value's for a value (`...healthCheck.interval`)
/// and the mapping's for a key (`...loadBalancer` for an unknown field); it is the longest
/// prefix of the tracked path `tracked` the message starts with.
fn split_message(
    error: &serde_yaml::Error,
    location: Option<&serde_yaml::Location>,
    tracked: &str,
) -> (String, String) {
    let full = error.to_string();
    let mut message = full.as_str();
    if let Some(location) = location {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        message = message.strip_suffix(suffix.as_str()).unwrap_or(message);
    }
    let mut ends: Vec<usize> = tracked
        .match_indices(['.', '['])
        .map(|(i, _)| i)
        .chain(std::iter::once(tracked.len()))
        .collect();
    ends.reverse();
    for end in ends {
        let path = &tracked[..end];
        if let Some(rest) = message
            .strip_prefix(path)
            .and_then(|rest| rest.strip_prefix(": "))
            && !path.is_empty()
        {
            return (path.to_owned(), rest.to_owned());
        }
    }
    ("the root".to_owned(), message.to_owned())
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
