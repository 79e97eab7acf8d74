//! The output file: writing what was decided, checking it is still ours, watching Traefik's
//! directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use ksd_runtime::error_chain;
use ksd_shared::names::ClusterName;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::{Syncer, WRITE_TIMEOUT};
use crate::compose::Composed;
use crate::output::{Fingerprint, OutputFile};
use crate::{Error, Result};

/// A watch of Traefik's directory, valid while the directory is the one it was set on.
pub(super) struct OutputWatch {
    _watcher: RecommendedWatcher,
    pub(super) events: mpsc::Receiver<()>,
    /// Set when an event may have changed the file without replacing it (a write in place, or
    /// a lost event): the file is then read, as a change in place within one tick of the
    /// filesystem clock keeps its fingerprint. Our own writes replace the file (a rename), which
    /// changes the inode, so their echo costs a `stat`, not a read of the whole file.
    in_place: Arc<AtomicBool>,
    dir: PathBuf,
    identity: (u64, u64),
}

impl OutputWatch {
    /// Whether the events since the last call may have changed the file in place.
    pub(super) fn take_in_place(&self) -> bool {
        self.in_place.swap(false, Ordering::AcqRel)
    }

    /// False once the directory was removed or replaced: inotify watches the inode, so the
    /// watch has to be set up again on the new one.
    pub(super) fn is_current(&self) -> bool {
        dir_identity(&self.dir) == Some(self.identity)
    }
}

pub(super) fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Where the decided file goes.
pub(super) enum Sink {
    File {
        output: OutputFile,
        /// What we last wrote or verified on disk.
        on_disk: Option<OnDisk>,
    },
    /// `--dry-run`: standard output, each time the document changes.
    Stdout { printed: Option<String> },
}

#[derive(Clone, Debug)]
pub(super) struct OnDisk {
    hash: String,
    fingerprint: Fingerprint,
}

/// What one blocking check-and-write of the output file did.
pub(super) enum Ensured {
    /// The file is as we left it.
    Unchanged,
    /// The file already held the desired bytes (left by a previous run, or rewritten by
    /// somebody with identical content).
    Adopted(OnDisk),
    Written {
        on_disk: OnDisk,
        restored: bool,
    },
}

impl Syncer {
    /// Whether the output file should be watched: once there is something to guard, and
    /// never in `--dry-run`.
    pub(super) fn wants_output_watch(&self) -> bool {
        matches!(self.sink, Sink::File { .. }) && self.desired.is_some()
    }

    /// Watches Traefik's directory for changes to the output file (not in `--dry-run`).
    pub(super) fn watch_output(&self) -> Option<OutputWatch> {
        let Sink::File { output, .. } = &self.sink else {
            return None;
        };
        // Nothing to guard before the first decision; the directory may not exist yet.
        self.desired.as_ref()?;
        let dir = output.dir().to_path_buf();
        let identity = dir_identity(&dir)?;
        let target = output.clone();
        let watched = dir.clone();
        let in_place = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&in_place);
        // Events on the directory itself (removed, moved away) wake the loop too, so the watch
        // is set up again on its replacement.
        match watch_dir(&dir, move |event| {
            let Some(event) = event else {
                flag.store(true, Ordering::Release);
                return true;
            };
            let on_target = event.paths.iter().any(|path| target.is_target(path));
            if on_target && may_change_in_place(&event.kind) {
                flag.store(true, Ordering::Release);
            }
            on_target || event.paths.contains(&watched)
        }) {
            Ok((watcher, events)) => Some(OutputWatch {
                _watcher: watcher,
                events,
                in_place,
                dir,
                identity,
            }),
            Err(error) => {
                debug!(error = %error_chain(&error), "cannot watch the output directory yet");
                None
            }
        }
    }

    pub(super) async fn publish(&mut self) -> Result<()> {
        let Some((_, desired)) = self.desired.clone() else {
            return Ok(());
        };
        match &mut self.sink {
            Sink::Stdout { printed } => {
                if printed.as_deref() != Some(desired.hash.as_str()) {
                    // A blocking write: only `--dry-run` prints, and a slow reader should slow
                    // the loop down rather than have documents pile up.
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&desired.bytes)
                        .and_then(|()| stdout.flush())
                        .map_err(Error::Stdout)?;
                    *printed = Some(desired.hash.clone());
                }
                self.health.set_ready(true);
                Ok(())
            }
            Sink::File { .. } => self.ensure_file(false).await,
        }
    }

    /// Verifies the output file after a change notification; restores it if needed.
    pub(super) async fn check_output(&mut self, force_read: bool) {
        if let Err(error) = self.ensure_file(force_read).await {
            warn!(error = %error_chain(&error), "cannot restore the output file; retrying on the next poll");
        }
    }

    /// Makes the file hold the desired bytes, writing only if it does not already.
    pub(super) async fn ensure_file(&mut self, force_read: bool) -> Result<()> {
        let Some((_, desired)) = self.desired.clone() else {
            return Ok(());
        };
        let Sink::File { output, on_disk } = &mut self.sink else {
            return Ok(());
        };
        let task_output = output.clone();
        let known = on_disk.clone();
        let task_desired = desired.clone();
        let task = tokio::task::spawn_blocking(move || {
            ensure(&task_output, &task_desired, known.as_ref(), force_read)
        });
        let result = match timeout(WRITE_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::Blocking(join)),
            Err(_) => Err(Error::OutputTimeout {
                path: output.path().to_path_buf(),
                after: WRITE_TIMEOUT,
            }),
        };
        let wrote = matches!(result, Ok(Ensured::Adopted(_) | Ensured::Written { .. }));
        if result.is_ok() {
            self.status
                .observe_output(output.path(), &desired.hash, desired.bytes.len(), wrote);
            self.status.publish(&self.state, SystemTime::now());
        }
        match result {
            Ok(Ensured::Unchanged) => self.metrics.change_settled(),
            Ok(Ensured::Adopted(found)) => {
                self.metrics.change_settled();
                debug!(path = %output.path().display(), "the file already holds the merged document");
                *on_disk = Some(found);
            }
            Ok(Ensured::Written {
                on_disk: written,
                restored,
            }) => {
                self.metrics.written(SystemTime::now());
                self.metrics.change_written();
                if restored {
                    self.metrics.restored();
                    warn!(path = %output.path().display(), "the output file was deleted or changed by someone else; restored");
                } else {
                    info!(
                        path = %output.path().display(),
                        bytes = desired.bytes.len(),
                        clusters = ?desired.clusters.iter().map(ClusterName::as_str).collect::<Vec<_>>(),
                        "wrote the merged document"
                    );
                }
                *on_disk = Some(written);
            }
            Err(error) => {
                // The state of the file is unknown now: read it again next time.
                *on_disk = None;
                self.metrics.write(match error {
                    Error::OutputTimeout { .. } => "timeout",
                    _ => "error",
                });
                warn!(error = %error_chain(&error), "writing the output file failed; the previous file is intact, retrying on the next poll");
                return Err(error);
            }
        }
        self.health.set_ready(true);
        Ok(())
    }
}

/// The blocking part of [`Syncer::ensure_file`]: a `stat` when the file is as we left it (the
/// desired bytes, or the previous version we wrote, which is then replaced without being
/// read), a read and compare otherwise, a write only if the bytes differ.
pub(super) fn ensure(
    output: &OutputFile,
    desired: &Composed,
    known: Option<&OnDisk>,
    force_read: bool,
) -> Result<Ensured> {
    let ours = known.filter(|k| k.hash == desired.hash);
    // One `stat` tells whether the file is as we left it: then it holds the desired bytes
    // already, or the previous version we wrote, which differs from them without reading the
    // file to find out.
    let as_we_left_it = match known {
        Some(known) if !force_read => output.fingerprint()? == Some(known.fingerprint),
        _ => false,
    };
    if as_we_left_it && ours.is_some() {
        return Ok(Ensured::Unchanged);
    }
    if !as_we_left_it
        && output.read()?.as_deref() == Some(desired.bytes.as_slice())
        && let Some(fingerprint) = output.fingerprint()?
    {
        let found = OnDisk {
            hash: desired.hash.clone(),
            fingerprint,
        };
        return Ok(match ours {
            Some(ours) if ours.fingerprint == fingerprint => Ensured::Unchanged,
            _ => Ensured::Adopted(found),
        });
    }
    let fingerprint = output.write_atomic(&desired.bytes)?;
    Ok(Ensured::Written {
        on_disk: OnDisk {
            hash: desired.hash.clone(),
            fingerprint,
        },
        restored: ours.is_some(),
    })
}

/// A non-recursive watch of `dir` that signals (coalesced into one pending signal) every event
/// `relevant` keeps. Opens and reads are never relevant: the syncer's own reads would wake it.
/// `relevant` is asked with `None` for an overflowed queue or a broken watch (events may have
/// been lost), and should keep it.
pub(super) fn watch_dir(
    dir: &Path,
    relevant: impl Fn(Option<&notify::Event>) -> bool + Send + 'static,
) -> Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(event) => !is_read_only_access(&event.kind) && relevant(Some(&event)),
            Err(_) => relevant(None),
        };
        if wake {
            // Full means a signal is already pending, which is all we need.
            let _ = tx.try_send(());
        }
    })
    .map_err(|source| watch_error(dir, source))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| watch_error(dir, source))?;
    Ok((watcher, rx))
}

pub(super) fn watch_error(dir: &Path, source: notify::Error) -> Error {
    Error::Watch {
        path: PathBuf::from(dir),
        source,
    }
}

/// Whether an event may stand for a change of the file's bytes that keeps its inode (a write
/// in place, a truncation). Creations, removals and renames change what the path points at,
/// which the fingerprint (device, inode, size, mtime) tells without reading.
fn may_change_in_place(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => false,
        EventKind::Modify(ModifyKind::Name(_)) => false,
        EventKind::Access(access) => matches!(access, AccessKind::Close(AccessMode::Write)),
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
    }
}

pub(super) fn is_read_only_access(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if !matches!(access, AccessKind::Close(AccessMode::Write)))
}
