//! Sign-in sessions: one row per session, found by the hash of the cookie's token, with an
//! idle and an absolute timeout, the level of assurance earned, and the mandate in use.

use civitas_store::sqlx::{self, Row};
use civitas_store::{Db, Script, Value};
use hmac::{Hmac, Mac};

use crate::accounts::{Account, account_from};
use crate::mandate::Principal;
use crate::secret::{hash, now_ms, token};
use crate::{IdentityError, Loa};

/// Where a request came from, kept with the session so the person recognises it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client's address as the server saw it.
    pub ip: String,
    /// The browser's `User-Agent`, shortened.
    pub user_agent: String,
}

/// A live session, as a request sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Public id of the session (shown on the sessions page, the `sid` of ID tokens);
    /// never the cookie's token.
    pub id: String,
    /// The signed-in account.
    pub account: Account,
    /// Level of assurance earned by the methods used.
    pub loa: Loa,
    /// Authentication methods used (RFC 8176: `pwd`, `otp`, `hwk`, ...).
    pub amr: Vec<String>,
    /// When the person last authenticated (sign-in or step-up), Unix milliseconds.
    pub auth_time_ms: i64,
    /// When the session began.
    pub created_ms: i64,
    /// Last request seen.
    pub last_seen_ms: i64,
    /// When the session ends however active it is.
    pub expires_ms: i64,
    /// The address and browser it began from.
    pub client: ClientInfo,
    /// For whom the person acts now, when under a mandate.
    pub acting_for: Option<Principal>,
    csrf_secret: String,
}

impl SessionInfo {
    /// The anti-forgery token forms of this session must carry.
    pub fn csrf_token(&self) -> String {
        csrf_for(&self.csrf_secret, "session")
    }
}

/// HMAC of a purpose under a secret, hex: the shape of every anti-forgery token.
pub fn csrf_for(secret: &str, purpose: &str) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(purpose.as_bytes());
    civitas_ledger::event::hex(&mac.finalize().into_bytes()[..20])
}

/// Session timing rules.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Ends a session after this long without a request.
    pub idle_ms: i64,
    /// Ends a session this long after sign-in, however active.
    pub absolute_ms: i64,
}

/// Why a session ended.
pub mod ended {
    /// The person signed out.
    pub const SIGNED_OUT: &str = "signed_out";
    /// The person ended it from another session.
    pub const ENDED_BY_USER: &str = "ended_by_user";
    /// No request for longer than the idle timeout.
    pub const IDLE: &str = "idle";
    /// Older than the absolute timeout.
    pub const EXPIRED: &str = "expired";
    /// Logged out through a relying party (OpenID Connect RP-initiated logout).
    pub const RP_LOGOUT: &str = "rp_logout";
}

/// A new session for an account that has just proved itself: its cookie token, what it is,
/// and the insert that stores it, for the caller to commit together with the ledger event
/// that records the sign-in (see `Ledger::append_with`). The id and token are fresh random
/// values and the table has no foreign keys, so the insert cannot fail on valid data.
pub(crate) fn create(
    account: &Account,
    loa: Loa,
    amr: &[&str],
    client: &ClientInfo,
    timeouts: Timeouts,
) -> (String, SessionInfo, Script) {
    let now = now_ms();
    let secret = token(32);
    let id = token(12);
    let csrf_secret = token(24);
    let mut insert = Script::new();
    insert.push(
        "INSERT INTO sessions (id, token_hash, account_id, loa, amr, csrf_secret, created_ms, auth_time_ms, last_seen_ms, expires_ms, user_agent, ip)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            Value::Text(id.clone()),
            Value::Text(hash(&secret)),
            Value::Text(account.id.clone()),
            Value::Str(loa.code()),
            Value::Text(amr.join(" ")),
            Value::Text(csrf_secret.clone()),
            Value::I64(now),
            Value::I64(now),
            Value::I64(now),
            Value::I64(now + timeouts.absolute_ms),
            Value::Text(client.user_agent.clone()),
            Value::Text(client.ip.clone()),
        ],
    );
    let session = SessionInfo {
        id,
        account: account.clone(),
        loa,
        amr: amr.iter().map(|s| s.to_string()).collect(),
        auth_time_ms: now,
        created_ms: now,
        last_seen_ms: now,
        expires_ms: now + timeouts.absolute_ms,
        client: client.clone(),
        acting_for: None,
        csrf_secret,
    };
    (secret, session, insert)
}

const SESSION_COLUMNS: &str = "s.id AS session_id, s.loa, s.amr, s.csrf_secret, s.created_ms, s.auth_time_ms, s.last_seen_ms, s.expires_ms, s.user_agent, s.ip, s.acting_for";

fn session_from(
    row: &civitas_store::sqlx::any::AnyRow,
    account: Account,
) -> Result<SessionInfo, IdentityError> {
    let loa: String = row.try_get("loa")?;
    let amr: String = row.try_get("amr")?;
    let acting: Option<String> = row.try_get("acting_for")?;
    Ok(SessionInfo {
        id: row.try_get("session_id")?,
        account,
        loa: Loa::from_code(&loa).unwrap_or(Loa::Low),
        amr: amr.split_whitespace().map(str::to_string).collect(),
        auth_time_ms: row.try_get("auth_time_ms")?,
        created_ms: row.try_get("created_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        client: ClientInfo {
            ip: row.try_get("ip")?,
            user_agent: row.try_get("user_agent")?,
        },
        acting_for: acting.and_then(|a| serde_json::from_str(&a).ok()),
        csrf_secret: row.try_get("csrf_secret")?,
    })
}

/// Finds the live session of a cookie token; ends it (and returns `None`) when it has been
/// idle or alive too long. Marks it seen, at most once a minute to spare the database.
pub(crate) async fn lookup(
    db: &Db,
    cookie_token: &str,
    timeouts: Timeouts,
) -> Result<Option<SessionInfo>, IdentityError> {
    let row = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS}, a.id, a.kind, a.username, a.display_name, a.agency_code, a.role, a.person_id, a.email, a.phone
         FROM sessions s JOIN accounts a ON a.id = s.account_id
         WHERE s.token_hash = $1 AND s.ended_ms IS NULL AND a.disabled_ms IS NULL"
    ))
    .bind(hash(cookie_token))
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let session = session_from(&row, account_from(&row)?)?;
    let now = now_ms();
    if now >= session.expires_ms {
        end(db, &session.id, ended::EXPIRED).await?;
        return Ok(None);
    }
    if now - session.last_seen_ms >= timeouts.idle_ms {
        end(db, &session.id, ended::IDLE).await?;
        return Ok(None);
    }
    if now - session.last_seen_ms >= 60_000 {
        sqlx::query("UPDATE sessions SET last_seen_ms = $2 WHERE id = $1")
            .bind(&session.id)
            .bind(now)
            .execute(db.pool())
            .await?;
    }
    Ok(Some(session))
}

/// Ends a session.
pub(crate) async fn end(db: &Db, id: &str, reason: &str) -> Result<bool, IdentityError> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_ms = $2, ended_reason = $3 WHERE id = $1 AND ended_ms IS NULL",
    )
    .bind(id)
    .bind(now_ms())
    .bind(reason)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An account's live sessions, most recent first.
pub(crate) async fn list(db: &Db, account: &Account) -> Result<Vec<SessionInfo>, IdentityError> {
    let now = now_ms();
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.account_id = $1 AND s.ended_ms IS NULL AND s.expires_ms > $2
         ORDER BY s.last_seen_ms DESC"
    ))
    .bind(&account.id)
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| session_from(r, account.clone()))
        .collect()
}

/// Raises a session's level after a step-up, records the new method, and issues a new
/// cookie token (the old one stops working: a privilege change gets a fresh identifier).
pub(crate) async fn step_up(
    db: &Db,
    session: &SessionInfo,
    loa: Loa,
    method: &str,
) -> Result<(String, SessionInfo), IdentityError> {
    let now = now_ms();
    let secret = token(32);
    let mut amr = session.amr.clone();
    if !amr.iter().any(|m| m == method) {
        amr.push(method.to_string());
    }
    let level = loa.max(session.loa);
    sqlx::query(
        "UPDATE sessions SET token_hash = $2, loa = $3, amr = $4, auth_time_ms = $5, last_seen_ms = $5 WHERE id = $1",
    )
    .bind(&session.id)
    .bind(hash(&secret))
    .bind(level.code())
    .bind(amr.join(" "))
    .bind(now)
    .execute(db.pool())
    .await?;
    let mut s = session.clone();
    s.loa = level;
    s.amr = amr;
    s.auth_time_ms = now;
    s.last_seen_ms = now;
    Ok((secret, s))
}

/// Records the mandate the session now acts under (or none).
pub(crate) async fn set_acting_for(
    db: &Db,
    session_id: &str,
    principal: Option<&Principal>,
) -> Result<(), IdentityError> {
    let json = principal
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| IdentityError::Invalid(e.to_string()))?;
    sqlx::query("UPDATE sessions SET acting_for = $2 WHERE id = $1")
        .bind(session_id)
        .bind(json)
        .execute(db.pool())
        .await?;
    Ok(())
}
