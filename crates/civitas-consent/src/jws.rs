//! Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037), for consent records. The key
//! is kept in the database (`consent_keys`), so every node signs with the same one, and
//! published as a JWK Set so any JOSE library verifies the records.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::Digest;

use crate::ConsentError;

/// The media type of a signed consent record (the JWS header's `typ`).
pub const TYP: &str = "consent-record+jws";

/// The consent block's signing key.
pub struct ConsentKey {
    signing: SigningKey,
    kid: String,
}

impl ConsentKey {
    fn new(signing: SigningKey) -> ConsentKey {
        let public = signing.verifying_key();
        let kid = B64.encode(&sha2::Sha256::digest(public.as_bytes())[..12]);
        ConsentKey { signing, kid }
    }

    /// Its key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as a JWK Set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64.encode(self.verifying_key().as_bytes()),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }] })
    }

    /// `claims` as a compact JWS.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": TYP, "kid": self.kid });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.to_bytes()))
    }
}

/// Checks a compact JWS against `key` and returns its claims.
pub fn verify_jws(jws: &str, key: &VerifyingKey) -> Result<Value, ConsentError> {
    let bad = |m: &str| ConsentError::Unverified(format!("the signed record {m}"));
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("is not a compact JWS"));
    };
    let header: Value = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("has an unreadable header"))?;
    if header["alg"] != "EdDSA" {
        return Err(bad("is not signed with EdDSA"));
    }
    let signature = B64
        .decode(s)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| bad("has an unreadable signature"))?;
    key.verify(format!("{h}.{p}").as_bytes(), &signature)
        .map_err(|_| bad("does not verify under the consent key"))?;
    B64.decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("has unreadable claims"))
}

/// The signing key stored in the database, made on first use; when two nodes race, both
/// read back the one stored.
pub(crate) async fn stored_key(db: &Db) -> Result<ConsentKey, ConsentError> {
    let read = || async {
        sqlx::query("SELECT secret FROM consent_keys WHERE name = 'records'")
            .fetch_optional(db.pool())
            .await
    };
    if read().await?.is_none() {
        let fresh = SigningKey::generate(&mut rand_core::OsRng);
        sqlx::query("INSERT INTO consent_keys (name, secret, created_ms) VALUES ('records', $1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(B64.encode(fresh.to_bytes()))
            .bind(civitas_ledger::event::now_ms())
            .execute(db.pool())
            .await?;
    }
    let row = read()
        .await?
        .ok_or_else(|| ConsentError::Invalid("the consent key vanished".into()))?;
    let secret: String = row.try_get("secret")?;
    let bytes: [u8; 32] = B64
        .decode(secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ConsentError::Invalid("the stored consent key is unreadable".into()))?;
    Ok(ConsentKey::new(SigningKey::from_bytes(&bytes)))
}
