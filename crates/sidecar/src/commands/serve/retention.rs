//! The retention task: asks the writer for pruning steps at start and then every
//! [`PRUNE_EVERY`], with a pause between steps so that ingest batches always come first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::WorkCounters;
use crate::store::WriterHandle;
use crate::store::retention::PruneReport;

/// How often pruning looks for work once it has caught up.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The pause between two steps: a step holds the writer for a few milliseconds, and
/// whatever was queued meanwhile is committed before the next one.
const BETWEEN_STEPS: Duration = Duration::from_millis(2);

/// Prunes until `shutdown`.
pub async fn prune_continuously(
    writer: WriterHandle,
    counters: Arc<WorkCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let started = Instant::now();
        let mut total = PruneReport::default();
        let mut steps = 0_u64;
        loop {
            let report = match writer.prune_step().await {
                None => return,
                Some(Ok(report)) => report,
                Some(Err(error)) => {
                    tracing::warn!(%error, "a pruning step failed; trying again later");
                    break;
                }
            };
            steps += 1;
            counters.note_pruned(&report);
            total.add(&report);
            if !report.more || *shutdown.borrow() {
                break;
            }
            tokio::time::sleep(BETWEEN_STEPS).await;
        }
        let deleted =
            total.runs + total.spans + total.events + total.samples_thinned + total.samples_expired;
        if deleted > 0 {
            tracing::info!(
                runs = total.runs,
                spans = total.spans,
                events = total.events,
                samples_thinned = total.samples_thinned,
                samples_expired = total.samples_expired,
                pages_freed = total.pages_freed,
                steps,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pruned old data"
            );
        }
    }
}
