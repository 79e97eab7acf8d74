//! Capped exponential backoff with full jitter, for retrying storage and API errors.
//!
//! Full jitter (a uniform delay between zero and the capped exponential) spreads retries of
//! many agents that failed together, e.g. after a bucket outage, instead of having them retry
//! in lock step.

use std::time::Duration;

use rand::Rng;

/// Delays for successive retries: the n-th is uniform in `[0, min(max, initial * 2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// `initial` is the ceiling of the first delay, `max` the ceiling of every delay. A `max`
    /// below `initial` is raised to `initial`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn current_ceiling(&self) -> Duration {
        // 2^attempt saturates; past 2^31 the cap has long been reached anyway.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next retry; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current_ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Retries since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let mut ceilings = Vec::new();
        for _ in 0..7 {
            ceilings.push(b.current_ceiling());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [
                100 * MS,
                200 * MS,
                400 * MS,
                800 * MS,
                1000 * MS,
                1000 * MS,
                1000 * MS
            ]
        );
    }

    #[test]
    fn every_delay_is_within_its_ceiling() {
        let mut b = Backoff::new(10 * MS, 300 * MS);
        for _ in 0..1000 {
            let ceiling = b.current_ceiling();
            let delay = b.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            assert!(delay <= 300 * MS);
        }
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = Backoff::new(1000 * MS, 1000 * MS);
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| b.next_delay()).collect();
        // 50 uniform draws over a billion nanoseconds do not all coincide.
        assert!(delays.len() > 40, "{delays:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(50 * MS, 10_000 * MS);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.attempts(), 5);
        assert_eq!(b.current_ceiling(), 1600 * MS);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.current_ceiling(), 50 * MS);
        assert!(b.next_delay() <= 50 * MS);
    }

    #[test]
    fn survives_many_attempts_without_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        huge.next_delay();
        huge.next_delay();
        assert_eq!(huge.current_ceiling(), Duration::MAX);
    }

    #[test]
    fn max_below_initial_is_raised() {
        let mut b = Backoff::new(500 * MS, 100 * MS);
        assert!(b.next_delay() <= 500 * MS);
        assert_eq!(b.current_ceiling(), 500 * MS);
    }
}
