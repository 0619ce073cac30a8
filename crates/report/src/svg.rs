//! Axes for the HTML report's SVG charts: a linear scale, "nice" ticks (1, 2, 5 × 10ⁿ),
//! wall-clock ticks for time, and the SVG of an axis with its ticks, labels and unit.

use std::fmt::Write as _;

/// Maps values in `min..max` to pixels `from..to` (either direction).
pub struct Axis {
    min: f64,
    max: f64,
    from: f64,
    to: f64,
}

impl Axis {
    /// A scale; an empty range is widened so that every value has a place.
    pub fn new(min: f64, max: f64, from: f64, to: f64) -> Self {
        let max = if max > min { max } else { min + 1.0 };
        Self { min, max, from, to }
    }

    /// The pixel of `v`.
    pub fn at(&self, v: f64) -> f64 {
        self.from + (v - self.min) / (self.max - self.min) * (self.to - self.from)
    }
}

/// About `count` round values covering `min..max` (steps of 1, 2 or 5 × 10ⁿ), inside it.
pub fn nice_ticks(min: f64, max: f64, count: usize) -> Vec<f64> {
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater)
        || !min.is_finite()
        || !max.is_finite()
    {
        return vec![min];
    }
    let count = count.max(1) as f64;
    let rough = (max - min) / count;
    let magnitude = 10f64.powf(rough.log10().floor());
    // The round step whose tick count comes nearest the one asked for.
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .min_by(|a, b| {
            let off = |s: &f64| ((max - min) / s - count).abs();
            off(a).total_cmp(&off(b))
        })
        .unwrap_or(magnitude);
    let first = (min / step).ceil() * step;
    (0..)
        .map(|i| first + step * f64::from(i))
        .take_while(|v| *v <= max + step * 1e-9)
        .take(50)
        .collect()
}

/// Time steps a tick may take, in seconds.
const TIME_STEPS: [i64; 15] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400,
];

/// Wall-clock ticks for `t0..t1` (Unix ns), about `count`, at round times, with labels:
/// `HH:MM:SS` UTC, or `MM-DD HH:MM` when the range spans days.
pub fn time_ticks(t0: i64, t1: i64, count: usize) -> Vec<(i64, String)> {
    const NS: i64 = 1_000_000_000;
    let span = ((t1 - t0) / NS).max(1);
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|s| span / s <= count.max(1) as i64)
        .unwrap_or(86400 * ((span / 86400) / count.max(1) as i64).max(1));
    let first = (t0 / NS).div_euclid(step) * step + step;
    (0..)
        .map(|i| first + i * step)
        .take_while(|s| s * NS <= t1)
        .take(50)
        .map(|s| {
            // `YYYY-MM-DDTHH:MM:SS.mmmZ`, ASCII: sliced into the parts a tick shows.
            let at = crate::text::timestamp(s * NS);
            let label = if span > 86400 {
                format!("{} {}", &at[5..10], &at[11..16])
            } else {
                at[11..19].to_owned()
            };
            (s * NS, label)
        })
        .collect()
}

/// A number as a tick label: no needless decimals.
pub fn tick_label(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Where an axis is drawn.
pub struct Frame {
    /// Left edge of the plot.
    pub left: f64,
    /// Right edge.
    pub right: f64,
    /// Top edge.
    pub top: f64,
    /// Bottom edge.
    pub bottom: f64,
}

/// A vertical axis at `frame.left`: ticks, grid lines, tick labels and the unit.
pub fn y_axis(out: &mut String, frame: &Frame, y: &Axis, ticks: &[f64], unit: &str) {
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\" stroke=\"#9ca3af\"/>",
        l = frame.left,
        t = frame.top,
        b = frame.bottom
    );
    for v in ticks {
        let py = y.at(*v);
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#e5e7eb\"/>\
             <text class=\"tick-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            frame.left,
            frame.right,
            frame.left - 4.0,
            py + 4.0,
            tick_label(*v)
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{unit}</text>",
        frame.left - 4.0,
        frame.top - 4.0
    );
}

/// A horizontal axis at `frame.bottom` with labelled ticks at `ticks` (pixel x, label)
/// and the unit at its right end.
pub fn x_axis(out: &mut String, frame: &Frame, ticks: &[(f64, String)], unit: &str) {
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#9ca3af\"/>",
        l = frame.left,
        r = frame.right,
        b = frame.bottom
    );
    for (px, label) in ticks {
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{b:.1}\" y2=\"{:.1}\" stroke=\"#9ca3af\"/>\
             <text class=\"tick-label\" x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            frame.bottom + 4.0,
            frame.bottom + 15.0,
            b = frame.bottom
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{unit}</text>",
        frame.right,
        frame.bottom + 27.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            nice_ticks(0.0, 81_920.0, 4),
            [0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0]
        );
        assert_eq!(nice_ticks(3.0, 3.0, 4), [3.0]);
    }

    #[test]
    fn time_ticks_fall_on_round_wall_clock_times() {
        // 2023-11-14T22:13:20Z plus 30 s.
        let t0 = 1_700_000_000_000_000_000;
        let ticks = time_ticks(t0, t0 + 30_000_000_000, 6);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "22:13:25", "22:13:30", "22:13:35", "22:13:40", "22:13:45", "22:13:50"
            ]
        );
        let days = time_ticks(t0, t0 + 3 * 86_400_000_000_000, 4);
        assert_eq!(days[0].1, "11-15 00:00");
    }
}
