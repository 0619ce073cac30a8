//! The report against a straightforward computation, over many random histories (the
//! benchmark's generator with other seeds, sizes and effects): every latency percentile
//! equals SQL's nearest rank (the README cookbook's query) and every Spearman ρ of
//! duration with each resource equals a naive one (average ranks by counting, Pearson by
//! its definition), as do the resources' medians and the under/without pressure
//! percentiles. A faster or streaming report must keep passing this.

use rusqlite::{Connection, params};

use super::{Options, Resource, build};
use runlens_store::synthetic::{Effect, build_history_seeded};

/// Average ranks (1-based) by counting: O(n²), obviously right.
fn naive_ranks(values: &[f64]) -> Vec<f64> {
    values
        .iter()
        .map(|v| {
            let below = values.iter().filter(|w| *w < v).count() as f64;
            let equal = values.iter().filter(|w| *w == v).count() as f64;
            below + (equal + 1.0) / 2.0
        })
        .collect()
}

fn naive_pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum::<f64>().sqrt();
    let sy: f64 = y.iter().map(|b| (b - my).powi(2)).sum::<f64>().sqrt();
    cov / (sx * sy)
}

/// The nearest-rank percentile `percent` of one step's durations, in SQL.
fn sql_percentile(conn: &Connection, name: &str, percent: u32) -> f64 {
    conn.query_row(
        "SELECT d FROM (
           SELECT (ended_at_ns - started_at_ns) / 1e6 AS d,
                  row_number() OVER (ORDER BY ended_at_ns - started_at_ns) AS k,
                  count(*) OVER () AS n
           FROM spans WHERE name = ?1 AND ended_at_ns IS NOT NULL)
         WHERE k = (?2 * n + 99) / 100",
        params![name, percent],
        |r| r.get(0),
    )
    .unwrap()
}

/// A figure of a span's start snapshot, in SQL over `sp` (the span) and `s` (its snapshot),
/// as the report defines it, for each [`Resource`] the synthetic history has.
const FIGURES: [(Resource, &str); 4] = [
    (
        Resource::GpuFreeMemory,
        "(SELECT min(memory_free_bytes) FROM gpu_samples g
          WHERE g.snapshot_id = sp.start_snapshot_id AND g.state = 'ok')",
    ),
    (
        Resource::GpuUtilization,
        "(SELECT max(utilization_ratio) FROM gpu_samples g
          WHERE g.snapshot_id = sp.start_snapshot_id AND g.state = 'ok')",
    ),
    (Resource::CpuLoadPerCore, "s.cpu_load_1m / s.cpu_count"),
    (
        Resource::RamHeadroom,
        "CAST(s.ram_available_bytes AS REAL) / s.ram_total_bytes",
    ),
];

/// (figure at span start, duration ms) of one step's spans that have the figure.
fn pairs(conn: &Connection, name: &str, figure: &str) -> (Vec<f64>, Vec<f64>) {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {figure}, (sp.ended_at_ns - sp.started_at_ns) / 1e6
             FROM spans sp LEFT JOIN snapshots s ON s.snapshot_id = sp.start_snapshot_id
             WHERE sp.name = ?1 AND sp.ended_at_ns IS NOT NULL"
        ))
        .unwrap();
    let rows: Vec<(Option<f64>, f64)> = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.into_iter()
        .filter_map(|(figure, d)| Some((figure?, d)))
        .unzip()
}

/// The nearest-rank percentile `q` of `values`, by sorting them.
fn sorted_percentile(mut values: Vec<f64>, q: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).checked_sub(1)?;
    values.get(i).copied()
}

/// The whole history, every id listed, pressure below 500 MiB of GPU memory free.
fn everything() -> Options {
    Options {
        since_ns: 0,
        until_ns: i64::MAX,
        all_ids: true,
        run_id: None,
        name: None,
        oom_threshold_bytes: 500 << 20,
        group: None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn latency_and_correlations_equal_a_straightforward_computation_over_random_histories() {
    for seed in 1..=10u64 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let spans = 150 + (seed * 137) % 1200;
        let effect = if seed % 2 == 0 {
            Effect::Planted
        } else {
            Effect::None
        };
        build_history_seeded(&db, spans, effect, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
        let conn = runlens_store::open_read_only(&db).unwrap();
        let report = build(&conn, &everything()).unwrap();
        assert_eq!(report.latency.len(), 3, "seed {seed}");
        holds_to_naive(&conn, &report, &format!("seed {seed}"));
    }
}

#[test]
fn many_small_steps_equal_a_straightforward_computation() {
    // 400 step names over 2,000 spans and 200 snapshots: every step touches under 1/32 of
    // the snapshots, so each is ranked by sorting the snapshots it touched.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    build_history_seeded(&db, 2000, Effect::Planted, 11).unwrap();
    Connection::open(&db)
        .unwrap()
        .execute("UPDATE spans SET name = name || '-' || (rowid % 400)", [])
        .unwrap();
    let conn = runlens_store::open_read_only(&db).unwrap();
    let report = build(&conn, &everything()).unwrap();
    let names: i64 = conn
        .query_row("SELECT count(DISTINCT name) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert!(names >= 300, "{names}");
    assert_eq!(report.latency.len() as i64, names);
    holds_to_naive(&conn, &report, "many steps");
}

/// Every step of `report` (of the history in `conn`) against the straightforward
/// computation: count, percentiles, ρ and median per resource, the pressure split.
fn holds_to_naive(conn: &Connection, report: &super::Report, label: &str) {
    for l in &report.latency {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM spans WHERE name = ?1 AND ended_at_ns IS NOT NULL",
                [&l.name],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(l.count as i64, n, "{label} {}", l.name);
        for (percent, got) in [(50, l.p50_ms), (95, l.p95_ms), (99, l.p99_ms)] {
            let want = sql_percentile(conn, &l.name, percent);
            assert!(
                close(got, want),
                "{label} {} p{percent}: report {got}, SQL {want}",
                l.name
            );
        }
        for (resource, figure) in FIGURES {
            let (values, durations) = pairs(conn, &l.name, figure);
            let want = naive_pearson(&naive_ranks(&values), &naive_ranks(&durations));
            let got = report
                .correlations
                .iter()
                .find(|c| c.name == l.name && c.resource == resource)
                .unwrap_or_else(|| panic!("{label}: no {resource:?} for {}", l.name));
            assert_eq!(got.n, values.len(), "{label} {}", l.name);
            assert!(
                close(got.rho, want),
                "{label} {} {resource:?}: report ρ {}, naive {want}",
                l.name,
                got.rho
            );
            let context = report.context.iter().find(|c| c.name == l.name).unwrap();
            let median = match resource {
                Resource::GpuFreeMemory => context.gpu_free_min_mib_p50.map(|m| m * 1048576.0),
                Resource::GpuUtilization => context.gpu_utilization_p50,
                Resource::CpuLoadPerCore => context.cpu_load_per_core_p50,
                _ => context.ram_headroom_ratio_p50,
            };
            let want = sorted_percentile(values, 0.5).unwrap();
            assert!(
                median.is_some_and(|m| close(m, want)),
                "{label} {} {resource:?}: median {median:?}, naive {want}",
                l.name
            );
        }
        // Under pressure: here only GPU memory below the threshold (load and RAM stay
        // clear of theirs in this history).
        let (free, durations) = pairs(conn, &l.name, FIGURES[0].1);
        let (mut under, mut normal) = (Vec::new(), Vec::new());
        for (f, d) in free.iter().zip(durations) {
            if *f < (500u64 << 20) as f64 {
                under.push(d);
            } else {
                normal.push(d);
            }
        }
        let pressure = report.pressure.iter().find(|p| p.name == l.name).unwrap();
        for (group, want) in [
            (&pressure.under_pressure, under),
            (&pressure.no_pressure, normal),
        ] {
            assert_eq!(group.n, want.len(), "{label} {}", l.name);
            assert_eq!(group.p50_ms, sorted_percentile(want.clone(), 0.5));
            assert_eq!(group.p95_ms, sorted_percentile(want, 0.95));
        }
    }
}

/// The report of `conn` as JSON, without the moment it was made.
fn report_json(conn: &Connection) -> serde_json::Value {
    let mut json = serde_json::to_value(build(conn, &everything()).unwrap()).unwrap();
    json["generated_at_ns"] = serde_json::Value::Null;
    json
}

#[test]
fn spans_read_beside_the_snapshots_give_the_report_read_one_after_the_other() {
    // A file is read on two connections at once (spans in a thread); an in-memory copy
    // has no file to open again and is read in sequence. Snapshot ids with gaps make the
    // spans' snapshot offsets go through the index, and spans whose start snapshot is
    // gone (the first one too: below the smallest id left) have none.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    build_history_seeded(&db, 900, Effect::Planted, 7).unwrap();
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             DELETE FROM gpu_samples WHERE snapshot_id % 7 = 0 OR snapshot_id = 1;
             DELETE FROM snapshots WHERE snapshot_id % 7 = 0 OR snapshot_id = 1;",
        )
        .unwrap();
    }
    let file = runlens_store::open_read_only(&db).unwrap();
    let mut memory = Connection::open_in_memory().unwrap();
    memory
        .restore(
            rusqlite::MAIN_DB,
            &db,
            None::<fn(rusqlite::backup::Progress)>,
        )
        .unwrap();
    let (from_file, from_memory) = (report_json(&file), report_json(&memory));
    assert_eq!(from_file["spans_analyzed"], 900);
    assert!(from_file["context"][0]["n"].as_u64().unwrap() > 0);
    assert_eq!(from_file, from_memory);
}
