//! The OpenID Connect provider of Civitas: signing keys and their JWKS, client registration,
//! authorisation codes with PKCE, the token endpoint's logic (client authentication, code and
//! refresh grants with rotation), pairwise subject identifiers and userinfo claims.
//!
//! This module knows nothing about HTTP: the web edge parses requests into the types here and
//! renders what they return. It knows nothing about other blocks' tables either: the caller
//! hands it the signed-in [`Authentication`] and the account's [`AccountClaims`].
//!
//! Choices, in short:
//! - Every client is confidential (`client_secret_basic` or `private_key_jwt`) and PKCE with
//!   `S256` is required of all of them.
//! - Access and refresh tokens are sealed with a provider key and carry their grant (see
//!   `bearer`), so issuing them stores nothing but the grant's rotation counter; every use
//!   still reads the grant, so revoking it takes effect at once. Every code exchange also
//!   returns a refresh token (all clients are confidential); refresh tokens rotate on every
//!   use and a reused one revokes its family.
//! - `sub` is pairwise: HMAC-SHA256 of a provider secret over the client's sector (the host of
//!   its redirect URIs) and the account id. It never carries a national identification number,
//!   and two unrelated clients cannot link a person by it.
//! - Logging out of Civitas revokes every token issued within that session.

mod bearer;
mod claims;
mod clients;
mod codes;
pub mod jwe;
mod keys;
mod subject;
mod tokens;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use civitas_ledger::Ledger;
use civitas_store::Db;

pub use claims::{AccountClaims, SUPPORTED_CLAIMS, userinfo_claims};
pub use clients::{AllowedClient, AuthMethod, Client, NewClient, Registered};
pub use codes::{AuthorizationParams, AuthorizationRequest, AuthorizeError, Decision, Prompt};
pub use keys::SigningAlg;
pub use tokens::{
    AccessGrant, ClientCredentials, IdTokenHint, RevocationRequest, TokenRequest, TokenResponse,
};

use crate::Loa;

/// Scopes this provider knows.
pub const SUPPORTED_SCOPES: [&str; 5] = ["openid", "profile", "email", "phone", "offline_access"];

/// The only PKCE method accepted.
pub const PKCE_METHOD: &str = "S256";

/// The RFC 9396 authorisation details types this provider takes: a data agreement the
/// person is asked to consent to (`{"type": "civitas_data_agreement", "agreement_id": …}`).
/// What one means is decided by the caller (the consent block, through the web layer).
pub const AUTHORIZATION_DETAILS_TYPES: &[&str] = &["civitas_data_agreement"];

/// The `client_assertion_type` of RFC 7523 client authentication.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The grant types the token endpoint accepts.
pub const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

/// The `acr` values this provider can satisfy, weakest first.
pub fn acr_values_supported() -> Vec<&'static str> {
    Loa::ALL.into_iter().map(Loa::acr).collect()
}

/// Lifetimes and addresses of the provider.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier: the public URL of this Civitas, without a trailing slash.
    pub issuer: String,
    /// The token endpoint's URL, an accepted audience of client assertions.
    pub token_endpoint: String,
    /// The revocation endpoint's URL (RFC 7009), an accepted audience of client assertions.
    pub revocation_endpoint: String,
    /// How long an authorisation code may be redeemed (60 s).
    pub code_lifetime: Duration,
    /// How long an access token and an ID token are valid (10 minutes).
    pub access_token_lifetime: Duration,
    /// How long a refresh token may be used, counted from its issue (8 hours); each use
    /// returns a new one.
    pub refresh_token_lifetime: Duration,
    /// The longest a family of tokens lives, however often it is refreshed (30 days).
    pub grant_lifetime: Duration,
    /// How long a replaced signing key stays in the JWKS (7 days).
    pub key_retention: Duration,
    /// The furthest in the future a client assertion's `exp` may be (5 minutes).
    pub assertion_max_lifetime: Duration,
}

impl Settings {
    /// Defaults for an issuer, with the token endpoint at `{issuer}/oidc/token` and the
    /// revocation endpoint at `{issuer}/oidc/revoke`.
    pub fn new(issuer: &str) -> Settings {
        let issuer = issuer.trim_end_matches('/').to_string();
        Settings {
            token_endpoint: format!("{issuer}/oidc/token"),
            revocation_endpoint: format!("{issuer}/oidc/revoke"),
            issuer,
            code_lifetime: Duration::from_secs(60),
            access_token_lifetime: Duration::from_secs(600),
            refresh_token_lifetime: Duration::from_secs(8 * 3600),
            grant_lifetime: Duration::from_secs(30 * 24 * 3600),
            key_retention: Duration::from_secs(7 * 24 * 3600),
            assertion_max_lifetime: Duration::from_secs(300),
        }
    }
}

/// Who is signed in, as the session layer knows it; the provider issues codes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// The account's id.
    pub account_id: String,
    /// The ledger's reference for the person (`Account::subject_ref`): events about the
    /// tokens carry this person's subject tag.
    pub subject_ref: String,
    /// The Civitas session's id (never sent to clients as is).
    pub session_id: String,
    /// The session's level of assurance.
    pub loa: Loa,
    /// How the person signed in (RFC 8176 values such as `pwd`, `hwk`, `mfa`).
    pub amr: Vec<String>,
    /// When the person signed in, in seconds since the Unix epoch.
    pub auth_time: i64,
}

/// The OAuth 2.0 / OpenID Connect error codes this provider answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The code or refresh token is invalid, expired, revoked or used.
    InvalidGrant,
    /// The client may not use this grant or response type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// Only `code` is supported.
    UnsupportedResponseType,
    /// A requested scope is unknown or not allowed for the client.
    InvalidScope,
    /// The person refused.
    AccessDenied,
    /// `prompt=none`, but the person must sign in.
    LoginRequired,
    /// `prompt=none`, but the person must consent.
    ConsentRequired,
    /// `prompt=none`, but the person must act (step up).
    InteractionRequired,
    /// The access token is invalid (RFC 6750).
    InvalidToken,
    /// `authorization_details` is malformed or names a type or object not allowed (RFC 9396).
    InvalidAuthorizationDetails,
    /// Something failed on our side.
    ServerError,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            ErrorCode::ServerError => "server_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the provider: a protocol refusal to send to the client, or a failure of ours.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The request is refused with an OAuth error code and a description for the developer.
    #[error("{code}: {description}")]
    Protocol {
        /// The OAuth error code.
        code: ErrorCode,
        /// A sentence for the client's developer (never a secret).
        description: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
    /// A key could not be made, read or used.
    #[error("signing key failure: {0}")]
    Key(String),
    /// Issued tokens could not be stored (the group commit failed or its writer stopped).
    #[error("storing tokens failed: {0}")]
    Storing(String),
}

impl From<civitas_store::sqlx::Error> for OidcError {
    fn from(e: civitas_store::sqlx::Error) -> Self {
        OidcError::Store(e.into())
    }
}

impl OidcError {
    /// A protocol refusal.
    pub fn protocol(code: ErrorCode, description: impl Into<String>) -> OidcError {
        OidcError::Protocol {
            code,
            description: description.into(),
        }
    }

    /// The OAuth error code to answer with (`server_error` for our own failures).
    pub fn code(&self) -> ErrorCode {
        match self {
            OidcError::Protocol { code, .. } => *code,
            _ => ErrorCode::ServerError,
        }
    }
}

/// The OpenID Connect provider: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Provider {
    db: Db,
    ledger: Ledger,
    settings: Arc<Settings>,
    pairwise_secret: Arc<OnceLock<[u8; 32]>>,
    token_key: Arc<OnceLock<[u8; 32]>>,
    signers: Arc<std::sync::RwLock<keys::Signers>>,
    writer: Arc<writer::Queue>,
    access_memo: Arc<tokens::AccessMemo>,
}

impl Provider {
    /// A provider over the identity block's tables, logging to `ledger`.
    pub fn new(db: Db, ledger: Ledger, settings: Settings) -> Provider {
        Provider {
            access_memo: db.shared(),
            db,
            ledger,
            settings: Arc::new(settings),
            pairwise_secret: Arc::new(OnceLock::new()),
            token_key: Arc::new(OnceLock::new()),
            signers: Arc::default(),
            writer: Arc::default(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Deletes what can no longer be used: codes and grants (with their tokens) expired a day ago or more,
    /// remembered assertion ids past their expiry, and keys past their retention.
    pub async fn purge_expired(&self) -> Result<(), OidcError> {
        let now = now();
        let day_ago = now - 86_400;
        let pool = self.db.pool();
        civitas_store::sqlx::query("DELETE FROM oidc_codes WHERE expires_at < $1")
            .bind(day_ago)
            .execute(pool)
            .await?;
        // No token outlives its grant, so an expired grant takes its tokens with it.
        civitas_store::sqlx::query("DELETE FROM oidc_grants WHERE expires_at < $1")
            .bind(day_ago)
            .execute(pool)
            .await?;
        self.grants_changed();
        civitas_store::sqlx::query("DELETE FROM oidc_assertions WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await?;
        let retention = self.settings.key_retention.as_secs() as i64;
        civitas_store::sqlx::query(
            "DELETE FROM oidc_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
        )
        .bind(now - retention)
        .execute(pool)
        .await?;
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    crate::secret::now_ms() / 1000
}

/// Splits a space-separated list, dropping empty items and duplicates, keeping order.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in s.split(' ').filter(|i| !i.is_empty()) {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    out
}
