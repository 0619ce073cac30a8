//! The store's column batches as Arrow record batches and back, typed as the layout says:
//! instants as TIMESTAMP(ns, UTC), flags as BOOLEAN, ratios as DOUBLE, ids as strings.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use runlens_store::columnar::{Kind, Table, Values};

use crate::{FleetError, Result};

/// The Arrow type of a layout column.
fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Int => DataType::Int64,
        Kind::Real => DataType::Float64,
        Kind::Text => DataType::Utf8,
        Kind::Time => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        Kind::Bool => DataType::Boolean,
    }
}

/// The Arrow schema of `table`'s files.
pub fn schema(table: Table) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns()
        .iter()
        .map(|c| Field::new(c.name, data_type(c.kind), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A record batch of `table` from the store's columns.
pub fn to_record_batch(
    table: Table,
    schema: &SchemaRef,
    columns: Vec<Values>,
) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = table
        .columns()
        .iter()
        .zip(columns)
        .map(|(column, values)| -> ArrayRef {
            match (column.kind, values) {
                (Kind::Time, Values::Int(v)) => {
                    Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
                }
                (Kind::Bool, Values::Int(v)) => Arc::new(BooleanArray::from(
                    v.into_iter().map(|x| x.map(|x| x != 0)).collect::<Vec<_>>(),
                )),
                (_, Values::Int(v)) => Arc::new(Int64Array::from(v)),
                (_, Values::Real(v)) => Arc::new(Float64Array::from(v)),
                (_, Values::Text(v)) => Arc::new(StringArray::from(v)),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

/// The store's columns of a record batch read from a file: each column of the batch
/// that the layout knows, by name, with its values; columns of other types are refused.
pub fn from_record_batch(
    table: Table,
    batch: &RecordBatch,
) -> Result<(Vec<&'static str>, Vec<Values>)> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in table.columns().iter().filter(|c| c.stored) {
        let Some(array) = batch.column_by_name(column.name) else {
            continue;
        };
        let wrong = || {
            FleetError::Format(format!(
                "{}.{} is {}, not the layout's {:?}",
                table.name(),
                column.name,
                array.data_type(),
                column.kind
            ))
        };
        let converted = match (column.kind, array.data_type()) {
            (Kind::Time, DataType::Timestamp(TimeUnit::Nanosecond, _)) => Values::Int(
                array
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
            ),
            (Kind::Int | Kind::Time, DataType::Int64) => {
                Values::Int(array.as_primitive::<Int64Type>().iter().collect())
            }
            (Kind::Bool, DataType::Boolean) => Values::Int(
                array
                    .as_boolean()
                    .iter()
                    .map(|b| b.map(i64::from))
                    .collect(),
            ),
            (Kind::Real, DataType::Float64) => {
                Values::Real(array.as_primitive::<Float64Type>().iter().collect())
            }
            (Kind::Text, DataType::Utf8) => Values::Text(
                array
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.map(str::to_owned))
                    .collect(),
            ),
            _ => return Err(wrong()),
        };
        names.push(column.name);
        values.push(converted);
    }
    Ok((names, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_with_nulls() {
        let table = Table::Clients;
        let schema = schema(table);
        let columns: Vec<Values> = table
            .columns()
            .iter()
            .map(|c| match c.kind {
                Kind::Int | Kind::Time => Values::Int(vec![Some(7), None]),
                Kind::Bool => Values::Int(vec![Some(1), Some(0)]),
                Kind::Real => Values::Real(vec![Some(0.5), None]),
                Kind::Text => Values::Text(vec![Some("x".into()), None]),
            })
            .collect();
        let batch = to_record_batch(table, &schema, columns.clone()).unwrap();
        assert_eq!(
            batch
                .schema()
                .field_with_name("last_seen_ns")
                .unwrap()
                .data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        let (names, back) = from_record_batch(table, &batch).unwrap();
        assert_eq!(names.len(), table.columns().len());
        assert_eq!(back, columns);
    }
}
