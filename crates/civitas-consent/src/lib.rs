//! Consent: data agreements, proposed by the organisation that wants a person's data and
//! approved by the operator, and the consent records of the people who give, refuse,
//! withdraw, pause or resume their consent to them. Every change of a record is signed (a
//! JWS, EdDSA, under this block's own key) and appended to the ledger with the signed record
//! as its private payload, so the person's receipt (the record and its C2SP tlog-proof)
//! proves both what was agreed and that the log holds it.
//!
//! Consent is checked at every use ([`Consents::check`]), not only when given: a withdrawn,
//! paused or expired consent, or one whose agreement is no longer approved, is not valid.

mod agreement;
mod decisions;
mod jws;
mod members;
mod record;
#[cfg(test)]
mod tests;

pub use agreement::{
    Access, Agreement, AgreementState, LEGAL_BASES, MAX_DURATION_DAYS, MAX_RETENTION_DAYS,
    NewAgreement, Purpose,
};
pub use jws::{ConsentKey, verify_jws};
pub use record::{
    Change, ConsentRecord, ConsentState, HistoryEntry, Receipt, Statistics, Validity,
    key_from_jwks, verify_receipt,
};

use civitas_ledger::Ledger;
use civitas_store::{Component, Db, Migration};

/// What went wrong with consent.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such agreement, purpose or record (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or its state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// A signature or proof does not verify.
    #[error("{0}")]
    Unverified(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
}

impl From<civitas_store::sqlx::Error> for ConsentError {
    fn from(e: civitas_store::sqlx::Error) -> Self {
        ConsentError::Store(e.into())
    }
}

/// The consent block's schema.
pub const COMPONENT: Component = Component {
    name: "consent",
    migrations: &[Migration {
        version: 1,
        name: "purposes, data agreements, consent records and their signed history",
        sql: "CREATE TABLE consent_keys (name TEXT PRIMARY KEY, secret TEXT NOT NULL, created_ms BIGINT NOT NULL);
        CREATE TABLE consent_purposes (
            code TEXT PRIMARY KEY,
            name_en TEXT NOT NULL,
            name_zh TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE consent_agreements (
            id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            purpose TEXT NOT NULL,
            legal_basis TEXT NOT NULL,
            items TEXT NOT NULL,
            retention_days BIGINT NOT NULL,
            access TEXT NOT NULL,
            duration_days BIGINT NOT NULL,
            state TEXT NOT NULL,
            proposed_ms BIGINT NOT NULL,
            decided_ms BIGINT,
            decided_by TEXT,
            reason TEXT
        );
        CREATE INDEX consent_agreements_client ON consent_agreements (client_id);
        CREATE TABLE consent_records (
            id TEXT PRIMARY KEY,
            agreement_id TEXT NOT NULL,
            subject_ref TEXT NOT NULL,
            state TEXT NOT NULL,
            version BIGINT NOT NULL,
            given_ms BIGINT,
            expires_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL
        );
        CREATE INDEX consent_records_subject ON consent_records (subject_ref);
        CREATE INDEX consent_records_agreement ON consent_records (agreement_id);
        CREATE TABLE consent_history (
            record_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            state TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            jws TEXT NOT NULL,
            ledger_index BIGINT,
            PRIMARY KEY (record_id, version)
        );",
    }, Migration {
        version: 2,
        name: "the people who act for an organisation on its pages",
        sql: "CREATE TABLE consent_org_members (
            client_id TEXT NOT NULL,
            account_id TEXT NOT NULL,
            added_ms BIGINT NOT NULL,
            PRIMARY KEY (client_id, account_id)
        );
        CREATE INDEX consent_org_members_account ON consent_org_members (account_id);",
    }],
};

/// The consent block: agreements and records, on the platform's database and ledger.
#[derive(Clone)]
pub struct Consents {
    db: Db,
    ledger: Ledger,
    key: std::sync::Arc<ConsentKey>,
    /// Who signs the records (the platform's public URL).
    issuer: String,
    /// Whether decisions are answered from memory (SQLite: see `decisions`).
    remember: bool,
}

impl Consents {
    /// Opens the block, making its signing key on first use (kept in the database, so every
    /// node signs with the same one).
    pub async fn open(db: Db, ledger: Ledger, issuer: &str) -> Result<Consents, ConsentError> {
        let key = jws::stored_key(&db).await?;
        Ok(Consents {
            remember: db.engine() == civitas_store::Engine::Sqlite,
            db,
            ledger,
            key: std::sync::Arc::new(key),
            issuer: issuer.trim_end_matches('/').to_string(),
        })
    }

    /// The public key that verifies consent records, as a JWK Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.key.jwks()
    }

    /// Bytes the decisions' memory of records holds in this process (see `warm`).
    pub fn decision_memory_bytes() -> usize {
        decisions::memory().bytes()
    }

    /// The key that signs consent records.
    pub fn key(&self) -> &ConsentKey {
        &self.key
    }
}
