//! The one mapping between the domain's typed states and their SQLite text.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::domain::{EndedBy, EventKind, SpanKind, Status};

macro_rules! text_mapping {
    ($ty:ty) => {
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$ty>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(concat!("{:?} is not a known ", stringify!($ty)), text).into(),
                    )
                })
            }
        }
    };
}

/// A stored count or byte figure (an `INTEGER`, signed in SQLite) as the unsigned number it
/// is; a negative value, which runlens never writes, reads as none.
pub fn unsigned(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

text_mapping!(Status);
text_mapping!(EndedBy);
text_mapping!(EventKind);
text_mapping!(SpanKind);

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn states_round_trip_through_sqlite_and_unknown_text_is_an_error() {
        let conn = Connection::open_in_memory().unwrap();
        for s in Status::ALL {
            let back: Status = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
        }
        let text: String = conn
            .query_row("SELECT ?1", [EndedBy::ProcessExit], |r| r.get(0))
            .unwrap();
        assert_eq!(text, "process_exit");
        let bad = conn.query_row("SELECT 'paused'", [], |r| r.get::<_, Status>(0));
        assert!(bad.is_err());
    }
}
