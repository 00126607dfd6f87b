//! The SMS and print providers, reached over HTTP, and the delivery receipts they send back.
//!
//! Civitas speaks one small provider protocol; an adapter in front of a commercial SMS
//! gateway or a print house speaks it too. Each message either way is signed: the header
//! `X-Civitas-Signature: sha256=<hex>` is HMAC-SHA256 of the body's bytes under the secret
//! the operator shares with the provider (`notify.provider_secret`).
//!
//! - A text message: `POST <notify.sms_url>` with `{"id", "to", "text", "sender"}`.
//! - A letter: `POST <notify.letter_url>` with the PDF as the body
//!   (`Content-Type: application/pdf`) and the notification's id in `X-Civitas-Notification`.
//! - Either is answered `2xx` with `{"reference": "<the provider's id>"}` when taken;
//!   `400` or `422` when the recipient can never be reached (the message fails for good);
//!   anything else, or no answer, is tried again later.
//! - A receipt: `POST /notify/receipts` with `{"id", "reference", "status", "at"}`, `at` in
//!   RFC 3339, when the status came about at the provider. Receipts may come in any order
//!   and more than once: each is kept as an event, and the message's status is the one of
//!   highest rank (`pending` < `sent` < final), the latest of a rank, and a final status
//!   stays: a late `pending` never moves a `delivered` message back, nor does a
//!   `temporary-failure` after it.

use std::time::Duration;

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Script, Value as Sql};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::delivery::Failure;
use crate::{Channel, Notify, NotifyError};

/// The signature header of the provider protocol.
pub const SIGNATURE_HEADER: &str = "x-civitas-signature";
/// The header that names a letter's notification.
pub const NOTIFICATION_HEADER: &str = "x-civitas-notification";

/// A provider's HTTP endpoints and the secret shared with it.
#[derive(Clone)]
pub struct Provider {
    http: reqwest::Client,
    sms_url: Option<String>,
    letter_url: Option<String>,
    secret: std::sync::Arc<[u8]>,
}

impl Provider {
    /// Text messages to `sms_url` and letters to `letter_url` (either may be absent:
    /// those messages wait), signed with `secret`.
    pub fn new(
        sms_url: Option<&str>,
        letter_url: Option<&str>,
        secret: &[u8],
    ) -> Result<Provider, NotifyError> {
        if secret.len() < 16 {
            return Err(NotifyError::Invalid(
                "notify.provider_secret: at least 16 bytes".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| NotifyError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Provider {
            http,
            sms_url: sms_url.map(str::to_string),
            letter_url: letter_url.map(str::to_string),
            secret: secret.into(),
        })
    }

    /// Whether messages of `channel` have somewhere to go.
    pub fn serves(&self, channel: Channel) -> bool {
        match channel {
            Channel::Sms => self.sms_url.is_some(),
            Channel::Letter => self.letter_url.is_some(),
            Channel::Email => false,
        }
    }

    /// The signature header's value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.secret, body)
    }

    /// Whether `signature` (the header's value) signs `body`.
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        verify(&self.secret, body, signature)
    }

    /// Hands a text message to the SMS provider; the provider's reference.
    pub(crate) async fn send_sms(&self, id: &str, to: &str, text: &str) -> Result<String, Failure> {
        let url = self
            .sms_url
            .as_deref()
            .ok_or(Failure::Ours("no SMS provider".into()))?;
        let body = serde_json::to_vec(&serde_json::json!({
            "id": id, "to": to, "text": text, "sender": "Civitas",
        }))
        .map_err(|e| Failure::Ours(e.to_string()))?;
        self.post(url, body, "application/json", id).await
    }

    /// Hands a letter's PDF to the print provider; the provider's reference.
    pub(crate) async fn send_letter(&self, id: &str, pdf: Vec<u8>) -> Result<String, Failure> {
        let url = self
            .letter_url
            .as_deref()
            .ok_or(Failure::Ours("no print provider".into()))?;
        self.post(url, pdf, "application/pdf", id).await
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        content_type: &str,
        id: &str,
    ) -> Result<String, Failure> {
        let signature = self.sign(&body);
        let answer = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(SIGNATURE_HEADER, signature)
            .header(NOTIFICATION_HEADER, id)
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Ours(format!("the provider did not answer: {e}")))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["reference"].as_str().map(str::to_string))
                .filter(|r| !r.is_empty() && r.len() <= 255)
                .ok_or_else(|| Failure::Ours("the provider's answer has no reference".into())),
            // The provider's words are not logged: they may repeat the number or the text.
            400 | 422 => Err(Failure::Recipient(format!(
                "the provider refused it ({status})"
            ))),
            429 => Err(Failure::Later("the provider asks us to slow down".into())),
            s => Err(Failure::Ours(format!("the provider answered {s}"))),
        }
    }
}

/// A new random secret (244 bits), for a sandbox that only this process talks to.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<hex>`: HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", civitas_ledger::event::hex(&digest))
}

/// Whether `signature` is `sha256=<hex>` of `body` under `secret`, compared in constant
/// time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// A receipt from a provider.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The notification's id.
    pub id: String,
    /// The provider's reference for it.
    #[serde(default)]
    pub reference: Option<String>,
    /// What became of it.
    pub status: String,
    /// When, at the provider (RFC 3339).
    pub at: String,
}

/// How far along a status is: a message's status only moves to a higher rank, or to a
/// later event of the same rank.
pub(crate) fn rank(status: &str) -> i64 {
    match status {
        "created" => 0,
        "sending" => 1,
        "pending" => 2,
        "sent" => 3,
        _ => 4,
    }
}

/// The statuses a provider may report for a channel.
fn reportable(channel: Channel, status: &str) -> bool {
    match channel {
        Channel::Sms => matches!(
            status,
            "pending"
                | "sent"
                | "delivered"
                | "temporary-failure"
                | "permanent-failure"
                | "technical-failure"
        ),
        Channel::Letter => matches!(
            status,
            "delivered" | "permanent-failure" | "technical-failure"
        ),
        Channel::Email => false,
    }
}

impl Notify {
    /// Takes a provider's receipt: kept as an event, and the message's status moved when
    /// the receipt is further along than what is known (`notify.status`, under the
    /// recipient's tag). Whether the status moved.
    pub async fn receipt(&self, r: &Receipt) -> Result<bool, NotifyError> {
        let at_ms =
            time::OffsetDateTime::parse(&r.at, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| NotifyError::Invalid("at is not an RFC 3339 time".into()))?
                // A provider's clock ahead of ours does not date a status in the future.
                .min(now_ms());
        let row = sqlx::query(
            "SELECT kind, key_type, provider_ref, recipient, subject_ref FROM notify_notifications WHERE id = $1",
        )
        .bind(&r.id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| NotifyError::NotFound(format!("no notification {}", r.id)))?;
        let kind: String = row.try_get("kind")?;
        let key_type: String = row.try_get("key_type")?;
        let channel = Channel::parse(&kind).unwrap_or(Channel::Email);
        if key_type == "test" || channel == Channel::Email {
            return Err(NotifyError::NotFound(format!("no notification {}", r.id)));
        }
        let known: Option<String> = row.try_get("provider_ref")?;
        if let (Some(known), Some(given)) = (&known, &r.reference)
            && known != given
        {
            return Err(NotifyError::Invalid(
                "reference is not the provider's reference for this message".into(),
            ));
        }
        if !reportable(channel, &r.status) {
            return Err(NotifyError::Invalid(format!(
                "status {} is not a status of a {} message",
                r.status,
                channel.code()
            )));
        }
        sqlx::query("INSERT INTO notify_status_events (notification_id, status, at_ms, received_ms, source) VALUES ($1, $2, $3, $4, 'provider')")
            .bind(&r.id)
            .bind(&r.status)
            .bind(at_ms)
            .bind(now_ms())
            .execute(&mut *self.db.write_conn().await?)
            .await?;
        let recipient: String = row.try_get("recipient")?;
        let person: Option<String> = row.try_get("subject_ref")?;
        let mut w = Script::new();
        w.push(
            &format!(
                "UPDATE notify_notifications SET status = ?, status_rank = ?, status_ms = ?,
                 completed_ms = CASE WHEN ? = 4 THEN ? ELSE completed_ms END, {}
             WHERE id = ? AND (status_rank < ? OR (status_rank = ? AND status_rank < 4 AND status_ms < ?))",
                crate::delivery::FORGET_OWN
            ),
            vec![
                Sql::Text(r.status.clone()),
                Sql::I64(rank(&r.status)),
                Sql::I64(at_ms),
                Sql::I64(rank(&r.status)),
                Sql::I64(at_ms),
                Sql::Text(r.id.clone()),
                Sql::I64(rank(&r.status)),
                Sql::I64(rank(&r.status)),
                Sql::I64(at_ms),
            ],
        );
        self.status_changed(&mut w, &r.id, &r.status, at_ms).await?;
        let event = Event::new(
            "notify.status",
            "notify-provider",
            &format!("notify/notification/{}", r.id),
        );
        let event = self
            .about_recipient(event, person.as_deref(), &recipient)
            .await?
            .with("status", r.status.clone())
            .with("at_ms", at_ms);
        match self.ledger.append_with(&event, w).await {
            Ok(_) => Ok(true),
            // Not further along than what is known: kept as an event only.
            Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = sign(b"secret", b"{}");
        assert!(verify(b"secret", b"{}", &s));
        assert!(!verify(b"secret", b"{ }", &s));
        assert!(!verify(b"other", b"{}", &s));
        assert!(!verify(b"secret", b"{}", "sha256=zz"));
        assert!(!verify(b"secret", b"{}", &s[7..]));
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(rank("pending") < rank("sent"));
        assert!(rank("sent") < rank("delivered"));
        assert_eq!(rank("delivered"), rank("permanent-failure"));
        assert!(reportable(Channel::Sms, "pending"));
        assert!(!reportable(Channel::Letter, "pending"));
        assert!(!reportable(Channel::Sms, "created"));
    }
}
