//! Latency measurement for Prometheus histograms.

use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

/// Observes the time from its creation to its drop in a histogram, so that every way out of a
/// measured section (an early return, `?`, a cancelled future) is counted.
#[must_use = "the duration is observed when the timer is dropped"]
#[derive(Debug)]
pub struct DropTimer {
    start: Instant,
    histogram: Histogram,
}

impl DropTimer {
    pub fn new(histogram: &Histogram) -> DropTimer {
        DropTimer {
            start: Instant::now(),
            histogram: histogram.clone(),
        }
    }
}

impl Drop for DropTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn observes_once_when_dropped() {
        let histogram = Histogram::new([0.001, 1.0]);
        {
            let _timer = DropTimer::new(&histogram);
        }
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("t", "test", histogram.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("t_count 1"), "{text}");
    }
}
