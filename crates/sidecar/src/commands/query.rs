//! `runlens query`: one read-only SQL statement, printed as a table, JSON or CSV.

use rusqlite::types::ValueRef;

use crate::cli::{Format, QueryArgs};
use crate::exit::{DATA, FAILURE, Failure};
use crate::format::table;
use crate::store;

/// Runs the statement and prints its rows.
pub fn run(args: QueryArgs) -> Result<(), Failure> {
    let conn = store::open_read_only(&args.db)?;
    let mut stmt = conn
        .prepare(&args.sql)
        .map_err(|e| Failure::new(DATA, format!("SQL error: {e}")))?;
    if !stmt.readonly() {
        return Err(Failure::new(
            DATA,
            "runlens query only reads; this statement would change the database \
             (open it with sqlite3 if you really mean to)",
        ));
    }
    let headers: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt
        .query([])
        .map_err(|e| Failure::new(DATA, format!("SQL error: {e}")))?;
    let mut values: Vec<Vec<serde_json::Value>> = Vec::new();
    while let Some(row) = rows
        .next()
        .map_err(|e| Failure::new(FAILURE, format!("SQL error: {e}")))?
    {
        let mut out = Vec::with_capacity(headers.len());
        for i in 0..headers.len() {
            let v = row
                .get_ref(i)
                .map_err(|e| Failure::new(FAILURE, format!("SQL error: {e}")))?;
            out.push(to_json(v));
        }
        values.push(out);
    }
    let text = match args.format {
        Format::Json => render_json(&headers, &values)?,
        Format::Csv => render_csv(&headers, &values),
        Format::Table => {
            let cells: Vec<Vec<String>> = values
                .iter()
                .map(|r| r.iter().map(cell_text).collect())
                .collect();
            let mut t = table(&headers, &cells, 32);
            t.push_str(&format!(
                "({} row{})\n",
                cells.len(),
                if cells.len() == 1 { "" } else { "s" }
            ));
            t
        }
    };
    crate::format::emit(text.strip_suffix('\n').unwrap_or(&text))
}

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

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_json(headers: &[String], rows: &[Vec<serde_json::Value>]) -> Result<String, Failure> {
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| headers.iter().cloned().zip(r.iter().cloned()).collect())
        .collect();
    let mut text = serde_json::to_string_pretty(&objects)
        .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

fn render_csv(headers: &[String], rows: &[Vec<serde_json::Value>]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    let line = |cells: Vec<String>| cells.join(",") + "\n";
    out.push_str(&line(headers.iter().map(|h| field(h)).collect()));
    for r in rows {
        let cells = r
            .iter()
            .map(|v| match v {
                serde_json::Value::Null => String::new(),
                other => field(&cell_text(other)),
            })
            .collect();
        out.push_str(&line(cells));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_leaves_null_empty() {
        let text = render_csv(
            &["a".into(), "b".into()],
            &[
                vec!["x,y".into(), serde_json::Value::Null],
                vec![1.into(), "q\"".into()],
            ],
        );
        assert_eq!(text, "a,b\n\"x,y\",\n1,\"q\"\"\"\n");
    }
}
