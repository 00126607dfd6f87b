//! Relying parties ("clients") registered with the provider.

use civitas_ledger::Event;
use civitas_store::sqlx::{self, Row};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use subtle::ConstantTimeEq;

use super::split_list;
use super::{ErrorCode, OidcError, Provider, SUPPORTED_SCOPES, SigningAlg, now};
use crate::Loa;
use crate::secret::b64;

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic with the client id and the secret issued at registration.
    ClientSecretBasic,
    /// A JWT signed with one of the client's keys (RFC 7523).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// The registered name, as in `token_endpoint_auth_method`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// Parses a registered name.
    pub fn parse(name: &str) -> Option<AuthMethod> {
        [AuthMethod::ClientSecretBasic, AuthMethod::PrivateKeyJwt]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// What an operator gives to register a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// The name people see on the consent page.
    pub name: String,
    /// Where codes may be sent; compared exactly.
    pub redirect_uris: Vec<String>,
    /// Where people may be sent after logging out; compared exactly.
    pub post_logout_redirect_uris: Vec<String>,
    /// How the client authenticates.
    pub auth_method: AuthMethod,
    /// The client's public keys (a JWKS, JSON): its signing keys, required for
    /// `private_key_jwt`, and an encryption key (P-256, `"use": "enc"`) if it wants what
    /// is signed for it encrypted.
    pub jwks: Option<String>,
    /// How its ID tokens are signed.
    pub id_token_alg: SigningAlg,
    /// The scopes it may ask for; empty means every supported scope.
    pub scopes: Vec<String>,
    /// A Civitas service of its own: no consent page.
    pub first_party: bool,
    /// The weakest sign-in it accepts.
    pub min_loa: Loa,
}

impl NewClient {
    /// A `client_secret_basic` client signing with RS256, allowed every scope, at level low.
    pub fn new(name: &str, redirect_uris: Vec<String>) -> NewClient {
        NewClient {
            name: name.to_string(),
            redirect_uris,
            post_logout_redirect_uris: Vec::new(),
            auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
            id_token_alg: SigningAlg::Rs256,
            scopes: Vec::new(),
            first_party: false,
            min_loa: Loa::Low,
        }
    }
}

/// A registered client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// Its `client_id`.
    pub client_id: String,
    /// The name people see.
    pub name: String,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// Its public keys: for `private_key_jwt`, and an encryption key.
    pub jwks: Option<String>,
    /// How its ID tokens are signed.
    pub id_token_alg: SigningAlg,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
    /// Whether the consent page is skipped.
    pub first_party: bool,
    /// The weakest sign-in it accepts.
    pub min_loa: Loa,
    /// Its sector for pairwise subject identifiers.
    pub sector: String,
    /// Whether it may be used (a disabled client is refused everywhere).
    pub enabled: bool,
    /// When it was registered, in seconds since the Unix epoch.
    pub created_at: i64,
}

/// A client just registered, with its secret: shown once, stored only as a hash.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The client.
    pub client: Client,
    /// The secret, for `client_secret_basic` clients.
    pub secret: Option<String>,
}

fn bad(description: impl Into<String>) -> OidcError {
    OidcError::protocol(ErrorCode::InvalidRequest, description)
}

/// Checks a redirect URI: absolute, no fragment, HTTPS unless the host is this machine.
fn check_uri(uri: &str) -> Result<url::Url, OidcError> {
    let u = url::Url::parse(uri).map_err(|e| bad(format!("`{uri}` is not a URL: {e}")))?;
    if u.fragment().is_some() {
        return Err(bad(format!("`{uri}` has a fragment")));
    }
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(bad(format!(
            "`{uri}` must use https (http only on localhost or a loopback address)"
        ))),
    }
}

/// Checks a `private_key_jwt` client's JWKS: JSON, with at least one RSA or P-256 signing
/// key (a key marked `"use": "enc"` is for encryption, not for signing).
pub(crate) fn parse_client_jwks(jwks: &str) -> Result<JwkSet, OidcError> {
    let set = parse_any_jwks(jwks)?;
    let usable = set.keys.iter().any(|k| {
        !super::jwe::is_encryption_key(k)
            && match &k.algorithm {
                AlgorithmParameters::RSA(_) => true,
                AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P256,
                _ => false,
            }
    });
    if !usable {
        return Err(bad(
            "the client's JWKS has no RSA or P-256 signing key (RS256 or ES256)",
        ));
    }
    Ok(set)
}

/// Checks any client's JWKS: JSON, and its encryption key, if it has one, a P-256 point.
fn parse_any_jwks(jwks: &str) -> Result<JwkSet, OidcError> {
    let set: JwkSet = serde_json::from_str(jwks)
        .map_err(|e| bad(format!("the client's JWKS is not a JWK set: {e}")))?;
    super::jwe::encryption_key(&set).map_err(bad)?;
    Ok(set)
}

impl Client {
    /// The key it registered for encryption (a P-256 key with `"use": "enc"` in its
    /// JWKS): what the provider signs for it is then encrypted to that key. An error when
    /// its JWKS names an encryption key that cannot be used: then nothing is sent in clear
    /// instead.
    pub fn encryption_key(&self) -> Result<Option<super::jwe::EncryptionKey>, OidcError> {
        let Some(jwks) = self.jwks.as_deref() else {
            return Ok(None);
        };
        let set: JwkSet = serde_json::from_str(jwks)
            .map_err(|e| OidcError::Key(format!("the client's JWKS is unreadable: {e}")))?;
        super::jwe::encryption_key(&set).map_err(OidcError::Key)
    }
}

const CLIENT_COLUMNS: &str = "client_id, name, redirect_uris, post_logout_redirect_uris, auth_method, jwks, id_token_alg, scopes, first_party, min_loa, sector, enabled, created_at";

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn client_from_row(row: &civitas_store::sqlx::any::AnyRow) -> Result<Client, OidcError> {
    let corrupt = |what: &str| OidcError::Key(format!("stored client has an unknown {what}"));
    let method: String = row.try_get("auth_method")?;
    let alg: String = row.try_get("id_token_alg")?;
    let loa: String = row.try_get("min_loa")?;
    let first_party: i64 = row.try_get("first_party")?;
    let enabled: i64 = row.try_get("enabled")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        redirect_uris: lines(&row.try_get::<String, _>("redirect_uris")?),
        post_logout_redirect_uris: lines(&row.try_get::<String, _>("post_logout_redirect_uris")?),
        auth_method: AuthMethod::parse(&method).ok_or_else(|| corrupt("auth method"))?,
        jwks: row.try_get("jwks")?,
        id_token_alg: SigningAlg::parse(&alg).ok_or_else(|| corrupt("algorithm"))?,
        scopes: split_list(&row.try_get::<String, _>("scopes")?),
        first_party: first_party != 0,
        min_loa: Loa::from_code(&loa).ok_or_else(|| corrupt("level of assurance"))?,
        sector: row.try_get("sector")?,
        enabled: enabled != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// A client as read for authenticating it: the client and its secret's hash.
#[derive(Debug, Clone)]
pub(crate) struct KnownClient {
    pub client: Client,
    secret_hash: Option<String>,
}

impl KnownClient {
    /// From a row with the client's columns and `secret_hash`.
    pub(crate) fn from_row(row: &civitas_store::sqlx::any::AnyRow) -> Result<Self, OidcError> {
        Ok(KnownClient {
            client: client_from_row(row)?,
            secret_hash: row.try_get("secret_hash")?,
        })
    }

    /// Whether `secret` is this client's. Compares in constant time, and hashes even when
    /// there is nothing to compare with, so timing says nothing either way.
    pub(crate) fn secret_matches(known: Option<&KnownClient>, secret: &str) -> bool {
        let given = crate::secret::hash(secret);
        let expected = known
            .and_then(|k| k.secret_hash.clone())
            .unwrap_or_else(|| "-".repeat(given.len()));
        given.as_bytes().ct_eq(expected.as_bytes()).into()
    }
}

/// The client columns, qualified with `c.`, for reading a client in a join.
pub(crate) fn client_columns_in_join() -> String {
    CLIENT_COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
        + ", c.secret_hash"
}

impl Provider {
    /// Registers a client and logs `identity.oidc_client_registered` with `actor`. Returns
    /// the client and, for `client_secret_basic`, its secret, which is not kept.
    pub async fn register_client(
        &self,
        new: NewClient,
        actor: &str,
    ) -> Result<Registered, OidcError> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(bad("the client's name must be 1 to 200 characters"));
        }
        if new.redirect_uris.is_empty() {
            return Err(bad("a client needs at least one redirect URI"));
        }
        let mut hosts = Vec::new();
        for uri in &new.redirect_uris {
            let host = check_uri(uri)?.host_str().unwrap_or_default().to_string();
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        for uri in &new.post_logout_redirect_uris {
            check_uri(uri)?;
        }
        let jwks = match (new.auth_method, &new.jwks) {
            (AuthMethod::PrivateKeyJwt, Some(j)) => {
                parse_client_jwks(j)?;
                Some(j.clone())
            }
            (AuthMethod::PrivateKeyJwt, None) => {
                return Err(bad("private_key_jwt needs the client's JWKS"));
            }
            // A client with a secret may still register keys: an encryption key.
            (AuthMethod::ClientSecretBasic, Some(j)) => {
                parse_any_jwks(j)?;
                Some(j.clone())
            }
            (AuthMethod::ClientSecretBasic, None) => None,
        };
        let scopes = if new.scopes.is_empty() {
            SUPPORTED_SCOPES.iter().map(|s| s.to_string()).collect()
        } else {
            new.scopes.clone()
        };
        if let Some(s) = scopes
            .iter()
            .find(|s| !SUPPORTED_SCOPES.contains(&s.as_str()))
        {
            return Err(bad(format!("unknown scope `{s}`")));
        }
        if !scopes.iter().any(|s| s == "openid") {
            return Err(bad("a client's scopes must include openid"));
        }
        let client_id = b64(&crate::secret::bytes::<16>());
        let secret =
            (new.auth_method == AuthMethod::ClientSecretBasic).then(|| crate::secret::token(32));
        // One host: pairwise identifiers per host, as OpenID Connect Core §8.1 says; several
        // hosts without a sector_identifier_uri: this client is its own sector.
        let sector = match hosts.as_slice() {
            [one] => one.clone(),
            _ => client_id.clone(),
        };
        let client = Client {
            client_id: client_id.clone(),
            name: name.to_string(),
            redirect_uris: new.redirect_uris.clone(),
            post_logout_redirect_uris: new.post_logout_redirect_uris.clone(),
            auth_method: new.auth_method,
            jwks,
            id_token_alg: new.id_token_alg,
            scopes,
            first_party: new.first_party,
            min_loa: new.min_loa,
            sector,
            enabled: true,
            created_at: now(),
        };
        sqlx::query(&format!(
            "INSERT INTO oidc_clients ({CLIENT_COLUMNS}, secret_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&client.client_id)
        .bind(&client.name)
        .bind(client.redirect_uris.join("\n"))
        .bind(client.post_logout_redirect_uris.join("\n"))
        .bind(client.auth_method.name())
        .bind(client.jwks.clone())
        .bind(client.id_token_alg.name())
        .bind(client.scopes.join(" "))
        .bind(i64::from(client.first_party))
        .bind(client.min_loa.code())
        .bind(&client.sector)
        .bind(1i64)
        .bind(client.created_at)
        .bind(secret.as_deref().map(crate::secret::hash))
        .execute(self.db.pool())
        .await?;
        let event = Event::new(
            "identity.oidc_client_registered",
            actor,
            &format!("oidc-client/{client_id}"),
        )
        .with("client_id", client_id.as_str())
        .with("name", client.name.as_str())
        .with("auth_method", client.auth_method.name())
        .with("id_token_alg", client.id_token_alg.name())
        .with("first_party", client.first_party)
        .with("min_acr", client.min_loa.acr())
        .with("redirect_hosts", hosts);
        self.ledger.append(&event).await?;
        Ok(Registered { client, secret })
    }

    /// Every registered client, oldest first.
    pub async fn clients(&self) -> Result<Vec<Client>, OidcError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients ORDER BY created_at, client_id"
        ))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// One client, enabled or not.
    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, OidcError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Enables or disables a client; a disabled client's tokens stop working. Returns
    /// whether the client exists.
    pub async fn set_client_enabled(
        &self,
        client_id: &str,
        enabled: bool,
    ) -> Result<bool, OidcError> {
        let done = sqlx::query("UPDATE oidc_clients SET enabled = $1 WHERE client_id = $2")
            .bind(i64::from(enabled))
            .bind(client_id)
            .execute(self.db.pool())
            .await?;
        self.grants_changed();
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a client with its codes, grants (and so their tokens) and consents. Returns whether it existed.
    pub async fn remove_client(&self, client_id: &str) -> Result<bool, OidcError> {
        let mut tx = self.db.pool().begin().await?;
        for sql in [
            "DELETE FROM oidc_grants WHERE client_id = $1",
            "DELETE FROM oidc_codes WHERE client_id = $1",
            "DELETE FROM oidc_consents WHERE client_id = $1",
            "DELETE FROM oidc_assertions WHERE client_id = $1",
        ] {
            sqlx::query(sql).bind(client_id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM oidc_clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.grants_changed();
        Ok(done.rows_affected() > 0)
    }

    /// A client with its stored secret hash (none for `private_key_jwt` clients).
    pub(crate) async fn client_with_secret(
        &self,
        client_id: &str,
    ) -> Result<Option<KnownClient>, OidcError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS}, secret_hash FROM oidc_clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(KnownClient::from_row).transpose()
    }

    /// Remembers that a person allowed a client these scopes (adding to what they allowed).
    pub async fn record_consent(
        &self,
        account_id: &str,
        client_id: &str,
        scopes: &[String],
    ) -> Result<(), OidcError> {
        let mut all = self.consented_scopes(account_id, client_id).await?;
        for s in scopes {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        all.sort();
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM oidc_consents WHERE account_id = $1 AND client_id = $2")
            .bind(account_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_consents (account_id, client_id, scopes, granted_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(client_id)
        .bind(all.join(" "))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The scopes a person has allowed a client.
    pub async fn consented_scopes(
        &self,
        account_id: &str,
        client_id: &str,
    ) -> Result<Vec<String>, OidcError> {
        let row = sqlx::query(
            "SELECT scopes FROM oidc_consents WHERE account_id = $1 AND client_id = $2",
        )
        .bind(account_id)
        .bind(client_id)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(r) => split_list(&r.try_get::<String, _>("scopes")?),
            None => Vec::new(),
        })
    }

    /// The applications a person has allowed, newest first: what their account page lists.
    pub async fn allowed_clients(&self, account_id: &str) -> Result<Vec<AllowedClient>, OidcError> {
        let rows = sqlx::query(
            "SELECT c.client_id, c.name, o.scopes, o.granted_at
             FROM oidc_consents o JOIN oidc_clients c ON c.client_id = o.client_id
             WHERE o.account_id = $1 ORDER BY o.granted_at DESC, c.name",
        )
        .bind(account_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AllowedClient {
                    client_id: r.try_get("client_id")?,
                    name: r.try_get("name")?,
                    scopes: split_list(&r.try_get::<String, _>("scopes")?),
                    granted_at: r.try_get("granted_at")?,
                })
            })
            .collect()
    }

    /// Withdraws a person's consent to a client: the consent is forgotten (the next sign-in
    /// there asks again) and every grant the client holds for them is revoked, so its access
    /// and refresh tokens stop working at once. Logs `identity.oidc_consent_withdrawn`, about
    /// the person (`subject_ref`), in the same transaction. Returns whether there was a
    /// consent to withdraw.
    pub async fn withdraw_consent(
        &self,
        account_id: &str,
        subject_ref: &str,
        client_id: &str,
    ) -> Result<bool, OidcError> {
        let tag = self.ledger.subject_secret(subject_ref).await?.tag();
        let mut tx = self.db.pool().begin().await?;
        let forgotten =
            sqlx::query("DELETE FROM oidc_consents WHERE account_id = $1 AND client_id = $2")
                .bind(account_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if forgotten == 0 {
            return Ok(false);
        }
        let revoked = sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1 WHERE account_id = $2 AND client_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(account_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let event = Event::new(
            "identity.oidc_consent_withdrawn",
            &format!("account:{account_id}"),
            &format!("oidc-client/{client_id}"),
        )
        .about(tag)
        .with("client_id", client_id)
        .with("grants_revoked", revoked as i64);
        self.ledger.append_in(&mut tx, &[event]).await?;
        tx.commit().await?;
        self.grants_changed();
        self.ledger.queued();
        Ok(true)
    }
}

/// An application a person has allowed (their remembered consent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedClient {
    /// The client's id.
    pub client_id: String,
    /// Its name, as the consent page showed it.
    pub name: String,
    /// The scopes allowed.
    pub scopes: Vec<String>,
    /// When last allowed, seconds since the Unix epoch.
    pub granted_at: i64,
}
