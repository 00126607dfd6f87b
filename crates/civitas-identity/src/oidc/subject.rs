//! Pairwise subject identifiers (OpenID Connect Core §8.1).
//!
//! `sub = base64url(HMAC-SHA256(secret, "civitas.oidc.sub.v1" 0 sector 0 account_id))`, where the
//! secret is random, made once and kept in the database, and the sector is the host of the
//! client's redirect URIs (its own client id when they span several hosts), fixed when the
//! client is registered. A person keeps the same `sub` at one client forever, gets a different
//! one at every other sector, and nobody can recover the account id (let alone a national
//! identification number) from it. `sid` is derived the same way from the session id, so the
//! session's real id never leaves Civitas.

use std::sync::OnceLock;

use civitas_store::sqlx::{self, Row};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{OidcError, Provider};
use crate::secret::b64;

impl Provider {
    /// A random 32-byte secret kept in `oidc_secrets` under `name`, made on first use and
    /// then held in `cell`.
    pub(crate) async fn stored_secret(
        &self,
        name: &str,
        cell: &OnceLock<[u8; 32]>,
    ) -> Result<[u8; 32], OidcError> {
        if let Some(s) = cell.get() {
            return Ok(*s);
        }
        // Two nodes may race on the first use: the first insert wins, both read it back.
        sqlx::query(
            "INSERT INTO oidc_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(crate::secret::bytes::<32>().to_vec())
        .execute(self.db.pool())
        .await?;
        let row = sqlx::query("SELECT value FROM oidc_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.db.pool())
            .await?;
        let bytes: Vec<u8> = row.try_get("value")?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| OidcError::Key(format!("the secret {name} is not 32 bytes")))?;
        let _ = cell.set(secret);
        Ok(secret)
    }

    /// The key that seals access and refresh tokens (see `bearer`).
    pub(crate) async fn token_key(&self) -> Result<[u8; 32], OidcError> {
        self.stored_secret("token_mac", &self.token_key).await
    }

    async fn keyed(&self, context: &str, a: &str, b: &str) -> Result<String, OidcError> {
        let secret = self
            .stored_secret("pairwise_subject", &self.pairwise_secret)
            .await?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret)
            .map_err(|e| OidcError::Key(e.to_string()))?;
        for part in [context, "\0", a, "\0", b] {
            mac.update(part.as_bytes());
        }
        Ok(b64(&mac.finalize().into_bytes()))
    }

    /// The `sub` of an account at a client sector.
    pub async fn subject(&self, sector: &str, account_id: &str) -> Result<String, OidcError> {
        self.keyed("civitas.oidc.sub.v1", sector, account_id).await
    }

    /// The `sid` clients see for a Civitas session.
    pub async fn session_sid(&self, session_id: &str) -> Result<String, OidcError> {
        self.keyed("civitas.oidc.sid.v1", "", session_id).await
    }
}
