//! How the proxy classifies requests and decodes keys.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

#[test]
fn classifies_path_style_requests() {
    let b = "bkt";
    let get = hyper::Method::GET;
    let put = hyper::Method::PUT;
    assert_eq!(
        classify(
            &get,
            "/bkt",
            Some("list-type=2&prefix=p%2F&delimiter=%2F"),
            b
        ),
        (RequestKind::List, None)
    );
    assert_eq!(classify(&get, "/bkt/", None, b), (RequestKind::List, None));
    assert_eq!(
        classify(&get, "/bkt", Some("location"), b),
        (RequestKind::Bucket, None)
    );
    assert_eq!(classify(&put, "/bkt", None, b), (RequestKind::Bucket, None));
    assert_eq!(
        classify(&get, "/bkt/p/a.traefik.yaml", Some("x-id=GetObject"), b),
        (RequestKind::Get, Some("p/a.traefik.yaml".into()))
    );
    assert_eq!(
        classify(&put, "/bkt/p/a%20b.yaml", Some("x-id=PutObject"), b),
        (RequestKind::Put, Some("p/a b.yaml".into()))
    );
    assert_eq!(
        classify(&put, "/bkt/k", Some("tagging"), b).0,
        RequestKind::Other
    );
    assert_eq!(
        classify(&hyper::Method::DELETE, "/bkt/k", None, b).0,
        RequestKind::Delete
    );
    assert_eq!(classify(&get, "/other/k", None, b).0, RequestKind::Other);
}

#[test]
fn decodes_percent_escapes() {
    assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz"), "%zz");
}
