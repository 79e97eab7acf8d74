//! Rendered documents checked against SchemaStore's Traefik file-provider schemas.
//!
//! The schemas are a structural check, stricter than Traefik in one place that matters here:
//! they require at least one server, while Traefik accepts `servers: []` (and answers 503).
//! For documents with empty pools the only errors allowed are those `minItems` errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use ksd_shared::merge::{ClusterDocument, merge};
use ksd_shared::names::ClusterName;
use ksd_shared::traefik::{Document, TraefikVersion, render};
use proptest::prelude::*;

fn schema_dir() -> PathBuf {
    // Vendored in the repository (see checks/schemas/SOURCE.md).
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../checks/schemas")
}

fn load_validator(file: &str) -> Validator {
    let path = schema_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read the Traefik schema {}: {error} (vendored in checks/schemas/)",
            path.display()
        )
    });
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

fn validator(version: TraefikVersion) -> &'static Validator {
    static V2: OnceLock<Validator> = OnceLock::new();
    static V3: OnceLock<Validator> = OnceLock::new();
    match version {
        TraefikVersion::V2 => V2.get_or_init(|| load_validator("traefik-v2-file-provider.json")),
        TraefikVersion::V3 => V3.get_or_init(|| load_validator("traefik-v3-file-provider.json")),
    }
}

/// An error the schema reports only because a pool has no servers: `minItems` on a
/// `servers` array, or a `oneOf` (service kinds) whose `loadBalancer` branch failed only so.
fn only_empty_servers(error: &ValidationError<'_>) -> bool {
    match &error.kind {
        ValidationErrorKind::MinItems { limit: 1 } => {
            error.instance_path.as_str().ends_with("/servers")
                && error.instance.as_array().is_some_and(|a| a.is_empty())
        }
        ValidationErrorKind::OneOfNotValid { context } => context
            .iter()
            .any(|branch| !branch.is_empty() && branch.iter().all(only_empty_servers)),
        _ => false,
    }
}

fn has_empty_pool(doc: &Document) -> bool {
    let http = doc
        .http
        .iter()
        .flat_map(|s| s.services.values())
        .any(|s| s.load_balancer.servers.is_empty());
    let tcp = doc
        .tcp
        .iter()
        .flat_map(|s| s.services.values())
        .any(|s| s.load_balancer.servers.is_empty());
    let udp = doc
        .udp
        .iter()
        .flat_map(|s| s.services.values())
        .any(|s| s.load_balancer.servers.is_empty());
    http || tcp || udp
}

/// Renders `doc`, reads the YAML back as JSON and checks it against the version's schema.
fn check(doc: &Document, version: TraefikVersion) -> Result<(), String> {
    let rendered = render(doc, version, "schema check");
    let text = String::from_utf8(rendered.bytes).unwrap();
    let value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    // A comment-only document reads as null: Traefik loads it as an empty configuration,
    // and there is nothing for the schema to check.
    if value.is_null() {
        return if doc.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "a document with services rendered as nothing:\n{text}"
            ))
        };
    }
    let errors: Vec<ValidationError<'_>> = validator(version).iter_errors(&value).collect();
    let unexpected: Vec<String> = errors
        .iter()
        .filter(|e| !only_empty_servers(e))
        .map(|e| format!("{} at {}", e, e.instance_path.as_str()))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("{version}: {unexpected:#?}\n{text}"));
    }
    if !errors.is_empty() && !has_empty_pool(doc) {
        return Err(format!(
            "{version}: server-count errors without an empty pool\n{text}"
        ));
    }
    Ok(())
}

#[test]
fn the_schemas_are_found_and_catch_a_broken_document() {
    for version in [TraefikVersion::V2, TraefikVersion::V3] {
        let broken = serde_json::json!({
            "http": {"services": {"web": {"loadBalancer": {"servers": [{"url": 1}], "bogus": true}}}}
        });
        assert!(!validator(version).is_valid(&broken), "{version}");
    }
}

#[test]
fn a_rich_document_validates_for_v2_and_v3() {
    let doc = common::rich_document();
    for version in [TraefikVersion::V2, TraefikVersion::V3] {
        check(&doc, version).unwrap();
        let value: serde_json::Value =
            serde_yaml::from_slice(&render(&doc, version, "").bytes).unwrap();
        assert!(validator(version).is_valid(&value), "{version}");
    }
}

#[test]
fn a_merged_document_validates() {
    let clusters: Vec<ClusterDocument> = ["eu-1", "us-2"]
        .into_iter()
        .map(|name| ClusterDocument {
            cluster: ClusterName::parse(name).unwrap(),
            document: common::rich_document(),
        })
        .collect();
    let merged = merge(&clusters);
    assert!(merged.conflicts.is_empty());
    for version in [TraefikVersion::V2, TraefikVersion::V3] {
        check(&merged.document, version).unwrap();
    }
}

#[test]
fn empty_pools_fail_the_schema_only_on_server_count() {
    let mut doc = common::rich_document();
    for service in doc.http.iter_mut().flat_map(|s| s.services.values_mut()) {
        service.load_balancer.servers.clear();
    }
    for service in doc.udp.iter_mut().flat_map(|s| s.services.values_mut()) {
        service.load_balancer.servers.clear();
    }
    for version in [TraefikVersion::V2, TraefikVersion::V3] {
        let value: serde_json::Value =
            serde_yaml::from_slice(&render(&doc, version, "").bytes).unwrap();
        // The schema does complain, and only about the server count.
        let errors: Vec<_> = validator(version).iter_errors(&value).collect();
        assert!(!errors.is_empty(), "{version}");
        assert!(
            errors.iter().all(only_empty_servers),
            "{version}: {errors:?}"
        );
        check(&doc, version).unwrap();
    }
}

#[test]
fn an_empty_document_is_comments_only() {
    for version in [TraefikVersion::V2, TraefikVersion::V3] {
        check(&Document::default(), version).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn generated_documents_validate(doc in common::document()) {
        for version in [TraefikVersion::V2, TraefikVersion::V3] {
            let result = check(&doc, version);
            prop_assert!(result.is_ok(), "{}", result.unwrap_err());
        }
    }
}
