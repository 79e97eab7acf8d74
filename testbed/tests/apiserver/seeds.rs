//! Seeded state and scale: EndpointSlices, the binary, ten thousand Services, Leases.

use super::*;

#[tokio::test]
async fn set_endpoints_scales_a_service() {
    let server = TestApiServer::start().await.unwrap();
    let web = service("shop", "web")
        .label("k8s-service-discovery", "true")
        .port("http", 80, 8080)
        .build();
    assert!(
        server.set_endpoints(&web, &[]).is_err(),
        "the Service must exist first"
    );
    server.apply_typed(&web).unwrap();
    let slices_of = |server: &TestApiServer| -> Vec<EndpointSlice> {
        server
            .list_in("endpointslices", "shop")
            .into_iter()
            .map(|s| serde_json::from_value(s).unwrap())
            .collect()
    };
    server
        .set_endpoints(&web, &ready_pods("web", 250, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    let slices = slices_of(&server);
    assert_eq!(slices.len(), 3);
    assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 250);
    let uid = server.get("svc", "shop", "web").unwrap()["metadata"]["uid"].clone();
    assert!(slices.iter().all(|s| {
        s.metadata.owner_references.as_ref().unwrap()[0].uid == uid.as_str().unwrap()
            && s.metadata.labels.as_ref().unwrap()["k8s-service-discovery"] == "true"
    }));
    let rv = server.resource_version();
    server
        .set_endpoints(&web, &ready_pods("web", 2, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    let slices = slices_of(&server);
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].endpoints.len(), 2);
    // One slice rewritten in place, two deleted.
    assert_eq!(server.resource_version(), rv + 3);
    // The same endpoints again change nothing.
    server
        .set_endpoints(&web, &ready_pods("web", 2, Ipv4Addr::new(10, 1, 0, 1)))
        .unwrap();
    assert_eq!(server.resource_version(), rv + 3);

    // Over HTTP, as the `scale` command does.
    let written = ksd_testbed::slices::scale(
        &server.client(),
        "shop",
        "web",
        &ready_pods("web", 120, Ipv4Addr::new(10, 2, 0, 1)),
    )
    .await
    .unwrap();
    assert_eq!(written, 2);
    let slices = slices_of(&server);
    assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 120);
}

#[tokio::test]
async fn the_binary_serves_seeds_and_scales() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n---\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let binary = env!("CARGO_BIN_EXE_ksd-testbed");
    let mut server = tokio::process::Command::new(binary)
        .args(["apiserver", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--seed")
        .arg(&seed)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    timeout(WAIT, async {
        while !kubeconfig.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the kubeconfig was never written");
    let client = ApiClient::from_kubeconfig(&kubeconfig).unwrap();
    let web = client
        .get("/api/v1/namespaces/demo/services/web")
        .await
        .unwrap();
    assert_eq!(web.status, 200);
    let scaled = tokio::process::Command::new(binary)
        .args([
            "scale",
            "--namespace",
            "demo",
            "--service",
            "web",
            "--replicas",
            "3",
            "--base-ip",
            "10.1.0.",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    let slices = client
        .get("/apis/discovery.k8s.io/v1/namespaces/demo/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
        .await
        .unwrap();
    let addresses: Vec<&str> = slices.body["items"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
    // SIGTERM ends it cleanly.
    let pid = server.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = timeout(WAIT, server.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_and_a_thousand_slices() {
    let server = TestApiServer::start().await.unwrap();
    for i in 0..10_000 {
        server
            .apply_typed(
                &service(&format!("ns{}", i % 50), &format!("svc{i}"))
                    .label("export", "yes")
                    .port("http", 80, 8080)
                    .build(),
            )
            .unwrap();
    }
    for i in 0..10 {
        let svc = service(&format!("ns{i}"), &format!("svc{i}"))
            .port("http", 80, 8080)
            .build();
        let base = Ipv4Addr::new(10, 100 + i, 0, 1);
        server
            .set_endpoints(&svc, &ready_pods("p", 10_000, base))
            .unwrap();
    }
    assert_eq!(server.list("endpointslices").len(), 1_000);
    let client = kube_client(&server).await;
    let (reader, writer) = reflector::store::<Service>();
    let stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    timeout(Duration::from_secs(120), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 10_000);
    let slices: Api<EndpointSlice> = Api::all(client);
    let listed = slices.list(&ListParams::default()).await.unwrap();
    let endpoints: usize = listed.items.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(endpoints, 100_000);
}

/// Leases as leader election uses them through kube-rs: create (409 when it exists), get,
/// replace conditional on the resourceVersion (409 when it is stale), and a cleared holder.
#[tokio::test]
async fn leases_take_conditional_updates_as_leader_election_needs() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    let server = TestApiServer::start().await.unwrap();
    let client = kube_client(&server).await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let lease = |holder: Option<&str>| Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("leader".to_owned()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases
        .create(&PostParams::default(), &lease(Some("a")))
        .await
        .unwrap();
    let first_rv = created.metadata.resource_version.clone().unwrap();
    match leases
        .create(&PostParams::default(), &lease(Some("b")))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a second create: {other:?}"),
    }

    // The holder renews with the resourceVersion it read.
    let mut renewed = leases.get("leader").await.unwrap();
    renewed.spec.as_mut().unwrap().lease_duration_seconds = Some(16);
    let renewed = leases
        .replace("leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(
        renewed.metadata.resource_version.as_deref(),
        Some(first_rv.as_str())
    );

    // A writer holding the first read loses: 409 Conflict, and the Lease is unchanged.
    let mut stale = created.clone();
    stale.spec = lease(Some("b")).spec;
    match leases
        .replace("leader", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (409, "Conflict"),
                "{status:?}"
            );
        }
        other => panic!("a stale replace: {other:?}"),
    }
    let current = leases.get("leader").await.unwrap();
    assert_eq!(
        current.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );

    // Released: the holder is cleared.
    let mut released = current;
    released.spec.as_mut().unwrap().holder_identity = None;
    let released = leases
        .replace("leader", &PostParams::default(), &released)
        .await
        .unwrap();
    assert_eq!(released.spec.unwrap().holder_identity, None);
}
