//! The stream task's timer: one wake-up at the deadline.
//!
//! tokio's timer wheel keeps a deadline more than 64 ms away in a coarser slot: the
//! runtime wakes at the start of that slot, moves the timer to a finer level and sleeps
//! again, so each 500 ms linger tick cost the agent's process two wake-ups (`strace` of the
//! client's worker during `runlens bench agent --rate 10`: a wake-up 9–50 ms before each
//! tick). On Linux a `timerfd` registered with the runtime's reactor fires once, at the
//! deadline. Elsewhere, or where the runtime has no I/O driver, tokio's timer does.

use std::time::Instant;

/// Sleeps until a deadline; reused for every sleep of one stream task.
pub struct Timer {
    #[cfg(target_os = "linux")]
    precise: Option<linux::TimerFd>,
}

impl Timer {
    /// A timer for the current runtime (a `timerfd` on Linux when one can be made).
    pub fn new() -> Timer {
        Timer {
            #[cfg(target_os = "linux")]
            precise: linux::TimerFd::new()
                .inspect_err(|e| tracing::debug!(error = %e, "no timerfd; tokio's timer is used"))
                .ok(),
        }
    }

    /// Sleeps until `at` (returns at once if it has passed). Cancel-safe: dropped
    /// unfinished, the next call sets the deadline again.
    pub async fn sleep_until(&mut self, at: Instant) {
        let wait = at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.precise {
            match fd.sleep(wait).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "timerfd failed; tokio's timer is used");
                    self.precise = None;
                }
            }
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// Sleeps until `at` with `timer`, or forever without a deadline.
pub async fn sleep_until_some(timer: &mut Timer, at: Option<Instant>) {
    match at {
        Some(at) => timer.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::unix::AsyncFd;

    /// A one-shot monotonic `timerfd` watched by the runtime's reactor.
    pub struct TimerFd(AsyncFd<OwnedFd>);

    impl TimerFd {
        // The one `unsafe` of the crate: registering a descriptor with the reactor.
        #[allow(unsafe_code)]
        pub fn new() -> std::io::Result<TimerFd> {
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and is the same
            // descriptor until the `AsyncFd` is dropped.
            let registered = unsafe { AsyncFd::register(fd) };
            registered.map(TimerFd).map_err(std::io::Error::from)
        }

        /// Arms the timer `wait` from now (replacing any earlier deadline and clearing its
        /// expirations) and waits until it fires.
        pub async fn sleep(&self, wait: Duration) -> std::io::Result<()> {
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let value = Timespec::try_from(wait)
                .map_err(|_| std::io::Error::other("deadline out of range"))?;
            // A zero value would disarm the timer instead.
            let value = if value == zero {
                Timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                }
            } else {
                value
            };
            let spec = Itimerspec {
                it_interval: zero,
                it_value: value,
            };
            timerfd_settime(self.0.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
            loop {
                let mut ready = self.0.readable().await?;
                let mut expirations = [0u8; 8];
                match ready.try_io(|fd| {
                    rustix::io::read(fd.get_ref(), &mut expirations).map_err(Into::into)
                }) {
                    Ok(read) => return read.map(|_| ()),
                    // Readiness left over from an earlier deadline: wait for this one.
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sleeps_until_the_deadline_and_a_cancelled_sleep_leaves_nothing_behind() {
        let mut timer = Timer::new();
        #[cfg(target_os = "linux")]
        assert!(timer.precise.is_some(), "a timerfd on Linux");
        let at = Instant::now() + Duration::from_millis(30);
        timer.sleep_until(at).await;
        assert!(Instant::now() >= at);

        // A sleep dropped unfinished, whose deadline then passes unread ...
        let soon = Instant::now() + Duration::from_millis(5);
        let cut = tokio::time::timeout(Duration::from_millis(1), timer.sleep_until(soon)).await;
        assert!(cut.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ... must not end the next one early.
        let at = Instant::now() + Duration::from_millis(50);
        timer.sleep_until(at).await;
        assert!(
            Instant::now() >= at,
            "an old expiration ended the sleep early"
        );
    }
}
