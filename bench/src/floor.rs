//! The floor of an exporter change: the I/O that publishing one change cannot avoid, measured
//! in the same run as the change so that both see the same machine.
//!
//! - writing the object: a file of the document's size written to a temporary file, fsynced,
//!   renamed over the previous one, and the directory fsynced (what a durable `file://` put
//!   needs at the least; [`object_writes`]);
//! - reading the changed EndpointSlice: decoding its JSON in-process ([`slice_reads`]), or, for
//!   the real binary, the API server's watch event arriving (measured by the caller).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_runtime::atomic::{Mode, Replace};

/// One durable replacement of `dir/name` with `bytes`: temp file, write, fsync, rename, fsync
/// of the directory.
pub fn object_write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<Duration> {
    let replace = Replace {
        prefix: ".floor-",
        suffix: ".tmp",
        random_len: 6,
        mode: Mode::KeepOr(0o644),
    };
    let start = Instant::now();
    replace
        .write(dir, &dir.join(name), bytes)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.step, e.source))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context("fsync of the directory")?;
    Ok(start.elapsed())
}

/// `runs` replacements of one object with `bytes` (after a first one that creates it), in a
/// temporary directory on the file system temporary directories are on.
pub fn object_writes(runs: usize, bytes: &[u8]) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir().context("a directory for the floor")?;
    object_write(dir.path(), "floor.yaml", bytes)?;
    (0..runs)
        .map(|_| object_write(dir.path(), "floor.yaml", bytes))
        .collect()
}

/// `runs` decodings of the JSON of `slices` (the changed slices of one Service), as the
/// exporter decodes a watch event's object.
pub fn slice_reads(runs: usize, slices: &[EndpointSlice]) -> anyhow::Result<Vec<Duration>> {
    let json: Vec<Vec<u8>> = slices
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()
        .context("encoding the slices")?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        for bytes in &json {
            let slice: EndpointSlice = serde_json::from_slice(bytes).context("decoding a slice")?;
            std::hint::black_box(slice);
        }
        times.push(start.elapsed());
    }
    Ok(times)
}

/// `measured / floor`, as `"3.2x"`.
pub fn ratio(measured: Duration, floor: Duration) -> String {
    if floor.is_zero() {
        return "n/a".to_owned();
    }
    format!("{:.1}x", measured.as_secs_f64() / floor.as_secs_f64())
}

/// Element-wise sums of two sample sets (as many as the shorter one), for a floor made of
/// several steps measured separately.
pub fn sums(a: &[Duration], b: &[Duration]) -> Vec<Duration> {
    a.iter().zip(b).map(|(x, y)| *x + *y).collect()
}
