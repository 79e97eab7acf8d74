//! The exporter's pods: two hardened replicas under leader election.

use super::*;

#[test]
fn the_exporter_runs_as_two_hardened_replicas_with_leader_election() {
    for (overlay, objects) in rendered_overlays() {
        let deployment = one_of_kind(&overlay, &objects, "Deployment");
        let spec = &deployment["spec"];
        two_replicas_under_leader_election_on_distinct_nodes(&overlay, &objects, spec);
        let pod = &spec["template"]["spec"];
        the_pod_runs_as_non_root_with_the_only_token(&overlay, &objects, pod);
        let container = one_hardened_container_with_a_version_and_resources(&overlay, pod);
        probes_are_on_the_admin_port(&overlay, &objects, container);
    }
}

/// Two replicas that a rollout never takes below two, under leader election, preferably on
/// different nodes, with a disruption budget over the same pods.
fn two_replicas_under_leader_election_on_distinct_nodes(
    overlay: &str,
    objects: &[Value],
    spec: &Value,
) {
    assert_eq!(spec["replicas"], json!(2), "{overlay}: replicas");
    assert_eq!(
        spec["strategy"]["type"],
        json!("RollingUpdate"),
        "{overlay}"
    );
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"],
        json!(0),
        "{overlay}: a rollout never leaves fewer than two"
    );
    // Two replicas with one cluster name write its object only under leader election.
    let environment = exporter_environment(overlay, objects);
    assert_eq!(
        environment.get("LEADER_ELECTION").map(String::as_str),
        Some("true"),
        "{overlay}"
    );
    let selector = &spec["selector"]["matchLabels"];
    let anti = &spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    let term = &anti[0]["podAffinityTerm"];
    assert_eq!(
        term["topologyKey"],
        json!("kubernetes.io/hostname"),
        "{overlay}"
    );
    assert_eq!(&term["labelSelector"]["matchLabels"], selector, "{overlay}");
    let budget = one_of_kind(overlay, objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], json!(1), "{overlay}");
    assert_eq!(
        &budget["spec"]["selector"]["matchLabels"], selector,
        "{overlay}"
    );
}

/// The pod runs as a non-root user with the runtime's seccomp profile, outside the host's
/// network and process namespaces; it mounts its ServiceAccount's token, and the
/// ServiceAccount mounts none elsewhere.
fn the_pod_runs_as_non_root_with_the_only_token(overlay: &str, objects: &[Value], pod: &Value) {
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], json!(true), "{overlay}");
    assert!(
        pod_security["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0),
        "{overlay}: pod runAsUser must be a non-root UID"
    );
    assert_eq!(
        pod_security["seccompProfile"]["type"],
        json!("RuntimeDefault"),
        "{overlay}"
    );
    // It reads the API with its ServiceAccount token; nothing else gets one.
    assert_eq!(
        pod["automountServiceAccountToken"],
        json!(true),
        "{overlay}"
    );
    let account = one_of_kind(overlay, objects, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], json!(name(account)), "{overlay}");
    assert_eq!(
        account["automountServiceAccountToken"],
        json!(false),
        "{overlay}"
    );
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
}

/// One container and no init containers; the container has a read-only root, no privilege
/// escalation, every capability dropped and none added, no root user, a versioned image, and
/// CPU and memory requests and limits; returns it.
fn one_hardened_container_with_a_version_and_resources<'a>(
    overlay: &str,
    pod: &'a Value,
) -> &'a Value {
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{overlay}: one container");
    assert!(
        pod["initContainers"].is_null(),
        "{overlay}: no init containers"
    );
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], json!(true), "{overlay}");
    assert_eq!(
        security["allowPrivilegeEscalation"],
        json!(false),
        "{overlay}"
    );
    assert_ne!(security["privileged"], json!(true), "{overlay}");
    assert_eq!(
        security["capabilities"]["drop"],
        json!(["ALL"]),
        "{overlay}"
    );
    assert!(
        security["capabilities"]["add"].is_null(),
        "{overlay}: no capabilities added"
    );
    assert_ne!(security["runAsNonRoot"], json!(false), "{overlay}");
    assert_ne!(security["runAsUser"], json!(0), "{overlay}");

    let image = str_at(container, "/image");
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
    assert!(
        !tag.is_empty() && tag != "latest" && !tag.contains('/'),
        "{overlay}: image {image} needs a version tag"
    );

    for resource in ["cpu", "memory"] {
        for bound in ["requests", "limits"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "{overlay}: resources.{bound}.{resource} missing"
            );
        }
    }
    container
}

/// Liveness and readiness probes on the container port named admin, which is the port
/// ADMIN_ADDR listens on.
fn probes_are_on_the_admin_port(overlay: &str, objects: &[Value], container: &Value) {
    // Probes on the named admin port, which is where ADMIN_ADDR listens.
    let ports = container["ports"].as_array().expect("ports");
    let admin = ports
        .iter()
        .find(|p| p["name"] == json!("admin"))
        .unwrap_or_else(|| panic!("{overlay}: no container port named admin"));
    let admin_port = admin["containerPort"]
        .as_u64()
        .expect("admin containerPort");
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            container[probe]["httpGet"]["path"],
            json!(path),
            "{overlay}: {probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"],
            json!("admin"),
            "{overlay}: {probe}"
        );
    }
    let environment = exporter_environment(overlay, objects);
    let admin_addr = environment
        .get("ADMIN_ADDR")
        .map(String::as_str)
        .unwrap_or("0.0.0.0:9090");
    assert!(
        admin_addr.ends_with(&format!(":{admin_port}")),
        "{overlay}: ADMIN_ADDR {admin_addr} is not the admin port {admin_port}"
    );
}
