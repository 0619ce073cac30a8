//! The files' names (layout version 1, a contract engines' globs depend on):
//!
//! ```text
//! <table>/date=YYYY-MM-DD/source=<pod>/part-<first>.parquet
//! clients/source=<pod>/clients.parquet
//! ```
//!
//! Hive partitions: `date` is the UTC day of the rows' own time (a run's or span's start, a
//! sample's time, an event's time), `source` the pod (or host) that wrote them. `<first>`
//! names what the file continues from: a continuous export's cursor (20 digits, so names
//! sort as numbers) or a one-shot export's window. The same export done again writes the
//! same names, so a retried interval replaces its files instead of adding rows twice.

use runlens_store::columnar::Table;

/// One file's place in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// The table.
    pub table: Table,
    /// Its UTC day, as days since 1970-01-01 (`None` for `clients`).
    pub day: Option<i64>,
    /// The pod (or host) the rows came from.
    pub source: String,
    /// What the file continues from (`part-<first>`; `clients` for clients).
    pub part: String,
}

impl FileName {
    /// The path relative to the destination's prefix.
    pub fn relative(&self) -> String {
        let source = escape(&self.source);
        match self.day {
            Some(day) => format!(
                "{}/date={}/source={source}/part-{}.parquet",
                self.table.name(),
                date(day),
                self.part
            ),
            None => format!(
                "{}/source={source}/{}.parquet",
                self.table.name(),
                self.part
            ),
        }
    }

    /// Reads a relative path back; `None` for a file that is not part of the layout.
    pub fn parse(relative: &str) -> Option<FileName> {
        let mut parts = relative.split('/');
        let table = Table::from_name(parts.next()?)?;
        let mut day = None;
        let mut source = None;
        let mut file = None;
        for part in parts {
            if let Some(value) = part.strip_prefix("date=") {
                day = Some(parse_date(value)?);
            } else if let Some(value) = part.strip_prefix("source=") {
                source = Some(unescape(value)?);
            } else if part.ends_with(".parquet") {
                file = Some(part.trim_end_matches(".parquet"));
            } else {
                return None;
            }
        }
        let file = file?;
        let part = file.strip_prefix("part-").unwrap_or(file).to_owned();
        if table.by_date() != day.is_some() {
            return None;
        }
        Some(FileName {
            table,
            day,
            source: source?,
            part,
        })
    }
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, proleptic Gregorian).
pub fn date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Howard Hinnant's days-from-civil.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// And back.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A partition value as engines read it back: letters, digits, `.`, `_` and `-` as they
/// are, anything else percent-encoded (Hive's escaping).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("unknown");
    }
    out
}

/// The value of an escaped partition.
pub fn unescape(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_match_the_calendar() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(20_793), "2026-12-06");
        assert_eq!(date(-1), "1969-12-31");
        for day in [-1, 0, 59, 60, 11_016, 20_793, 2_000_000] {
            assert_eq!(parse_date(&date(day)), Some(day));
        }
        assert_eq!(parse_date("2026-13-01"), None);
    }

    #[test]
    fn names_round_trip_with_odd_sources() {
        for source in ["agent-pod-7f9c", "svc/with space", "ünï"] {
            let name = FileName {
                table: Table::Spans,
                day: Some(20_793),
                source: source.to_owned(),
                part: format!("{:020}", 42),
            };
            let relative = name.relative();
            assert!(
                relative.starts_with("spans/date=2026-12-06/source="),
                "{relative}"
            );
            assert_eq!(relative.matches('/').count(), 3, "{relative}");
            assert_eq!(FileName::parse(&relative), Some(name));
        }
        let clients = FileName {
            table: Table::Clients,
            day: None,
            source: "p".into(),
            part: "clients".into(),
        };
        assert_eq!(clients.relative(), "clients/source=p/clients.parquet");
        assert_eq!(FileName::parse(&clients.relative()), Some(clients));
    }

    #[test]
    fn files_outside_the_layout_are_not_read() {
        for path in [
            "README.md",
            "spans/part-1.parquet",
            "nothing/date=2026-01-01/source=a/part-1.parquet",
            "spans/date=2026-01-01/source=a/part-1.csv",
            "clients/date=2026-01-01/source=a/clients.parquet",
        ] {
            assert_eq!(FileName::parse(path), None, "{path}");
        }
    }
}
