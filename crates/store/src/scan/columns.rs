//! The snapshots' figures the report uses, a column each: a million snapshots took 144 MB
//! as one struct each (every figure an `Option`, most of them never known on a machine);
//! as columns, only the figures some snapshot has take room, 8 bytes a snapshot each.

use super::SnapFigures;

/// Which GPU a figure came from, as stored (`u16::MAX`: none).
const NO_GPU: u16 = u16::MAX;

/// One snapshot's figures per column, by position.
#[derive(Debug, Default)]
pub struct Snapshots {
    /// How many.
    len: usize,
    /// How many are expected: each column is made this large at once (growing one by
    /// doubling held the old and the new copy for a moment).
    expected: usize,
    /// When each was taken.
    taken_at_ns: Vec<i64>,
    /// Per figure (in the order of [`FIGURES`]): a value per snapshot, `NaN` when unknown;
    /// empty while no snapshot has it.
    values: [Vec<f64>; FIGURES],
    /// Which GPU the tightest free memory, the busiest bandwidth and tensor activity came
    /// from; empty while no snapshot knows.
    gpus: [Vec<u16>; 3],
}

/// How many figures a snapshot has columns for.
const FIGURES: usize = 7;

impl Snapshots {
    /// Room for `expected` snapshots.
    pub fn with_capacity(expected: usize) -> Self {
        Self {
            expected,
            taken_at_ns: Vec::with_capacity(expected),
            ..Self::default()
        }
    }

    /// How many snapshots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no snapshot is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a snapshot.
    pub fn push(&mut self, figures: &SnapFigures) {
        self.taken_at_ns.push(figures.taken_at_ns);
        self.len += 1;
        self.set(self.len - 1, figures);
    }

    /// Snapshot `p`'s figures.
    pub fn get(&self, p: usize) -> SnapFigures {
        let value = |k: usize| self.values[k].get(p).copied().filter(|v| !v.is_nan());
        let gpu = |k: usize| {
            self.gpus[k]
                .get(p)
                .copied()
                .filter(|&g| g != NO_GPU)
                .map(u32::from)
        };
        SnapFigures {
            taken_at_ns: self.taken_at_ns[p],
            gpu_free_min_bytes: value(0).map(|v| v as u64),
            gpu_free_min_index: gpu(0),
            gpu_utilization_max: value(1),
            cpu_load_per_core: value(2),
            ram_available_ratio: value(3),
            cgroup_headroom_ratio: value(4),
            gpu_dram_bandwidth_max: value(5).zip(gpu(1)),
            gpu_tensor_active_max: value(6).zip(gpu(2)),
        }
    }

    /// Whether positions are in time order (the usual case: one writer numbers snapshots
    /// as it takes them; not so in a merged history or after the clock stepped back).
    pub fn in_time_order(&self) -> bool {
        self.taken_at_ns.windows(2).all(|w| w[0] <= w[1])
    }

    /// Every snapshot's figures, by position.
    pub fn iter(&self) -> impl Iterator<Item = SnapFigures> + '_ {
        (0..self.len()).map(|p| self.get(p))
    }

    /// Forgets when each was taken and which GPU each figure came from (what is left
    /// is the figures' values).
    pub fn forget_times(&mut self) {
        self.taken_at_ns = Vec::new();
        self.gpus = Default::default();
    }

    /// Resource `k`'s column (in the order of `RESOURCES`): a value per snapshot, `NaN`
    /// when unknown; `None` when no snapshot has it.
    pub fn column(&self, k: usize) -> Option<&[f64]> {
        self.values
            .get(k)
            .filter(|c| !c.is_empty())
            .map(Vec::as_slice)
    }

    /// Moves the figures' values out of memory, into a temporary file read back by
    /// position ([`Values`]), and forgets the rest: what is left is the number of
    /// snapshots. Where no temporary file can be written, the values stay in memory.
    pub fn spill(&mut self) -> Values {
        self.forget_times();
        let columns = std::mem::take(&mut self.values);
        match write_columns(&columns, self.len) {
            Ok((file, offsets)) => Values {
                place: ValuesPlace::File(file, offsets),
            },
            Err(e) => {
                super::spill::kept_in_memory(&e);
                Values {
                    place: ValuesPlace::Memory(columns),
                }
            }
        }
    }

    /// Sets snapshot `p`'s figures (its time stays).
    pub fn set(&mut self, p: usize, f: &SnapFigures) {
        let len = self.len();
        let values = [
            // Bytes as f64 are exact below 2^53 (8 PiB).
            f.gpu_free_min_bytes.map(|b| b as f64),
            f.gpu_utilization_max,
            f.cpu_load_per_core,
            f.ram_available_ratio,
            f.cgroup_headroom_ratio,
            f.gpu_dram_bandwidth_max.map(|(v, _)| v),
            f.gpu_tensor_active_max.map(|(v, _)| v),
        ];
        for (column, value) in self.values.iter_mut().zip(values) {
            let value = value.unwrap_or(f64::NAN);
            put(column, (len, self.expected), p, value, f64::NAN, |v| {
                v.is_nan()
            });
        }
        let gpus = [
            f.gpu_free_min_index,
            f.gpu_dram_bandwidth_max.map(|(_, i)| i),
            f.gpu_tensor_active_max.map(|(_, i)| i),
        ];
        for (column, gpu) in self.gpus.iter_mut().zip(gpus) {
            let gpu = gpu.and_then(|g| u16::try_from(g).ok()).unwrap_or(NO_GPU);
            put(column, (len, self.expected), p, gpu, NO_GPU, |&g| {
                g == NO_GPU
            });
        }
    }
}

/// The snapshots' figure values after [`Snapshots::spill`], by resource and position.
#[derive(Debug)]
pub struct Values {
    place: ValuesPlace,
}

#[derive(Debug)]
enum ValuesPlace {
    /// In a file: each column's byte offset (`None`: no snapshot has it).
    File(std::fs::File, [Option<u64>; FIGURES]),
    Memory([Vec<f64>; FIGURES]),
}

impl Values {
    /// Resource `k`'s value at snapshot `p`, if known.
    pub fn get(&self, k: usize, p: u32) -> std::io::Result<Option<f64>> {
        let value = match &self.place {
            ValuesPlace::Memory(columns) => columns
                .get(k)
                .and_then(|column| column.get(p as usize))
                .copied(),
            ValuesPlace::File(file, offsets) => match offsets.get(k).copied().flatten() {
                Some(column) => {
                    use std::os::unix::fs::FileExt;
                    let mut bytes = [0; 8];
                    file.read_exact_at(&mut bytes, column + u64::from(p) * 8)?;
                    Some(f64::from_le_bytes(bytes))
                }
                None => None,
            },
        };
        Ok(value.filter(|v| !v.is_nan()))
    }
}

/// Writes the columns one after another; returns the file and each column's offset.
fn write_columns(
    columns: &[Vec<f64>; FIGURES],
    len: usize,
) -> std::io::Result<(std::fs::File, [Option<u64>; FIGURES])> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(tempfile::tempfile()?);
    let mut offsets = [None; FIGURES];
    let mut at = 0u64;
    for (column, offset) in columns.iter().zip(&mut offsets) {
        if column.is_empty() {
            continue;
        }
        debug_assert_eq!(column.len(), len);
        *offset = Some(at);
        for v in column {
            out.write_all(&v.to_le_bytes())?;
        }
        at += column.len() as u64 * 8;
    }
    let file = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    Ok((file, offsets))
}

/// The snapshots in time order: positions are, nearly always (one writer numbers them as
/// it takes them), and then no list is kept.
pub enum TimeOrder {
    /// Positions are in time order.
    Positions,
    /// Positions by time (a merged history, a clock that stepped back).
    Sorted(Vec<u32>),
}

impl TimeOrder {
    /// The order of `snapshots`.
    pub fn of(snapshots: &Snapshots) -> Self {
        if snapshots.in_time_order() {
            return Self::Positions;
        }
        let times = &snapshots.taken_at_ns;
        let mut order: Vec<u32> = (0..times.len())
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        order.sort_by_key(|&p| times[p as usize]);
        Self::Sorted(order)
    }

    /// The positions of the snapshots taken from `since_ns` to `until_ns`, both included.
    pub fn between<'a>(
        &'a self,
        snapshots: &'a Snapshots,
        since_ns: i64,
        until_ns: i64,
    ) -> impl Iterator<Item = usize> + 'a {
        let times = &snapshots.taken_at_ns;
        let (from, to) = match self {
            Self::Positions => (
                times.partition_point(|&t| t < since_ns),
                times.partition_point(|&t| t <= until_ns),
            ),
            Self::Sorted(order) => (
                order.partition_point(|&p| times[p as usize] < since_ns),
                order.partition_point(|&p| times[p as usize] <= until_ns),
            ),
        };
        (from..to.max(from)).map(move |k| match self {
            Self::Positions => k,
            Self::Sorted(order) => order[k] as usize,
        })
    }
}

/// Writes `value` at `p` of a column of `len` entries, allocating the column only when the
/// first known value comes (`none` fills it, `unknown` tells a value that is none).
fn put<T: Copy>(
    column: &mut Vec<T>,
    (len, expected): (usize, usize),
    p: usize,
    value: T,
    none: T,
    unknown: impl Fn(&T) -> bool,
) {
    if column.len() < len {
        if unknown(&value) && column.is_empty() {
            return;
        }
        if column.capacity() == 0 {
            column.reserve_exact(expected.max(len));
        }
        column.resize(len, none);
    }
    column[p] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_between_two_times_in_either_order() {
        for times in [vec![1, 2, 2, 5, 9], vec![5, 1, 9, 2, 2]] {
            let mut s = Snapshots::default();
            for &t in &times {
                s.push(&SnapFigures {
                    taken_at_ns: t,
                    ..SnapFigures::default()
                });
            }
            let order = TimeOrder::of(&s);
            let mut got: Vec<i64> = order.between(&s, 2, 5).map(|p| times[p]).collect();
            got.sort();
            assert_eq!(got, [2, 2, 5], "{times:?}");
            assert_eq!(order.between(&s, 6, 8).count(), 0);
            assert_eq!(order.between(&s, 9, 1).count(), 0);
        }
    }

    #[test]
    fn figures_come_back_as_they_went_in_and_unknown_columns_take_no_room() {
        let mut s = Snapshots::default();
        let plain = SnapFigures {
            taken_at_ns: 5,
            cpu_load_per_core: Some(0.25),
            ..SnapFigures::default()
        };
        s.push(&plain);
        let full = SnapFigures {
            taken_at_ns: 6,
            gpu_free_min_bytes: Some(80 << 30),
            gpu_free_min_index: Some(3),
            gpu_utilization_max: Some(0.5),
            cpu_load_per_core: Some(1.5),
            ram_available_ratio: Some(0.1),
            cgroup_headroom_ratio: None,
            gpu_dram_bandwidth_max: Some((0.7, 1)),
            gpu_tensor_active_max: None,
        };
        s.push(&full);
        s.push(&plain);
        assert_eq!(s.len(), 3);
        assert_eq!(format!("{:?}", s.get(0)), format!("{plain:?}"));
        assert_eq!(format!("{:?}", s.get(1)), format!("{full:?}"));
        assert_eq!(s.get(2).taken_at_ns, 5);
        assert!(s.values[4].is_empty() && s.values[6].is_empty() && s.gpus[2].is_empty());
        // A figure learnt later (the GPU pass) lands where it belongs.
        let mut later = s.get(0);
        later.cgroup_headroom_ratio = Some(0.9);
        s.set(0, &later);
        assert_eq!(s.get(0).cgroup_headroom_ratio, Some(0.9));
        assert_eq!(s.get(1).cgroup_headroom_ratio, None);
        // Spilled, the values read back by position; unknown ones stay unknown.
        let values = s.spill();
        assert_eq!(s.len(), 3);
        let get = |k, p| values.get(k, p).unwrap();
        assert_eq!(get(2, 1), Some(1.5));
        assert_eq!(get(0, 1), Some((80u64 << 30) as f64));
        assert_eq!(get(0, 0), None);
        assert_eq!(get(4, 0), Some(0.9));
        assert_eq!(get(6, 1), None);
    }
}
