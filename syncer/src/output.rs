//! The merged file in Traefik's directory: atomic replacement, clean-up of our own temporary
//! files, and the change detection that lets the syncer restore the file when someone else
//! deletes or edits it.
//!
//! Traefik's file provider has no debounce and loads every `.yml`, `.yaml` and `.toml` file of
//! the directory, dotfiles included. So the file is never written in place: the bytes go to a
//! temporary file in the same directory whose name ends in neither of those extensions
//! (`.<OUTPUT_FILE>.tmp-<random>`), are flushed to disk, and the temporary file is renamed over
//! the target, which is atomic on POSIX filesystems. The directory is flushed afterwards so the
//! rename survives a power loss. Nothing else in the directory is ever touched.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ksd_runtime::storage::bounded::BoundedRead;

use crate::Error;

/// Mode of the written file: readable by Traefik whatever user it runs as, writable by us only.
const FILE_MODE: u32 = 0o644;

/// The most [`OutputFile::read`] reads of the file in place.
pub const READ_LIMIT: u64 = 1 << 30;

/// The target file and the naming of our temporary files next to it.
#[derive(Clone, Debug)]
pub struct OutputFile {
    dir: PathBuf,
    name: String,
    target: PathBuf,
    temp_prefix: String,
}

/// What the file looked like right after we wrote it: a cheap way to notice, without reading it,
/// that somebody else replaced, edited or removed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Fingerprint {
    fn of(metadata: &fs::Metadata) -> Self {
        Fingerprint {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

impl OutputFile {
    /// `name` has been validated by the settings: no `/`, ends in `.yml` or `.yaml`.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        let dir = dir.into();
        let name = name.into();
        OutputFile {
            target: dir.join(&name),
            temp_prefix: temp_prefix(&name),
            dir,
            name,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Whether a path seen in a directory event is the target file.
    pub fn is_target(&self, path: &Path) -> bool {
        path.file_name() == Some(OsStr::new(&self.name))
    }

    /// Removes temporary files a previous run left behind (killed between create and rename).
    /// Only names with our exact prefix are considered, and only regular files.
    pub fn remove_stale_temp_files(&self) -> Result<Vec<PathBuf>, Error> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            // A directory that does not exist yet holds no stale files; writing will report it.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::OutputIo {
                    path: self.dir.clone(),
                    step: "list directory",
                    source,
                });
            }
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::OutputIo {
                path: self.dir.clone(),
                step: "list directory",
                source,
            })?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if !is_our_temp_name(&self.temp_prefix, file_name) {
                continue;
            }
            let path = entry.path();
            let is_file = fs::symlink_metadata(&path)
                .map(|m| m.file_type().is_file())
                .unwrap_or(false);
            if !is_file {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::OutputIo {
                        path,
                        step: "remove stale temporary file",
                        source,
                    });
                }
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// The file's current bytes, `None` when it does not exist or is nothing we could have
    /// written (not a regular file, or over [`READ_LIMIT`]): either way it is to be replaced.
    /// Bounded and non-blocking, so a FIFO or a huge file put in its place cannot stall a cycle.
    pub fn read(&self) -> Result<Option<Vec<u8>>, Error> {
        match ksd_runtime::storage::bounded::read_regular_file(&self.target, READ_LIMIT) {
            Ok(BoundedRead::Read { bytes, .. }) => Ok(Some(bytes)),
            Ok(BoundedRead::Missing | BoundedRead::NotRegular | BoundedRead::TooLarge { .. }) => {
                Ok(None)
            }
            Err(source) => Err(Error::OutputIo {
                path: self.target.clone(),
                step: "read",
                source,
            }),
        }
    }

    /// The file's fingerprint, `None` when it does not exist.
    pub fn fingerprint(&self) -> Result<Option<Fingerprint>, Error> {
        match fs::symlink_metadata(&self.target) {
            Ok(metadata) => Ok(Some(Fingerprint::of(&metadata))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::OutputIo {
                path: self.target.clone(),
                step: "stat",
                source,
            }),
        }
    }

    /// Replaces the file with `bytes` atomically and durably; returns the new file's fingerprint.
    ///
    /// On any failure the previous file is left as it was and the temporary file is removed
    /// (by `NamedTempFile`'s drop); only a crash can leave a temporary file behind, and its name
    /// is one Traefik ignores and [`OutputFile::remove_stale_temp_files`] cleans up.
    pub fn write_atomic(&self, bytes: &[u8]) -> Result<Fingerprint, Error> {
        let io_error = |path: &Path, step: &'static str| {
            let path = path.to_path_buf();
            move |source: io::Error| Error::OutputIo { path, step, source }
        };
        let replace = ksd_runtime::atomic::Replace {
            prefix: &self.temp_prefix,
            suffix: "",
            random_len: 10,
            mode: ksd_runtime::atomic::Mode::Fixed(FILE_MODE),
        };
        let metadata = replace
            .write(&self.dir, &self.target, bytes)
            .map_err(|error| {
                let path = match error.step {
                    "rename over target" => &self.target,
                    _ => &self.dir,
                };
                io_error(path, error.step)(error.source)
            })?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir, "sync directory"))?;
        Ok(Fingerprint::of(&metadata))
    }
}

/// `.<name>.tmp-`: hidden, and the random part that follows contains no `.`, so the name's
/// extension is never `yml`, `yaml` or `toml`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

fn is_our_temp_name(prefix: &str, file_name: &str) -> bool {
    file_name
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn output(dir: &Path) -> OutputFile {
        OutputFile::new(dir, "k8s-service-discovery.yml")
    }

    #[test]
    fn writes_whole_file_with_mode_0644_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let fingerprint = out.write_atomic(b"a: 1\n").unwrap();
        assert_eq!(fs::read(out.path()).unwrap(), b"a: 1\n");
        let mode = fs::metadata(out.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(out.fingerprint().unwrap(), Some(fingerprint));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("k8s-service-discovery.yml")]);
    }

    #[test]
    fn replacing_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let first = out.write_atomic(b"a: 1\n").unwrap();
        let second = out.write_atomic(b"a: 2\n").unwrap();
        assert_ne!(first, second, "a rename gives a new inode");
        assert_eq!(out.read().unwrap().as_deref(), Some(&b"a: 2\n"[..]));
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        out.write_atomic(b"old\n").unwrap();
        // A directory in place of the target makes the rename fail, even for root.
        let blocked = OutputFile::new(dir.path(), "blocked.yml");
        fs::create_dir(blocked.path()).unwrap();
        fs::write(blocked.path().join("x"), b"x").unwrap();
        let error = blocked.write_atomic(b"new\n").unwrap_err();
        assert!(error.to_string().contains("rename"), "{error}");
        assert_eq!(out.read().unwrap().as_deref(), Some(&b"old\n"[..]));
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["blocked.yml", "k8s-service-discovery.yml"]);
    }

    #[test]
    fn removes_only_our_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        let ours = dir.path().join(".k8s-service-discovery.yml.tmp-Ab12Cd34Ef");
        let keep = [
            "main.yml",
            ".main.yml.tmp-Ab12Cd34Ef",
            ".k8s-service-discovery.yml.tmp-",
            ".k8s-service-discovery.yml.tmp-x.yml",
            "k8s-service-discovery.yml.tmp-Ab12Cd34Ef",
        ];
        fs::write(&ours, b"half").unwrap();
        for name in keep {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        // A directory with our prefix is not ours to delete.
        fs::create_dir(dir.path().join(".k8s-service-discovery.yml.tmp-Dir")).unwrap();
        assert_eq!(out.remove_stale_temp_files().unwrap(), vec![ours.clone()]);
        assert!(!ours.exists());
        for name in keep {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        assert!(
            dir.path()
                .join(".k8s-service-discovery.yml.tmp-Dir")
                .is_dir()
        );
    }

    #[test]
    fn temp_names_never_carry_a_config_extension() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        for _ in 0..50 {
            let temp = tempfile::Builder::new()
                .prefix(&out.temp_prefix)
                .suffix("")
                .rand_bytes(10)
                .tempfile_in(dir.path())
                .unwrap();
            let name = temp
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            let extension = Path::new(&name).extension().unwrap().to_str().unwrap();
            assert!(extension.starts_with("tmp-"), "{name}");
            assert!(is_our_temp_name(&out.temp_prefix, &name), "{name}");
        }
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path());
        assert_eq!(out.read().unwrap(), None);
        assert_eq!(out.fingerprint().unwrap(), None);
        assert!(out.is_target(&dir.path().join("k8s-service-discovery.yml")));
        assert!(!out.is_target(&dir.path().join("main.yml")));
    }

    #[test]
    fn missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(&dir.path().join("absent"));
        assert!(out.write_atomic(b"x").is_err());
        assert_eq!(
            out.remove_stale_temp_files().unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
