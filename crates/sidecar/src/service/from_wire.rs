//! runlens.v1 messages into the ingest core's commands. Only what is particular to this
//! wire is checked here (which message may come where, the `EndStatus` enum, empty
//! strings standing for absent ids); every other rule is the core's.

use runlens_api::pb;
use runlens_api::pb::client_message::Body;

use crate::domain::{EndedBy, Outcome};
use crate::ingest::{
    Command, EndRun, EndSpan, IngestError, Mentions, Record, Recorded, StartRun, StartSpan,
};

/// The command a session or unary message carries.
pub fn command(body: Body) -> Result<Command, IngestError> {
    Ok(match body {
        Body::Hello(_) => {
            return Err(IngestError::Invalid(
                "hello may only be the first message of a session".into(),
            ));
        }
        Body::Batch(_) | Body::Stats(_) => {
            return Err(IngestError::Invalid(
                "batches and client stats are only accepted on the session stream".into(),
            ));
        }
        Body::StartRun(m) => start_run(m),
        Body::EndRun(m) => end_run(m)?,
        Body::StartSpan(m) => start_span(m),
        Body::EndSpan(m) => end_span(m)?,
        Body::Metric(m) => metric(m),
        Body::Event(m) => event(m),
    })
}

/// The run and spans a message names, for the registry to know before checking it (nothing
/// for hello, batches and stats).
pub fn mentions(body: &Body) -> Mentions<'_> {
    match body {
        Body::StartRun(m) => Mentions::run(&m.run_id).starting(),
        Body::EndRun(m) => Mentions::run(&m.run_id),
        Body::StartSpan(m) => Mentions::run(&m.run_id).span(some(&m.parent_span_id)),
        Body::EndSpan(m) => Mentions::default().span(some(&m.span_id)),
        Body::Metric(m) => Mentions::run(&m.run_id).span(some(&m.span_id)),
        Body::Event(m) => Mentions::run(&m.run_id).span(some(&m.span_id)),
        Body::Hello(_) | Body::Batch(_) | Body::Stats(_) => Mentions::default(),
    }
}

/// An id, absent when empty (the wire's way of leaving it out).
fn some(id: &str) -> Option<&str> {
    Some(id).filter(|id| !id.is_empty())
}

/// `StartRun`.
pub fn start_run(m: pb::StartRunRequest) -> Command {
    Command::StartRun(StartRun {
        run_id: m.run_id,
        name: m.name,
        attributes: m.attributes,
        time_ns: m.time_ns,
    })
}

/// `EndRun`: the agent ends its own run.
pub fn end_run(m: pb::EndRunRequest) -> Result<Command, IngestError> {
    Ok(Command::EndRun(EndRun {
        outcome: outcome(m.status, m.error)?,
        run_id: m.run_id,
        attributes: m.attributes,
        time_ns: m.time_ns,
        ended_by: EndedBy::Client,
    }))
}

/// `StartSpan`.
pub fn start_span(m: pb::StartSpanRequest) -> Command {
    Command::StartSpan(StartSpan {
        run_id: m.run_id,
        span_id: m.span_id,
        parent_span_id: absent_if_empty(m.parent_span_id),
        name: m.name,
        attributes: m.attributes,
        time_ns: m.time_ns,
        fresh_snapshot: m.fresh_snapshot,
    })
}

/// `EndSpan`.
pub fn end_span(m: pb::EndSpanRequest) -> Result<Command, IngestError> {
    Ok(Command::EndSpan(EndSpan {
        outcome: outcome(m.status, m.error)?,
        span_id: m.span_id,
        attributes: m.attributes,
        time_ns: m.time_ns,
        fresh_snapshot: m.fresh_snapshot,
    }))
}

/// `RecordMetric`.
pub fn metric(m: pb::Metric) -> Command {
    Command::Record(Record {
        recorded: Recorded::Metric {
            value: m.value,
            unit: m.unit,
        },
        run_id: m.run_id,
        span_id: absent_if_empty(m.span_id),
        name: m.name,
        attributes: m.attributes,
        time_ns: m.time_ns,
    })
}

/// `RecordEvent`.
pub fn event(m: pb::Event) -> Command {
    Command::Record(Record {
        recorded: Recorded::Event,
        run_id: m.run_id,
        span_id: absent_if_empty(m.span_id),
        name: m.name,
        attributes: m.attributes,
        time_ns: m.time_ns,
    })
}

fn absent_if_empty(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

/// An `EndStatus` and its error text.
fn outcome(raw: i32, error: String) -> Result<Outcome, IngestError> {
    match pb::EndStatus::try_from(raw) {
        Ok(pb::EndStatus::Ok) => Ok(Outcome::Ok),
        Ok(pb::EndStatus::Failed) => Ok(Outcome::Failed(error)),
        Ok(pb::EndStatus::Unspecified) => Err(IngestError::Invalid(
            "status is unspecified; use END_STATUS_OK or END_STATUS_FAILED".into(),
        )),
        Err(_) => Err(IngestError::Invalid(format!(
            "status {raw} is not a known EndStatus"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_status_must_be_ok_or_failed() {
        assert_eq!(
            outcome(pb::EndStatus::Ok as i32, "x".into()),
            Ok(Outcome::Ok)
        );
        assert_eq!(
            outcome(pb::EndStatus::Failed as i32, "boom".into()),
            Ok(Outcome::Failed("boom".into()))
        );
        assert!(matches!(
            outcome(0, String::new()),
            Err(IngestError::Invalid(_))
        ));
        assert!(matches!(
            outcome(99, String::new()),
            Err(IngestError::Invalid(_))
        ));
    }

    #[test]
    fn empty_optional_ids_are_absent_and_hello_is_not_a_command() {
        let Ok(Command::StartSpan(s)) = command(Body::StartSpan(pb::StartSpanRequest {
            run_id: "r".into(),
            span_id: "s".into(),
            ..Default::default()
        })) else {
            panic!("not a span start");
        };
        assert_eq!(s.parent_span_id, None);
        assert!(command(Body::Hello(pb::SessionHello::default())).is_err());
    }
}
