//! Database access for every Civitas block: one pool type over SQLite or PostgreSQL,
//! per-component migrations with a schema-version guard, and fast bulk inserts.
//!
//! SQL is written once for both engines: `$1`-style parameters, portable column types
//! (`TEXT`, `BIGINT`, `DOUBLE PRECISION`, `BOOLEAN`) and `BLOB`, which becomes `BYTEA` on
//! PostgreSQL when a migration is applied.

mod bulk;
mod migrate;
pub mod scratch;
mod writer;

pub use bulk::{BulkInsert, Script, Value};
pub use migrate::{
    Component, Migration, ON_SQLITE_ONLY, SchemaState, SchemaStatus, migrate, refuse_newer,
    schema_status,
};
pub use sqlx;
pub use writer::{Conn as WriterConn, End, Row as ReadRow};

/// `count` numbered parameters from `$first`, as a list for `IN (…)`: `marks(1, 3)` is
/// `$1, $2, $3`.
pub fn marks(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

/// The database engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite in a file (the default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Engine {
    /// The engine's name as shown to people and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Errors from the store; each says what an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one Civitas can use.
    #[error("database URL `{0}` is not a sqlite: or postgres:// URL")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot connect to the {engine} database: {source}")]
    Connect {
        /// Which engine was tried.
        engine: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database holds a schema written by a newer Civitas.
    #[error(
        "the database schema is newer than this civitas: component `{component}` is at version {found}, this build knows up to {known}; upgrade civitas before starting it against this database"
    )]
    SchemaNewer {
        /// Component whose schema is ahead.
        component: String,
        /// Version found in the database.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {component} v{version} ({name}) failed: {source}")]
    Migration {
        /// Component the migration belongs to.
        component: String,
        /// Its version.
        version: i64,
        /// Its name.
        name: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// An error from SQLite on the writer thread ([`Db::write_on_thread`]).
    #[error("database error: {message} (SQLite code {code})")]
    Sqlite {
        /// SQLite's result code.
        code: i32,
        /// SQLite's message.
        message: String,
    },
}

/// Every SQLite connection's settings: WAL with `synchronous=FULL` (an acknowledged commit
/// is on disk), no memory map, temporary storage in memory (see [`Db::connect`]).
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA mmap_size=0; PRAGMA temp_store=MEMORY;";

/// A pool of connections to the Civitas database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    writers: Arc<tokio::sync::Mutex<Slot>>,
    kept: Arc<Kept>,
    shared: Arc<Shared>,
    /// SQLite in a file: its writer thread ([`Db::write_on_thread`]).
    writer: Option<Arc<writer::WriteThread>>,
}

/// What the blocks keep in memory beside one database (see [`Db::shared`]).
#[derive(Default)]
struct Shared(std::sync::Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// What the turn to write holds on SQLite: the connection writers write with, kept out of
/// the pool once taken, so that a writer never waits for the pool while others wait for it;
/// and whether a transaction on it was left unfinished (rolled back before the next).
#[derive(Debug, Default)]
pub struct Slot {
    conn: Option<PoolConnection<Any>>,
    unfinished: bool,
}

/// The turn to write ([`Db::write_turn`]), held until dropped.
#[derive(Debug)]
pub struct Turn(tokio::sync::OwnedMutexGuard<Slot>);

impl Turn {
    /// The writers' connection, taken from the pool the first time, with any transaction
    /// left unfinished on it rolled back.
    async fn conn(&mut self, pool: &AnyPool) -> Result<&mut AnyConnection, sqlx::Error> {
        let slot = &mut *self.0;
        if slot.conn.is_none() {
            slot.conn = Some(pool.acquire().await?);
            slot.unfinished = false;
        }
        if slot.unfinished {
            // Dropped without a commit: undo it. Should that fail, the connection goes.
            let undone = match slot.conn.as_mut() {
                Some(c) => c.execute("ROLLBACK").await.is_ok(),
                None => false,
            };
            if !undone {
                if let Some(mut c) = slot.conn.take() {
                    c.close_on_drop();
                }
                return Err(sqlx::Error::PoolClosed);
            }
            slot.unfinished = false;
        }
        match slot.conn.as_mut() {
            Some(c) => Ok(&mut **c),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Ends the transaction on the writers' connection with `COMMIT` or `ROLLBACK`.
    async fn end(mut self, how: &str) -> Result<(), sqlx::Error> {
        let Some(conn) = self.0.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        conn.execute(how).await?;
        self.0.unfinished = false;
        Ok(())
    }

    /// The writers' connection, once [`Turn::conn`] has taken it.
    fn held(&self) -> &AnyConnection {
        self.0.conn.as_deref().expect("the writers' connection")
    }

    fn held_mut(&mut self) -> &mut AnyConnection {
        self.0.conn.as_deref_mut().expect("the writers' connection")
    }
}

/// SQLite connections [`Db::lend`] gave back, kept for the next loan, and whether the
/// database is closing (then none is kept); and how many may be kept.
#[derive(Debug, Default)]
struct Kept(std::sync::Mutex<(bool, Vec<PoolConnection<Any>>)>, usize);

/// A transaction begun by [`Db::begin_write`], holding the turn to write until it ends.
pub struct WriteTx(Inner);

enum Inner {
    Turn(Turn),
    Pool(sqlx::Transaction<'static, Any>),
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Inner::Turn(turn) => turn.end("COMMIT").await,
            Inner::Pool(tx) => tx.commit().await,
        }
    }

    /// Rolls back, then gives the turn to the next writer.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.0 {
            Inner::Turn(turn) => turn.end("ROLLBACK").await,
            Inner::Pool(tx) => tx.rollback().await,
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            Inner::Turn(t) => t.held(),
            Inner::Pool(tx) => tx,
        }
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Inner::Turn(t) => t.held_mut(),
            Inner::Pool(tx) => tx,
        }
    }
}

/// A connection lent by [`Db::write_conn`], holding the turn to write until dropped.
pub struct WriteConn(ConnInner);

enum ConnInner {
    Turn(Turn),
    Pool(PoolConnection<Any>),
}

impl std::ops::Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            ConnInner::Turn(t) => t.held(),
            ConnInner::Pool(c) => c,
        }
    }
}

impl std::ops::DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            ConnInner::Turn(t) => t.held_mut(),
            ConnInner::Pool(c) => c,
        }
    }
}

/// A connection lent by [`Db::lend`]; use it as `&mut *lent`.
pub struct Lent {
    conn: Option<PoolConnection<Any>>,
    kept: Option<Arc<Kept>>,
}

impl std::ops::Deref for Lent {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn
            .as_deref()
            .expect("a lent connection until it is dropped")
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("a lent connection until it is dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let (Some(conn), Some(kept)) = (self.conn.take(), &self.kept) else {
            return;
        };
        if let Ok(mut k) = kept.0.lock()
            && !k.0
            && k.1.len() < kept.1
        {
            k.1.push(conn);
        }
        // Otherwise the connection goes back to the pool as it drops.
    }
}

/// At most this many SQLite connections are kept between loans, and never more than a
/// quarter of the pool: the rest stay in the pool for transactions and other readers (a
/// pool of fewer than 4 keeps none).
const KEPT: usize = 4;

impl Db {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://...`).
    ///
    /// SQLite runs in WAL mode with `synchronous=FULL`, so every acknowledged commit is on
    /// disk and survives a crash. It reads without a memory map: SQLite drops a connection's
    /// map whenever another connection has committed, and faulting the pages back in cost
    /// more under a stream of commits than the map saved, and keeps temporary storage (a
    /// multi-row insert's statement journal) in memory (see ARCHITECTURE.md).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let opts = AnyConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            engine: engine.name(),
            source,
        })?;
        let mut pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if engine == Engine::Sqlite {
            // An embedded connection cannot be lost as a network one can: the ping sqlx makes
            // before lending each one out would be a round trip to its thread for nothing.
            pool = pool.test_before_acquire(false);
            pool = pool.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            });
        }
        // A database in memory is the connection's own: no other connection can write it.
        let writer = match engine {
            Engine::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .map_err(|source| StoreError::Connect {
                        engine: engine.name(),
                        source,
                    })?
                    .get_filename()
                    .to_path_buf();
                // Opened when first used: the same file even should the working folder change.
                let file = std::path::absolute(&file).unwrap_or(file);
                Some(Arc::new(writer::WriteThread::new(
                    file,
                    url.contains("mode=ro"),
                )))
            }
            _ => None,
        };
        let pool = pool
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Connect {
                engine: engine.name(),
                source,
            })?;
        Ok(Db {
            pool,
            engine,
            writers: Arc::default(),
            kept: Arc::new(Kept(
                Default::default(),
                KEPT.min(max_connections as usize / 4),
            )),
            shared: Arc::default(),
            writer,
        })
    }

    /// The one `T` of this database in this process, made on first use: what a block keeps
    /// in memory about the database (a cache, say) is then the same for every handle on
    /// it, however many of the block's handles the process makes. Another process has its
    /// own.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut all = self
            .shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for one in all.iter() {
            if let Ok(t) = one.clone().downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(T::default());
        all.push(t.clone());
        t
    }

    /// A connection for the reads of a hot path. The pool tests each connection given back
    /// to it with a round trip (on SQLite, to the connection's thread, which must wake up
    /// for it); a SQLite connection lent here is kept instead, for the next loan, so a read
    /// costs one round trip instead of two. Only for reads and self-contained statements:
    /// a transaction belongs on the pool.
    pub async fn lend(&self) -> Result<Lent, StoreError> {
        if self.engine == Engine::Postgres {
            return Ok(Lent {
                conn: Some(self.pool.acquire().await?),
                kept: None,
            });
        }
        let kept = self.kept.0.lock().ok().and_then(|mut k| k.1.pop());
        let conn = match kept {
            Some(c) => c,
            None => self.pool.acquire().await?,
        };
        Ok(Lent {
            conn: Some(conn),
            kept: Some(self.kept.clone()),
        })
    }

    /// A turn to write, for the writers on hot paths (the ledger's sequencer, the token
    /// writer, session creation): hold it for the whole transaction. SQLite has one writer at a time, and
    /// a writer that finds the database locked waits in SQLite's busy handler, which sleeps
    /// in steps of milliseconds; taking turns here wakes the next writer the moment the
    /// previous one commits. On PostgreSQL, which has row locks, there is no turn to take.
    pub async fn write_turn(&self) -> Option<Turn> {
        match self.engine {
            Engine::Sqlite => Some(Turn(self.writers.clone().lock_owned().await)),
            Engine::Postgres => None,
        }
    }

    /// A write transaction that holds the turn to write ([`Db::write_turn`]) until it
    /// commits or is dropped (then it is rolled back), on the writers' own connection on
    /// SQLite: writers that all take turns hand the database on to each other at once,
    /// instead of meeting a locked database and sleeping in SQLite's busy handler
    /// (milliseconds at a time), and none waits for the pool while holding the turn.
    /// Statements run on it as on a transaction (`.execute(&mut *tx)`).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        match self.write_turn().await {
            Some(mut turn) => {
                // IMMEDIATE: the write lock now, so that a read first cannot make the
                // transaction's first write fail (another process may write too).
                turn.conn(&self.pool)
                    .await?
                    .execute("BEGIN IMMEDIATE")
                    .await?;
                turn.0.unfinished = true;
                Ok(WriteTx(Inner::Turn(turn)))
            }
            None => Ok(WriteTx(Inner::Pool(self.pool.begin().await?))),
        }
    }

    /// A connection for writing statements of their own (each its own transaction), holding
    /// the turn to write until dropped: the writers' connection on SQLite, as
    /// [`Db::begin_write`] gives.
    pub async fn write_conn(&self) -> Result<WriteConn, sqlx::Error> {
        match self.write_turn().await {
            Some(mut turn) => {
                turn.conn(&self.pool).await?;
                Ok(WriteConn(ConnInner::Turn(turn)))
            }
            None => Ok(WriteConn(ConnInner::Pool(self.pool.acquire().await?))),
        }
    }

    /// On SQLite in a file: runs `job` as one transaction (`BEGIN IMMEDIATE`, then `COMMIT` or
    /// `ROLLBACK` as it says; an error rolls back) on the database's writer thread, holding
    /// the turn to write. The whole transaction is one hand-off to that thread and one
    /// wake-up back, where through the pool each statement is a round trip of its own
    /// (see `writer.rs`). Returns once it has ended, a commit on disk. Not for PostgreSQL
    /// or a database in memory.
    pub async fn write_on_thread<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut WriterConn) -> Result<End<T>, StoreError> + Send + 'static,
    ) -> Result<End<T>, StoreError> {
        let (Some(writer), Some(mut turn)) = (&self.writer, self.write_turn().await) else {
            return Err(StoreError::Sql(sqlx::Error::Configuration(
                "the writer thread is for SQLite databases in a file".into(),
            )));
        };
        if turn.0.unfinished {
            // A transaction left open on the writers' connection holds the write lock: undone
            // first.
            turn.conn(&self.pool).await?;
        }
        let ended = writer.write(job).await;
        drop(turn);
        ended
    }

    /// Whether [`Db::read_here`] can read this database (SQLite in a file).
    pub fn reads_here(&self) -> bool {
        self.writer.is_some()
    }

    /// Reads the first row of `sql` (one statement that only reads, written with `?` for
    /// each of `values`) on a SQLite connection of the calling thread's own, and gives
    /// `read` of it: no round trip to a pooled connection's thread and back. For point
    /// reads by key on hot paths, which SQLite answers from its cache in microseconds while
    /// the thread waits; anything longer goes through the pool. Fails on PostgreSQL and on
    /// a database in memory ([`Db::reads_here`]), and when a lock is held past a few
    /// milliseconds: the caller then reads through the pool.
    pub fn read_here<T>(
        &self,
        sql: &str,
        values: &[Value],
        read: impl FnOnce(&ReadRow<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        match &self.writer {
            Some(w) => w.read_here(sql, values, read),
            None => Err(StoreError::Sql(sqlx::Error::Configuration(
                "reading on the calling thread is for SQLite databases in a file".into(),
            ))),
        }
    }

    /// Runs `script` as one transaction and returns the rows it changed, once committed:
    /// on SQLite on the writer thread ([`Db::write_on_thread`]), on PostgreSQL on a
    /// pooled connection. A statement that fails undoes the whole script.
    pub async fn commit_script(&self, script: Script) -> Result<u64, StoreError> {
        let (End::Commit(n) | End::Rollback(n)) =
            self.commit_scripts(vec![Arc::new(script)], None).await?;
        Ok(n)
    }

    /// Runs `scripts` in order as one transaction, as [`Db::commit_script`] does, and
    /// commits it only if they changed `expected` rows in all (any number when `None`);
    /// otherwise rolls it back. Gives the rows they changed, and which it was.
    pub async fn commit_scripts(
        &self,
        scripts: Vec<Arc<Script>>,
        expected: Option<u64>,
    ) -> Result<End<u64>, StoreError> {
        let end = move |changed: u64| {
            if expected.is_none_or(|e| e == changed) {
                End::Commit(changed)
            } else {
                End::Rollback(changed)
            }
        };
        if self.writer.is_some() {
            return self
                .write_on_thread(move |c| {
                    let mut changed = 0;
                    for s in &scripts {
                        changed += s.run_on(c)?;
                    }
                    Ok(end(changed))
                })
                .await;
        }
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for s in &scripts {
            changed += s.execute(&mut tx, self.engine).await?;
        }
        let ended = end(changed);
        match ended {
            End::Commit(_) => tx.commit().await?,
            End::Rollback(_) => tx.rollback().await?,
        }
        Ok(ended)
    }

    /// The underlying pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this database runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Connections open now and how many of them are idle.
    pub fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        let kept = match self.kept.0.lock() {
            Ok(mut k) => {
                k.0 = true;
                std::mem::take(&mut k.1)
            }
            Err(_) => Vec::new(),
        };
        drop(kept);
        // The writers' connection goes back too (after the turn in progress, if any), and
        // the writer thread's connection closes.
        self.writers.lock().await.conn = None;
        if let Some(w) = &self.writer {
            w.close().await;
        }
        self.pool.close().await;
    }

    /// Rewrites portable SQL for this engine: `BLOB` becomes `BYTEA` on PostgreSQL, and a
    /// `BIGINT PRIMARY KEY` column is SQLite's `INTEGER PRIMARY KEY` (the rowid itself).
    pub fn dialect(&self, sql: &str) -> String {
        dialect(self.engine, sql)
    }
}

pub(crate) fn dialect(engine: Engine, sql: &str) -> String {
    match engine {
        // A single-column integer key is the table's rowid on SQLite: rows are stored by
        // it, with no second B-tree for the key (which `BIGINT PRIMARY KEY` would keep).
        Engine::Sqlite => sql.replace(" BIGINT PRIMARY KEY", " INTEGER PRIMARY KEY"),
        Engine::Postgres => sql.replace(" BLOB", " BYTEA"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_number_from_the_first() {
        assert_eq!(marks(1, 3), "$1, $2, $3");
        assert_eq!(marks(4, 1), "$4");
        assert_eq!(marks(1, 0), "");
    }

    #[test]
    fn blob_becomes_bytea_on_postgres_only() {
        let sql = "CREATE TABLE t (k BLOB NOT NULL)";
        assert_eq!(
            dialect(Engine::Postgres, sql),
            "CREATE TABLE t (k BYTEA NOT NULL)"
        );
        assert_eq!(dialect(Engine::Sqlite, sql), sql);
    }

    #[test]
    fn a_bigint_key_is_the_rowid_on_sqlite_only() {
        let sql = "CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)";
        assert_eq!(
            dialect(Engine::Sqlite, sql),
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v BIGINT NOT NULL)"
        );
        assert_eq!(dialect(Engine::Postgres, sql), sql);
    }

    #[tokio::test]
    async fn every_sqlite_connection_is_durable_unmapped_and_keeps_temporary_storage_in_memory() {
        let dir = scratch::folder("pragmas");
        let url = format!("sqlite://{}?mode=rwc", dir.join("p.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        // Both connections of the pool, held at once.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(db.pool().acquire().await.unwrap());
        }
        for conn in &mut held {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let mut read = vec![mode];
            for pragma in ["synchronous", "mmap_size", "temp_store", "foreign_keys"] {
                let v: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                read.push(v.to_string());
            }
            assert_eq!(read, ["wal", "2", "0", "2", "1"]);
        }
        drop(held);
        db.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
