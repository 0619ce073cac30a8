//! Figures a fresh sample need not read again: slow ones (load average, temperature, power,
//! clocks, error counts, the cgroup's reclaimable page cache) and counters whose rate needs
//! a longer span than the milliseconds between fresh samples (process CPU time).
//!
//! At agent rates the sidecar takes a fresh sample at each run's end, often every few
//! milliseconds. What changes that fast (GPU and host memory, GPU utilization, the cgroup's
//! memory use, resident memory) is read every time; the figures here are read at most every
//! [`SLOW_FIGURES_EVERY`], and a sample in between carries the last reading. The periodic
//! sample, a second apart by default, always finds them due.
//!
//! A sampler that samples faster while work is in flight (the sidecar's active interval)
//! sets a longer period with [`crate::Sampler::set_slow_every`]: its idle cadence, so the
//! slow figures are read as often as when idle however fast the fast ones are.

use std::time::{Duration, Instant};

/// How long a slow figure's reading serves later samples: the shortest span over which
/// CPU utilization is measured (the same as `sysinfo`'s minimum refresh interval).
pub const SLOW_FIGURES_EVERY: Duration = Duration::from_millis(200);

/// How long a reading of what changes only on reconfiguration serves (cgroup limits; a
/// GPU's name, UUID, power limit and MIG mode): thirty periodic samples at the default
/// interval, and no more often however many fresh samples come in between.
pub(crate) const RARE_FIGURES_EVERY: Duration = Duration::from_secs(30);

/// A reading that serves every sample for a while.
#[derive(Debug, Clone)]
pub(crate) struct Every<T> {
    period: Duration,
    last: Option<(T, Instant)>,
}

impl<T: Clone> Every<T> {
    /// Readings serve for [`SLOW_FIGURES_EVERY`].
    pub(crate) fn new() -> Self {
        Self::with_period(SLOW_FIGURES_EVERY)
    }

    /// Readings serve for `period` (zero: every call reads).
    pub(crate) fn with_period(period: Duration) -> Self {
        Self { period, last: None }
    }

    /// Readings serve for `period` from now on (the current one too).
    pub(crate) fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    /// The last reading while it is younger than the period, else a new one from `read`.
    pub(crate) fn get(&mut self, now: Instant, read: impl FnOnce() -> T) -> T {
        match &self.last {
            Some((value, at)) if now.saturating_duration_since(*at) < self.period => value.clone(),
            _ => {
                let value = read();
                self.last = Some((value.clone(), now));
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_serves_until_the_period_ends() {
        let mut reads = 0;
        let mut every = Every::with_period(Duration::from_millis(200));
        let t0 = Instant::now();
        let mut read = |at| {
            every.get(at, || {
                reads += 1;
                reads
            })
        };
        assert_eq!(read(t0), 1);
        assert_eq!(read(t0 + Duration::from_millis(199)), 1, "carried");
        assert_eq!(read(t0 + Duration::from_millis(200)), 2, "due again");
        let mut always = Every::with_period(Duration::ZERO);
        assert_eq!(always.get(t0, || 7), 7);
        assert_eq!(always.get(t0, || 8), 8);
    }
}
