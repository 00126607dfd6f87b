//! The data tracker across nodes. A gateway holds no population register, so the person a
//! call is about cannot see it in the gateway's own log. The provider's gateway therefore
//! reports every call about a person to the directory node, which holds the register and
//! the citizens' "Who used my data": the report is written to an outbox in the same commit
//! as the gateway's own log entry (so none is lost when the directory is away), sent signed
//! with the gateway's key, and recorded by the directory once (a report id is taken once per
//! reporting gateway).

use civitas_store::sqlx::{self, Row};
use civitas_store::{Db, Script, Value};
use serde::{Deserialize, Serialize};

use crate::ExchangeError;

/// One call about a person, as the provider's gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Unique per report (the gateway's request id).
    pub id: String,
    /// When the call was answered (ms since the epoch).
    pub time_ms: i64,
    /// The calling subsystem.
    pub client: String,
    /// The service called.
    pub service: String,
    /// The call's `X-Road-Id`.
    pub x_road_id: String,
    /// The HTTP method.
    pub method: String,
    /// The answer's status.
    pub status: u16,
    /// `X-Road-UserId`, as given.
    pub user: String,
    /// Why.
    pub purpose: String,
    /// On what legal basis.
    pub legal_basis: String,
    /// The consent relied on, when the basis is consent.
    pub consent_reference: Option<String>,
    /// The organisation the caller acted for.
    pub represented_party: Option<String>,
    /// Until when the person may not see it (ms since the epoch), and why.
    pub deferred_until_ms: Option<i64>,
    /// Why it is deferred.
    pub deferral_reason: Option<String>,
}

/// The outbox row for a report: commit it with the gateway's log entry.
pub fn outbox_record(report: &Report) -> Result<Script, ExchangeError> {
    let text = serde_json::to_string(report)
        .map_err(|e| ExchangeError::Invalid(format!("tracker report: {e}")))?;
    let mut s = Script::new();
    s.push(
        "INSERT INTO exchange_tracker_outbox (id, report, created_ms) VALUES (?, ?, ?)",
        vec![
            Value::Text(report.id.clone()),
            Value::Text(text),
            Value::I64(report.time_ms),
        ],
    );
    Ok(s)
}

/// Up to `limit` reports waiting to be sent, oldest first.
pub async fn pending(db: &Db, limit: i64) -> Result<Vec<Report>, ExchangeError> {
    let rows =
        sqlx::query("SELECT report FROM exchange_tracker_outbox ORDER BY created_ms, id LIMIT $1")
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("report")?;
            serde_json::from_str(&text)
                .map_err(|e| ExchangeError::Invalid(format!("an unreadable tracker report: {e}")))
        })
        .collect()
}

/// Removes reports the directory has recorded: in one transaction, taken in the writers'
/// turn (see `Db::begin_write`). One commit a report, each outside the turn, had the
/// ledger's sequencer and this wait on each other in SQLite's busy handler, which sleeps in
/// steps of milliseconds, for every report of a busy gateway.
pub async fn sent(db: &Db, ids: &[String]) -> Result<(), ExchangeError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin_write().await?;
    for chunk in ids.chunks(500) {
        let sql = format!(
            "DELETE FROM exchange_tracker_outbox WHERE id IN ({})",
            civitas_store::marks(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The directory's record that a report was taken: commit it with the report's log entry,
/// so the same report is never logged twice.
pub fn received_record(reporter: &str, id: &str) -> Script {
    let mut s = Script::new();
    s.push(
        "INSERT INTO exchange_tracker_received (id, reporter, received_ms) VALUES (?, ?, ?)",
        vec![
            Value::Text(format!("{reporter} {id}")),
            Value::Text(reporter.to_string()),
            Value::I64(civitas_ledger::event::now_ms()),
        ],
    );
    s
}

/// Whether the directory has taken this report already.
pub async fn was_received(db: &Db, reporter: &str, id: &str) -> Result<bool, ExchangeError> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM exchange_tracker_received WHERE id = $1")
            .bind(format!("{reporter} {id}"))
            .fetch_optional(db.pool())
            .await?
            .is_some(),
    )
}

/// What a caller said about a call about a person, in its own words: kept out of the public
/// log (free text may name people), in a private row the log entry commits to by its
/// `payload_sha256`, and shown only to the person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDetails {
    /// Why.
    pub purpose: String,
    /// On what legal basis.
    pub legal_basis: String,
    /// The consent relied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_reference: Option<String>,
    /// Why the person saw the call late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferral_reason: Option<String>,
    /// The subject tag of whoever acted for the person under a mandate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate_holder: Option<String>,
}

impl CallDetails {
    /// The private payload (its bytes are what the log entry's hash covers) and the row that
    /// keeps it under the call's `key` (its request id): commit the row with the entry.
    pub fn record(&self, key: &str) -> Result<(Vec<u8>, Script), ExchangeError> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| ExchangeError::Invalid(format!("call details: {e}")))?;
        let mut s = Script::new();
        s.push(
            "INSERT INTO exchange_call_details (call_key, details) VALUES (?, ?)",
            vec![
                Value::Text(key.to_string()),
                Value::Text(String::from_utf8_lossy(&bytes).into_owned()),
            ],
        );
        Ok((bytes, s))
    }

    /// The details kept under `key`, if they are the ones whose hash (`payload_sha256`, hex)
    /// the log entry holds.
    pub async fn find(
        db: &Db,
        key: &str,
        payload_sha256: &str,
    ) -> Result<Option<CallDetails>, ExchangeError> {
        use sha2::Digest;
        let text: Option<String> =
            sqlx::query_scalar("SELECT details FROM exchange_call_details WHERE call_key = $1")
                .bind(key)
                .fetch_optional(db.pool())
                .await?;
        Ok(text.and_then(|t| {
            let digest = civitas_ledger::event::hex(&sha2::Sha256::digest(t.as_bytes()));
            (digest == payload_sha256)
                .then(|| serde_json::from_str(&t).ok())
                .flatten()
        }))
    }
}
