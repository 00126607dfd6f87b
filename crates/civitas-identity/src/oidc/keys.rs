//! Signing keys: one current RSA-2048 key (RS256) and one current P-256 key (ES256), kept in
//! the database so that every node signs with the same keys. Rotation makes a new current key
//! per algorithm; replaced keys stay in the JWKS for the retention period, then drop out.

use civitas_store::sqlx::{self, Row};
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde_json::{Value, json};

use super::{OidcError, Provider, now};
use crate::secret::b64;

/// A JWS algorithm this provider signs ID tokens with and accepts client assertions in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, over an RSA-2048 key.
    Rs256,
    /// ECDSA over P-256 with SHA-256.
    Es256,
}

impl SigningAlg {
    /// Both algorithms, in the order they are listed.
    pub const ALL: [SigningAlg; 2] = [SigningAlg::Rs256, SigningAlg::Es256];

    /// The JOSE name: `RS256` or `ES256`.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    /// Parses a JOSE name.
    pub fn parse(name: &str) -> Option<SigningAlg> {
        SigningAlg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
        }
    }

    pub(crate) fn from_jwt(alg: Algorithm) -> Option<SigningAlg> {
        match alg {
            Algorithm::RS256 => Some(SigningAlg::Rs256),
            Algorithm::ES256 => Some(SigningAlg::Es256),
            _ => None,
        }
    }
}

/// A new key pair: its private key (PKCS#1 DER for RSA, PKCS#8 DER for P-256) and public JWK.
fn generate(alg: SigningAlg) -> Result<(Vec<u8>, Value), OidcError> {
    let key_err = |e: &dyn std::fmt::Display| OidcError::Key(e.to_string());
    let mut rng = rand_core::OsRng;
    match alg {
        SigningAlg::Rs256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| key_err(&e))?;
            let der = key.to_pkcs1_der().map_err(|e| key_err(&e))?;
            let jwk = json!({
                "kty": "RSA",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            });
            Ok((der.as_bytes().to_vec(), jwk))
        }
        SigningAlg::Es256 => {
            use p256_13::pkcs8::EncodePrivateKey;
            let key = p256_13::ecdsa::SigningKey::random(&mut rng);
            let der = key.to_pkcs8_der().map_err(|e| key_err(&e))?;
            let point = key.verifying_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(OidcError::Key(
                    "a P-256 public key has no coordinates".into(),
                ));
            };
            let jwk = json!({ "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y) });
            Ok((der.as_bytes().to_vec(), jwk))
        }
    }
}

/// The RFC 7638 thumbprint of a public JWK, used as its `kid`.
fn thumbprint(jwk: &Value) -> String {
    use sha2::Digest;
    let members: &[&str] = if jwk["kty"] == "RSA" {
        &["e", "kty", "n"]
    } else {
        &["crv", "kty", "x", "y"]
    };
    // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = members
        .iter()
        .map(|m| {
            format!(
                "\"{m}\":{}",
                serde_json::to_string(&jwk[*m]).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    b64(&sha2::Sha256::digest(format!("{{{canonical}}}").as_bytes()))
}

/// A stored key.
pub(crate) struct StoredKey {
    pub kid: String,
    pub alg: SigningAlg,
    private_der: Vec<u8>,
    public_jwk: Value,
}

impl StoredKey {
    fn from_row(row: &civitas_store::sqlx::any::AnyRow) -> Result<StoredKey, OidcError> {
        let alg: String = row.try_get("alg")?;
        let jwk: String = row.try_get("public_jwk")?;
        Ok(StoredKey {
            kid: row.try_get("kid")?,
            alg: SigningAlg::parse(&alg)
                .ok_or_else(|| OidcError::Key(format!("stored key has unknown alg {alg}")))?,
            private_der: row.try_get("private_der")?,
            public_jwk: serde_json::from_str(&jwk).map_err(|e| OidcError::Key(e.to_string()))?,
        })
    }

    /// The key, parsed for signing.
    fn signer(&self) -> Result<Signer, OidcError> {
        let key_err = |e: &dyn std::fmt::Display| {
            OidcError::Key(format!("stored {} key {}: {e}", self.alg.name(), self.kid))
        };
        let pair = match self.alg {
            SigningAlg::Rs256 => KeyPair::Rsa(
                ring::rsa::KeyPair::from_der(&self.private_der).map_err(|e| key_err(&e))?,
            ),
            SigningAlg::Es256 => KeyPair::Ec(
                ring::signature::EcdsaKeyPair::from_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.private_der,
                    &ring::rand::SystemRandom::new(),
                )
                .map_err(|e| key_err(&e))?,
            ),
        };
        Ok(Signer {
            kid: self.kid.clone(),
            alg: self.alg,
            pair,
        })
    }

    /// The public key as the JWKS lists it.
    fn public(&self) -> Value {
        let mut jwk = self.public_jwk.clone();
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), Value::from(self.kid.clone()));
            o.insert("alg".into(), Value::from(self.alg.name()));
            o.insert("use".into(), Value::from("sig"));
        }
        jwk
    }

    pub fn decoding_key(&self) -> Result<DecodingKey, OidcError> {
        let s = |m: &str| self.public_jwk[m].as_str().unwrap_or_default().to_string();
        match self.alg {
            SigningAlg::Rs256 => DecodingKey::from_rsa_components(&s("n"), &s("e")),
            SigningAlg::Es256 => DecodingKey::from_ec_components(&s("x"), &s("y")),
        }
        .map_err(|e| OidcError::Key(e.to_string()))
    }
}

const KEY_COLUMNS: &str = "kid, alg, private_der, public_jwk";

enum KeyPair {
    Rsa(ring::rsa::KeyPair),
    Ec(ring::signature::EcdsaKeyPair),
}

/// A current key, parsed once and kept for signing.
pub(crate) struct Signer {
    kid: String,
    alg: SigningAlg,
    pair: KeyPair,
}

impl Signer {
    /// A compact JWS (RFC 7515 §7.1) of `claims`, with `typ`, `alg` and `kid` in its header.
    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, OidcError> {
        let key_err = |e: &dyn std::fmt::Display| OidcError::Key(e.to_string());
        let header = json!({ "typ": typ, "alg": self.alg.name(), "kid": self.kid });
        let payload = serde_json::to_vec(claims).map_err(|e| key_err(&e))?;
        let mut jws = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&payload));
        let rng = ring::rand::SystemRandom::new();
        let signature = match &self.pair {
            KeyPair::Ec(pair) => pair
                .sign(&rng, jws.as_bytes())
                .map_err(|e| key_err(&e))?
                .as_ref()
                .to_vec(),
            KeyPair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &rng,
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(|e| key_err(&e))?;
                sig
            }
        };
        jws.push('.');
        jws.push_str(&b64(&signature));
        Ok(jws)
    }
}

/// The current signers, read from the database at most once a minute. Another node (or the
/// CLI) that rotates the keys is followed within that minute; meanwhile this node signs with
/// the previous key, which stays in the JWKS for the retention period.
#[derive(Default)]
pub(crate) struct Signers {
    current: std::collections::HashMap<&'static str, (std::time::Instant, Arc<Signer>)>,
}

/// How long a current key is used before the database is asked again.
const SIGNER_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl Provider {
    /// Makes sure there is a current key for each algorithm, creating the missing ones.
    pub async fn ensure_keys(&self) -> Result<(), OidcError> {
        for alg in SigningAlg::ALL {
            self.current_key(alg).await?;
        }
        Ok(())
    }

    /// Creates a new current key per algorithm; the keys it replaces keep verifying for the
    /// retention period. Returns the new keys' ids.
    pub async fn rotate_keys(&self) -> Result<Vec<String>, OidcError> {
        let mut kids = Vec::new();
        for alg in SigningAlg::ALL {
            kids.push(self.insert_key(alg, true).await?);
        }
        self.purge_expired().await?;
        self.forget_signers();
        Ok(kids)
    }

    /// Generates and stores a key; when `retire` is set, the algorithm's current keys are
    /// retired in the same transaction.
    async fn insert_key(&self, alg: SigningAlg, retire: bool) -> Result<String, OidcError> {
        // Key generation is CPU-bound (RSA takes a while): keep it off the async workers.
        let (der, jwk) = tokio::task::spawn_blocking(move || generate(alg))
            .await
            .map_err(|e| OidcError::Key(e.to_string()))??;
        let kid = thumbprint(&jwk);
        let now = now();
        let mut tx = self.db.pool().begin().await?;
        if retire {
            sqlx::query(
                "UPDATE oidc_keys SET retired_at = $1 WHERE alg = $2 AND retired_at IS NULL",
            )
            .bind(now)
            .bind(alg.name())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO oidc_keys (kid, alg, private_der, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&kid)
        .bind(alg.name())
        .bind(der)
        .bind(jwk.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(kid = %kid, alg = alg.name(), "OpenID Connect signing key created");
        Ok(kid)
    }

    /// The key that signs with `alg` now, created if there is none.
    pub(crate) async fn current_key(&self, alg: SigningAlg) -> Result<StoredKey, OidcError> {
        for _ in 0..2 {
            let row = sqlx::query(&format!(
                "SELECT {KEY_COLUMNS} FROM oidc_keys WHERE alg = $1 AND retired_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1"
            ))
            .bind(alg.name())
            .fetch_optional(self.db.pool())
            .await?;
            match row {
                Some(row) => return StoredKey::from_row(&row),
                None => {
                    self.insert_key(alg, false).await?;
                }
            }
        }
        Err(OidcError::Key(format!(
            "no {} key could be made",
            alg.name()
        )))
    }

    /// Every key that verifies: the current ones and those retired within the retention period.
    pub(crate) async fn verifying_keys(&self) -> Result<Vec<StoredKey>, OidcError> {
        let since = now() - self.settings.key_retention.as_secs() as i64;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM oidc_keys WHERE retired_at IS NULL OR retired_at >= $1 ORDER BY created_at DESC, kid DESC"
        ))
        .bind(since)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(StoredKey::from_row).collect()
    }

    /// The JWKS document: public parts of every verifying key (`kty`, `n`/`e` or
    /// `crv`/`x`/`y`, `kid`, `alg`, `use`).
    pub async fn jwks(&self) -> Result<Value, OidcError> {
        self.ensure_keys().await?;
        let keys: Vec<Value> = self
            .verifying_keys()
            .await?
            .iter()
            .map(StoredKey::public)
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// Signs `claims` as a compact JWS with the current key of `alg`.
    pub(crate) async fn sign<T: Serialize>(
        &self,
        alg: SigningAlg,
        claims: &T,
    ) -> Result<String, OidcError> {
        self.sign_typed(alg, "JWT", claims).await
    }

    /// [`Provider::sign`] with the header's `typ` (RFC 8725 §3.11: a token of another kind
    /// says so, so it cannot pass for an ID token).
    async fn sign_typed<T: Serialize>(
        &self,
        alg: SigningAlg,
        typ: &str,
        claims: &T,
    ) -> Result<String, OidcError> {
        let cached = self
            .signers
            .read()
            .ok()
            .and_then(|s| s.current.get(alg.name()).cloned())
            .filter(|(at, _)| at.elapsed() < SIGNER_REFRESH)
            .map(|(_, signer)| signer);
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let signer = Arc::new(self.current_key(alg).await?.signer()?);
                if let Ok(mut s) = self.signers.write() {
                    s.current
                        .insert(alg.name(), (std::time::Instant::now(), signer.clone()));
                }
                signer
            }
        };
        signer.sign(typ, claims)
    }

    /// Signs `claims` as a compact JWS of type `typ` for `client`, with the algorithm it
    /// registered for its ID tokens, so it verifies them with the keys it already fetches
    /// (`/oidc/jwks`).
    pub async fn sign_for<T: Serialize>(
        &self,
        client: &super::Client,
        typ: &str,
        claims: &T,
    ) -> Result<String, OidcError> {
        self.sign_typed(client.id_token_alg, typ, claims).await
    }

    /// [`Provider::sign_for`], then, when the client registered an encryption key,
    /// encrypted to it (a nested JWT: a JWE whose content is the JWS).
    pub async fn seal_for<T: Serialize>(
        &self,
        client: &super::Client,
        typ: &str,
        claims: &T,
    ) -> Result<String, OidcError> {
        let jws = self.sign_for(client, typ, claims).await?;
        match client.encryption_key()? {
            Some(key) => key.encrypt(jws.as_bytes(), "JWT"),
            None => Ok(jws),
        }
    }

    /// Forgets the cached signers, so that the next signature reads the current keys.
    fn forget_signers(&self) {
        if let Ok(mut s) = self.signers.write() {
            s.current.clear();
        }
    }
}
