//! Each GPU's samples reduced as they are read, in time order: what the OOM section says of
//! it (time below the threshold, its least free memory) and its memory chart's points.
//! Every sample was once kept (40 bytes each: a million snapshots of eight GPUs were
//! 320 MB); now a GPU keeps its figures, the times it was below the threshold, and at
//! most [`CHART_KEEP`] chart points.

use super::MIB;

/// The chart keeps at most this many points per GPU while reading (every k-th sample, k
/// doubling whenever it fills); it shows at most half as many.
pub const CHART_KEEP: usize = 1200;

/// A longer gap between two samples counts as this many seconds below the threshold at
/// most (the sidecar was down, not the GPU short).
const MAX_GAP_S: f64 = 60.0;

/// One GPU's samples so far.
#[derive(Debug, Clone)]
pub struct GpuTrack {
    /// GPU index.
    pub gpu_index: u32,
    /// Samples read.
    pub samples: usize,
    /// Least free memory seen.
    pub min_free_bytes: Option<u64>,
    /// When it was below the threshold, in time order.
    pub below_times: Vec<i64>,
    /// Seconds below the threshold: from each sample below to the next sample.
    pub seconds_below: f64,
    /// Total memory in MiB, from the first sample that has both used and total.
    pub total_mib: Option<f64>,
    /// (time, used MiB) of every `stride`-th sample with used and total memory.
    chart: Vec<(i64, f64)>,
    /// Samples with used and total memory seen.
    charted: usize,
    stride: usize,
    /// The last sample's time and whether it was below.
    last: Option<(i64, bool)>,
}

impl GpuTrack {
    fn new(gpu_index: u32) -> Self {
        Self {
            gpu_index,
            samples: 0,
            min_free_bytes: None,
            below_times: Vec::new(),
            seconds_below: 0.0,
            total_mib: None,
            chart: Vec::new(),
            charted: 0,
            stride: 1,
            last: None,
        }
    }

    /// The memory chart's points, at most `max`, evenly spaced over the samples.
    pub fn chart(&self, max: usize) -> Vec<(i64, f64)> {
        let step = self.chart.len().div_ceil(max.max(1)).max(1);
        self.chart.iter().step_by(step).copied().collect()
    }
}

/// One GPU sample.
#[derive(Debug, Clone, Copy)]
pub struct GpuSample {
    /// GPU index.
    pub gpu_index: u32,
    /// When.
    pub taken_at_ns: i64,
    /// Free memory.
    pub free_bytes: Option<u64>,
    /// Used memory.
    pub used_bytes: Option<u64>,
    /// Total memory.
    pub total_bytes: Option<u64>,
}

/// Every GPU's track, fed samples in time order per GPU.
#[derive(Debug, Default)]
pub struct GpuTracks {
    threshold: u64,
    tracks: Vec<GpuTrack>,
}

impl GpuTracks {
    /// Tracks where free memory below `threshold` bytes counts as below.
    pub fn new(threshold: u64) -> Self {
        Self {
            threshold,
            tracks: Vec::new(),
        }
    }

    /// The next sample of its GPU (none of that GPU's earlier).
    pub fn add(&mut self, s: GpuSample) {
        let k = match self.tracks.iter().position(|t| t.gpu_index == s.gpu_index) {
            Some(k) => k,
            None => {
                self.tracks.push(GpuTrack::new(s.gpu_index));
                self.tracks.len() - 1
            }
        };
        let t = &mut self.tracks[k];
        t.samples += 1;
        if let Some((at, true)) = t.last {
            t.seconds_below += ((s.taken_at_ns - at) as f64 / 1e9).min(MAX_GAP_S);
        }
        let below = s.free_bytes.is_some_and(|f| f < self.threshold);
        if below {
            t.below_times.push(s.taken_at_ns);
        }
        t.last = Some((s.taken_at_ns, below));
        if let Some(free) = s.free_bytes {
            t.min_free_bytes = Some(t.min_free_bytes.map_or(free, |m| m.min(free)));
        }
        if let (Some(used), Some(total)) = (s.used_bytes, s.total_bytes) {
            t.total_mib.get_or_insert(total as f64 / MIB);
            if t.charted.is_multiple_of(t.stride) {
                t.chart.push((s.taken_at_ns, used as f64 / MIB));
                if t.chart.len() >= CHART_KEEP {
                    // Full: keep every other point, and take every other from now on.
                    let halved: Vec<(i64, f64)> = t.chart.iter().step_by(2).copied().collect();
                    t.chart = halved;
                    t.stride *= 2;
                }
            }
            t.charted += 1;
        }
    }

    /// The tracks, by GPU index.
    pub fn finish(mut self) -> Vec<GpuTrack> {
        self.tracks.sort_by_key(|t| t.gpu_index);
        self.tracks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(gpu: u32, t: i64, free_mib: u64) -> GpuSample {
        GpuSample {
            gpu_index: gpu,
            taken_at_ns: t,
            free_bytes: Some(free_mib << 20),
            used_bytes: Some(1 << 30),
            total_bytes: Some(80 << 30),
        }
    }

    #[test]
    fn time_below_counts_to_the_next_sample_and_gaps_at_most_a_minute() {
        let mut tracks = GpuTracks::new(500 << 20);
        let s = 1_000_000_000;
        for (t, free) in [(0, 100), (1, 100), (2, 9000), (3, 100), (200, 100)] {
            tracks.add(sample(1, t * s, free));
            tracks.add(sample(0, t * s, 9000));
        }
        let tracks = tracks.finish();
        assert_eq!(tracks[0].gpu_index, 0);
        let one = &tracks[1];
        assert_eq!((one.samples, one.below_times.len()), (5, 4));
        assert_eq!(one.seconds_below, 62.0);
        assert_eq!(one.min_free_bytes, Some(100 << 20));
        assert_eq!(tracks[0].below_times.len(), 0);
        assert_eq!(one.total_mib, Some(80.0 * 1024.0));
    }

    #[test]
    fn the_chart_keeps_evenly_spaced_points_within_its_bound() {
        let mut tracks = GpuTracks::new(0);
        for t in 0..100_000 {
            tracks.add(sample(0, t, 9000));
        }
        let track = &tracks.finish()[0];
        let points = track.chart(600);
        assert!(
            points.len() <= 600 && points.len() >= 300,
            "{}",
            points.len()
        );
        let gaps: Vec<i64> = points.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "evenly spaced");
        assert_eq!(points[0].0, 0);
    }
}
