//! Every figure runlens exports, in one table: its Prometheus name, its OTLP name (or why it
//! has none), the semantic convention it follows when one exists, its unit, kind and help, and
//! how it is read. `/metrics` (`metrics::collector`, `metrics`) and the OTLP metrics export
//! (`export::metrics`) both read this table, so the two sets can differ only where a row says
//! so and why; the book's *Exported figures* chapter is this table rendered
//! (`markdown()`, checked by a test).

pub mod gpu_perf;
mod machine;
pub mod own;

use std::collections::HashMap;
use std::sync::LazyLock;

use probe_core::{GpuPerf, Snapshot};
use prometheus_client::registry::Unit;

/// What kind of series a figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value now (OTLP: a gauge).
    Gauge,
    /// A running total (OTLP: a monotonic cumulative sum; Prometheus: `_total`).
    Counter,
    /// A distribution (Prometheus only here).
    Histogram,
    /// Labels and a constant 1 (Prometheus `_info`).
    Info,
}

/// A figure's unit, written the way each side spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureUnit {
    /// Bytes (`By`, `_bytes`).
    Bytes,
    /// A share 0..1 (`1`, `_ratio`).
    Ratio,
    /// Degrees Celsius (`Cel`, `_celsius`).
    Celsius,
    /// Watts (`W`, `_watts`).
    Watts,
    /// Hertz (`Hz`, `_hertz`).
    Hertz,
    /// Seconds (`s`, `_seconds`).
    Seconds,
    /// Bytes per second (`By/s`, `_bytes_per_second`).
    BytesPerSecond,
    /// A count of things, the UCUM annotation naming them (`{cpu}`); no Prometheus suffix.
    Count(&'static str),
}

impl FigureUnit {
    /// The UCUM unit an OTLP metric carries.
    pub fn ucum(self) -> &'static str {
        match self {
            Self::Bytes => "By",
            Self::Ratio => "1",
            Self::Celsius => "Cel",
            Self::Watts => "W",
            Self::Hertz => "Hz",
            Self::Seconds => "s",
            Self::BytesPerSecond => "By/s",
            Self::Count(annotation) => annotation,
        }
    }

    /// The Prometheus unit (the name's suffix), if any.
    pub fn prometheus(self) -> Option<Unit> {
        let other = |s: &str| Some(Unit::Other(s.to_owned()));
        match self {
            Self::Bytes => Some(Unit::Bytes),
            Self::Ratio => other("ratio"),
            Self::Celsius => Some(Unit::Celsius),
            Self::Watts => other("watts"),
            Self::Hertz => other("hertz"),
            Self::Seconds => Some(Unit::Seconds),
            Self::BytesPerSecond => other("bytes_per_second"),
            Self::Count(_) => None,
        }
    }

    #[cfg(test)]
    fn prometheus_suffix(self) -> Option<&'static str> {
        match self {
            Self::Bytes => Some("bytes"),
            Self::Ratio => Some("ratio"),
            Self::Celsius => Some("celsius"),
            Self::Watts => Some("watts"),
            Self::Hertz => Some("hertz"),
            Self::Seconds => Some("seconds"),
            Self::BytesPerSecond => Some("bytes_per_second"),
            Self::Count(_) => None,
        }
    }
}

/// Whether a figure goes out as OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otlp {
    /// Exported under this name.
    Name(&'static str),
    /// Not exported, for this reason.
    Not(&'static str),
}

/// How a figure's points are read.
#[derive(Clone, Copy)]
pub enum Read {
    /// From a sample; the map names the agents' clients by PID (for the `client` label).
    Sample(fn(&Snapshot, &HashMap<u32, String>) -> Vec<Point>),
    /// One point per GPU from its performance figures (NVML's GPM).
    GpuPerf(fn(&GpuPerf) -> Option<f64>),
    /// From the sidecar's own state (`metrics`): not a sample.
    Sidecar,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sample(_) => "Sample",
            Self::GpuPerf(_) => "GpuPerf",
            Self::Sidecar => "Sidecar",
        })
    }
}

/// One exported figure.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Prometheus name without its unit suffix and `_total` (`hw_gpu_memory_usage`).
    pub prometheus: &'static str,
    /// The OTLP name, or why it is not exported.
    pub otlp: Otlp,
    /// The OpenTelemetry semantic convention the figure follows, when one exists (read by the
    /// book's rendering of the table).
    #[cfg_attr(not(test), allow(dead_code))]
    pub convention: Option<&'static str>,
    /// Its unit.
    pub unit: FigureUnit,
    /// Its kind.
    pub kind: Kind,
    /// What it means (Prometheus `HELP`, OTLP description).
    pub help: &'static str,
    /// Where its points come from.
    pub read: Read,
}

impl Figure {
    /// The series' name in a Prometheus scrape (`hw_gpu_memory_usage_bytes`, `…_total`).
    #[cfg(test)]
    pub fn exposed(&self) -> String {
        let mut name = self.prometheus.to_owned();
        if let Some(suffix) = self.unit.prometheus_suffix()
            && !name.ends_with(suffix)
        {
            name = format!("{name}_{suffix}");
        }
        match self.kind {
            Kind::Counter => name + "_total",
            Kind::Info => name + "_info",
            Kind::Gauge | Kind::Histogram => name,
        }
    }

    /// This figure's points in a sample (none for the sidecar's own figures).
    pub fn points(&self, sample: &Snapshot, clients: &HashMap<u32, String>) -> Vec<Point> {
        match self.read {
            Read::Sample(read) => read(sample, clients),
            Read::GpuPerf(get) => sample
                .gpu
                .devices
                .iter()
                .filter_map(|d| {
                    let value = get(d.perf.as_ref()?)?;
                    Some(Point::new(machine::gpu_attributes(d), value))
                })
                .collect(),
            Read::Sidecar => Vec::new(),
        }
    }
}

/// One attribute of a point, named for each side (or left out of one).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The Prometheus label, if the scrape carries it.
    pub prometheus: Option<&'static str>,
    /// The OTLP attribute key, if the export carries it.
    pub otlp: Option<&'static str>,
    /// Its value.
    pub value: String,
}

impl Attribute {
    /// An attribute both sides carry, under these names.
    pub fn both(prometheus: &'static str, otlp: &'static str, value: impl Into<String>) -> Self {
        Self {
            prometheus: Some(prometheus),
            otlp: Some(otlp),
            value: value.into(),
        }
    }
}

/// One value with its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Who or what the value is of.
    pub attributes: Vec<Attribute>,
    /// The value.
    pub value: f64,
}

impl Point {
    /// A point.
    pub fn new(attributes: Vec<Attribute>, value: f64) -> Self {
        Self { attributes, value }
    }

    /// The Prometheus labels.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        self.attributes
            .iter()
            .filter_map(|a| Some((a.prometheus?, a.value.clone())))
            .collect()
    }

    /// The OTLP attributes, as key and value.
    pub fn otlp_attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.attributes
            .iter()
            .filter_map(|a| Some((a.otlp?, a.value.as_str())))
    }
}

static TABLE: LazyLock<Vec<Figure>> = LazyLock::new(|| {
    let mut table: Vec<Figure> = machine::FIGURES.to_vec();
    table.extend(gpu_perf::FIGURES.iter().map(|f| Figure {
        prometheus: f.prometheus,
        otlp: Otlp::Name(f.otlp),
        convention: None,
        unit: match f.unit {
            gpu_perf::PerfUnit::Ratio => FigureUnit::Ratio,
            gpu_perf::PerfUnit::BytesPerSecond => FigureUnit::BytesPerSecond,
        },
        kind: Kind::Gauge,
        help: f.help,
        read: Read::GpuPerf(f.get),
    }));
    table.extend(own::FIGURES);
    table
});

/// Every exported figure: the machine's (from samples), then the sidecar's own.
pub fn table() -> &'static [Figure] {
    &TABLE
}

/// The figures read from samples, the ones `/metrics` shows from the latest sample.
pub fn from_samples() -> impl Iterator<Item = &'static Figure> {
    table().iter().filter(|f| !matches!(f.read, Read::Sidecar))
}

/// The figures the OTLP metrics export sends, with their OTLP names.
pub fn exported_as_otlp() -> impl Iterator<Item = (&'static str, &'static Figure)> {
    from_samples().filter_map(|f| match f.otlp {
        Otlp::Name(name) => Some((name, f)),
        Otlp::Not(_) => None,
    })
}

/// The table as the book shows it (the *Exported figures* chapter; a test keeps the two the
/// same).
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from(
        "| Prometheus | OTLP | convention | unit | kind | what |\n|---|---|---|---|---|---|\n",
    );
    for f in table() {
        let otlp = match f.otlp {
            Otlp::Name(name) => format!("`{name}`"),
            Otlp::Not(why) => format!("— ({why})"),
        };
        let convention = f.convention.map_or("—".to_owned(), |c| format!("`{c}`"));
        let kind = match f.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Info => "info",
        };
        out.push_str(&format!(
            "| `{}` | {otlp} | {convention} | `{}` | {kind} | {} |\n",
            f.exposed(),
            f.unit.ucum(),
            f.help.replace('|', "\\|"),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
