//! API keys and the authentication of each call, as Notify's clients do it.
//!
//! A key as handed out is `{name}-{service id}-{secret}`; the clients take the secret from
//! its last 36 characters and the service id from the 36 before them, and sign a fresh JWT
//! per call: HS256 with the secret's UTF-8 bytes as the key, claims `iss` (the service id)
//! and `iat` (seconds). The server finds the service, tries each of its keys, and answers
//! what Notify answers when it cannot: 401 for a missing or non-bearer header, 403 for the
//! rest, each with Notify's message, so a client's developer sees what Notify would show.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::cache::ServiceKeys;
use crate::{Notify, NotifyError, Service};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Sends to anyone (once the service is live; a trial service reaches only its team).
    Live,
    /// Sends only to the service's guest list.
    Team,
    /// Sends nothing: its notifications end as Notify's simulator would end them.
    Test,
}

impl KeyType {
    /// Its code, as stored and as the command line takes it.
    pub fn code(self) -> &'static str {
        match self {
            KeyType::Live => "live",
            KeyType::Team => "team",
            KeyType::Test => "test",
        }
    }

    /// Parses a code (`normal`, Notify's own word for a live key, too).
    pub fn parse(code: &str) -> Option<KeyType> {
        match code {
            "live" | "normal" => Some(KeyType::Live),
            "team" => Some(KeyType::Team),
            "test" => Some(KeyType::Test),
            _ => None,
        }
    }
}

/// The service and key a call was made with.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The sending service.
    pub service: Service,
    /// The key's id.
    pub key_id: String,
    /// The key's type.
    pub key_type: KeyType,
}

/// Why a call is not authenticated: the status and Notify's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// 401 or 403.
    pub status: u16,
    /// What Notify says.
    pub message: String,
}

fn refused(status: u16, message: &str) -> AuthError {
    AuthError {
        status,
        message: message.to_string(),
    }
}

const NOT_A_JWT: &str = "Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header";

/// How far `iat` may be from now, in seconds.
const CLOCK_WINDOW: i64 = 30;

/// The parts of a compact JWT, decoded.
struct Token<'a> {
    header: Value,
    claims: Value,
    signed: &'a str,
    signature: Vec<u8>,
}

fn decode(token: &str) -> Option<Token<'_>> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (header, claims) = signed.split_once('.')?;
    let part = |p: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?).ok()
    };
    Some(Token {
        header: part(header)?,
        claims: part(claims)?,
        signed,
        signature: URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .ok()?,
    })
}

/// The caller, if the token is signed with one of the service's keys; an error for a
/// service that is archived or a token that is signed but not acceptable.
fn verified(known: &ServiceKeys, t: &Token<'_>) -> Result<Option<Caller>, AuthError> {
    if known.keys.is_empty() {
        return Ok(None);
    }
    if !known.service.active {
        return Err(refused(403, "Invalid token: service is archived"));
    }
    for key in &known.keys {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()) else {
            continue;
        };
        mac.update(t.signed.as_bytes());
        let expected = mac.finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&t.signature)) {
            continue;
        }
        // Without `iat` the token verifies against no key, as at Notify.
        let Some(iat) = t.claims.get("iat").and_then(Value::as_i64) else {
            continue;
        };
        if t.header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(refused(403, "Invalid token: algorithm used is not HS256"));
        }
        let now = now_ms() / 1000;
        if (i128::from(now) - i128::from(iat)).abs() > i128::from(CLOCK_WINDOW) {
            return Err(refused(
                403,
                "Error: Your system clock must be accurate to within 30 seconds",
            ));
        }
        if key.revoked {
            return Err(refused(403, "Invalid token: API key revoked"));
        }
        return Ok(Some(Caller {
            service: known.service.clone(),
            key_id: key.id.clone(),
            key_type: key.key_type,
        }));
    }
    Ok(None)
}

impl Notify {
    /// Authenticates a call by its `Authorization` header.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let Some(header) = authorization else {
            return Err(refused(
                401,
                "Unauthorized: authentication token must be provided",
            ));
        };
        let scheme_ok = header
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer "));
        if !scheme_ok {
            return Err(refused(
                401,
                "Unauthorized: authentication bearer scheme must be used",
            ));
        }
        let token = header[7..].trim();
        let Some(t) = decode(token) else {
            return Err(refused(403, NOT_A_JWT));
        };
        let Some(iss) = t.claims.get("iss").and_then(Value::as_str) else {
            return Err(refused(403, "Invalid token: iss field not provided"));
        };
        if uuid::Uuid::try_parse(iss).is_err() {
            return Err(refused(
                403,
                "Invalid token: service id is not the right data type",
            ));
        }
        let failed = |e: NotifyError| {
            tracing::error!(error = %e, "a Notify call could not be authenticated");
            refused(500, "Internal server error")
        };
        // The service and its keys as remembered; read again when a call matches none of
        // them (a key made since), and then the answer is final.
        let mut remembered = self.caches.callers.get(iss);
        loop {
            let read_now = remembered.is_none();
            let known = match remembered.take() {
                Some(k) => k,
                None => {
                    let Some(service) = self.service(iss).await.map_err(failed)? else {
                        return Err(refused(403, "Invalid token: service not found"));
                    };
                    let keys = self.keys_with_secrets(&service.id).await.map_err(failed)?;
                    let k = std::sync::Arc::new(ServiceKeys { service, keys });
                    self.caches.callers.put(iss.to_string(), k.clone());
                    k
                }
            };
            match verified(&known, &t)? {
                Some(caller) => return Ok(caller),
                None if read_now => {
                    return Err(refused(
                        403,
                        if known.keys.is_empty() {
                            "Invalid token: service has no API keys"
                        } else {
                            "Invalid token: API key not found"
                        },
                    ));
                }
                None => {}
            }
        }
    }

    /// A new key for `service_id`, logged (`notify.key_created`) with `actor`. Returns its
    /// id and the key as its holder uses it (`{name}-{service id}-{secret}`): shown once;
    /// the secret is kept to check the calls' signatures, and never logged.
    pub async fn create_key(
        &self,
        service_id: &str,
        name: &str,
        key_type: KeyType,
        actor: &str,
    ) -> Result<(String, String), NotifyError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(NotifyError::Invalid(
                "a key's name is 1 to 255 bytes".into(),
            ));
        }
        if self.service(service_id).await?.is_none() {
            return Err(NotifyError::NotFound(format!("no service {service_id}")));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let secret = uuid::Uuid::new_v4().to_string();
        let mut w = civitas_store::Script::new();
        w.push(
            "INSERT INTO notify_api_keys (id, service_id, name, key_type, secret, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                civitas_store::Value::Text(id.clone()),
                civitas_store::Value::Text(service_id.into()),
                civitas_store::Value::Text(name.into()),
                civitas_store::Value::Str(key_type.code()),
                civitas_store::Value::Text(secret.clone()),
                civitas_store::Value::I64(now_ms()),
            ],
        );
        let event = civitas_ledger::Event::new(
            "notify.key_created",
            actor,
            &format!("notify/service/{service_id}"),
        )
        .with("key_id", id.clone())
        .with("key_type", key_type.code());
        self.ledger.append_with(&event, w).await?;
        self.caches.forget_service(service_id);
        Ok((id, format!("{name}-{service_id}-{secret}")))
    }

    /// Revokes key `key_id` of `service_id` (`notify.key_revoked`): its calls are refused
    /// from now on. Returns whether there was such a key in force.
    pub async fn revoke_key(
        &self,
        service_id: &str,
        key_id: &str,
        actor: &str,
    ) -> Result<bool, NotifyError> {
        let mut w = civitas_store::Script::new();
        w.push(
            "UPDATE notify_api_keys SET revoked_ms = ? WHERE id = ? AND service_id = ? AND revoked_ms IS NULL",
            vec![
                civitas_store::Value::I64(now_ms()),
                civitas_store::Value::Text(key_id.into()),
                civitas_store::Value::Text(service_id.into()),
            ],
        );
        let event = civitas_ledger::Event::new(
            "notify.key_revoked",
            actor,
            &format!("notify/service/{service_id}"),
        )
        .with("key_id", key_id.to_string());
        let done = self.ledger.append_with(&event, w).await;
        self.caches.forget_service(service_id);
        match done {
            Ok(_) => Ok(true),
            Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn keys_with_secrets(&self, service_id: &str) -> Result<Vec<StoredKey>, NotifyError> {
        let rows = sqlx::query(
            "SELECT id, key_type, secret, revoked_ms FROM notify_api_keys WHERE service_id = $1 ORDER BY created_ms",
        )
        .bind(service_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("key_type")?;
                Ok(StoredKey {
                    id: r.try_get("id")?,
                    key_type: KeyType::parse(&kind)
                        .ok_or_else(|| NotifyError::Invalid(format!("key type {kind}")))?,
                    secret: r.try_get("secret")?,
                    revoked: r.try_get::<Option<i64>, _>("revoked_ms")?.is_some(),
                })
            })
            .collect()
    }
}

/// A key with its secret, as authentication checks calls against it.
pub(crate) struct StoredKey {
    id: String,
    key_type: KeyType,
    secret: String,
    revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token as Notify's clients make one, from a key as handed out.
    fn bearer(key: &str) -> String {
        let (service, secret) = (&key[key.len() - 73..key.len() - 37], &key[key.len() - 36..]);
        let head = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let claims = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"iss": service, "iat": now_ms() / 1000}).to_string());
        let signed = format!("{head}.{claims}");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("Bearer {signed}.{sig}")
    }

    #[tokio::test]
    async fn keys_are_remembered_yet_a_change_through_any_handle_counts_at_once() {
        for (db, ledger) in
            civitas_ledger::testing::ledgers_on_both_engines("notify-keys", &[crate::COMPONENT])
                .await
        {
            let actor = "operator:test";
            let (a, b) = (
                Notify::new(db.clone(), ledger.clone()),
                Notify::new(db.clone(), ledger.clone()),
            );
            let s = a.create_service("Remembered", actor).await.unwrap();
            let (id, key) = a
                .create_key(&s.id, "k", KeyType::Live, actor)
                .await
                .unwrap();
            let token = bearer(&key);
            assert_eq!(a.authenticate(Some(&token)).await.unwrap().key_id, id);
            // Revoked through another handle on the same database: refused at once.
            assert!(b.revoke_key(&s.id, &id, actor).await.unwrap());
            assert_eq!(
                a.authenticate(Some(&token)).await.unwrap_err().message,
                "Invalid token: API key revoked"
            );
            // A key written by another process (here, straight into the table): the
            // remembered keys match none of its calls, so they are read again.
            let secret = uuid::Uuid::new_v4().to_string();
            sqlx::query("INSERT INTO notify_api_keys (id, service_id, name, key_type, secret, created_ms) VALUES ('other', $1, 'o', 'live', $2, 0)")
                .bind(&s.id)
                .bind(&secret)
                .execute(db.pool())
                .await
                .unwrap();
            let other = bearer(&format!("o-{}-{secret}", s.id));
            assert_eq!(a.authenticate(Some(&other)).await.unwrap().key_id, "other");
            // Made live by another process: seen within a second.
            sqlx::query("UPDATE notify_services SET live = 1 WHERE id = $1")
                .bind(&s.id)
                .execute(db.pool())
                .await
                .unwrap();
            tokio::time::sleep(crate::cache::FRESH_FOR).await;
            assert!(a.authenticate(Some(&other)).await.unwrap().service.live);
        }
    }
}
