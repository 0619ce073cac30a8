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

/// One resource's snapshots in the order of its value, those without it left out: a
/// position each (4 bytes), its top bit set where a new value starts. Kept in a temporary
/// file and read in sequence by each step (seven of them were 28 MB at a million
/// snapshots); in memory where no temporary file can be written.
pub struct ResourceOrder {
    place: OrderPlace,
    len: usize,
}

enum OrderPlace {
    File(std::fs::File),
    Memory(Vec<u32>),
}

/// The top bit of an entry: a new value starts here.
const NEW_VALUE: u32 = 1 << 31;

/// Entries read at a time from the file.
const ORDER_BLOCK: usize = 4096;

impl ResourceOrder {
    /// Orders `values` (one per snapshot position; non-finite values count as missing),
    /// with no copy of them: only the positions are sorted.
    pub fn new(values: &[f64]) -> Self {
        let mut order: Vec<u32> = (0..values.len())
            .filter(|&i| values[i].is_finite())
            .filter_map(|i| u32::try_from(i).ok().filter(|&p| p < NEW_VALUE))
            .collect();
        let value = |p: u32| values[(p & !NEW_VALUE) as usize];
        order.sort_unstable_by(|&a, &b| value(a).total_cmp(&value(b)));
        let mut previous = None;
        for entry in &mut order {
            // `!=`, not the sort's order: -0.0 and 0.0 are one value, as for any comparison.
            let v = value(*entry);
            if previous != Some(v) {
                *entry |= NEW_VALUE;
            }
            previous = Some(v);
        }
        let len = order.len();
        let place = match write_order(&order) {
            Ok(file) => OrderPlace::File(file),
            Err(e) => {
                super::spill::kept_in_memory(&e);
                OrderPlace::Memory(order)
            }
        };
        Self { place, len }
    }

    /// Whether no snapshot has the figure.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each entry in order: (position, whether a new value starts there).
    fn each(&self, mut each: impl FnMut(u32, bool)) -> std::io::Result<()> {
        let mut visit = |entries: &[u32]| {
            for &e in entries {
                each(e & !NEW_VALUE, e & NEW_VALUE != 0);
            }
        };
        match &self.place {
            OrderPlace::Memory(order) => visit(order),
            OrderPlace::File(file) => {
                use std::os::unix::fs::FileExt;
                let mut bytes = vec![0u8; ORDER_BLOCK * 4];
                let mut entries = Vec::with_capacity(ORDER_BLOCK);
                let mut done = 0;
                while done < self.len {
                    let n = (self.len - done).min(ORDER_BLOCK);
                    file.read_exact_at(&mut bytes[..n * 4], done as u64 * 4)?;
                    entries.clear();
                    entries.extend(
                        bytes[..n * 4]
                            .chunks_exact(4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                    visit(&entries);
                    done += n;
                }
            }
        }
        Ok(())
    }
}

/// A dense rank meaning "no figure".
pub const NO_RANK: u32 = u32::MAX;

impl ResourceOrder {
    /// Per snapshot position (of `snapshots`), the rank of its value among the distinct
    /// values ([`NO_RANK`] without one): what [`StepRanks::against_few`] sorts by.
    pub fn dense_ranks(&self, snapshots: usize) -> std::io::Result<Vec<u32>> {
        let mut ranks = vec![NO_RANK; snapshots];
        let mut rank = None::<u32>;
        self.each(|p, new_value| {
            if new_value {
                rank = Some(rank.map_or(0, |r| r + 1));
            }
            if let Some(slot) = ranks.get_mut(p as usize) {
                *slot = rank.unwrap_or(0);
            }
        })?;
        Ok(ranks)
    }
}

fn write_order(order: &[u32]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(tempfile::tempfile()?);
    for entry in order {
        out.write_all(&entry.to_le_bytes())?;
    }
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
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
    /// A snapshot position whose figure is the nearest-rank median over those spans (the
    /// value itself is read back by the caller).
    pub median_at: Option<u32>,
    /// Spearman's ρ of the figure with duration (`None` under 3 spans or without variance).
    pub rho: Option<f64>,
}

/// Additions to the per-snapshot cells are gathered this many at a time, then applied
/// grouped by where they land: spans arrive in duration order, their snapshots at random,
/// and adding each at once missed the cache nearly every time (a million snapshots' cells
/// are 16 MB).
const PENDING: usize = 1 << 15;

/// A step that touched fewer than 1/this of the snapshots is ranked by sorting what it
/// touched (a history of many span names has many such steps).
const SMALL: usize = 32;

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
    /// The snapshot positions the step's spans started at (each once): a step of few
    /// spans is reset and ranked through these, not through every snapshot.
    touched: Vec<u32>,
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
            touched: Vec::new(),
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

    fn snapshots(&self) -> usize {
        self.cells.len() / self.width()
    }

    /// Whether the step touched so few snapshots that ranking them by sorting beats a walk
    /// over every snapshot ([`StepRanks::against_few`]).
    pub fn is_small(&self) -> bool {
        self.touched.len() * SMALL < self.snapshots()
    }

    /// Whether a step of `spans` spans over `snapshots` snapshots is surely small (it
    /// touches at most one snapshot per span).
    pub fn small_step(spans: usize, snapshots: usize) -> bool {
        spans * SMALL < snapshots
    }

    /// Forgets the step before (keeps the memory).
    pub fn reset(&mut self) {
        let width = self.width();
        if self.touched.len() * 8 < self.snapshots() {
            for &p in &self.touched {
                self.cells[p as usize * width..(p as usize + 1) * width].fill(0);
            }
        } else {
            self.cells.fill(0);
        }
        self.touched.clear();
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
        let width = self.width();
        for a in &self.grouped {
            let cell = &mut self.cells[a.at];
            if *cell == 0 && a.at % width == 0 {
                // A snapshot's first span of this step.
                self.touched.push((a.at / width) as u32);
            }
            *cell += a.value;
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
    pub fn against(&self, class: usize, order: &ResourceOrder) -> std::io::Result<Against> {
        let width = self.width();
        let cell = |p: u32, slot: usize| self.cells[p as usize * width + slot];
        let mut walk = Walk::new(self.below[class]);
        // The value being summed: its spans, their duration ranks' sum, a position of it.
        let (mut count, mut duration_sum, mut first) = (0u64, 0u128, 0u32);
        order.each(|p, new_value| {
            if new_value {
                walk.group(count, duration_sum, first);
                (count, duration_sum, first) = (0, 0, p);
            }
            count += cell(p, 0);
            duration_sum += u128::from(cell(p, 1 + class));
        })?;
        walk.group(count, duration_sum, first);
        Ok(walk.finish(self.squares[class]))
    }
}

/// The values of one resource in ascending order, each with the step's spans at it and
/// the sum of their doubled duration ranks: Σ xy, Σ x² and the median as they pass.
struct Walk {
    n: u64,
    /// The rank (1-based, nearest rank) of the median among the `n` spans.
    median_rank: u64,
    below: u64,
    /// A snapshot holding the median's value, once passed.
    median_snapshot: Option<u32>,
    products: u128,
    squares: u128,
}

impl Walk {
    /// For `n` spans with the figure.
    fn new(n: u64) -> Self {
        Self {
            n,
            median_rank: (n as f64 * 0.5).ceil().max(1.0) as u64,
            below: 0,
            median_snapshot: None,
            products: 0,
            squares: 0,
        }
    }

    /// The next value: `count` spans whose doubled duration ranks sum to `duration_sum`,
    /// at snapshots of that value (`first` one of them).
    fn group(&mut self, count: u64, duration_sum: u128, first: u32) {
        if count == 0 {
            return;
        }
        let rank = u128::from(2 * self.below + count + 1);
        self.products += rank * duration_sum;
        self.squares += u128::from(count) * rank * rank;
        if self.median_snapshot.is_none() && self.below + count >= self.median_rank {
            self.median_snapshot = Some(first);
        }
        self.below += count;
    }

    /// ρ and the median; `duration_squares` is Σ y² of the same spans.
    fn finish(self, duration_squares: u128) -> Against {
        let n = self.n;
        debug_assert_eq!(self.below, n, "the class's spans are the resource's");
        let rho = (n >= 3).then(|| {
            // Σ (x - m)(y - m) = Σ xy - n m² for doubled ranks, whose mean m is n + 1.
            let centre = i128::from(n) * i128::from(n + 1) * i128::from(n + 1);
            let centred = |sum: u128| i128::try_from(sum).unwrap_or(i128::MAX) - centre;
            let (xy, xx, yy) = (
                centred(self.products),
                centred(self.squares),
                centred(duration_squares),
            );
            (xx > 0 && yy > 0).then(|| xy as f64 / ((xx as f64) * (yy as f64)).sqrt())
        });
        Against {
            n: n as usize,
            median_at: self.median_snapshot,
            rho: rho.flatten(),
        }
    }
}

impl StepRanks {
    /// [`StepRanks::against`] for a step that touched few snapshots: their dense ranks of
    /// the resource's value (`dense`, by position: [`ResourceOrder::dense_ranks`]) sorted,
    /// instead of a walk over every snapshot.
    pub fn against_few(&self, class: usize, dense: &[u32]) -> Against {
        let width = self.width();
        let cell = |p: u32, slot: usize| self.cells[p as usize * width + slot];
        let mut touched: Vec<(u32, u32)> = self
            .touched
            .iter()
            .filter_map(|&p| {
                let rank = *dense.get(p as usize)?;
                (rank != NO_RANK).then_some((rank, p))
            })
            .collect();
        touched.sort_unstable();
        let mut walk = Walk::new(self.below[class]);
        for group in touched.chunk_by(|a, b| a.0 == b.0) {
            let count: u64 = group.iter().map(|&(_, p)| cell(p, 0)).sum();
            let sum: u128 = group
                .iter()
                .map(|&(_, p)| u128::from(cell(p, 1 + class)))
                .sum();
            walk.group(count, sum, group[0].1);
        }
        walk.finish(self.squares[class])
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
    fn against(durations: &[f64], figure: &[Option<f64>]) -> (Against, Option<f64>) {
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
        let got = ranks.against(0, &order).unwrap();
        let median = got.median_at.and_then(|p| figure[p as usize]);
        (got, median)
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
        let (got, median) = against(&durations, &figure);
        let (x, y): (Vec<f64>, Vec<f64>) = figure
            .iter()
            .zip(durations)
            .filter_map(|(f, d)| Some((f.filter(|f| f.is_finite())?, d)))
            .unzip();
        assert_eq!(got.n, x.len());
        assert_eq!(median, percentile(&mut x.clone(), 0.5));
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
        let got = ranks.against(0, &order).unwrap();
        let x: Vec<f64> = spans
            .iter()
            .map(|&(_, p)| figure[p as usize].unwrap())
            .collect();
        let y: Vec<f64> = spans.iter().map(|&(d, _)| d).collect();
        assert_eq!(got.n, 12);
        let median = got.median_at.and_then(|p| figure[p as usize]);
        assert_eq!(median, percentile(&mut x.clone(), 0.5));
        let want = spearman(&x, &y).unwrap();
        assert!((got.rho.unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn a_step_on_few_snapshots_ranks_the_same_by_sorting_them() {
        // 200 snapshots (values with ties, some missing); the step's spans start at 5.
        let column: Vec<f64> = (0..200)
            .map(|i| {
                if i % 17 == 3 {
                    f64::NAN
                } else {
                    f64::from((i * 7) % 23)
                }
            })
            .collect();
        let presence: Vec<u8> = column.iter().map(|v| u8::from(v.is_finite())).collect();
        let classes = Classes::new(&presence, &[true]);
        let order = ResourceOrder::new(&column);
        let mut ranks = StepRanks::new(200, &classes);
        let at = [3u32, 40, 41, 63, 150];
        for k in 0..12u32 {
            ranks.push(&presence, f64::from(k / 2), at[(k * 3 % 5) as usize]);
        }
        ranks.flush(&presence);
        assert!(ranks.is_small());
        let walked = ranks.against(0, &order).unwrap();
        let sorted = ranks.against_few(0, &order.dense_ranks(200).unwrap());
        // The median's value is the same (its snapshot may be another of that value).
        let value = |a: &Against| a.median_at.map(|p| column[p as usize]);
        assert_eq!(
            (walked.n, value(&walked), walked.rho),
            (sorted.n, value(&sorted), sorted.rho)
        );
        // Position 3 has no figure: its three spans do not count.
        assert!(
            walked.n == 9 && walked.rho.is_some(),
            "{} {:?}",
            walked.n,
            walked.rho
        );
        // Reset through the touched snapshots leaves every cell empty.
        ranks.reset();
        assert!(ranks.cells.iter().all(|&c| c == 0));
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
        let (got, median) = against(&[1.0, 2.0, 3.0, 4.0], &[Some(1.0); 4]);
        assert_eq!((got.n, median, got.rho), (4, Some(1.0), None));
    }
}
