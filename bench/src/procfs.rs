//! Resident memory of a process, from `/proc/<pid>/status` (Linux).

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// `VmRSS` (resident now) and `VmHWM` (peak resident since start), in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub fn of(pid: u32) -> Result<Memory> {
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let field = |name: &'static str| {
            kib_field(&text, name).ok_or_else(|| Error::MissingField {
                path: path.clone(),
                field: name,
            })
        };
        Ok(Memory {
            rss_kib: field("VmRSS")?,
            hwm_kib: field("VmHWM")?,
        })
    }

    /// The memory of this process.
    pub fn own() -> Result<Memory> {
        Memory::of(std::process::id())
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmRSS={} VmHWM={}", mib(self.rss_kib), mib(self.hwm_kib))
    }
}

/// KiB as MiB with one decimal: `123.4 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status =
            "Name:\tksd-syncer\nVmHWM:\t  204800 kB\nVmRSS:\t   102400 kB\nVmRSSX:\t1 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(102_400));
        assert_eq!(kib_field(status, "VmHWM"), Some(204_800));
        assert_eq!(kib_field(status, "VmSwap"), None);
        assert_eq!(kib_field("VmRSS:\t12 MB\n", "VmRSS"), None);
    }

    #[test]
    fn own_memory_is_plausible() {
        let memory = Memory::own().unwrap();
        assert!(memory.rss_kib > 0);
        assert!(memory.hwm_kib >= memory.rss_kib);
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
