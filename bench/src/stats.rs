//! Summaries of repeated measurements.

use std::fmt;
use std::time::{Duration, Instant};

/// Order statistics of a set of durations (nearest-rank percentiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: usize,
    pub min: Duration,
    pub median: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let total: Duration = sorted.iter().sum();
        let count = sorted.len();
        Some(Summary {
            count,
            min,
            median: percentile(&sorted, 50),
            p90: percentile(&sorted, 90),
            p99: percentile(&sorted, 99),
            max,
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
        })
    }

    /// The same summary with `offset` taken off every statistic (saturating at zero), e.g. a
    /// configured delay that is part of every sample by design.
    pub fn minus(&self, offset: Duration) -> Summary {
        let less = |d: Duration| d.saturating_sub(offset);
        Summary {
            count: self.count,
            min: less(self.min),
            median: less(self.median),
            p90: less(self.p90),
            p99: less(self.p99),
            max: less(self.max),
            mean: less(self.mean),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min={} median={} p90={} p99={} max={} mean={}",
            self.count,
            ms(self.min),
            ms(self.median),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            ms(self.mean)
        )
    }
}

/// The nearest-rank `pct`th percentile of sorted, non-empty samples: the smallest sample with
/// at least `pct`% of the samples at or below it.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Milliseconds with two decimals: `12.34ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

/// Runs `f` once and returns its result with the time it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// The times of `runs` runs of `f`; `f`'s result is dropped outside the timed region.
pub fn repeat<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let (value, took) = timed(&mut f);
            drop(value);
            took
        })
        .collect()
}

/// A deterministic, evenly spread sequence in [0, 1): the fractional parts of `i * φ`. Used to
/// spread the moments changes are made over a poll period without a random generator, so that
/// a run can be repeated exactly.
pub fn spread(i: usize) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    (i as f64 * GOLDEN).fract()
}

/// Prints one result line: `label` padded to `width`, then the summary of `samples`.
pub fn print_line(label: &str, width: usize, samples: &[Duration]) {
    match Summary::of(samples) {
        Some(summary) => println!("{label:<width$} {summary}"),
        None => println!("{label:<width$} no samples"),
    }
}

/// `label`'s median and p99 as multiples of the floor's median, the figure the targets are
/// stated in: `p50 1.4x, p99 2.1x the floor (median 20.5 ms)`.
pub fn print_ratio(label: &str, width: usize, samples: &[Duration], floor: &[Duration]) {
    let (Some(summary), Some(floor)) = (Summary::of(samples), Summary::of(floor)) else {
        println!("{label:<width$} no samples");
        return;
    };
    let ratio = |d: Duration| d.as_secs_f64() / floor.median.as_secs_f64().max(1e-9);
    println!(
        "{label:<width$} p50 {:.2}x, p99 {:.2}x the floor (median {})",
        ratio(summary.median),
        ratio(summary.p99),
        ms(floor.median)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = millis(&(1..=100).rev().collect::<Vec<_>>());
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.median, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn small_sets() {
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&millis(&[7])).unwrap();
        assert_eq!(
            (one.median, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        let three = Summary::of(&millis(&[3, 1, 2])).unwrap();
        assert_eq!(three.median, Duration::from_millis(2));
        assert_eq!(three.p90, Duration::from_millis(3));
    }

    #[test]
    fn minus_saturates() {
        let s = Summary::of(&millis(&[50, 150]))
            .unwrap()
            .minus(Duration::from_millis(100));
        assert_eq!(s.min, Duration::ZERO);
        assert_eq!(s.max, Duration::from_millis(50));
    }

    #[test]
    fn spread_stays_in_the_unit_interval_and_covers_it() {
        let values: Vec<f64> = (0..100).map(spread).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        for decile in 0..10 {
            let low = f64::from(decile) / 10.0;
            assert!(
                values.iter().any(|v| (low..low + 0.1).contains(v)),
                "nothing in [{low}, {})",
                low + 0.1
            );
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(Duration::from_micros(12_345)), "12.35ms");
    }
}
