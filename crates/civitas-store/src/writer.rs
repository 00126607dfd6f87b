//! SQLite's writer thread: a connection of its own on a thread of its own, on which a
//! whole write transaction runs in one hand-off from async code ([`crate::Db::write_on_thread`]).
//!
//! Through the pool, each statement is a round trip to its connection's thread and back to
//! a Tokio worker: on a busy server, half a millisecond each, most of it waiting to be
//! scheduled. A ledger batch with its companion writes took five to seven of them (`BEGIN`,
//! the ledger's statements, each run of like companions, `COMMIT`). Here the transaction
//! is a closure run where the connection is: `BEGIN IMMEDIATE`, the statements, the checks
//! of their counts and `COMMIT` or `ROLLBACK`, with one wake-up of the thread and one of
//! the waiting task. Statements are prepared once and kept, by text.
//!
//! The connection is opened with the pool's pragmas ([`crate::SQLITE_PRAGMAS`]), so a
//! commit here is as durable as one there. It writes only while holding the turn to write
//! ([`crate::Db::write_turn`]), so it never meets the writers' connection in SQLite's busy
//! handler.
//!
//! On Linux the thread asks for a short time slice ([`short_slice`]): the commits of the
//! whole node wait on it, and with the default slice a wake-up on a busy machine waited
//! for the running thread's slice to end.
//!
//! The only `unsafe` code of the store is here: calls into SQLite's C API, on pointers this
//! module owns and uses on the one thread, and the one system call of [`short_slice`].

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::mpsc;

use libsqlite3_sys as ffi;

use crate::{StoreError, Value};

/// How a transaction run by [`crate::Db::write_on_thread`] ends.
#[derive(Debug, PartialEq, Eq)]
pub enum End<T> {
    /// Committed.
    Commit(T),
    /// Rolled back (the job found something wrong, such as a count that is not the one
    /// expected).
    Rollback(T),
}

/// At most this many prepared statements are kept; past it, all are dropped and prepared
/// again as used (a batch's texts are a few dozen).
const KEPT_STATEMENTS: usize = 256;

type Job = Box<dyn FnOnce(&mut Option<Conn>) + Send>;

/// How long a thread's own reader waits for a lock (only a checkpoint that restarts the log,
/// or a recovery, takes one that readers wait for).
const READER_BUSY_MS: u32 = 20;

/// At most this many databases' readers are kept open per thread.
const KEPT_READERS: usize = 4;

thread_local! {
    /// The calling thread's own read connections, by database ([`WriteThread::read_here`]).
    static READERS: std::cell::RefCell<Vec<(u64, Conn)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The time slice the writer thread asks for: shorter than Linux's default (0.7 ms times
/// 1 + log2 of the cores; 1.4 ms on two), so that when it wakes (a transaction handed to
/// it, a sync done) it runs at once instead of waiting out the running thread's slice.
const WRITER_SLICE_NS: u64 = 300_000;

/// Asks the scheduler for [`WRITER_SLICE_NS`] as the calling thread's slice, keeping its
/// policy and nice value. Since Linux 6.12 the fair scheduler (EEVDF) lets a thread that
/// wakes with a shorter slice than the running one's take the core; measured with `civitas
/// bench notify`, a transaction handed to the thread waited 0.55-0.8 ms on average to
/// start while Tokio's workers kept both cores busy, and 0.02-0.07 ms with this slice.
/// Older kernels ignore the slice; elsewhere nothing is asked. Needs no privilege.
fn short_slice() {
    #[cfg(target_os = "linux")]
    {
        let Some(mut attr) = sched::get() else { return };
        // Only the fair policies (SCHED_OTHER, SCHED_BATCH) have a slice to set.
        if attr.policy != 0 && attr.policy != 3 {
            return;
        }
        attr.flags = 0;
        attr.runtime = WRITER_SLICE_NS;
        if let Err(e) = sched::set(&attr) {
            tracing::debug!(error = %e, "the writer thread keeps the default time slice");
        }
    }
}

/// The calling thread's scheduling attributes (`sched_getattr(2)`, `sched_setattr(2)`).
#[cfg(target_os = "linux")]
mod sched {
    /// `struct sched_attr`.
    #[repr(C)]
    #[derive(Debug, Default)]
    pub(super) struct Attr {
        pub size: u32,
        pub policy: u32,
        pub flags: u64,
        pub nice: i32,
        pub priority: u32,
        pub runtime: u64,
        pub deadline: u64,
        pub period: u64,
        pub util_min: u32,
        pub util_max: u32,
    }

    const SIZE: u32 = std::mem::size_of::<Attr>() as u32;

    pub(super) fn get() -> Option<Attr> {
        let mut attr = Attr::default();
        // SAFETY: a pointer to an `Attr` of the size given, alive across the call; pid 0 is
        // the calling thread.
        let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, SIZE, 0) };
        (rc == 0).then_some(attr)
    }

    pub(super) fn set(attr: &Attr) -> std::io::Result<()> {
        let attr = Attr {
            size: SIZE,
            ..*attr
        };
        // SAFETY: as in `get`; the kernel only reads the struct.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// The writer thread of one SQLite database file, started on first use.
#[derive(Debug)]
pub(crate) struct WriteThread {
    /// Names this database among those the threads' own readers have open ([`READERS`]).
    id: u64,
    path: PathBuf,
    /// The database was opened read-only (`mode=ro`): so is this connection.
    read_only: bool,
    jobs: Mutex<Jobs>,
}

/// Where the thread's jobs go.
#[derive(Debug)]
enum Jobs {
    /// Not started yet.
    NotYet,
    Running(mpsc::Sender<Job>),
    /// Closed: no more jobs.
    Closed,
}

impl WriteThread {
    pub(crate) fn new(path: PathBuf, read_only: bool) -> WriteThread {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        WriteThread {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            path,
            read_only,
            jobs: Mutex::new(Jobs::NotYet),
        }
    }

    /// Runs `job` as one transaction on the thread, opening the connection if it is not
    /// open; gives how it ended, once it has (a commit is then on disk).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Conn) -> Result<End<T>, StoreError> + Send + 'static,
    ) -> Result<End<T>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (path, read_only) = (self.path.clone(), self.read_only);
        let job: Job = Box::new(move |conn: &mut Option<Conn>| {
            if conn.is_none() {
                match Conn::open(&path, read_only) {
                    Ok(c) => *conn = Some(c),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { return };
            let out = c.transaction(job);
            if !c.in_autocommit() {
                // Left inside a transaction it could not end: opened afresh next time.
                *conn = None;
            }
            let _ = tx.send(out);
        });
        self.send(job)?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(*jobs, Jobs::NotYet) {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || {
                    short_slice();
                    let mut conn = None;
                    while let Ok(job) = rx.recv() {
                        job(&mut conn);
                    }
                })
                .map_err(|e| StoreError::Sqlite {
                    code: 0,
                    message: format!("cannot start the writer thread: {e}"),
                })?;
            *jobs = Jobs::Running(tx);
        }
        match &*jobs {
            Jobs::Running(tx) => tx.send(job).map_err(|_| closed()),
            _ => Err(closed()),
        }
    }

    /// Runs `sql`, a statement that only reads, on a connection of the calling thread's
    /// own, and gives `read` of its first row: no hand-off to another thread and back.
    /// For point reads by key on hot paths, which SQLite answers from its cache in
    /// microseconds; the thread waits for them. The connection is opened on first use, with
    /// the pool's pragmas, refuses to write (`query_only`), and gives up on a lock after
    /// [`READER_BUSY_MS`] (the caller can then read through the pool).
    pub(crate) fn read_here<T>(
        &self,
        sql: &str,
        values: &[Value],
        read: impl FnOnce(&Row<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            let at = match readers.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    let mut conn = Conn::open(&self.path, self.read_only)?;
                    conn.exec(&format!(
                        "PRAGMA query_only=1; PRAGMA busy_timeout={READER_BUSY_MS};"
                    ))?;
                    // A thread that has read many databases (tests) keeps the newest few.
                    if readers.len() >= KEPT_READERS {
                        readers.remove(0);
                    }
                    readers.push((self.id, conn));
                    readers.len() - 1
                }
            };
            readers[at].1.read_first(sql, values, read)
        })
    }

    /// Closes the connection (after the jobs sent before) and ends the thread.
    pub(crate) async fn close(&self) {
        let jobs = std::mem::replace(
            &mut *self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Jobs::Closed,
        );
        let Jobs::Running(jobs) = jobs else { return };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Option<Conn>| {
            *conn = None;
            let _ = tx.send(());
        });
        if jobs.send(job).is_ok() {
            let _ = rx.await;
        }
    }
}

fn closed() -> StoreError {
    StoreError::Sql(sqlx::Error::PoolClosed)
}

/// The writer thread's connection.
pub struct Conn {
    db: NonNull<ffi::sqlite3>,
    statements: HashMap<String, NonNull<ffi::sqlite3_stmt>>,
}

// SAFETY: a `Conn` is made, used and dropped on the writer thread; it only passes between
// threads inside the thread's own closure. SQLite connections may move between threads
// (the library is built thread-safe), as long as one thread uses them at a time.
unsafe impl Send for Conn {}

impl Conn {
    fn open(path: &Path, read_only: bool) -> Result<Conn, StoreError> {
        let name =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| StoreError::Sqlite {
                code: ffi::SQLITE_MISUSE,
                message: "the database path holds a NUL byte".into(),
            })?;
        let mut db = std::ptr::null_mut();
        // SAFETY: `name` is a NUL-terminated string that outlives the call; `db` is written
        // by SQLite.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                name.as_ptr(),
                &mut db,
                if read_only {
                    ffi::SQLITE_OPEN_READONLY
                } else {
                    ffi::SQLITE_OPEN_READWRITE
                } | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let Some(db) = NonNull::new(db) else {
            return Err(StoreError::Sqlite {
                code: rc,
                message: "SQLite could not allocate a connection".into(),
            });
        };
        let mut conn = Conn {
            db,
            statements: HashMap::new(),
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        conn.exec(crate::SQLITE_PRAGMAS)?;
        Ok(conn)
    }

    /// Runs statements without parameters (`BEGIN`, `COMMIT`, pragmas).
    fn exec(&mut self, sql: &str) -> Result<(), StoreError> {
        let text = CString::new(sql).map_err(|_| StoreError::Sqlite {
            code: ffi::SQLITE_MISUSE,
            message: "a statement holds a NUL byte".into(),
        })?;
        // SAFETY: the connection is open; `text` is NUL-terminated and outlives the call; no
        // callback, and no error message asked for (it is read with `sqlite3_errmsg`).
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db.as_ptr(),
                text.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(self.error(rc)),
        }
    }

    /// Runs one statement written with `?` for each of `values`, to its end; returns the
    /// rows it changed (none for a statement that only reads).
    pub fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        let stmt = self.prepared(sql)?.as_ptr();
        let outcome = self
            .bind(stmt, values)
            .and_then(|()| self.step_to_end(stmt));
        // SAFETY: `stmt` is a live statement of this connection. Reset returns the step's
        // error again, already taken above; bindings are cleared so no pointer into
        // `values` outlives this call.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        outcome
    }

    /// Runs `sql`, written with `?` for each of `values`, and gives `read` of its first
    /// row, if it has one.
    pub(crate) fn read_first<T>(
        &mut self,
        sql: &str,
        values: &[Value],
        read: impl FnOnce(&Row<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let stmt = self.prepared(sql)?.as_ptr();
        let outcome = self.bind(stmt, values).and_then(|()| {
            // SAFETY: `stmt` is a live statement of this connection, its values bound.
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => Ok(Some(read(&Row {
                    stmt,
                    _conn: std::marker::PhantomData,
                }))),
                ffi::SQLITE_DONE => Ok(None),
                rc => Err(self.error(rc)),
            }
        });
        // SAFETY: as in `execute`; the row was read (copied) above, before the reset.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        outcome
    }

    /// Binds `values` to `stmt`'s parameters, which must be as many.
    fn bind(&mut self, stmt: *mut ffi::sqlite3_stmt, values: &[Value]) -> Result<(), StoreError> {
        // SAFETY (this block): `stmt` is a live statement of this connection; text and blob
        // pointers are bound as static, which holds until the bindings are cleared by the
        // caller (`execute`, `read_first`), before `values` can go.
        unsafe {
            let wanted = ffi::sqlite3_bind_parameter_count(stmt);
            if wanted as usize != values.len() {
                return Err(StoreError::Sqlite {
                    code: ffi::SQLITE_RANGE,
                    message: format!("{} values for {wanted} parameters", values.len()),
                });
            }
            for (i, v) in values.iter().enumerate() {
                let at = i as c_int + 1;
                let rc = match v {
                    Value::NullText | Value::NullInt | Value::NullBytes => {
                        ffi::sqlite3_bind_null(stmt, at)
                    }
                    Value::I64(n) => ffi::sqlite3_bind_int64(stmt, at, *n),
                    Value::Bool(b) => ffi::sqlite3_bind_int64(stmt, at, i64::from(*b)),
                    Value::F64(f) => ffi::sqlite3_bind_double(stmt, at, *f),
                    Value::Str(s) => bind_text(stmt, at, s),
                    Value::Text(s) => bind_text(stmt, at, s),
                    Value::Bytes(b) => ffi::sqlite3_bind_blob64(
                        stmt,
                        at,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                };
                if rc != ffi::SQLITE_OK {
                    return Err(self.error(rc));
                }
            }
        }
        Ok(())
    }

    /// Steps `stmt` to its end; the rows it changed (none for a statement that only reads).
    fn step_to_end(&mut self, stmt: *mut ffi::sqlite3_stmt) -> Result<u64, StoreError> {
        // SAFETY: `stmt` is a live statement of this connection, its values bound.
        unsafe {
            loop {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_ROW => continue,
                    ffi::SQLITE_DONE => break,
                    rc => return Err(self.error(rc)),
                }
            }
            if ffi::sqlite3_stmt_readonly(stmt) != 0 {
                Ok(0)
            } else {
                Ok(ffi::sqlite3_changes64(self.db.as_ptr()) as u64)
            }
        }
    }

    /// The statement for `sql`, prepared the first time it is used.
    fn prepared(&mut self, sql: &str) -> Result<NonNull<ffi::sqlite3_stmt>, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(*s);
        }
        if self.statements.len() >= KEPT_STATEMENTS {
            self.finalize_all();
        }
        let mut stmt = std::ptr::null_mut();
        let mut tail: *const c_char = std::ptr::null();
        // SAFETY: the connection is open; `sql` is read for exactly its length; `stmt` and
        // `tail` are written by SQLite, `tail` pointing into `sql`.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                sql.len() as c_int,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        let Some(stmt) = NonNull::new(stmt) else {
            return Err(StoreError::Sqlite {
                code: ffi::SQLITE_MISUSE,
                message: "an empty statement".into(),
            });
        };
        // SAFETY: `tail` points into `sql`, at or before its end.
        let rest = unsafe { tail.offset_from(sql.as_ptr().cast()) } as usize;
        if !sql[rest..].trim().trim_start_matches(';').trim().is_empty() {
            // SAFETY: `stmt` was just prepared and is not kept.
            unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
            return Err(StoreError::Sqlite {
                code: ffi::SQLITE_MISUSE,
                message: format!("one statement a text, not: {sql}"),
            });
        }
        self.statements.insert(sql.to_string(), stmt);
        Ok(stmt)
    }

    fn finalize_all(&mut self) {
        for (_, s) in self.statements.drain() {
            // SAFETY: each kept statement is live and finalized once, here.
            unsafe { ffi::sqlite3_finalize(s.as_ptr()) };
        }
    }

    /// Runs `job` as one transaction: `BEGIN IMMEDIATE`, then `COMMIT` or `ROLLBACK` as it
    /// says; an error rolls back.
    pub(crate) fn transaction<T>(
        &mut self,
        job: impl FnOnce(&mut Conn) -> Result<End<T>, StoreError>,
    ) -> Result<End<T>, StoreError> {
        self.exec("BEGIN IMMEDIATE")?;
        let ended = match job(self) {
            Ok(End::Commit(t)) => self.exec("COMMIT").map(|()| End::Commit(t)),
            Ok(End::Rollback(t)) => self.exec("ROLLBACK").map(|()| End::Rollback(t)),
            Err(e) => Err(e),
        };
        if ended.is_err() && !self.in_autocommit() {
            // A failed statement or commit leaves the transaction open (or SQLite ended it
            // already, then this is not needed): undone.
            let _ = self.exec("ROLLBACK");
        }
        ended
    }

    /// Whether the connection is outside any transaction, ready for the next job.
    fn in_autocommit(&self) -> bool {
        // SAFETY: the connection is open.
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) != 0 }
    }

    fn error(&self, rc: c_int) -> StoreError {
        // SAFETY: the connection is open (possibly failed to open, which SQLite still
        // describes); the message is copied before any other call.
        let message = unsafe {
            CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr()))
                .to_string_lossy()
                .into_owned()
        };
        StoreError::Sqlite { code: rc, message }
    }
}

/// The current row of a statement run by [`Conn::read_first`]: its columns, by position from 0,
/// copied out.
pub struct Row<'a> {
    stmt: *mut ffi::sqlite3_stmt,
    _conn: std::marker::PhantomData<&'a mut Conn>,
}

impl Row<'_> {
    /// Column `i` as bytes (a blob, or a text's bytes); `None` when it is NULL.
    pub fn bytes(&self, i: usize) -> Option<Vec<u8>> {
        let at = i as c_int;
        // SAFETY: the statement is on this row (the borrow of `Row` lasts no longer); the
        // pointer SQLite gives is valid for the length it gives, until the next step or
        // reset, and is copied at once.
        unsafe {
            if ffi::sqlite3_column_type(self.stmt, at) == ffi::SQLITE_NULL {
                return None;
            }
            let p = ffi::sqlite3_column_blob(self.stmt, at);
            let n = ffi::sqlite3_column_bytes(self.stmt, at);
            if p.is_null() || n <= 0 {
                return Some(Vec::new());
            }
            Some(std::slice::from_raw_parts(p.cast::<u8>(), n as usize).to_vec())
        }
    }

    /// Column `i` as an integer; `None` when it is NULL.
    pub fn i64(&self, i: usize) -> Option<i64> {
        let at = i as c_int;
        // SAFETY: as in `bytes`.
        unsafe {
            (ffi::sqlite3_column_type(self.stmt, at) != ffi::SQLITE_NULL)
                .then(|| ffi::sqlite3_column_int64(self.stmt, at))
        }
    }
}

/// # Safety
/// `stmt` is a live statement; `s` outlives its binding (see [`Conn::execute`]).
unsafe fn bind_text(stmt: *mut ffi::sqlite3_stmt, at: c_int, s: &str) -> c_int {
    // SAFETY: as the caller promises; the length is given, so no NUL is needed.
    unsafe {
        ffi::sqlite3_bind_text64(
            stmt,
            at,
            s.as_ptr().cast(),
            s.len() as u64,
            ffi::SQLITE_STATIC(),
            ffi::SQLITE_UTF8 as u8,
        )
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.finalize_all();
        // SAFETY: every statement is finalized; the connection is closed once, here.
        unsafe { ffi::sqlite3_close(self.db.as_ptr()) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{WRITER_SLICE_NS, sched, short_slice};

    #[test]
    fn the_writer_asks_for_a_short_slice_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // A nice value of the operator's (`nice -n 5 civitas serve`) stays.
            let mut attr = sched::get().unwrap();
            attr.nice = 5;
            sched::set(&attr).unwrap();
            let before = sched::get().unwrap();
            short_slice();
            let after = sched::get().unwrap();
            assert_eq!((after.policy, after.nice), (before.policy, 5));
            // Linux before 6.12 has no slice of a thread's own and reports none.
            if before.runtime != 0 || after.runtime != 0 {
                assert_eq!(after.runtime, WRITER_SLICE_NS, "{after:?}");
            }
        })
        .join()
        .unwrap();
    }
}
