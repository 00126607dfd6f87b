//! Delivery, from a durable queue (the notifications table itself): e-mail over SMTP
//! (lettre) to any SMTP server; text messages and letters (rendered as PDF) through a
//! [`Provider`] over HTTP.
//!
//! - A deliverer of each channel claims a batch of due `created` messages (live and team
//!   keys'; emergencies first, then by priority, then oldest) by moving it to `sending` in
//!   one statement (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several nodes share the
//!   queue). The claim's time is its token: a message is settled only by the claim that
//!   holds it, and a deliverer stops sending a batch before its claim runs out (ten
//!   minutes), giving the rest back.
//! - An e-mail is handed to the SMTP server and settled: `delivered` when the server
//!   accepted it; `permanent-failure` when the server said the mailbox does not exist or is
//!   not allowed (550, 551, 553). A text message or letter handed to its provider stays
//!   `sending` with the provider's reference; the provider's receipts move it on
//!   ([`crate::provider`]).
//! - Anything else is our side's or the server's trouble, not the recipient's: the server
//!   unreachable, a 4xx, or a refusal of the sender or of authentication. The message goes
//!   back to the queue with a doubling wait (from 30 s to an hour), and the batch stops,
//!   since the next would fare the same. After 24 hours it ends `technical-failure`
//!   (`temporary-failure` when the server kept answering 4xx for the recipient).
//! - A message left `sending`, not handed on, by a node that stopped is claimed again after
//!   ten minutes. Delivery is therefore at least once: a node stopped between the server's
//!   acceptance and the settling sends that one message again.
//!
//! Each settled status is logged (`notify.status`, under the recipient's tag).

use std::time::Duration;

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Engine, Script, Value as Sql};
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::provider::{Provider, rank};
use crate::{Channel, Notify, NotifyError};

/// Civitas's own messages (one-time codes) are not kept once they reach a final status.
pub(crate) const FORGET_OWN: &str =
    "body = CASE WHEN service_id = '00000000-0000-4000-8000-00000000c1c1' THEN '' ELSE body END";

/// How long a claim holds its messages.
const CLAIM_MS: i64 = 10 * 60 * 1000;
/// A deliverer stops sending a batch this long before its claim runs out.
const CLAIM_MARGIN_MS: i64 = 2 * 60 * 1000;
/// Messages claimed at a time.
const BATCH: i64 = 128;
/// How many of a batch's messages are sent at once (and SMTP connections kept open): one
/// connection's messages wait on the server's answers, and on lettre's writes (the end of
/// each message goes in a segment of its own, which waits for the server's delayed
/// acknowledgement of the text before it: about 40 ms).
const SENDERS: usize = 64;
/// The first wait before trying a message again, doubled each time up to `MAX_WAIT_MS`.
const FIRST_WAIT_MS: i64 = 30 * 1000;
const MAX_WAIT_MS: i64 = 60 * 60 * 1000;
/// How long a message is tried before it fails.
const GIVE_UP_MS: i64 = 24 * 60 * 60 * 1000;

/// An SMTP server to send through, and the sender's address.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// From `notify.smtp_url` (`smtp://host:port`; `?tls=required` for STARTTLS;
    /// `smtps://` for TLS; `user:password@` to authenticate) and `notify.from`.
    pub fn new(url: &str, from: &str) -> Result<Smtp, NotifyError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| NotifyError::Invalid(format!("notify.smtp_url: {e}")))?
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(SENDERS as u32))
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
    /// The address: e-mail address, phone number, or a letter's lines (one a line).
    recipient: String,
    /// The person, when the sender named them by national ID.
    subject_ref: Option<String>,
    subject: String,
    body: String,
    attempts: i64,
    created_ms: i64,
    priority: i64,
    /// When it was to go (its scheduled time, else when it was accepted).
    due_ms: i64,
}

/// How a send went wrong.
pub(crate) enum Failure {
    /// The recipient's address will never work (550, 551, 553).
    Recipient(String),
    /// The server answered 4xx about this message: try again later.
    Later(String),
    /// Our side: the server unreachable, or refusing us (authentication, relaying).
    Ours(String),
}

impl Notify {
    /// Claims up to `BATCH` messages of `channel` that are due; the claim's time and the
    /// messages.
    async fn claim(&self, channel: Channel) -> Result<(i64, Vec<Claimed>), NotifyError> {
        let skip_locked = match self.db.engine() {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let now = now_ms();
        let rows = sqlx::query(&format!(
            "UPDATE notify_notifications SET status = 'sending', sent_ms = $1, status_rank = 1, status_ms = $1
             WHERE id IN (SELECT id FROM notify_notifications
                          WHERE kind = $4 AND key_type <> 'test'
                            AND ((status = 'created' AND next_attempt_ms <= $1)
                                 OR (status = 'sending' AND provider_ref IS NULL AND sent_ms < $2))
                          ORDER BY priority DESC, created_ms LIMIT $3{skip_locked})
             RETURNING id, COALESCE(address, recipient) AS recipient, subject_ref, subject, body, attempts, created_ms, priority, COALESCE(scheduled_ms, created_ms) AS due_ms"
        ))
        .bind(now)
        .bind(now - CLAIM_MS)
        .bind(BATCH)
        .bind(channel.code())
        .fetch_all(&mut *self.db.write_conn().await?)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    recipient: r.try_get("recipient")?,
                    subject_ref: r.try_get("subject_ref")?,
                    subject: r
                        .try_get::<Option<String>, _>("subject")?
                        .unwrap_or_default(),
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                    created_ms: r.try_get("created_ms")?,
                    priority: r.try_get("priority")?,
                    due_ms: r.try_get("due_ms")?,
                })
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        // RETURNING does not keep the subquery's order.
        claimed.sort_by_key(|c| (-c.priority, c.created_ms));
        Ok((now, claimed))
    }

    /// Settles a message this claim holds: at a final `status`, or (`handed`, with the
    /// provider's reference) still `sending`, now the provider's to report on. Logged under
    /// its recipient's tag.
    async fn settle(
        &self,
        m: &Claimed,
        claim: i64,
        status: &str,
        handed: Option<&str>,
    ) -> Result<(), NotifyError> {
        let now = now_ms();
        let mut w = Script::new();
        match handed {
            // A receipt may already have come: the status is then left as it said.
            Some(reference) => w.push(
                "UPDATE notify_notifications SET provider_ref = ?, attempts = attempts + 1 WHERE id = ? AND sent_ms = ? AND provider_ref IS NULL",
                vec![
                    Sql::Text(reference.into()),
                    Sql::Text(m.id.clone()),
                    Sql::I64(claim),
                ],
            ),
            None => {
                w.push(
                    &format!("UPDATE notify_notifications SET status = ?, status_rank = ?, status_ms = ?, completed_ms = ?, attempts = attempts + 1, {FORGET_OWN} WHERE id = ? AND status = 'sending' AND sent_ms = ?"),
                    vec![
                        Sql::Text(status.into()),
                        Sql::I64(rank(status)),
                        Sql::I64(now),
                        Sql::I64(now),
                        Sql::Text(m.id.clone()),
                        Sql::I64(claim),
                    ],
                );
                self.status_changed(&mut w, &m.id, status, now).await?;
            }
        }
        // Under the tag the message was accepted under.
        let event = Event::new(
            "notify.status",
            "system",
            &format!("notify/notification/{}", m.id),
        );
        let event = self
            .about_recipient(event, m.subject_ref.as_deref(), &m.recipient)
            .await?
            .with("status", status.to_string());
        match self.ledger.append_with(&event, w).await {
            // No longer this claim's: another deliverer settles it.
            Ok(_) | Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts messages of this claim back in the queue, due at `due_ms`; `tried` counts an
    /// attempt.
    async fn release(
        &self,
        ids: &[&str],
        claim: i64,
        due_ms: i64,
        tried: bool,
    ) -> Result<(), NotifyError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE notify_notifications SET status = 'created', sent_ms = NULL, next_attempt_ms = $1, attempts = attempts + $2
             WHERE status = 'sending' AND sent_ms = $3 AND id IN ({})",
            civitas_store::marks(4, ids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(due_ms)
            .bind(i64::from(tried))
            .bind(claim);
        for id in ids {
            q = q.bind(*id);
        }
        q.execute(&mut *self.db.write_conn().await?).await?;
        Ok(())
    }

    /// Sends one batch of due messages of `channel` through `carrier`, stopping between
    /// messages when `stop` says so; how many messages were claimed.
    pub async fn deliver_batch(
        &self,
        channel: Channel,
        carrier: &Carrier,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<usize, NotifyError> {
        Ok(self.deliver_some(channel, carrier, stop).await?.0)
    }

    /// [`Notify::deliver_batch`], and whether a message was put back to be tried later (the
    /// server's trouble or ours: the deliverer then waits instead of claiming again).
    async fn deliver_some(
        &self,
        channel: Channel,
        carrier: &Carrier,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(usize, bool), NotifyError> {
        let (claim, claimed) = self.claim(channel).await?;
        for range in waves(&claimed) {
            let wave = &claimed[range.clone()];
            let rest: Vec<&str> = claimed[range.start..]
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            if *stop.borrow() || now_ms() > claim + CLAIM_MS - CLAIM_MARGIN_MS {
                // Stopping, or the claim is running out: what is left goes back, untried.
                self.release(&rest, claim, now_ms(), false).await?;
                break;
            }
            // A wave's messages go at once, each settled as its answer comes (their ledger
            // events share the sequencer's commits).
            let later = futures_util::future::join_all(
                wave.iter()
                    .map(|m| self.send_and_settle(channel, carrier, m, claim)),
            )
            .await;
            let later: Vec<(&str, i64)> = later.into_iter().flatten().collect();
            if let Some(wait) = later.iter().map(|(_, w)| *w).min() {
                // The server's trouble or ours: those are tried again later, and so is the
                // rest of the batch, which would fare the same, untried (so after the
                // shortest of their waits).
                for (id, wait) in &later {
                    self.release(&[id], claim, now_ms() + wait, true).await?;
                }
                self.release(&rest[wave.len()..], claim, now_ms() + wait, false)
                    .await?;
                return Ok((claimed.len(), true));
            }
        }
        Ok((claimed.len(), false))
    }

    /// Sends one claimed message and settles its status; when it is to be tried again
    /// later, its id and how long to wait.
    async fn send_and_settle<'a>(
        &self,
        channel: Channel,
        carrier: &Carrier,
        m: &'a Claimed,
        claim: i64,
    ) -> Option<(&'a str, i64)> {
        let what = channel.code();
        let outcome = carrier.send(channel, m).await;
        let failed_for = now_ms() - m.due_ms;
        let settled = match outcome {
            Ok(None) => self.settle(m, claim, "delivered", None).await,
            Ok(Some(reference)) => self.settle(m, claim, "sending", Some(&reference)).await,
            Err(Failure::Recipient(e)) => {
                tracing::warn!(notification = %m.id, channel = what, error = %e, "refused for good");
                self.settle(m, claim, "permanent-failure", None).await
            }
            Err(Failure::Later(e) | Failure::Ours(e)) if failed_for > GIVE_UP_MS => {
                tracing::warn!(notification = %m.id, channel = what, error = %e, "given up");
                self.settle(m, claim, "technical-failure", None).await
            }
            Err(Failure::Later(e) | Failure::Ours(e)) => {
                let wait = (FIRST_WAIT_MS << m.attempts.clamp(0, 20)).min(MAX_WAIT_MS);
                tracing::warn!(notification = %m.id, channel = what, error = %e, wait_ms = wait, "not sent; trying again later");
                return Some((m.id.as_str(), wait));
            }
        };
        if let Err(e) = settled {
            // Sent, but not settled: the claim runs out and it is tried again.
            tracing::error!(notification = %m.id, channel = what, error = %e, "sent but not recorded");
        }
        None
    }

    /// Delivers messages of `channel` until `stop` turns true: a batch whenever one is
    /// accepted (`Notify::accept` wakes it) and at least every second. When told to stop,
    /// it finishes the message it is sending and gives the rest of its batch back.
    pub async fn deliver(
        self,
        channel: Channel,
        carrier: Carrier,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            match self.deliver_some(channel, &carrier, &stop).await {
                Ok((n, false)) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(channel = channel.code(), error = %e, "delivery failed"),
            }
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(1), self.wake[wake_index(channel)].notified()) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// A claimed batch (most urgent first) in waves sent one after the other: at most
/// [`SENDERS`] messages, all of one priority, so that every more urgent message has gone
/// before a less urgent one starts.
fn waves(claimed: &[Claimed]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, m) in claimed.iter().enumerate() {
        match out.last_mut() {
            Some(w) if w.len() < SENDERS && claimed[w.start].priority == m.priority => {
                w.end = i + 1;
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The deliverer to wake for a message of `channel`.
pub(crate) fn wake_index(channel: Channel) -> usize {
    match channel {
        Channel::Email => 0,
        Channel::Sms => 1,
        Channel::Letter => 2,
    }
}

/// What carries a channel's messages.
#[derive(Clone)]
pub enum Carrier {
    /// An SMTP server (e-mail).
    Smtp(Smtp),
    /// A provider over HTTP (text messages, letters).
    Provider(Provider),
}

impl Carrier {
    /// Sends `m`: `None` when it is delivered, the provider's reference when handed on.
    async fn send(&self, channel: Channel, m: &Claimed) -> Result<Option<String>, Failure> {
        match (self, channel) {
            (Carrier::Smtp(smtp), Channel::Email) => send(smtp, m).await.map(|()| None),
            (Carrier::Provider(p), Channel::Sms) => {
                p.send_sms(&m.id, &m.recipient, &m.body).await.map(Some)
            }
            (Carrier::Provider(p), Channel::Letter) => {
                let lines: Vec<String> = m.recipient.lines().map(str::to_string).collect();
                let pdf = crate::letter::pdf(&lines, &m.subject, &m.body, m.created_ms);
                p.send_letter(&m.id, pdf).await.map(Some)
            }
            _ => Err(Failure::Ours(format!(
                "nothing carries {} messages",
                channel.code()
            ))),
        }
    }
}

async fn send(smtp: &Smtp, m: &Claimed) -> Result<(), Failure> {
    let to: Mailbox = m
        .recipient
        .parse()
        .map_err(|e: lettre::address::AddressError| Failure::Recipient(e.to_string()))?;
    let message = Message::builder()
        .from(smtp.from.clone())
        .to(to)
        .subject(m.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(m.body.clone())
        .map_err(|e| Failure::Ours(e.to_string()))?;
    match smtp.transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let code = e.status().map(u16::from);
            Err(match code {
                Some(550 | 551 | 553) => Failure::Recipient(e.to_string()),
                Some(c) if (400..500).contains(&c) => Failure::Later(e.to_string()),
                _ => Failure::Ours(e.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(priority: i64) -> Claimed {
        Claimed {
            id: String::new(),
            recipient: String::new(),
            subject_ref: None,
            subject: String::new(),
            body: String::new(),
            attempts: 0,
            created_ms: 0,
            priority,
            due_ms: 0,
        }
    }

    #[test]
    fn waves_hold_one_priority_and_at_most_the_senders() {
        let mut batch: Vec<Claimed> = vec![claimed(2), claimed(1), claimed(1)];
        batch.extend((0..SENDERS + 1).map(|_| claimed(0)));
        let n = batch.len();
        assert_eq!(
            waves(&batch),
            vec![0..1, 1..3, 3..3 + SENDERS, 3 + SENDERS..n]
        );
        assert!(waves(&[]).is_empty());
    }
}
