//! Civitas Notify: the messages agencies send people, in the shape of GOV.UK Notify's v2
//! API so that Notify's client libraries work unchanged (issue 7; the protocol's facts are
//! in `docs/design/notify-v2.md`).
//!
//! - [`template`]: the template language.
//! - [`auth`]: API keys (`live`, `team`, `test`) and the JWT each call carries (HS256,
//!   `iss` the service id, `iat` within 30 seconds), with Notify's checks and messages.
//! - [`Notify`]: sending services, their keys, guest lists, templates with versions, and
//!   notifications: accepted (checked, rendered, stored, logged to the ledger by the
//!   recipient's tag, never the content), read back and listed as Notify pages them.
//!   Test keys deliver nothing: their notifications end as Notify's simulator would.
//! - [`delivery`]: messages from live and team keys, from the notifications table as a
//!   queue: e-mail over SMTP, text messages and letters (rendered as PDF by [`letter`])
//!   through a [`provider`] over HTTP, whose signed receipts move their status.
//! - [`letter`]: a letter's address lines and its PDF.
//! - [`callbacks`]: each final status posted to the sending service, signed, retried.
//! - [`inbox`]: the citizen's inbox, channel preferences and unsubscribes.
//! - [`language`]: templates in Traditional Chinese and English.
//! - [`own`]: Civitas's own messages (one-time codes, alerts), sent through Notify itself.

pub mod auth;
mod cache;
pub mod callbacks;
pub mod delivery;
pub mod inbox;
pub mod language;
pub mod letter;
mod limits;
pub mod own;
pub mod provider;
mod store;
pub mod template;

pub use auth::{AuthError, Caller, KeyType};
pub use language::{Language, Text};
pub use limits::OverLimit;
pub use store::{
    Channel, NewNotification, NewTemplate, Notification, NotifyError, Page, Priority, Service,
    Template, simulated_end,
};

use civitas_ledger::Ledger;
use civitas_store::{Component, Db, Migration};

/// The Notify block's schema.
pub const COMPONENT: Component = Component {
    name: "notify",
    migrations: &[Migration {
        version: 1,
        name: "sending services, API keys, guest lists, templates and notifications",
        sql: "CREATE TABLE notify_services (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            live BIGINT NOT NULL,
            active BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE notify_api_keys (
            id TEXT PRIMARY KEY,
            service_id TEXT NOT NULL,
            name TEXT NOT NULL,
            key_type TEXT NOT NULL,
            secret TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            revoked_ms BIGINT
        );
        CREATE INDEX notify_api_keys_service ON notify_api_keys (service_id);
        CREATE TABLE notify_guest_list (
            service_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            PRIMARY KEY (service_id, recipient)
        );
        CREATE TABLE notify_templates (
            id TEXT PRIMARY KEY,
            service_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            version BIGINT NOT NULL,
            archived BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX notify_templates_service ON notify_templates (service_id);
        CREATE TABLE notify_template_versions (
            template_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            subject TEXT,
            body TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (template_id, version)
        );
        CREATE TABLE notify_notifications (
            id TEXT PRIMARY KEY,
            service_id TEXT NOT NULL,
            key_type TEXT NOT NULL,
            kind TEXT NOT NULL,
            template_id TEXT NOT NULL,
            template_version BIGINT NOT NULL,
            recipient TEXT NOT NULL,
            reference TEXT,
            subject TEXT,
            body TEXT NOT NULL,
            status TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            sent_ms BIGINT,
            completed_ms BIGINT
        );
        CREATE INDEX notify_notifications_service ON notify_notifications (service_id, key_type, created_ms);",
    }, Migration {
        version: 2,
        name: "the delivery queue: attempts and when to try next",
        sql: "ALTER TABLE notify_notifications ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE notify_notifications ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0;
        CREATE INDEX notify_notifications_queue ON notify_notifications (status, kind, next_attempt_ms);",
    }, Migration {
        version: 3,
        name: "each service's daily limit",
        sql: "ALTER TABLE notify_services ADD COLUMN daily_limit BIGINT NOT NULL DEFAULT 250000;",
    }, Migration {
        version: 4,
        name: "a message sent again with its reference is the same message",
        sql: "ALTER TABLE notify_notifications ADD COLUMN dedupe_key TEXT;
        CREATE UNIQUE INDEX notify_notifications_dedupe ON notify_notifications (service_id, dedupe_key);",
    }, Migration {
        version: 5,
        name: "the address a message to a person named by national ID goes to, and who they are",
        sql: "ALTER TABLE notify_notifications ADD COLUMN address TEXT;
        ALTER TABLE notify_notifications ADD COLUMN subject_ref TEXT;",
    }, Migration {
        version: 6,
        name: "status from timestamped events; providers' references; priority; scheduled sends",
        sql: "ALTER TABLE notify_notifications ADD COLUMN status_rank BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE notify_notifications ADD COLUMN status_ms BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE notify_notifications ADD COLUMN provider_ref TEXT;
        ALTER TABLE notify_notifications ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE notify_notifications ADD COLUMN scheduled_ms BIGINT;
        UPDATE notify_notifications SET status_rank = 4, status_ms = COALESCE(completed_ms, created_ms) WHERE status NOT IN ('created', 'sending');
        UPDATE notify_notifications SET status_rank = 1, status_ms = COALESCE(sent_ms, created_ms) WHERE status = 'sending';
        ALTER TABLE notify_templates ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE notify_status_events (
            notification_id TEXT NOT NULL,
            status TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            source TEXT NOT NULL
        );
        CREATE INDEX notify_status_events_notification ON notify_status_events (notification_id, at_ms);
        DROP INDEX notify_notifications_queue;
        CREATE INDEX notify_notifications_queue ON notify_notifications (kind, status, priority, next_attempt_ms);",
    }, Migration {
        version: 7,
        name: "delivery-status callbacks: where each service wants them, and those still to post",
        sql: "CREATE TABLE notify_callbacks (
            service_id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            bearer_token TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE notify_callback_queue (
            id TEXT PRIMARY KEY,
            service_id TEXT NOT NULL,
            notification_id TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            next_attempt_ms BIGINT NOT NULL,
            claimed_ms BIGINT,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX notify_callback_queue_due ON notify_callback_queue (next_attempt_ms);",
    }, Migration {
        version: 8,
        name: "the citizen's inbox, preferences and unsubscribes; essential templates",
        sql: "ALTER TABLE notify_notifications ADD COLUMN in_inbox BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE notify_notifications ADD COLUMN read_ms BIGINT;
        CREATE INDEX notify_notifications_person ON notify_notifications (subject_ref, created_ms);
        ALTER TABLE notify_templates ADD COLUMN essential BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE notify_preferences (
            subject_ref TEXT PRIMARY KEY,
            email BIGINT NOT NULL,
            sms BIGINT NOT NULL,
            inbox BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL
        );
        CREATE TABLE notify_unsubscribes (
            subject_ref TEXT NOT NULL,
            service_id TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (subject_ref, service_id)
        );",
    }, Migration {
        version: 9,
        name: "services of agencies; templates in two languages; the language of each message and each person",
        sql: "ALTER TABLE notify_services ADD COLUMN agency_code TEXT;
        CREATE INDEX notify_services_agency ON notify_services (agency_code);
        ALTER TABLE notify_template_versions ADD COLUMN lang TEXT NOT NULL DEFAULT 'zh-TW';
        CREATE TABLE notify_template_translations (
            template_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            lang TEXT NOT NULL,
            subject TEXT,
            body TEXT NOT NULL,
            PRIMARY KEY (template_id, version)
        );
        ALTER TABLE notify_notifications ADD COLUMN lang TEXT;
        ALTER TABLE notify_preferences ADD COLUMN lang TEXT;",
    }, Migration {
        version: 10,
        name: "each service's messages a day, counted as they are accepted",
        sql: "CREATE TABLE notify_daily_counts (
            service_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            day_ms BIGINT NOT NULL,
            sent BIGINT NOT NULL,
            PRIMARY KEY (service_id, kind, day_ms)
        );
        INSERT INTO notify_daily_counts (service_id, kind, day_ms, sent)
            SELECT service_id, kind, (created_ms + 28800000) / 86400000 * 86400000 - 28800000, COUNT(*)
            FROM notify_notifications WHERE key_type <> 'test'
            GROUP BY service_id, kind, (created_ms + 28800000) / 86400000 * 86400000 - 28800000;",
    }, Migration {
        version: 11,
        name: "a message sent again is found by its reference, not by a walk through the day's messages",
        sql: "CREATE INDEX notify_notifications_reference ON notify_notifications (service_id, key_type, reference, created_ms) WHERE reference IS NOT NULL;",
    }, Migration {
        version: 12,
        name: "messages without a reference or a person are not in the indexes by them",
        // Most messages have neither, and each index entry of theirs went to the end of its
        // index: a leaf and its siblings rewritten, logged and synced on every commit.
        sql: "DROP INDEX notify_notifications_dedupe;
        CREATE UNIQUE INDEX notify_notifications_dedupe ON notify_notifications (service_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
        DROP INDEX notify_notifications_person;
        CREATE INDEX notify_notifications_person ON notify_notifications (subject_ref, created_ms) WHERE subject_ref IS NOT NULL;",
    }],
};

/// The Notify block, on the platform's database and ledger.
#[derive(Clone)]
pub struct Notify {
    db: Db,
    ledger: Ledger,
    /// Wakes this process's deliverer of each channel (e-mail, text messages, letters)
    /// when a message to deliver is accepted.
    wake: std::sync::Arc<[tokio::sync::Notify; 3]>,
    /// Calls per minute each service may make with each key type, in this process.
    rate: std::sync::Arc<limits::RateLimit>,
    /// Services, keys, templates and the day's counts as last read (see `cache.rs`).
    caches: std::sync::Arc<cache::Caches>,
}

impl Notify {
    /// The block over `db`, logging to `ledger`.
    pub fn new(db: Db, ledger: Ledger) -> Notify {
        Notify::with_rate_limit(db, ledger, limits::PER_MINUTE)
    }

    /// The block, allowing each service `per_minute` calls a minute with each key type.
    pub fn with_rate_limit(db: Db, ledger: Ledger, per_minute: u32) -> Notify {
        Notify {
            caches: db.shared(),
            db,
            ledger,
            wake: Default::default(),
            rate: std::sync::Arc::new(limits::RateLimit::new(per_minute)),
        }
    }
}
