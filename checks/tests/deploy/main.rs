//! The exporter's Kubernetes manifests (`deploy/`), checked without a cluster.
//!
//! Every overlay renders with `kubectl kustomize`; every rendered object validates against the
//! Kubernetes 1.33 schemas with `kubernetes-validate --strict` (PyPI `kubernetes-validate`,
//! which ships schemas for 1.25 to 1.37); and the properties the project promises are asserted
//! on what is rendered, since an overlay can undo what the base sets: one non-root replica with
//! a read-only root filesystem and no capabilities, read-only RBAC on exactly Services and
//! EndpointSlices, egress to DNS, the API server and S3 only, and no static keys on AWS.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod pod;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use common::{
    help_env_options, kubectl, read_repo_yaml, repo_path, require_tool, run, run_ok, str_at,
    yaml_documents,
};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";
/// The overlays the project ships; any other directory under deploy/overlays is checked too.
const OVERLAYS: [&str; 2] = ["aws", "s3-compatible"];
const NAMESPACE: &str = "k8s-service-discovery";
/// Where the example Secret lives; it is deliberately in no kustomization.
const SECRET_EXAMPLE: &str = "deploy/base/s3-credentials.example.yaml";

/// Every overlay directory, by name.
fn overlays() -> Vec<(String, PathBuf)> {
    let dir = repo_path("deploy/overlays");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("kustomization.yaml").is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("overlay name")
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .collect();
    found.sort();
    let names: BTreeSet<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    for expected in OVERLAYS {
        assert!(
            names.contains(expected),
            "deploy/overlays/{expected} is missing (found {names:?})"
        );
    }
    found
}

/// `kubectl kustomize DIR`, as JSON values.
fn render(dir: &Path) -> Vec<Value> {
    let stdout = run_ok(Command::new(kubectl()).arg("kustomize").arg(dir));
    let objects = yaml_documents(&stdout);
    assert!(!objects.is_empty(), "{} renders nothing", dir.display());
    objects
}

fn rendered_overlays() -> Vec<(String, Vec<Value>)> {
    overlays()
        .into_iter()
        .map(|(name, dir)| (name, render(&dir)))
        .collect()
}

fn kind(object: &Value) -> &str {
    str_at(object, "/kind")
}

fn name(object: &Value) -> &str {
    str_at(object, "/metadata/name")
}

fn all_of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

fn one_of_kind<'a>(overlay: &str, objects: &'a [Value], wanted: &str) -> &'a Value {
    let found = all_of_kind(objects, wanted);
    assert_eq!(
        found.len(),
        1,
        "{overlay}: expected exactly one {wanted}, found {}",
        found.len()
    );
    found[0]
}

/// The exporter's environment: the generated ConfigMap's data (through `envFrom`) and the
/// container's own `env` entries.
fn exporter_environment(overlay: &str, objects: &[Value]) -> BTreeMap<String, String> {
    let deployment = one_of_kind(overlay, objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut environment = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(config_map) = source["configMapRef"]["name"].as_str() {
            let data = objects
                .iter()
                .find(|o| kind(o) == "ConfigMap" && name(o) == config_map)
                .unwrap_or_else(|| {
                    panic!("{overlay}: envFrom names ConfigMap {config_map}, which is not rendered")
                });
            for (key, value) in data["data"].as_object().into_iter().flatten() {
                environment.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    for entry in container["env"].as_array().into_iter().flatten() {
        environment.insert(
            str_at(entry, "/name").to_owned(),
            entry["value"].as_str().unwrap_or_default().to_owned(),
        );
    }
    environment
}

#[test]
fn every_overlay_renders_the_expected_objects() {
    let expected: BTreeSet<&str> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    .into();
    for (overlay, objects) in rendered_overlays() {
        let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
        assert_eq!(kinds, expected, "{overlay}: rendered kinds");
        // Credentials never come from the repository: a Secret is created by the operator.
        assert!(all_of_kind(&objects, "Secret").is_empty());
        for object in &objects {
            if !["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&kind(object)) {
                assert_eq!(
                    object["metadata"]["namespace"],
                    json!(NAMESPACE),
                    "{overlay}: {} {} is not in {NAMESPACE}",
                    kind(object),
                    name(object)
                );
            }
        }
    }
}

#[test]
fn rendered_objects_pass_kubernetes_validate_strict() {
    let tool = require_tool(
        "kubernetes-validate",
        "`pip install kubernetes-validate` (it ships the Kubernetes JSON schemas)",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (overlay, objects) in rendered_overlays() {
        let path = dir.path().join(format!("{overlay}.yaml"));
        let stream: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        std::fs::write(&path, stream.join("---\n")).unwrap();
        for object in &objects {
            expected.push(format!(
                "{} passed for resource {}/{}",
                path.display(),
                kind(object).to_lowercase(),
                name(object)
            ));
        }
        files.push(path);
    }
    // The example Secret, and the demo's seed objects (they are real Kubernetes objects too).
    for relative in [
        SECRET_EXAMPLE,
        "deploy/demo/cluster-a.yaml",
        "deploy/demo/cluster-b.yaml",
    ] {
        let path = repo_path(relative);
        for object in yaml_documents(&common::read_repo_file(relative)) {
            expected.push(format!(
                "{} passed for resource {}/{}",
                path.display(),
                kind(&object).to_lowercase(),
                name(&object)
            ));
        }
        files.push(path);
    }

    let output = run(Command::new(&tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate rejected the manifests:\n{text}"
    );
    // A kind without a schema only warns and exits 0: demand a pass for every object.
    for line in text.lines() {
        assert!(
            !line.starts_with("WARN") && !line.starts_with("ERROR"),
            "kubernetes-validate: {line}"
        );
    }
    for pass in expected {
        assert!(
            text.contains(&pass),
            "missing `{pass}` in kubernetes-validate's output:\n{text}"
        );
    }
}

/// The validation above is only worth something if strict mode rejects what it should.
#[test]
fn kubernetes_validate_rejects_an_unknown_field() {
    let tool = require_tool("kubernetes-validate", "`pip install kubernetes-validate`");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: c\n          image: c:1\n          securityContxt: {runAsNonRoot: true}\n",
    )
    .unwrap();
    let output = run(Command::new(&tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&path));
    assert!(
        !output.status.success(),
        "kubernetes-validate accepted a misspelled field:\n{}",
        common::describe_output(&output)
    );
}

#[test]
fn leader_election_may_write_only_its_lease_in_its_namespace() {
    for (overlay, objects) in rendered_overlays() {
        let environment = exporter_environment(&overlay, &objects);
        let lease = environment
            .get("LEASE_NAME")
            .cloned()
            .unwrap_or_else(|| "ksd-exporter-leader".to_owned());
        assert_eq!(
            environment
                .get("LEASE_NAMESPACE")
                .map(String::as_str)
                .unwrap_or(""),
            "",
            "{overlay}: the Lease lives in the exporter's own namespace"
        );
        let role = one_of_kind(&overlay, &objects, "Role");
        assert_eq!(role["metadata"]["namespace"], json!(NAMESPACE), "{overlay}");
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "resourceNames": [lease], "verbs": ["get", "update"]},
            ]),
            "{overlay}: Role rules"
        );
        let binding = one_of_kind(&overlay, &objects, "RoleBinding");
        assert_eq!(
            binding["metadata"]["namespace"],
            json!(NAMESPACE),
            "{overlay}"
        );
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name(role)}),
            "{overlay}"
        );
        let account = one_of_kind(&overlay, &objects, "ServiceAccount");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": name(account), "namespace": NAMESPACE}]),
            "{overlay}"
        );
    }
}

#[test]
fn rbac_grants_only_read_on_services_and_endpointslices() {
    let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    let mut expected = BTreeMap::new();
    expected.insert((String::new(), "services".to_owned()), read.clone());
    expected.insert(
        ("discovery.k8s.io".to_owned(), "endpointslices".to_owned()),
        read,
    );

    for (overlay, objects) in rendered_overlays() {
        let role = one_of_kind(&overlay, &objects, "ClusterRole");
        assert!(
            role["aggregationRule"].is_null(),
            "{overlay}: no aggregation"
        );
        let granted = rules_of(&overlay, role);
        assert_eq!(granted, expected, "{overlay}: ClusterRole rules");

        let binding = one_of_kind(&overlay, &objects, "ClusterRoleBinding");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name(role)}),
            "{overlay}"
        );
        let account = one_of_kind(&overlay, &objects, "ServiceAccount");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": name(account), "namespace": NAMESPACE}]),
            "{overlay}"
        );
    }
}

/// What one egress rule lets through.
#[derive(Debug)]
enum Egress {
    Dns,
    ApiServer,
    Other,
}

#[test]
fn network_policy_allows_egress_to_dns_api_server_and_s3_only() {
    for (overlay, objects) in rendered_overlays() {
        let policy = one_of_kind(&overlay, &objects, "NetworkPolicy");
        the_policy_selects_the_exporter_both_ways(&overlay, &objects, policy);
        inbound_is_the_admin_port_only(&overlay, policy);
        let mut classes = Vec::new();
        for rule in policy["spec"]["egress"].as_array().expect("egress") {
            classes.push(egress_class(&overlay, rule));
        }
        one_egress_rule_of_each_class(&overlay, &classes);
    }
}

/// The policy selects the exporter's pods and governs both their ingress and their egress.
fn the_policy_selects_the_exporter_both_ways(overlay: &str, objects: &[Value], policy: &Value) {
    let deployment = one_of_kind(overlay, objects, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector.matchLabels")
    {
        assert_eq!(
            &pod_labels[key], value,
            "{overlay}: the policy does not select the exporter's pods"
        );
    }
    let types: BTreeSet<&str> = policy["spec"]["policyTypes"]
        .as_array()
        .expect("policyTypes")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types, ["Egress", "Ingress"].into(), "{overlay}");
}

/// Inbound: the admin port only.
fn inbound_is_the_admin_port_only(overlay: &str, policy: &Value) {
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress");
    for rule in ingress {
        assert_eq!(
            rule["ports"],
            json!([{"port": "admin", "protocol": "TCP"}]),
            "{overlay}: ingress {rule}"
        );
    }
}

/// The class of one egress rule, which must be limited by peer and port: DNS only to
/// kube-dns, the API server only to single addresses, anything else (S3) excluding the
/// private ranges if it allows anywhere.
fn egress_class(overlay: &str, rule: &Value) -> Egress {
    // An empty or missing `to` or `ports` would mean every destination or port.
    let to = rule["to"].as_array().filter(|to| !to.is_empty());
    let ports = rule["ports"].as_array().filter(|p| !p.is_empty());
    let (Some(to), Some(ports)) = (to, ports) else {
        panic!("{overlay}: egress rule {rule} is not limited by peer and port");
    };
    let port_numbers: BTreeSet<u64> = ports
        .iter()
        .map(|p| p["port"].as_u64().expect("numeric port"))
        .collect();
    if port_numbers == [53].into() {
        assert!(
            to.iter().all(
                |peer| peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    == json!("kube-system")
                    && peer["podSelector"]["matchLabels"]["k8s-app"] == json!("kube-dns")
            ),
            "{overlay}: DNS must go to kube-dns only: {rule}"
        );
        Egress::Dns
    } else if port_numbers.is_subset(&[443, 6443].into())
        && to.iter().all(|peer| {
            peer["ipBlock"]["cidr"]
                .as_str()
                .is_some_and(|cidr| cidr.ends_with("/32") || cidr.ends_with("/128"))
        })
    {
        Egress::ApiServer
    } else {
        for peer in to {
            // "Anywhere" is acceptable for public S3 only if it excludes private ranges.
            if peer["ipBlock"]["cidr"] == json!("0.0.0.0/0") {
                let except = peer["ipBlock"]["except"].as_array().expect("except");
                for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
                    assert!(
                        except.contains(&json!(private)),
                        "{overlay}: S3 rule must exclude {private}"
                    );
                }
            }
        }
        Egress::Other
    }
}

/// Exactly one egress rule for DNS, one for the API server and one for S3.
fn one_egress_rule_of_each_class(overlay: &str, classes: &[Egress]) {
    let count = |wanted: fn(&Egress) -> bool| classes.iter().filter(|c| wanted(c)).count();
    assert_eq!(
        count(|c| matches!(c, Egress::Dns)),
        1,
        "{overlay}: {classes:?}"
    );
    assert_eq!(
        count(|c| matches!(c, Egress::ApiServer)),
        1,
        "{overlay}: {classes:?}"
    );
    assert_eq!(
        count(|c| matches!(c, Egress::Other)),
        1,
        "{overlay}: S3: {classes:?}"
    );
}

#[test]
fn aws_overlay_uses_workload_identity_and_no_static_keys() {
    let objects = render(&repo_path("deploy/overlays/aws"));
    let account = one_of_kind("aws", &objects, "ServiceAccount");
    let role = str_at(account, "/metadata/annotations/eks.amazonaws.com~1role-arn");
    assert!(role.starts_with("arn:aws:iam::"), "IRSA role ARN: {role}");
    let environment = exporter_environment("aws", &objects);
    for forbidden in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
    ] {
        assert!(
            !environment.contains_key(forbidden),
            "aws: {forbidden} must not be set"
        );
    }
    let deployment = one_of_kind("aws", &objects, "Deployment");
    let env_from = &deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"];
    assert!(
        env_from
            .as_array()
            .unwrap()
            .iter()
            .all(|source| source["secretRef"].is_null()),
        "aws: no Secret in the environment"
    );
    assert!(environment["STORAGE_URL"].starts_with("s3://"));
}

#[test]
fn s3_compatible_overlay_takes_keys_from_the_example_secret() {
    let objects = render(&repo_path("deploy/overlays/s3-compatible"));
    let secret = read_repo_yaml(SECRET_EXAMPLE);
    assert_eq!(secret["kind"], json!("Secret"));
    assert_eq!(secret["metadata"]["namespace"], json!(NAMESPACE));
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].into());

    let deployment = one_of_kind("s3-compatible", &objects, "Deployment");
    let env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        .as_array()
        .expect("envFrom");
    let secret_refs: Vec<&Value> = env_from
        .iter()
        .filter(|source| !source["secretRef"].is_null())
        .collect();
    assert_eq!(secret_refs.len(), 1);
    assert_eq!(
        secret_refs[0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );
    assert_ne!(
        secret_refs[0]["secretRef"]["optional"],
        json!(true),
        "keys are required"
    );

    let environment = exporter_environment("s3-compatible", &objects);
    assert_eq!(environment["S3_FORCE_PATH_STYLE"], "true");
    assert!(environment["AWS_ENDPOINT_URL"].starts_with("http"));
    assert!(environment["STORAGE_URL"].starts_with("s3://"));
}

#[test]
fn overlay_settings_are_variables_the_exporter_knows() {
    let known: BTreeSet<String> = help_env_options("ksd-exporter")
        .into_iter()
        .map(|option| option.variable)
        .collect();
    for (overlay, objects) in rendered_overlays() {
        let environment = exporter_environment(&overlay, &objects);
        for required in ["CLUSTER_NAME", "STORAGE_URL"] {
            assert!(
                environment.get(required).is_some_and(|v| !v.is_empty()),
                "{overlay}: {required} must be set"
            );
        }
        for variable in environment.keys() {
            assert!(
                known.contains(variable) || variable.starts_with("AWS_") || variable == "RUST_LOG",
                "{overlay}: {variable} is not a ksd-exporter variable (--help lists {known:?})"
            );
        }
    }
}

/// The guide's policy documents are pasted into IAM consoles and `mc`: they must be JSON.
#[test]
fn the_deploy_guide_json_examples_parse() {
    let guide = common::read_repo_file("docs/deploy.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in guide.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        blocks.len() >= 4,
        "expected the bucket, exporter, trust and syncer policies"
    );
    for block in blocks {
        let value: Value = serde_json::from_str(&block)
            .unwrap_or_else(|e| panic!("invalid JSON in docs/deploy.md ({e}):\n{block}"));
        assert_eq!(value["Version"], json!("2012-10-17"), "{block}");
    }
}

/// `kubectl kustomize` of an overlay with the components added (kustomize takes only relative
/// paths, so the temporary kustomization climbs to the repository root).
fn render_with_components(overlay: &str, components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let up: String = dir.path().components().skip(1).map(|_| "../").collect();
    let relative = |p: &str| {
        format!(
            "{up}{}",
            repo_path(p).display().to_string().trim_start_matches('/')
        )
    };
    let mut text = format!("resources:\n  - {}\ncomponents:\n", relative(overlay));
    for component in components {
        text.push_str(&format!("  - {}\n", relative(component)));
    }
    std::fs::write(dir.path().join("kustomization.yaml"), text).unwrap();
    render(dir.path())
}

/// The rules of a ClusterRole, as (group, resource) -> verbs; `overlay` names it in messages.
fn rules_of(overlay: &str, role: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert!(
            rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(),
            "{overlay}: unexpected rule {rule}"
        );
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap_or_else(|| panic!("{overlay}: rule without {key}: {rule}"))
                .iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                granted
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(strings("verbs"));
            }
        }
    }
    granted
}

/// The events component: it builds onto every overlay, its objects validate, it sets
/// EVENTS=true, and it grants exactly what the event recorder does: create and patch (the
/// series) on events.k8s.io events, bound to the exporter's service account. The recorder's
/// only read, the Service for its uid, is the base's `get` on services.
#[test]
fn the_events_component_grants_exactly_what_the_recorder_uses() {
    let tool = require_tool(
        "kubernetes-validate",
        "`pip install kubernetes-validate` (it ships the Kubernetes JSON schemas)",
    );
    for (overlay, _) in overlays() {
        let objects = render_with_components(
            &format!("deploy/overlays/{overlay}"),
            &["deploy/components/events"],
        );
        let environment = exporter_environment(&overlay, &objects);
        assert_eq!(environment.get("EVENTS").map(String::as_str), Some("true"));
        let roles = all_of_kind(&objects, "ClusterRole");
        let events = roles
            .iter()
            .find(|r| name(r) == "ksd-exporter-events")
            .unwrap_or_else(|| panic!("{overlay}: no ClusterRole ksd-exporter-events"));
        let expected = BTreeMap::from([(
            ("events.k8s.io".to_owned(), "events".to_owned()),
            ["create", "patch"].map(String::from).into(),
        )]);
        assert_eq!(rules_of(&overlay, events), expected, "{overlay}");
        let base = roles
            .iter()
            .find(|r| name(r) == "ksd-exporter")
            .unwrap_or_else(|| panic!("{overlay}: no ClusterRole ksd-exporter"));
        assert!(
            rules_of(&overlay, base)[&(String::new(), "services".to_owned())].contains("get"),
            "{overlay}"
        );
        let binding = all_of_kind(&objects, "ClusterRoleBinding")
            .into_iter()
            .find(|b| b["roleRef"]["name"] == "ksd-exporter-events")
            .unwrap_or_else(|| panic!("{overlay}: ksd-exporter-events is not bound"));
        let account = one_of_kind(&overlay, &objects, "ServiceAccount");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": name(account), "namespace": NAMESPACE}]),
            "{overlay}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rendered.yaml");
        let stream: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        std::fs::write(&path, stream.join("---\n")).unwrap();
        let output = run(Command::new(&tool)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&path));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{overlay}: {text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("WARN") || l.starts_with("ERROR")),
            "{overlay}: {text}"
        );
    }
}
