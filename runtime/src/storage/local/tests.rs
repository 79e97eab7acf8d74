#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::storage::Storage;

async fn storage(dir: &Path) -> Storage {
    Storage::connect(
        &StorageUrl::Local {
            dir: dir.to_path_buf(),
        },
        &Default::default(),
    )
    .await
    .unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn object(fetched: Fetched) -> Object {
    match fetched {
        Fetched::Object(o) => o,
        other => panic!("expected an object, got {other:?}"),
    }
}

async fn put(s: &Storage, key: &str, body: &str, condition: PutCondition) -> PutOutcome {
    s.put(key, body.as_bytes().to_vec(), &BTreeMap::new(), condition)
        .await
        .unwrap()
}

#[tokio::test]
async fn creates_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b");
    let s = storage(&dir).await;
    assert!(dir.is_dir());
    assert!(s.list().await.unwrap().is_empty());
    assert!(s.describe().contains(&dir.display().to_string()));
}

#[tokio::test]
async fn refuses_a_file_as_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    fs::write(&file, "x").unwrap();
    let err = Storage::connect(&StorageUrl::Local { dir: file }, &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "setup");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn put_then_get_round_trips_content_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let md = meta(&[("cluster", "a"), ("generated-at", "2025-01-01T00:00:00Z")]);
    let outcome = s
        .put(
            "a.traefik.yaml",
            b"http: {}\n".to_vec(),
            &md,
            PutCondition::None,
        )
        .await
        .unwrap();
    let PutOutcome::Written { etag: Some(etag) } = outcome else {
        panic!("{outcome:?}")
    };
    let got = object(s.get("a.traefik.yaml", None).await.unwrap());
    assert_eq!(got.bytes, b"http: {}\n");
    assert_eq!(got.etag, etag);
    assert_eq!(got.metadata, md);
    assert!(got.last_modified.is_some());
    assert_eq!(
        fs::read(tmp.path().join("a.traefik.yaml")).unwrap(),
        b"http: {}\n"
    );
}

#[tokio::test]
async fn etag_changes_with_content_and_only_with_content() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    put(&s, "k", "one", PutCondition::None).await;
    let first = s.list().await.unwrap()[0].etag.clone();
    put(&s, "k", "one", PutCondition::None).await;
    assert_eq!(s.list().await.unwrap()[0].etag, first);
    put(&s, "k", "two", PutCondition::None).await;
    let second = s.list().await.unwrap()[0].etag.clone();
    assert_ne!(second, first);
    // A change made behind the storage's back shows too.
    fs::write(tmp.path().join("k"), "three").unwrap();
    assert_ne!(s.list().await.unwrap()[0].etag, second);
}

#[tokio::test]
async fn if_none_match_answers_not_modified() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    put(&s, "k", "one", PutCondition::None).await;
    let etag = object(s.get("k", None).await.unwrap()).etag;
    assert_eq!(s.get("k", Some(&etag)).await.unwrap(), Fetched::NotModified);
    assert_eq!(
        s.get("k", Some(etag.trim_matches('"'))).await.unwrap(),
        Fetched::NotModified
    );
    put(&s, "k", "two", PutCondition::None).await;
    assert_eq!(object(s.get("k", Some(&etag)).await.unwrap()).bytes, b"two");
    assert_eq!(s.get("other", None).await.unwrap(), Fetched::Missing);
    assert_eq!(s.get("other", Some(&etag)).await.unwrap(), Fetched::Missing);
}

#[tokio::test]
async fn conditions_are_checked_against_the_current_content() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    assert_eq!(
        put(&s, "k", "x", PutCondition::IfMatch("\"nope\"".into())).await,
        PutOutcome::PreconditionFailed,
        "IfMatch on a missing object"
    );
    assert!(matches!(
        put(&s, "k", "one", PutCondition::IfAbsent).await,
        PutOutcome::Written { .. }
    ));
    assert_eq!(
        put(&s, "k", "again", PutCondition::IfAbsent).await,
        PutOutcome::PreconditionFailed
    );
    let etag = s.list().await.unwrap()[0].etag.clone();
    assert_eq!(
        put(&s, "k", "x", PutCondition::IfMatch("\"0000\"".into())).await,
        PutOutcome::PreconditionFailed
    );
    assert!(matches!(
        put(&s, "k", "two", PutCondition::IfMatch(etag.clone())).await,
        PutOutcome::Written { .. }
    ));
    // The old ETag no longer matches.
    assert_eq!(
        put(&s, "k", "three", PutCondition::IfMatch(etag)).await,
        PutOutcome::PreconditionFailed
    );
    assert_eq!(fs::read(tmp.path().join("k")).unwrap(), b"two");
}

#[tokio::test]
async fn fifos_are_skipped_and_files_over_the_limit_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await.with_max_object_bytes(1024);
    put(&s, "a.traefik.yaml", "small", PutCondition::None).await;
    let status = std::process::Command::new("mkfifo")
        .arg(tmp.path().join("fifo.traefik.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let huge = File::create(tmp.path().join("huge.traefik.yaml")).unwrap();
    huge.set_len(300 * 1024 * 1024).unwrap();

    let listed = s.list().await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a.traefik.yaml", "huge.traefik.yaml"]);
    assert_eq!(listed[1].size, 300 * 1024 * 1024, "the real size, unread");
    assert!(
        listed[1].etag.starts_with("\"unread-"),
        "{}",
        listed[1].etag
    );
    let again = s.list().await.unwrap();
    assert_eq!(again[1].etag, listed[1].etag, "stable while unchanged");

    assert!(matches!(
        s.get("huge.traefik.yaml", None).await,
        Err(StorageError::TooLarge { .. })
    ));
    assert!(matches!(
        s.get("fifo.traefik.yaml", None).await.unwrap(),
        Fetched::Missing
    ));
}

#[tokio::test]
async fn a_child_is_its_own_listing_and_invisible_to_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    put(&s, "a.traefik.yaml", "a", PutCondition::None).await;
    let child = s.child("_status").await.unwrap();
    put(&child, "edge-1.json", "{}", PutCondition::None).await;
    let parent: Vec<String> = s.list().await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(parent, ["a.traefik.yaml"]);
    let inside: Vec<String> = child
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(inside, ["edge-1.json"]);
    assert!(tmp.path().join("_status/edge-1.json").is_file());
    assert!(s.child("a/b").await.is_err());
}

#[tokio::test]
async fn list_shows_only_visible_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let md = meta(&[("cluster", "a")]);
    s.put("a.traefik.yaml", b"a".to_vec(), &md, PutCondition::None)
        .await
        .unwrap();
    put(&s, "b.traefik.yaml", "bb", PutCondition::None).await;
    for name in [
        ".hidden.yaml",
        ".ksd-abc.tmp",
        "c.yaml.tmp",
        "c.yaml~",
        ".c.yaml.swp",
    ] {
        fs::write(tmp.path().join(name), "junk").unwrap();
    }
    fs::create_dir(tmp.path().join("sub")).unwrap();
    fs::write(tmp.path().join("sub/d.traefik.yaml"), "nested").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        tmp.path().join("b.traefik.yaml"),
        tmp.path().join("link.yaml"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(tmp.path().join("gone"), tmp.path().join("dangling.yaml")).unwrap();

    let listed = s.list().await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    #[cfg(unix)]
    assert_eq!(keys, ["a.traefik.yaml", "b.traefik.yaml", "link.yaml"]);
    #[cfg(not(unix))]
    assert_eq!(keys, ["a.traefik.yaml", "b.traefik.yaml"]);
    assert_eq!(listed[1].size, 2);
    assert!(listed[1].last_modified.is_some());
    // The sidecar exists but is hidden.
    assert!(tmp.path().join(".a.traefik.yaml.meta.json").is_file());
}

#[tokio::test]
async fn writes_leave_no_temp_files_and_keep_permissions_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    for i in 0..5 {
        let md = meta(&[("n", &i.to_string())]);
        s.put("k.yaml", vec![b'x'; i], &md, PutCondition::None)
            .await
            .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".k.yaml.meta.json", LOCK_FILE, "k.yaml"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(tmp.path().join("k.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}

#[tokio::test]
async fn empty_metadata_removes_the_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    s.put("k", b"1".to_vec(), &meta(&[("a", "b")]), PutCondition::None)
        .await
        .unwrap();
    put(&s, "k", "2", PutCondition::None).await;
    assert!(object(s.get("k", None).await.unwrap()).metadata.is_empty());
    assert!(!tmp.path().join(".k.meta.json").exists());
}

#[tokio::test]
async fn get_limited_refuses_large_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    put(&s, "big", &"x".repeat(100), PutCondition::None).await;
    let err = s.get_limited("big", None, 99).await.unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert_eq!(err.kind(), "too_large");
    assert!(err.to_string().contains("100 bytes"), "{err}");
    assert_eq!(
        object(s.get_limited("big", None, 100).await.unwrap())
            .bytes
            .len(),
        100
    );
}

#[tokio::test]
async fn delete_removes_object_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    s.put("k", b"1".to_vec(), &meta(&[("a", "b")]), PutCondition::None)
        .await
        .unwrap();
    s.delete("k").await.unwrap();
    s.delete("k").await.unwrap();
    assert_eq!(s.get("k", None).await.unwrap(), Fetched::Missing);
    assert!(!tmp.path().join(".k.meta.json").exists());
}

#[tokio::test]
async fn a_vanished_directory_is_an_error_not_an_empty_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let s = storage(&dir).await;
    fs::remove_dir(&dir).unwrap();
    let err = s.list().await.unwrap_err();
    assert_eq!(err.operation(), "list");
    assert!(err.is_no_such_bucket(), "{err}");
}

#[tokio::test]
async fn rejects_keys_that_are_not_plain_names() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    for key in ["../escape", "a/b", ".hidden"] {
        let err = s
            .put(key, b"x".to_vec(), &BTreeMap::new(), PutCondition::None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_key", "{key}");
    }
    assert!(!tmp.path().parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn concurrent_if_absent_writers_have_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(
                "k",
                vec![b'0' + i],
                &BTreeMap::new(),
                PutCondition::IfAbsent,
            )
            .await
            .unwrap()
        }));
    }
    let mut written = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), PutOutcome::Written { .. }) {
            written += 1;
        }
    }
    assert_eq!(written, 1);
}

#[tokio::test]
async fn a_remembered_etag_never_hides_another_write() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let PutOutcome::Written { etag: Some(first) } = put(&s, "k", "one", PutCondition::None).await
    else {
        panic!("no etag")
    };
    // Another store on the same directory (another process) replaces the object.
    let other = storage(tmp.path()).await;
    assert!(matches!(
        put(&other, "k", "two", PutCondition::IfMatch(first.clone())).await,
        PutOutcome::Written { .. }
    ));
    assert_eq!(
        put(&s, "k", "mine", PutCondition::IfMatch(first)).await,
        PutOutcome::PreconditionFailed
    );
    // Our own writes chain on the ETags they return.
    let current = s.list().await.unwrap()[0].etag.clone();
    let PutOutcome::Written { etag: Some(next) } =
        put(&s, "k", "three", PutCondition::IfMatch(current)).await
    else {
        panic!("not written")
    };
    let PutOutcome::Written { etag: Some(last) } =
        put(&s, "k", "four", PutCondition::IfMatch(next.clone())).await
    else {
        panic!("not written")
    };
    // An edit in place behind the store's back is noticed.
    fs::write(tmp.path().join("k"), "edited by hand").unwrap();
    assert_eq!(
        put(&s, "k", "five", PutCondition::IfMatch(last)).await,
        PutOutcome::PreconditionFailed
    );
    assert_eq!(
        put(&s, "k", "five", PutCondition::IfMatch(next)).await,
        PutOutcome::PreconditionFailed
    );
    // So is a deletion.
    let current = s.list().await.unwrap()[0].etag.clone();
    fs::remove_file(tmp.path().join("k")).unwrap();
    assert_eq!(
        put(&s, "k", "six", PutCondition::IfMatch(current)).await,
        PutOutcome::PreconditionFailed
    );
    assert_eq!(fs::read(tmp.path().join("k")).ok(), None);
}

#[tokio::test]
async fn a_put_with_its_content_hash_gets_the_same_etag() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let hash = ksd_shared::content_hash(b"one");
    let outcome = s
        .put_hashed(
            "k",
            b"one".to_vec(),
            &hash,
            &BTreeMap::new(),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    let PutOutcome::Written { etag: Some(etag) } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(etag, s.list().await.unwrap()[0].etag);
    assert!(matches!(
        put(&s, "k", "two", PutCondition::IfMatch(etag)).await,
        PutOutcome::Written { .. }
    ));
}

#[tokio::test]
async fn a_listing_reuses_settled_hashes_and_still_sees_every_write() {
    let tmp = tempfile::tempdir().unwrap();
    let s = storage(tmp.path()).await;
    let path = tmp.path().join("a.traefik.yaml");
    std::fs::write(&path, "version: one\n").unwrap();
    // Left alone for longer than the settling time, so the listing's hash is kept.
    tokio::time::sleep(SETTLED + std::time::Duration::from_millis(200)).await;
    let first = s.list().await.unwrap();
    assert_eq!(first[0].etag, etag_of(b"version: one\n"));
    assert_eq!(s.list().await.unwrap(), first, "nothing changed");

    // Rewritten in place, same size, modification time put back: only the change time tells.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        use std::io::Write as _;
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(b"version: two\n").unwrap();
        file.set_modified(modified).unwrap();
    }
    let second = s.list().await.unwrap();
    assert_eq!(second[0].etag, etag_of(b"version: two\n"));

    // Replaced by a rename, as the exporter writes.
    let temp = tmp.path().join(".a.tmp");
    std::fs::write(&temp, "version: 3!\n").unwrap();
    std::fs::rename(&temp, &path).unwrap();
    let third = s.list().await.unwrap();
    assert_eq!(third[0].etag, etag_of(b"version: 3!\n"));
}

#[test]
fn a_hash_is_trusted_only_once_the_file_had_settled() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    std::fs::write(&path, "x").unwrap();
    let stamp = Stamp::read(&path).unwrap();
    let (secs, nanos) = stamp.ctime;
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(u64::try_from(secs).unwrap(), u32::try_from(nanos).unwrap());
    let hashed = |at| Hashed::new(stamp, "\"e\"".to_owned(), at);
    assert_eq!(hashed(changed + SETTLED).etag_for(&stamp), Some("\"e\""));
    assert_eq!(hashed(changed + SETTLED / 2).etag_for(&stamp), None);
    let other = Stamp {
        size: stamp.size + 1,
        ..stamp
    };
    assert_eq!(hashed(changed + SETTLED).etag_for(&other), None);
}
