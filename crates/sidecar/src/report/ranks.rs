//! Exact percentiles and Spearman's ρ of every step against every resource from one pass
//! over the step's spans in duration order, in memory bounded by the snapshots, not the
//! spans: what lets the report take ten million spans in a small container.
//!
//! ρ is Pearson's r of average ranks. Ranks are kept doubled (`2 × average rank`, always a
//! whole number) and the sums are exact integers. The spans arrive in duration order
//! (`spill.rs`), so each one's duration rank is known as it passes (equal durations are
//! gathered first: they share a rank). What a span adds is kept per snapshot, not per span:
//! the spans that started at snapshot p and the sum of their duration ranks. A resource's
//! ranks are then one walk over its snapshots in the order of its value
//! ([`ResourceOrder`]): the spans of equal values share a rank, and
//! Σ rank(duration) × rank(figure) is Σ over values of rank(value) × the sum of the
//! duration ranks of its spans. The duration ranks for a resource are among the spans that
//! have its figure; resources whose figures are present at the same snapshots share them
//! ([`Classes`]). `tests.rs` holds the results equal to a naive computation.

/// One resource's snapshots in the order of its value, those without it left out.
pub struct ResourceOrder {
    /// Snapshot positions, by value.
    order: Vec<u32>,
    /// Bit k set: `order[k]`'s value differs from `order[k - 1]`'s (a new value starts).
    starts: Vec<u64>,
}

impl ResourceOrder {
    /// Orders `values` (one per snapshot position; non-finite values count as missing),
    /// with no copy of them: only the positions are sorted.
    pub fn new(values: &[f64]) -> Self {
        let mut order: Vec<u32> = (0..values.len())
            .filter(|&i| values[i].is_finite())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        let value = |p: u32| values[p as usize];
        order.sort_unstable_by(|&a, &b| value(a).total_cmp(&value(b)));
        let mut starts = vec![0u64; order.len().div_ceil(64)];
        for k in 0..order.len() {
            // `!=`, not the sort's order: -0.0 and 0.0 are one value, as for any comparison.
            if k == 0 || value(order[k]) != value(order[k - 1]) {
                starts[k / 64] |= 1 << (k % 64);
            }
        }
        Self { order, starts }
    }

    /// Whether no snapshot has the figure.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn starts_value(&self, k: usize) -> bool {
        self.starts[k / 64] >> (k % 64) & 1 == 1
    }
}

/// Which resources are present at the same snapshots (and so rank durations among the
/// same spans): one class per distinct pattern.
pub struct Classes {
    /// Per resource: its class, `None` when no snapshot has it.
    of: Vec<Option<usize>>,
    /// Per class: the presence bit of one of its resources.
    bits: Vec<u8>,
}

impl Classes {
    /// From each snapshot's presence bits (bit r: resource r has a figure) and whether
    /// each resource has any figure at all.
    pub fn new(presence: &[u8], present: &[bool]) -> Self {
        let mut seen = [false; 256];
        for &p in presence {
            seen[usize::from(p)] = true;
        }
        let masks: Vec<u8> = (0..=255u8).filter(|&m| seen[usize::from(m)]).collect();
        let mut of = Vec::with_capacity(present.len());
        let mut bits: Vec<u8> = Vec::new();
        for (r, &here) in present.iter().enumerate() {
            let bit = 1u8 << r;
            let class = here.then(|| {
                let same = |other: u8| masks.iter().all(|m| (m & bit == 0) == (m & other == 0));
                bits.iter().position(|&b| same(b)).unwrap_or_else(|| {
                    bits.push(bit);
                    bits.len() - 1
                })
            });
            of.push(class);
        }
        Self { of, bits }
    }

    /// Resource `r`'s class.
    pub fn of(&self, r: usize) -> Option<usize> {
        self.of.get(r).copied().flatten()
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

/// Additions to the per-snapshot cells are gathered this many at a time, then applied
/// grouped by where they land: spans arrive in duration order, their snapshots at random,
/// and adding each at once missed the cache nearly every time (a million snapshots' cells
/// are 16 MB).
const PENDING: usize = 1 << 15;

/// Cells are applied in this many groups, each a contiguous range of cells.
const GROUPS: usize = 256;

/// One addition to a cell.
#[derive(Clone, Copy, Default)]
struct Addition {
    /// Index into the cells.
    at: usize,
    /// What to add.
    value: u64,
}

/// One step's duration ranks, gathered per snapshot as its spans pass in duration order.
pub struct StepRanks {
    /// Per class: the presence bit that tells whether a snapshot belongs.
    class_bits: Vec<u8>,
    /// Per snapshot position, `1 + classes` words side by side: the step's spans that
    /// started there, then per class the sum of their doubled duration ranks among the
    /// class's spans.
    cells: Vec<u64>,
    /// Additions not yet applied, and room to group them.
    pending: Vec<Addition>,
    grouped: Vec<Addition>,
    /// Cell index >> this = its group.
    group_shift: u32,
    /// Per class: spans ranked so far.
    below: Vec<u64>,
    /// Per class: Σ doubled duration rank².
    squares: Vec<u128>,
    /// The snapshot positions of the spans of the duration being gathered.
    tie: Vec<u32>,
    /// That duration.
    tie_duration: Option<f64>,
}

impl StepRanks {
    /// For `snapshots` snapshot positions and the classes' presence bits.
    pub fn new(snapshots: usize, classes: &Classes) -> Self {
        let width = 1 + classes.bits.len();
        let cells = snapshots * width;
        let bits = usize::BITS - cells.leading_zeros();
        Self {
            class_bits: classes.bits.clone(),
            cells: vec![0; cells],
            pending: Vec::with_capacity(PENDING),
            grouped: Vec::new(),
            group_shift: bits.saturating_sub(GROUPS.trailing_zeros()),
            below: vec![0; classes.bits.len()],
            squares: vec![0; classes.bits.len()],
            tie: Vec::new(),
            tie_duration: None,
        }
    }

    fn width(&self) -> usize {
        1 + self.class_bits.len()
    }

    /// Forgets the step before (keeps the memory).
    pub fn reset(&mut self) {
        self.cells.iter_mut().for_each(|c| *c = 0);
        self.pending.clear();
        self.below.iter_mut().for_each(|b| *b = 0);
        self.squares.iter_mut().for_each(|s| *s = 0);
        self.tie.clear();
        self.tie_duration = None;
    }

    /// The next span (durations never decrease) that started at snapshot `position`.
    pub fn push(&mut self, presence: &[u8], duration_ms: f64, position: u32) {
        if self.tie_duration != Some(duration_ms) {
            self.rank_tie(presence);
            self.tie_duration = Some(duration_ms);
        }
        self.tie.push(position);
    }

    fn add(&mut self, at: usize, value: u64) {
        self.pending.push(Addition { at, value });
        if self.pending.len() >= PENDING {
            self.apply();
        }
    }

    /// Applies the pending additions, a group of neighbouring cells at a time (a counting
    /// sort by group).
    fn apply(&mut self) {
        let mut starts = [0usize; GROUPS + 1];
        for a in &self.pending {
            starts[(a.at >> self.group_shift) + 1] += 1;
        }
        for g in 0..GROUPS {
            starts[g + 1] += starts[g];
        }
        self.grouped.clear();
        self.grouped.resize(self.pending.len(), Addition::default());
        for a in &self.pending {
            let slot = &mut starts[a.at >> self.group_shift];
            self.grouped[*slot] = *a;
            *slot += 1;
        }
        for a in &self.grouped {
            self.cells[a.at] += a.value;
        }
        self.pending.clear();
    }

    /// Ranks the spans of equal duration gathered last.
    fn rank_tie(&mut self, presence: &[u8]) {
        let width = self.width();
        let tie = std::mem::take(&mut self.tie);
        for c in 0..self.class_bits.len() {
            let bit = self.class_bits[c];
            let has = |p: u32| presence[p as usize] & bit != 0;
            let kept = tie.iter().filter(|&&p| has(p)).count() as u64;
            if kept == 0 {
                continue;
            }
            let rank = 2 * self.below[c] + kept + 1;
            for &p in tie.iter().filter(|&&p| has(p)) {
                self.add(p as usize * width + 1 + c, rank);
            }
            self.squares[c] += u128::from(kept) * u128::from(rank) * u128::from(rank);
            self.below[c] += kept;
        }
        for &p in &tie {
            self.add(p as usize * width, 1);
        }
        self.tie = tie;
        self.tie.clear();
    }

    /// Ranks what is gathered and applies every addition: call before [`StepRanks::against`].
    pub fn flush(&mut self, presence: &[u8]) {
        self.rank_tie(presence);
        self.apply();
    }

    /// The step against one resource of class `class` ([`StepRanks::flush`] first):
    /// `value` gives a snapshot position's figure (read once, for the median).
    pub fn against(
        &self,
        class: usize,
        order: &ResourceOrder,
        value: impl Fn(u32) -> f64,
    ) -> Against {
        let n = self.below[class];
        let median_at = (n as f64 * 0.5).ceil().max(1.0) as u64;
        let width = self.width();
        let cell = |p: u32, slot: usize| self.cells[p as usize * width + slot];
        let (mut below, mut median) = (0u64, None);
        let (mut products, mut squares) = (0u128, 0u128);
        let mut k = 0;
        while k < order.order.len() {
            // One value: the positions from k to the next start.
            let mut end = k + 1;
            while end < order.order.len() && !order.starts_value(end) {
                end += 1;
            }
            let group = &order.order[k..end];
            let count: u64 = group.iter().map(|&p| cell(p, 0)).sum();
            if count > 0 {
                let duration_sum: u128 =
                    group.iter().map(|&p| u128::from(cell(p, 1 + class))).sum();
                let rank = u128::from(2 * below + count + 1);
                products += rank * duration_sum;
                squares += u128::from(count) * rank * rank;
                if median.is_none() && below + count >= median_at {
                    median = Some(value(group[0]));
                }
                below += count;
            }
            k = end;
        }
        debug_assert_eq!(below, n, "the class's spans are the resource's");
        let rho = (n >= 3).then(|| {
            // Σ (x - m)(y - m) = Σ xy - n m² for doubled ranks, whose mean m is n + 1.
            let centre = i128::from(n) * i128::from(n + 1) * i128::from(n + 1);
            let centred = |sum: u128| i128::try_from(sum).unwrap_or(i128::MAX) - centre;
            let (xy, xx, yy) = (
                centred(products),
                centred(squares),
                centred(self.squares[class]),
            );
            (xx > 0 && yy > 0).then(|| xy as f64 / ((xx as f64) * (yy as f64)).sqrt())
        });
        Against {
            n: n as usize,
            median,
            rho: rho.flatten(),
        }
    }
}

/// Nearest-rank percentiles picked from values seen in ascending order, their number known
/// beforehand.
pub struct Percentiles<const N: usize> {
    wanted: [usize; N],
    found: [Option<f64>; N],
    seen: usize,
}

impl<const N: usize> Percentiles<N> {
    /// For `n` values and the quantiles `qs` (0..1).
    pub fn new(n: usize, qs: [f64; N]) -> Self {
        Self {
            wanted: qs.map(|q| {
                ((n as f64 * q).ceil() as usize)
                    .saturating_sub(1)
                    .min(n.max(1) - 1)
            }),
            found: [None; N],
            seen: 0,
        }
    }

    /// The next value (none smaller than any before).
    pub fn see(&mut self, value: f64) {
        for (slot, &w) in self.found.iter_mut().zip(&self.wanted) {
            if w == self.seen {
                *slot = Some(value);
            }
        }
        self.seen += 1;
    }

    /// The percentiles (`None` without values).
    pub fn get(&self) -> [Option<f64>; N] {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::{percentile, spearman};
    use super::*;

    /// The step of `durations`, span i at snapshot i, against `figure` (one per snapshot).
    fn against(durations: &[f64], figure: &[Option<f64>]) -> Against {
        let presence: Vec<u8> = figure
            .iter()
            .map(|f| u8::from(f.is_some_and(f64::is_finite)))
            .collect();
        let classes = Classes::new(&presence, &[true]);
        let column: Vec<f64> = figure.iter().map(|f| f.unwrap_or(f64::NAN)).collect();
        let order = ResourceOrder::new(&column);
        let mut ranks = StepRanks::new(figure.len(), &classes);
        let mut by_duration: Vec<(f64, u32)> = durations
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, i as u32))
            .collect();
        by_duration.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (d, p) in by_duration {
            ranks.push(&presence, d, p);
        }
        ranks.flush(&presence);
        ranks.against(0, &order, |p| figure[p as usize].unwrap())
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
        let got = against(&durations, &figure);
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
    fn spans_sharing_a_snapshot_share_its_figure() {
        // Four snapshots, twelve spans: three per snapshot.
        let figure = [Some(4.0), Some(1.0), Some(3.0), Some(1.0)];
        let presence = vec![1u8; 4];
        let classes = Classes::new(&presence, &[true]);
        let column: Vec<f64> = figure.iter().map(|f| f.unwrap_or(f64::NAN)).collect();
        let order = ResourceOrder::new(&column);
        let mut ranks = StepRanks::new(4, &classes);
        let spans: Vec<(f64, u32)> = (0..12).map(|i| (f64::from((i * 7) % 12), i % 4)).collect();
        let mut sorted = spans.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (d, p) in sorted {
            ranks.push(&presence, d, p);
        }
        ranks.flush(&presence);
        let got = ranks.against(0, &order, |p| figure[p as usize].unwrap());
        let x: Vec<f64> = spans
            .iter()
            .map(|&(_, p)| figure[p as usize].unwrap())
            .collect();
        let y: Vec<f64> = spans.iter().map(|&(d, _)| d).collect();
        assert_eq!(got.n, 12);
        assert_eq!(got.median, percentile(&mut x.clone(), 0.5));
        let want = spearman(&x, &y).unwrap();
        assert!((got.rho.unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn resources_present_at_the_same_snapshots_share_a_class() {
        // Bit 0 and 1 always together, bit 2 only at some snapshots, bit 3 nowhere.
        let presence = [0b011, 0b111, 0b011];
        let classes = Classes::new(&presence, &[true, true, true, false]);
        assert_eq!(classes.of(0), classes.of(1));
        assert_ne!(classes.of(0), classes.of(2));
        assert_eq!(classes.of(3), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut values: Vec<f64> = (0..101).map(|i| f64::from((i * 37) % 101)).collect();
        let mut picked = Percentiles::new(values.len(), [0.5, 0.95, 0.99]);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.iter().for_each(|&v| picked.see(v));
        let want = [0.5, 0.95, 0.99].map(|q| percentile(&mut values, q));
        assert_eq!(picked.get(), want);
        assert_eq!(Percentiles::new(0, [0.5]).get(), [None]);
    }

    #[test]
    fn no_variance_no_rho() {
        let got = against(&[1.0, 2.0, 3.0, 4.0], &[Some(1.0); 4]);
        assert_eq!((got.n, got.median, got.rho), (4, Some(1.0), None));
    }
}
