//! Reads of local files that cannot stall or grow past a limit: only regular files are read
//! (a FIFO, socket or device is refused without blocking, because it is opened non-blocking
//! and checked on the open descriptor), and never more than the limit plus one byte, so a file
//! that grows in place is noticed without being read whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

/// What [`read_regular_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundedRead {
    /// Nothing under that name (or a dangling link).
    Missing,
    /// A FIFO, socket, device or directory: never read.
    NotRegular,
    /// Larger than the limit: `size` is what was known when it was refused (the size on open, or
    /// the limit plus one when the file grew while it was read).
    TooLarge { size: u64, limit: u64 },
    Read {
        bytes: Vec<u8>,
        modified: Option<SystemTime>,
    },
}

/// Opens `path` without blocking (`O_NONBLOCK`; follows symlinks, as a ConfigMap mount needs) and
/// reads it whole if it is a regular file of at most `limit` bytes.
pub fn read_regular_file(path: &Path, limit: u64) -> io::Result<BoundedRead> {
    let file = match open_nonblocking(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(BoundedRead::Missing),
        // ENXIO: a FIFO without a writer opened for writing, or a socket; never ours to read.
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(BoundedRead::NotRegular);
        }
        Err(err) => return Err(err),
    };
    read_open_file(file, limit)
}

/// As [`read_regular_file`] on a file opened with [`open_nonblocking`].
pub fn read_open_file(file: File, limit: u64) -> io::Result<BoundedRead> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(BoundedRead::NotRegular);
    }
    if meta.len() > limit {
        return Ok(BoundedRead::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(BoundedRead::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(BoundedRead::Read {
        bytes,
        modified: meta.modified().ok(),
    })
}

/// Opens for reading with `O_NONBLOCK`: opening a FIFO never waits for a writer. (Reads of a
/// regular file ignore the flag.)
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn reads_small_regular_files_and_refuses_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("small");
        std::fs::write(&small, b"hello").unwrap();
        assert!(matches!(
            read_regular_file(&small, 5).unwrap(),
            BoundedRead::Read { bytes, .. } if bytes == b"hello"
        ));
        assert_eq!(
            read_regular_file(&small, 4).unwrap(),
            BoundedRead::TooLarge { size: 5, limit: 4 }
        );
        assert_eq!(
            read_regular_file(&tmp.path().join("none"), 4).unwrap(),
            BoundedRead::Missing
        );
        assert_eq!(
            read_regular_file(tmp.path(), 4).unwrap(),
            BoundedRead::NotRegular
        );
        let fifo = tmp.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Would block forever with a plain open.
        assert_eq!(
            read_regular_file(&fifo, 4).unwrap(),
            BoundedRead::NotRegular
        );
    }
}
