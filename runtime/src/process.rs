//! Process metrics read at scrape time, under the names the Prometheus client libraries use
//! (`process_resident_memory_bytes`), so dashboards written for other exporters work.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Adds the process metrics to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Only Linux has /proc; elsewhere the series is absent rather than a made-up 0.
        let Some(status) = std::fs::read_to_string("/proc/self/status").ok() else {
            return Ok(());
        };
        if let Some(bytes) = status_kib(&status, "VmRSS:") {
            let gauge = ConstGauge::new(bytes);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        if let Some(bytes) = status_kib(&status, "VmHWM:") {
            let gauge = ConstGauge::new(bytes);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_max_bytes",
                "Peak resident memory size in bytes since the process started",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// A `Field:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_kib(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: i64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tksd\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn the_resident_memory_of_this_process_is_reported() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("process_resident_memory_bytes "))
            .unwrap_or_else(|| panic!("{text}"));
        let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 0, "{line}");
    }
}
