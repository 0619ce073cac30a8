//! The `runlens` command line as a user meets it: output, errors and exit codes.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn runlens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runlens"))
        .args(args)
        .env("RUNLENS_NVML_LIB", "none")
        .env_remove("RUNLENS_DB")
        .output()
        .expect("run runlens")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in bytes.
fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

#[test]
fn snapshot_json_agrees_with_proc_meminfo() {
    let out = runlens(&["snapshot", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (total, available) = meminfo();
    let got_total = json["host"]["ram_total_bytes"].as_u64().unwrap();
    let got_available = json["host"]["ram_available_bytes"].as_u64().unwrap();
    let got_used = json["host"]["ram_used_bytes"].as_u64().unwrap();
    let within = |a: u64, b: u64| (a as f64 - b as f64).abs() <= 0.02 * b as f64;
    assert!(within(got_total, total), "total {got_total} vs {total}");
    assert!(
        within(got_available, available),
        "available {got_available} vs {available}"
    );
    assert_eq!(got_used, got_total - got_available);
    assert!(
        json["host"]["cpu_utilization_ratio"].is_number(),
        "measured after warm-up"
    );
    assert_eq!(json["gpu"]["available"], false);
    assert!(
        json["gpu"]["unavailable_reason"]
            .as_str()
            .unwrap()
            .contains("--nvml-lib none")
    );
}

#[test]
fn an_nvml_library_path_that_does_not_exist_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let out = Command::new(env!("CARGO_BIN_EXE_runlens"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
            "--nvml-lib",
            "/does/not/exist/libnvidia-ml.so.1",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--nvml-lib /does/not/exist/libnvidia-ml.so.1: no such file"),
        "{}",
        stderr(&out)
    );
    assert!(!db.exists(), "refused before anything was created");
}

#[test]
fn snapshot_table_is_readable_in_100_columns() {
    let out = runlens(&["snapshot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for start in [
        "runlens snapshot at ",
        "CPU   ",
        "RAM   used ",
        "GPU   none: ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(start)),
            "no {start:?} line:\n{text}"
        );
    }
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    assert!(
        stderr(&out).is_empty(),
        "one-shot commands log nothing on success: {}",
        stderr(&out)
    );
}

#[test]
fn serve_refuses_a_database_that_is_not_runlens() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not sqlite at all, just text".repeat(200),
    )
    .unwrap();
    // Every listener on a free port or off: a sidecar on the default ports may be running.
    let quiet = [
        "--otlp-grpc-listen",
        "off",
        "--otlp-http-listen",
        "off",
        "--metrics-listen",
        "off",
    ];
    let out = runlens(
        &[
            &["serve", "--listen", "127.0.0.1:0", "--db"][..],
            &[garbage.to_str().unwrap()],
            &quiet,
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a usable SQLite database"),
        "{}",
        stderr(&out)
    );

    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x)")
        .unwrap();
    let out = runlens(
        &[
            &["serve", "--listen", "127.0.0.1:0", "--db"][..],
            &[other.to_str().unwrap()],
            &quiet,
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(
        stderr(&out).contains("not a runlens one"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_reports_a_taken_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let out = runlens(&["serve", "--listen", &addr, "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("choose another address with --listen"));

    // A taken OTLP port names its own flag, and how to do without it.
    let out = runlens(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--otlp-grpc-listen",
        &addr,
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "choose another address with --otlp-grpc-listen (or `--otlp-grpc-listen off`)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_taken_port_is_named_in_one_message() {
    let taken: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addr = |i: usize| taken[i].local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let out = runlens(&[
        "serve",
        "--listen",
        &addr(0),
        "--otlp-grpc-listen",
        &addr(1),
        "--otlp-http-listen",
        "off",
        "--metrics-listen",
        &addr(2),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("3 listeners cannot start"), "{text}");
    for (i, flag) in ["--listen", "--otlp-grpc-listen", "--metrics-listen"]
        .iter()
        .enumerate()
    {
        assert!(
            text.contains(&format!("cannot listen on {}", addr(i))) && text.contains(flag),
            "{flag}: {text}"
        );
    }
    assert!(
        !db.exists(),
        "nothing created before the listeners are all bound"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = runlens(&["serve", "--sample-interval", "1ms"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("minimum"), "{}", stderr(&out));
    let out = runlens(&["serve", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn a_misspelt_flag_is_a_usage_error_on_every_subcommand_and_help_is_not() {
    for sub in [
        vec!["serve"],
        vec!["snapshot"],
        vec!["query"],
        vec!["doctor"],
        vec!["report"],
        vec!["stress"],
        vec!["bench", "agent"],
        vec!["merge"],
        vec!["backup"],
        vec!["top"],
    ] {
        let mut args = sub.clone();
        args.push("--no-such-flag");
        let out = runlens(&args);
        assert_eq!(out.status.code(), Some(64), "{sub:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--no-such-flag"), "{sub:?}");
    }
    assert_eq!(runlens(&["--help"]).status.code(), Some(0));
    assert_eq!(runlens(&["query", "--help"]).status.code(), Some(0));
    assert_eq!(runlens(&["--version"]).status.code(), Some(0));
}

#[test]
fn a_misspelt_query_flag_before_the_sql_is_named_as_such() {
    let out = runlens(&["query", "--fromat", "json", "select 1"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--fromat is not a flag of runlens query (did you mean --format?)"),
        "{}",
        stderr(&out)
    );
    // A statement that starts with a comment is still SQL.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    rusqlite::Connection::open(&db).unwrap();
    let out = runlens(&[
        "query",
        "--db",
        db.to_str().unwrap(),
        "-- one\nselect 1 as one",
    ]);
    assert!(!stderr(&out).contains("not a flag"), "{}", stderr(&out));
}

#[test]
fn query_explains_missing_databases() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = runlens(&["query", "--db", missing.to_str().unwrap(), "select 1"]);
    assert_eq!(out.status.code(), Some(66));
    assert!(
        stderr(&out).contains("runlens serve --db"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("RUNLENS_DB"), "{}", stderr(&out));
    // RUNLENS_DB stands in for --db, as the README says.
    let out = Command::new(env!("CARGO_BIN_EXE_runlens"))
        .args(["query", "select 1"])
        .env("RUNLENS_DB", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_names_every_subcommand() {
    let out = runlens(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for sub in [
        "serve", "snapshot", "query", "doctor", "report", "stress", "bench",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from --help:\n{text}"
        );
    }
    let out = runlens(&["serve", "--help"]);
    let text = stdout(&out);
    for env in [
        "RUNLENS_LISTEN",
        "RUNLENS_DB",
        "RUNLENS_SAMPLE_INTERVAL",
        "RUNLENS_NVML_LIB",
        "RUNLENS_CGROUP_ROOT",
        "RUNLENS_DURABILITY",
        "RUNLENS_MAX_DB_MIB",
        "RUNLENS_CLIENT_TIMEOUT",
    ] {
        assert!(text.contains(env), "{env} missing from serve --help");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `runlens report | head -1`: the reader goes away before the output is written.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let db = db.to_str().unwrap();
    let built = runlens(&[
        "bench",
        "report",
        "--spans",
        "2000",
        "--db",
        db,
        "--build-only",
    ]);
    assert!(built.status.success(), "{}", stderr(&built));
    for args in [
        vec!["report", "--db", db],
        vec!["query", "--db", db, "SELECT * FROM spans"],
        vec!["snapshot"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runlens"))
            .args(&args)
            .env("RUNLENS_NVML_LIB", "none")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// `runlens serve` on `db` with every listener on a free port or off, stdout piped.
fn spawn_serve(db: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_runlens"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args([
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
        ])
        .env("RUNLENS_NVML_LIB", "none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

#[test]
fn a_second_serve_on_the_same_database_is_refused_naming_the_first() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one.db");
    let mut first = spawn_serve(&db);
    let mut line = String::new();
    std::io::BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let second = Command::new(env!("CARGO_BIN_EXE_runlens"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args([
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
        ])
        .env("RUNLENS_NVML_LIB", "none")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(69), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("another runlens serve (pid {})", first.id())),
        "{}",
        stderr(&second)
    );
    // Readers are not locked out.
    let out = runlens(&[
        "query",
        "--db",
        db.to_str().unwrap(),
        "select count(*) as n from runs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    signal(&first, "INT");
    assert!(first.wait().unwrap().success());
}

#[test]
fn sigint_and_sigterm_early_in_start_up_stop_the_sidecar_cleanly() {
    for name in ["INT", "TERM"] {
        for after_ms in [10, 30, 100] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("early.db");
            let mut child = spawn_serve(&db);
            std::thread::sleep(std::time::Duration::from_millis(after_ms));
            signal(&child, name);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "SIG{name} {after_ms} ms after start: still running"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert_eq!(
                status.code(),
                Some(0),
                "SIG{name} {after_ms} ms after start: {status}"
            );
            if db.exists() {
                // Whatever was started is whole: the schema is at its version.
                let out = runlens(&[
                    "query",
                    "--db",
                    db.to_str().unwrap(),
                    "select count(*) from snapshots",
                ]);
                assert!(out.status.success(), "{}", stderr(&out));
            }
        }
    }
}

/// The subcommands a `--help` lists (`help` aside).
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut help: Vec<&str> = args.to_vec();
    help.push("--help");
    let text = stdout(&runlens(&help));
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_misspelt_flag_is_a_usage_error_on_every_subcommand() {
    let mut commands: Vec<Vec<String>> = Vec::new();
    for command in subcommands(&[]) {
        let nested = subcommands(&[&command]);
        if nested.is_empty() {
            commands.push(vec![command]);
        } else {
            commands.extend(nested.into_iter().map(|n| vec![command.clone(), n]));
        }
    }
    assert!(commands.len() >= 20, "{commands:?}");
    assert!(commands.contains(&vec!["export".to_owned(), "parquet".to_owned()]));
    for command in &commands {
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("--no-such-flag");
        let out = runlens(&args);
        // EX_USAGE, as every check after parsing; clap's own code would be 2.
        assert_eq!(out.status.code(), Some(64), "{command:?}: {}", stderr(&out));
        // Named, so the user sees which word was refused.
        assert!(
            stderr(&out).contains("'--no-such-flag'") || stderr(&out).contains("--no-such-flag is"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
}
