//! The README's Rust example, compiled by `cargo test`; `tests/tests/readme.rs` checks
//! that the README shows this file's text. Run it beside a sidecar:
//! `cargo run -p runlens-client --example quickstart`.

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), runlens_client::Error> {
    let endpoint = std::env::var("RUNLENS_ENDPOINT") // default http://127.0.0.1:50551
        .unwrap_or_else(|_| runlens_client::DEFAULT_ENDPOINT.to_owned());
    let client = runlens_client::Client::builder(endpoint).build()?;
    let run = client.start_run("answer-question");
    let plan = run.span("plan");
    let llm = plan.span_with("llm_call", [("model", "llama-3-8b")], true); // fresh snapshots
    llm.metric("gen_ai.usage.output_tokens", 512.0, "{token}");
    llm.end_ok();
    let tool = plan.span_fresh("tool_call"); // nested: `.span*()` on a span, as in Python
    tool.end_failed("search timed out"); // a failed step: status 'failed' and its error
    plan.end_ok();
    run.end_ok();
    // Before exiting: wait until the sidecar has durably committed everything, then stop.
    // Without it, what is still buffered is lost (the client warns with the count).
    client.shutdown(Duration::from_secs(10)).await
}
