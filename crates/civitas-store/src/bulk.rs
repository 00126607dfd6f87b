//! Multi-row inserts for loading many rows fast (the demo country, ledger batches, imports).
//!
//! SQLite binds numbered parameters (`$1`) by looking each name up with a linear scan, so a
//! statement with thousands of them binds in quadratic time. On SQLite these statements use
//! anonymous `?` parameters, which bind in constant time; on PostgreSQL `$n`. NULLs carry
//! their column's type, which PostgreSQL requires.

use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Arguments, Executor};

use crate::{Engine, StoreError};

/// A value for one column of one row in a [`BulkInsert`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL in a text column.
    NullText,
    /// NULL in an integer column.
    NullInt,
    /// NULL in a bytes column.
    NullBytes,
    /// An integer.
    I64(i64),
    /// A floating-point number.
    F64(f64),
    /// Fixed text.
    Str(&'static str),
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
impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Value::Str(v)
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::NullInt, Value::I64)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::NullText, Value::Text)
    }
}
impl From<Option<&'static str>> for Value {
    fn from(v: Option<&'static str>) -> Self {
        v.map_or(Value::NullText, Value::Str)
    }
}

/// At most this many parameters per statement (SQLite allows 32,766, PostgreSQL 65,535).
const MAX_PARAMS: usize = 32_000;
/// At most this many rows per statement.
const MAX_ROWS: usize = 500;

/// Rows buffered for one table and written with multi-row `INSERT` statements.
#[derive(Debug)]
pub struct BulkInsert {
    table: &'static str,
    columns: &'static [&'static str],
    values: Vec<Value>,
    written: u64,
    /// Statement text by engine and number of rows, so repeated sizes are built once.
    sql: Vec<(Engine, usize, String)>,
}

impl BulkInsert {
    /// Starts an empty batch for `table` with these `columns`.
    pub fn new(table: &'static str, columns: &'static [&'static str]) -> BulkInsert {
        BulkInsert {
            table,
            columns,
            values: Vec::new(),
            written: 0,
            sql: Vec::new(),
        }
    }

    /// Adds one row; it must have one value per column.
    pub fn row<const N: usize>(&mut self, row: [Value; N]) {
        assert_eq!(
            N,
            self.columns.len(),
            "row for {} has the wrong number of values",
            self.table
        );
        self.values.extend(row);
    }

    /// Rows buffered and not yet written.
    pub fn len(&self) -> usize {
        self.values.len() / self.columns.len()
    }

    /// Rows written so far by [`BulkInsert::flush`].
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes every buffered row on `conn` (normally inside a transaction), empties the
    /// buffer and returns how many rows were written. Full statements hold the most rows
    /// allowed; the rest is split into power-of-two sizes so few distinct statements are
    /// ever prepared.
    pub async fn flush(
        &mut self,
        conn: &mut AnyConnection,
        engine: Engine,
    ) -> Result<u64, StoreError> {
        let width = self.columns.len();
        let per_statement = (MAX_PARAMS / width).clamp(1, MAX_ROWS);
        let values = std::mem::take(&mut self.values);
        let mut rows_left = values.len() / width;
        let mut at = 0;
        while rows_left > 0 {
            let rows = if rows_left >= per_statement {
                per_statement
            } else {
                1 << (usize::BITS - 1 - rows_left.leading_zeros())
            };
            let mut args = AnyArguments::default();
            for v in &values[at * width..(at + rows) * width] {
                let r = match v {
                    Value::NullText => args.add(Option::<String>::None),
                    Value::NullInt => args.add(Option::<i64>::None),
                    Value::NullBytes => args.add(Option::<Vec<u8>>::None),
                    Value::I64(i) => args.add(*i),
                    Value::F64(f) => args.add(*f),
                    Value::Str(s) => args.add(*s),
                    Value::Text(s) => args.add(s.as_str()),
                    Value::Bool(b) => args.add(*b),
                    Value::Bytes(b) => args.add(b.as_slice()),
                };
                r.map_err(sqlx::Error::Encode)?;
            }
            let sql = self.sql_for(rows, engine);
            // Through `Executor` rather than `Query::execute`: its boxed future keeps callers'
            // futures `Send`.
            conn.execute(sqlx::query_with(sql, args)).await?;
            at += rows;
            rows_left -= rows;
        }
        self.written += at as u64;
        Ok(at as u64)
    }

    fn sql_for(&mut self, rows: usize, engine: Engine) -> &str {
        let i = match self
            .sql
            .iter()
            .position(|(e, n, _)| *e == engine && *n == rows)
        {
            Some(i) => i,
            None => {
                self.sql.push((
                    engine,
                    rows,
                    insert_sql(self.table, self.columns, rows, engine),
                ));
                self.sql.len() - 1
            }
        };
        &self.sql[i].2
    }
}

/// `INSERT INTO table (columns) VALUES (...), (...)` for `rows` rows.
fn insert_sql(table: &str, columns: &[&str], rows: usize, engine: Engine) -> String {
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
            match engine {
                Engine::Sqlite => sql.push('?'),
                Engine::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
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
    fn placeholders_follow_the_engine() {
        assert_eq!(
            insert_sql("t", &["a", "b"], 2, Engine::Sqlite),
            "INSERT INTO t (a, b) VALUES (?,?),(?,?)"
        );
        assert_eq!(
            insert_sql("t", &["a", "b"], 2, Engine::Postgres),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)"
        );
    }

    #[tokio::test]
    async fn every_row_is_written_whatever_the_batch_size() {
        let dir = std::env::temp_dir().join(format!("civitas-bulk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("b.db"));
        let db = crate::Db::connect(
            &format!("sqlite://{}?mode=rwc", dir.join("b.db").display()),
            1,
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE t (a BIGINT, b TEXT, c BLOB)")
            .execute(db.pool())
            .await
            .unwrap();
        let mut rows = BulkInsert::new("t", &["a", "b", "c"]);
        for i in 0..1234i64 {
            let text = (i % 3 == 0).then(|| format!("r{i}"));
            rows.row([Value::I64(i), text.into(), Value::Bytes(vec![i as u8])]);
        }
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(rows.flush(&mut conn, db.engine()).await.unwrap(), 1234);
        assert!(rows.is_empty());
        let (n, nulls): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), SUM(CASE WHEN b IS NULL THEN 1 ELSE 0 END) FROM t")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!((n, nulls), (1234, 1234 - 412));
    }
}
