//! Replacing a file so that a reader sees the old or the new content, never a mix: a temporary
//! file in the same directory, written, given its mode, flushed to disk, then renamed over the
//! target; [`sync_dir`] makes the rename itself durable. Both agents write files this way: the
//! local store its objects, the syncer Traefik's file.

use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The mode the new file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Exactly this mode (set with fchmod, so the umask does not apply).
    Fixed(u32),
    /// The mode of the file being replaced, else this one.
    KeepOr(u32),
}

/// How the temporary file is named and what mode the result has.
#[derive(Clone, Copy, Debug)]
pub struct Replace<'a> {
    /// Start of the temporary file's name: pick one the directory's readers ignore.
    pub prefix: &'a str,
    pub suffix: &'a str,
    /// Random characters between prefix and suffix (alphanumeric).
    pub random_len: usize,
    pub mode: Mode,
}

/// The step that failed, for messages (`"rename over target"`), and the error.
#[derive(Debug)]
pub struct ReplaceError {
    pub step: &'static str,
    pub source: io::Error,
}

impl Replace<'_> {
    /// Replaces `target` (in `dir`) with `bytes`; returns the new file's metadata. On failure
    /// the previous file is left as it was and the temporary file is removed. The file is
    /// closed before the rename, so that a watcher of `dir` sees the writer's close under the
    /// temporary name and, under the target's name, only the rename.
    pub fn write(
        &self,
        dir: &Path,
        target: &Path,
        bytes: &[u8],
    ) -> Result<fs::Metadata, ReplaceError> {
        let step = |step| move |source| ReplaceError { step, source };
        let mut temp = tempfile::Builder::new()
            .prefix(self.prefix)
            .suffix(self.suffix)
            .rand_bytes(self.random_len)
            .tempfile_in(dir)
            .map_err(step("create temporary file"))?;
        let mode = match self.mode {
            Mode::Fixed(mode) => mode,
            Mode::KeepOr(default) => fs::metadata(target)
                .map(|meta| meta.permissions().mode() & 0o7777)
                .unwrap_or(default),
        };
        // fchmod: temp files are created 0600, and readers may run as another user.
        temp.as_file()
            .set_permissions(Permissions::from_mode(mode))
            .map_err(step("set permissions"))?;
        temp.write_all(bytes)
            .map_err(step("write temporary file"))?;
        temp.as_file()
            .sync_all()
            .map_err(step("sync temporary file"))?;
        let metadata = temp
            .as_file()
            .metadata()
            .map_err(step("stat temporary file"))?;
        let (file, path) = temp.into_parts();
        drop(file);
        path.persist(target)
            .map_err(|error| step("rename over target")(error.error))?;
        Ok(metadata)
    }
}

/// Makes renames in `dir` durable: without it a crash can lose the new directory entry.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const REPLACE: Replace<'static> = Replace {
        prefix: ".t.tmp-",
        suffix: "",
        random_len: 8,
        mode: Mode::KeepOr(0o644),
    };

    #[test]
    fn replaces_content_and_keeps_or_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        REPLACE.write(dir.path(), &target, b"one").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target), 0o644);
        fs::set_permissions(&target, Permissions::from_mode(0o640)).unwrap();
        REPLACE.write(dir.path(), &target, b"two").unwrap();
        assert_eq!(
            (fs::read(&target).unwrap(), mode(&target)),
            (b"two".to_vec(), 0o640)
        );
        let fixed = Replace {
            mode: Mode::Fixed(0o600),
            ..REPLACE
        };
        fixed.write(dir.path(), &target, b"three").unwrap();
        assert_eq!(mode(&target), 0o600);
        sync_dir(dir.path()).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "no temporary file is left");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("d");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"").unwrap();
        let error = REPLACE.write(dir.path(), &target, b"x").unwrap_err();
        assert_eq!(error.step, "rename over target");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
