//! Agents whose clock is off: the sidecar estimates each client's offset from its
//! messages' times against their arrival, names the client (a warning once, a gauge, the
//! `clients` row, `doctor`), and never shows a skewed client another moment's machine:
//! by default its boundaries get no sample; with `--clock-skew-correction` they get the
//! sample nearest their corrected time. Senders are an OTLP exporter and a runlens.v1
//! session, each stamping times off by a set amount, across real processes.
//! (`scripts/check-clock-skew.sh` does the same with real agents under `faketime`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_e2e::{Sidecar, http_get};
use tokio_stream::wrappers::ReceiverStream;

const S: i64 = 1_000_000_000;
/// The matching window of these sidecars (twice `--sample-interval 1s`), ns.
const WINDOW_NS: i64 = 2 * S;
/// How long each sender sends, one message every half second: the estimate is trusted
/// after five arrival seconds spanning four.
const SENDING: Duration = Duration::from_secs(7);
/// Senders: (name, clock offset). Behind by 10 s: beyond the window and beyond what a
/// batching sender delivers late, while samples from 10 s earlier exist, so matching on
/// its own times would show another moment.
const SENDERS: [(&str, i64); 3] = [
    ("ahead-30s", 30 * S),
    ("behind-10s", -10 * S),
    ("close-200ms", S / 5),
];
/// Samples stored before the senders start: what a clock 10 s behind points at by the end.
const HISTORY: Duration = Duration::from_secs(4);

fn now_ns() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn export(service: &str, trace: u32, end_ns: i64) -> ExportTraceServiceRequest {
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&trace.to_be_bytes());
    trace_id[4..4 + service.len().min(12)]
        .copy_from_slice(&service.as_bytes()[..service.len().min(12)]);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id.to_vec(),
                    span_id: trace.to_be_bytes().repeat(2),
                    name: format!("step-{trace}"),
                    start_time_unix_nano: u64::try_from(end_ns - S / 10).unwrap(),
                    end_time_unix_nano: u64::try_from(end_ns).unwrap(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn msg(seq: u64, body: Body) -> pb::ClientMessage {
    pb::ClientMessage {
        seq,
        body: Some(body),
    }
}

/// Every sender at once for [`SENDING`]: each OTLP sender exports one finished span (its
/// own trace) every half second, stamped by its clock; a runlens.v1 session client whose
/// clock is 10 s behind records a metric each time in one open run.
async fn send_all(sidecar: &Sidecar) {
    let addr = sidecar.otlp_grpc.clone().expect("OTLP gRPC on");
    let mut otlp = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut runlens = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let session = tokio::spawn(async move {
        let mut inbound = runlens
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        while inbound.message().await.unwrap().is_some() {}
    });
    let skewed = |ns: i64| now_ns() - 10 * S + ns;
    tx.send(msg(
        0,
        Body::Hello(pb::SessionHello {
            client_id: "session-behind-10s".into(),
            client_name: "session-behind-10s".into(),
            ..Default::default()
        }),
    ))
    .await
    .unwrap();
    tx.send(msg(
        1,
        Body::StartRun(pb::StartRunRequest {
            run_id: "session-run".into(),
            name: "session".into(),
            time_ns: skewed(0),
            ..Default::default()
        }),
    ))
    .await
    .unwrap();
    let start = Instant::now();
    let mut trace = 0u32;
    while start.elapsed() < SENDING {
        trace += 1;
        for (service, offset) in SENDERS {
            otlp.export(export(service, trace, now_ns() + offset))
                .await
                .unwrap();
        }
        tx.send(msg(
            u64::from(trace) + 1,
            Body::Metric(pb::Metric {
                run_id: "session-run".into(),
                name: format!("tick-{trace}"),
                value: f64::from(trace),
                time_ns: skewed(0),
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(tx);
    session.await.unwrap();
}

/// (span name, its end, its end sample's time) of one sender's spans, in order.
fn span_ends(sidecar: &Sidecar, service: &str) -> Vec<(String, i64, Option<i64>)> {
    let conn = sidecar.sql();
    let mut stmt = conn
        .prepare(
            "SELECT p.name, p.ended_at_ns, s.taken_at_ns FROM spans p
             JOIN runs r USING (run_id)
             LEFT JOIN snapshots s ON s.snapshot_id = p.end_snapshot_id
             WHERE r.client_id = ?1 ORDER BY p.ended_at_ns",
        )
        .unwrap();
    stmt.query_map([format!("otlp/{service}")], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// (metric name, its time, its sample's time) of the session client's metrics, in order.
fn session_metrics(sidecar: &Sidecar) -> Vec<(String, i64, Option<i64>)> {
    let conn = sidecar.sql();
    let mut stmt = conn
        .prepare(
            "SELECT e.name, e.at_ns, s.taken_at_ns FROM events e
             LEFT JOIN snapshots s ON s.snapshot_id = e.snapshot_id
             WHERE e.run_id = 'session-run' ORDER BY e.at_ns",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The `clients` row's estimate: (offset ns, skewed).
fn stored_clock(sidecar: &Sidecar, client_id: &str) -> (Option<i64>, bool) {
    sidecar
        .sql()
        .query_row(
            "SELECT clock_offset_ns, clock_skewed FROM clients WHERE client_id = ?1",
            [client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[track_caller]
fn assert_near(got: Option<i64>, want: i64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no estimate stored"));
    // A lower bound, off by the quickest delivery: a few ms here; the store step is 100 ms.
    assert!(
        (got - want).abs() <= S / 4,
        "{what}: estimated {got} ns, the clock is off by {want} ns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_senders_are_named_and_never_shown_another_moments_machine() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("skew.db");
    let mut sidecar = Sidecar::start_on(&db, &["--sample-interval", "1s"]);
    sidecar.expect_clock_warnings();
    tokio::time::sleep(HISTORY).await;
    send_all(&sidecar).await;

    // Ahead: no sample exists at its times; none is given.
    let ahead = span_ends(&sidecar, "ahead-30s");
    assert!(ahead.len() >= 12, "{ahead:?}");
    assert!(ahead.iter().all(|(_, _, s)| s.is_none()), "{ahead:?}");
    // Behind: once the estimate is trusted (after its first ~5 s), no sample, although
    // samples exist at its own times (they show the machine 10 s before the event).
    let behind = span_ends(&sidecar, "behind-10s");
    let last = &behind[behind.len() - 3..];
    assert!(last.iter().all(|(_, _, s)| s.is_none()), "{behind:?}");
    let metrics = session_metrics(&sidecar);
    let last = &metrics[metrics.len() - 3..];
    assert!(last.iter().all(|(_, _, s)| s.is_none()), "{metrics:?}");
    // Within the window: matched as usual, to a sample within the window of its own time.
    let close = span_ends(&sidecar, "close-200ms");
    assert!(
        close
            .iter()
            .all(|(_, end, s)| s.is_some_and(|s| (s - end).abs() <= WINDOW_NS)),
        "{close:?}"
    );

    // The estimates, stored in `clients`.
    let (offset, skewed) = stored_clock(&sidecar, "otlp/ahead-30s");
    assert_near(offset, 30 * S, "ahead-30s");
    assert!(skewed);
    let (offset, skewed) = stored_clock(&sidecar, "otlp/behind-10s");
    assert_near(offset, -10 * S, "behind-10s");
    assert!(skewed);
    let (offset, skewed) = stored_clock(&sidecar, "session-behind-10s");
    assert_near(offset, -10 * S, "session-behind-10s");
    assert!(skewed);
    let (offset, skewed) = stored_clock(&sidecar, "otlp/close-200ms");
    assert_near(offset, S / 5, "close-200ms");
    assert!(!skewed, "inside the window");

    // The gauge per client, and the count of boundaries left without a sample for it.
    let metrics_addr = sidecar.metrics.clone().expect("metrics on");
    let text = String::from_utf8(http_get(&metrics_addr, "/metrics", &[]).body).unwrap();
    let gauge = |client: &str| -> f64 {
        let prefix = format!("runlens_client_clock_offset_seconds{{client_id=\"{client}\"");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!((gauge("otlp/ahead-30s") - 30.0).abs() < 0.25);
    assert!((gauge("otlp/behind-10s") + 10.0).abs() < 0.25);
    assert!((gauge("otlp/close-200ms") - 0.2).abs() < 0.25);
    assert!(
        text.contains("runlens_sample_matches_total{result=\"skewed\"}"),
        "{text}"
    );

    // doctor names the skewed clients and not the close one.
    let doctor = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args([
            "doctor",
            "--no-gpu",
            "--format",
            "json",
            "--nvml-lib",
            "none",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let clocks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "clocks")
        .unwrap_or_else(|| panic!("no clocks check: {report}"));
    assert_eq!(clocks["status"], "warn", "{clocks}");
    let detail = clocks["detail"].as_str().unwrap();
    for named in ["ahead-30s", "behind-10s", "session-behind-10s"] {
        assert!(detail.contains(named), "{detail}");
    }
    assert!(!detail.contains("close-200ms"), "{detail}");

    // One warning per skewed client, none for the one inside the window.
    let log = sidecar.stop();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("clock runs")).collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("otlp/ahead-30s") && w.contains("ahead of"))
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("otlp/behind-10s") && w.contains("behind"))
    );
    assert!(warnings.iter().all(|w| !w.contains("close-200ms")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_correction_a_skewed_sender_gets_the_sample_nearest_its_corrected_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("corrected.db");
    let mut sidecar =
        Sidecar::start_on(&db, &["--sample-interval", "1s", "--clock-skew-correction"]);
    sidecar.expect_clock_warnings();
    tokio::time::sleep(HISTORY).await;
    send_all(&sidecar).await;

    for (service, offset) in [("ahead-30s", 30 * S), ("behind-10s", -10 * S)] {
        let spans = span_ends(&sidecar, service);
        // Once the estimate is trusted: the sample nearest the corrected time, while the
        // stored time stays the sender's own.
        for (name, end, sample) in &spans[spans.len() - 3..] {
            let sample = sample.unwrap_or_else(|| panic!("{service} {name}: no sample"));
            assert!(
                (sample - (end - offset)).abs() <= WINDOW_NS,
                "{service} {name}: sample at {sample}, corrected time {}",
                end - offset
            );
            assert!(
                (end - offset - now_ns()).abs() < 15 * S,
                "stored as sent: {end}"
            );
        }
    }
    let metrics = session_metrics(&sidecar);
    for (name, at, sample) in &metrics[metrics.len() - 3..] {
        let sample = sample.unwrap_or_else(|| panic!("session {name}: no sample"));
        assert!(
            (sample - (at + 10 * S)).abs() <= WINDOW_NS,
            "session {name}"
        );
    }
    let log = sidecar.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("clock runs") && l.contains("--clock-skew-correction")),
        "{log}"
    );
}
