//! An example agent: each run plans, calls an LLM and a tool as nested spans, records
//! metrics, and every few runs the tool fails and takes the run down with it.
//!
//! ```text
//! example-agent --endpoint http://127.0.0.1:50551 --runs 5
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use runlens_client::Client;

/// Records agent-like runs into a runlens sidecar.
#[derive(Debug, Parser)]
#[command(name = "example-agent", version)]
struct Args {
    /// The sidecar's gRPC endpoint.
    #[arg(long, env = "RUNLENS_ENDPOINT", default_value = runlens_client::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// How many runs to record.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Every n-th run fails in its tool call (0 = never).
    #[arg(long, default_value_t = 3)]
    fail_every: u32,
    /// Simulated work per step, in milliseconds.
    #[arg(long, default_value_t = 5)]
    step_ms: u64,
    /// Give up waiting for the sidecar's acknowledgement after this many seconds.
    #[arg(long, default_value_t = 30)]
    flush_timeout_s: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder(&args.endpoint)
        .name("example-agent")
        .build()?;
    let step = Duration::from_millis(args.step_ms);
    let mut failed = 0;
    for i in 1..=args.runs {
        let fails = args.fail_every > 0 && i % args.fail_every == 0;
        let run = client.start_run_with("answer-question", [("task", i.to_string())]);

        let plan = run.span("plan");
        tokio::time::sleep(step).await;

        // Check resources right before the heavy step.
        let llm = plan.span_with("llm_call", [("model", "example-7b")], true);
        tokio::time::sleep(step * 2).await;
        llm.metric("gen_ai.usage.input_tokens", f64::from(200 + i), "{token}");
        llm.metric(
            "gen_ai.usage.output_tokens",
            f64::from(50 + 3 * i),
            "{token}",
        );
        llm.end_ok();

        let tool = plan.span_with("tool_call", [("tool", "search")], false);
        tokio::time::sleep(step).await;
        if fails {
            tool.event("retry", [("attempt", "1")]);
            tool.end_failed("search timed out after 1 retry");
            plan.end_failed("tool_call failed");
            run.metric("agent.steps", 2.0, "{step}");
            run.end_failed("tool_call failed: search timed out after 1 retry");
            failed += 1;
        } else {
            tool.end_ok();
            plan.end_ok();
            run.metric("agent.steps", 3.0, "{step}");
            run.end_ok();
        }
    }
    // Wait for the sidecar's acknowledgement, then stop the client: without this, what is
    // still buffered when main returns is lost.
    client
        .shutdown(Duration::from_secs(args.flush_timeout_s))
        .await?;
    println!(
        "example-agent: {} runs ({} ok, {failed} failed), {} spans; all acknowledged by {}",
        args.runs,
        args.runs - failed,
        args.runs * 3,
        args.endpoint
    );
    if client.dropped() > 0 || client.rejected() > 0 {
        anyhow::bail!(
            "{} message(s) dropped, {} rejected",
            client.dropped(),
            client.rejected()
        );
    }
    Ok(())
}
