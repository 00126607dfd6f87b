//! The citizen's side: every message a service sends a person by national ID is also in
//! their inbox on the portal (unless they turned the inbox off); each person chooses the
//! channels they take (e-mail, text message, inbox) and may stop a service's non-essential
//! messages. A template marked essential (a legally required notice) still reaches the
//! person: in the inbox when it is on, else on the channel it was sent by, whatever the
//! preferences and unsubscribes.

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Script, Value as Sql};

use crate::{Channel, Language, Notify, NotifyError};

/// The channels a person takes non-essential messages by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preferences {
    /// By e-mail.
    pub email: bool,
    /// By text message.
    pub sms: bool,
    /// In the portal's inbox.
    pub inbox: bool,
    /// The language they read messages in, where the template has it; `None`: the
    /// sender's choice.
    pub language: Option<Language>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            email: true,
            sms: true,
            inbox: true,
            language: None,
        }
    }
}

/// A message in a person's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// The notification's id.
    pub id: String,
    /// The service that sent it.
    pub service_id: String,
    /// Its name.
    pub service_name: String,
    /// The channel it was sent by.
    pub channel: Channel,
    /// Its subject (e-mail), if any.
    pub subject: Option<String>,
    /// Its text.
    pub body: String,
    /// When it was sent (ms).
    pub created_ms: i64,
    /// When the person first opened it (ms).
    pub read_ms: Option<i64>,
}

/// A service that has written to a person, and whether they stopped its non-essential
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The service's id.
    pub service_id: String,
    /// Its name.
    pub name: String,
    /// Whether the person unsubscribed from it.
    pub unsubscribed: bool,
}

/// Where a message to a person goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// By its channel, and to the inbox too when `inbox`.
    Channel { inbox: bool },
    /// To the inbox only: the person does not take this channel.
    InboxOnly,
}

const INBOX_COLUMNS: &str =
    "n.id, n.service_id, s.name, n.kind, n.subject, n.body, n.created_ms, n.read_ms";

fn message_of(r: &civitas_store::sqlx::any::AnyRow) -> Result<InboxMessage, NotifyError> {
    let kind: String = r.try_get("kind")?;
    Ok(InboxMessage {
        id: r.try_get("id")?,
        service_id: r.try_get("service_id")?,
        service_name: r.try_get("name")?,
        channel: Channel::parse(&kind).unwrap_or(Channel::Email),
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_ms: r.try_get("created_ms")?,
        read_ms: r.try_get("read_ms")?,
    })
}

impl Notify {
    /// A person's preferences (all channels until they choose).
    pub async fn preferences(&self, person: &str) -> Result<Preferences, NotifyError> {
        let row = sqlx::query(
            "SELECT email, sms, inbox, lang FROM notify_preferences WHERE subject_ref = $1",
        )
        .bind(person)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            None => Preferences::default(),
            Some(r) => Preferences {
                email: r.try_get::<i64, _>("email")? != 0,
                sms: r.try_get::<i64, _>("sms")? != 0,
                inbox: r.try_get::<i64, _>("inbox")? != 0,
                language: r
                    .try_get::<Option<String>, _>("lang")?
                    .as_deref()
                    .and_then(Language::parse),
            },
        })
    }

    /// Sets a person's preferences (`notify.preferences_changed`, under their tag, with the
    /// channels chosen).
    pub async fn set_preferences(&self, person: &str, p: Preferences) -> Result<(), NotifyError> {
        let mut w = Script::new();
        w.push(
            "INSERT INTO notify_preferences (subject_ref, email, sms, inbox, updated_ms, lang) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (subject_ref) DO UPDATE SET email = excluded.email, sms = excluded.sms, inbox = excluded.inbox, updated_ms = excluded.updated_ms, lang = excluded.lang",
            vec![
                Sql::Text(person.into()),
                Sql::I64(p.email.into()),
                Sql::I64(p.sms.into()),
                Sql::I64(p.inbox.into()),
                Sql::I64(now_ms()),
                p.language.map(|l| l.code().to_string()).into(),
            ],
        );
        let tag = self.ledger.subject_secret_for_event(person).await?.tag();
        let event = Event::new(
            "notify.preferences_changed",
            "citizen",
            "notify/preferences",
        )
        .about(tag)
        .with("email", p.email)
        .with("sms", p.sms)
        .with("inbox", p.inbox)
        .with("language", p.language.map_or("sender", Language::code));
        self.ledger.append_with(&event, w).await?;
        Ok(())
    }

    /// Stops (`stop`) or restarts a service's non-essential messages to a person
    /// (`notify.unsubscribed` or `notify.resubscribed`, under their tag).
    pub async fn unsubscribe(
        &self,
        person: &str,
        service_id: &str,
        stop: bool,
    ) -> Result<(), NotifyError> {
        if self.service(service_id).await?.is_none() {
            return Err(NotifyError::NotFound(format!("no service {service_id}")));
        }
        let mut w = Script::new();
        if stop {
            w.push(
                "INSERT INTO notify_unsubscribes (subject_ref, service_id, created_ms) VALUES (?, ?, ?) ON CONFLICT (subject_ref, service_id) DO NOTHING",
                vec![Sql::Text(person.into()), Sql::Text(service_id.into()), Sql::I64(now_ms())],
            );
        } else {
            w.push(
                "DELETE FROM notify_unsubscribes WHERE subject_ref = ? AND service_id = ?",
                vec![Sql::Text(person.into()), Sql::Text(service_id.into())],
            );
        }
        let tag = self.ledger.subject_secret_for_event(person).await?.tag();
        let kind = if stop {
            "notify.unsubscribed"
        } else {
            "notify.resubscribed"
        };
        let event = Event::new(kind, "citizen", &format!("notify/service/{service_id}")).about(tag);
        match self.ledger.append_with(&event, w).await {
            // Already so: nothing changed.
            Ok(_) | Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The services that have written to a person, by name.
    pub async fn senders(&self, person: &str) -> Result<Vec<Sender>, NotifyError> {
        let rows = sqlx::query(
            "SELECT s.id, s.name, (SELECT COUNT(*) FROM notify_unsubscribes u WHERE u.subject_ref = $1 AND u.service_id = s.id) AS unsubscribed
             FROM notify_services s WHERE s.id IN (SELECT service_id FROM notify_notifications WHERE subject_ref = $1 AND key_type <> 'test')
             ORDER BY s.name",
        )
        .bind(person)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Sender {
                    service_id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    unsubscribed: r.try_get::<i64, _>("unsubscribed")? > 0,
                })
            })
            .collect()
    }

    /// A person's inbox, newest first (the last 200), scheduled messages once due.
    pub async fn inbox(&self, person: &str) -> Result<Vec<InboxMessage>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {INBOX_COLUMNS} FROM notify_notifications n JOIN notify_services s ON s.id = n.service_id
             WHERE n.subject_ref = $1 AND n.in_inbox = 1 AND COALESCE(n.scheduled_ms, 0) <= $2
             ORDER BY n.created_ms DESC, n.id DESC LIMIT 200"
        ))
        .bind(person)
        .bind(now_ms())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(message_of).collect()
    }

    /// One message of a person's inbox, marked read the first time it is opened.
    pub async fn open_message(
        &self,
        person: &str,
        id: &str,
    ) -> Result<Option<InboxMessage>, NotifyError> {
        sqlx::query("UPDATE notify_notifications SET read_ms = $1 WHERE id = $2 AND subject_ref = $3 AND in_inbox = 1 AND read_ms IS NULL")
            .bind(now_ms())
            .bind(id)
            .bind(person)
            .execute(&mut *self.db.write_conn().await?)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {INBOX_COLUMNS} FROM notify_notifications n JOIN notify_services s ON s.id = n.service_id
             WHERE n.id = $1 AND n.subject_ref = $2 AND n.in_inbox = 1 AND COALESCE(n.scheduled_ms, 0) <= $3"
        ))
        .bind(id)
        .bind(person)
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(message_of).transpose()
    }

    /// Where a message of `channel` from `service_id` to `person` goes, or why it cannot.
    pub(crate) async fn route_for(
        &self,
        person: &str,
        p: &Preferences,
        service_id: &str,
        channel: Channel,
        essential: bool,
    ) -> Result<Route, NotifyError> {
        if !essential {
            let stopped = sqlx::query(
                "SELECT 1 FROM notify_unsubscribes WHERE subject_ref = $1 AND service_id = $2",
            )
            .bind(person)
            .bind(service_id)
            .fetch_optional(self.db.pool())
            .await?
            .is_some();
            if stopped {
                return Err(NotifyError::BadRequest(
                    "This person has unsubscribed from this service's non-essential messages"
                        .into(),
                ));
            }
        }
        let takes = match channel {
            Channel::Email => p.email,
            Channel::Sms => p.sms,
            Channel::Letter => true,
        };
        Ok(match (takes, p.inbox, essential) {
            (true, inbox, _) => Route::Channel { inbox },
            (false, true, _) => Route::InboxOnly,
            // A notice the law requires reaches the person by the one way left.
            (false, false, true) => Route::Channel { inbox: false },
            (false, false, false) => {
                return Err(NotifyError::BadRequest(format!(
                    "This person does not take non-essential messages by {}",
                    if channel == Channel::Sms {
                        "text message"
                    } else {
                        "e-mail"
                    }
                )));
            }
        })
    }
}
