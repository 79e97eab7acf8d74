//! The file against SchemaStore's JSON Schemas for Traefik v2 and v3.

use ksd_testbed::s3::S3Fixture;

use crate::common::*;

/// The file validated against SchemaStore's schemas for the Traefik version it targets.
#[tokio::test(flavor = "multi_thread")]
async fn output_validates_against_schemastore_v2_and_v3() {
    let s3 = S3Fixture::start().await.unwrap();
    let a = "http:
  services:
    web:
      loadBalancer:
        servers:
          - url: \"http://10.0.0.1:8080\"
          - url: \"https://[fd00::1]:8443\"
        passHostHeader: false
        sticky:
          cookie:
            name: lb
            secure: true
            httpOnly: true
            sameSite: lax
        healthCheck:
          path: /healthz
          interval: 10s
          timeout: 3s
    grpc:
      loadBalancer:
        servers:
          - url: \"h2c://10.0.0.2:9000\"
tcp:
  services:
    db:
      loadBalancer:
        servers:
          - address: \"10.0.0.3:5432\"
          - address: \"[fd00::3]:5432\"
udp:
  services:
    dns:
      loadBalancer:
        servers:
          - address: \"10.0.0.4:53\"
";
    let b = http_doc(&[("web", &["10.1.0.1"])]);
    let schema_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../checks/schemas");
    for (version, prefix) in [("v3", "schema-v3/"), ("v2", "schema-v2/")] {
        put(&s3, prefix, "a.traefik.yaml", a).await;
        put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let (code, _, stderr) = SyncerConfig::s3(&s3, prefix, dir.path())
            .env("TRAEFIK_VERSION", version)
            .arg("--once")
            .run()
            .await;
        assert_eq!(code, Some(0), "{stderr}");
        let bytes = std::fs::read(dir.path().join(OUTPUT_FILE)).unwrap();
        let instance: serde_json::Value = serde_yaml::from_slice(&bytes).unwrap();
        let schema_path = schema_dir.join(format!("traefik-{version}-file-provider.json"));
        let schema: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&schema_path)
                .unwrap_or_else(|e| panic!("schema {} missing: {e}", schema_path.display())),
        )
        .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{version}: {errors:?}\n{instance:#}");
        assert!(instance["http"]["services"]["web.a"].is_object());
    }

    servers_empty_fails_only_min_items(&s3, &schema_dir).await;
}

/// `servers: []` is valid for Traefik (503) and for the syncer, and fails only the schema's
/// minItems.
async fn servers_empty_fails_only_min_items(s3: &S3Fixture, schema_dir: &std::path::Path) {
    let prefix = "schema-empty/";
    put(
        s3,
        prefix,
        "a.traefik.yaml",
        "http:\n  services:\n    web:\n      loadBalancer:\n        servers: []\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = SyncerConfig::s3(s3, prefix, dir.path())
        .arg("--once")
        .run()
        .await;
    assert_eq!(code, Some(0), "{stderr}");
    let instance: serde_json::Value =
        serde_yaml::from_slice(&std::fs::read(dir.path().join(OUTPUT_FILE)).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(schema_dir.join("traefik-v3-file-provider.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(!errors.is_empty(), "servers: [] should fail minItems");
    for error in &errors {
        assert!(error.starts_with("/http/services/web"), "{error}");
    }
    // With one server in each empty list, nothing else is wrong.
    let mut patched = instance.clone();
    for service in ["web", "web.a"] {
        let servers = &mut patched["http"]["services"][service]["loadBalancer"]["servers"];
        assert_eq!(*servers, serde_json::json!([]), "{service}");
        *servers = serde_json::json!([{ "url": "http://10.0.0.1:80" }]);
    }
    let errors: Vec<String> = validator
        .iter_errors(&patched)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
