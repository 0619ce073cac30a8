//! `runlens merge`: the databases of many pods (copied out with `kubectl cp`) in one, so
//! that SQL and reports run over a fleet's history on one machine. Each input is merged in
//! its own transaction (all of it or nothing) and keeps its origin (`merge_sources`,
//! `source_id` on its rows); see `store::merge`.

use crate::cli::MergeArgs;
use crate::exit::{DATA, Failure, USAGE};
use crate::format::outln;
use crate::store::merge::{MergeError, merge_into};
use crate::store::{self};

/// Merges every input into `--out`; goes on past an input it must refuse, and exits with
/// the first refusal's code once the others are merged.
pub fn run(args: MergeArgs) -> Result<(), Failure> {
    for input in &args.inputs {
        if same_file(input, &args.out) {
            return Err(Failure::new(
                USAGE,
                format!("{} is both an input and --out", input.display()),
            ));
        }
    }
    let mut out = store::open_for_writing(&args.out, false, None)?;
    let mut first_refusal: Option<Failure> = None;
    let mut merged = 0;
    for input in &args.inputs {
        // The usual checks and words first: missing, a directory, not a runlens database.
        let result = store::open_read_only(input)
            .map_err(Failure::from)
            .and_then(|check| {
                drop(check);
                merge_into(&mut out, input, probe_core::unix_now_ns()).map_err(refusal)
            });
        match result {
            Ok(m) => {
                merged += 1;
                outln!(
                    "merged {} as source {}: {} runs, {} spans, {} snapshots{}",
                    input.display(),
                    m.source_id,
                    m.runs,
                    m.spans,
                    m.snapshots,
                    m.resource
                        .as_deref()
                        .map(describe_resource)
                        .unwrap_or_default()
                )?;
            }
            Err(failure) => {
                eprintln!("runlens merge: {}", failure.message);
                first_refusal.get_or_insert(failure);
            }
        }
    }
    outln!(
        "{merged} of {} database(s) merged into {}",
        args.inputs.len(),
        args.out.display()
    )?;
    match first_refusal {
        // Each refusal was said above; the exit code is the first one's.
        Some(failure) => Err(Failure::new(
            failure.code,
            format!(
                "{} input(s) not merged (said above)",
                args.inputs.len() - merged
            ),
        )),
        None => Ok(()),
    }
}

fn refusal(e: MergeError) -> Failure {
    let code = match e {
        MergeError::Sql { .. } => crate::exit::FAILURE,
        _ => DATA,
    };
    Failure::new(code, e.to_string())
}

/// ` (k8s.pod.name=agent-a, k8s.node.name=gpu-1)` from a resource JSON object.
fn describe_resource(json: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) else {
        return String::new();
    };
    if map.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!(" ({})", pairs.join(", "))
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
