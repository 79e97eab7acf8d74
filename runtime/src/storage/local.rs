//! The local-directory backend: `file:///dir/`, for single-host setups and the demo.
//!
//! It mirrors the S3 semantics the agents rely on: ETags that change with the content,
//! conditional writes, user metadata, and readers that never see a half-written object
//! (temp file + fsync + rename + fsync of the directory).
//!
//! A conditional write compares the condition with the current object's ETag, its content
//! hash. The store remembers the ETag of every object it wrote together with the file's
//! identity (device, inode, size, modification and change times); while the file still has that
//! identity, the next conditional write takes the ETag from memory instead of reading and
//! hashing the object again. Any other write (another process's rename, an edit in place)
//! changes the identity, and the object is read and hashed as before.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::bounded::{self, BoundedRead};
use super::{
    ErrorClass, Fetched, Object, ObjectInfo, PutCondition, PutOutcome, StorageError, StorageUrl,
    same_etag,
};

/// Serialises conditional writes of every process that shares the directory.
const LOCK_FILE: &str = ".ksd-storage.lock";
/// Temp files start with '.' (hidden, skipped by listings and by Traefik's glob of visible
/// names) and end in `.tmp`, never in `.yml`/`.yaml`/`.toml`.
const TEMP_PREFIX: &str = ".ksd-";
const TEMP_SUFFIX: &str = ".tmp";
/// The most a listing reads of one file to compute its ETag, unless the owner sets a limit
/// ([`crate::storage::Storage::with_max_object_bytes`]). Larger files are listed with their
/// size and an ETag derived from their metadata, never read.
pub const DEFAULT_READ_LIMIT: u64 = 64 * 1024 * 1024;
/// A listing that takes longer than this (a directory of huge files on a slow disk) gives up
/// with a timeout rather than holding a blocking thread indefinitely.
const LIST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// A directory whose regular, visible files are the objects.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    dir: Arc<PathBuf>,
    read_limit: u64,
    /// The ETags of the objects this store wrote, shared by its clones.
    written: Arc<Mutex<Written>>,
    /// The ETags the last listing computed, so that a listing reads only the files that
    /// changed since ([`Hashed`]).
    listed: Arc<Mutex<Listed>>,
}

/// The ETag each object had at the last listing, with the stamp of the file it was computed
/// from and when.
type Listed = std::collections::HashMap<String, Hashed>;

#[derive(Clone, Debug)]
struct Hashed {
    stamp: Stamp,
    etag: String,
    /// Whether the file had been unchanged for [`SETTLED`] already when it was hashed.
    settled: bool,
}

/// How long a file must have been left alone before its hash is trusted without reading it
/// again: far more than the file system's timestamp granularity, so that a write that landed
/// in the same clock tick as the read cannot hide behind an unchanged stamp.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

impl Hashed {
    /// `etag` of the file with `stamp`, hashed at `at`.
    fn new(stamp: Stamp, etag: String, at: std::time::SystemTime) -> Hashed {
        let (secs, nanos) = stamp.ctime;
        let changed = u64::try_from(secs).ok().map(|secs| {
            std::time::UNIX_EPOCH
                + std::time::Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
        });
        let settled = changed.is_some_and(|changed| changed + SETTLED <= at);
        Hashed {
            stamp,
            etag,
            settled,
        }
    }

    /// The ETag, when the file still has the stamp it was hashed with and had settled when it
    /// was hashed: any later write moves its change time.
    fn etag_for(&self, stamp: &Stamp) -> Option<&str> {
        (self.settled && self.stamp == *stamp).then_some(self.etag.as_str())
    }
}

/// The ETag of each object this store wrote, with the identity of the file it belongs to.
type Written = std::collections::HashMap<String, (Stamp, String)>;

/// What identifies one version of a file without reading it. A rename puts a new inode in
/// place; writing in place changes the size or the modification and change times (the change
/// time cannot be set from user space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the regular file at `path`; `None` when there is none.
    fn read(path: &Path) -> Option<Stamp> {
        fs::metadata(path)
            .ok()
            .filter(fs::Metadata::is_file)
            .map(|meta| Stamp::of(&meta))
    }
}

impl LocalStorage {
    pub(super) async fn open(dir: &Path) -> Result<LocalStorage, StorageError> {
        let dir = dir.to_path_buf();
        let location = StorageUrl::Local { dir: dir.clone() }.to_string();
        let checked = dir.clone();
        blocking(move || match fs::metadata(&checked) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::other("it exists and is not a directory")),
            Err(err) if err.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&checked),
            Err(err) => Err(err),
        })
        .await
        .map_err(|err| StorageError::Setup {
            location,
            reason: format!(
                "cannot use {} as the storage directory: {err}",
                dir.display()
            ),
            source: Some(Box::new(err)),
        })?;
        Ok(LocalStorage {
            dir: Arc::new(dir),
            read_limit: DEFAULT_READ_LIMIT,
            written: Arc::default(),
            listed: Arc::default(),
        })
    }

    /// Files larger than `limit` are never read, by listings or by unlimited gets.
    pub(super) fn set_read_limit(&mut self, limit: u64) {
        self.read_limit = limit;
    }

    /// The directory holding the objects.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn location(&self) -> String {
        StorageUrl::Local {
            dir: self.dir.to_path_buf(),
        }
        .to_string()
    }

    pub(super) fn describe(&self) -> String {
        format!("{} (local directory)", self.location())
    }

    pub(super) async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let dir = Arc::clone(&self.dir);
        let limit = self.read_limit;
        let listed = Arc::clone(&self.listed);
        blocking(move || list_dir(&dir, limit, &listed))
            .await
            .map_err(|err| StorageError::List {
                location: self.location(),
                detail: err.to_string(),
                class: io_class(&err),
                source: Box::new(err),
            })
    }

    pub(super) async fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        max_bytes: Option<u64>,
    ) -> Result<Fetched, StorageError> {
        let path = self.dir.join(key);
        let sidecar = self.dir.join(sidecar_name(key));
        let limit = max_bytes.unwrap_or(self.read_limit).min(self.read_limit);
        let result = blocking(move || read_object(&path, &sidecar, limit)).await;
        let read = match result {
            Ok(read) => read,
            Err(err) => {
                return Err(StorageError::Get {
                    location: self.location(),
                    key: key.to_owned(),
                    detail: err.to_string(),
                    class: io_class(&err),
                    source: Box::new(err),
                });
            }
        };
        match read {
            ReadOutcome::Missing => Ok(Fetched::Missing),
            ReadOutcome::TooLarge { size, limit } => Err(StorageError::TooLarge {
                location: self.location(),
                key: key.to_owned(),
                size,
                limit,
            }),
            ReadOutcome::Found(object) => {
                if if_none_match.is_some_and(|tag| same_etag(tag, &object.etag)) {
                    Ok(Fetched::NotModified)
                } else {
                    Ok(Fetched::Object(object))
                }
            }
        }
    }

    pub(super) async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        self.put_hashed(key, bytes, None, metadata, condition).await
    }

    /// [`LocalStorage::put`] with the content hash of `bytes` when the caller has it.
    pub(super) async fn put_hashed(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_hash: Option<&str>,
        metadata: &BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        let etag = match content_hash {
            Some(hash) => format!("\"{hash}\""),
            None => String::new(),
        };
        let dir = Arc::clone(&self.dir);
        let owned_key = key.to_owned();
        let metadata = metadata.clone();
        let limit = self.read_limit;
        let written = Arc::clone(&self.written);
        blocking(move || {
            let put = Put {
                key: &owned_key,
                bytes: &bytes,
                etag,
                metadata: &metadata,
                condition: &condition,
            };
            write_object(&dir, &put, limit, &written)
        })
        .await
        .map_err(|err| StorageError::Put {
            location: self.location(),
            key: key.to_owned(),
            detail: err.to_string(),
            class: io_class(&err),
            source: Box::new(err),
        })
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let dir = Arc::clone(&self.dir);
        let owned_key = key.to_owned();
        blocking(move || {
            let _lock = lock_dir(&dir)?;
            remove_if_present(&dir.join(&owned_key))?;
            remove_if_present(&dir.join(sidecar_name(&owned_key)))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|err| StorageError::Delete {
            location: self.location(),
            key: key.to_owned(),
            detail: err.to_string(),
            class: io_class(&err),
            source: Box::new(err),
        })
    }
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| io::Error::other(format!("file-system task failed: {err}")))?
}

fn io_class(err: &io::Error) -> ErrorClass {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorClass::NoSuchBucket,
        io::ErrorKind::PermissionDenied => ErrorClass::AccessDenied,
        io::ErrorKind::TimedOut => ErrorClass::Timeout,
        _ => ErrorClass::Io,
    }
}

/// Names a listing skips: hidden files (our temp files, metadata sidecars, the lock, Kubernetes
/// `..data` links) and common editor leftovers.
fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(TEMP_SUFFIX)
        || name.ends_with(".swp")
        || name.ends_with(".part")
}

fn sidecar_name(key: &str) -> String {
    format!(".{key}.meta.json")
}

/// The ETag of a local object: its content hash, quoted as S3 quotes ETags.
fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", ksd_shared::content_hash(bytes))
}

fn list_dir(dir: &Path, limit: u64, listed: &Mutex<Listed>) -> io::Result<Vec<ObjectInfo>> {
    let started = std::time::Instant::now();
    let before = std::mem::take(&mut *listed.lock().unwrap_or_else(|e| e.into_inner()));
    let mut hashed = Listed::with_capacity(before.len());
    let mut objects = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_ignored(&name) {
            continue;
        }
        if started.elapsed() > LIST_DEADLINE {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("listing took longer than {LIST_DEADLINE:?}"),
            ));
        }
        // Follows symlinks: a ConfigMap or Secret mount is a set of links to regular files.
        // Opened non-blocking and checked on the descriptor: a FIFO is skipped, never waited on.
        let file = match bounded::open_nonblocking(&entry.path()) {
            Ok(file) => file,
            // Renamed or removed since read_dir saw it, or a dangling link: not an object.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            // A FIFO or socket that refuses a non-blocking open: not an object.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => continue,
            Err(err) => return Err(err),
        };
        let meta = file.metadata()?;
        let stamp = Stamp::of(&meta);
        if meta.is_file()
            && let Some(known) = before.get(&name)
            && let Some(etag) = known.etag_for(&stamp)
        {
            objects.push(ObjectInfo {
                key: name.clone(),
                etag: etag.to_owned(),
                size: stamp.size,
                last_modified: meta.modified().ok(),
            });
            hashed.insert(name, known.clone());
            continue;
        }
        let (etag, size) = match bounded::read_open_file(file, limit)? {
            BoundedRead::Read { bytes, .. } => {
                let etag = etag_of(&bytes);
                let now = std::time::SystemTime::now();
                hashed.insert(name.clone(), Hashed::new(stamp, etag.clone(), now));
                (etag, bytes.len() as u64)
            }
            // Never read: listed with its size (so readers refuse it without a fetch) and an
            // ETag that changes whenever the file does.
            BoundedRead::TooLarge { size, .. } => (metadata_etag(&meta, size), size),
            BoundedRead::Missing | BoundedRead::NotRegular => continue,
        };
        objects.push(ObjectInfo {
            key: name,
            etag,
            size,
            last_modified: meta.modified().ok(),
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    *listed.lock().unwrap_or_else(|e| e.into_inner()) = hashed;
    Ok(objects)
}

/// The ETag of a file too large to hash: its identity, size and modification time.
fn metadata_etag(meta: &fs::Metadata, size: u64) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"unread-{}-{}-{size}-{}.{}\"",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

enum ReadOutcome {
    Missing,
    TooLarge { size: u64, limit: u64 },
    Found(Object),
}

fn read_object(path: &Path, sidecar: &Path, limit: u64) -> io::Result<ReadOutcome> {
    // The size of the open file, not of the name: a rename that replaces the object after the
    // open does not change what is read. Reads one byte past the limit to notice a file that
    // grew in place.
    let (bytes, modified) = match bounded::read_regular_file(path, limit)? {
        BoundedRead::Missing | BoundedRead::NotRegular => return Ok(ReadOutcome::Missing),
        BoundedRead::TooLarge { size, limit } => return Ok(ReadOutcome::TooLarge { size, limit }),
        BoundedRead::Read { bytes, modified } => (bytes, modified),
    };
    let metadata = read_sidecar(sidecar);
    Ok(ReadOutcome::Found(Object {
        etag: etag_of(&bytes),
        bytes,
        last_modified: modified,
        metadata,
    }))
}

/// Metadata is informational (identity, liveness): an unreadable sidecar must not make the
/// object itself unreadable, so it reads as "no metadata" with a warning.
fn read_sidecar(path: &Path) -> BTreeMap<String, String> {
    const SIDECAR_LIMIT: u64 = 64 * 1024;
    let read = match bounded::read_regular_file(path, SIDECAR_LIMIT) {
        Ok(BoundedRead::Read { bytes, .. }) => Ok(bytes),
        Ok(BoundedRead::Missing) => Err(io::Error::from(io::ErrorKind::NotFound)),
        Ok(BoundedRead::NotRegular) => Err(io::Error::other("not a regular file")),
        Ok(BoundedRead::TooLarge { size, limit }) => Err(io::Error::other(format!(
            "{size} bytes, over the limit of {limit}"
        ))),
        Err(err) => Err(err),
    };
    match read {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(map) => map,
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "ignoring unreadable object metadata");
                BTreeMap::new()
            }
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "ignoring unreadable object metadata");
            BTreeMap::new()
        }
    }
}

/// One conditional write.
struct Put<'a> {
    key: &'a str,
    bytes: &'a [u8],
    /// The ETag of `bytes` when the caller hashed them already; empty otherwise.
    etag: String,
    metadata: &'a BTreeMap<String, String>,
    condition: &'a PutCondition,
}

fn write_object(
    dir: &Path,
    put: &Put<'_>,
    read_limit: u64,
    written: &Mutex<Written>,
) -> io::Result<PutOutcome> {
    let path = dir.join(put.key);
    // Held until the object is in place, so check-then-write is atomic for every writer that
    // goes through this code, in any process.
    let _lock = lock_dir(dir)?;
    let holds = match put.condition {
        PutCondition::None => true,
        PutCondition::IfAbsent => current_etag(&path, read_limit)?.is_none(),
        PutCondition::IfMatch(expected) => {
            let remembered = remembered_etag(written, put.key, &path);
            let current = match remembered {
                Some(etag) => Some(etag),
                None => current_etag(&path, read_limit)?,
            };
            current
                .as_deref()
                .is_some_and(|etag| same_etag(etag, expected))
        }
    };
    if !holds {
        return Ok(PutOutcome::PreconditionFailed);
    }
    // Metadata first: when the object's new content becomes visible, its metadata already is.
    let sidecar = dir.join(sidecar_name(put.key));
    if put.metadata.is_empty() {
        remove_if_present(&sidecar)?;
    } else {
        let json = serde_json::to_vec_pretty(put.metadata).map_err(io::Error::other)?;
        replace_file(dir, &sidecar, &json)?;
    }
    replace_file(dir, &path, put.bytes)?;
    sync_dir(dir)?;
    let etag = if put.etag.is_empty() {
        etag_of(put.bytes)
    } else {
        put.etag.clone()
    };
    debug_assert_eq!(
        etag,
        etag_of(put.bytes),
        "the caller's content hash is wrong"
    );
    remember_etag(written, put.key, Stamp::read(&path), &etag);
    Ok(PutOutcome::Written { etag: Some(etag) })
}

/// The ETag this store wrote for `key`, if the file is still the one it wrote.
fn remembered_etag(written: &Mutex<Written>, key: &str, path: &Path) -> Option<String> {
    let written = written.lock().ok()?;
    let (stamp, etag) = written.get(key)?;
    (Stamp::read(path).as_ref() == Some(stamp)).then(|| etag.clone())
}

fn remember_etag(written: &Mutex<Written>, key: &str, stamp: Option<Stamp>, etag: &str) {
    // A poisoned map only means another write panicked: forget everything and read instead.
    let mut written = written.lock().unwrap_or_else(|poisoned| {
        let mut map = poisoned.into_inner();
        map.clear();
        map
    });
    match stamp {
        Some(stamp) => written.insert(key.to_owned(), (stamp, etag.to_owned())),
        None => written.remove(key),
    };
}

/// The ETag a listing would give the object at `path` (read bounded and non-blocking), `""` for
/// something that is not an object (a FIFO, replaced by the rename), `None` when there is none.
fn current_etag(path: &Path, read_limit: u64) -> io::Result<Option<String>> {
    match bounded::open_nonblocking(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(match bounded::read_open_file(file, read_limit)? {
                BoundedRead::Read { bytes, .. } => Some(etag_of(&bytes)),
                BoundedRead::TooLarge { size, .. } => Some(metadata_etag(&meta, size)),
                BoundedRead::NotRegular => Some(String::new()),
                BoundedRead::Missing => None,
            })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => Ok(Some(String::new())),
        Err(err) => Err(err),
    }
}

/// Replaces `target` with `bytes` so that a reader sees the old or the new content, never a
/// mix ([`crate::atomic`]). Keeps the mode of the file being replaced, else the usual 0644.
fn replace_file(dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let replace = crate::atomic::Replace {
        prefix: TEMP_PREFIX,
        suffix: TEMP_SUFFIX,
        random_len: 6,
        mode: crate::atomic::Mode::KeepOr(0o644),
    };
    replace
        .write(dir, target, bytes)
        .map(drop)
        .map_err(|error| error.source)
}

/// Makes the renames durable: without it a crash can lose the new directory entry.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// An exclusive advisory lock on the directory's lock file, released when dropped.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    file.lock()?;
    Ok(file)
}

#[cfg(test)]
mod tests;
