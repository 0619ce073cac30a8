//! The SQL the README promises runs against a real database, and its Rust example is the
//! compiled `crates/client/examples/quickstart.rs` and records what it says.

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

#[test]
fn the_readme_rust_example_is_the_compiled_quickstart_and_records_what_it_says() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/crates/client/examples/quickstart.rs")).unwrap();
    // The README shows the file without its leading doc comment.
    let body = example.split_once("\n\n").map(|(_, b)| b).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{body}```")),
        "README's Rust example differs from crates/client/examples/quickstart.rs"
    );

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "runlens-client", "--example", "quickstart"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    assert!(build.current_dir(root).status().unwrap().success());
    let exe = runlens_e2e::bin("runlens")
        .with_file_name("examples")
        .join("quickstart");

    let mut sidecar = Sidecar::start();
    let out = std::process::Command::new(exe)
        .env("RUNLENS_ENDPOINT", sidecar.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // shutdown() returned Ok: everything is committed, nothing warned about.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE name = 'answer-question' AND status = 'ok'"),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE name = 'tool_call' AND status = 'failed'
               AND error = 'search timed out'"
        ),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE name IN ('plan', 'llm_call') AND status = 'ok'"
        ),
        2
    );
    sidecar.stop();
}
