//! Rate limits on sign-in: after a few failures a key (an account, a client address) is
//! locked for a while, and each further failure doubles the wait.

use civitas_store::Db;
use civitas_store::sqlx::{self, Row};

use crate::IdentityError;
use crate::secret::now_ms;

/// Failures allowed on one account before it is locked.
pub const ACCOUNT_FREE_FAILURES: i64 = 5;
/// Failures allowed from one client address before it is locked (many people may share one).
pub const ADDRESS_FREE_FAILURES: i64 = 20;
/// The first lock lasts this long; each further failure doubles it.
const FIRST_LOCK_MS: i64 = 30_000;
/// No lock lasts longer than this.
const MAX_LOCK_MS: i64 = 15 * 60_000;
/// A quiet day forgives earlier failures.
const FORGET_AFTER_MS: i64 = 24 * 3_600_000;

/// A refusal because of too many failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the next attempt is allowed.
    pub retry_after_secs: u64,
}

/// Refuses when `key` is locked now; otherwise says whether failures are on record (so a
/// success knows whether there is anything to [`clear`]).
pub(crate) async fn check(db: &Db, key: &str) -> Result<bool, IdentityError> {
    check_both(db, key, key).await
}

/// [`check`] for two keys (an account and a client address) in one query: refuses when
/// either is locked; otherwise says whether failures are on record for `first`.
pub(crate) async fn check_both(db: &Db, first: &str, second: &str) -> Result<bool, IdentityError> {
    let rows =
        sqlx::query("SELECT key, locked_until_ms FROM sign_in_throttle WHERE key IN ($1, $2)")
            .bind(first)
            .bind(second)
            .fetch_all(db.pool())
            .await?;
    let mut state = State::default();
    for row in &rows {
        let key: String = row.try_get("key")?;
        state.first_on_record |= key == first;
        state.locked_until_ms = state
            .locked_until_ms
            .max(row.try_get::<i64, _>("locked_until_ms")?);
    }
    state.verdict()
}

/// What the throttle holds on two keys, as [`check_both`] reads it (or a caller that reads
/// it together with other things).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct State {
    /// The later lock of the two keys (0 when neither is on record).
    pub locked_until_ms: i64,
    /// Whether failures are on record for the first key.
    pub first_on_record: bool,
}

impl State {
    /// Refuses while locked; otherwise whether failures are on record for the first key.
    pub(crate) fn verdict(self) -> Result<bool, IdentityError> {
        let now = now_ms();
        if self.locked_until_ms > now {
            return Err(IdentityError::Throttled(Throttled {
                retry_after_secs: ((self.locked_until_ms - now + 999) / 1000) as u64,
            }));
        }
        Ok(self.first_on_record)
    }
}

/// Counts a failure against `key`; locks it once more than `free` failures have happened.
pub(crate) async fn fail(db: &Db, key: &str, free: i64) -> Result<(), IdentityError> {
    let now = now_ms();
    let mut tx = db.pool().begin().await?;
    // Write first: on SQLite this takes the write lock before the read (a deferred
    // transaction that reads and then writes fails with "database is locked" at once, without
    // waiting, when another connection wrote in between); on PostgreSQL it locks the row, so
    // two failures racing on one key are both counted.
    sqlx::query("UPDATE sign_in_throttle SET failures = failures WHERE key = $1")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query("SELECT failures, last_failure_ms FROM sign_in_throttle WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    let failures = match &row {
        Some(r) if now - r.try_get::<i64, _>("last_failure_ms")? < FORGET_AFTER_MS => {
            r.try_get::<i64, _>("failures")? + 1
        }
        _ => 1,
    };
    let locked_until = if failures >= free {
        let doublings = (failures - free).min(20) as u32;
        now + (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
    } else {
        0
    };
    // An upsert, so two failures racing on a new key do not collide on the primary key.
    sqlx::query(
        "INSERT INTO sign_in_throttle (key, failures, locked_until_ms, last_failure_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
             locked_until_ms = excluded.locked_until_ms, last_failure_ms = excluded.last_failure_ms",
    )
        .bind(key)
        .bind(failures)
        .bind(locked_until)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Forgets the failures of `key` after a success.
pub(crate) async fn clear(db: &Db, key: &str) -> Result<(), IdentityError> {
    sqlx::query("DELETE FROM sign_in_throttle WHERE key = $1")
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(())
}
