//! Names, keys, templates and their expansion.

use super::*;

fn origin(namespace: &str, service: &str, port: &str) -> Origin {
    Origin {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port: port.to_owned(),
    }
}

#[test]
fn cluster_names_are_dns_labels() {
    for good in ["a", "prod", "eu-west-1", "0", "a1-b2", &"x".repeat(63)] {
        assert_eq!(ClusterName::parse(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        "-a",
        "a-",
        "Prod",
        "a.b",
        "a_b",
        "a b",
        "a/b",
        "é",
        &"x".repeat(64),
    ] {
        let err = ClusterName::parse(bad).unwrap_err();
        assert!(
            matches!(err, NameError::InvalidClusterName { .. }),
            "{bad:?}: {err}"
        );
    }
    let err = ClusterName::parse("Prod").unwrap_err().to_string();
    assert!(
        err.contains("\"Prod\"") && err.contains("lowercase"),
        "{err}"
    );
}

#[test]
fn cluster_names_serialize_as_strings_and_validate_on_read() {
    let name = ClusterName::parse("eu-1").unwrap();
    assert_eq!(serde_json::to_string(&name).unwrap(), "\"eu-1\"");
    let back: ClusterName = serde_json::from_str("\"eu-1\"").unwrap();
    assert_eq!(back, name);
    assert!(serde_json::from_str::<ClusterName>("\"EU\"").is_err());
    assert_eq!(name.to_string(), "eu-1");
    assert_eq!("eu-1".parse::<ClusterName>().unwrap(), name);
}

#[test]
fn object_formats() {
    assert_eq!(ObjectFormat::Traefik.suffix(), ".traefik.yaml");
    assert_eq!(ObjectFormat::Backends.suffix(), ".backends.yaml");
    assert_eq!(
        ObjectFormat::parse("traefik").unwrap(),
        ObjectFormat::Traefik
    );
    assert_eq!(
        ObjectFormat::parse("backends").unwrap(),
        ObjectFormat::Backends
    );
    for bad in ["", "Traefik", "yaml", "traefik,backends"] {
        assert!(matches!(
            ObjectFormat::parse(bad),
            Err(NameError::UnknownFormat { .. })
        ));
    }
    assert_eq!(ObjectFormat::Backends.to_string(), "backends");
}

#[test]
fn object_keys_round_trip() {
    let cluster = ClusterName::parse("eu-1").unwrap();
    for format in ObjectFormat::ALL {
        let key = object_key(&cluster, format);
        assert_eq!(parse_object_key(&key).unwrap(), (cluster.clone(), format));
    }
    assert_eq!(
        object_key(&cluster, ObjectFormat::Traefik),
        "eu-1.traefik.yaml"
    );
}

#[test]
fn foreign_object_keys_are_refused_with_a_reason() {
    for bad in [
        "eu-1.yaml",
        "eu-1.traefik.yml",
        ".traefik.yaml",
        "EU.traefik.yaml",
        "sub/eu-1.traefik.yaml",
        "eu-1.traefik.yaml.tmp",
        "a.b.traefik.yaml",
        "",
    ] {
        let err = parse_object_key(bad).unwrap_err();
        assert!(matches!(err, NameError::InvalidObjectKey { .. }), "{bad:?}");
    }
    let err = parse_object_key("EU.traefik.yaml").unwrap_err().to_string();
    assert!(err.contains("not <dns-label>.traefik.yaml"), "{err}");
    let err = parse_object_key("notes.txt").unwrap_err().to_string();
    assert!(
        err.contains("not <dns-label>.traefik.yaml or <dns-label>.backends.yaml"),
        "{err}"
    );
}

#[test]
fn service_name_rule() {
    for good in ["a", "default-web-http", "A_b-9", &"x".repeat(200)] {
        validate_service_name(good).unwrap();
    }
    for (bad, why) in [
        ("", "empty"),
        ("a.b", "'.'"),
        ("a@file", "'@'"),
        ("a{{b", "template"),
        ("a b", "character"),
        ("é", "character"),
        (&"x".repeat(201), "longer"),
    ] {
        let err = validate_service_name(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn pool_names_join_service_and_cluster_with_a_dot() {
    let cluster = ClusterName::parse("eu-1").unwrap();
    let pool = pool_name("default-web-http", &cluster);
    assert_eq!(pool, "default-web-http.eu-1");
    validate_pool_or_service_name(&pool).unwrap();
    validate_pool_or_service_name("default-web-http").unwrap();
    for bad in ["web.EU", "a.b.c", "web@x.eu", ".eu", "web.", "web.-eu"] {
        assert!(validate_pool_or_service_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn default_template() {
    let template = NameTemplate::default();
    assert_eq!(
        template,
        NameTemplate::parse(NameTemplate::DEFAULT).unwrap()
    );
    assert_eq!(template.to_string(), "{namespace}-{service}-{port}");
    assert_eq!(
        template.render(&origin("default", "web", "http")),
        "default-web-http"
    );
}

#[test]
fn templates_render_placeholders_and_literals() {
    let template = NameTemplate::parse("k8s_{service}{port}-{namespace}").unwrap();
    assert_eq!(template.render(&origin("ns", "web", "80")), "k8s_web80-ns");
    let template = NameTemplate::parse("{service}").unwrap();
    assert_eq!(template.render(&origin("ns", "web", "80")), "web");
    // Characters a name cannot hold are replaced, never passed through.
    assert_eq!(template.render(&origin("ns", "we.b@{x}", "80")), "we-b--x-");
}

#[test]
fn bad_templates_are_refused_with_a_reason() {
    for (bad, why) in [
        ("", "empty"),
        ("{namespace}.{service}", "'.'"),
        ("{service}@x", "'@'"),
        ("{{service}}", "Go template"),
        ("{service", "unbalanced '{'"),
        ("{ser{vice}", "unbalanced '{'"),
        ("service}", "unbalanced '}'"),
        ("{name}", "unknown placeholder {name}"),
        ("{}", "unknown placeholder {}"),
        ("{service} x", "' '"),
        ("fixed", "no placeholder"),
    ] {
        let err = NameTemplate::parse(bad).unwrap_err();
        assert!(
            matches!(err, NameError::InvalidTemplate { .. }),
            "{bad:?}: {err}"
        );
        let message = err.to_string();
        assert!(message.contains(why), "{bad:?}: {message}");
    }
}

#[test]
fn dash_splits_collide_and_the_smaller_origin_keeps_the_name() {
    let template = NameTemplate::default();
    let big = origin("a-b", "c", "http");
    let small = origin("a", "b-c", "http");
    assert!(small < big);
    let (names, collisions) = assign_names(&template, &[big.clone(), small.clone()]);
    assert_eq!(names[1], "a-b-c-http");
    let expected_hash = &crate::content_hash(b"a-b/c/http")[..8];
    assert_eq!(names[0], format!("a-b-c-http-{expected_hash}"));
    assert_eq!(
        collisions,
        vec![NameCollision {
            name: "a-b-c-http".to_owned(),
            kept: small.clone(),
            renamed: big.clone(),
            new_name: names[0].clone(),
        }]
    );
    let message = collisions[0].to_string();
    assert!(message.contains("a/b-c:http keeps it"), "{message}");

    // Same result in the other order.
    let (reversed, again) = assign_names(&template, &[small, big]);
    assert_eq!(reversed, vec![names[1].clone(), names[0].clone()]);
    assert_eq!(again, collisions);
}

#[test]
fn names_without_collisions_are_plain() {
    let template = NameTemplate::default();
    let origins = vec![
        origin("default", "web", "http"),
        origin("default", "web", "grpc"),
        origin("other", "web", "http"),
    ];
    let (names, collisions) = assign_names(&template, &origins);
    assert_eq!(
        names,
        vec!["default-web-http", "default-web-grpc", "other-web-http"]
    );
    assert!(collisions.is_empty());
}

#[test]
fn suffixed_names_that_are_taken_are_suffixed_again() {
    // An origin whose plain name is exactly the suffixed name another origin would get.
    let template = NameTemplate::parse("{service}").unwrap();
    let first = origin("a", "x", "1");
    let second = origin("b", "x", "1");
    let squatter_name = format!("x-{}", &crate::content_hash(b"b/x/1")[..8]);
    let squatter = origin("c", &squatter_name, "1");
    let origins = vec![first, second, squatter];
    let (names, collisions) = assign_names(&template, &origins);
    assert_eq!(names[0], "x");
    assert_eq!(names[2], squatter_name);
    let retry_hash = &crate::content_hash(b"b/x/1/1")[..8];
    assert_eq!(names[1], format!("x-{retry_hash}"));
    assert_eq!(collisions.len(), 1);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 3);
}

#[test]
fn long_and_empty_names_are_made_valid() {
    let template = NameTemplate::parse("{namespace}-{service}-{port}").unwrap();
    let long = origin(&"n".repeat(150), &"s".repeat(150), "80");
    let (names, collisions) = assign_names(&template, std::slice::from_ref(&long));
    assert!(collisions.is_empty());
    assert_eq!(names[0].len(), MAX_SERVICE_NAME_LEN);
    validate_service_name(&names[0]).unwrap();
    let hash = origin_hash(&long, 0);
    assert!(names[0].ends_with(&format!("-{hash}")));

    let template = NameTemplate::parse("{port}").unwrap();
    let empty = origin("ns", "svc", "");
    let (names, _) = assign_names(&template, std::slice::from_ref(&empty));
    assert_eq!(names[0], origin_hash(&empty, 0));
    validate_service_name(&names[0]).unwrap();
}

#[test]
fn equal_origins_get_equal_names() {
    let template = NameTemplate::default();
    let web = origin("default", "web", "http");
    let (names, collisions) = assign_names(&template, &[web.clone(), web]);
    assert_eq!(names[0], names[1]);
    assert!(collisions.is_empty());
}

#[test]
fn long_values_are_shortened_in_messages() {
    let err = validate_service_name(&"é".repeat(10_000))
        .unwrap_err()
        .to_string();
    assert!(err.len() < 600, "{}", err.len());
}
