//! `runlens backup`: a consistent copy of a database, taken while `serve` writes to it.
//!
//! The copy (`runlens_store::backup`: SQLite's online backup API, one consistent snapshot)
//! goes to `OUT.partial` and is renamed to `OUT` only once it passes `integrity_check`.

use std::path::{Path, PathBuf};

use crate::cli::BackupArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::store;

/// Copies `--db` to `--out` and checks the copy.
pub fn run(args: BackupArgs) -> Result<(), Failure> {
    if args.out.exists() {
        return Err(Failure::new(
            USAGE,
            format!(
                "{} exists; choose a new --out (a backup never overwrites a file)",
                args.out.display()
            ),
        ));
    }
    let started = std::time::Instant::now();
    let partial = partial_path(&args.out);
    let _ = std::fs::remove_file(&partial); // left by an interrupted backup
    let counts = match store::backup::copy(&args.db, &partial) {
        Ok(counts) => counts,
        Err(store::backup::BackupError::Store(e)) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(Failure::new(FAILURE, e.to_string()));
        }
    };
    std::fs::rename(&partial, &args.out).map_err(|e| {
        Failure::new(
            FAILURE,
            format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                args.out.display()
            ),
        )
    })?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    outln!(
        "backed up {} to {} in {:.2} s: {:.1} MiB, {} runs, {} spans, {} snapshots; \
         integrity_check ok",
        args.db.display(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        counts.runs,
        counts.spans,
        counts.snapshots
    )?;
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}
