//! The OpenTelemetry environment variables runlens reads, parsed in one place as the
//! OpenTelemetry specification says: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`
//! (who this sidecar is: `/metrics`' `target_info`, the resource of everything it exports,
//! `sidecar_starts`), and `OTEL_EXPORTER_OTLP_HEADERS` with its per-signal forms (what
//! `--otlp-export` sends with each request).
//!
//! The rules, each tested below:
//! - lists are `key=value` pairs separated by commas; keys and values are trimmed, values
//!   percent-decoded (`%2C` is a comma); a pair without `=` or with an empty key is skipped;
//! - a key given twice keeps its last value (in the place of its first);
//! - `OTEL_SERVICE_NAME` wins over a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`;
//! - a signal's own headers (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `…_METRICS_HEADERS`)
//!   replace the generic `OTEL_EXPORTER_OTLP_HEADERS` for that signal; header names are
//!   lowercased (HTTP/2 and gRPC metadata require it).

/// What an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans (`/v1/traces`).
    Traces,
    /// Metrics (`/v1/metrics`).
    Metrics,
}

/// The sidecar's resource from the process environment, keys as given (`k8s.pod.name`).
pub fn resource() -> Vec<(String, String)> {
    resource_from(&|name| std::env::var(name).ok())
}

/// The headers `--otlp-export` sends with `signal`'s requests, from the process
/// environment.
pub fn headers(signal: Signal) -> Vec<(String, String)> {
    headers_from(&|name| std::env::var(name).ok(), signal)
}

/// [`resource`] over any environment (`env` answers a variable's value).
pub fn resource_from(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut pairs = key_values(&env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default());
    if let Some(name) = env("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        set(
            &mut pairs,
            "service.name".to_owned(),
            name.trim().to_owned(),
        );
    }
    pairs
}

/// [`headers`] over any environment.
pub fn headers_from(env: &dyn Fn(&str) -> Option<String>, signal: Signal) -> Vec<(String, String)> {
    let own = match signal {
        Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    };
    let text = env(own)
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (key, value) in key_values(&text) {
        set(&mut headers, key.to_ascii_lowercase(), value);
    }
    headers
}

/// `k=v,k=v` as pairs, by the rules above.
pub fn key_values(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() {
            set(&mut pairs, key.to_owned(), percent_decode(value.trim()));
        }
    }
    pairs
}

/// Sets `key` to `value`: replaced where it is, or added at the end.
fn set(pairs: &mut Vec<(String, String)>, key: String, value: String) {
    match pairs.iter_mut().find(|(k, _)| *k == key) {
        Some(pair) => pair.1 = value,
        None => pairs.push((key, value)),
    }
}

/// Percent-decoding of OpenTelemetry environment values (`%2C` → `,`); a `%` not followed
/// by two hex digits stays as it is.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value() {
        let resource = resource_from(&env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=a, k8s.node.name=n1 ,k8s.pod.name=b",
        )]));
        assert_eq!(
            resource,
            pairs(&[("k8s.pod.name", "b"), ("k8s.node.name", "n1")])
        );
    }

    #[test]
    fn the_service_name_variable_wins_over_the_attribute() {
        let resource = resource_from(&env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=old,team=infra"),
            ("OTEL_SERVICE_NAME", " runlens-pod-7 "),
        ]));
        assert_eq!(
            resource,
            pairs(&[("service.name", "runlens-pod-7"), ("team", "infra")])
        );
        let blank = resource_from(&env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=kept"),
            ("OTEL_SERVICE_NAME", "  "),
        ]));
        assert_eq!(blank, pairs(&[("service.name", "kept")]));
    }

    #[test]
    fn values_are_percent_decoded_and_bad_pairs_skipped() {
        assert_eq!(
            key_values("a=x%2Cy%3Dz,=nokey,novalue, b = 100% "),
            pairs(&[("a", "x,y=z"), ("b", "100%")])
        );
        assert_eq!(percent_decode("%e2%9c%93 ok"), "✓ ok");
    }

    #[test]
    fn a_signals_own_headers_replace_the_generic_ones() {
        let vars = env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer generic,X-Team=a",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "Authorization=Bearer%20traces",
            ),
        ]);
        assert_eq!(
            headers_from(&vars, Signal::Traces),
            pairs(&[("authorization", "Bearer traces")])
        );
        assert_eq!(
            headers_from(&vars, Signal::Metrics),
            pairs(&[("authorization", "Bearer generic"), ("x-team", "a")]),
            "metrics fall back to the generic headers, never to the traces ones"
        );
        let metrics_own = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=2,B=3"),
        ]);
        assert_eq!(
            headers_from(&metrics_own, Signal::Metrics),
            pairs(&[("b", "3")]),
            "names are lowercased, so B replaces b"
        );
        assert!(headers_from(&env(&[]), Signal::Traces).is_empty());
    }
}
