//! One read-only SQL statement over a database, its rows as JSON values (what `runlens
//! query` prints as a table, CSV or JSON).

use std::path::Path;

use rusqlite::types::ValueRef;

use crate::{StoreError, open_read_only};

/// Why a statement gave no rows.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] StoreError),
    /// SQLite cannot run the statement (a usage error: the SQL is wrong).
    #[error("SQL error: {0}")]
    Sql(String),
    /// The statement would change the database.
    #[error(
        "runlens query only reads; this statement would change the database (open it with \
         sqlite3 if you really mean to)"
    )]
    Writes,
    /// Reading a row failed part way.
    #[error("SQL error: {0}")]
    Row(String),
}

/// The next row, or `None` after the last.
pub type NextRow<'a> = dyn FnMut() -> Result<Option<Vec<serde_json::Value>>, QueryError> + 'a;

/// Runs `sql` read-only on the database at `db` and hands `consume` the column names and a
/// function that yields the rows one at a time (never all in memory); returns what
/// `consume` returns.
pub fn read<T>(
    db: &Path,
    sql: &str,
    consume: impl FnOnce(&[String], &mut NextRow<'_>) -> T,
) -> Result<T, QueryError> {
    let conn = open_read_only(db)?;
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    if !stmt.readonly() {
        return Err(QueryError::Writes);
    }
    let headers: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let columns = headers.len();
    let mut rows = stmt.query([]).map_err(|e| QueryError::Sql(e.to_string()))?;
    let mut next = || -> Result<Option<Vec<serde_json::Value>>, QueryError> {
        let Some(row) = rows.next().map_err(|e| QueryError::Row(e.to_string()))? else {
            return Ok(None);
        };
        (0..columns)
            .map(|i| {
                row.get_ref(i)
                    .map(to_json)
                    .map_err(|e| QueryError::Row(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    };
    Ok(consume(&headers, &mut next))
}

/// A cell as JSON: NULL, integer, real (non-finite as NULL), text, or a blob's size.
fn to_json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
    }
}
