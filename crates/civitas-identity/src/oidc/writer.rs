//! Group commit for issued tokens. Every token response writes: the refresh token it
//! consumes is marked used (a compare-and-set, so that of two requests with one token only
//! one wins) and the new access and refresh tokens are inserted. One synced commit per
//! response would cap the token endpoint at the disk's commit rate; instead one writer task
//! takes every request waiting at the moment and commits them together, each with its own
//! outcome. The `identity.tokens_issued` events go into the same transaction (the ledger's
//! outbox), so tokens are never handed out without their event, nor logged without being
//! issued.

use std::collections::HashSet;

use civitas_ledger::{Event, Ledger};
use civitas_store::sqlx::{self, Row};
use civitas_store::{BulkInsert, Db, Value};
use tokio::sync::{mpsc, oneshot};

use super::{OidcError, Provider, now};

/// The most requests committed together.
const MAX_BATCH: usize = 256;

/// A token to store.
pub(crate) struct TokenRow {
    pub hash: String,
    pub kind: &'static str,
    pub scope: String,
    pub expires_at: i64,
}

/// The tokens of one response.
pub(crate) struct NewTokens {
    /// The grant they belong to; nothing is written when it has been revoked.
    pub grant_id: String,
    /// The hash of the refresh token this response consumes (refresh grant); nothing is
    /// written when it has been used already.
    pub consumes: Option<String>,
    /// The access and refresh tokens.
    pub rows: Vec<TokenRow>,
    /// The ledger event that says they were issued, committed with them.
    pub event: Event,
}

/// What became of one response's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Stored: the response may be sent.
    Stored,
    /// Not stored: the consumed refresh token was used meanwhile, or the grant revoked.
    Refused,
}

pub(crate) struct Job {
    tokens: NewTokens,
    reply: oneshot::Sender<Result<Written, String>>,
}

/// The writer's queue; the task starts on first use and ends when the provider is dropped.
pub(crate) type Queue = std::sync::OnceLock<mpsc::Sender<Job>>;

impl Provider {
    /// Stores a response's tokens in the next group commit.
    pub(crate) async fn write_tokens(&self, tokens: NewTokens) -> Result<Written, OidcError> {
        let queue = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
            tokio::spawn(run(self.db.clone(), self.ledger.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let stopped = || OidcError::Storing("the token writer stopped".into());
        queue
            .send(Job { tokens, reply })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(OidcError::Storing)
    }
}

async fn run(db: Db, ledger: Ledger, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match write(&db, &ledger, &batch).await {
            Ok(outcomes) => {
                ledger.queued();
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, tokens = batch.len(), "storing issued tokens failed");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Runs `sql`, whose parameters are `before` and then an `IN` list (written `{list}`) of
/// `values`, and returns column `column` of every row. The list is padded to a power of two with a value no row has, so
/// that few distinct statements are ever prepared.
async fn in_list(
    conn: &mut civitas_store::sqlx::AnyConnection,
    sql: &str,
    before: &[i64],
    values: &[&str],
    column: &str,
) -> Result<HashSet<String>, OidcError> {
    let width = values.len().next_power_of_two();
    let list = (0..width)
        .map(|i| format!("${}", before.len() + 1 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = sql.replace("{list}", &list);
    let mut q = sqlx::query(&sql);
    for b in before {
        q = q.bind(*b);
    }
    for i in 0..width {
        q = q.bind(values.get(i).copied().unwrap_or(""));
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|row| Ok(row.try_get::<String, _>(column)?))
        .collect()
}

async fn write(db: &Db, ledger: &Ledger, batch: &[Job]) -> Result<Vec<Written>, OidcError> {
    let now = now();
    let _turn = db.write_turn().await;
    let mut tx = db.pool().begin().await?;
    // Refresh grants: mark each consumed token used, if it is unused and its grant alive.
    let consumed: Vec<&str> = batch
        .iter()
        .filter_map(|j| j.tokens.consumes.as_deref())
        .collect();
    let mut won = HashSet::new();
    if !consumed.is_empty() {
        won = in_list(
            &mut tx,
            "UPDATE oidc_tokens SET used_at = $1 WHERE used_at IS NULL AND token_hash IN ({list})
             AND EXISTS (SELECT 1 FROM oidc_grants g WHERE g.grant_id = oidc_tokens.grant_id AND g.revoked_at IS NULL)
             RETURNING token_hash",
            &[now],
            &consumed,
            "token_hash",
        )
        .await?;
    }
    // Code grants: write only if the grant is still alive.
    let fresh: Vec<&str> = batch
        .iter()
        .filter(|j| j.tokens.consumes.is_none())
        .map(|j| j.tokens.grant_id.as_str())
        .collect();
    let mut alive = HashSet::new();
    if !fresh.is_empty() {
        alive = in_list(
            &mut tx,
            "SELECT grant_id FROM oidc_grants WHERE revoked_at IS NULL AND grant_id IN ({list})",
            &[],
            &fresh,
            "grant_id",
        )
        .await?;
    }
    let mut rows = BulkInsert::new(
        "oidc_tokens",
        &[
            "token_hash",
            "grant_id",
            "kind",
            "scope",
            "created_at",
            "expires_at",
        ],
    );
    let outcomes: Vec<Written> = batch
        .iter()
        .map(|j| {
            // A token presented twice in one batch is won by the first request only.
            let stored = match &j.tokens.consumes {
                Some(hash) => won.remove(hash.as_str()),
                None => alive.contains(j.tokens.grant_id.as_str()),
            };
            if !stored {
                return Written::Refused;
            }
            for t in &j.tokens.rows {
                rows.row([
                    Value::Text(t.hash.clone()),
                    Value::Text(j.tokens.grant_id.clone()),
                    Value::Str(t.kind),
                    Value::Text(t.scope.clone()),
                    Value::I64(now),
                    Value::I64(t.expires_at),
                ]);
            }
            Written::Stored
        })
        .collect();
    rows.flush(&mut tx, db.engine()).await?;
    let events: Vec<Event> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Written::Stored)
        .map(|(j, _)| j.tokens.event.clone())
        .collect();
    ledger.append_in(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(outcomes)
}
