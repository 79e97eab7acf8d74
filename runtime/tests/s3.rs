//! The S3 backend against a real S3 server (moto behind the testbed's recording proxy).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use ksd_runtime::storage::{
    Fetched, LegacyMinio, Object, PutCondition, PutOutcome, S3Options, Storage, StorageUrl,
};
use ksd_testbed::s3::S3Fixture;

async fn fixture() -> S3Fixture {
    S3Fixture::start().await.unwrap()
}

/// A storage that talks to the fixture through its proxy.
fn storage(fx: &S3Fixture, prefix: &str) -> Storage {
    Storage::from_s3_client(fx.proxy_client(), fx.bucket(), prefix)
}

async fn put_direct(fx: &S3Fixture, key: &str, body: &str) {
    fx.client()
        .put_object()
        .bucket(fx.bucket())
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
}

fn object(fetched: Fetched) -> Object {
    match fetched {
        Fetched::Object(o) => o,
        other => panic!("expected an object, got {other:?}"),
    }
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn list_returns_direct_children_across_pages() {
    let fx = fixture().await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let key = format!("c{i}.traefik.yaml");
        put_direct(&fx, &format!("p/{key}"), &format!("body {i}")).await;
        expected.push(key);
    }
    put_direct(&fx, "p/sub/nested.traefik.yaml", "nested").await;
    put_direct(&fx, "other/x.traefik.yaml", "other").await;
    put_direct(&fx, "top.traefik.yaml", "top").await;

    let s = storage(&fx, "p/").with_list_page_size(2);
    fx.reset_counts();
    let listed = s.list().await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, expected);
    // Seven keys and one common prefix, two per page.
    assert!(fx.list_count() >= 4, "{} listing requests", fx.list_count());
    assert_eq!(listed[3].size, "body 3".len() as u64);
    assert!(listed.iter().all(|o| o.last_modified.is_some()));
    let head = fx
        .client()
        .head_object()
        .bucket(fx.bucket())
        .key("p/c3.traefik.yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(Some(listed[3].etag.as_str()), head.e_tag());

    // Without a prefix: only the top-level object.
    let top = storage(&fx, "").list().await.unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].key, "top.traefik.yaml");

    // A prefix with nothing under it.
    assert!(storage(&fx, "empty/").list().await.unwrap().is_empty());
}

#[tokio::test]
async fn get_is_conditional_and_reports_missing_keys() {
    let fx = fixture().await;
    let s = storage(&fx, "p/");
    let md = meta(&[("cluster", "a"), ("exporter-version", "1.2.3")]);
    let written = s
        .put(
            "a.traefik.yaml",
            b"http: {}\n".to_vec(),
            &md,
            PutCondition::None,
        )
        .await
        .unwrap();
    let PutOutcome::Written { etag: Some(etag) } = written else {
        panic!("{written:?}")
    };

    let got = object(s.get("a.traefik.yaml", None).await.unwrap());
    assert_eq!(got.bytes, b"http: {}\n");
    assert_eq!(got.etag, etag);
    assert_eq!(got.metadata, md);
    assert!(got.last_modified.is_some());

    fx.reset_counts();
    assert_eq!(
        s.get("a.traefik.yaml", Some(&etag)).await.unwrap(),
        Fetched::NotModified
    );
    assert_eq!(fx.get_count(), 1);
    assert_eq!(fx.requests()[0].status, Some(304));

    assert_eq!(
        s.get("b.traefik.yaml", None).await.unwrap(),
        Fetched::Missing
    );
    assert_eq!(
        s.get("b.traefik.yaml", Some(&etag)).await.unwrap(),
        Fetched::Missing
    );

    // Changed behind the storage's back: the old ETag fetches the new content.
    put_direct(&fx, "p/a.traefik.yaml", "changed").await;
    let changed = object(s.get("a.traefik.yaml", Some(&etag)).await.unwrap());
    assert_eq!(changed.bytes, b"changed");
    assert_ne!(changed.etag, etag);
    assert!(changed.metadata.is_empty());
}

#[tokio::test]
async fn conditional_puts_detect_conflicts() {
    let fx = fixture().await;
    let s = storage(&fx, "p/");
    let none = BTreeMap::new();
    let first = s
        .put("k.yaml", b"one".to_vec(), &none, PutCondition::IfAbsent)
        .await
        .unwrap();
    assert!(matches!(first, PutOutcome::Written { .. }), "{first:?}");
    assert_eq!(
        s.put("k.yaml", b"two".to_vec(), &none, PutCondition::IfAbsent)
            .await
            .unwrap(),
        PutOutcome::PreconditionFailed
    );
    assert_eq!(
        s.put(
            "k.yaml",
            b"two".to_vec(),
            &none,
            PutCondition::IfMatch("\"0123456789abcdef0123456789abcdef\"".into())
        )
        .await
        .unwrap(),
        PutOutcome::PreconditionFailed
    );
    let current = object(s.get("k.yaml", None).await.unwrap());
    assert_eq!(current.bytes, b"one");
    let second = s
        .put(
            "k.yaml",
            b"two".to_vec(),
            &none,
            PutCondition::IfMatch(current.etag.clone()),
        )
        .await
        .unwrap();
    assert!(matches!(second, PutOutcome::Written { .. }), "{second:?}");
    assert_eq!(object(s.get("k.yaml", None).await.unwrap()).bytes, b"two");

    // The proxy saw exactly the two stored versions, byte for byte.
    assert_eq!(
        fx.put_bodies("p/k.yaml"),
        [b"one".to_vec(), b"two".to_vec()]
    );
    assert_eq!(fx.put_count(), 4);

    s.delete("k.yaml").await.unwrap();
    assert_eq!(s.get("k.yaml", None).await.unwrap(), Fetched::Missing);
    s.delete("k.yaml").await.unwrap();
}

#[tokio::test]
async fn puts_are_yaml_with_user_metadata() {
    let fx = fixture().await;
    let s = storage(&fx, "");
    let md = meta(&[
        ("cluster", "east"),
        ("generated-at", "2025-06-01T00:00:00Z"),
    ]);
    s.put(
        "east.traefik.yaml",
        b"tcp: {}\n".to_vec(),
        &md,
        PutCondition::None,
    )
    .await
    .unwrap();
    let head = fx
        .client()
        .head_object()
        .bucket(fx.bucket())
        .key("east.traefik.yaml")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/yaml"));
    let stored: BTreeMap<String, String> = head
        .metadata()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(stored, md);
}

#[tokio::test]
async fn get_limited_refuses_large_objects() {
    let fx = fixture().await;
    let s = storage(&fx, "p/");
    put_direct(&fx, "p/big.yaml", &"x".repeat(4096)).await;
    let err = s.get_limited("big.yaml", None, 1024).await.unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert_eq!(err.kind(), "too_large");
    assert!(err.to_string().contains("4096"), "{err}");
    let ok = object(s.get_limited("big.yaml", None, 4096).await.unwrap());
    assert_eq!(ok.bytes.len(), 4096);
    assert_eq!(
        s.get_limited("missing.yaml", None, 10).await.unwrap(),
        Fetched::Missing
    );
}

#[tokio::test]
async fn an_outage_is_an_error_and_recovery_is_seamless() {
    let fx = fixture().await;
    let s = storage(&fx, "p/");
    let none = BTreeMap::new();
    s.put("a.yaml", b"before".to_vec(), &none, PutCondition::None)
        .await
        .unwrap();

    fx.set_down(true);
    let err = s.list().await.unwrap_err();
    assert!(err.is_transient(), "{err} ({})", err.kind());
    assert_eq!(err.operation(), "list");
    assert!(
        err.to_string()
            .contains(&format!("s3://{}/p/", fx.bucket())),
        "{err}"
    );
    let err = s.get("a.yaml", None).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = s
        .put("a.yaml", b"during".to_vec(), &none, PutCondition::None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.operation(), "put");

    fx.set_down(false);
    let listed = s.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        object(s.get("a.yaml", None).await.unwrap()).bytes,
        b"before"
    );
    s.put("a.yaml", b"after".to_vec(), &none, PutCondition::None)
        .await
        .unwrap();
    assert_eq!(
        fx.put_bodies("p/a.yaml"),
        [b"before".to_vec(), b"after".to_vec()]
    );
}

#[tokio::test]
async fn a_missing_bucket_is_reported_as_such() {
    let fx = fixture().await;
    let s = Storage::from_s3_client(fx.proxy_client(), "ksd-no-such-bucket-here", "");
    let err = s.list().await.unwrap_err();
    assert!(err.is_no_such_bucket(), "{err} ({})", err.kind());
    assert_eq!(err.kind(), "no_such_bucket");
    let err = s.get("a.yaml", None).await.unwrap_err();
    assert!(err.is_no_such_bucket(), "{err}");
}

#[tokio::test]
async fn connect_with_the_legacy_minio_settings() {
    let fx = fixture().await;
    let url = StorageUrl::parse(&fx.storage_url("legacy")).unwrap();
    let opts = S3Options {
        force_path_style: None,
        legacy: LegacyMinio {
            // host:port without a scheme, as the proof of concept took it.
            endpoint: Some(fx.endpoint().trim_start_matches("http://").to_owned()),
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            bucket: Some(fx.bucket().to_owned()),
            ssl_enabled: Some(false),
        },
    };
    let s = Storage::connect(&url, &opts).await.unwrap();
    let described = s.describe();
    assert!(described.contains(&fx.endpoint()), "{described}");
    assert!(described.contains("path-style"), "{described}");
    assert_eq!(s.url(), url);

    fx.reset_counts();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        s.put(
            "x.yaml",
            b"x".to_vec(),
            &BTreeMap::new(),
            PutCondition::None,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(outcome, PutOutcome::Written { .. }));
    assert_eq!(fx.put_bodies("legacy/x.yaml"), [b"x".to_vec()]);
    assert_eq!(s.list().await.unwrap()[0].key, "x.yaml");
}
