//! Validation of everything that reaches the ingest core, from any front door. Each
//! failure is [`IngestError::Invalid`] (`INVALID_ARGUMENT` on the wire) with a message
//! that names the field and the rule.

use std::collections::HashMap;

use super::error::{IngestError, Result};

/// Longest id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest run, span, metric or event name, in characters.
pub const MAX_NAME_LEN: usize = 256;
/// Most attributes on one message.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute key, in characters.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 128;
/// Longest attribute value, in characters.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 4096;
/// Error texts longer than this are truncated (not rejected: a failure must not be lost
/// because its stack trace was long).
pub const MAX_ERROR_LEN: usize = 4096;
/// Longest unit, in characters.
pub const MAX_UNIT_LEN: usize = 64;

/// A client-chosen id: 1..=128 bytes of `A-Z a-z 0-9 _ - . :`.
pub fn id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(IngestError::Invalid(format!("{field} is empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(IngestError::Invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_ID_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(IngestError::Invalid(format!(
            "{field} contains {c:?}; ids may use only A-Z a-z 0-9 _ - . :"
        )));
    }
    Ok(())
}

/// An id the sidecar made for a traced span or run: like a client's id, with `/` too
/// (`otlp/<trace>/<span>`). Client ids cannot contain `/`, so the two never collide.
pub fn generated_id(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_ID_LEN {
        return Err(IngestError::Invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_ID_LEN}",
            value.len()
        )));
    }
    if value.split('/').all(|part| id(field, part).is_ok()) {
        Ok(())
    } else {
        Err(IngestError::Invalid(format!(
            "{field} {value:?} is not made of ids (A-Z a-z 0-9 _ - . :) joined by /"
        )))
    }
}

/// An optional id (the front door turns an empty wire field into `None`).
pub fn optional_id(field: &str, value: Option<String>) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) => id(field, &v).map(|()| Some(v)),
    }
}

/// A name: 1..=256 characters, not only whitespace, no control characters.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(IngestError::Invalid(format!("{field} is empty")));
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_LEN {
        return Err(IngestError::Invalid(format!(
            "{field} is {chars} characters long; the limit is {MAX_NAME_LEN}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(IngestError::Invalid(format!(
            "{field} contains a control character"
        )));
    }
    Ok(())
}

/// Attributes: at most 64 entries, keys 1..=128 characters, values up to 4096.
/// Returns them as a JSON object, or `None` when empty.
pub fn attributes(map: &HashMap<String, String>) -> Result<Option<String>> {
    if map.is_empty() {
        return Ok(None);
    }
    if map.len() > MAX_ATTRIBUTES {
        return Err(IngestError::Invalid(format!(
            "{} attributes given; the limit is {MAX_ATTRIBUTES}",
            map.len()
        )));
    }
    for (key, value) in map {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_ATTRIBUTE_KEY_LEN {
            return Err(IngestError::Invalid(format!(
                "attribute key {key:?} must be 1 to {MAX_ATTRIBUTE_KEY_LEN} characters"
            )));
        }
        if value.chars().count() > MAX_ATTRIBUTE_VALUE_LEN {
            return Err(IngestError::Invalid(format!(
                "attribute {key:?} has a value longer than {MAX_ATTRIBUTE_VALUE_LEN} characters"
            )));
        }
    }
    serde_json::to_string(map)
        .map(Some)
        .map_err(|e| IngestError::Invalid(format!("attributes not encodable: {e}")))
}

/// An error text: kept whole up to [`MAX_ERROR_LEN`] characters, cut (with "…") beyond.
pub fn error_text(error: &str) -> String {
    truncate(error, MAX_ERROR_LEN)
}

/// A metric value: finite.
pub fn metric_value(name: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(IngestError::Invalid(format!(
            "metric {name:?} has value {value}; values must be finite numbers"
        )))
    }
}

/// A unit: up to 64 characters; empty means none.
pub fn unit(value: &str) -> Result<Option<String>> {
    if value.chars().count() > MAX_UNIT_LEN {
        return Err(IngestError::Invalid(format!(
            "unit is longer than {MAX_UNIT_LEN} characters"
        )));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A timestamp: 0 means now; negative is invalid.
pub fn time_ns(value: i64, now_ns: i64) -> Result<i64> {
    match value {
        0 => Ok(now_ns),
        v if v < 0 => Err(IngestError::Invalid(format!(
            "time_ns {v} is negative; use Unix nanoseconds, or 0 for now"
        ))),
        v => Ok(v),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_for_length_and_characters() {
        assert!(id("run_id", "run-1.a:b_c").is_ok());
        assert!(matches!(id("run_id", ""), Err(IngestError::Invalid(_))));
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(
            id("run_id", &long)
                .unwrap_err()
                .to_string()
                .contains("limit is 128")
        );
        assert!(
            id("span_id", "a b")
                .unwrap_err()
                .to_string()
                .contains("' '")
        );
    }

    #[test]
    fn generated_ids_may_have_slashes_and_client_ids_may_not() {
        assert!(generated_id("span id", "otlp/0af7/b7ad").is_ok());
        assert!(generated_id("span id", "otlp//b7ad").is_err());
        assert!(generated_id("span id", "otlp/a b").is_err());
        assert!(id("run_id", "otlp/0af7").is_err());
    }

    #[test]
    fn names_must_be_non_blank_and_bounded() {
        assert!(name("name", "llm_call").is_ok());
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(name("name", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(name("name", "a\nb").is_err());
    }

    #[test]
    fn oversized_attribute_maps_are_rejected() {
        let map: HashMap<_, _> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        assert!(
            attributes(&map)
                .unwrap_err()
                .to_string()
                .contains("limit is 64")
        );
        let ok: HashMap<_, _> = [("model".to_owned(), "m".to_owned())].into();
        assert_eq!(
            attributes(&ok).unwrap().as_deref(),
            Some(r#"{"model":"m"}"#)
        );
        assert_eq!(attributes(&HashMap::new()).unwrap(), None);
    }

    #[test]
    fn non_finite_metric_values_are_rejected() {
        assert!(metric_value("m", 1.5).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                metric_value("m", bad),
                Err(IngestError::Invalid(_))
            ));
        }
    }

    #[test]
    fn long_error_text_is_truncated_not_rejected() {
        let error = error_text(&"e".repeat(10_000));
        assert_eq!(error.chars().count(), MAX_ERROR_LEN + 1);
        assert!(error.ends_with('…'));
        assert_eq!(error_text("short"), "short");
    }
}
