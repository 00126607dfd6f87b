//! Multi-row inserts for loading many rows fast (the demo country, imports).

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Transaction};

use crate::StoreError;

/// A value for one column of one row in a [`BulkInsert`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    I64(i64),
    /// A floating-point number.
    F64(f64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// Bytes (`BLOB` / `BYTEA`).
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Rows buffered for one table and written with multi-row `INSERT` statements.
///
/// Rows are flushed in chunks that stay under both engines' parameter limits.
#[derive(Debug)]
pub struct BulkInsert {
    table: &'static str,
    columns: &'static [&'static str],
    values: Vec<Value>,
    rows_per_statement: usize,
}

/// SQLite allows 32,766 parameters per statement and PostgreSQL 65,535.
const MAX_PARAMS: usize = 32_000;

impl BulkInsert {
    /// Starts an empty batch for `table` with these `columns`.
    pub fn new(table: &'static str, columns: &'static [&'static str]) -> BulkInsert {
        let rows_per_statement = (MAX_PARAMS / columns.len()).clamp(1, 500);
        BulkInsert {
            table,
            columns,
            values: Vec::new(),
            rows_per_statement,
        }
    }

    /// Adds one row; it must have one value per column.
    pub fn row(&mut self, row: impl IntoIterator<Item = Value>) {
        let before = self.values.len();
        self.values.extend(row);
        assert_eq!(
            self.values.len() - before,
            self.columns.len(),
            "row for {} has the wrong number of values",
            self.table
        );
    }

    /// Rows buffered and not yet written.
    pub fn len(&self) -> usize {
        self.values.len() / self.columns.len()
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes every buffered row inside `tx` and empties the buffer.
    pub async fn flush(&mut self, tx: &mut Transaction<'_, Any>) -> Result<u64, StoreError> {
        let width = self.columns.len();
        let mut written = 0;
        let values = std::mem::take(&mut self.values);
        for chunk in values.chunks(width * self.rows_per_statement) {
            let rows = chunk.len() / width;
            let sql = insert_sql(self.table, self.columns, rows);
            let mut args = AnyArguments::default();
            for v in chunk {
                let r = match v {
                    Value::Null => args.add(Option::<i64>::None),
                    Value::I64(i) => args.add(*i),
                    Value::F64(f) => args.add(*f),
                    Value::Text(s) => args.add(s.as_str()),
                    Value::Bool(b) => args.add(*b),
                    Value::Bytes(b) => args.add(b.as_slice()),
                };
                r.map_err(sqlx::Error::Encode)?;
            }
            sqlx::query_with(&sql, args).execute(&mut **tx).await?;
            written += rows as u64;
        }
        Ok(written)
    }
}

fn insert_sql(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..columns.len() {
            if c > 0 {
                sql.push(',');
            }
            sql.push('$');
            sql.push_str(&n.to_string());
            n += 1;
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_parameters_across_rows() {
        assert_eq!(
            insert_sql("t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)"
        );
    }
}
