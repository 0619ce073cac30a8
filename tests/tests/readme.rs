//! The SQL the README promises runs against a real database.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};

fn readme_sql() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    readme
        .split("```sql\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .flat_map(|block| block.split(';'))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_readme_query_runs_through_runlens_query() {
    let queries = readme_sql();
    assert_eq!(
        queries.len(),
        9,
        "five useful queries and four from the cookbook"
    );
    let mut sidecar = Sidecar::start();
    sidecar.run_example_agent(3);
    sidecar.stop();
    let db = sidecar.db.to_string_lossy().into_owned();
    for sql in &queries {
        let (status, stdout, stderr) = run_bin(
            "runlens",
            &["query", "--db", &db, sql],
            Duration::from_secs(30),
        );
        assert!(status.success(), "{sql}\n{stderr}");
        assert!(stdout.contains(" row"), "{stdout}");
    }
}
