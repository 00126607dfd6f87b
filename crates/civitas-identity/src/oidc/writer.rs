//! Group commit for issued tokens. Every token response writes: a refresh moves its grant's
//! rotation on by one generation (a compare-and-set, so that of two requests with one token
//! only one wins); a code exchange checks that its grant is still alive. One synced commit
//! per response would cap the token endpoint at the disk's commit rate; instead one writer
//! task takes every request waiting at the moment and commits them together, each with its
//! own outcome. The `identity.tokens_issued` events go into the same transaction (the
//! ledger's outbox), so tokens are never handed out without their event, nor logged without
//! being issued.

use std::collections::HashSet;

use civitas_ledger::{Event, Ledger};
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use tokio::sync::{mpsc, oneshot};

use super::{OidcError, Provider};

/// The most requests committed together.
const MAX_BATCH: usize = 256;

/// The tokens of one response.
pub(crate) struct NewTokens {
    /// The grant they belong to; nothing is written when it has been revoked.
    pub grant_id: String,
    /// The refresh token's generation this response consumes (refresh grant); nothing is
    /// written when the grant has moved past it meanwhile.
    pub consumes: Option<i64>,
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

/// Runs `sql`, whose only parameters are an `IN` list (written `{list}`) of `values`, and
/// returns column `column` of every row. The list is padded to a power of two
/// with a value no row has, so that few distinct statements are ever prepared.
async fn in_list(
    conn: &mut civitas_store::sqlx::AnyConnection,
    sql: &str,
    values: &[&str],
    column: &str,
) -> Result<HashSet<String>, OidcError> {
    let width = values.len().next_power_of_two();
    let sql = sql.replace("{list}", &civitas_store::marks(1, width));
    let mut q = sqlx::query(&sql);
    for i in 0..width {
        q = q.bind(values.get(i).copied().unwrap_or(""));
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|row| Ok(row.try_get::<String, _>(column)?))
        .collect()
}

/// Moves each live grant named in `wanted` from the generation given with it to the next,
/// in one statement; returns the (grant, generation) pairs that moved. The pairs are
/// distinct; like `in_list`, their number is padded to a power of two.
async fn rotate(
    conn: &mut civitas_store::sqlx::AnyConnection,
    wanted: &[(&str, i64)],
) -> Result<HashSet<(String, i64)>, OidcError> {
    let width = wanted.len().next_power_of_two();
    let ids = (0..width)
        .map(|i| format!("${}", 2 * i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let pairs = (0..width)
        .map(|i| {
            format!(
                "(grant_id = ${} AND refresh_generation = ${})",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    // The IN list lets both engines find the rows by the primary key; the pairs pick the
    // generation.
    let sql = format!(
        "UPDATE oidc_grants SET refresh_generation = refresh_generation + 1
         WHERE revoked_at IS NULL AND grant_id IN ({ids}) AND ({pairs})
         RETURNING grant_id, refresh_generation"
    );
    let mut q = sqlx::query(&sql);
    for i in 0..width {
        let (id, generation) = wanted.get(i).copied().unwrap_or(("", -1));
        q = q.bind(id).bind(generation);
    }
    q.fetch_all(conn)
        .await?
        .iter()
        .map(|row| {
            let moved_to: i64 = row.try_get("refresh_generation")?;
            Ok((row.try_get::<String, _>("grant_id")?, moved_to - 1))
        })
        .collect()
}

async fn write(db: &Db, ledger: &Ledger, batch: &[Job]) -> Result<Vec<Written>, OidcError> {
    let mut tx = db.begin_write().await?;
    // Refresh grants: move each grant on from the generation its token carries, if the
    // grant is alive and still there. The same token twice in a batch is tried once.
    let mut wanted: Vec<(&str, i64)> = Vec::new();
    for j in batch {
        if let Some(generation) = j.tokens.consumes {
            let pair = (j.tokens.grant_id.as_str(), generation);
            if !wanted.contains(&pair) {
                wanted.push(pair);
            }
        }
    }
    let mut won = HashSet::new();
    if !wanted.is_empty() {
        won = rotate(&mut tx, &wanted).await?;
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
            &fresh,
            "grant_id",
        )
        .await?;
    }
    let outcomes: Vec<Written> = batch
        .iter()
        .map(|j| {
            // A token presented twice in one batch is won by the first request only.
            let stored = match j.tokens.consumes {
                Some(generation) => won.remove(&(j.tokens.grant_id.clone(), generation)),
                None => alive.contains(j.tokens.grant_id.as_str()),
            };
            if stored {
                Written::Stored
            } else {
                Written::Refused
            }
        })
        .collect();
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
