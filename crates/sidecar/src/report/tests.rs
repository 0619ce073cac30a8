//! The report against a straightforward computation, over many random histories (the
//! benchmark's generator with other seeds, sizes and effects): every latency percentile
//! equals SQL's nearest rank (the README cookbook's query) and every Spearman ρ of
//! duration with GPU free memory equals a naive one (average ranks by counting, Pearson
//! by its definition). A faster or streaming report must keep passing this.

use rusqlite::{Connection, params};

use super::{Options, Resource, build};
use crate::cli::Effect;
use crate::commands::bench::report::build_history_seeded;

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

/// (GPU free bytes at span start, duration ms) of one step's spans.
fn pairs(conn: &Connection, name: &str) -> (Vec<f64>, Vec<f64>) {
    let mut stmt = conn
        .prepare(
            "SELECT (SELECT min(memory_free_bytes) FROM gpu_samples g
                     WHERE g.snapshot_id = sp.start_snapshot_id AND g.state = 'ok'),
                    (sp.ended_at_ns - sp.started_at_ns) / 1e6
             FROM spans sp WHERE sp.name = ?1 AND sp.ended_at_ns IS NOT NULL",
        )
        .unwrap();
    let rows: Vec<(Option<i64>, f64)> = stmt
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.into_iter()
        .filter_map(|(free, d)| Some((free? as f64, d)))
        .unzip()
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
        let conn = crate::store::open_read_only(&db).unwrap();
        let report = build(
            &conn,
            &Options {
                since_ns: 0,
                until_ns: i64::MAX,
                all_ids: true,
                run_id: None,
                name: None,
                oom_threshold_bytes: 500 << 20,
                group: None,
            },
        )
        .unwrap();
        assert_eq!(report.latency.len(), 3, "seed {seed}");
        for l in &report.latency {
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM spans WHERE name = ?1 AND ended_at_ns IS NOT NULL",
                    [&l.name],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(l.count as i64, n, "seed {seed} {}", l.name);
            for (percent, got) in [(50, l.p50_ms), (95, l.p95_ms), (99, l.p99_ms)] {
                let want = sql_percentile(&conn, &l.name, percent);
                assert!(
                    close(got, want),
                    "seed {seed} {} p{percent}: report {got}, SQL {want}",
                    l.name
                );
            }
            let (free, durations) = pairs(&conn, &l.name);
            let want = naive_pearson(&naive_ranks(&free), &naive_ranks(&durations));
            let got = report
                .correlations
                .iter()
                .find(|c| c.name == l.name && c.resource == Resource::GpuFreeMemory)
                .unwrap_or_else(|| panic!("seed {seed}: no correlation for {}", l.name));
            assert_eq!(got.n, free.len(), "seed {seed} {}", l.name);
            assert!(
                close(got.rho, want),
                "seed {seed} {}: report ρ {}, naive {want}",
                l.name,
                got.rho
            );
        }
    }
}
