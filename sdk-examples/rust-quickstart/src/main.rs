use std::time::Duration;

use runlens_client::tracing::RunlensLayer;
use tracing::instrument;
use tracing_subscriber::{filter::LevelFilter, fmt, prelude::*};

#[tokio::main]
async fn main() -> Result<(), runlens_client::Error> {
    let client = runlens_client::Client::from_env()?; // RUNLENS_ENDPOINT, else 127.0.0.1:50551
    tracing_subscriber::registry()
        .with(RunlensLayer::new(client.clone())) // tracing spans become runlens runs and spans
        .with(fmt::layer().with_filter(LevelFilter::INFO)) // beside the layers you have
        .init();
    answer_question("why is the sky blue?").await;
    // Before exiting, wait (a bounded time) for the sidecar's durable commit. An agent must
    // not fail because its observer is absent: log and go on.
    if let Err(error) = client.shutdown(Duration::from_secs(5)).await {
        tracing::warn!(%error, "runlens did not store everything");
    }
    Ok(())
}

#[instrument] // the outermost span opens a run; its arguments become attributes
async fn answer_question(question: &str) {
    let _ = plan().await;
}

#[instrument(err)] // nested spans nest; an Err fails the span with its text
async fn plan() -> Result<(), String> {
    llm_call("llama-3-8b").await;
    tool_call().await
}

#[instrument(fields(runlens.fresh = true))] // fresh snapshots around a heavy step
async fn llm_call(model: &str) {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[instrument(err)]
async fn tool_call() -> Result<(), String> {
    Err("search timed out".to_owned())
}
