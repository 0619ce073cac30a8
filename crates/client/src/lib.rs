//! Thin Rust client for the runlens sidecar.
//!
//! Record runs, nested spans, metrics and events without waiting on the network: each
//! call puts one message in a bounded in-memory buffer and returns. A background task
//! streams the buffer to the sidecar over the `Session` rpc, keeps every message until
//! the sidecar acknowledges that it is durably committed, and reconnects (resending what
//! is unacknowledged) when the stream breaks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runlens_client::Error> {
//! let client = runlens_client::Client::builder("http://127.0.0.1:50551").build()?;
//! let run = client.start_run("answer-question");
//! let plan = run.span("plan");
//! let llm = plan.span_with("llm_call", [("model", "llama-3-8b")], true); // fresh snapshots
//! llm.metric("gen_ai.usage.output_tokens", 512.0, "{token}");
//! llm.end_ok();
//! let tool = plan.span_fresh("tool_call"); // fresh snapshots, no attributes
//! tool.end_failed("search timed out");
//! plan.end_ok();
//! run.end_ok();
//! client.flush().await?;
//! # Ok(()) }
//! ```
//!
//! Dropping a [`Run`] or [`Span`] that was not ended ends it as failed with the error
//! "dropped without end" (so a panic or early return still leaves a truthful record).
// One exception, with its reason: `timer.rs` registers a timerfd with tokio's reactor.
#![deny(unsafe_code)]

mod backoff;
mod buffer;
mod client;
mod codec;
mod connection;
mod error;
mod ids;
mod recording;
mod stream;
mod timer;
#[cfg(feature = "tracing")]
#[path = "tracing_layer.rs"]
pub mod tracing;
mod warn;

pub use backoff::Backoff;
pub use buffer::FullPolicy;
pub use client::{
    CA_FILE_ENV, Client, ClientBuilder, DEFAULT_CAPACITY, DEFAULT_CAPACITY_BYTES, DEFAULT_ENDPOINT,
    DEFAULT_LINGER, ENDPOINT_ENV, LINGER_ENV, NAME_ENV, RpcConnection, TOKEN_ENV,
};
pub use error::Error;
pub use recording::{Run, Span};
