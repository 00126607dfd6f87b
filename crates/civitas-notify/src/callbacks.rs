//! Delivery-status callbacks: when a message reaches its final status, the service that sent
//! it is told at the HTTPS address it registered, as GOV.UK Notify tells it: `POST` of
//! `{id, reference, to, status, created_at, completed_at, sent_at, notification_type,
//! template_id, template_version}` with `Authorization: Bearer <the service's token>`. The
//! body is also signed: `X-Civitas-Signature: sha256=<hex>`, HMAC-SHA256 of the body under
//! the same token, so a receiver can check that the body is the one Civitas sent.
//!
//! A callback is queued in the same transaction as the status it reports, so none is lost;
//! a deliverer posts due ones (several nodes share the queue on PostgreSQL), tries a failed
//! one again after a doubling wait (10 s to an hour) and gives up after 24 hours.

use std::time::Duration;

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Engine, Script, Value as Sql};

use crate::provider::{SIGNATURE_HEADER, rank, sign};
use crate::{Notify, NotifyError};

/// How long a claim holds a callback.
const CLAIM_MS: i64 = 2 * 60 * 1000;
const BATCH: i64 = 50;
const FIRST_WAIT_MS: i64 = 10 * 1000;
const MAX_WAIT_MS: i64 = 60 * 60 * 1000;
const GIVE_UP_MS: i64 = 24 * 60 * 60 * 1000;

/// What a callback reports about a notification.
pub(crate) struct Reported {
    pub id: String,
    pub service_id: String,
    pub reference: Option<String>,
    /// The recipient as the sender gave it.
    pub to: String,
    pub kind: String,
    pub template_id: String,
    pub template_version: i64,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
}

/// Notify's time format: `2026-11-23T06:32:31.123000Z`.
pub fn notify_time(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.format(&format).ok()
}

impl Notify {
    /// Sets where the service's delivery-status callbacks go: an `https://` address (or
    /// `http://` on this machine, for development) and the bearer token it expects, at
    /// least 10 characters as Notify asks (`notify.callback_set`, without the token).
    pub async fn set_callback(
        &self,
        service_id: &str,
        url: &str,
        token: &str,
        actor: &str,
    ) -> Result<(), NotifyError> {
        let parsed = url
            .parse::<reqwest::Url>()
            .map_err(|_| NotifyError::Invalid("the callback address is not a URL".into()))?;
        let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !(parsed.scheme() == "https" || (parsed.scheme() == "http" && local)) {
            return Err(NotifyError::Invalid(
                "the callback address must start with https://".into(),
            ));
        }
        if token.len() < 10 {
            return Err(NotifyError::Invalid(
                "the bearer token must be at least 10 characters".into(),
            ));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO notify_callbacks (service_id, url, bearer_token, created_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (service_id) DO UPDATE SET url = excluded.url, bearer_token = excluded.bearer_token, created_ms = excluded.created_ms",
            vec![
                Sql::Text(service_id.into()),
                Sql::Text(url.into()),
                Sql::Text(token.into()),
                Sql::I64(now_ms()),
            ],
        );
        let event = Event::new(
            "notify.callback_set",
            actor,
            &format!("notify/service/{service_id}"),
        )
        .with("url", url.to_string());
        self.ledger.append_with(&event, w).await?;
        Ok(())
    }

    /// Adds to `w` the callback that reports `status` of notification `id`, when the
    /// status is final and its service registered a callback (one query: the
    /// notification with its service's callback address).
    pub(crate) async fn status_changed(
        &self,
        w: &mut Script,
        id: &str,
        status: &str,
        at_ms: i64,
    ) -> Result<(), NotifyError> {
        if rank(status) < 4 {
            return Ok(());
        }
        let Some(row) = sqlx::query(
            "SELECT n.service_id, n.reference, n.recipient, n.kind, n.template_id, n.template_version, n.created_ms, n.sent_ms, c.url
             FROM notify_notifications n JOIN notify_callbacks c ON c.service_id = n.service_id WHERE n.id = $1",
        )
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        else {
            return Ok(());
        };
        let reported = Reported {
            id: id.to_string(),
            service_id: row.try_get("service_id")?,
            reference: row.try_get("reference")?,
            to: row.try_get("recipient")?,
            kind: row.try_get("kind")?,
            template_id: row.try_get("template_id")?,
            template_version: row.try_get("template_version")?,
            created_ms: row.try_get("created_ms")?,
            sent_ms: row.try_get("sent_ms")?,
        };
        push_callback(w, &reported, status, at_ms, row.try_get("url")?);
        Ok(())
    }

    /// Adds to `w` the callback that reports `status` of `n` (not yet stored), when its
    /// service registered a callback and the status is final.
    pub(crate) async fn queue_callback(
        &self,
        w: &mut Script,
        n: &Reported,
        status: &str,
        at_ms: i64,
    ) -> Result<(), NotifyError> {
        if rank(status) < 4 {
            return Ok(());
        }
        let url = sqlx::query_scalar::<_, String>(
            "SELECT url FROM notify_callbacks WHERE service_id = $1",
        )
        .bind(&n.service_id)
        .fetch_optional(self.db.pool())
        .await?;
        if let Some(url) = url {
            push_callback(w, n, status, at_ms, url);
        }
        Ok(())
    }

    /// Posts the callbacks that are due; how many were claimed.
    pub async fn deliver_callbacks_batch(
        &self,
        http: &reqwest::Client,
    ) -> Result<usize, NotifyError> {
        let skip_locked = match self.db.engine() {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let now = now_ms();
        // The claim moves the callback's next attempt past the claim: a node that stops
        // holding it leaves it to be claimed again then.
        let rows = sqlx::query(&format!(
            "UPDATE notify_callback_queue SET claimed_ms = $1, next_attempt_ms = $2
             WHERE id IN (SELECT id FROM notify_callback_queue WHERE next_attempt_ms <= $1
                          ORDER BY next_attempt_ms LIMIT $3{skip_locked})
             RETURNING id, url, body, attempts, created_ms, service_id"
        ))
        .bind(now)
        .bind(now + CLAIM_MS)
        .bind(BATCH)
        .fetch_all(&mut *self.db.write_conn().await?)
        .await?;
        let claim = now;
        let mut sends = tokio::task::JoinSet::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let body: String = r.try_get("body")?;
            let attempts: i64 = r.try_get("attempts")?;
            let created_ms: i64 = r.try_get("created_ms")?;
            let service_id: String = r.try_get("service_id")?;
            // The address and token as they are now, together: a service that changed them
            // wants the new ones, and a new token never goes to an old address.
            let target: Option<(String, String)> = sqlx::query_as(
                "SELECT url, bearer_token FROM notify_callbacks WHERE service_id = $1",
            )
            .bind(&service_id)
            .fetch_optional(self.db.pool())
            .await?;
            let http = http.clone();
            sends.spawn(async move {
                let outcome = match target {
                    None => Err("the service no longer has a callback".to_string()),
                    Some((url, token)) => post(&http, &url, &token, body).await,
                };
                (id, attempts, created_ms, outcome)
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((id, attempts, created_ms, outcome)) = done else {
                continue;
            };
            let now = now_ms();
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "DELETE FROM notify_callback_queue WHERE id = $1 AND claimed_ms = $2",
                    )
                    .bind(&id)
                    .bind(claim)
                    .execute(&mut *self.db.write_conn().await?)
                    .await?;
                }
                Err(e) if now - created_ms > GIVE_UP_MS => {
                    tracing::warn!(callback = %id, error = %e, "status callback given up");
                    sqlx::query(
                        "DELETE FROM notify_callback_queue WHERE id = $1 AND claimed_ms = $2",
                    )
                    .bind(&id)
                    .bind(claim)
                    .execute(&mut *self.db.write_conn().await?)
                    .await?;
                }
                Err(e) => {
                    let wait = (FIRST_WAIT_MS << attempts.clamp(0, 20)).min(MAX_WAIT_MS);
                    tracing::warn!(callback = %id, error = %e, wait_ms = wait, "status callback failed; trying again later");
                    sqlx::query("UPDATE notify_callback_queue SET attempts = attempts + 1, next_attempt_ms = $1 WHERE id = $2 AND claimed_ms = $3")
                        .bind(now + wait)
                        .bind(&id)
                        .bind(claim)
                        .execute(&mut *self.db.write_conn().await?)
                        .await?;
                }
            }
        }
        Ok(rows.len())
    }

    /// Posts callbacks until `stop` turns true, at least every second.
    pub async fn deliver_callbacks(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for status callbacks");
                return;
            }
        };
        while !*stop.borrow() {
            match self.deliver_callbacks_batch(&http).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "status callbacks failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The statement that queues the callback reporting `status` of `n` to `url`.
fn push_callback(w: &mut Script, n: &Reported, status: &str, at_ms: i64, url: String) {
    let body = serde_json::json!({
        "id": n.id,
        "reference": n.reference,
        "to": n.to,
        // A letter's, as Notify shows it.
        "status": match (n.kind.as_str(), status) {
            ("letter", "delivered") => "received",
            (_, s) => s,
        },
        "created_at": notify_time(n.created_ms),
        "completed_at": notify_time(at_ms),
        "sent_at": n.sent_ms.and_then(notify_time),
        "notification_type": n.kind,
        "template_id": n.template_id,
        "template_version": n.template_version,
    });
    w.push(
        "INSERT INTO notify_callback_queue (id, service_id, notification_id, url, body, attempts, next_attempt_ms, claimed_ms, created_ms) VALUES (?, ?, ?, ?, ?, 0, ?, NULL, ?)",
        vec![
            Sql::Text(uuid::Uuid::new_v4().to_string()),
            Sql::Text(n.service_id.clone()),
            Sql::Text(n.id.clone()),
            Sql::Text(url),
            Sql::Text(body.to_string()),
            Sql::I64(now_ms()),
            Sql::I64(now_ms()),
        ],
    );
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: String) -> Result<(), String> {
    let signature = sign(token.as_bytes(), body.as_bytes());
    let answer = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the service answered {}", answer.status()))
    }
}
