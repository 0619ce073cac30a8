//! `runlens query`: one read-only SQL statement, printed as a table, JSON or CSV.

use crate::cli::{Format, QueryArgs};
use crate::exit::{DATA, FAILURE, Failure, USAGE};
use std::io::Write;

use crate::format::Columns;
use crate::store;

/// Rows a table holds to size its columns; the rest are printed as they are read, cut to
/// those widths, so that memory stays flat however many rows a query returns.
const TABLE_SIZING_ROWS: usize = 1000;

/// Runs the statement and prints its rows as they are read.
pub fn run(args: QueryArgs) -> Result<(), Failure> {
    if !args.extra.is_empty() {
        return Err(Failure::new(
            USAGE,
            format!(
                "runlens query takes one SQL statement, quoted, after its flags: runlens \
                 query \"select ...\" (got {} more word(s): {})",
                args.extra.len(),
                args.extra.join(" ")
            ),
        ));
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = store::query::read(&args.db, &args.sql, |headers, rows| {
        let mut next = || rows().map_err(failure);
        match args.format {
            Format::Csv => write_csv(&mut out, headers, &mut next),
            Format::Json => write_json(&mut out, headers, &mut next),
            Format::Table => {
                // 0 means "never cut".
                let max_cell = if args.max_width == 0 {
                    usize::MAX
                } else {
                    args.max_width
                };
                write_table(&mut out, headers, &mut next, max_cell)
            }
        }
    })
    .map_err(failure)?;
    match written.and_then(|()| out.flush().map_err(Written::Io)) {
        Ok(()) => Ok(()),
        Err(Written::Failed(failure)) => Err(failure),
        // The reader went away (`runlens query ... | head`): nothing more to say.
        Err(Written::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(Written::Io(e)) => Err(Failure::new(
            FAILURE,
            format!("cannot write to standard output: {e}"),
        )),
    }
}

/// Why printing stopped early.
enum Written {
    /// Reading a row failed.
    Failed(Failure),
    /// Writing failed (a closed pipe among others).
    Io(std::io::Error),
}

impl From<Failure> for Written {
    fn from(f: Failure) -> Self {
        Written::Failed(f)
    }
}

impl From<std::io::Error> for Written {
    fn from(e: std::io::Error) -> Self {
        Written::Io(e)
    }
}

/// The next row, or `None` after the last.
type NextRow<'a> = dyn FnMut() -> Result<Option<Vec<serde_json::Value>>, Failure> + 'a;

fn write_csv(
    out: &mut impl Write,
    headers: &[String],
    next: &mut NextRow<'_>,
) -> Result<(), Written> {
    let header: Vec<String> = headers.iter().map(|h| csv_field(h)).collect();
    writeln!(out, "{}", header.join(","))?;
    while let Some(row) = next()? {
        out.write_all(csv_line(&row).as_bytes())?;
    }
    Ok(())
}

/// The same text as `serde_json::to_string_pretty` of the array of row objects, written
/// one row at a time.
fn write_json(
    out: &mut impl Write,
    headers: &[String],
    next: &mut NextRow<'_>,
) -> Result<(), Written> {
    let mut first = true;
    while let Some(row) = next()? {
        let object: serde_json::Map<String, serde_json::Value> =
            headers.iter().cloned().zip(row).collect();
        let text = serde_json::to_string_pretty(&object)
            .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?;
        out.write_all(if first { b"[\n  " } else { b",\n  " })?;
        out.write_all(text.replace('\n', "\n  ").as_bytes())?;
        first = false;
    }
    out.write_all(if first { b"[]\n" } else { b"\n]\n" })?;
    Ok(())
}

/// Cells wider than `max_cell` characters are cut with `…`, and the closing count line
/// says so and how to see them whole: a silent cut would hide data.
fn write_table(
    out: &mut impl Write,
    headers: &[String],
    next: &mut NextRow<'_>,
    max_cell: usize,
) -> Result<(), Written> {
    let cells =
        |row: Vec<serde_json::Value>| -> Vec<String> { row.iter().map(cell_text).collect() };
    let mut first: Vec<Vec<String>> = Vec::new();
    let mut more = true;
    while first.len() < TABLE_SIZING_ROWS {
        match next()? {
            Some(row) => first.push(cells(row)),
            None => {
                more = false;
                break;
            }
        }
    }
    let columns = Columns::fit(headers, &first, max_cell);
    let (header_line, mut cut_any) = columns.line_cut(headers);
    out.write_all(header_line.as_bytes())?;
    let mut count = first.len();
    for row in &first {
        let (line, was_cut) = columns.line_cut(row);
        cut_any |= was_cut;
        out.write_all(line.as_bytes())?;
    }
    drop(first);
    let mut cut_later = false;
    while more {
        match next()? {
            Some(row) => {
                let (line, was_cut) = columns.line_cut(&cells(row));
                cut_later |= was_cut;
                out.write_all(line.as_bytes())?;
                count += 1;
            }
            None => more = false,
        }
    }
    write!(out, "({count} row{}", if count == 1 { "" } else { "s" })?;
    if cut_later {
        write!(
            out,
            "; cells after the first {TABLE_SIZING_ROWS} rows were cut to their widths: \
             --format csv or json prints them whole"
        )?;
    } else if cut_any {
        write!(
            out,
            "; cells wider than {max_cell} characters were cut: --max-width N widens them \
             (0 never cuts), --format csv or json prints them whole"
        )?;
    }
    writeln!(out, ")")?;
    Ok(())
}

/// The failure a statement's error is: wrong SQL is a usage error (64), SQL that would
/// write is refused as data (65), anything else a failure (1).
fn failure(e: store::query::QueryError) -> Failure {
    use store::query::QueryError;
    match e {
        QueryError::Open(e) => e.into(),
        QueryError::Sql(_) => Failure::new(USAGE, e.to_string()),
        QueryError::Writes => Failure::new(DATA, e.to_string()),
        QueryError::Row(_) => Failure::new(FAILURE, e.to_string()),
    }
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One CSV record with its newline; NULL is an empty field.
fn csv_line(row: &[serde_json::Value]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|v| match v {
            serde_json::Value::Null => String::new(),
            other => csv_field(&cell_text(other)),
        })
        .collect();
    cells.join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_leaves_null_empty() {
        let rows = vec![
            vec!["x,y".into(), serde_json::Value::Null],
            vec![1.into(), "q\"".into()],
        ];
        let mut rows = rows.into_iter();
        let mut out = Vec::new();
        assert!(write_csv(&mut out, &["a".into(), "b".into()], &mut || Ok(rows.next())).is_ok());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b\n\"x,y\",\n1,\"q\"\"\"\n"
        );
    }

    #[test]
    fn json_is_written_row_by_row_as_one_pretty_array() {
        let headers: Vec<String> = vec!["a".into(), "b".into()];
        let rows = vec![
            vec![1.into(), serde_json::json!("x")],
            vec![serde_json::Value::Null, 2.5.into()],
        ];
        let whole: Vec<serde_json::Map<String, serde_json::Value>> = rows
            .iter()
            .map(|r| headers.iter().cloned().zip(r.iter().cloned()).collect())
            .collect();
        let mut expected = serde_json::to_string_pretty(&whole).unwrap();
        expected.push('\n');
        let mut it = rows.into_iter();
        let mut out = Vec::new();
        assert!(write_json(&mut out, &headers, &mut || Ok(it.next())).is_ok());
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut out = Vec::new();
        assert!(write_json(&mut out, &headers, &mut || Ok(None)).is_ok());
        assert_eq!(String::from_utf8(out).unwrap(), "[]\n");
    }

    #[test]
    fn a_long_table_keeps_the_widths_of_its_first_rows() {
        let headers: Vec<String> = vec!["n".into()];
        let mut i = 0u32;
        let mut out = Vec::new();
        let mut next = || {
            i += 1;
            // Short values first, a long one after the sizing rows.
            Ok(match i {
                1..=1000 => Some(vec![serde_json::json!("ab")]),
                1001 => Some(vec![serde_json::json!("abcdef")]),
                _ => None,
            })
        };
        assert!(write_table(&mut out, &headers, &mut next, 32).is_ok());
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "n");
        assert_eq!(lines[1001], "a…", "cut to the column's width");
        assert!(lines[1002].starts_with("(1001 rows; cells after the first 1000 rows were cut"));
    }

    fn table_of(value: &str, max_cell: usize) -> String {
        let mut rows = vec![vec![serde_json::json!(value)]].into_iter();
        let mut out = Vec::new();
        assert!(
            write_table(
                &mut out,
                &["attributes".into()],
                &mut || Ok(rows.next()),
                max_cell
            )
            .is_ok()
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_cut_cell_is_announced_and_max_width_zero_prints_it_whole() {
        let long = "x".repeat(50);
        let cut = table_of(&long, 32);
        assert!(cut.contains(&format!("{}…", "x".repeat(31))), "{cut}");
        assert!(
            cut.contains("(1 row; cells wider than 32 characters were cut: --max-width N"),
            "{cut}"
        );
        let whole = table_of(&long, usize::MAX);
        assert!(whole.contains(&long), "{whole}");
        assert!(whole.ends_with("(1 row)\n"), "{whole}");
    }
}
