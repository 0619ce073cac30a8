//! Text output helpers: writing to stdout, and (from the report crate) byte sizes,
//! timestamps and aligned tables.

use std::io::Write as _;

pub use runlens_report::text::{Columns, bytes, percent, table, timestamp, wrap};

use crate::exit::{FAILURE, Failure};

/// Writes a line of command output to stdout and flushes it. A reader that has gone away
/// (`runlens report | head`) ends the output quietly, as it does for other command-line
/// tools; any other write error (a full disk behind `> out.json`) is a failure.
pub fn emit(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(
            FAILURE,
            format!("cannot write to standard output: {e}"),
        )),
    }
}

/// `println!` for command output, through [`emit`]: evaluates to `Result<(), Failure>`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::format::emit(&format!($($arg)*))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(80 * (1 << 30)), "80.0 GiB");
    }

    #[test]
    fn tables_align_and_cut_long_cells() {
        let t = table(
            &["a".into(), "bb".into()],
            &[vec!["xxxx".into(), "y".repeat(50)]],
            10,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a     bb");
        assert_eq!(lines[1], format!("xxxx  {}…", "y".repeat(9)));
    }
}
