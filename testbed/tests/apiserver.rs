//! The API server double over HTTP: what a raw client sees (status codes, list pages, watch
//! lines), what kube-rs sees, and a kube-runtime reflector that must stay correct across the
//! faults the server injects.

#![allow(clippy::unwrap_used)]

#[path = "apiserver/events.rs"]
mod events;
#[path = "apiserver/faults.rs"]
mod faults;
#[path = "apiserver/requests.rs"]
mod requests;
#[path = "apiserver/seeds.rs"]
mod seeds;
#[path = "apiserver/watches.rs"]
mod watches;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_testbed::apiserver::{ApiClient, ApiServerOptions, TestApiServer, WatchEnd, WatchEvents};
use ksd_testbed::slices::{Pod, ready_pods, service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn kube_client(server: &TestApiServer) -> kube::Client {
    // NB: this build links both of rustls' crypto providers (kube asks for ring, the AWS SDK
    // for aws-lc-rs), so rustls cannot pick one by itself. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn svc_json(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_event(events: &mut WatchEvents) -> Value {
    timeout(WAIT, events.next())
        .await
        .expect("no watch event in time")
        .expect("the watch ended")
}

fn summary(event: &Value) -> (String, String) {
    (
        event["type"].as_str().unwrap().to_owned(),
        event["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}
