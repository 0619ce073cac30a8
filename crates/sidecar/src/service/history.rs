//! `ListRuns` and `GetRun`: history without SQL, read on a blocking thread from a
//! read-only connection (WAL: never blocks the writer).

use std::path::PathBuf;

use super::to_wire::snapshot_to_wire;
use runlens_api::pb;
use tonic::Status;

use crate::domain::Status as RunStatus;
use crate::ingest::{IngestError, validate};
use crate::store::StoreError;
use crate::store::read::{Reader, StoredRun};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

fn storage(e: StoreError) -> Status {
    IngestError::storage(&e).into()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("history read failed: {e}")))?
}

fn run_info(r: StoredRun) -> pb::RunInfo {
    pb::RunInfo {
        run_id: r.run_id,
        name: r.name,
        status: r.status.as_str().to_owned(),
        error: r.error.unwrap_or_default(),
        started_at_ns: r.started_at_ns,
        ended_at_ns: r.ended_at_ns.unwrap_or(0),
        start_snapshot_id: r.start_snapshot_id.unwrap_or(0),
        end_snapshot_id: r.end_snapshot_id.unwrap_or(0),
        attributes: r.attributes,
    }
}

/// Stored runs, newest first.
pub async fn list_runs(db: PathBuf, req: pb::ListRunsRequest) -> Result<Vec<pb::RunInfo>, Status> {
    let limit = match req.limit {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            return Err(Status::invalid_argument(format!(
                "limit {n} is above the maximum of {MAX_LIMIT}"
            )));
        }
        n => n,
    };
    let status = match req.status.as_str() {
        "" => None,
        text => Some(RunStatus::parse(text).ok_or_else(|| {
            let known: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            Status::invalid_argument(format!(
                "status {text:?} is not one of {}",
                known.join(", ")
            ))
        })?),
    };
    let before = (req.started_before_ns > 0).then_some(req.started_before_ns);
    blocking(move || {
        let reader = Reader::open(&db).map_err(storage)?;
        let rows = reader.list_runs(limit, status, before).map_err(storage)?;
        Ok(rows.into_iter().map(run_info).collect())
    })
    .await
}

/// One run with its spans and snapshots.
pub async fn get_run(db: PathBuf, run_id: String) -> Result<pb::GetRunResponse, Status> {
    validate::id("run_id", &run_id).map_err(Status::from)?;
    blocking(move || {
        let reader = Reader::open(&db).map_err(storage)?;
        let run = reader
            .get_run(&run_id)
            .map_err(storage)?
            .ok_or_else(|| Status::not_found(format!("run {run_id:?} not found")))?;
        let snapshot = |id: Option<i64>| -> Result<Option<pb::Snapshot>, Status> {
            let Some(id) = id else { return Ok(None) };
            Ok(reader
                .snapshot(id)
                .map_err(storage)?
                .map(|s| snapshot_to_wire(&s, id)))
        };
        let start_snapshot = snapshot(run.start_snapshot_id)?;
        let end_snapshot = snapshot(run.end_snapshot_id)?;
        let spans = reader
            .spans_of_run(&run_id)
            .map_err(storage)?
            .into_iter()
            .map(|s| pb::SpanInfo {
                span_id: s.span_id,
                parent_span_id: s.parent_span_id.unwrap_or_default(),
                name: s.name,
                status: s.status.as_str().to_owned(),
                error: s.error.unwrap_or_default(),
                started_at_ns: s.started_at_ns,
                ended_at_ns: s.ended_at_ns.unwrap_or(0),
                start_snapshot_id: s.start_snapshot_id.unwrap_or(0),
                end_snapshot_id: s.end_snapshot_id.unwrap_or(0),
                attributes: s.attributes,
            })
            .collect();
        Ok(pb::GetRunResponse {
            run: Some(run_info(run)),
            spans,
            start_snapshot,
            end_snapshot,
        })
    })
    .await
}
