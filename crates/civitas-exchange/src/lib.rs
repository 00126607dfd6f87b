//! The exchange: an X-Road-compatible directory of members, their subsystems and the services
//! those provide, with access rights (client subsystem × service × method × path prefix),
//! and the REST protocol's message rules (`protocol`). The gateway's HTTP side lives in
//! `civitas-web`; it asks this crate who may call what, and logs every call to the ledger.

pub mod archive;
pub mod configuration;
pub mod directory;
pub mod keys;
pub mod message;
pub mod network;
pub mod protocol;
pub mod tls;
pub mod tracker;

pub use configuration::{Anchor, Configuration, Gateway};
pub use directory::{
    AccessRight, ConfigurationState, Directory, Endpoint, Freshness, Member, NewService, Service,
    Subsystem, allowed_endpoints,
};

use civitas_store::{Component, Migration};

/// What went wrong in the exchange.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such member, subsystem or service.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// Not available yet (a gateway without a configuration).
    #[error("{0}")]
    Unavailable(String),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
}

impl From<civitas_store::sqlx::Error> for ExchangeError {
    fn from(e: civitas_store::sqlx::Error) -> Self {
        ExchangeError::Store(e.into())
    }
}

impl From<civitas_core::xroad::XRoadIdError> for ExchangeError {
    fn from(e: civitas_core::xroad::XRoadIdError) -> Self {
        ExchangeError::Invalid(e.to_string())
    }
}

/// The exchange's schema.
pub const COMPONENT: Component = Component {
    name: "exchange",
    migrations: &[
        Migration {
            version: 1,
            name: "directory and access rights",
            sql: "CREATE TABLE exchange_members (
            id TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            class TEXT NOT NULL,
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE exchange_subsystems (
            id TEXT PRIMARY KEY,
            member_id TEXT NOT NULL REFERENCES exchange_members (id),
            code TEXT NOT NULL,
            name TEXT NOT NULL,
            networks TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX exchange_subsystems_member ON exchange_subsystems (member_id);
        CREATE TABLE exchange_services (
            id TEXT PRIMARY KEY,
            subsystem_id TEXT NOT NULL REFERENCES exchange_subsystems (id),
            code TEXT NOT NULL,
            kind TEXT NOT NULL,
            base_url TEXT NOT NULL,
            openapi TEXT,
            personal BIGINT NOT NULL,
            disabled BIGINT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX exchange_services_subsystem ON exchange_services (subsystem_id);
        CREATE TABLE exchange_endpoints (
            service_id TEXT NOT NULL REFERENCES exchange_services (id),
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (service_id, method, path)
        );
        CREATE TABLE exchange_access (
            service_id TEXT NOT NULL REFERENCES exchange_services (id),
            client_id TEXT NOT NULL REFERENCES exchange_subsystems (id),
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            granted_ms BIGINT NOT NULL,
            PRIMARY KEY (service_id, client_id, method, path)
        );
        CREATE INDEX exchange_access_client ON exchange_access (client_id);",
        },
        Migration {
            version: 2,
            name: "deferrals",
            sql: "ALTER TABLE exchange_subsystems ADD COLUMN may_defer BIGINT NOT NULL DEFAULT 0;",
        },
        Migration {
            version: 3,
            name: "deferred entries",
            sql: "CREATE TABLE exchange_deferrals (
                deferral_subject TEXT PRIMARY KEY,
                person_subject TEXT NOT NULL,
                until_ms BIGINT NOT NULL
            );
            CREATE INDEX exchange_deferrals_person ON exchange_deferrals (person_subject, until_ms);",
        },
        Migration {
            version: 4,
            name: "signed configuration and gateways",
            sql: "CREATE TABLE exchange_state (
                id BIGINT PRIMARY KEY,
                version BIGINT NOT NULL
            );
            INSERT INTO exchange_state (id, version) VALUES (1, 1);
            CREATE TABLE exchange_keys (
                id BIGINT PRIMARY KEY,
                secret TEXT NOT NULL,
                created_ms BIGINT NOT NULL
            );
            CREATE TABLE exchange_gateways (
                member_id TEXT PRIMARY KEY REFERENCES exchange_members (id),
                address TEXT NOT NULL,
                tls_certificate TEXT NOT NULL,
                signing_key TEXT NOT NULL,
                added_ms BIGINT NOT NULL
            );",
        },
        Migration {
            version: 5,
            name: "tracker reports between nodes",
            sql: "CREATE TABLE exchange_tracker_outbox (
                id TEXT PRIMARY KEY,
                report TEXT NOT NULL,
                created_ms BIGINT NOT NULL
            );
            CREATE INDEX exchange_tracker_outbox_created ON exchange_tracker_outbox (created_ms);
            CREATE TABLE exchange_tracker_received (
                id TEXT PRIMARY KEY,
                reporter TEXT NOT NULL,
                received_ms BIGINT NOT NULL
            );",
        },
        Migration {
            version: 6,
            name: "encrypted body archive",
            sql: "CREATE TABLE exchange_archive (
                request_id TEXT PRIMARY KEY,
                sealed TEXT NOT NULL,
                created_ms BIGINT NOT NULL,
                expires_ms BIGINT NOT NULL
            );
            CREATE INDEX exchange_archive_expires ON exchange_archive (expires_ms);",
        },
        Migration {
            version: 7,
            name: "call details kept privately",
            sql: "CREATE TABLE exchange_call_details (
                call_key TEXT PRIMARY KEY,
                details TEXT NOT NULL
            );",
        },
    ],
};

/// A deferred call is logged under a subject of its own (`deferral:<uuid>`), so that nobody,
/// the person included, can find it in the public log by the person's tag before its time;
/// this private record ties it to the person. Commit it with the event
/// (`Ledger::append_with`): the insert changes one row under a fresh key.
pub fn deferral_record(
    deferral_subject: &str,
    person_subject: &str,
    until_ms: i64,
) -> civitas_store::Script {
    let mut s = civitas_store::Script::new();
    s.push(
        "INSERT INTO exchange_deferrals (deferral_subject, person_subject, until_ms) VALUES (?, ?, ?)",
        vec![
            civitas_store::Value::Text(deferral_subject.into()),
            civitas_store::Value::Text(person_subject.into()),
            civitas_store::Value::I64(until_ms),
        ],
    );
    s
}

#[cfg(test)]
mod tests;
