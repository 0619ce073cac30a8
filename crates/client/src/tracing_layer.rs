//! Records `tracing` spans as runlens runs and spans (feature `tracing`).
//!
//! Code already instrumented with `tracing` (`#[instrument]`, `info_span!`) is recorded
//! with no other change: add [`RunlensLayer`] to a `tracing-subscriber` registry, beside
//! the usual fmt layer.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # async fn demo() -> Result<(), runlens_client::Error> {
//! let client = runlens_client::Client::builder("http://127.0.0.1:50551").build()?;
//! tracing_subscriber::registry()
//!     .with(runlens_client::tracing::RunlensLayer::new(client.clone()))
//!     .init();
//!
//! #[tracing::instrument]
//! async fn answer(question: &str) { plan().await }
//! #[tracing::instrument(fields(runlens.fresh = true))]
//! async fn plan() {}
//!
//! answer("why?").await;          // a run "answer" with a span "plan" in it
//! client.flush().await?;
//! # Ok(()) }
//! ```
//!
//! How spans map:
//! - the outermost recorded span, or any span with the field `runlens.run = true`, opens a
//!   **run**; spans inside it become its **spans**, nested as in `tracing`;
//! - a span's **fields** become attributes (fields recorded later, with `Span::record`, are
//!   sent when it ends); `runlens.fresh = true` asks for fresh snapshots at its start and end;
//! - a span **fails** when it has an `error` field, or when an event at level ERROR (or with
//!   an `error` field, as `#[instrument(err)]` emits) happens inside it: the error text is
//!   that field, else the event's message;
//! - it **ends** when `tracing` closes it (the last handle dropped), so an async span
//!   entered at every poll is one runlens span.
//!
//! Spans below the layer's level (INFO unless [`RunlensLayer::with_max_level`] says
//! otherwise) are not recorded, and neither are the spans of the transport crates this
//! client itself uses (`h2`, `hyper`, `tonic`, `tower`): recording those would record the
//! recording.

use std::collections::HashMap;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::client::Client;
use crate::recording::{Run, Span};

/// The field that makes a span open a run even inside another run.
pub const RUN_FIELD: &str = "runlens.run";
/// The field that asks for fresh snapshots at a span's start and end.
pub const FRESH_FIELD: &str = "runlens.fresh";
/// The field whose value fails a span (and is its error text).
pub const ERROR_FIELD: &str = "error";

/// Targets whose spans are never recorded: the transport under this client.
const TRANSPORT_TARGETS: &[&str] = &["h2", "hyper", "tonic", "tower", "runlens_client"];

/// A `tracing-subscriber` layer that records spans through a [`Client`].
pub struct RunlensLayer {
    client: Client,
    max_level: Level,
}

impl RunlensLayer {
    /// Records spans at level INFO and above (what `#[instrument]` creates by default).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            max_level: Level::INFO,
        }
    }

    /// Records spans at `level` and above (e.g. `Level::DEBUG` to include debug spans).
    pub fn with_max_level(mut self, level: Level) -> Self {
        self.max_level = level;
        self
    }

    fn records(&self, meta: &tracing::Metadata<'_>) -> bool {
        // Levels order by verbosity: TRACE > DEBUG > INFO > WARN > ERROR.
        *meta.level() <= self.max_level
            && !TRANSPORT_TARGETS.iter().any(|t| {
                meta.target()
                    .strip_prefix(t)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
    }
}

/// A recorded span's runlens side, kept in the `tracing` span's extensions.
struct Recorded {
    handle: Handle,
    /// Set by an `error` field or an error event inside the span.
    error: Option<String>,
    /// Fields recorded after the start, sent with the end.
    late_attributes: HashMap<String, String>,
}

enum Handle {
    Run(Run),
    Span(Span),
}

impl Handle {
    fn span(&self, name: &str, attributes: HashMap<String, String>, fresh: bool) -> Span {
        match self {
            Handle::Run(run) => run.span_with(name, attributes, fresh),
            Handle::Span(span) => span.span_with(name, attributes, fresh),
        }
    }
}

/// Fields as attributes, with the three special fields taken out.
#[derive(Default)]
struct Fields {
    attributes: HashMap<String, String>,
    run: bool,
    fresh: bool,
    error: Option<String>,
    message: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            ERROR_FIELD => self.error = Some(value),
            "message" => self.message = Some(value),
            name => {
                self.attributes.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            RUN_FIELD => self.run = value,
            FRESH_FIELD => self.fresh = value,
            _ => self.put(field, value.to_string()),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl<S> Layer<S> for RunlensLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if !self.records(meta) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let name = meta.name();
        // Under the nearest recorded ancestor (spans this layer skips are passed over),
        // unless the span asks to be a run of its own.
        let mut child = None;
        if !fields.run {
            for ancestor in span.scope().skip(1) {
                let extensions = ancestor.extensions();
                if let Some(recorded) = extensions.get::<Recorded>() {
                    let attributes = std::mem::take(&mut fields.attributes);
                    child = Some(recorded.handle.span(name, attributes, fields.fresh));
                    break;
                }
            }
        }
        let handle = match child {
            Some(child) => Handle::Span(child),
            None => Handle::Run(
                self.client
                    .start_run_with(name, std::mem::take(&mut fields.attributes)),
            ),
        };
        span.extensions_mut().insert(Recorded {
            handle,
            error: fields.error,
            late_attributes: HashMap::new(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(recorded) = extensions.get_mut::<Recorded>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if fields.error.is_some() {
            recorded.error = fields.error;
        }
        recorded.late_attributes.extend(fields.attributes);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Every event of the program passes here: decide from the metadata alone, and
        // visit the fields only of the few that fail a span.
        let meta = event.metadata();
        if *meta.level() != Level::ERROR && meta.fields().field(ERROR_FIELD).is_none() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let mut extensions = span.extensions_mut();
            if let Some(recorded) = extensions.get_mut::<Recorded>() {
                let text = fields.error.or(fields.message);
                recorded.error = Some(text.unwrap_or_else(|| event.metadata().name().to_owned()));
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(recorded) = span.extensions_mut().remove::<Recorded>() else {
            return;
        };
        let result = match recorded.error {
            Some(error) => Err(error),
            None => Ok(()),
        };
        match recorded.handle {
            Handle::Run(mut run) => run.end_with(result, recorded.late_attributes),
            Handle::Span(mut span) => span.end_with(result, recorded.late_attributes),
        }
    }
}
