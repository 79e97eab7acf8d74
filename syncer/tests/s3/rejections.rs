//! Rejected documents, one bad version per case: the file keeps the last good version.

use ksd_shared::traefik::TraefikVersion;
use ksd_testbed::s3::{RequestKind, S3Fixture};

use crate::common::*;

/// One bad version of cluster `b` per case, uploaded over a good one. Each case asserts on its
/// own: the reason is counted, the file still holds `a` and `b`'s last good version.
#[tokio::test(flavor = "multi_thread")]
async fn rejected_documents_keep_the_last_good_version() {
    let s3 = S3Fixture::start().await.unwrap();
    let prefix = "reject/";
    let dir = tempfile::tempdir().unwrap();
    let a = http_doc(&[("web", &["10.0.0.1"])]);
    let b = http_doc(&[("api", &["10.1.0.1"])]);
    put(&s3, prefix, "a.traefik.yaml", a.clone()).await;
    put(&s3, prefix, "b.traefik.yaml", b.clone()).await;
    let syncer = SyncerConfig::s3(&s3, prefix, dir.path())
        .env("MAX_OBJECT_BYTES", "4KiB")
        .spawn();
    let good = syncer.wait_clusters("a, b").await;
    assert_eq!(
        good,
        expected_file(&[("a", &a), ("b", &b)], TraefikVersion::V3)
    );
    let mtime_before = mtime(&syncer.output);

    let cases = rejection_cases(&b);
    for (case, body, reason) in &cases {
        reject_one(&s3, &syncer, prefix, &good, case, body, reason).await;
    }
    assert_eq!(mtime(&syncer.output), mtime_before, "no write at all");

    // Several polls later each version was still reported once.
    let polls = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    syncer
        .wait_metric("ksd_syncer_polls_total{outcome=\"ok\"}", polls + 5.0)
        .await;
    assert_eq!(
        syncer.log_count("rejected cluster document"),
        cases.len(),
        "{}",
        syncer.agent.stderr()
    );

    keys_naming_no_cluster_are_reported_once(&s3, &syncer, prefix, &a, &good).await;

    // The other clusters are unaffected: a's update applies while b stays at its last good.
    let a2 = http_doc(&[("web", &["10.0.0.9"])]);
    put(&s3, prefix, "a.traefik.yaml", a2.clone()).await;
    let expected = expected_file(&[("a", &a2), ("b", &b)], TraefikVersion::V3);
    syncer
        .wait_file("a's update", |text| text.as_bytes() == expected.as_slice())
        .await;

    // A fixed b replaces the rejection.
    let b2 = http_doc(&[("api", &["10.1.0.2"])]);
    put(&s3, prefix, "b.traefik.yaml", b2.clone()).await;
    let expected = expected_file(&[("a", &a2), ("b", &b2)], TraefikVersion::V3);
    syncer
        .wait_file("b fixed", |text| text.as_bytes() == expected.as_slice())
        .await;
    assert_eq!(
        syncer
            .metric("ksd_syncer_clusters_rejected{reason=\"too_large\"}")
            .await,
        0.0
    );
}

/// One bad version of `b` per case: what it is, its body, and the reason it is rejected for.
fn rejection_cases(b: &str) -> Vec<(&'static str, String, &'static str)> {
    let lb = "    api:\n      loadBalancer:\n        servers:\n";
    vec![
        ("invalid YAML", "http:\n  services: [unclosed\n".into(), "yaml"),
        (
            "routers",
            format!("{b}  routers:\n    r:\n      rule: \"Host(`x`)\"\n      service: api\n"),
            "not_services_only",
        ),
        (
            "middlewares",
            format!("{b}  middlewares:\n    m:\n      stripPrefix:\n        prefixes: [\"/x\"]\n"),
            "not_services_only",
        ),
        (
            "unknown field",
            format!("{b}        weightz: 3\n"),
            "unknown_field",
        ),
        (
            "foreign scheme",
            format!("http:\n  services:\n{lb}          - url: \"TCP://10.1.0.1:80\"\n"),
            "invalid_server",
        ),
        (
            "unbracketed IPv6",
            format!("http:\n  services:\n{lb}          - url: \"http://fd00::1:80\"\n"),
            "invalid_server",
        ),
        (
            "template marker",
            format!("# {{{{ .Env }}}}\n{b}"),
            "template_marker",
        ),
        (
            "alias bomb",
            "a: &a [\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b]\nd: [*c,*c,*c,*c]\n".into(),
            "unsupported_yaml",
        ),
        (
            "over MAX_OBJECT_BYTES",
            format!("{b}{}", "#".repeat(5000) + "\n"),
            "too_large",
        ),
    ]
}

/// Uploads one bad version of `b` and checks it is counted and rejected, fetched once unless
/// refused from the listing, and that the file still holds `good`.
async fn reject_one(
    s3: &S3Fixture,
    syncer: &Syncer,
    prefix: &str,
    good: &[u8],
    case: &str,
    body: &str,
    reason: &str,
) {
    let sample = format!("ksd_syncer_rejections_total{{reason=\"{reason}\"}}");
    let before = syncer.metric(&sample).await;
    s3.reset_counts();
    put(s3, prefix, "b.traefik.yaml", body.to_owned()).await;
    syncer.wait_metric(&sample, before + 1.0).await;
    assert_eq!(
        syncer.read().unwrap(),
        good,
        "{case}: the file keeps a and b's last good version"
    );
    assert_eq!(
        syncer
            .metric(&format!(
                "ksd_syncer_clusters_rejected{{reason=\"{reason}\"}}"
            ))
            .await,
        1.0,
        "{case}"
    );
    let gets_of_b = s3
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Get && r.key.as_deref() == Some("reject/b.traefik.yaml"))
        .count();
    if reason == "too_large" {
        assert_eq!(
            gets_of_b, 0,
            "{case}: refused from the listing, not downloaded"
        );
    } else {
        assert_eq!(gets_of_b, 1, "{case}: fetched once");
    }
}

/// Keys: another format is ignored silently; a key naming no cluster is reported once; neither
/// is fetched, and the file stays `good`.
async fn keys_naming_no_cluster_are_reported_once(
    s3: &S3Fixture,
    syncer: &Syncer,
    prefix: &str,
    a: &str,
    good: &[u8],
) {
    s3.reset_counts();
    put(s3, prefix, "a.backends.yaml", "cluster: a\nbackends: []\n").await;
    put(s3, prefix, "Not_A_Cluster.traefik.yaml", a.to_owned()).await;
    syncer.wait_metric("ksd_syncer_invalid_keys", 1.0).await;
    let polls = syncer
        .metric("ksd_syncer_polls_total{outcome=\"ok\"}")
        .await;
    syncer
        .wait_metric("ksd_syncer_polls_total{outcome=\"ok\"}", polls + 5.0)
        .await;
    assert_eq!(
        syncer.log_count("Not_A_Cluster.traefik.yaml"),
        1,
        "reported once"
    );
    assert_eq!(syncer.log_count("a.backends.yaml"), 0, "ignored silently");
    assert_eq!(s3.get_count(), 0, "neither is fetched");
    assert_eq!(syncer.read().unwrap(), good);
}
