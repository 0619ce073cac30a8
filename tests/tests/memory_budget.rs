//! A good neighbour in a 256 MiB pod: bursts of large, valid exports are held to a byte
//! budget (over it OTLP/HTTP answers 503 with `Retry-After`, OTLP/gRPC `UNAVAILABLE`, both
//! retryable), every span is stored exactly once after the senders retry, the sidecar's
//! peak memory stays under 160 MiB and it gives memory back after the burst. Across real
//! processes: the sidecar's peak and current RSS come from its `/proc/<pid>/status`.
//! Prints its figures (`cargo test -p runlens-e2e --test memory_budget -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use runlens_e2e::{Sidecar, http_post};

const MIB: u64 = 1 << 20;
/// The peak the sidecar must stay under, and where it must come back to.
const PEAK_LIMIT: u64 = 160 * MIB;
const SETTLED_LIMIT: u64 = 64 * MIB;
/// The write-ahead log once a burst is over: cut back after its checkpoint.
const WAL_LIMIT: u64 = 32 * MIB;

/// The sidecar's write-ahead log, bytes.
fn wal_bytes(sidecar: &Sidecar) -> u64 {
    let mut wal = sidecar.db.clone().into_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// An export of `spans` spans, each with a 10 kB attribute, in trace `trace` (the first
/// span is the root, the others its children): 1,500 spans make 14.4 MiB.
fn export(trace: u32, spans: u32) -> ExportTraceServiceRequest {
    let mut trace_id = [7u8; 16];
    trace_id[..4].copy_from_slice(&trace.to_be_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let end = u64::try_from(now).unwrap() - 1_000_000_000;
    let filler: String = "x".repeat(10_000);
    let spans = (0..spans)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&trace.to_be_bytes());
            span_id[4..].copy_from_slice(&(i + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    [&trace.to_be_bytes()[..], &1u32.to_be_bytes()[..]].concat()
                },
                name: format!("step-{i}"),
                start_time_unix_nano: end - 500_000_000,
                end_time_unix_nano: end,
                attributes: vec![KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(filler.clone())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("bursty-agent".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A figure of `/proc/<pid>/status` (`VmHWM`: peak RSS, `VmRSS`: now), bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Waits up to 60 s for the sidecar's RSS to come back under [`SETTLED_LIMIT`]; the
/// seconds it took.
fn settles(pid: u32) -> (u64, f64) {
    let start = Instant::now();
    loop {
        let rss = status_bytes(pid, "VmRSS");
        if rss <= SETTLED_LIMIT || start.elapsed() > Duration::from_secs(60) {
            return (rss, start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn stored_spans(sidecar: &Sidecar) -> (i64, i64) {
    sidecar
        .sql()
        .query_row(
            "SELECT count(*), count(DISTINCT span_id) FROM spans",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[test]
fn a_burst_of_large_http_exports_is_held_to_the_budget_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("burst.db"), &["--sample-interval", "1s"]);
    let pid = sidecar.pid();
    let http = sidecar.otlp_http.clone().expect("OTLP/HTTP on");
    let refused = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for trace in 0..24u32 {
            let (http, refused) = (&http, &refused);
            scope.spawn(move || {
                let body = export(trace, 1_500).encode_to_vec();
                assert!(body.len() > 14 * MIB as usize, "{}", body.len());
                loop {
                    let answer = http_post(
                        http,
                        "/v1/traces",
                        &[("Content-Type", "application/x-protobuf")],
                        &body,
                    );
                    match answer.status {
                        200 => return,
                        503 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let wait: u64 = answer
                                .header("retry-after")
                                .and_then(|s| s.parse().ok())
                                .expect("a 503 says when to retry");
                            std::thread::sleep(Duration::from_secs(wait));
                        }
                        other => panic!(
                            "answered {other}: {:?}",
                            String::from_utf8_lossy(&answer.body)
                        ),
                    }
                }
            });
        }
    });
    let took = started.elapsed().as_secs_f64();
    let peak = status_bytes(pid, "VmHWM");
    let (settled, after) = settles(pid);
    let (spans, distinct) = stored_spans(&sidecar);
    println!(
        "after: RssAnon {:.1} MiB, RssFile {:.1} MiB, write-ahead log {:.1} MiB",
        status_bytes(pid, "RssAnon") as f64 / MIB as f64,
        status_bytes(pid, "RssFile") as f64 / MIB as f64,
        wal_bytes(&sidecar) as f64 / MIB as f64,
    );
    assert!(
        wal_bytes(&sidecar) <= WAL_LIMIT,
        "the write-ahead log kept its peak"
    );
    println!(
        "24 x 14.4 MiB OTLP/HTTP: {took:.1} s, {} answered 503 and retried; peak RSS {:.1} MiB, \
         {:.1} MiB {after:.1} s after; {spans} spans stored ({distinct} distinct)",
        refused.load(Ordering::Relaxed),
        peak as f64 / MIB as f64,
        settled as f64 / MIB as f64,
    );
    assert_eq!((spans, distinct), (36_000, 36_000), "every span once");
    assert!(peak <= PEAK_LIMIT, "peak RSS {peak} bytes");
    assert!(
        settled <= SETTLED_LIMIT,
        "RSS {settled} bytes 60 s after the burst"
    );
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_max_size_grpc_exports_is_held_to_the_budget_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("burst.db"), &["--sample-interval", "1s"]);
    let pid = sidecar.pid();
    let addr = sidecar.otlp_grpc.clone().expect("OTLP/gRPC on");
    let started = Instant::now();
    let mut tasks = Vec::new();
    // 1,660 spans: just under the 16 MiB limit.
    for trace in 0..32u32 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let request = export(1_000 + trace, 1_660);
            assert!(request.encoded_len() < 16 * MIB as usize);
            let mut client = TraceServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
                .max_encoding_message_size(usize::MAX);
            let mut refused = 0u64;
            loop {
                match client.export(request.clone()).await {
                    Ok(_) => return refused,
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(status) => panic!("{status}"),
                }
            }
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    let peak = status_bytes(pid, "VmHWM");
    let (settled, after) = tokio::task::spawn_blocking(move || settles(pid))
        .await
        .unwrap();
    let (spans, distinct) = stored_spans(&sidecar);
    assert!(
        wal_bytes(&sidecar) <= WAL_LIMIT,
        "the write-ahead log kept its peak"
    );
    println!(
        "32 x 16 MiB OTLP/gRPC: {took:.1} s, {refused} answered UNAVAILABLE and retried; peak \
         RSS {:.1} MiB, {:.1} MiB {after:.1} s after; {spans} spans stored ({distinct} distinct)",
        peak as f64 / MIB as f64,
        settled as f64 / MIB as f64,
    );
    assert_eq!(
        (spans, distinct),
        (32 * 1_660, 32 * 1_660),
        "every span once"
    );
    assert!(peak <= PEAK_LIMIT, "peak RSS {peak} bytes");
    assert!(
        settled <= SETTLED_LIMIT,
        "RSS {settled} bytes 60 s after the burst"
    );
    sidecar.stop();
}
