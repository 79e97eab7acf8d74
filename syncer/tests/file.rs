//! `ksd-syncer` with `file://` storage and the guarantees of the file it writes: every version
//! a reader can see is whole and valid, crashes leave no half-written or extra config file,
//! the file is restored when someone else changes it, and write failures keep the old file.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ksd_shared::traefik::TraefikVersion;
use ksd_testbed::process::wait_for;
use notify::{RecursiveMode, Watcher};
use rand::Rng;

/// Cluster `name`'s document at version `n`: `servers` servers whose addresses encode `n`.
fn versioned_doc(name: &str, n: usize, servers: usize) -> String {
    let ips: Vec<String> = (0..servers)
        .map(|i| format!("10.{}.{}.{}", n % 250, i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    http_doc(&[(&format!("svc-{name}"), &refs), ("shared", &refs[..1])])
}

/// A reader as Traefik would be one: on every event in Traefik's directory it reads the file
/// and records whether it was whole and valid.
struct Reader {
    watcher: notify::RecommendedWatcher,
    /// Versions it read.
    reads: Arc<AtomicUsize>,
    /// Reads that were torn or invalid, with what was read.
    failures: Arc<Mutex<Vec<String>>>,
}

/// Starts a [`Reader`] of `output`, watching `dir`.
fn start_reader(output: &Path, dir: &Path) -> Reader {
    let reads = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let (reads_in, failures_in, output_in) =
        (reads.clone(), failures.clone(), output.to_path_buf());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_err() {
            return;
        }
        // The file may be mid-rename: NotFound is not a torn read, anything read must be whole.
        if let Ok(bytes) = std::fs::read(&output_in) {
            reads_in.fetch_add(1, Ordering::SeqCst);
            if let Err(error) = check_merged(&bytes) {
                failures_in
                    .lock()
                    .unwrap()
                    .push(format!("{error}\n{}", String::from_utf8_lossy(&bytes)));
            }
        }
    })
    .unwrap();
    watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
    Reader {
        watcher,
        reads,
        failures,
    }
}

/// Writes versions 1 to 1000, round robin over `clusters`, and returns the file the syncer
/// should end with: each cluster's last version.
async fn write_1000_versions(
    storage: &ksd_runtime::storage::Storage,
    clusters: [&str; 3],
) -> Vec<u8> {
    let mut last = Vec::new();
    for n in 1..=1000 {
        let name = clusters[n % 3];
        put_local(
            storage,
            &format!("{name}.traefik.yaml"),
            &versioned_doc(name, n, 20),
        )
        .await;
    }
    for (i, name) in clusters.iter().enumerate() {
        // The last version written for each cluster.
        let n = (1..=1000).rev().find(|n| n % 3 == i).unwrap();
        last.push((*name, versioned_doc(name, n, 20)));
    }
    expected_file(
        &last
            .iter()
            .map(|(n, d)| (*n, d.as_str()))
            .collect::<Vec<_>>(),
        TraefikVersion::V3,
    )
}

/// No read was torn or invalid, the reader saw at least as many versions as the syncer
/// wrote (at least two), and no other config file is in Traefik's directory.
async fn every_read_was_whole(syncer: &Syncer, reader: Reader, traefik: &Path) {
    let Reader {
        watcher,
        reads,
        failures,
    } = reader;
    drop(watcher);
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "torn or invalid reads: {:?}",
        &failures[..1]
    );
    let reads = reads.load(Ordering::SeqCst);
    let writes = syncer
        .metric("ksd_syncer_writes_total{outcome=\"ok\"}")
        .await;
    // The first version and the last one at least; every rename wakes the reader.
    assert!(writes >= 2.0, "{writes} writes");
    assert!(
        reads as f64 >= writes,
        "the reader saw {reads} versions of {writes}"
    );
    assert!(config_files_except(traefik, OUTPUT_FILE).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_version_a_reader_sees_during_rapid_updates_is_whole_and_valid() {
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    let storage = local_storage(store.path()).await;
    let clusters = ["a", "b", "c"];
    for name in clusters {
        put_local(
            &storage,
            &format!("{name}.traefik.yaml"),
            &versioned_doc(name, 0, 20),
        )
        .await;
    }
    let syncer = SyncerConfig::new(&file_url(store.path()), traefik.path()).spawn();
    syncer.wait_clusters("a, b, c").await;

    let reader = start_reader(&syncer.output, traefik.path());
    let expected = write_1000_versions(&storage, clusters).await;
    syncer
        .wait_file("the last versions", |t| t.as_bytes() == expected.as_slice())
        .await;
    every_read_was_whole(&syncer, reader, traefik.path()).await;
}

/// A writer that keeps changing cluster a (its document has `servers` servers) every 20 ms
/// until `stop` is set.
fn keep_changing_cluster_a(
    storage: &ksd_runtime::storage::Storage,
    servers: usize,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let storage = storage.clone();
        tokio::spawn(async move {
            let mut n = 1;
            while !stop.load(Ordering::SeqCst) {
                put_local(&storage, "a.traefik.yaml", &versioned_doc("a", n, servers)).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    (stop, writer)
}

/// The killer: SIGKILL as soon as the syncer creates a temporary file, i.e. mid-write.
/// The agent sits behind a lock so the watcher's thread can kill it without a fork.
struct Killer {
    watcher: notify::RecommendedWatcher,
    victim: Arc<Mutex<Option<ksd_testbed::process::Agent>>>,
    /// Kill at the n-th temporary file of a run (0: disarmed), so some runs complete writes.
    armed: Arc<AtomicUsize>,
}

/// Starts a [`Killer`] watching `dir`, disarmed and without a victim.
fn start_killer(dir: &Path) -> Killer {
    let victim: Arc<Mutex<Option<ksd_testbed::process::Agent>>> = Arc::default();
    let armed = Arc::new(AtomicUsize::new(0));
    let (victim_in, armed_in) = (victim.clone(), armed.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let creates_temp = matches!(event.kind, notify::EventKind::Create(_))
            && event
                .paths
                .iter()
                .any(|p| p.to_string_lossy().contains(".tmp-"));
        if !creates_temp {
            return;
        }
        let countdown =
            armed_in.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if countdown == Ok(1)
            && let Some(agent) = victim_in.lock().unwrap().as_mut()
        {
            agent.kill9();
        }
    })
    .unwrap();
    watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
    Killer {
        watcher,
        victim,
        armed,
    }
}

/// Twenty runs of the syncer, each killed by `killer` mid-write (or after 10 s if no write
/// started): after each, the file is whole if there is one, and no other config file is
/// left. Returns how many rounds left temporary files and how many left a file.
async fn kill_in_rounds(store: &Path, traefik: &Path, killer: &Killer) -> (usize, usize) {
    let (victim, armed) = (&killer.victim, &killer.armed);
    let output = traefik.join(OUTPUT_FILE);
    let mut rounds_leaving_temp_files = 0;
    let mut rounds_with_a_file = 0;
    for round in 0..20 {
        let syncer = SyncerConfig::new(&file_url(store), traefik).spawn();
        *victim.lock().unwrap() = Some(syncer.agent);
        armed.store(rand::rng().random_range(1..=4), Ordering::SeqCst);
        // Killed by the watcher mid-write, or by us if no write started in time.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let exited = victim
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_exit()
                .is_some();
            if exited {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                armed.store(0, Ordering::SeqCst);
                victim.lock().unwrap().as_mut().unwrap().kill9();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let agent = victim.lock().unwrap().take().unwrap();

        if let Ok(bytes) = std::fs::read(&output) {
            rounds_with_a_file += 1;
            check_merged(&bytes)
                .unwrap_or_else(|e| panic!("round {round}: torn file: {e}\n{}", agent.logs()));
        }
        let extra = config_files_except(traefik, OUTPUT_FILE);
        assert!(extra.is_empty(), "round {round}: {extra:?}");
        if !temp_files(traefik).is_empty() {
            rounds_leaving_temp_files += 1;
        }
    }
    (rounds_leaving_temp_files, rounds_with_a_file)
}

/// A new run cleans up whatever temporary files the kills left (and one planted here), says
/// so in its log, and converges to a valid file.
async fn a_new_run_cleans_up_and_converges(store: &Path, traefik: &Path) {
    let planted = traefik.join(format!(".{OUTPUT_FILE}.tmp-Planted01"));
    std::fs::write(&planted, "half a fi").unwrap();
    let syncer = SyncerConfig::new(&file_url(store), traefik).spawn();
    wait_for("temp files cleaned", WAIT, || {
        let left = temp_files(traefik);
        async move { left.is_empty().then_some(()) }
    })
    .await
    .unwrap();
    wait_for("ready", WAIT, || async {
        syncer.ready().await.then_some(())
    })
    .await
    .unwrap();
    check_merged(&syncer.read().unwrap()).unwrap();
    assert!(syncer.log_count("removed a temporary file left by a previous run") >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_writes_never_leaves_a_torn_file_or_a_config_temp_file() {
    let store = tempfile::tempdir().unwrap();
    let traefik = tempfile::tempdir().unwrap();
    let storage = local_storage(store.path()).await;
    // Large documents (about 0.5 MB merged), so that a write takes long enough to be interrupted.
    const SERVERS: usize = 3_000;
    put_local(&storage, "a.traefik.yaml", &versioned_doc("a", 0, SERVERS)).await;
    put_local(&storage, "b.traefik.yaml", &versioned_doc("b", 0, SERVERS)).await;

    // Cluster a keeps changing while the syncer is killed again and again.
    let (stop, writer) = keep_changing_cluster_a(&storage, SERVERS);
    let killer = start_killer(traefik.path());
    let (rounds_leaving_temp_files, rounds_with_a_file) =
        kill_in_rounds(store.path(), traefik.path(), &killer).await;
    drop(killer.watcher);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(
        rounds_leaving_temp_files > 0,
        "no kill landed between the temporary file's creation and its rename"
    );
    assert!(rounds_with_a_file > 0, "no write ever completed");

    a_new_run_cleans_up_and_converges(store.path(), traefik.path()).await;
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Deleted, then overwritten with other content: the file is restored each time.
async fn restored_after_delete_and_edit(syncer: &Syncer, good: &[u8]) {
    std::fs::remove_file(&syncer.output).unwrap();
    syncer
        .wait_file("restored after delete", |t| t.as_bytes() == good)
        .await;

    std::fs::write(&syncer.output, "http:\n  services: {}\n").unwrap();
    syncer
        .wait_file("restored after edit", |t| t.as_bytes() == good)
        .await;
}

/// Edited in place to the same size, with the modification time put back: nothing in the
/// file's metadata tells it apart, the write event does, and the file is restored.
async fn restored_after_a_same_size_edit_in_place(syncer: &Syncer, good: &[u8]) {
    let edited = String::from_utf8(good.to_vec())
        .unwrap()
        .replace("10.0.0.1", "10.0.0.9");
    assert_eq!(edited.len(), good.len());
    let modified = std::fs::metadata(&syncer.output)
        .unwrap()
        .modified()
        .unwrap();
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&syncer.output)
            .unwrap();
        file.write_all(edited.as_bytes()).unwrap();
        file.set_modified(modified).unwrap();
    }
    syncer
        .wait_file("restored after a same-size edit in place", |t| {
            t.as_bytes() == good
        })
        .await;
}

/// Replaced by rename, as editors save: the file is restored.
async fn restored_after_rename(syncer: &Syncer, traefik_dir: &Path, good: &[u8]) {
    let other = traefik_dir.join("edit.tmp");
    std::fs::write(&other, "# mine now\n").unwrap();
    std::fs::rename(&other, &syncer.output).unwrap();
    syncer
        .wait_file("restored after rename", |t| t.as_bytes() == good)
        .await;
}

/// Four restores counted and logged; `main.yml` kept its content and modification time, and
/// the directory holds only it and the syncer's file.
async fn restores_counted_and_other_files_untouched(
    syncer: &Syncer,
    traefik_dir: &Path,
    main_yml: &Path,
    main_mtime: std::time::SystemTime,
) {
    syncer.wait_metric("ksd_syncer_restores_total", 4.0).await;
    assert_eq!(
        std::fs::read_to_string(main_yml).unwrap(),
        "http:\n  routers: {}\n"
    );
    assert_eq!(mtime(main_yml), main_mtime);
    assert!(syncer.log_count("restored") >= 4);
    let leftovers: Vec<_> = std::fs::read_dir(traefik_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers.len(), 2, "only main.yml and ours: {leftovers:?}");
}

/// The whole directory replaced (a volume re-mounted, a config-management run): the file
/// is written into the new one, and the watch follows it (a deletion there is restored).
async fn followed_into_a_replaced_directory(
    syncer: &Syncer,
    parent: &Path,
    traefik_dir: &Path,
    good: &[u8],
) {
    std::fs::rename(traefik_dir, parent.join("old")).unwrap();
    std::fs::create_dir(traefik_dir).unwrap();
    syncer
        .wait_file("written into the new directory", |t| t.as_bytes() == good)
        .await;
    std::fs::remove_file(&syncer.output).unwrap();
    syncer
        .wait_file("restored in the new directory", |t| t.as_bytes() == good)
        .await;
}

/// Gone for a while, then back: the directory is found again without waiting for the next
/// poll.
async fn found_again_when_the_directory_is_back(
    syncer: &Syncer,
    parent: &Path,
    traefik_dir: &Path,
    good: &[u8],
) {
    std::fs::rename(traefik_dir, parent.join("older")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::create_dir(traefik_dir).unwrap();
    syncer
        .wait_file("written once the directory is back", |t| {
            t.as_bytes() == good
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_output_file_is_restored_when_deleted_or_edited_and_other_files_are_untouched() {
    let store = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let traefik_dir = parent.path().join("dynamic");
    std::fs::create_dir(&traefik_dir).unwrap();
    let storage = local_storage(store.path()).await;
    put_local(
        &storage,
        "a.traefik.yaml",
        &http_doc(&[("web", &["10.0.0.1"])]),
    )
    .await;
    let main_yml = traefik_dir.join("main.yml");
    std::fs::write(&main_yml, "http:\n  routers: {}\n").unwrap();
    let main_mtime = mtime(&main_yml);

    // A long poll interval: restoring must not wait for the next poll.
    let syncer = SyncerConfig::new(&file_url(store.path()), &traefik_dir)
        .env("POLL_INTERVAL", "1h")
        .spawn();
    let good = syncer.wait_clusters("a").await;

    restored_after_delete_and_edit(&syncer, &good).await;
    restored_after_a_same_size_edit_in_place(&syncer, &good).await;
    restored_after_rename(&syncer, &traefik_dir, &good).await;
    restores_counted_and_other_files_untouched(&syncer, &traefik_dir, &main_yml, main_mtime).await;
    followed_into_a_replaced_directory(&syncer, parent.path(), &traefik_dir, &good).await;
    found_again_when_the_directory_is_back(&syncer, parent.path(), &traefik_dir, &good).await;
}

/// A small tmpfs mounted for one test, unmounted when dropped. Tests run as root, where
/// `chmod` does not stop writes; a read-only remount and a full filesystem do.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            dir.path(),
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], self.path());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let output = Command::new("mount").args(args).arg(at).output().unwrap();
    assert!(
        output.status.success(),
        "mount {args:?} {} failed (these tests need root and tmpfs): {}",
        at.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fills the filesystem of `dir` until a write fails with "no space".
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_or_full_directory_keeps_the_old_file_and_recovers() {
    let store = tempfile::tempdir().unwrap();
    let storage = local_storage(store.path()).await;
    let tmpfs = Tmpfs::mount("256k");
    put_local(&storage, "a.traefik.yaml", &versioned_doc("a", 1, 50)).await;
    let syncer = SyncerConfig::new(&file_url(store.path()), tmpfs.path()).spawn();
    let v1 = syncer.wait_clusters("a").await;

    // Read-only.
    tmpfs.remount("ro");
    let errors = syncer
        .metric("ksd_syncer_writes_total{outcome=\"error\"}")
        .await;
    put_local(&storage, "a.traefik.yaml", &versioned_doc("a", 2, 50)).await;
    syncer
        .wait_metric("ksd_syncer_writes_total{outcome=\"error\"}", errors + 2.0)
        .await;
    assert_eq!(
        syncer.read().unwrap(),
        v1,
        "read-only: the old file is intact"
    );
    assert!(syncer.log_count("writing the output file failed") >= 2);
    tmpfs.remount("rw");
    let v2 = expected_file(&[("a", &versioned_doc("a", 2, 50))], TraefikVersion::V3);
    syncer
        .wait_file("recovered after read-only", |t| {
            t.as_bytes() == v2.as_slice()
        })
        .await;

    // Full.
    let filler = fill(tmpfs.path());
    let errors = syncer
        .metric("ksd_syncer_writes_total{outcome=\"error\"}")
        .await;
    put_local(&storage, "a.traefik.yaml", &versioned_doc("a", 3, 50)).await;
    syncer
        .wait_metric("ksd_syncer_writes_total{outcome=\"error\"}", errors + 2.0)
        .await;
    assert_eq!(syncer.read().unwrap(), v2, "full: the old file is intact");
    assert!(
        temp_files(tmpfs.path()).is_empty(),
        "failed writes leave no temporary file"
    );
    std::fs::remove_file(&filler).unwrap();
    let v3 = expected_file(&[("a", &versioned_doc("a", 3, 50))], TraefikVersion::V3);
    syncer
        .wait_file("recovered after full", |t| t.as_bytes() == v3.as_slice())
        .await;
    drop(syncer);
}
