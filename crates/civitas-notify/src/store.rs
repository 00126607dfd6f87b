//! Sending services, guest lists, templates and notifications, in the database; each
//! change a ledger event committed with its rows.

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row, any::AnyRow};
use civitas_store::{Script, Value as Sql};
use serde_json::{Map, Value};

use crate::Notify;
use crate::auth::{Caller, KeyType};
use crate::language::{Language, Text};
use crate::template::{self, Missing};

/// Errors of the Notify block.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request is not acceptable (Notify's `ValidationError` or `BadRequestError`).
    #[error("{0}")]
    Invalid(String),
    /// The request breaks a rule of the key or service (`BadRequestError`).
    #[error("{0}")]
    BadRequest(String),
    /// The key may not do this at all (`BadRequestError`, 403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing of that id for this service.
    #[error("{0}")]
    NotFound(String),
    /// A template's placeholder has no value.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// Over a limit of the service (429).
    #[error("{}", .0.message)]
    OverLimit(crate::OverLimit),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
}

impl From<sqlx::Error> for NotifyError {
    fn from(e: sqlx::Error) -> Self {
        NotifyError::Store(e.into())
    }
}

/// A sending service (one per agency or programme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its id (a UUID: the `iss` of its calls).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Live (sends to anyone with a live key) or in trial (reaches only its guest list).
    pub live: bool,
    /// Whether it may send at all.
    pub active: bool,
    /// The agency whose staff manage its templates, if any.
    pub agency: Option<String>,
}

/// A message's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// E-mail.
    Email,
    /// Text message.
    Sms,
    /// Letter.
    Letter,
}

impl Channel {
    /// Its name in the API.
    pub fn code(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Letter => "letter",
        }
    }

    /// Parses its name.
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            "letter" => Some(Channel::Letter),
            _ => None,
        }
    }
}

/// A template at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its id.
    pub id: String,
    /// Its service.
    pub service_id: String,
    /// Its channel.
    pub channel: Channel,
    /// This version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// The subject (e-mail) or heading (letter).
    pub subject: Option<String>,
    /// The text with its placeholders.
    pub body: String,
    /// Who made this version.
    pub created_by: String,
    /// When the template was made (ms).
    pub created_ms: i64,
    /// When this version was made, if it is not the first (ms).
    pub updated_ms: Option<i64>,
    /// How urgent its messages are: they are delivered before less urgent ones.
    pub priority: Priority,
    /// A notice the law requires: it reaches the person whatever their preferences.
    pub essential: bool,
    /// The language `subject` and `body` are written in.
    pub lang: Language,
    /// This version's text in the other language, if it has one.
    pub translation: Option<Text>,
}

impl Template {
    /// The languages it can be sent in, its own first.
    pub fn languages(&self) -> Vec<Language> {
        std::iter::once(self.lang)
            .chain(self.translation.as_ref().map(|t| t.lang))
            .collect()
    }

    /// Its subject and text in `lang`, or in its own language when it has no text in
    /// `lang`; and the language they are in.
    pub fn text_in(&self, lang: Option<Language>) -> (Language, Option<&str>, &str) {
        match &self.translation {
            Some(t) if Some(t.lang) == lang => (t.lang, t.subject.as_deref(), &t.body),
            _ => (self.lang, self.subject.as_deref(), &self.body),
        }
    }

    /// Its subject and text in `lang` (as [`Template::text_in`] chooses), filled in from
    /// `values`; and the language they are in.
    pub fn fill(
        &self,
        lang: Option<Language>,
        values: &Map<String, Value>,
    ) -> Result<(Language, Option<String>, String), Missing> {
        let (lang, subject, body) = self.text_in(lang);
        let body = template::render(body, values)?;
        let subject = subject.map(|s| template::render(s, values)).transpose()?;
        Ok((lang, subject, body))
    }
}

/// How urgent a template's messages are (Notify's `process_type`, with emergencies above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Queued in order.
    #[default]
    Normal,
    /// Ahead of normal messages (sign-in codes).
    Priority,
    /// Ahead of everything (emergency alerts).
    Emergency,
}

impl Priority {
    /// Its name.
    pub fn code(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Priority => "priority",
            Priority::Emergency => "emergency",
        }
    }

    /// Parses its name.
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "normal" => Some(Priority::Normal),
            "priority" => Some(Priority::Priority),
            "emergency" => Some(Priority::Emergency),
            _ => None,
        }
    }

    fn level(self) -> i64 {
        self as i64
    }

    fn of_level(level: i64) -> Priority {
        match level {
            2.. => Priority::Emergency,
            1 => Priority::Priority,
            _ => Priority::Normal,
        }
    }
}

/// A new template or a new version of one.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    /// Its channel.
    pub channel: Channel,
    /// Its name.
    pub name: String,
    /// The subject (e-mail) or heading (letter); none for text messages.
    pub subject: Option<String>,
    /// The text.
    pub body: String,
    /// How urgent its messages are (kept by the template, not by each version).
    pub priority: Priority,
    /// A notice the law requires (kept by the template): it reaches the person whatever
    /// their preferences and unsubscribes.
    pub essential: bool,
    /// The language the subject and text are written in.
    pub lang: Language,
    /// The same in the other language, with the same placeholders.
    pub translation: Option<Text>,
}

/// A notification to accept.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Its channel (the endpoint it came to).
    pub channel: Channel,
    /// The e-mail address or phone number.
    pub recipient: String,
    /// The template.
    pub template_id: String,
    /// The values for the template's placeholders.
    pub personalisation: Map<String, Value>,
    /// The sender's own reference.
    pub reference: Option<String>,
    /// When the sender named a person by national ID (`recipient`), the address the
    /// registers hold for them, and their subject reference (`person:<id>`): the message
    /// goes there, the sender sees only the ID, and the log is under the person's tag.
    pub from_registers: Option<(String, String)>,
    /// When to send it, if not now (ms; at most 24 hours ahead).
    pub scheduled_ms: Option<i64>,
    /// The language the sender asks for; else the person's choice, else the template's.
    pub language: Option<Language>,
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its id.
    pub id: String,
    /// Its channel.
    pub channel: Channel,
    /// The key type it was sent with.
    pub key_type: KeyType,
    /// The recipient.
    pub recipient: String,
    /// The template and version it was made from.
    pub template_id: String,
    /// The version.
    pub template_version: i64,
    /// The sender's reference.
    pub reference: Option<String>,
    /// The subject, filled in.
    pub subject: Option<String>,
    /// The text, filled in.
    pub body: String,
    /// Its status (Notify's words).
    pub status: String,
    /// When it was accepted (ms).
    pub created_ms: i64,
    /// When it was handed on for delivery (ms).
    pub sent_ms: Option<i64>,
    /// When it reached its final status (ms).
    pub completed_ms: Option<i64>,
    /// When it is to be sent, if the sender scheduled it (ms).
    pub scheduled_ms: Option<i64>,
}

/// One page of a service's notifications, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The notifications.
    pub notifications: Vec<Notification>,
}

/// Notify's page size.
pub const PAGE_SIZE: i64 = 250;

/// How long a message sent again with the same reference, recipient and template is the
/// same message.
const IDEMPOTENCY_MS: i64 = 24 * 60 * 60 * 1000;

impl Notify {
    /// `event` about a message's recipient: under the person's tag when the sender named a
    /// person by national ID, listed among the person's entries; else under the address's
    /// tag, unlisted ([`Event::about_unlisted`]). Nobody looks an address up in the log, and
    /// listing every message's address would cost an insert at a random place of the log's
    /// index by tag, a page written, for each message.
    pub(crate) async fn about_recipient(
        &self,
        event: Event,
        person: Option<&str>,
        address: &str,
    ) -> Result<Event, NotifyError> {
        Ok(match person {
            Some(person) => event.about(self.ledger.subject_secret_for_event(person).await?.tag()),
            None => {
                let subject = format!("notify-recipient:{address}");
                event.about_unlisted(self.ledger.subject_secret_for_event(&subject).await?.tag())
            }
        })
    }
}

/// What makes two sends one message on one day (the database keeps one row per key, so two
/// sends at the same moment cannot both be accepted).
fn dedupe_key(
    key_type: KeyType,
    reference: &str,
    recipient: &str,
    template_id: &str,
    content: &str,
    now: i64,
) -> String {
    use sha2::Digest;
    let day = now.div_euclid(86_400_000);
    let digest = sha2::Sha256::digest(
        format!(
            "{}\n{reference}\n{recipient}\n{template_id}\n{day}\n{content}",
            key_type.code()
        )
        .as_bytes(),
    );
    civitas_ledger::event::hex(&digest)
}

/// The first message of a service with a reference, recipient and template since a time:
/// found through the reference's index (a walk through the service's messages of the day
/// would cost more with every message).
fn same_message_sql() -> String {
    format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notify_notifications
         WHERE service_id = $1 AND key_type = $2 AND reference = $3 AND recipient = $4 AND template_id = $5 AND created_ms >= $6
         ORDER BY created_ms LIMIT 1"
    )
}

/// Recipients of test keys that end otherwise than delivered (Notify's simulator); the
/// sandbox provider fails them too.
pub fn simulated_end(recipient: &str) -> &'static str {
    match recipient {
        "temp-fail@simulator.notify" => "temporary-failure",
        "perm-fail@simulator.notify" => "permanent-failure",
        // Notify's simulated numbers, 07700 900003 and 900002, however they were written.
        r if r.starts_with('+') && r.ends_with("7700900003") => "temporary-failure",
        r if r.starts_with('+') && r.ends_with("7700900002") => "permanent-failure",
        _ => "delivered",
    }
}

/// An e-mail address as compared and stored: trimmed, in lower case.
fn normal_email(s: &str) -> Result<String, NotifyError> {
    let e = s.trim().to_lowercase();
    let ok = e.len() <= 320
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.chars().any(|c| c.is_whitespace() || c == ',')
        });
    if ok {
        Ok(e)
    } else {
        Err(NotifyError::Invalid(
            "email_address Not a valid email address".into(),
        ))
    }
}

/// A phone number as compared and stored: E.164 (`+` and digits), a national number
/// (`0…`) taken as Taiwan's (`+886`), so `0912 345 678` and `+886 912 345 678` are one.
fn normal_phone(s: &str) -> Result<String, NotifyError> {
    let trimmed = s.trim();
    let international = trimmed.starts_with('+') || trimmed.starts_with("00");
    if trimmed
        .chars()
        .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)))
    {
        return Err(NotifyError::Invalid(
            "phone_number Must not contain letters or symbols".into(),
        ));
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.strip_prefix("00").unwrap_or(&digits).to_string();
    let ok = if international {
        (8..=15).contains(&digits.len())
    } else {
        (9..=11).contains(&digits.len()) && digits.starts_with('0')
    };
    if !ok {
        return Err(NotifyError::Invalid(
            "phone_number Not a valid phone number".into(),
        ));
    }
    Ok(if international {
        // `+886 0912…` writes Taiwan's trunk 0 too; the number is `+886 912…`.
        match digits.strip_prefix("8860") {
            Some(rest) => format!("+886{rest}"),
            None => format!("+{digits}"),
        }
    } else {
        format!("+886{}", &digits[1..])
    })
}

fn service_of(r: &AnyRow) -> Result<Service, NotifyError> {
    Ok(Service {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        live: r.try_get::<i64, _>("live")? != 0,
        active: r.try_get::<i64, _>("active")? != 0,
        agency: r.try_get("agency_code")?,
    })
}

const SERVICE_COLUMNS: &str = "id, name, live, active, agency_code";

const TEMPLATE_COLUMNS: &str = "t.id, t.service_id, t.kind, t.priority, t.essential, v.version, v.name, v.subject, v.body, v.lang, v.created_by, v.created_ms AS version_ms, t.created_ms, x.lang AS x_lang, x.subject AS x_subject, x.body AS x_body";

/// A template's tables: `t` the template, `v` its versions, `x` their translations.
const TEMPLATE_TABLES: &str = "notify_templates t JOIN notify_template_versions v ON v.template_id = t.id
     LEFT JOIN notify_template_translations x ON x.template_id = v.template_id AND x.version = v.version";

fn language_of(tag: &str) -> Result<Language, NotifyError> {
    Language::parse(tag).ok_or_else(|| NotifyError::Invalid(format!("language {tag}")))
}

fn template_of(r: &AnyRow) -> Result<Template, NotifyError> {
    let kind: String = r.try_get("kind")?;
    let version: i64 = r.try_get("version")?;
    let version_ms: i64 = r.try_get("version_ms")?;
    Ok(Template {
        id: r.try_get("id")?,
        service_id: r.try_get("service_id")?,
        channel: Channel::parse(&kind)
            .ok_or_else(|| NotifyError::Invalid(format!("template kind {kind}")))?,
        version,
        name: r.try_get("name")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        created_by: r.try_get("created_by")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: (version > 1).then_some(version_ms),
        priority: Priority::of_level(r.try_get("priority")?),
        essential: r.try_get::<i64, _>("essential")? != 0,
        lang: language_of(&r.try_get::<String, _>("lang")?)?,
        translation: match r.try_get::<Option<String>, _>("x_lang")? {
            Some(tag) => Some(Text {
                lang: language_of(&tag)?,
                subject: r.try_get("x_subject")?,
                body: r.try_get("x_body")?,
            }),
            None => None,
        },
    })
}

const NOTIFICATION_COLUMNS: &str = "id, kind, key_type, recipient, template_id, template_version, reference, subject, body, status, created_ms, sent_ms, completed_ms, scheduled_ms";

fn notification_of(r: &AnyRow) -> Result<Notification, NotifyError> {
    let kind: String = r.try_get("kind")?;
    let key_type: String = r.try_get("key_type")?;
    Ok(Notification {
        id: r.try_get("id")?,
        channel: Channel::parse(&kind)
            .ok_or_else(|| NotifyError::Invalid(format!("notification kind {kind}")))?,
        key_type: KeyType::parse(&key_type)
            .ok_or_else(|| NotifyError::Invalid(format!("key type {key_type}")))?,
        recipient: r.try_get("recipient")?,
        template_id: r.try_get("template_id")?,
        template_version: r.try_get("template_version")?,
        reference: r.try_get("reference")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        completed_ms: r.try_get("completed_ms")?,
        scheduled_ms: r.try_get("scheduled_ms")?,
    })
}

impl Notify {
    /// Registers a sending service, in trial until made live (`notify.service_created`).
    pub async fn create_service(&self, name: &str, actor: &str) -> Result<Service, NotifyError> {
        self.create_service_with_id(&uuid::Uuid::new_v4().to_string(), name, None, actor)
            .await
    }

    /// [`Notify::create_service`] for an agency, whose staff manage its templates in the
    /// admin pages (`agency` is its code, as the registers write it: `HRO`).
    pub async fn create_agency_service(
        &self,
        name: &str,
        agency: &str,
        actor: &str,
    ) -> Result<Service, NotifyError> {
        let agency = agency.trim().to_ascii_uppercase();
        if agency.is_empty()
            || agency.len() > 32
            || !agency.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(NotifyError::Invalid(
                "an agency's code is 1 to 32 letters and digits".into(),
            ));
        }
        self.create_service_with_id(
            &uuid::Uuid::new_v4().to_string(),
            name,
            Some(&agency),
            actor,
        )
        .await
    }

    /// [`Notify::create_service`] with the id given.
    pub(crate) async fn create_service_with_id(
        &self,
        id: &str,
        name: &str,
        agency: Option<&str>,
        actor: &str,
    ) -> Result<Service, NotifyError> {
        let id = id.to_string();
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(NotifyError::Invalid(
                "a service's name is 1 to 255 bytes".into(),
            ));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO notify_services (id, name, live, active, created_ms, agency_code) VALUES (?, ?, 0, 1, ?, ?)",
            vec![
                Sql::Text(id.clone()),
                Sql::Text(name.into()),
                Sql::I64(now_ms()),
                agency.map(str::to_string).into(),
            ],
        );
        let mut event = Event::new(
            "notify.service_created",
            actor,
            &format!("notify/service/{id}"),
        )
        .with("name", name.to_string());
        if let Some(a) = agency {
            event = event.with("agency", a.to_string());
        }
        self.ledger.append_with(&event, w).await?;
        Ok(Service {
            id,
            name: name.into(),
            live: false,
            active: true,
            agency: agency.map(str::to_string),
        })
    }

    /// Makes a service live, so its live keys reach anyone (`notify.service_live`).
    pub async fn make_live(&self, service_id: &str, actor: &str) -> Result<(), NotifyError> {
        let mut w = Script::new();
        w.push(
            "UPDATE notify_services SET live = 1 WHERE id = ?",
            vec![Sql::Text(service_id.into())],
        );
        let event = Event::new(
            "notify.service_live",
            actor,
            &format!("notify/service/{service_id}"),
        );
        self.ledger
            .append_with(&event, w)
            .await
            .map_err(|e| match e {
                civitas_ledger::LedgerError::WritesRefused(_) => {
                    NotifyError::NotFound(format!("no service {service_id}"))
                }
                e => e.into(),
            })?;
        self.caches.forget_service(service_id);
        Ok(())
    }

    /// A service.
    pub async fn service(&self, id: &str) -> Result<Option<Service>, NotifyError> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM notify_services WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(service_of).transpose()
    }

    /// The services, by name: every one, or those of one agency.
    pub async fn services(&self, agency: Option<&str>) -> Result<Vec<Service>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM notify_services WHERE $1 IS NULL OR agency_code = $1 ORDER BY name, id"
        ))
        .bind(agency)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(service_of).collect()
    }

    /// Adds an e-mail address or phone number to a service's guest list: its team key, and
    /// its live keys while it is in trial, reach only these.
    pub async fn add_to_guest_list(
        &self,
        service_id: &str,
        recipient: &str,
        actor: &str,
    ) -> Result<(), NotifyError> {
        let recipient = if recipient.contains('@') {
            normal_email(recipient)?
        } else {
            normal_phone(recipient)?
        };
        let mut w = Script::new();
        w.push(
            "INSERT INTO notify_guest_list (service_id, recipient) VALUES (?, ?) ON CONFLICT (service_id, recipient) DO NOTHING",
            vec![Sql::Text(service_id.into()), Sql::Text(recipient)],
        );
        // The log says that the list changed, not who is on it.
        let event = Event::new(
            "notify.guest_list_changed",
            actor,
            &format!("notify/service/{service_id}"),
        );
        match self.ledger.append_with(&event, w).await {
            Ok(_) | Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn on_guest_list(&self, service_id: &str, recipient: &str) -> Result<bool, NotifyError> {
        Ok(
            sqlx::query("SELECT 1 FROM notify_guest_list WHERE service_id = $1 AND recipient = $2")
                .bind(service_id)
                .bind(recipient)
                .fetch_optional(self.db.pool())
                .await?
                .is_some(),
        )
    }

    /// A new template (`version` 1) or, with `template_id`, its next version
    /// (`notify.template_saved`).
    pub async fn save_template(
        &self,
        service_id: &str,
        template_id: Option<&str>,
        t: &NewTemplate,
        actor: &str,
    ) -> Result<Template, NotifyError> {
        let (name, body) = (t.name.trim(), t.body.trim_end());
        if name.is_empty() || body.trim().is_empty() {
            return Err(NotifyError::Invalid(
                "a template needs a name and some text".into(),
            ));
        }
        let subject = t
            .subject
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        match (t.channel, subject) {
            (Channel::Sms, Some(_)) => {
                return Err(NotifyError::Invalid("a text message has no subject".into()));
            }
            (Channel::Email | Channel::Letter, None) => {
                return Err(NotifyError::Invalid(
                    "an e-mail needs a subject, a letter a heading".into(),
                ));
            }
            _ => {}
        }
        if let Some(tr) = &t.translation {
            crate::language::check_translation(t.channel, t.lang, subject, body, tr)?;
        }
        let now = now_ms();
        let mut w = Script::new();
        let (id, version) = match template_id {
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                w.push(
                    "INSERT INTO notify_templates (id, service_id, kind, version, archived, created_ms, priority, essential) VALUES (?, ?, ?, 1, 0, ?, ?, ?)",
                    vec![
                        Sql::Text(id.clone()),
                        Sql::Text(service_id.into()),
                        Sql::Str(t.channel.code()),
                        Sql::I64(now),
                        Sql::I64(t.priority.level()),
                        Sql::I64(t.essential.into()),
                    ],
                );
                (id, 1)
            }
            Some(id) => {
                let current = self
                    .template(service_id, id, None)
                    .await?
                    .ok_or_else(|| NotifyError::NotFound(format!("no template {id}")))?;
                if current.channel != t.channel {
                    return Err(NotifyError::Invalid("a template keeps its channel".into()));
                }
                w.push(
                    "UPDATE notify_templates SET version = ?, priority = ?, essential = ? WHERE id = ? AND version = ?",
                    vec![
                        Sql::I64(current.version + 1),
                        Sql::I64(t.priority.level()),
                        Sql::I64(t.essential.into()),
                        Sql::Text(id.into()),
                        Sql::I64(current.version),
                    ],
                );
                (id.to_string(), current.version + 1)
            }
        };
        w.push(
            "INSERT INTO notify_template_versions (template_id, version, name, subject, body, created_by, created_ms, lang) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Sql::Text(id.clone()),
                Sql::I64(version),
                Sql::Text(name.into()),
                subject.map(str::to_string).into(),
                Sql::Text(body.into()),
                Sql::Text(actor.into()),
                Sql::I64(now),
                Sql::Str(t.lang.code()),
            ],
        );
        if let Some(tr) = &t.translation {
            w.push(
                "INSERT INTO notify_template_translations (template_id, version, lang, subject, body) VALUES (?, ?, ?, ?, ?)",
                vec![
                    Sql::Text(id.clone()),
                    Sql::I64(version),
                    Sql::Str(tr.lang.code()),
                    tr.subject
                        .as_deref()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .into(),
                    Sql::Text(tr.body.trim_end().into()),
                ],
            );
        }
        let event = Event::new(
            "notify.template_saved",
            actor,
            &format!("notify/template/{id}"),
        )
        .with("service_id", service_id.to_string())
        .with("version", version)
        .with("priority", t.priority.code())
        .with("essential", t.essential)
        .with(
            "languages",
            std::iter::once(t.lang)
                .chain(t.translation.as_ref().map(|x| x.lang))
                .map(Language::code)
                .collect::<Vec<_>>()
                .join(","),
        );
        self.ledger
            .append_with(&event, w)
            .await
            .map_err(|e| match e {
                civitas_ledger::LedgerError::WritesRefused(_) => {
                    NotifyError::BadRequest("the template changed meanwhile; try again".into())
                }
                e => e.into(),
            })?;
        self.caches
            .templates
            .forget(&(service_id.to_string(), id.clone()));
        self.template(service_id, &id, Some(version))
            .await?
            .ok_or_else(|| NotifyError::NotFound(format!("no template {id}")))
    }

    /// A service's template, at `version` or its latest.
    pub async fn template(
        &self,
        service_id: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<Template>, NotifyError> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM {TEMPLATE_TABLES}
             WHERE t.id = $1 AND t.service_id = $2 AND t.archived = 0 AND v.version = COALESCE($3, t.version)"
        ))
        .bind(id)
        .bind(service_id)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(template_of).transpose()
    }

    /// A service's template at its latest version, as read less than a second ago (see
    /// `cache.rs`) or now.
    async fn latest_template(
        &self,
        service_id: &str,
        id: &str,
    ) -> Result<Option<std::sync::Arc<Template>>, NotifyError> {
        let key = (service_id.to_string(), id.to_string());
        if let Some(t) = self.caches.templates.get(&key) {
            return Ok(Some(t));
        }
        let Some(t) = self.template(service_id, id, None).await? else {
            return Ok(None);
        };
        let t = std::sync::Arc::new(t);
        self.caches.templates.put(key, t.clone());
        Ok(Some(t))
    }

    /// Every version of a service's template, the latest first.
    pub async fn template_versions(
        &self,
        service_id: &str,
        id: &str,
    ) -> Result<Vec<Template>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM {TEMPLATE_TABLES}
             WHERE t.id = $1 AND t.service_id = $2 AND t.archived = 0 ORDER BY v.version DESC"
        ))
        .bind(id)
        .bind(service_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(template_of).collect()
    }

    /// A service's templates at their latest versions, of one channel or all.
    pub async fn templates(
        &self,
        service_id: &str,
        channel: Option<Channel>,
    ) -> Result<Vec<Template>, NotifyError> {
        let rows = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM {TEMPLATE_TABLES}
             WHERE v.version = t.version AND t.service_id = $1 AND t.archived = 0 AND ($2 IS NULL OR t.kind = $2) ORDER BY v.name, t.id"
        ))
        .bind(service_id)
        .bind(channel.map(Channel::code))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(template_of).collect()
    }

    /// Accepts a notification from `caller`: the template (the service's, of this
    /// channel) filled in, the recipient checked against the key's reach, stored, and
    /// logged (`notify.accepted`, under the recipient's tag, with the template and
    /// version, never the content). A test key's notification ends at once as Notify's
    /// simulator ends it (`notify.status`).
    pub async fn accept(
        &self,
        caller: &Caller,
        n: &NewNotification,
    ) -> Result<(Notification, std::sync::Arc<Template>), NotifyError> {
        let template = self
            .latest_template(&caller.service.id, &n.template_id)
            .await?
            .ok_or_else(|| NotifyError::BadRequest("Template not found".into()))?;
        if template.channel != n.channel {
            return Err(NotifyError::BadRequest(format!(
                "{} template is not suitable for {} notification",
                template.channel.code(),
                n.channel.code()
            )));
        }
        // A person named by national ID: their choices (test keys reach no one, so theirs
        // are not read).
        let person = match (&n.from_registers, caller.key_type) {
            (Some((_, person)), KeyType::Live | KeyType::Team) => {
                Some((person.as_str(), self.preferences(person).await?))
            }
            _ => None,
        };
        // The language: the sender's, else the person's, else the template's own.
        let wanted = match n.language {
            Some(l) if !template.languages().contains(&l) => {
                return Err(NotifyError::BadRequest(format!(
                    "Template has no text in {}",
                    l.code()
                )));
            }
            Some(l) => Some(l),
            None => person.as_ref().and_then(|(_, p)| p.language),
        };
        let (lang, subject, body) = template.fill(wanted, &n.personalisation)?;
        // A person named by national ID is reached at the address the registers hold.
        let (named, address) = match &n.from_registers {
            Some((address, _)) => (n.recipient.trim().to_ascii_uppercase(), address.as_str()),
            None => (String::new(), n.recipient.as_str()),
        };
        let recipient = match n.channel {
            Channel::Email => normal_email(address)?,
            Channel::Sms => normal_phone(address)?,
            // The address lines, one a line.
            Channel::Letter => {
                match caller.key_type {
                    KeyType::Team => {
                        return Err(NotifyError::Forbidden(
                            "Cannot send letters with a team api key".into(),
                        ));
                    }
                    KeyType::Live if !caller.service.live => {
                        return Err(NotifyError::Forbidden(
                            "Cannot send letters when service is in trial mode".into(),
                        ));
                    }
                    _ => {}
                }
                crate::letter::address(&n.personalisation)?.join("\n")
            }
        };
        if let Some(at) = n.scheduled_ms {
            let now = now_ms();
            if at < now - 60_000 {
                return Err(NotifyError::Invalid(
                    "scheduled_for datetime can not be in the past".into(),
                ));
            }
            if at > now + IDEMPOTENCY_MS {
                return Err(NotifyError::Invalid(
                    "scheduled_for datetime can only be 24 hours in the future".into(),
                ));
            }
        }
        if n.channel == Channel::Sms
            && template::sms_length(&body).characters > template::SMS_CHARACTER_LIMIT
        {
            return Err(NotifyError::BadRequest(format!(
                "Text messages cannot be longer than {} characters. Your message is {} characters long.",
                template::SMS_CHARACTER_LIMIT,
                template::sms_length(&body).characters
            )));
        }
        let restricted = match caller.key_type {
            KeyType::Test => false,
            KeyType::Team => true,
            KeyType::Live => !caller.service.live,
        };
        if restricted
            && n.channel != Channel::Letter
            && !self.on_guest_list(&caller.service.id, &recipient).await?
        {
            return Err(NotifyError::BadRequest(
                if caller.key_type == KeyType::Team {
                    "Can’t send to this recipient using a team-only API key".into()
                } else {
                    "Can’t send to this recipient when service is in trial mode – see https://www.notifications.service.gov.uk/trial-mode".into()
                },
            ));
        }
        if let Some(r) = &n.reference
            && r.len() > 1000
        {
            return Err(NotifyError::Invalid("reference is too long".into()));
        }
        // What the sender sees and sends again with: the ID it gave, or the address.
        let shown = if named.is_empty() {
            recipient.clone()
        } else {
            named.clone()
        };
        // Sent again (a retry after a lost answer): the message accepted the first time.
        let content = format!("{}\n{body}", subject.as_deref().unwrap_or_default());
        let now = now_ms();
        let dedupe = n
            .reference
            .as_deref()
            .map(|r| dedupe_key(caller.key_type, r, &shown, &template.id, &content, now));
        if let Some(r) = &n.reference
            && let Some(first) = self
                .same_message(caller, r, &shown, &template.id, now)
                .await?
            // Another text under the same reference is another message.
            && first.body == body
            && first.subject == subject
        {
            return self.with_its_template(caller, first).await;
        }
        if let Some(over) = self.check_daily_limit(caller, n.channel).await? {
            return Err(NotifyError::OverLimit(over));
        }
        // A person named by national ID: their preferences and unsubscribes decide where
        // it goes.
        let route = match &person {
            Some((person, p)) => {
                self.route_for(person, p, &caller.service.id, n.channel, template.essential)
                    .await?
            }
            None => crate::inbox::Route::Channel { inbox: false },
        };
        let in_inbox = route != crate::inbox::Route::Channel { inbox: false };
        let (status, sent, completed) = match (caller.key_type, route) {
            (KeyType::Test, _) => (simulated_end(&recipient), Some(now), Some(now)),
            // In the inbox, where the person reads it: delivered.
            (_, crate::inbox::Route::InboxOnly) => ("delivered", Some(now), Some(now)),
            _ => ("created", None, None),
        };
        let due = n.scheduled_ms.unwrap_or(now);
        let stored = Notification {
            // Time-ordered (UUID version 7, with 74 random bits): each new message's key goes
            // at the end of the primary key's index, so a batch of messages changes a page or
            // two of it instead of one a message at random (each written to the log and
            // synced); still a UUID to Notify's clients.
            id: uuid::Uuid::now_v7().to_string(),
            channel: n.channel,
            key_type: caller.key_type,
            recipient: shown.clone(),
            template_id: template.id.clone(),
            template_version: template.version,
            reference: n.reference.clone(),
            subject,
            body,
            status: status.to_string(),
            created_ms: now,
            sent_ms: sent,
            completed_ms: completed,
            scheduled_ms: n.scheduled_ms,
        };
        let mut w = Script::new();
        w.push(
            "INSERT INTO notify_notifications (id, service_id, key_type, kind, template_id, template_version, recipient, reference, subject, body, status, created_ms, sent_ms, completed_ms, dedupe_key, address, subject_ref, status_rank, status_ms, priority, scheduled_ms, next_attempt_ms, in_inbox, lang) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING",
            vec![
                Sql::Text(stored.id.clone()),
                Sql::Text(caller.service.id.clone()),
                Sql::Str(caller.key_type.code()),
                Sql::Str(n.channel.code()),
                Sql::Text(template.id.clone()),
                Sql::I64(template.version),
                Sql::Text(shown.clone()),
                stored.reference.clone().into(),
                stored.subject.clone().into(),
                Sql::Text(stored.body.clone()),
                Sql::Str(status),
                Sql::I64(now),
                sent.into(),
                completed.into(),
                dedupe.clone().into(),
                (!named.is_empty()).then(|| recipient.clone()).into(),
                n.from_registers.as_ref().map(|(_, person)| person.clone()).into(),
                Sql::I64(crate::provider::rank(status)),
                Sql::I64(now),
                Sql::I64(template.priority.level()),
                n.scheduled_ms.into(),
                Sql::I64(due),
                Sql::I64(in_inbox.into()),
                Sql::Str(lang.code()),
            ],
        );
        Notify::count_message(&mut w, caller, n.channel, now);
        if completed.is_some() {
            let reported = crate::callbacks::Reported {
                id: stored.id.clone(),
                service_id: caller.service.id.clone(),
                reference: stored.reference.clone(),
                to: shown.clone(),
                kind: n.channel.code().into(),
                template_id: template.id.clone(),
                template_version: template.version,
                created_ms: now,
                sent_ms: sent,
            };
            self.queue_callback(&mut w, &reported, status, now).await?;
        }
        let event = Event::new(
            "notify.accepted",
            &format!("notify-key:{}", caller.key_id),
            &format!("notify/notification/{}", stored.id),
        );
        let person = n.from_registers.as_ref().map(|(_, p)| p.as_str());
        let mut event = self
            .about_recipient(event, person, &recipient)
            .await?
            .with("service_id", caller.service.id.clone())
            .with("channel", n.channel.code())
            .with("template_id", template.id.clone())
            .with("template_version", template.version)
            .with("language", lang.code())
            .with("key_type", caller.key_type.code());
        if completed.is_some() {
            event = event.with("status", status);
        }
        if in_inbox {
            event = event.with("inbox", true);
        }
        match self.ledger.append_with(&event, w).await {
            Ok(_) => {}
            Err(civitas_ledger::LedgerError::WritesRefused(_)) => {
                // The same message, accepted at the same moment by another call: that one.
                if let Some(key) = &dedupe
                    && let Some(first) = self.by_dedupe_key(&caller.service.id, key).await?
                {
                    return self.with_its_template(caller, first).await;
                }
                // Or the day's limit, reached by another call at the same moment (or by
                // another node since the count was read).
                self.caches
                    .days
                    .forget(&(caller.service.id.clone(), n.channel.code()));
                if let Some(over) = self.check_daily_limit(caller, n.channel).await? {
                    return Err(NotifyError::OverLimit(over));
                }
                return Err(NotifyError::BadRequest(
                    "the message could not be stored".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.counted_message(caller, n.channel, now);
        if completed.is_none() && n.scheduled_ms.is_none() {
            self.wake[crate::delivery::wake_index(n.channel)].notify_one();
        }
        Ok((stored, template))
    }

    /// The message `caller` sent first in the last 24 hours with this reference, recipient
    /// and template, if any.
    async fn same_message(
        &self,
        caller: &Caller,
        reference: &str,
        recipient: &str,
        template_id: &str,
        now: i64,
    ) -> Result<Option<Notification>, NotifyError> {
        let row = sqlx::query(&same_message_sql())
            .bind(&caller.service.id)
            .bind(caller.key_type.code())
            .bind(reference)
            .bind(recipient)
            .bind(template_id)
            .bind(now - IDEMPOTENCY_MS)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(notification_of).transpose()
    }

    async fn by_dedupe_key(
        &self,
        service_id: &str,
        key: &str,
    ) -> Result<Option<Notification>, NotifyError> {
        let row = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notify_notifications WHERE service_id = $1 AND dedupe_key = $2"
        ))
        .bind(service_id)
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(notification_of).transpose()
    }

    /// A message with the template version it was made from.
    async fn with_its_template(
        &self,
        caller: &Caller,
        n: Notification,
    ) -> Result<(Notification, std::sync::Arc<Template>), NotifyError> {
        let template = self
            .template(&caller.service.id, &n.template_id, Some(n.template_version))
            .await?
            .ok_or_else(|| NotifyError::BadRequest("Template not found".into()))?;
        Ok((n, std::sync::Arc::new(template)))
    }

    /// One of the service's notifications.
    pub async fn notification(
        &self,
        service_id: &str,
        id: &str,
    ) -> Result<Option<Notification>, NotifyError> {
        let row = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notify_notifications WHERE id = $1 AND service_id = $2"
        ))
        .bind(id)
        .bind(service_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(notification_of).transpose()
    }

    /// A page of the service's notifications sent with keys of `key_type`, newest first:
    /// of the given channels and statuses (any when empty), with `reference`, and older
    /// than notification `older_than` (an unknown one gives an empty page).
    pub async fn notifications(
        &self,
        service_id: &str,
        key_type: KeyType,
        channels: &[Channel],
        statuses: &[String],
        reference: Option<&str>,
        older_than: Option<&str>,
    ) -> Result<Page, NotifyError> {
        let before = match older_than {
            Some(id) => match self.notification(service_id, id).await? {
                Some(n) => Some((n.created_ms, n.id)),
                None => {
                    return Ok(Page {
                        notifications: Vec::new(),
                    });
                }
            },
            None => None,
        };
        let mut sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notify_notifications WHERE service_id = $1 AND key_type = $2"
        );
        // Text values, bound in order; the time of `older_than` is bound after them.
        let mut binds: Vec<String> = vec![service_id.into(), key_type.code().into()];
        let mut marks = |values: Vec<String>| -> String {
            values
                .into_iter()
                .map(|v| {
                    binds.push(v);
                    format!("${}", binds.len())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !channels.is_empty() {
            let m = marks(channels.iter().map(|c| c.code().to_string()).collect());
            sql.push_str(&format!(" AND kind IN ({m})"));
        }
        if !statuses.is_empty() {
            let m = marks(statuses.to_vec());
            sql.push_str(&format!(" AND status IN ({m})"));
        }
        if let Some(r) = reference {
            let m = marks(vec![r.to_string()]);
            sql.push_str(&format!(" AND reference = {m}"));
        }
        let query_ms = match before {
            Some((ms, id)) => {
                let id_mark = marks(vec![id]);
                let ms_mark = format!("${}", binds.len() + 1);
                sql.push_str(&format!(
                    " AND (created_ms < {ms_mark} OR (created_ms = {ms_mark} AND id < {id_mark}))"
                ));
                Some(ms)
            }
            None => None,
        };
        sql.push_str(&format!(
            " ORDER BY created_ms DESC, id DESC LIMIT {PAGE_SIZE}"
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        if let Some(ms) = query_ms {
            q = q.bind(ms);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        Ok(Page {
            notifications: rows.iter().map(notification_of).collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_sent_again_is_found_by_its_reference() {
        let (db, _ledger) =
            civitas_ledger::testing::ledgers_on_both_engines("notify-plan", &[crate::COMPONENT])
                .await
                .remove(0);
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", same_message_sql()))
                .bind("s")
                .bind("live")
                .bind("r")
                .bind("a@b.tw")
                .bind("t")
                .bind(0_i64)
                .fetch_all(db.pool())
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX notify_notifications_reference")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn only_messages_with_a_reference_or_a_person_are_in_the_indexes_by_them() {
        for (db, _ledger) in
            civitas_ledger::testing::ledgers_on_both_engines("notify-partial", &[crate::COMPONENT])
                .await
        {
            let insert = "INSERT INTO notify_notifications (id, service_id, key_type, kind, template_id, template_version, recipient, body, status, created_ms, dedupe_key, subject_ref) VALUES ($1, 's', 'live', 'email', 't', 1, 'a@b.tw', 'hi', 'created', $2, $3, $4)";
            for (id, key, person) in [
                ("plain", None, None),
                ("referenced", Some("k"), None),
                ("to-a-person", None, Some("person:1")),
            ] {
                sqlx::query(insert)
                    .bind(id)
                    .bind(1_i64)
                    .bind(key)
                    .bind(person)
                    .execute(db.pool())
                    .await
                    .unwrap();
            }
            let sqlite = db.engine() == civitas_store::Engine::Sqlite;
            if sqlite {
                for index in ["notify_notifications_dedupe", "notify_notifications_person"] {
                    // Entries in the index's leaves (it fits in one page here: its root).
                    let n: i64 = sqlx::query_scalar(
                        "SELECT SUM(ncell) FROM dbstat WHERE name = $1 AND pagetype = 'leaf'",
                    )
                    .bind(index)
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                    assert_eq!(n, 1, "{index}");
                }
            }
            // The indexes are partial, and the lookups by them still use them.
            let partial: i64 = sqlx::query_scalar(if sqlite {
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('notify_notifications_dedupe', 'notify_notifications_person') AND sql LIKE '%WHERE%IS NOT NULL%'"
            } else {
                "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('notify_notifications_dedupe', 'notify_notifications_person') AND indexdef LIKE '%WHERE%IS NOT NULL%'"
            })
            .fetch_one(db.pool())
            .await
            .unwrap();
            assert_eq!(partial, 2);
            if sqlite {
                for (sql, index) in [
                    (
                        "SELECT id FROM notify_notifications WHERE service_id = $1 AND dedupe_key = $2",
                        "notify_notifications_dedupe",
                    ),
                    (
                        "SELECT id FROM notify_notifications WHERE subject_ref = $1 AND in_inbox = $2 ORDER BY created_ms DESC",
                        "notify_notifications_person",
                    ),
                ] {
                    let plan: Vec<(i64, i64, i64, String)> =
                        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                            .bind("s")
                            .bind("k")
                            .fetch_all(db.pool())
                            .await
                            .unwrap();
                    assert!(plan.iter().any(|p| p.3.contains(index)), "{sql}: {plan:?}");
                }
            }
            // A message sent again under its reference is still refused by the index.
            let again = sqlx::query(&format!(
                "{insert} ON CONFLICT (service_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
            ))
            .bind("again")
            .bind(2_i64)
            .bind("k")
            .bind(None::<String>)
            .execute(db.pool())
            .await
            .unwrap();
            assert_eq!(again.rows_affected(), 0);
        }
    }

    #[test]
    fn recipients_are_checked_and_written_one_way() {
        assert_eq!(normal_email(" Mei@Example.TW ").unwrap(), "mei@example.tw");
        assert!(normal_email("no-at-sign").is_err());
        assert!(normal_email("a@b").is_err());
        assert_eq!(normal_phone("0912-345-678").unwrap(), "+886912345678");
        assert_eq!(normal_phone("+886 912 345 678").unwrap(), "+886912345678");
        assert_eq!(normal_phone("00886912345678").unwrap(), "+886912345678");
        assert_eq!(normal_phone("+886 0912 345 678").unwrap(), "+886912345678");
        assert!(normal_phone("call me").is_err());
        assert!(normal_phone("123").is_err());
    }
}
