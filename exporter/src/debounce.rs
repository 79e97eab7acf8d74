//! Coalescing bursts of changes: publish after a quiet window, but never hold a change longer
//! than a maximum delay.
//!
//! A rollout touches a Service's slices dozens of times in a few seconds; publishing each
//! intermediate state would upload a burst of objects that the syncers then chase. The quiet
//! window (`DEBOUNCE`) waits for the burst to end; the maximum delay (`MAX_DELAY`) bounds how
//! stale the bucket can get while changes keep coming.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    /// The first change not yet published.
    first: Option<Instant>,
    /// The latest change.
    last: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration, max_delay: Duration) -> Debounce {
        Debounce {
            quiet,
            max_delay,
            first: None,
            last: None,
        }
    }

    /// Records a change at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending changes are due: the quiet window after the last change, or the
    /// maximum delay after the first, whichever comes first. `None` with nothing pending.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self.first?;
        let last = self.last?;
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// When the first change not yet published arrived.
    pub fn first_change(&self) -> Option<Instant> {
        self.first
    }

    /// Whether changes are waiting to be published.
    pub fn is_pending(&self) -> bool {
        self.first.is_some()
    }

    /// Forgets the pending changes: they are being published.
    pub fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_pending_no_deadline() {
        let d = Debounce::new(S, 10 * S);
        assert_eq!(d.deadline(), None);
        assert!(!d.is_pending());
    }

    #[test]
    fn a_single_change_waits_for_the_quiet_window() {
        let t0 = Instant::now();
        let mut d = Debounce::new(S, 10 * S);
        d.changed(t0);
        assert_eq!(d.deadline(), Some(t0 + S));
    }

    #[test]
    fn each_change_pushes_the_deadline_until_the_maximum_delay() {
        let t0 = Instant::now();
        let mut d = Debounce::new(2 * S, 5 * S);
        d.changed(t0);
        d.changed(t0 + S);
        assert_eq!(d.deadline(), Some(t0 + 3 * S));
        d.changed(t0 + 2 * S);
        assert_eq!(d.deadline(), Some(t0 + 4 * S));
        d.changed(t0 + 4 * S);
        assert_eq!(
            d.deadline(),
            Some(t0 + 5 * S),
            "capped by MAX_DELAY after the first"
        );
    }

    #[test]
    fn clear_starts_a_new_burst() {
        let t0 = Instant::now();
        let mut d = Debounce::new(S, 3 * S);
        d.changed(t0);
        d.clear();
        assert_eq!(d.deadline(), None);
        d.changed(t0 + 10 * S);
        assert_eq!(d.deadline(), Some(t0 + 11 * S));
    }
}
