//! The SQL the README promises runs against a real database, and its Rust examples are the
//! compiled `crates/client/examples/quickstart.rs` and `sdk-examples/rust-quickstart`, and
//! record what they say.

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
        11,
        "six useful queries, four from the cookbook, one over a merged fleet"
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

/// Checks that the README shows `crates/client/examples/{name}.rs` (without its leading doc
/// comment) and builds it; returns the executable.
fn readme_example(name: &str, features: &[&str]) -> std::path::PathBuf {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/crates/client/examples/{name}.rs")).unwrap();
    let body = example.split_once("\n\n").map(|(_, b)| b).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{body}```")),
        "README's Rust example differs from crates/client/examples/{name}.rs"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-p", "runlens-client", "--example", name]);
    for feature in features {
        build.args(["--features", feature]);
    }
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    assert!(build.current_dir(root).status().unwrap().success());
    runlens_e2e::bin("runlens")
        .with_file_name("examples")
        .join(name)
}

/// Runs an example against `sidecar`; it must succeed without a word on stderr (its
/// shutdown returned Ok: everything committed, nothing warned about).
fn run_example(exe: &std::path::Path, sidecar: &Sidecar) {
    let out = std::process::Command::new(exe)
        .env("RUNLENS_ENDPOINT", sidecar.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_rust_example_is_the_compiled_quickstart_and_records_what_it_says() {
    let exe = readme_example("quickstart", &[]);
    let mut sidecar = Sidecar::start();
    run_example(&exe, &sidecar);
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

/// The README's quick start: `sdk-examples/rust-quickstart`'s `Cargo.toml` and
/// `src/main.rs`, shown whole, a workspace member built with the tests.
fn readme_quickstart() -> std::path::PathBuf {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    for (file, fence) in [("Cargo.toml", "toml"), ("src/main.rs", "rust")] {
        let text =
            std::fs::read_to_string(format!("{root}/sdk-examples/rust-quickstart/{file}")).unwrap();
        assert!(
            readme.contains(&format!("```{fence}\n{text}```")),
            "README does not show sdk-examples/rust-quickstart/{file} as it is"
        );
    }
    runlens_e2e::bin("runlens-quickstart")
}

#[test]
fn the_readme_quick_start_records_instrumented_functions() {
    let exe = readme_quickstart();
    let mut sidecar = Sidecar::start();
    run_example(&exe, &sidecar);
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM runs WHERE name = 'answer_question' AND status = 'ok'
               AND json_extract(attributes, '$.question') LIKE '%why is the sky blue?%'"
        ),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans s JOIN spans p ON p.span_id = s.parent_span_id
             WHERE p.name = 'plan' AND s.name = 'tool_call' AND s.status = 'failed'
               AND s.error = 'search timed out'"
        ),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE name = 'llm_call' AND status = 'ok'
               AND json_extract(attributes, '$.model') = 'llama-3-8b'"
        ),
        1
    );
    sidecar.stop();
}

#[test]
fn the_readme_quick_start_logs_and_goes_on_when_the_sidecar_is_down() {
    let exe = readme_quickstart();
    let began = std::time::Instant::now();
    let out = std::process::Command::new(exe)
        .env(
            "RUNLENS_ENDPOINT",
            format!("http://{}", runlens_e2e::free_addr()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "an agent must not fail for its observer: {stdout}"
    );
    assert!(
        stdout.contains("runlens did not store everything"),
        "{stdout}"
    );
    assert!(began.elapsed() < Duration::from_secs(30));
}
