//! Identity: who may act in Civitas, how they proved it, and for whom they act.
//!
//! Accounts belong to citizens (linked to their record in the population register), agency
//! staff (with a role per agency), and platform operators; a business representative is a
//! citizen whom the business register names for a business. People sign in with a password
//! (argon2id) and a second factor (TOTP or a recovery code) or with a passkey; each session
//! carries the level of assurance (eIDAS low / substantial / high) those methods earn.
//! Mandates let one person act for another. [`Identity`] is the block's API; it appends the
//! consequential events (sign-ins, step-ups, mandates) to the ledger itself.

mod accounts;
mod alerts;
pub use alerts::taiwan_time;
mod courier;
mod loa;
pub mod mandate;
pub mod oidc;
pub mod passkey;
pub mod password;
mod secret;
mod service;
pub mod session;
#[cfg(any(test, feature = "softkey"))]
pub mod softkey;
mod throttle;
pub mod totp;

pub use accounts::{Account, AccountKind, Registration};
pub use courier::{Courier, MailSink, SendFuture, SentMessage};
pub use loa::Loa;
pub use service::{Identity, IdentitySettings, SignInOutcome, SignInStep};
pub use throttle::Throttled;

use civitas_store::sqlx::{self, Row};
use civitas_store::{BulkInsert, Component, Db, Migration, Value};

/// The password of every demo staff, operator and featured citizen account. Only the demo
/// sets it (`Identity::seed_demo_sign_ins`); the demo prints it and `/dev/mail` shows it.
pub const DEMO_PASSWORD: &str = "civitas-demo-2026";

/// The identity block's schema.
pub const COMPONENT: Component = Component {
    name: "identity",
    migrations: &[
        Migration {
            version: 1,
            name: "accounts",
            sql: "CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            agency_code TEXT,
            role TEXT,
            created_on TEXT NOT NULL
        );
        CREATE INDEX accounts_agency ON accounts (agency_code);",
        },
        Migration {
            version: 2,
            name: "sign_in",
            sql: include_str!("sign_in.sql"),
        },
        Migration {
            version: 3,
            name: "passkeys",
            // Credential ids are base64url TEXT so one UNIQUE index serves both engines. The
            // passkey column is webauthn-rs's serialised Passkey, which the library keeps
            // opaque; sign_count repeats its counter as a column so a sign-in can
            // compare-and-set it in one UPDATE.
            sql: "CREATE TABLE passkey_credentials (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
                credential_id TEXT NOT NULL UNIQUE,
                user_handle TEXT NOT NULL,
                passkey TEXT NOT NULL,
                sign_count BIGINT NOT NULL,
                label TEXT NOT NULL,
                created_ms BIGINT NOT NULL,
                last_used_ms BIGINT
            );
            CREATE INDEX passkey_credentials_account ON passkey_credentials (account_id);
            CREATE TABLE passkey_ceremonies (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                account_id TEXT,
                state TEXT NOT NULL,
                expires_ms BIGINT NOT NULL
            );
            CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_ms);",
        },
        Migration {
            version: 4,
            name: "openid_connect",
            sql: OPENID_CONNECT_SQL,
        },
        Migration {
            version: 5,
            name: "sealed_tokens",
            // Access and refresh tokens carry their grant under the provider's token key
            // (oidc::bearer); the grant keeps the refresh rotation's generation. Tokens
            // issued before this version stop working: their holders sign in again.
            sql: "ALTER TABLE oidc_grants ADD COLUMN refresh_generation BIGINT NOT NULL DEFAULT 0;
            DROP TABLE oidc_tokens;",
        },
        Migration {
            version: 6,
            name: "authorization_details",
            // RFC 9396: what a grant authorises beyond scopes (a data agreement and the
            // consent given to it), as granted, JSON.
            sql: "ALTER TABLE oidc_grants ADD COLUMN authorization_details TEXT;",
        },
    ],
};

/// The OpenID Connect provider's tables (identity v4; v5 replaces the token table). Secrets
/// (client secrets, codes) are stored as SHA-256 hashes; signing keys and the pairwise secret as they are.
const OPENID_CONNECT_SQL: &str = "CREATE TABLE oidc_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_der BLOB NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE INDEX oidc_keys_alg ON oidc_keys (alg, retired_at);
CREATE TABLE oidc_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE oidc_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    jwks TEXT,
    id_token_alg TEXT NOT NULL,
    scopes TEXT NOT NULL,
    first_party BIGINT NOT NULL,
    min_loa TEXT NOT NULL,
    sector TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE oidc_grants (
    grant_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    subject_ref TEXT NOT NULL,
    session_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    acr TEXT NOT NULL,
    amr TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    nonce TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX oidc_grants_session ON oidc_grants (session_id);
CREATE INDEX oidc_grants_client ON oidc_grants (client_id);
CREATE TABLE oidc_codes (
    code_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX oidc_codes_expiry ON oidc_codes (expires_at);
CREATE TABLE oidc_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX oidc_tokens_grant ON oidc_tokens (grant_id);
CREATE INDEX oidc_tokens_expiry ON oidc_tokens (expires_at);
CREATE TABLE oidc_assertions (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE oidc_consents (
    account_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scopes TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, client_id)
);";

/// Errors from the identity block.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// The ledger refused an event.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] civitas_registry::RegistryError),
    /// The identifier, password or code did not match. Deliberately says no more.
    #[error("the sign-in details are not correct")]
    BadCredentials,
    /// Too many failed attempts: try again after the lock ends.
    #[error("too many failed attempts; try again in {} seconds", .0.retry_after_secs)]
    Throttled(Throttled),
    /// The password is refused by the policy; the text says why, in plain words.
    #[error("{0}")]
    WeakPassword(password::Weakness),
    /// A value the caller gave is not acceptable; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The thing asked for does not exist (or is not the caller's).
    #[error("not found")]
    NotFound,
    /// An account already exists for this person or name.
    #[error("an account already exists for this person")]
    AlreadyRegistered,
    /// A one-time code or ceremony expired; start again.
    #[error("the code has expired; ask for a new one")]
    Expired,
    /// The register holds no e-mail address or phone number to send a code to.
    #[error(
        "the register holds no e-mail address or phone number for you; register at a household registration office"
    )]
    NoContact,
    /// No way to send messages is configured.
    #[error("no message channel is configured, so codes cannot be sent")]
    NoCourier,
    /// Hashing failed (out of memory, bad parameters).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// No account has this id.
    #[error("no account `{0}`")]
    UnknownAccount(String),
    /// The passkey's response was not accepted: a bad or foreign signature, another origin or
    /// relying party, no user verification, a signature counter that went backwards (a cloned
    /// authenticator), or a passkey that is unknown or registered elsewhere.
    #[error("passkey not accepted: {0}")]
    PasskeyRejected(String),
    /// No ceremony has this id for this purpose and account: it was never started, was
    /// already finished (ceremonies are single-use), or was started for something else.
    #[error("no such passkey ceremony, or it was already used")]
    CeremonyUnknown,
    /// The ceremony was started too long ago; it has been discarded.
    #[error("the passkey ceremony expired; start again")]
    CeremonyExpired,
    /// The account has no passkey to sign in with.
    #[error("the account has no passkey")]
    NoPasskey,
    /// A passkey label that cannot be stored.
    #[error("invalid passkey label: {0}")]
    InvalidLabel(String),
    /// The relying party's settings (id, origin, name) or a ceremony's inputs were refused by
    /// the WebAuthn library.
    #[error("passkey setup: {0}")]
    PasskeySetup(String),
    /// Passkey data read back from the database cannot be decoded.
    #[error("stored passkey data is unreadable: {0}")]
    StoredPasskeyData(String),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        IdentityError::Store(e.into())
    }
}

/// What an agency staff member may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaffRole {
    /// Handles cases.
    Caseworker,
    /// Assigns and reviews cases, decides escalations.
    Supervisor,
    /// Manages the agency's staff, services and settings.
    AgencyAdministrator,
}

impl StaffRole {
    /// Every role, in order of increasing authority.
    pub const ALL: [StaffRole; 3] = [
        StaffRole::Caseworker,
        StaffRole::Supervisor,
        StaffRole::AgencyAdministrator,
    ];

    /// Stable code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            StaffRole::Caseworker => "caseworker",
            StaffRole::Supervisor => "supervisor",
            StaffRole::AgencyAdministrator => "agency_admin",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<StaffRole> {
        StaffRole::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The demo's staff per agency: how many of each role.
const DEMO_STAFF: [(StaffRole, usize); 3] = [
    (StaffRole::Caseworker, 4),
    (StaffRole::Supervisor, 2),
    (StaffRole::AgencyAdministrator, 1),
];

/// Names given to demo staff, in turn.
const DEMO_NAMES: [&str; 14] = [
    "陳怡君",
    "林志明",
    "黃淑芬",
    "張家豪",
    "李美玲",
    "王建宏",
    "吳佳穎",
    "劉俊傑",
    "蔡雅婷",
    "楊宗翰",
    "許惠如",
    "鄭文彬",
    "謝佩珊",
    "郭冠廷",
];

/// Creates the demo's staff accounts for each agency, and platform operator accounts for
/// the agencies of kind "operator". Returns how many accounts were made.
pub async fn seed_demo_staff(db: &Db, agencies: &[(String, bool)]) -> Result<u64, IdentityError> {
    let mut rows = BulkInsert::new(
        "accounts",
        &[
            "id",
            "kind",
            "username",
            "display_name",
            "agency_code",
            "role",
            "created_on",
        ],
    );
    let mut n = 0usize;
    for (code, is_operator) in agencies {
        let lower = code.to_ascii_lowercase();
        for (role, count) in DEMO_STAFF {
            for i in 1..=count {
                let name = DEMO_NAMES[n % DEMO_NAMES.len()];
                n += 1;
                rows.row([
                    Value::from(format!("staff-{lower}-{}-{i}", role.code())),
                    "staff".into(),
                    format!("{}.{i}@{lower}.gov.example", role.code()).into(),
                    name.into(),
                    code.clone().into(),
                    role.code().into(),
                    "demo".into(),
                ]);
            }
        }
        if *is_operator {
            for i in 1..=2 {
                rows.row([
                    Value::from(format!("operator-{i}")),
                    "operator".into(),
                    format!("operator.{i}@{lower}.gov.example").into(),
                    DEMO_NAMES[(n + i) % DEMO_NAMES.len()].into(),
                    code.clone().into(),
                    "operator".into(),
                    "demo".into(),
                ]);
            }
        }
    }
    let mut tx = db.pool().begin().await?;
    let written = rows.flush(&mut tx, db.engine()).await?;
    tx.commit().await?;
    Ok(written)
}

/// How many staff accounts an agency has in each role.
pub async fn staff_counts(
    db: &Db,
    agency_code: &str,
) -> Result<Vec<(StaffRole, i64)>, IdentityError> {
    let rows = sqlx::query(
        "SELECT role, COUNT(*) AS n FROM accounts WHERE kind = 'staff' AND agency_code = $1 GROUP BY role",
    )
    .bind(agency_code)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let role: String = row.try_get("role")?;
        if let Some(r) = StaffRole::from_code(&role) {
            out.push((r, row.try_get("n")?));
        }
    }
    out.sort();
    Ok(out)
}

/// How many accounts of each kind exist (staff, operator, ...).
pub async fn account_counts(db: &Db) -> Result<Vec<(String, i64)>, IdentityError> {
    let rows = sqlx::query("SELECT kind, COUNT(*) AS n FROM accounts GROUP BY kind ORDER BY kind")
        .fetch_all(db.pool())
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("kind")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_agency_gets_each_role_and_operators_get_operator_accounts() {
        let dir = civitas_store::scratch::folder("identity-staff");
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        civitas_store::migrate(&db, &[COMPONENT]).await.unwrap();
        let made = seed_demo_staff(&db, &[("HRO".into(), false), ("MODA".into(), true)])
            .await
            .unwrap();
        assert_eq!(made, 7 + 7 + 2);
        let counts = staff_counts(&db, "HRO").await.unwrap();
        assert_eq!(
            counts,
            vec![
                (StaffRole::Caseworker, 4),
                (StaffRole::Supervisor, 2),
                (StaffRole::AgencyAdministrator, 1)
            ]
        );
        let kinds = account_counts(&db).await.unwrap();
        assert_eq!(
            kinds,
            vec![("operator".to_string(), 2), ("staff".to_string(), 14)]
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
