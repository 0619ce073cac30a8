//! How far each client's clock is from the sidecar's, estimated from what arrives, and
//! what that means for matching its boundaries to samples.
//!
//! Every boundary is matched to the sample nearest its own timestamp, so a sender whose
//! clock is off by more than the matching window would be shown another moment's machine
//! (clock behind) or none (clock ahead). Agents in the sidecar's pod share its kernel
//! clock; agents that send from other nodes or from a VM with a drifting clock do not.
//!
//! **Method.** A boundary cannot be recorded after the message carrying it arrived. With
//! the client's clock `θ` ahead of the sidecar's, a boundary stamped `t` by the client and
//! arriving at sidecar time `a` after a delivery delay `d ≥ 0` gives `t − a = θ − d`. So
//! the largest *lead* `t − a` over recent messages is an estimate `θ̂` with
//! `θ̂ ≤ θ ≤ θ̂ + d_min`, where `d_min` is the smallest delivery delay among them: a few
//! milliseconds for a client that sends as it works, up to its batching interval for one
//! that exports one span every few seconds (an OpenTelemetry batch processor waits up to
//! 5 s). A clock ahead is therefore certain once seen; a clock behind cannot be told from
//! a slow delivery by one message, so the estimate is trusted only from messages that
//! arrived in [`CONFIDENT_ARRIVALS`] different seconds spanning [`CONFIDENT_SPAN_S`]
//! seconds (a burst of buffered messages replayed after a restart is one arrival, not a
//! clock). The estimate remembers [`MEMORY_S`] seconds of arrivals: a clock stepped
//! forward is seen at once, one stepped back within that time.
//!
//! A clock ahead by more than the matching window is skewed. A clock behind is called so
//! only when it is behind by more than [`BEHIND_ALLOWANCE_NS`] too: a client that batches
//! (an OpenTelemetry batch processor exports every 5 s, a runlens client whose sidecar is
//! saturated holds a backlog) delivers late by that much, which a clock a few seconds
//! behind cannot be told from. Such a clock is matched on its own times.
//!
//! **What is matched.** By default boundaries are matched on the client's own timestamps,
//! never corrected silently; but once a client's estimate is confidently beyond the
//! matching window, its own timestamps point at a moment that is not the event's, so its
//! boundaries get no sample at all (counted as `skewed`) rather than another moment's. With
//! `--clock-skew-correction` they are matched at their own time minus the estimate instead;
//! the stored timestamps stay as the client sent them, and `clients.clock_offset_ns` says
//! by how much they were shifted for matching.

use std::collections::{HashMap, VecDeque};

/// Arrivals (distinct seconds) needed before an estimate is trusted.
pub const CONFIDENT_ARRIVALS: usize = 5;
/// Seconds those arrivals must span.
pub const CONFIDENT_SPAN_S: i64 = 4;
/// How long an arrival counts toward the estimate, seconds.
pub const MEMORY_S: i64 = 120;
/// How far behind a clock must seem before it is called skewed, ns: more than a batching
/// sender delivers late (the OpenTelemetry batch processor's 5 s schedule, and a margin).
pub const BEHIND_ALLOWANCE_NS: i64 = 6_000_000_000;
/// Clients remembered; beyond it the one heard from longest ago is forgotten.
const MAX_CLIENTS: usize = 1024;
/// A stored estimate is rewritten when the new one differs by more than this (ns): the
/// `clients` row follows the estimate without a write per message.
const STORE_STEP_NS: i64 = 100_000_000;

/// How one client's boundaries are matched to samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matching {
    /// At their own timestamps (the clock is in step, or not known well enough yet).
    OwnTime,
    /// At their own timestamps minus `offset_ns` (`--clock-skew-correction`).
    Corrected {
        /// How far the client's clock runs ahead of the sidecar's, ns.
        offset_ns: i64,
    },
    /// Not at all: the clock is known to be off by more than the matching window.
    Skewed,
}

/// A client's clock as estimated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// How far the client's clock runs ahead of the sidecar's (negative: behind), ns; a
    /// lower bound, off by at most the smallest delivery delay of the arrivals behind it.
    pub offset_ns: i64,
    /// Whether enough arrivals back it to act on (see the module's notes).
    pub confident: bool,
}

/// What a row in `clients` should say about a client's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClock {
    /// The client.
    pub client_id: String,
    /// Its estimated offset, ns.
    pub offset_ns: i64,
    /// Whether the offset is beyond the matching window (its boundaries are skewed).
    pub skewed: bool,
}

/// One client's arrivals: per arrival second, the largest lead seen in it.
#[derive(Debug, Default)]
struct ClientClock {
    leads: VecDeque<(i64, i64)>,
    last_arrival_ns: i64,
    warned: bool,
    stored: Option<(i64, bool)>,
    name: String,
}

impl ClientClock {
    fn observe(&mut self, arrival_ns: i64, lead_ns: i64) {
        let second = arrival_ns.div_euclid(1_000_000_000);
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);
        match self.leads.back_mut() {
            Some((s, best)) if *s == second => *best = (*best).max(lead_ns),
            Some((s, _)) if *s > second => {} // out of order: counted with the newest
            _ => self.leads.push_back((second, lead_ns)),
        }
        while self
            .leads
            .front()
            .is_some_and(|&(s, _)| second - s > MEMORY_S)
        {
            self.leads.pop_front();
        }
    }

    fn estimate(&self) -> Option<Estimate> {
        let offset_ns = self.leads.iter().map(|&(_, lead)| lead).max()?;
        let span = match (self.leads.front(), self.leads.back()) {
            (Some(first), Some(last)) => last.0 - first.0,
            _ => 0,
        };
        Some(Estimate {
            offset_ns,
            confident: self.leads.len() >= CONFIDENT_ARRIVALS && span >= CONFIDENT_SPAN_S,
        })
    }
}

/// Every client's clock estimate, and what it means for matching.
#[derive(Debug, Default)]
pub struct ClockSkew {
    clients: HashMap<String, ClientClock>,
    correct: bool,
}

impl ClockSkew {
    /// Estimates clocks; with `correct`, skewed clients are matched on corrected times.
    pub fn new(correct: bool) -> Self {
        Self {
            clients: HashMap::new(),
            correct,
        }
    }

    /// Notes that a message from `client_id` (named `name`) arrived at `arrival_ns`
    /// carrying a boundary stamped `event_ns` by the client (`None`: it gave no time), and
    /// says how its boundaries are matched, given the matching `window_ns`.
    pub fn observe(
        &mut self,
        client_id: &str,
        name: &str,
        arrival_ns: i64,
        event_ns: Option<i64>,
        window_ns: i64,
    ) -> Matching {
        if !self.clients.contains_key(client_id) && self.clients.len() >= MAX_CLIENTS {
            self.forget_oldest();
        }
        let client = self.clients.entry(client_id.to_owned()).or_default();
        if client.name.is_empty() {
            name.clone_into(&mut client.name);
        }
        if let Some(event_ns) = event_ns {
            client.observe(arrival_ns, event_ns.saturating_sub(arrival_ns));
        }
        let Some(estimate) = client.estimate() else {
            return Matching::OwnTime;
        };
        if !estimate.confident || !beyond(estimate.offset_ns, window_ns) {
            return Matching::OwnTime;
        }
        if !client.warned {
            client.warned = true;
            warn_skewed(
                client_id,
                &client.name,
                estimate.offset_ns,
                window_ns,
                self.correct,
            );
        }
        if self.correct {
            Matching::Corrected {
                offset_ns: estimate.offset_ns,
            }
        } else {
            Matching::Skewed
        }
    }

    /// The row `clients` should get for `client_id` when its confident estimate moved
    /// since it was last stored (or first became confident); `None` otherwise.
    pub fn take_change(&mut self, client_id: &str, window_ns: i64) -> Option<StoredClock> {
        let client = self.clients.get_mut(client_id)?;
        let estimate = client.estimate().filter(|e| e.confident)?;
        let skewed = beyond(estimate.offset_ns, window_ns);
        let moved = match client.stored {
            None => true,
            Some((offset, was_skewed)) => {
                was_skewed != skewed || offset.abs_diff(estimate.offset_ns) > STORE_STEP_NS as u64
            }
        };
        if !moved {
            return None;
        }
        client.stored = Some((estimate.offset_ns, skewed));
        Some(StoredClock {
            client_id: client_id.to_owned(),
            offset_ns: estimate.offset_ns,
            skewed,
        })
    }

    /// Confident estimates of the clients heard from since `since_ns`: (client id, name,
    /// offset ns).
    pub fn offsets(&self, since_ns: i64) -> Vec<(String, String, i64)> {
        let mut out: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last_arrival_ns >= since_ns)
            .filter_map(|(id, c)| {
                let e = c.estimate().filter(|e| e.confident)?;
                Some((id.clone(), c.name.clone(), e.offset_ns))
            })
            .collect();
        out.sort();
        out
    }

    /// The estimate for one client, if any message of it carried a time.
    #[cfg(test)]
    pub fn estimate(&self, client_id: &str) -> Option<Estimate> {
        self.clients.get(client_id)?.estimate()
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.last_arrival_ns)
            .map(|(id, _)| id.clone())
        {
            self.clients.remove(&oldest);
        }
    }
}

/// Whether a clock `offset_ns` ahead (negative: behind) is too far off to match on its own
/// times, given the matching window.
pub fn beyond(offset_ns: i64, window_ns: i64) -> bool {
    if offset_ns >= 0 {
        offset_ns > window_ns
    } else {
        offset_ns.unsigned_abs() > window_ns.max(BEHIND_ALLOWANCE_NS).unsigned_abs()
    }
}

/// Said once per client, the first time its clock is known to be beyond the window.
fn warn_skewed(client_id: &str, name: &str, offset_ns: i64, window_ns: i64, correct: bool) {
    let offset = signed_seconds(offset_ns);
    let direction = if offset_ns > 0 { "ahead of" } else { "behind" };
    let window = signed_seconds(window_ns).trim_start_matches('+').to_owned();
    if correct {
        tracing::warn!(client_id, name, offset = %offset, window = %window,
            "this client's clock runs {direction} the sidecar's by about {offset}, beyond the \
             {window} matching window; its boundaries are matched at their time corrected by \
             that offset (--clock-skew-correction); set its clock (NTP) to match");
    } else {
        tracing::warn!(client_id, name, offset = %offset, window = %window,
            "this client's clock runs {direction} the sidecar's by about {offset}, beyond the \
             {window} matching window, so its boundaries get no resource snapshots; set its \
             clock (NTP) to match, or start the sidecar with --clock-skew-correction to \
             match them at corrected times");
    }
}

/// `+30.0s`, `-1.2s`, `+3600.0s`.
pub fn signed_seconds(ns: i64) -> String {
    format!("{:+.1}s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const WINDOW: i64 = 2 * S;

    /// A client sending one boundary per second for `seconds`, its clock `offset` ahead,
    /// each arriving `delay` after it happened; the last matching decision.
    fn send(skew: &mut ClockSkew, offset: i64, delay: i64, seconds: i64) -> Matching {
        let mut last = Matching::OwnTime;
        for i in 0..seconds {
            let happened = 1_000 * S + i * S;
            last = skew.observe(
                "c",
                "agent",
                happened + delay,
                Some(happened + offset),
                WINDOW,
            );
        }
        last
    }

    #[test]
    fn a_client_in_step_is_matched_on_its_own_time_and_estimated_near_zero() {
        let mut skew = ClockSkew::new(false);
        assert_eq!(send(&mut skew, 0, S / 100, 10), Matching::OwnTime);
        let e = skew.estimate("c").unwrap();
        assert!(e.confident);
        assert_eq!(
            e.offset_ns,
            -S / 100,
            "lower bound: minus the delivery delay"
        );
    }

    #[test]
    fn clocks_off_by_more_than_the_window_are_skewed_either_way() {
        for offset in [30 * S, -30 * S, 3600 * S] {
            let mut skew = ClockSkew::new(false);
            assert_eq!(
                send(&mut skew, offset, S / 50, 10),
                Matching::Skewed,
                "{offset}"
            );
            let e = skew.estimate("c").unwrap();
            assert!((e.offset_ns - offset).abs() <= S / 50, "{e:?} for {offset}");
        }
    }

    #[test]
    fn a_clock_a_few_seconds_behind_is_not_told_from_a_batching_sender() {
        let mut skew = ClockSkew::new(false);
        // Every span delivered 4 s late (a batch processor's schedule): matched on its times.
        assert_eq!(send(&mut skew, 0, 4 * S, 20), Matching::OwnTime);
        assert_eq!(skew.take_change("c", WINDOW).map(|c| c.skewed), Some(false));
        // Ahead by the same is certain: nothing delivers early.
        let mut skew = ClockSkew::new(false);
        assert_eq!(send(&mut skew, 4 * S, 0, 20), Matching::Skewed);
    }

    #[test]
    fn a_small_offset_inside_the_window_is_matched_as_usual() {
        let mut skew = ClockSkew::new(true);
        assert_eq!(send(&mut skew, S / 5, 0, 10), Matching::OwnTime);
        assert_eq!(skew.estimate("c").unwrap().offset_ns, S / 5);
    }

    #[test]
    fn correction_shifts_by_the_estimate() {
        let mut skew = ClockSkew::new(true);
        let got = send(&mut skew, -30 * S, 0, 10);
        assert_eq!(got, Matching::Corrected { offset_ns: -30 * S });
    }

    #[test]
    fn too_few_arrivals_are_not_trusted() {
        let mut skew = ClockSkew::new(false);
        // Three seconds of a clock 30 s behind: could be a replay of buffered messages.
        assert_eq!(send(&mut skew, -30 * S, 0, 3), Matching::OwnTime);
        assert!(!skew.estimate("c").unwrap().confident);
        // A replayed burst: many messages, one arrival second.
        let mut skew = ClockSkew::new(false);
        for i in 0..500 {
            skew.observe("c", "a", 2_000 * S, Some(1_990 * S + i), WINDOW);
        }
        assert!(!skew.estimate("c").unwrap().confident);
    }

    #[test]
    fn a_prompt_message_after_slow_ones_brings_the_estimate_back() {
        let mut skew = ClockSkew::new(false);
        // Batches that waited 3 s (a slow batch processor), then one sent at once.
        send(&mut skew, 0, 3 * S, 10);
        assert_eq!(
            skew.observe("c", "a", 1_020 * S, Some(1_020 * S), WINDOW),
            Matching::OwnTime
        );
        assert_eq!(skew.estimate("c").unwrap().offset_ns, 0);
    }

    #[test]
    fn the_stored_estimate_follows_in_steps() {
        let mut skew = ClockSkew::new(false);
        assert_eq!(skew.take_change("c", WINDOW), None, "unknown client");
        send(&mut skew, 30 * S, 0, 3);
        assert_eq!(skew.take_change("c", WINDOW), None, "not confident yet");
        send(&mut skew, 30 * S, 0, 10);
        let stored = skew.take_change("c", WINDOW).unwrap();
        assert_eq!((stored.offset_ns, stored.skewed), (30 * S, true));
        assert_eq!(skew.take_change("c", WINDOW), None, "unchanged");
        assert_eq!(skew.offsets(0), [("c".into(), "agent".into(), 30 * S)]);
        assert!(skew.offsets(i64::MAX).is_empty(), "not heard from lately");
    }

    #[test]
    fn messages_without_a_time_teach_nothing() {
        let mut skew = ClockSkew::new(false);
        assert_eq!(
            skew.observe("c", "a", 5 * S, None, WINDOW),
            Matching::OwnTime
        );
        assert_eq!(skew.estimate("c"), None);
    }

    #[test]
    fn signed_seconds_read_well() {
        assert_eq!(signed_seconds(30 * S), "+30.0s");
        assert_eq!(signed_seconds(-S / 5), "-0.2s");
    }
}
