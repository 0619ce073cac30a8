//! How runs, spans and senders that came in over OTLP are named in the database, and how
//! their OpenTelemetry ids are read back out (the exporter sends them with their own ids):
//! one trace is one run `otlp/<trace id hex>`, its spans `otlp/<trace id hex>/<span id
//! hex>`, a sender `otlp/<service.name>[/<pid>]`. Written and parsed only here.

use std::fmt::Write as _;

/// What every id made from OTLP starts with.
pub const PREFIX: &str = "otlp/";

/// The run of a trace: `otlp/<32 hex digits>`.
pub fn run_id(trace_id: &[u8]) -> String {
    let mut text = String::with_capacity(PREFIX.len() + trace_id.len() * 2);
    text.push_str(PREFIX);
    push_hex(&mut text, trace_id);
    text
}

/// A span of the trace whose run is `run_id`: `<run_id>/<16 hex digits>`.
pub fn span_id(run_id: &str, span_id: &[u8]) -> String {
    let mut text = String::with_capacity(run_id.len() + 1 + span_id.len() * 2);
    text.push_str(run_id);
    text.push('/');
    push_hex(&mut text, span_id);
    text
}

/// A sender: `otlp/<service.name>[/<pid>]`, the name cut to 80 characters of those ids
/// may hold (others become `_`), so that the pid still fits.
pub fn client_id(service_name: &str, pid: u32) -> String {
    let mut id = String::from(PREFIX);
    id.extend(service_name.chars().take(80).map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':') {
            c
        } else {
            '_'
        }
    }));
    if pid != 0 {
        let _ = write!(id, "/{pid}");
    }
    id
}

/// Whether a run came in over OTLP.
pub fn is_from_otlp(run_id: &str) -> bool {
    run_id.starts_with(PREFIX)
}

/// The OpenTelemetry trace id of a run that came in over OTLP.
pub fn trace_id_of(run_id: &str) -> Option<[u8; 16]> {
    unhex(run_id.strip_prefix(PREFIX)?)
}

/// The OpenTelemetry span id of a span that came in over OTLP.
pub fn span_id_of(span_id: &str) -> Option<[u8; 8]> {
    let (_, hex) = span_id.strip_prefix(PREFIX)?.split_once('/')?;
    unhex(hex)
}

/// Lowercase hex of `bytes`, appended.
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn unhex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_written_here_are_read_back_here() {
        let trace = [0xab_u8; 16];
        let span = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
        let run = run_id(&trace);
        assert_eq!(run, format!("otlp/{}", "ab".repeat(16)));
        let id = span_id(&run, &span);
        assert_eq!(id, format!("{run}/0123456789abcdef"));
        assert!(is_from_otlp(&run));
        assert_eq!(trace_id_of(&run), Some(trace));
        assert_eq!(span_id_of(&id), Some(span));
        assert_eq!(
            trace_id_of("run-7"),
            None,
            "a runlens.v1 run has no trace id"
        );
        assert_eq!(span_id_of("otlp/zz/0123"), None);
    }

    #[test]
    fn sender_ids_keep_to_the_characters_ids_may_hold() {
        assert_eq!(client_id("my agent", 4242), "otlp/my_agent/4242");
        assert_eq!(client_id("svc", 0), "otlp/svc");
        assert_eq!(client_id(&"x".repeat(200), 1).len(), "otlp/".len() + 80 + 2);
    }
}
