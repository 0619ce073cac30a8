//! How the CLI fails: a message for the user and an exit code from sysexits(3), so that
//! scripts can tell a usage problem from bad data or a runtime failure.

use std::fmt;

/// A failed command: what to tell the user and which code to exit with.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message, printed after "runlens: ".
    pub message: String,
}

/// Bad configuration or arguments, including a `query` statement SQLite cannot run
/// (EX_USAGE).
pub const USAGE: u8 = 64;
/// Input data is unusable: not a runlens database, a statement that writes (EX_DATAERR).
pub const DATA: u8 = 65;
/// An input file does not exist (EX_NOINPUT).
pub const NO_INPUT: u8 = 66;
/// A needed resource is unavailable: the listen address is taken (EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// Anything else.
pub const FAILURE: u8 = 1;

impl Failure {
    /// A failure with this code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        let code = match &e {
            StoreError::Missing { .. } => NO_INPUT,
            StoreError::Directory { .. } => USAGE,
            StoreError::NotRunlens { .. }
            | StoreError::Corrupt { .. }
            | StoreError::TooNew { .. } => DATA,
            StoreError::Sqlite(_) | StoreError::TempFile(_) => FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}
