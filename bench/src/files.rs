//! Noticing that a file now holds some content.
//!
//! Both agents replace their files by renaming a complete temporary file over them, so a new
//! version is a new directory entry (new inode, new mtime) that appears at one instant. The
//! instant recorded is the one at which the replacement was *noticed*, before the file is read
//! to confirm its content, so the (multi-megabyte) read is not counted.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::{Error, Result};

/// What tells one version of a file from the next without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// The version of the file at `path`, `None` while it does not exist.
pub fn version(path: &Path) -> Option<Version> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Version {
        inode: metadata.ino(),
        len: metadata.len(),
        modified: metadata.modified().ok(),
    })
}

/// Whether the file at `path` exists and contains `needle`. A file that is missing or not
/// UTF-8 does not.
pub fn contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|text| text.contains(needle))
}

/// Stats `path` every `interval` until a version of it contains `needle`; returns the instant
/// that version was first seen. Blocking: run it on a thread of its own.
pub fn poll_until_contains(
    path: &Path,
    needle: &str,
    interval: Duration,
    timeout: Duration,
) -> Result<Instant> {
    let start = Instant::now();
    let mut checked: Option<Version> = None;
    loop {
        let seen_at = Instant::now();
        let current = version(path);
        if current.is_some() && current != checked {
            if contains(path, needle) {
                return Ok(seen_at);
            }
            checked = current;
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("{needle:?} in {}", path.display()),
                after: timeout,
            });
        }
        std::thread::sleep(interval);
    }
}

/// File events of one directory (not recursive), as they arrive.
pub struct DirWatch {
    dir: PathBuf,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    _watcher: RecommendedWatcher,
}

impl DirWatch {
    pub fn new(dir: &Path) -> Result<DirWatch> {
        let watch_error = |source| Error::Watch {
            path: dir.to_owned(),
            source,
        };
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).map_err(watch_error)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
        Ok(DirWatch {
            dir: dir.to_owned(),
            events,
            _watcher: watcher,
        })
    }

    /// Forgets the events received so far.
    pub fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Waits for an event on `path` after which the file contains `needle`; returns the
    /// instant that event was received. Blocking.
    pub fn wait_until_contains(
        &self,
        path: &Path,
        needle: &str,
        timeout: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        what: format!("{needle:?} in {}", path.display()),
                        after: timeout,
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::WatcherGone {
                        path: self.dir.clone(),
                    });
                }
            };
            let received = Instant::now();
            let relevant = match &event {
                Ok(event) => {
                    !matches!(event.kind, notify::EventKind::Access(_))
                        && event.paths.iter().any(|p| p == path)
                }
                // An overflowed queue: look, in case the event was lost.
                Err(_) => true,
            };
            if relevant && contains(path, needle) {
                return Ok(received);
            }
        }
    }

    /// [`DirWatch::wait_until_contains`] on a blocking thread, for async callers: the watch is
    /// moved there and handed back with the outcome, ready for the next wait.
    pub async fn wait_until_contains_async(
        self,
        path: PathBuf,
        needle: String,
        timeout: Duration,
    ) -> anyhow::Result<(DirWatch, Result<Instant>)> {
        tokio::task::spawn_blocking(move || {
            let seen = self.wait_until_contains(&path, &needle, timeout);
            (self, seen)
        })
        .await
        .context("the waiting thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(dir: &Path, target: &Path, text: &str) {
        let temp = dir.join(".next.tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, target).unwrap();
    }

    #[test]
    fn polling_notices_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.yml");
        replace(dir.path(), &target, "old\n");
        let err = poll_until_contains(
            &target,
            "new",
            Duration::from_millis(1),
            Duration::from_millis(50),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        let writer = {
            let dir = dir.path().to_owned();
            let target = target.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                replace(&dir, &target, "new\n");
                Instant::now()
            })
        };
        let seen = poll_until_contains(
            &target,
            "new",
            Duration::from_millis(1),
            Duration::from_secs(10),
        )
        .unwrap();
        let written = writer.join().unwrap();
        assert!(seen >= written - Duration::from_millis(5));
    }

    #[test]
    fn events_notice_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.yml");
        replace(dir.path(), &target, "old\n");
        let watch = DirWatch::new(dir.path()).unwrap();
        watch.drain();
        let other = dir.path().join("other.yml");
        std::fs::write(&other, "new\n").unwrap();
        let err = watch
            .wait_until_contains(&target, "new", Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        replace(dir.path(), &target, "new\n");
        watch
            .wait_until_contains(&target, "new", Duration::from_secs(10))
            .unwrap();
    }

    #[test]
    fn contains_needs_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!contains(&dir.path().join("missing"), "x"));
        assert_eq!(version(&dir.path().join("missing")), None);
    }
}
