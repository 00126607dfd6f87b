//! Delivery of e-mail over SMTP (lettre), to any SMTP server, from a durable queue: the
//! notifications table itself. A deliverer claims a batch of `created` e-mail (live and team
//! keys') by moving it to `sending` in one statement (on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so several nodes share the queue without sending one twice),
//! hands each to the server, and settles it: `delivered` when the server accepted it,
//! `permanent-failure` when it refused it for good (5xx), `temporary-failure` otherwise.
//! A message left `sending` by a node that stopped is claimed again after ten minutes.
//! Each status change is logged (`notify.status`, under the recipient's tag).

use std::time::Duration;

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Engine, Script, Value as Sql};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::{Notify, NotifyError};

/// How long a claimed message may stay `sending` before another deliverer takes it.
const STUCK_MS: i64 = 10 * 60 * 1000;
/// Messages claimed at a time.
const BATCH: i64 = 50;

/// An SMTP server to send through, and the sender's address.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// From `notify.smtp_url` (`smtp://host:port`, `?tls=required` for STARTTLS,
    /// `smtps://` for TLS, `user:password@` for authentication) and `notify.from`.
    pub fn new(url: &str, from: &str) -> Result<Smtp, NotifyError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| NotifyError::Invalid(format!("notify.smtp_url: {e}")))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = from
            .parse()
            .map_err(|e| NotifyError::Invalid(format!("notify.from: {e}")))?;
        Ok(Smtp { transport, from })
    }
}

/// A claimed message.
struct Claimed {
    id: String,
    recipient: String,
    subject: String,
    body: String,
}

impl Notify {
    /// Claims up to `BATCH` e-mail messages waiting to be sent.
    async fn claim_email(&self) -> Result<Vec<Claimed>, NotifyError> {
        let skip_locked = match self.db.engine() {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let now = now_ms();
        let rows = sqlx::query(&format!(
            "UPDATE notify_notifications SET status = 'sending', sent_ms = $1
             WHERE id IN (SELECT id FROM notify_notifications
                          WHERE kind = 'email' AND key_type <> 'test'
                            AND (status = 'created' OR (status = 'sending' AND sent_ms < $2))
                          ORDER BY created_ms LIMIT $3{skip_locked})
             RETURNING id, recipient, subject, body"
        ))
        .bind(now)
        .bind(now - STUCK_MS)
        .bind(BATCH)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    recipient: r.try_get("recipient")?,
                    subject: r
                        .try_get::<Option<String>, _>("subject")?
                        .unwrap_or_default(),
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Settles a message that was `sending` at `status`, logged under its recipient's tag.
    async fn settle(&self, id: &str, recipient: &str, status: &str) -> Result<(), NotifyError> {
        let mut w = Script::new();
        w.push(
            "UPDATE notify_notifications SET status = ?, completed_ms = ? WHERE id = ? AND status = 'sending'",
            vec![
                Sql::Text(status.into()),
                Sql::I64(now_ms()),
                Sql::Text(id.into()),
            ],
        );
        let tag = self
            .ledger
            .subject_secret(&format!("notify-recipient:{recipient}"))
            .await?
            .tag();
        let event = Event::new(
            "notify.status",
            "system",
            &format!("notify/notification/{id}"),
        )
        .about(tag)
        .with("status", status.to_string());
        match self.ledger.append_with(&event, w).await {
            // Settled by another deliverer meanwhile: its status stands.
            Ok(_) | Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one batch of waiting e-mail; how many were claimed.
    pub async fn deliver_email_batch(&self, smtp: &Smtp) -> Result<usize, NotifyError> {
        let claimed = self.claim_email().await?;
        for m in &claimed {
            let status = match send(smtp, m).await {
                Ok(()) => "delivered",
                Err(Failure::Permanent(e)) => {
                    tracing::warn!(notification = %m.id, error = %e, "e-mail refused for good");
                    "permanent-failure"
                }
                Err(Failure::Temporary(e)) => {
                    tracing::warn!(notification = %m.id, error = %e, "e-mail not delivered");
                    "temporary-failure"
                }
            };
            self.settle(&m.id, &m.recipient, status).await?;
        }
        Ok(claimed.len())
    }

    /// Delivers e-mail for as long as the task runs: a batch whenever a message is accepted
    /// (`Notify::accept` wakes it) and at least every second.
    pub async fn deliver_email(self, smtp: Smtp) {
        loop {
            match self.deliver_email_batch(&smtp).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "e-mail delivery failed"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}

enum Failure {
    Permanent(String),
    Temporary(String),
}

async fn send(smtp: &Smtp, m: &Claimed) -> Result<(), Failure> {
    let to: Mailbox = m
        .recipient
        .parse()
        .map_err(|e: lettre::address::AddressError| Failure::Permanent(e.to_string()))?;
    let message = Message::builder()
        .from(smtp.from.clone())
        .to(to)
        .subject(m.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(m.body.clone())
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    match smtp.transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
        Err(e) => Err(Failure::Temporary(e.to_string())),
    }
}
