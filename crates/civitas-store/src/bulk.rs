//! Multi-row inserts for loading many rows fast (the demo country, ledger batches, imports).
//!
//! SQLite binds numbered parameters (`$1`) by looking each name up with a linear scan, so a
//! statement with thousands of them binds in quadratic time. On SQLite these statements use
//! anonymous `?` parameters, which bind in constant time; on PostgreSQL `$n`. NULLs carry
//! their column's type, which PostgreSQL requires.

use futures_util::TryStreamExt;
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

/// The most parameters one SQLite statement text takes (SQLite's default limit is 32,766).
const SQLITE_MAX_VALUES: usize = 30_000;

/// The most like scripts [`Script::execute_all`] joins into one text.
const MOST_JOINED: usize = 64;

impl Script {
    /// Whether `other` has the same statements (texts), so the two differ only in values.
    fn alike(&self, other: &Script) -> bool {
        self.statements.len() == other.statements.len()
            && self
                .statements
                .iter()
                .zip(&other.statements)
                .all(|((a, _), (b, _))| a == b)
    }

    /// Runs the scripts in order, as [`Script::execute`] runs one, stopping at the first
    /// statement that fails; returns how many rows they changed in all. On SQLite, a run of
    /// like scripts (the same statements, other values: a message and its counter each, say)
    /// goes as one text per chunk (up to 64 of them, fewer as a power of two): a round trip
    /// per chunk instead of one per statement, and only a few distinct texts, each prepared
    /// once on a connection and kept in its statement cache.
    pub async fn execute_all(
        scripts: &[&Script],
        conn: &mut AnyConnection,
        engine: Engine,
    ) -> Result<u64, StoreError> {
        let mut changed = 0;
        if engine != Engine::Sqlite {
            for s in scripts {
                changed += s.execute(conn, engine).await?;
            }
            return Ok(changed);
        }
        let scripts: Vec<&Script> = scripts.iter().copied().filter(|s| !s.is_empty()).collect();
        let mut i = 0;
        while i < scripts.len() {
            let first = scripts[i];
            let run = scripts[i..].iter().take_while(|s| s.alike(first)).count();
            let values: usize = first.statements.iter().map(|(_, v)| v.len()).sum();
            let most = (SQLITE_MAX_VALUES / values.max(1)).clamp(1, MOST_JOINED);
            let mut left = run;
            while left > 0 {
                let take = chunk(left, most);
                changed += joined(&scripts[i..i + take], conn).await?;
                i += take;
                left -= take;
            }
        }
        Ok(changed)
    }
}

impl Script {
    /// Whether [`Script::commit_in_one_trip`] can run it: on SQLite, within one text's
    /// parameter limit.
    pub fn fits_one_trip(&self, engine: Engine) -> bool {
        engine == Engine::Sqlite
            && self.statements.iter().map(|(_, v)| v.len()).sum::<usize>() <= SQLITE_MAX_VALUES
    }

    /// Runs the script as a transaction of its own in one round trip to SQLite's connection
    /// thread: `BEGIN IMMEDIATE`, the statements, `COMMIT`, as one text. A transaction
    /// begun and committed apart costs two more round trips, and on a busy machine each
    /// waits for both threads to be scheduled again. If a statement fails, nothing is
    /// committed: the transaction is rolled back, or, if that fails too, the connection is
    /// closed instead of going back to the pool. Returns the rows changed.
    pub async fn commit_in_one_trip(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    ) -> Result<u64, StoreError> {
        self.one_trip(conn).await.map_err(|(e, rolled_back)| {
            if !rolled_back {
                conn.close_on_drop();
            }
            e
        })
    }

    /// [`Script::commit_in_one_trip`] on any connection: on failure, the error and whether
    /// the transaction was rolled back (if not, the connection must not be used again).
    pub(crate) async fn one_trip(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<u64, (StoreError, bool)> {
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        for (statement, _) in &self.statements {
            sql.push_str(statement);
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT");
        let values = self.statements.iter().flat_map(|(_, v)| v);
        let args = arguments(values).map_err(|e| (e, true))?;
        // Each statement's own count: SQLite reports BEGIN and COMMIT with the count of the
        // last change made before them, so they are left out.
        let done: Result<Vec<u64>, sqlx::Error> = conn
            .fetch_many(sqlx::query_with(&sql, args))
            .try_filter_map(|step| async move { Ok(step.left().map(|d| d.rows_affected())) })
            .try_collect()
            .await;
        match done {
            Ok(counts) if counts.len() == self.statements.len() + 2 => {
                Ok(counts[1..counts.len() - 1].iter().sum())
            }
            Ok(counts) => Err((
                sqlx::Error::Protocol(format!(
                    "a script of {} statements reported {} results",
                    self.statements.len() + 2,
                    counts.len()
                ))
                .into(),
                true,
            )),
            Err(e) => {
                let rolled_back = conn.execute("ROLLBACK").await.is_ok();
                Err((e.into(), rolled_back))
            }
        }
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
        let dir = crate::scratch::folder(name);
        let db = crate::Db::connect(
            &format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
            1,
        )
        .await
        .unwrap();
        sqlx::query(create_t).execute(db.pool()).await.unwrap();
        db
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
    async fn a_script_commits_in_one_trip_wholly_or_not_at_all() {
        let db = scratch("one-trip", "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT)").await;
        let mut conn = db.pool().acquire().await.unwrap();
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
        assert!(script.fits_one_trip(db.engine()));
        // Its own changes only: not the count SQLite repeats for BEGIN and COMMIT.
        assert_eq!(script.commit_in_one_trip(&mut conn).await.unwrap(), 703);

        // A failing statement in the middle: nothing of the script stays, not even what ran
        // before it, and the connection is usable again (no transaction left open).
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
        assert!(failing.commit_in_one_trip(&mut conn).await.is_err());
        let (n, after, new): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN b = 'after' THEN 1 ELSE 0 END), SUM(CASE WHEN a = 1000 THEN 1 ELSE 0 END) FROM t",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((n, after, new), (700, 0, 0));
        let mut next = Script::new();
        next.push("DELETE FROM t WHERE a = ?", vec![Value::I64(0)]);
        assert_eq!(next.commit_in_one_trip(&mut conn).await.unwrap(), 1);

        // Too many values for one text: not run this way.
        let mut huge = Script::new();
        let mut rows = BulkInsert::new("t", &["a", "b"]);
        for i in 0..20_000i64 {
            rows.row([Value::I64(10_000 + i), Value::Str("y")]);
        }
        huge.insert(&mut rows);
        assert!(!huge.fits_one_trip(db.engine()));
    }

    #[tokio::test]
    async fn scripts_run_in_order_with_like_ones_together() {
        let db = scratch("all", "CREATE TABLE t (a BIGINT PRIMARY KEY, b TEXT)").await;
        let mut conn = db.pool().acquire().await.unwrap();
        // A message and its counter each, as companion writes come: 75 alike (chunks of
        // 64, 8, 2 and 1), with others between that depend on the ones before them.
        let like = |i: i64| {
            let mut s = Script::new();
            s.push(
                "INSERT INTO t (a, b) VALUES (?, ?)",
                vec![Value::I64(i), Value::Str("new")],
            );
            s.push("UPDATE t SET b = b || '+' WHERE a = ?", vec![Value::I64(i)]);
            s
        };
        let mut scripts: Vec<Script> = (0..75).map(like).collect();
        let mut renamed = Script::new();
        renamed.push(
            "UPDATE t SET b = 'renamed' WHERE a < ?",
            vec![Value::I64(3)],
        );
        scripts.insert(40, renamed);
        scripts.insert(0, Script::new());
        scripts.extend((75..80).map(like));
        let refs: Vec<&Script> = scripts.iter().collect();
        assert_eq!(
            Script::execute_all(&refs, &mut conn, db.engine())
                .await
                .unwrap(),
            80 * 2 + 3
        );
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT a, b FROM t ORDER BY a")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 80);
        for (a, b) in rows {
            assert_eq!(b, if a < 3 { "renamed" } else { "new+" }, "row {a}");
        }
        // One that fails (a key taken) stops the run there, in the middle of its chunk:
        // nothing after it runs. (A caller's transaction then rolls back what ran before.)
        let mut failing: Vec<Script> = (100..104).map(like).collect();
        failing.push(like(5));
        failing.extend((200..203).map(like));
        let refs: Vec<&Script> = failing.iter().collect();
        assert!(
            Script::execute_all(&refs, &mut conn, db.engine())
                .await
                .is_err()
        );
        let (after,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t WHERE a >= 200")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(after, 0);
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
}
