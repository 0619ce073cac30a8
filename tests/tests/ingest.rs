//! Nothing acknowledged is lost, nothing is doubled: sidecar crashes, a sidecar that is
//! down, bursts beyond the client's buffer, many clients, and a full disk.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_client::Client;
use runlens_e2e::{Sidecar, free_addr};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sidecar_five_times_loses_and_doubles_nothing() {
    const SPANS: u32 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let addr = free_addr();
    let mut sidecar = Sidecar::start_at(&addr, &db, &[]);
    let client = Client::builder(format!("http://{addr}"))
        .capacity(1_000_000)
        .build()
        .unwrap();
    let run = client.start_run("crash-test");
    // Spans are recorded in chunks (~2 s in all), so crashes land while recording too.
    let started = Instant::now();
    let mut kills = 0;
    let mut recorded = 0;
    while recorded < SPANS || kills < 5 {
        if recorded < SPANS {
            for _ in 0..5_000 {
                run.span("step").end_ok();
            }
            recorded += 5_000;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        if kills < 5 && started.elapsed() > Duration::from_millis(300 * (kills + 1)) {
            let (status, _) = sidecar.stop_with("KILL");
            assert!(!status.success(), "SIGKILL is not a clean exit");
            sidecar = Sidecar::start_at(&addr, &db, &[]);
            kills += 1;
        }
    }
    run.end_ok();
    client
        .flush_timeout(Duration::from_secs(180))
        .await
        .unwrap();
    sidecar.stop();
    assert_eq!(kills, 5);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans"),
        i64::from(SPANS)
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        i64::from(SPANS)
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
    assert_eq!(client.dropped(), 0);
    assert_eq!(
        client.rejected(),
        0,
        "resends after crashes were recognised, not refused"
    );
}

#[tokio::test]
async fn the_agent_is_not_slowed_while_the_sidecar_is_down_and_everything_arrives() {
    let addr = free_addr();
    let client = Client::builder(format!("http://{addr}")).build().unwrap();
    let mut slowest = Duration::ZERO;
    let mut runs: i64 = 0;
    let down_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < down_until {
        let t = Instant::now();
        let run = client.start_run("offline");
        run.span("step").end_ok();
        run.end_ok();
        slowest = slowest.max(t.elapsed());
        runs += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Recording never waited for the network (connect attempts run in the background);
    // the bound is loose so that a busy CI machine cannot fail it.
    assert!(
        slowest < Duration::from_millis(500),
        "slowest recording call: {slowest:?}"
    );
    assert!(
        client
            .flush_timeout(Duration::from_millis(200))
            .await
            .is_err()
    );
    // Every message is held: run start, span start, span end, run end.
    assert_eq!(client.unacknowledged(), 4 * runs.unsigned_abs());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_at(&addr, &dir.path().join("late.db"), &[]);
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        runs
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        runs
    );
}

#[tokio::test]
async fn a_burst_beyond_the_buffer_counts_exactly_what_was_dropped_in_sql() {
    let addr = free_addr();
    let client = Client::builder(format!("http://{addr}"))
        .name("bursty")
        .capacity(1_000)
        .build()
        .unwrap();
    let run = client.start_run("burst"); // message 1
    for i in 0..2_999 {
        run.metric("m", f64::from(i), ""); // 999 kept, 2,000 dropped
    }
    assert_eq!(client.dropped(), 2_000);
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_at(&addr, &dir.path().join("burst.db"), &[]);
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    run.end_ok();
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE kind = 'metric'"),
        999
    );
    assert_eq!(
        sidecar.count("SELECT dropped_messages FROM clients WHERE client_name = 'bursty'"),
        2_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_at_once_each_complete() {
    let mut sidecar = Sidecar::start();
    let endpoint = sidecar.endpoint();
    // A reader keeps querying while the 32 clients write: WAL readers neither block the
    // writer nor see "database is locked".
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let db = sidecar.db.to_string_lossy().into_owned();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut queries = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _, stderr) = runlens_e2e::run_bin(
                    "runlens",
                    &["query", "--db", &db, "select count(*) from span_resources"],
                    Duration::from_secs(30),
                );
                assert!(status.success(), "query during ingest failed: {stderr}");
                queries += 1;
            }
            queries
        })
    };
    let mut tasks = Vec::new();
    for c in 0..32 {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::builder(endpoint)
                .name(format!("agent-{c}"))
                .build()
                .unwrap();
            let run = client.start_run(format!("agent-{c}"));
            for i in 0..1_000 {
                let span = run.span("step");
                span.metric("i", f64::from(i), "");
                span.end_ok();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            run.end_ok();
            client
                .flush_timeout(Duration::from_secs(120))
                .await
                .unwrap();
            (client.dropped(), client.rejected())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (0, 0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() >= 1, "the reader ran during ingest");
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        32
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM (SELECT run_id, count(*) AS n FROM spans WHERE status = 'ok'
             GROUP BY run_id HAVING n = 1000)"
        ),
        32,
        "every client's spans complete"
    );
    assert_eq!(sidecar.count("SELECT count(*) FROM events"), 32_000);
}

async fn serving(sidecar: &Sidecar) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Channel::from_shared(sidecar.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest {
            service: "runlens.v1.Runlens".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn a_full_disk_holds_data_reports_it_and_resumes_when_space_is_freed() {
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("full.db");
    // A database with 1.5 MiB of ballast, capped at 2 MiB: little room left.
    Sidecar::start_on(&db, &[]).stop();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE ballast (b BLOB)").unwrap();
        conn.execute("INSERT INTO ballast VALUES (zeroblob(1572864))", [])
            .unwrap();
    }
    let mut sidecar = Sidecar::start_on(&db, &["--max-db-mib", "2"]);
    assert_eq!(serving(&sidecar).await, SERVING);
    let client = Client::builder(sidecar.endpoint()).build().unwrap();
    let run = client.start_run("filling");
    for i in 0..4_000 {
        run.span_with("step", [("i", i.to_string())], false)
            .end_ok();
    }
    run.end_ok();
    assert!(
        client.flush_timeout(Duration::from_secs(3)).await.is_err(),
        "the disk is full"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while serving(&sidecar).await != NOT_SERVING {
        assert!(Instant::now() < deadline, "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut raw = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let refused = raw
        .start_run(pb::StartRunRequest {
            run_id: "while-full".into(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("storage is failing"),
        "{refused:?}"
    );
    // OTLP senders hear the same: 503 with Retry-After, nothing stored, retry later.
    let otlp = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"while full","startTimeUnixNano":"1000","endTimeUnixNano":"2000"}]}]}]}"#;
    let answer = runlens_e2e::http_post(
        sidecar.otlp_http.as_deref().unwrap(),
        "/v1/traces",
        &[("Content-Type", "application/json")],
        otlp.as_bytes(),
    );
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&answer.body).contains("storage is failing"));
    let stored_while_full = sidecar.count("SELECT count(*) FROM spans");
    assert!(stored_while_full < 4_000);

    // Free space: the sidecar notices on its next retry and takes everything held.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("DROP TABLE ballast").unwrap();
    }
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    assert_eq!(serving(&sidecar).await, SERVING);
    let logs = sidecar.stop();
    assert!(logs.contains("storage write failed"), "{logs}");
    assert!(logs.contains("storage is writable again"), "{logs}");
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        4_000
    );
    assert_eq!(
        sidecar.count("SELECT count(DISTINCT span_id) FROM spans"),
        4_000
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
    assert_eq!(client.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_writer_answers_resource_exhausted_to_unary_calls_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saturated.db");
    let mut sidecar = Sidecar::start_on(&db, &[]);
    // Another writer holds the database: the sidecar's writer waits on it (SQLite's busy
    // timeout, 5 s, before it calls storage failing) and its queue fills behind it.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let client = Client::builder(sidecar.endpoint()).build().unwrap();
    let run = client.start_run("flood");
    // More messages than the writer's queue (16,384) and one batch (4,096) hold.
    for i in 0..30_000 {
        run.metric("m", f64::from(i), "");
    }
    let mut raw = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let start = |id: &str| {
        let mut request = tonic::Request::new(pb::StartRunRequest {
            run_id: id.into(),
            name: "unary".into(),
            ..Default::default()
        });
        // A call that got into the queue waits for its commit: don't wait for it here.
        request.set_timeout(Duration::from_millis(200));
        request
    };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut probes = 0;
    let refused = loop {
        assert!(Instant::now() < deadline, "the queue never filled");
        probes += 1;
        match raw.start_run(start(&format!("probe-{probes}"))).await {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            Err(status) => assert_eq!(status.code(), Code::Cancelled, "{status:?}"),
            Ok(_) => panic!("a unary call was committed while the database was held"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused.message().contains("write queue is full") && refused.message().contains("retry"),
        "{refused:?}"
    );
    assert!(client.unacknowledged() > 0);

    // The other writer lets go: everything held is stored and unary calls work again.
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    let mut again = start("after");
    again.set_timeout(Duration::from_secs(15));
    raw.start_run(again).await.unwrap();
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE kind = 'metric'"),
        30_000
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE run_id = 'after'"),
        1
    );
    // The refused call changed nothing.
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM runs WHERE run_id = 'probe-{probes}'"
        )),
        0
    );
}
