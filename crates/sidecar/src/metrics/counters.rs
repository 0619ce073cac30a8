//! runlens's own work as Prometheus counters: spans and runs by name and status, and span
//! durations by name. Fed by the writer after each commit, so a count is what is stored,
//! each span and run once (a resend or a second end adds nothing).
//!
//! Names come from agents and are unbounded; the first [`MAX_NAMES`] seen get their own
//! series, every later one is counted under `other`, so a scrape stays small whatever the
//! agents do.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::store::{CommitObserver, Finished};

/// Span or run names with a series of their own; later names are counted as `other`.
pub const MAX_NAMES: usize = 200;

/// The label value standing for every name beyond [`MAX_NAMES`].
pub const OTHER: &str = "other";

/// Labels of a counter: `name` and `status`.
pub type NameStatus = Vec<(&'static str, String)>;

/// Span-duration histograms by `name`.
pub type Durations = Family<Vec<(&'static str, String)>, Histogram, fn() -> Histogram>;

/// Span-duration buckets, seconds: 5 ms doubling to about 82 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The counters, shared by the writer (which feeds them) and the exposition.
#[derive(Debug)]
pub struct WorkCounters {
    /// `runlens_spans_total{name, status}`.
    pub spans: Family<NameStatus, Counter>,
    /// `runlens_runs_total{name, status}`.
    pub runs: Family<NameStatus, Counter>,
    /// `runlens_span_duration_seconds{name}`.
    pub durations: Durations,
    /// `runlens_pruned_total{what}`: rows retention deleted.
    pub pruned: Family<Vec<(&'static str, String)>, Counter>,
    /// `runlens_sample_matches_total{result}`: boundaries given a sample (`matched`) or
    /// stored without one (`none`).
    pub sample_matches: Family<Vec<(&'static str, &'static str)>, Counter>,
    span_names: Mutex<HashSet<String>>,
    run_names: Mutex<HashSet<String>>,
}

impl Default for WorkCounters {
    fn default() -> Self {
        Self {
            spans: Family::default(),
            runs: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            pruned: Family::default(),
            sample_matches: Family::default(),
            span_names: Mutex::default(),
            run_names: Mutex::default(),
        }
    }
}

impl WorkCounters {
    /// Counts what a retention step deleted.
    pub fn note_pruned(&self, report: &crate::store::retention::PruneReport) {
        for (what, n) in [
            ("runs", report.runs),
            ("spans", report.spans),
            ("events", report.events),
            ("samples_thinned", report.samples_thinned),
            ("samples_expired", report.samples_expired),
        ] {
            if n > 0 {
                self.pruned
                    .get_or_create(&vec![("what", what.to_owned())])
                    .inc_by(n);
            }
        }
    }
}

/// `name` if it has (or gets) its own series, else [`OTHER`].
fn bounded(names: &Mutex<HashSet<String>>, name: &str) -> String {
    let mut known = names.lock().unwrap_or_else(PoisonError::into_inner);
    if known.contains(name) {
        return name.to_owned();
    }
    if known.len() < MAX_NAMES {
        known.insert(name.to_owned());
        return name.to_owned();
    }
    OTHER.to_owned()
}

impl CommitObserver for WorkCounters {
    fn committed(&self, finished: &Finished) {
        for (result, n) in [
            ("matched", finished.matched),
            ("none", finished.unmatched),
            ("skewed", finished.skewed),
        ] {
            if n > 0 {
                self.sample_matches
                    .get_or_create(&vec![("result", result)])
                    .inc_by(n);
            }
        }
        for span in &finished.spans {
            let name = bounded(&self.span_names, &span.name);
            self.spans
                .get_or_create(&vec![
                    ("name", name.clone()),
                    ("status", span.status.as_str().to_owned()),
                ])
                .inc();
            self.durations
                .get_or_create(&vec![("name", name)])
                .observe(span.duration_ns.max(0) as f64 / 1e9);
        }
        for run in &finished.runs {
            let name = bounded(&self.run_names, &run.name);
            self.runs
                .get_or_create(&vec![
                    ("name", name),
                    ("status", run.status.as_str().to_owned()),
                ])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use crate::store::{FinishedRun, FinishedSpan};

    fn span(name: &str, status: Status) -> FinishedSpan {
        FinishedSpan {
            name: name.into(),
            status,
            duration_ns: 250_000_000,
        }
    }

    #[test]
    fn spans_and_runs_are_counted_by_name_and_status_and_names_are_bounded() {
        let counters = WorkCounters::default();
        let mut finished = Finished::default();
        finished.spans.push(span("llm_call", Status::Ok));
        finished.spans.push(span("llm_call", Status::Failed));
        finished.spans.push(span("llm_call", Status::Ok));
        for i in 0..MAX_NAMES + 5 {
            finished.spans.push(span(&format!("step-{i}"), Status::Ok));
        }
        finished.runs.push(FinishedRun {
            run_id: "r".into(),
            name: "task".into(),
            status: Status::Ok,
        });
        counters.committed(&finished);
        let count = |name: &str, status: &str| {
            counters
                .spans
                .get_or_create(&vec![("name", name.into()), ("status", status.into())])
                .get()
        };
        assert_eq!(count("llm_call", "ok"), 2);
        assert_eq!(count("llm_call", "failed"), 1);
        // llm_call took one of the named series: 6 of the step names are beyond the bound.
        assert_eq!(count(OTHER, "ok"), 6);
        assert_eq!(
            counters
                .runs
                .get_or_create(&vec![("name", "task".into()), ("status", "ok".into())])
                .get(),
            1
        );
    }
}
