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
            let rows = chunk(rows_left, per_statement);
            let args = arguments(&values[at * width..(at + rows) * width])?;
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

/// `values` as one statement's arguments.
fn arguments<'a>(
    values: impl IntoIterator<Item = &'a Value>,
) -> Result<AnyArguments<'a>, StoreError> {
    let mut args = AnyArguments::default();
    for v in values {
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
    Ok(args)
}

/// How many of `left` like things go in the next statement: `most`, or fewer than that
/// as a power of two, so that few distinct statement texts are ever prepared.
fn chunk(left: usize, most: usize) -> usize {
    if left >= most {
        most
    } else {
        1 << (usize::BITS - 1 - left.leading_zeros())
    }
}

/// Runs the statements of `scripts`, in order, as one text (SQLite): one round trip.
async fn joined(scripts: &[&Script], conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let mut sql = String::new();
    for s in scripts {
        for (statement, _) in &s.statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(statement);
        }
    }
    let values = scripts
        .iter()
        .flat_map(|s| s.statements.iter().flat_map(|(_, v)| v));
    Ok(conn
        .execute(sqlx::query_with(&sql, arguments(values)?))
        .await?
        .rows_affected())
}

/// The most values a [`Script`] sends to SQLite in one round trip.
const ONE_TRIP_VALUES: usize = 64;

/// Statements written together, such as a ledger batch. On SQLite a small script (up to
/// [`ONE_TRIP_VALUES`] values) goes to the connection's worker thread as one text, one round
/// trip instead of one per statement (each a wake-up of that thread and of the caller);
/// larger ones, and every script on PostgreSQL (whose extended protocol takes one statement
/// per message), run one statement after another.
#[derive(Debug, Default, Clone)]
pub struct Script {
    statements: Vec<(String, Vec<Value>)>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    /// Adds a statement written with `?` for each parameter (and no other `?`), and its
    /// values.
    pub fn push(&mut self, sql: &str, values: Vec<Value>) {
        assert_eq!(
            sql.matches('?').count(),
            values.len(),
            "one value per parameter: {sql}"
        );
        self.statements.push((sql.to_string(), values));
    }

    /// Runs the statements in order on the writer thread's connection (see
    /// [`crate::Db::write_on_thread`]); returns the rows they changed.
    pub fn run_on(&self, conn: &mut crate::WriterConn) -> Result<u64, StoreError> {
        let mut changed = 0;
        for (sql, values) in &self.statements {
            changed += conn.execute(sql, values)?;
        }
        Ok(changed)
    }

    /// How many statements it holds.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether it holds no statement.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Adds the statements of `other`, after its own.
    pub fn extend_from(&mut self, other: &Script) {
        self.statements.extend(other.statements.iter().cloned());
    }

    /// Adds the rows buffered in `rows` as multi-row inserts, and empties it.
    pub fn insert(&mut self, rows: &mut BulkInsert) {
        let width = rows.columns.len();
        let per_statement = (MAX_PARAMS / width).clamp(1, MAX_ROWS);
        let mut values = std::mem::take(&mut rows.values);
        rows.written += (values.len() / width) as u64;
        while !values.is_empty() {
            let rows_left = values.len() / width;
            let take = chunk(rows_left, per_statement);
            let rest = values.split_off(take * width);
            let sql = insert_sql(rows.table, rows.columns, take, Engine::Sqlite);
            self.statements.push((sql, values));
            values = rest;
        }
    }

    /// Runs every statement in order, stopping at the first that fails; returns how many
    /// rows they changed in all.
    pub async fn execute(
        &self,
        conn: &mut AnyConnection,
        engine: Engine,
    ) -> Result<u64, StoreError> {
        if self.statements.is_empty() {
            return Ok(0);
        }
        let values: usize = self.statements.iter().map(|(_, v)| v.len()).sum();
        if engine == Engine::Sqlite && values <= ONE_TRIP_VALUES {
            return joined(&[self], conn).await;
        }
        // A large batch is worth its round trips, and joined, its text would differ from one
        // batch to the next and be prepared afresh each time: one statement at a time.
        let mut changed = 0;
        for (sql, values) in &self.statements {
            let sql = match engine {
                Engine::Sqlite => std::borrow::Cow::Borrowed(sql.as_str()),
                Engine::Postgres => std::borrow::Cow::Owned(numbered(sql)),
            };
            changed += conn
                .execute(sqlx::query_with(&sql, arguments(values)?))
                .await?
                .rows_affected();
        }
        Ok(changed)
    }
}

/// `sql` with its `?` parameters numbered `$1`, `$2`, … for PostgreSQL.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for (i, part) in sql.split('?').enumerate() {
        if i > 0 {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        }
        out.push_str(part);
    }
    out
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

    /// A fresh SQLite database named `name` in the temporary folder, with table `t`.
    async fn scratch(name: &str, create_t: &str) -> crate::Db {
        scratch_file(name, create_t, 1).await.0
    }

    /// A new database file with table `t`, a pool of `connections`, and the file's URL
    /// (`mode=rwc`).
    async fn scratch_file(name: &str, create_t: &str, connections: u32) -> (crate::Db, String) {
        let dir = crate::scratch::folder(name);
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = crate::Db::connect(&url, connections).await.unwrap();
        sqlx::query(create_t).execute(db.pool()).await.unwrap();
        (db, url)
    }

    /// The rows in table `t`.
    async fn rows_in_t(db: &crate::Db) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    #[test]
    fn script_parameters_are_numbered_for_postgres() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = ? WHERE c IN (?)"),
            "UPDATE t SET a = $1, b = $2 WHERE c IN ($3)"
        );
        assert_eq!(numbered("DELETE FROM t"), "DELETE FROM t");
    }

    #[tokio::test]
    async fn a_script_runs_every_statement_in_order_and_counts_the_changes() {
        let db = scratch("script", "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT)").await;
        let mut rows = BulkInsert::new("t", &["a", "b"]);
        for i in 0..700i64 {
            rows.row([Value::I64(i), Value::Text(format!("r{i}"))]);
        }
        // 700 rows: more values than one round trip takes, so statement by statement.
        let mut script = Script::new();
        script.insert(&mut rows);
        assert!(rows.is_empty());
        script.push(
            "UPDATE t SET b = ? WHERE a < ?",
            vec![Value::Str("low"), Value::I64(10)],
        );
        script.push(
            "DELETE FROM t WHERE a IN (?, ?)",
            vec![Value::I64(698), Value::I64(699)],
        );
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(
            script.execute(&mut conn, db.engine()).await.unwrap(),
            700 + 10 + 2
        );
        let (n, low): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), SUM(CASE WHEN b = 'low' THEN 1 ELSE 0 END) FROM t")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!((n, low), (698, 10));
        // A small script, in one round trip. A failing statement stops it there: the insert
        // of an existing key fails, and the update after it does not run.
        let mut failing = Script::new();
        failing.push(
            "INSERT INTO t (a, b) VALUES (?, ?)",
            vec![Value::I64(1), Value::Str("again")],
        );
        failing.push("UPDATE t SET b = 'after'", vec![]);
        assert!(failing.execute(&mut conn, db.engine()).await.is_err());
        let (after,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t WHERE b = 'after'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(after, 0);
    }

    #[tokio::test]
    async fn a_script_commits_on_the_writer_thread_wholly_or_not_at_all() {
        let db = scratch("one-trip", "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT)").await;
        let mut script = Script::new();
        let mut rows = BulkInsert::new("t", &["a", "b"]);
        for i in 0..700i64 {
            rows.row([Value::I64(i), Value::Str("x")]);
        }
        script.insert(&mut rows);
        script.push(
            "UPDATE t SET b = ? WHERE a < ?",
            vec![Value::Str("low"), Value::I64(3)],
        );
        assert_eq!(db.commit_script(script).await.unwrap(), 703);

        // A failing statement in the middle: nothing of the script stays, not even what ran
        // before it, and the writer goes on (no transaction left open).
        let mut failing = Script::new();
        failing.push(
            "INSERT INTO t (a, b) VALUES (?, ?)",
            vec![Value::I64(1000), Value::Str("new")],
        );
        failing.push(
            "INSERT INTO t (a, b) VALUES (?, ?)",
            vec![Value::I64(5), Value::Str("again")],
        );
        failing.push("UPDATE t SET b = 'after'", vec![]);
        let e = db.commit_script(failing).await.unwrap_err().to_string();
        assert!(e.contains("UNIQUE constraint failed: t.a"), "{e}");
        let (n, after, new, low): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN b = 'after' THEN 1 ELSE 0 END), SUM(CASE WHEN a = 1000 THEN 1 ELSE 0 END), SUM(CASE WHEN b = 'low' THEN 1 ELSE 0 END) FROM t",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!((n, after, new, low), (700, 0, 0, 3));
        let mut next = Script::new();
        next.push("DELETE FROM t WHERE a = ?", vec![Value::I64(0)]);
        assert_eq!(db.commit_script(next).await.unwrap(), 1);
        // A statement that only reads changes nothing; two statements in one text, or a
        // count of values that is not the parameters', are refused.
        let mut read = Script::new();
        read.push("SELECT COUNT(*) FROM t WHERE a > ?", vec![Value::I64(1)]);
        assert_eq!(db.commit_script(read).await.unwrap(), 0);
        let mut two = Script::new();
        two.push(
            "DELETE FROM t WHERE a = 1; DELETE FROM t WHERE a = 2",
            vec![],
        );
        let e = db.commit_script(two).await.unwrap_err().to_string();
        assert!(e.contains("one statement a text"), "{e}");
        assert_eq!(rows_in_t(&db).await, 699);
        db.close().await;
    }

    #[tokio::test]
    async fn a_database_opened_read_only_is_not_written_by_the_writer_thread() {
        let (db, url) = scratch_file("read-only", "CREATE TABLE t (a BIGINT)", 1).await;
        db.close().await;
        let ro = crate::Db::connect(&url.replace("mode=rwc", "mode=ro"), 1)
            .await
            .unwrap();
        let mut script = Script::new();
        script.push("INSERT INTO t (a) VALUES (?)", vec![Value::I64(1)]);
        let e = ro.commit_script(script).await.unwrap_err().to_string();
        assert!(e.contains("readonly"), "{e}");
        ro.close().await;
    }

    /// A row of every kind of value the writer thread binds.
    type Row9 = (
        i64,
        f64,
        String,
        String,
        i64,
        Vec<u8>,
        Option<String>,
        Option<i64>,
        Option<Vec<u8>>,
    );

    #[tokio::test]
    async fn the_writer_thread_binds_every_kind_of_value_and_checks_foreign_keys() {
        let db = scratch(
            "values",
            "CREATE TABLE p (id BIGINT PRIMARY KEY); CREATE TABLE v (i BIGINT, f DOUBLE PRECISION, s TEXT, t TEXT, b BOOLEAN, x BLOB, nt TEXT, ni BIGINT, nb BLOB, p BIGINT REFERENCES p (id))",
        )
        .await;
        let mut script = Script::new();
        script.push(
            "INSERT INTO v (i, f, s, t, b, x, nt, ni, nb) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Value::I64(-7),
                Value::F64(2.5),
                Value::Str("fixed"),
                Value::Text("台北 text".into()),
                Value::Bool(true),
                Value::Bytes(vec![0, 1, 255]),
                Value::NullText,
                Value::NullInt,
                Value::NullBytes,
            ],
        );
        script.push(
            "INSERT INTO v (x) VALUES (?)",
            vec![Value::Bytes(Vec::new())],
        );
        assert_eq!(db.commit_script(script).await.unwrap(), 2);
        // (A boolean is stored as SQLite stores one, the integer 1.)
        let row: Row9 =
            sqlx::query_as("SELECT i, f, s, t, b + 0, x, nt, ni, nb FROM v WHERE i IS NOT NULL")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(
            row,
            (
                -7,
                2.5,
                "fixed".into(),
                "台北 text".into(),
                1,
                vec![0, 1, 255],
                None,
                None,
                None
            )
        );
        let (empty,): (Vec<u8>,) = sqlx::query_as("SELECT x FROM v WHERE i IS NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert!(empty.is_empty(), "an empty blob, not NULL");
        // The pool's settings hold on the writer's connection: a foreign key is checked.
        let mut orphan = Script::new();
        orphan.push("INSERT INTO v (p) VALUES (?)", vec![Value::I64(9)]);
        let e = db.commit_script(orphan).await.unwrap_err().to_string();
        assert!(e.contains("FOREIGN KEY constraint failed"), "{e}");
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_each_get_their_own_transaction_and_close_ends_the_thread() {
        let (db, url) = scratch_file("writers", "CREATE TABLE t (a BIGINT PRIMARY KEY)", 2).await;
        let mut writers = Vec::new();
        for i in 0..200i64 {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                db.write_on_thread(move |c| {
                    let n = c.execute("INSERT INTO t (a) VALUES (?)", &[Value::I64(i)])?;
                    // Every tenth ends in a rollback, as a job whose count is wrong does.
                    Ok(if i % 10 == 9 {
                        crate::End::Rollback(n)
                    } else {
                        crate::End::Commit(n)
                    })
                })
                .await
                .unwrap()
            }));
        }
        let mut committed = 0;
        for w in writers {
            match w.await.unwrap() {
                crate::End::Commit(1) => committed += 1,
                crate::End::Rollback(1) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(committed, 180);
        // A writer meanwhile on the pool's writers' connection, with the turn, is not kept
        // waiting by the thread (nor the thread by it).
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query("INSERT INTO t (a) VALUES (1000)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut after = Script::new();
        after.push("INSERT INTO t (a) VALUES (?)", vec![Value::I64(1001)]);
        assert_eq!(db.commit_script(after).await.unwrap(), 1);
        db.close().await;
        // After the close nothing more is written; what was committed is all there.
        assert!(db.commit_script(Script::new()).await.is_err());
        let again = crate::Db::connect(&url, 2).await.unwrap();
        assert_eq!(rows_in_t(&again).await, 182);
        again.close().await;
    }

    #[tokio::test]
    async fn every_row_is_written_whatever_the_batch_size() {
        let db = scratch("bulk", "CREATE TABLE t (a BIGINT, b TEXT, c BLOB)").await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_here_sees_every_commit_and_never_writes() {
        let (db, _) = scratch_file(
            "read-here",
            "CREATE TABLE t (a BIGINT PRIMARY KEY, b BLOB, c BIGINT)",
            2,
        )
        .await;
        assert!(db.reads_here());
        let read = |db: &crate::Db, a: i64| {
            db.read_here("SELECT b, c FROM t WHERE a = ?", &[Value::I64(a)], |row| {
                (row.bytes(0), row.i64(1))
            })
            .unwrap()
        };
        assert_eq!(read(&db, 1), None, "no row");
        db.write_on_thread(|conn| {
            conn.execute(
                "INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
                &[Value::I64(1), Value::Bytes(vec![7; 40]), Value::I64(-3)],
            )?;
            conn.execute(
                "INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
                &[Value::I64(2), Value::NullBytes, Value::NullInt],
            )?;
            Ok(crate::End::Commit(()))
        })
        .await
        .unwrap();
        assert_eq!(read(&db, 1), Some((Some(vec![7; 40]), Some(-3))));
        assert_eq!(read(&db, 2), Some((None, None)), "NULLs");
        // A later commit, through the pool this time, is seen by the same thread's reader:
        // it keeps no snapshot between reads.
        sqlx::query("UPDATE t SET b = x'', c = 5 WHERE a = 1")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(read(&db, 1), Some((Some(Vec::new()), Some(5))));
        // From other threads too, each with its own connection.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let db = db.clone();
            tasks.push(tokio::task::spawn_blocking(move || read(&db, 1 + i % 2)));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_some());
        }
        // It refuses to write.
        let wrote = db.read_here("DELETE FROM t WHERE a = ?", &[Value::I64(1)], |_| ());
        assert!(wrote.is_err(), "{wrote:?}");
        assert_eq!(rows_in_t(&db).await, 2);
        db.close().await;
        // A database in memory is read through the pool.
        let memory = crate::Db::connect("sqlite::memory:", 1).await.unwrap();
        assert!(!memory.reads_here());
        assert!(memory.read_here("SELECT 1", &[], |_| ()).is_err());
    }
}
