//! The sidecar's own figures: its work, its budget, its exports. `/metrics` shows them; the
//! OTLP metrics export does not, because it sends stored samples of the machine, later, and
//! these are the state of this process now.

use super::{Figure, FigureUnit, Kind, Otlp, Read};

/// Why the sidecar's own figures stay off the OTLP export.
const OWN_STATE: &str = "the sidecar's own state now; the OTLP export sends the machine's \
                         stored samples";

const fn own(prometheus: &'static str, unit: FigureUnit, kind: Kind, help: &'static str) -> Figure {
    Figure {
        prometheus,
        otlp: Otlp::Not(OWN_STATE),
        convention: None,
        unit,
        kind,
        help,
        read: Read::Sidecar,
    }
}

const ONE: FigureUnit = FigureUnit::Count("1");

/// `runlens_build_info{version}`.
pub const BUILD_INFO: Figure = own(
    "runlens_build_info",
    ONE,
    Kind::Gauge,
    "This runlens: version, commit and build date in `version`",
);
/// `target_info{…}`.
pub const TARGET: Figure = own(
    "target",
    ONE,
    Kind::Info,
    "Who this sidecar is: its OpenTelemetry resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME)",
);
/// `runlens_storage_ok`.
pub const STORAGE_OK: Figure = own(
    "runlens_storage_ok",
    ONE,
    Kind::Gauge,
    "1 while writes succeed, 0 while storage is failing (disk full, read-only)",
);
/// `runlens_open_runs`.
pub const OPEN_RUNS: Figure = own(
    "runlens_open_runs",
    FigureUnit::Count("{run}"),
    Kind::Gauge,
    "Runs started by runlens.v1 clients and not ended yet",
);
/// `runlens_inflight_bytes`.
pub const INFLIGHT: Figure = own(
    "runlens_inflight",
    FigureUnit::Bytes,
    Kind::Gauge,
    "Bytes the front doors hold in flight, as charged against --max-inflight-mib (about four \
     times each request's size, until its rows are committed)",
);
/// `runlens_inflight_limit_bytes`.
pub const INFLIGHT_LIMIT: Figure = own(
    "runlens_inflight_limit",
    FigureUnit::Bytes,
    Kind::Gauge,
    "The byte budget of --max-inflight-mib",
);
/// `runlens_client_clock_offset_seconds{client_id,client}`.
pub const CLIENT_CLOCK_OFFSET: Figure = own(
    "runlens_client_clock_offset",
    FigureUnit::Seconds,
    Kind::Gauge,
    "How far each client's clock runs ahead of the sidecar's (negative: behind), estimated \
     from its messages' times against their arrival (a lower bound, off by at most its quickest \
     delivery); clients heard from in the last 10 minutes once enough messages back the estimate",
);
/// `runlens_client_dropped_messages_total{client}`.
pub const CLIENT_DROPPED: Figure = own(
    "runlens_client_dropped_messages",
    FigureUnit::Count("{message}"),
    Kind::Counter,
    "Messages clients dropped because their buffer was full (data known to be missing)",
);
/// `runlens_sample_duration_seconds`.
pub const SAMPLE_DURATION: Figure = own(
    "runlens_sample_duration",
    FigureUnit::Seconds,
    Kind::Gauge,
    "How long the latest resource sample took",
);
/// `runlens_export_lag_runs`.
pub const EXPORT_LAG_RUNS: Figure = own(
    "runlens_export_lag_runs",
    FigureUnit::Count("{run}"),
    Kind::Gauge,
    "Ended runs not yet acknowledged by the OTLP receiver",
);
/// `runlens_export_lag_seconds`.
pub const EXPORT_LAG: Figure = own(
    "runlens_export_lag",
    FigureUnit::Seconds,
    Kind::Gauge,
    "How long the oldest ended run not yet acknowledged by the OTLP receiver has waited",
);
/// `runlens_export_held`.
pub const EXPORT_HELD: Figure = own(
    "runlens_export_held",
    ONE,
    Kind::Gauge,
    "1 while the OTLP receiver answers as if the URL or the credentials were wrong (HTTP \
     401/403/404/405, gRPC UNIMPLEMENTED): ended runs are held, not skipped, until it is fixed",
);
/// `runlens_export_skipped_runs_total`.
pub const EXPORT_SKIPPED: Figure = own(
    "runlens_export_skipped_runs",
    FigureUnit::Count("{run}"),
    Kind::Counter,
    "Runs the OTLP receiver refused for good (skipped)",
);
/// `runlens_database_size_bytes`.
pub const DATABASE_SIZE: Figure = own(
    "runlens_database_size",
    FigureUnit::Bytes,
    Kind::Gauge,
    "The database file with its write-ahead log",
);
/// `runlens_rejected_total{reason}`.
pub const REJECTED: Figure = own(
    "runlens_rejected",
    FigureUnit::Count("{message}"),
    Kind::Counter,
    "Messages and spans refused, by reason (the gRPC code's name, or invalid_span for OTLP)",
);
/// `runlens_spans_total{name,status}`.
pub const SPANS: Figure = own(
    "runlens_spans",
    FigureUnit::Count("{span}"),
    Kind::Counter,
    "Spans stored, by name (the first 200 names; later ones as `other`) and status",
);
/// `runlens_runs_total{name,status}`.
pub const RUNS: Figure = own(
    "runlens_runs",
    FigureUnit::Count("{run}"),
    Kind::Counter,
    "Runs ended and stored, by name (bounded like spans) and status",
);
/// `runlens_span_duration_seconds{name}`.
pub const SPAN_DURATION: Figure = own(
    "runlens_span_duration",
    FigureUnit::Seconds,
    Kind::Histogram,
    "Span durations, by name (bounded like runlens_spans)",
);
/// `runlens_pruned_total{what}`.
pub const PRUNED: Figure = own(
    "runlens_pruned",
    FigureUnit::Count("{row}"),
    Kind::Counter,
    "Rows retention deleted, by what: runs, spans, events, samples_thinned (periodic samples \
     older than --retain-full), samples_expired (older than --retain, or for --max-db-mib)",
);
/// `runlens_sample_matches_total{result}`.
pub const SAMPLE_MATCHES: Figure = own(
    "runlens_sample_matches",
    FigureUnit::Count("{boundary}"),
    Kind::Counter,
    "Run and span boundaries, metrics and events stored, by whether a resource sample lay \
     within the matching window of their own time (result=matched) or none did (result=none: \
     recorded while the sidecar was not sampling, or the sender's clock is off), or left \
     without one because the sender's clock is known to be off by more than that window \
     (result=skewed)",
);
/// `runlens_parquet_export_rows_total`.
pub const PARQUET_ROWS: Figure = own(
    "runlens_parquet_export_rows",
    FigureUnit::Count("{row}"),
    Kind::Counter,
    "Rows written as Parquet files by --parquet-export",
);
/// `runlens_parquet_export_files_total`.
pub const PARQUET_FILES: Figure = own(
    "runlens_parquet_export_files",
    FigureUnit::Count("{file}"),
    Kind::Counter,
    "Parquet files written (or replaced) by --parquet-export",
);
/// `runlens_parquet_export_failures_total`.
pub const PARQUET_FAILURES: Figure = own(
    "runlens_parquet_export_failures",
    FigureUnit::Count("{interval}"),
    Kind::Counter,
    "--parquet-export intervals that failed (each is tried again from the same cursor)",
);
/// `runlens_parquet_export_last_success_timestamp_seconds`.
pub const PARQUET_LAST_SUCCESS: Figure = own(
    "runlens_parquet_export_last_success_timestamp",
    FigureUnit::Seconds,
    Kind::Gauge,
    "When --parquet-export last finished an interval, files and cursors (Unix time; 0 before \
     the first)",
);

/// Every one of the sidecar's own figures, in the table's order.
pub const FIGURES: [Figure; 24] = [
    SPANS,
    RUNS,
    SPAN_DURATION,
    REJECTED,
    SAMPLE_MATCHES,
    PRUNED,
    OPEN_RUNS,
    INFLIGHT,
    INFLIGHT_LIMIT,
    CLIENT_CLOCK_OFFSET,
    CLIENT_DROPPED,
    SAMPLE_DURATION,
    EXPORT_LAG_RUNS,
    EXPORT_LAG,
    EXPORT_HELD,
    EXPORT_SKIPPED,
    PARQUET_ROWS,
    PARQUET_FILES,
    PARQUET_FAILURES,
    PARQUET_LAST_SUCCESS,
    STORAGE_OK,
    DATABASE_SIZE,
    BUILD_INFO,
    TARGET,
];
