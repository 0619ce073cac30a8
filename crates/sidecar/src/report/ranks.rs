//! Exact ranks without sorting per figure: what lets the report take Spearman's ρ of every
//! step against every resource over millions of spans.
//!
//! A resource's values are ranked once over the snapshots ([`DenseRanks`]: equal values
//! share a rank, ranks keep the values' order). A step's spans then get their average
//! ranks for that resource by counting spans per dense rank, in time linear in the spans
//! and the distinct values; their duration ranks come from one sort of the step's
//! durations ([`StepOrder`]), reused for every resource, its percentiles and the pressure
//! comparison. Ranks are kept doubled (`2 × average rank`, always a whole number), and ρ is
//! Pearson's r of those ranks, computed in one pass: the mean of n average ranks is
//! always (n + 1) / 2. `tests.rs` holds the results equal to a naive computation.

use super::load::SpanFigures;

/// The value of a dense rank that has no value (the snapshot lacks the figure).
const NONE: u32 = u32::MAX;

/// One resource's values over the snapshots as dense ranks.
pub struct DenseRanks {
    /// Per snapshot position: the rank of its value among the distinct values, or
    /// [`NONE`].
    rank: Vec<u32>,
    /// The distinct values in ascending order: rank → value.
    values: Vec<f64>,
}

impl DenseRanks {
    /// Ranks `values` (one per snapshot position; non-finite values count as missing).
    pub fn new(values: impl Iterator<Item = Option<f64>>) -> Self {
        let mut order: Vec<(f64, u32)> = values
            .enumerate()
            .filter_map(|(i, v)| Some((v.filter(|v| v.is_finite())?, u32::try_from(i).ok()?)))
            .collect();
        let snapshots = order
            .iter()
            .map(|&(_, i)| i as usize + 1)
            .max()
            .unwrap_or(0);
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut rank = vec![NONE; snapshots];
        let mut distinct: Vec<f64> = Vec::new();
        for (value, i) in order {
            // `==`, not the sort's order: -0.0 and 0.0 are one value, as for any comparison.
            if distinct.last() != Some(&value) {
                distinct.push(value);
            }
            rank[i as usize] = u32::try_from(distinct.len() - 1).unwrap_or(NONE);
        }
        Self {
            rank,
            values: distinct,
        }
    }

    /// Whether no snapshot has the figure.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The dense rank of a span's start snapshot's value, if it has one.
    fn of(&self, span: &SpanFigures) -> Option<u32> {
        let r = *self.rank.get(span.snapshot()? as usize)?;
        (r != NONE).then_some(r)
    }
}

/// One step's spans in duration order, and their doubled duration ranks.
pub struct StepOrder {
    /// (duration, position in the step's span list), by duration.
    order: Vec<(f64, u32)>,
    /// Doubled average duration rank among all the step's spans, by position: ρ against a
    /// figure every span has (the usual case) needs no other.
    all: Vec<u32>,
}

impl StepOrder {
    /// Sorts the step's durations once.
    pub fn new(spans: &[SpanFigures]) -> Self {
        let mut order: Vec<(f64, u32)> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.duration_ms, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut step = Self {
            order,
            all: Vec::new(),
        };
        let mut all = Vec::new();
        step.doubled_ranks(|_| true, &mut all);
        step.all = all;
        step
    }

    /// Nearest-rank percentiles `qs` of all the step's durations (`None` without spans).
    pub fn percentiles<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let n = self.order.len();
        qs.map(|q| {
            let i = ((n as f64 * q).ceil() as usize).saturating_sub(1);
            self.order.get(i.min(n.saturating_sub(1))).map(|&(d, _)| d)
        })
    }

    /// Nearest-rank percentiles `qs` of the durations of the spans where `split` is true,
    /// and of the others, in two passes over the order.
    pub fn split_percentiles<const N: usize>(
        &self,
        qs: [f64; N],
        split: &[bool],
    ) -> [[Option<f64>; N]; 2] {
        let kept = self
            .order
            .iter()
            .filter(|(_, i)| split[*i as usize])
            .count();
        let sizes = [kept, self.order.len() - kept];
        let wanted = sizes.map(|n| {
            qs.map(|q| {
                ((n as f64 * q).ceil() as usize)
                    .saturating_sub(1)
                    .min(n.max(1) - 1)
            })
        });
        let mut found = [[None; N]; 2];
        let mut seen = [0usize; 2];
        for &(duration, i) in &self.order {
            let side = usize::from(!split[i as usize]);
            for (slot, &w) in found[side].iter_mut().zip(&wanted[side]) {
                if w == seen[side] {
                    *slot = Some(duration);
                }
            }
            seen[side] += 1;
        }
        found
    }

    /// Doubled average duration ranks among the spans `member` keeps, by position (0 for
    /// the others).
    fn doubled_ranks(&self, member: impl Fn(usize) -> bool, into: &mut Vec<u32>) {
        into.clear();
        into.resize(self.order.len(), 0);
        let mut below = 0u32;
        let mut start = 0;
        while start < self.order.len() {
            let value = self.order[start].0;
            let end = self.order[start..]
                .iter()
                .position(|(d, _)| *d != value)
                .map_or(self.order.len(), |n| start + n);
            let ties = &self.order[start..end];
            let kept = ties.iter().filter(|(_, i)| member(*i as usize)).count() as u32;
            for &(_, i) in ties {
                if member(i as usize) {
                    into[i as usize] = 2 * below + kept + 1;
                }
            }
            below += kept;
            start = end;
        }
    }
}

/// What one step against one resource gives.
pub struct Against {
    /// Spans whose start snapshot has the figure.
    pub n: usize,
    /// Nearest-rank median of the figure over those spans.
    pub median: Option<f64>,
    /// Spearman's ρ of the figure with duration (`None` under 3 spans or without variance).
    pub rho: Option<f64>,
}

/// Reused buffers, so that a step against seven resources allocates once.
#[derive(Default)]
pub struct Scratch {
    /// Per span position: the dense rank of its start snapshot's figure, or [`NONE`].
    figure: Vec<u32>,
    /// Doubled duration ranks among the spans that have the figure.
    durations: Vec<u32>,
    /// Per dense rank: spans, then their doubled average rank.
    counts: Vec<u64>,
}

/// The step's spans against one resource: their count, the figure's median, and ρ.
pub fn against(
    spans: &[SpanFigures],
    order: &StepOrder,
    resource: &DenseRanks,
    scratch: &mut Scratch,
) -> Against {
    let Scratch {
        figure,
        durations,
        counts,
    } = scratch;
    // The one pass that looks snapshots up (at random); the rest reads in sequence.
    figure.clear();
    figure.extend(spans.iter().map(|s| resource.of(s).unwrap_or(NONE)));
    counts.clear();
    counts.resize(resource.values.len(), 0);
    for &r in figure.iter().filter(|&&r| r != NONE) {
        counts[r as usize] += 1;
    }
    let n: u64 = counts.iter().sum();
    // The median's position (nearest rank), then counts → doubled average ranks.
    let median_at = (n as f64 * 0.5).ceil().max(1.0) as u64;
    let (mut below, mut median) = (0u64, None);
    for (rank, count) in counts.iter_mut().enumerate() {
        let c = *count;
        if median.is_none() && c > 0 && below + c >= median_at {
            median = Some(resource.values[rank]);
        }
        *count = 2 * below + c + 1;
        below += c;
    }
    let rho = if n < 3 {
        None
    } else {
        let duration_ranks = if n as usize == spans.len() {
            &order.all
        } else {
            order.doubled_ranks(|i| figure[i] != NONE, durations);
            &*durations
        };
        let mean = (n + 1) as f64; // doubled
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (&r, &d) in figure.iter().zip(duration_ranks) {
            if r != NONE {
                let (x, y) = (counts[r as usize] as f64 - mean, f64::from(d) - mean);
                sxy += x * y;
                sxx += x * x;
                syy += y * y;
            }
        }
        (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
    };
    Against {
        n: n as usize,
        median,
        rho,
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{percentile, spearman};
    use super::*;

    fn spans(durations: &[f64]) -> Vec<SpanFigures> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &d)| SpanFigures::new(d, false, Some(i as u32)))
            .collect()
    }

    #[test]
    fn rho_and_median_equal_sorting_and_ranking_directly_with_ties_and_gaps() {
        // Durations and figures with ties; the figure missing at some snapshots.
        let durations = [5.0, 3.0, 3.0, 9.0, 1.0, 5.0, 7.0, 3.0, 2.0, 8.0];
        let figure = [
            Some(0.5),
            Some(0.2),
            None,
            Some(0.9),
            Some(0.2),
            Some(0.5),
            Some(f64::NAN),
            Some(0.1),
            Some(0.7),
            Some(0.9),
        ];
        let s = spans(&durations);
        let ranks = DenseRanks::new(figure.iter().copied());
        let got = against(&s, &StepOrder::new(&s), &ranks, &mut Scratch::default());
        let (x, y): (Vec<f64>, Vec<f64>) = figure
            .iter()
            .zip(durations)
            .filter_map(|(f, d)| Some((f.filter(|f| f.is_finite())?, d)))
            .unzip();
        assert_eq!(got.n, x.len());
        assert_eq!(got.median, percentile(&mut x.clone(), 0.5));
        let want = spearman(&x, &y).unwrap();
        assert!(
            (got.rho.unwrap() - want).abs() < 1e-12,
            "{:?} {want}",
            got.rho
        );
    }

    #[test]
    fn percentiles_of_each_side_of_a_split_are_those_of_its_own_sorted_durations() {
        let durations: Vec<f64> = (0..101).map(|i| f64::from((i * 37) % 101)).collect();
        let order = StepOrder::new(&spans(&durations));
        let odd: Vec<bool> = (0..durations.len()).map(|i| i % 2 == 1).collect();
        let side = |want: bool| -> Vec<Option<f64>> {
            let mut kept: Vec<f64> = durations
                .iter()
                .zip(&odd)
                .filter(|(_, o)| **o == want)
                .map(|(d, _)| *d)
                .collect();
            [0.5, 0.95].map(|q| percentile(&mut kept, q)).to_vec()
        };
        let [odd_side, even_side] = order.split_percentiles([0.5, 0.95], &odd);
        assert_eq!(
            (odd_side.to_vec(), even_side.to_vec()),
            (side(true), side(false))
        );
        let everything = order.split_percentiles([0.5], &vec![true; durations.len()]);
        assert_eq!(everything, [order.percentiles([0.5]), [None]]);
        assert_eq!(order.percentiles([0.5]), [Some(50.0)]);
    }

    #[test]
    fn no_variance_no_rho() {
        let s = spans(&[1.0, 2.0, 3.0, 4.0]);
        let flat = DenseRanks::new([Some(1.0); 4].into_iter());
        let got = against(&s, &StepOrder::new(&s), &flat, &mut Scratch::default());
        assert_eq!((got.n, got.median, got.rho), (4, Some(1.0), None));
    }
}
