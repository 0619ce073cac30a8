//! The README and the documentation book (`docs/src`) say only what holds: every SQL block
//! runs against a real database; every Rust and TOML block is a compiled file of the
//! repository (`crates/client/examples/*.rs`, `sdk-examples/rust-quickstart`) that records
//! what it says; every `runlens` command is accepted by this build's flags; every other
//! shell command is one a CI script runs (or is marked as needing what CI lacks); every
//! link resolves and every chapter is in the book's summary. (The Python blocks are run by
//! `sdk-examples/python/tests/test_docs.py`.)

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The README and every chapter of the book: (path from the root, text).
fn documents() -> Vec<(String, String)> {
    let mut docs = vec![("README.md".to_owned(), read("README.md"))];
    let mut chapters: Vec<String> = std::fs::read_dir(format!("{ROOT}/docs/src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    chapters.sort();
    for name in chapters {
        let path = format!("docs/src/{name}");
        docs.push((path.clone(), read(&path)));
    }
    docs
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every fenced block of the documents: (document, info string, body).
fn blocks() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, text) in documents() {
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(info) = line.strip_prefix("```") else {
                continue;
            };
            let mut body = String::new();
            for inner in lines.by_ref() {
                if inner.starts_with("```") {
                    break;
                }
                body.push_str(inner);
                body.push('\n');
            }
            out.push((path.clone(), info.trim().to_owned(), body));
        }
    }
    out
}

/// Every statement of every SQL block (comments stay: `runlens query` takes them).
fn docs_sql() -> Vec<String> {
    blocks()
        .into_iter()
        .filter(|(_, info, _)| info == "sql")
        .flat_map(|(_, _, body)| {
            body.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_query_in_the_docs_runs_through_runlens_query() {
    let queries = docs_sql();
    assert_eq!(
        queries.len(),
        11,
        "the README's, six useful queries (sql.md), four from the cookbook (report.md)"
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

/// The body of `crates/client/examples/{name}.rs` without its leading doc comment: what
/// the docs show.
fn example_body(name: &str) -> String {
    let example = read(&format!("crates/client/examples/{name}.rs"));
    example
        .split_once("\n\n")
        .map(|(_, b)| b.to_owned())
        .unwrap()
}

/// Checks that the docs show `crates/client/examples/{name}.rs` and builds it; returns the
/// executable.
fn readme_example(name: &str, features: &[&str]) -> std::path::PathBuf {
    let root = ROOT;
    let body = example_body(name);
    assert!(
        blocks()
            .iter()
            .any(|(_, info, b)| info == "rust" && *b == body),
        "the docs' Rust example differs from crates/client/examples/{name}.rs"
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
    let root = ROOT;
    let readme = read("README.md");
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

/// The Rust and TOML blocks of the docs, each a file of the repository (compiled by the
/// tests above and by `cargo build --workspace`).
#[test]
fn every_rust_and_toml_block_is_a_compiled_file() {
    let files = [
        read("sdk-examples/rust-quickstart/src/main.rs"),
        read("sdk-examples/rust-quickstart/Cargo.toml"),
        example_body("quickstart"),
    ];
    for (path, info, body) in blocks() {
        if info == "rust" || info == "toml" {
            assert!(
                files.contains(&body),
                "{path}: a {info} block that is not a file of the repository:\n{body}"
            );
        }
    }
}

/// Every `runlens` command the docs show is accepted by this build (its arguments checked,
/// nothing run: `RUNLENS_CHECK_ARGS`).
#[test]
fn every_runlens_command_in_the_docs_is_accepted() {
    let mut checked = 0;
    for command in shell_commands() {
        let Some(args) = runlens_args(&command.line) else {
            continue;
        };
        let out = std::process::Command::new(runlens_e2e::bin("runlens"))
            .args(&args)
            .env("RUNLENS_CHECK_ARGS", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: `{}` is refused:\n{}",
            command.path,
            command.line,
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} runlens commands found");
}

/// Commands other than `runlens`, and what runs each in CI (a script that holds the
/// command's start), or why nothing can here.
const EXERCISED: &[(&str, &str)] = &[
    (
        "cargo run --release -p runlens-sidecar -- serve",
        "scripts/check-docs.sh",
    ),
    ("cargo test --workspace", ".ci/run"),
    (
        "cargo build --release -p runlens-fake-nvml",
        "scripts/check-docs.sh",
    ),
    (
        "cargo install --locked --path crates/sidecar",
        "scripts/check-docs.sh",
    ),
    ("cargo run -p example-agent", "scripts/check-docs.sh"),
    ("grpcurl -plaintext", "scripts/check-grpcurl.sh"),
    ("protoc -I proto --go_out", "scripts/check-proto.sh"),
    ("python3 -m venv .venv", "scripts/check-docs.sh"),
    (
        "runlens serve --parquet-export",
        "needs object storage credentials; tests/tests/fleet_parquet.rs runs it on a directory",
    ),
    (
        ".venv/bin/python sdk-examples/python/example_agent.py",
        "scripts/check-docs.sh",
    ),
    ("export OTEL_", "sdk-examples/python/tests/test_docs.py"),
    (
        "kubectl ",
        "needs a cluster: scripts/check-kubernetes.sh runs each container as written",
    ),
];

/// Every shell command of the docs is a `runlens` command (checked above) or one a CI
/// script runs.
#[test]
fn every_other_shell_command_in_the_docs_is_run_by_ci() {
    for command in shell_commands() {
        let synopsis = command.line.starts_with("runlens ") && command.line.contains(" [");
        if runlens_args(&command.line).is_some() || synopsis {
            continue;
        }
        let Some((prefix, by)) = EXERCISED
            .iter()
            .find(|(prefix, _)| command.line.starts_with(prefix))
        else {
            panic!(
                "{}: nothing in CI runs `{}`; run it in a script and list it in EXERCISED",
                command.path, command.line
            );
        };
        if by.starts_with("needs ") {
            continue;
        }
        assert!(
            read(by).contains(prefix.trim_end()),
            "{by} does not run `{prefix}` ({})",
            command.path
        );
    }
}

/// The blocks of other engines' code (DuckDB SQL, PySpark) are in the fleet chapter, and
/// the script that reads the exported files with those engines runs them as shown.
#[test]
fn every_engine_block_is_run_by_the_fleet_check() {
    let mut seen = 0;
    for (path, info, body) in blocks() {
        if info != "duckdb" && info != "pyspark" {
            continue;
        }
        assert_eq!(
            path, "docs/src/fleet.md",
            "a {info} block outside the fleet chapter"
        );
        assert!(!body.trim().is_empty());
        seen += 1;
    }
    assert_eq!(
        seen, 2,
        "the fleet chapter's DuckDB query and Spark snippet"
    );
    let script = read("scripts/check_fleet_parquet.py");
    assert!(script.contains("docs/src/fleet.md") && script.contains("chapter_block(\"duckdb\")"));
}

/// The YAML blocks of the docs, and what uses each.
const YAML_USED_BY: &[(&str, &str)] = &[
    ("docs/src/prometheus.md", "scripts/check-prometheus.sh"),
    (
        "docs/src/export.md",
        "needs the OpenTelemetry Collector, which CI does not install; \
         tests/tests/export.rs checks what runlens sends such a receiver",
    ),
];

/// Every YAML block is used by a CI script as the book shows it (the script reads it out
/// of the chapter), or is marked as needing what CI lacks.
#[test]
fn every_yaml_block_is_used_as_shown() {
    for (path, info, _) in blocks() {
        if info != "yaml" {
            continue;
        }
        let Some((_, by)) = YAML_USED_BY.iter().find(|(doc, _)| *doc == path) else {
            panic!("{path}: a YAML block nothing uses; list it in YAML_USED_BY");
        };
        if !by.starts_with("needs ") {
            assert!(read(by).contains(&path), "{by} does not read {path}");
        }
    }
}

/// A command line of a shell block: comments cut, continuation lines joined.
struct ShellCommand {
    path: String,
    line: String,
}

fn shell_commands() -> Vec<ShellCommand> {
    let mut out = Vec::new();
    for (path, info, body) in blocks() {
        if info != "sh" {
            continue;
        }
        let mut pending = String::new();
        for raw in body.lines() {
            let line = raw.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let line = strip_comment(&pending).trim().to_owned();
            pending.clear();
            out.push(ShellCommand {
                path: path.clone(),
                line,
            });
        }
    }
    out
}

/// The line without a trailing `# comment` (outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('#', None) if i > 0 && line[..i].ends_with(' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The arguments of a `runlens …` command (after any `VAR=value` prefixes, or after
/// `kubectl exec … --`), split as a shell would for the simple quoting the docs use;
/// `None` for other commands. Bracketed synopses (`[--db PATH]`) are not commands.
fn runlens_args(line: &str) -> Option<Vec<String>> {
    if line.contains('[') && !line.contains('"') {
        return None; // a synopsis
    }
    let words = shell_words(line);
    let start = words
        .iter()
        .position(|w| !w.contains('=') || w.starts_with('-'))?;
    let rest = &words[start..];
    let at = if rest.first().map(String::as_str) == Some("runlens") {
        1
    } else {
        let dashes = rest.iter().position(|w| w == "--")?;
        (rest.first()? == "kubectl" && rest.get(dashes + 1)? == "runlens").then_some(dashes + 2)?
    };
    Some(rest[at..].to_vec())
}

fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (c, quote) {
            ('"' | '\'', None) => {
                quote = Some(c);
                any = true;
            }
            (q, Some(open)) if q == open => quote = None,
            (' ', None) => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            _ => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The README is a front door a newcomer reads in minutes; the rest is the book.
#[test]
fn the_readme_is_short() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 200,
        "README.md has {lines} lines; move detail into docs/src"
    );
}

/// Every relative link of the README and the book leads to a file that exists, and every
/// chapter is in the book's summary.
#[test]
fn every_link_resolves_and_every_chapter_is_in_the_summary() {
    for (path, text) in documents() {
        let dir = std::path::Path::new(&path)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let resolved = std::path::Path::new(ROOT).join(&dir).join(file);
            assert!(
                resolved.exists(),
                "{path}: the link to {target} leads nowhere"
            );
        }
    }
    let summary = read("docs/src/SUMMARY.md");
    for (path, _) in documents() {
        if let Some(chapter) = path.strip_prefix("docs/src/")
            && chapter != "SUMMARY.md"
        {
            assert!(
                summary.contains(&format!("({chapter})")),
                "{chapter} is not in docs/src/SUMMARY.md"
            );
        }
    }
}
