//! How identity reaches a person outside the site: one-time codes and alerts. The outbound
//! channel sits behind [`Courier`]; [`MailSink`] is the development sink, which keeps the
//! messages in the database for `/dev/mail` instead of sending them.

use std::future::Future;
use std::pin::Pin;

use civitas_store::Db;
use civitas_store::sqlx::{self, Row};

use crate::IdentityError;
use crate::secret::{now_ms, token};

/// A boxed future, so the trait stays object-safe.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), IdentityError>> + Send + 'a>>;

/// Delivers a short message to an address (e-mail or phone number).
pub trait Courier: Send + Sync {
    /// Sends `subject` and `body` to `to`.
    fn send<'a>(&'a self, to: &'a str, subject: &'a str, body: &'a str) -> SendFuture<'a>;
}

/// The development mail sink: messages are stored, not sent.
#[derive(Clone)]
pub struct MailSink {
    db: Db,
}

/// A message kept by the sink.
#[derive(Debug, Clone)]
pub struct SentMessage {
    /// When it was "sent", in Unix milliseconds.
    pub created_ms: i64,
    /// The address it was for.
    pub recipient: String,
    /// Its subject line.
    pub subject: String,
    /// Its text.
    pub body: String,
}

impl MailSink {
    /// A sink that keeps messages in `db`.
    pub fn new(db: Db) -> MailSink {
        MailSink { db }
    }

    /// The most recent messages, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<SentMessage>, IdentityError> {
        let rows = sqlx::query(
            "SELECT created_ms, recipient, subject, body FROM dev_mail ORDER BY created_ms DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SentMessage {
                    created_ms: r.try_get("created_ms")?,
                    recipient: r.try_get("recipient")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }
}

impl Courier for MailSink {
    fn send<'a>(&'a self, to: &'a str, subject: &'a str, body: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO dev_mail (id, created_ms, recipient, subject, body) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token(12))
            .bind(now_ms())
            .bind(to)
            .bind(subject)
            .bind(body)
            .execute(self.db.pool())
            .await?;
            Ok(())
        })
    }
}
