//! The token endpoint's logic: client authentication (`client_secret_basic`,
//! `private_key_jwt`), the authorisation-code grant with PKCE, the refresh-token grant with
//! rotation and reuse detection, ID tokens; and access-token lookup for userinfo.

use std::collections::HashSet;
use std::sync::Arc;

use civitas_ledger::{Event, SubjectTag};
use civitas_store::sqlx::{self, Row};
use jsonwebtoken::Validation;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bearer::{self, AccessClaims, RefreshClaims};
use super::clients::{KnownClient, client_columns_in_join, parse_client_jwks};
use super::writer::{NewTokens, Written};
use super::{
    AuthMethod, Client, ErrorCode, GRANT_TYPES, JWT_BEARER_ASSERTION, OidcError, Provider,
    SigningAlg, now, split_list,
};
use crate::secret::b64;

/// Clock skew tolerated on client assertions and ID-token hints, in seconds.
const LEEWAY: u64 = 30;

/// How the client authenticated, as the web edge found it in the request.
#[derive(Debug, Clone)]
pub enum ClientCredentials {
    /// HTTP Basic (`client_secret_basic`), already form-decoded (RFC 6749 §2.3.1).
    Basic {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// `client_assertion_type` and `client_assertion` (RFC 7523, `private_key_jwt`).
    Assertion {
        /// Must be [`JWT_BEARER_ASSERTION`].
        assertion_type: String,
        /// The signed JWT.
        assertion: String,
    },
    /// No credentials (or a kind not supported, such as `client_secret_post`).
    None,
}

/// A token request, as sent.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: Option<String>,
    /// The `client_id` form parameter, if sent; must agree with the credentials.
    pub client_id: Option<String>,
    /// The code (authorisation-code grant).
    pub code: Option<String>,
    /// The redirect URI the code was sent to (authorisation-code grant).
    pub redirect_uri: Option<String>,
    /// The PKCE verifier (authorisation-code grant).
    pub code_verifier: Option<String>,
    /// The refresh token (refresh grant).
    pub refresh_token: Option<String>,
    /// A narrower scope (refresh grant).
    pub scope: Option<String>,
    /// How the client authenticated.
    pub credentials: ClientCredentials,
}

/// A token revocation request (RFC 7009 §2.1), as sent.
#[derive(Debug, Clone)]
pub struct RevocationRequest {
    /// The `client_id` form parameter, if sent; must agree with the credentials.
    pub client_id: Option<String>,
    /// The access or refresh token to revoke.
    pub token: Option<String>,
    /// How the client authenticated.
    pub credentials: ClientCredentials,
}

/// A successful token response (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    /// The opaque access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The next refresh token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The signed ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The granted scopes, space-separated.
    pub scope: String,
    /// The authorisation details granted (RFC 9396 §7), when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<serde_json::Value>,
}

/// What a valid access token lets its bearer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// The account it is about.
    pub account_id: String,
    /// The account's `sub` at that client.
    pub sub: String,
    /// The Civitas session it was issued in.
    pub session_id: String,
    /// The scopes it carries.
    pub scopes: Vec<String>,
    /// The authorisation details its grant carries (RFC 9396).
    pub authorization_details: Vec<serde_json::Value>,
}

/// A live grant as [`Provider::data_access`] reads it, before the token's own claims.
pub(crate) struct DataAccess {
    client: Client,
    account: crate::Account,
    sub: String,
    session_id: String,
    authorization_details: Vec<Value>,
}

impl DataAccess {
    fn for_token(&self, claims: &AccessClaims) -> (AccessGrant, Client, crate::Account) {
        let grant = AccessGrant {
            client_id: self.client.client_id.clone(),
            account_id: self.account.id.clone(),
            sub: self.sub.clone(),
            session_id: self.session_id.clone(),
            scopes: split_list(&claims.scope),
            authorization_details: self.authorization_details.clone(),
        };
        (grant, self.client.clone(), self.account.clone())
    }
}

/// What [`Provider::data_access`] found of each grant (`None`: not live), for a second: a
/// data release reads its token's grant, client and account on every call, and an
/// organisation's application calls with the same token again and again. Whoever revokes a
/// grant or changes a client in this process calls [`Provider::grants_changed`] once the
/// change has committed, which forgets everything and moves the generation on, so a query
/// that raced the change (it began before and ends after) cannot put back what it read.
/// One per database ([`civitas_store::Db::shared`]), whatever number of providers use it.
#[derive(Default)]
pub(crate) struct AccessMemo(std::sync::Mutex<MemoState>);

#[derive(Default)]
struct MemoState {
    generation: u64,
    grants: std::collections::HashMap<String, (std::time::Instant, Option<Arc<DataAccess>>)>,
}

/// How long [`AccessMemo`] keeps what it found.
const ACCESS_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The most grants [`AccessMemo`] keeps; past it, it starts again empty.
const ACCESS_MEMO_MAX: usize = 10_000;

impl AccessMemo {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is remembered of grant `grant_id`, or the generation to remember a read under.
    pub(crate) fn get(&self, grant_id: &str) -> Result<Option<Arc<DataAccess>>, u64> {
        let state = self.state();
        match state.grants.get(grant_id) {
            Some((at, found)) if at.elapsed() < ACCESS_MEMO_TTL => Ok(found.clone()),
            _ => Err(state.generation),
        }
    }

    /// Remembers what a query begun at `generation` found, unless something changed since.
    pub(crate) fn put(&self, generation: u64, grant_id: &str, found: Option<Arc<DataAccess>>) {
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        if state.grants.len() >= ACCESS_MEMO_MAX {
            state.grants.clear();
        }
        state
            .grants
            .insert(grant_id.to_string(), (std::time::Instant::now(), found));
    }

    pub(crate) fn forget_all(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.grants.clear();
    }
}

/// What a verified `id_token_hint` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    /// The client it was issued to (`aud`).
    pub client_id: String,
    /// The person's `sub` at that client.
    pub sub: String,
    /// The session's `sid`.
    pub sid: Option<String>,
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    acr: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    at_hash: String,
    sid: &'a str,
}

#[derive(Deserialize)]
struct AssertionClaims {
    exp: i64,
    jti: Option<String>,
}

/// Why no tokens were issued.
enum Refusal {
    /// The consumed refresh token was used meanwhile, or the grant revoked.
    Refused,
    /// Something failed.
    Failed(OidcError),
}

impl<E: Into<OidcError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Refusal::Failed(e.into())
    }
}

/// A grant (the family of tokens from one code) as stored.
struct Grant {
    grant_id: String,
    client_id: String,
    account_id: String,
    subject_ref: String,
    session_id: String,
    scope: String,
    acr: String,
    amr: String,
    auth_time: i64,
    nonce: Option<String>,
    expires_at: i64,
    revoked: bool,
    authorization_details: Vec<serde_json::Value>,
}

/// A grant's stored authorisation details (none when the column is empty).
fn details_of(text: Option<String>) -> Vec<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

const GRANT_COLUMNS: &str = "g.grant_id, g.client_id, g.account_id, g.subject_ref, g.session_id, g.scope, g.acr, g.amr, g.auth_time, g.nonce, g.expires_at, g.revoked_at, g.authorization_details";

fn grant_from_row(row: &civitas_store::sqlx::any::AnyRow) -> Result<Grant, OidcError> {
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(Grant {
        grant_id: row.try_get("grant_id")?,
        client_id: row.try_get("client_id")?,
        account_id: row.try_get("account_id")?,
        subject_ref: row.try_get("subject_ref")?,
        session_id: row.try_get("session_id")?,
        scope: row.try_get("scope")?,
        acr: row.try_get("acr")?,
        amr: row.try_get("amr")?,
        auth_time: row.try_get("auth_time")?,
        nonce: row.try_get("nonce")?,
        expires_at: row.try_get("expires_at")?,
        revoked: revoked.is_some(),
        authorization_details: details_of(row.try_get("authorization_details")?),
    })
}

fn invalid_client(d: &str) -> OidcError {
    OidcError::protocol(ErrorCode::InvalidClient, d)
}

fn invalid_grant(d: &str) -> OidcError {
    OidcError::protocol(ErrorCode::InvalidGrant, d)
}

fn invalid_request(d: &str) -> OidcError {
    OidcError::protocol(ErrorCode::InvalidRequest, d)
}

/// `at_hash`: base64url of the left half of SHA-256 of the access token (RS256 and ES256).
pub(crate) fn at_hash(access_token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(access_token.as_bytes());
    b64(&digest[..16])
}

/// PKCE S256: base64url(SHA-256(verifier)), with the verifier's form checked (RFC 7636 §4.1).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use sha2::Digest;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && b64(&sha2::Sha256::digest(verifier.as_bytes())) == challenge
}

/// The unverified payload of a compact JWS, to find out who claims to have signed it.
fn unverified_claims(jwt: &str) -> Option<Value> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn jwk_fits(jwk: &Jwk, alg: SigningAlg) -> bool {
    if super::jwe::is_encryption_key(jwk) {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), SigningAlg::Rs256) => true,
        (AlgorithmParameters::EllipticCurve(ec), SigningAlg::Es256) => {
            ec.curve == jsonwebtoken::jwk::EllipticCurve::P256
        }
        _ => false,
    }
}

impl Provider {
    async fn subject_tag(&self, grant: &Grant) -> Result<SubjectTag, OidcError> {
        Ok(self.ledger.subject_secret(&grant.subject_ref).await?.tag())
    }

    /// Authenticates the client of a token request.
    pub async fn authenticate_client(
        &self,
        client_id_param: Option<&str>,
        credentials: &ClientCredentials,
    ) -> Result<Client, OidcError> {
        self.authenticate_known_client(client_id_param, credentials, None)
            .await
    }

    /// [`Provider::authenticate_client`], with the client already read when the request's
    /// token named it (the refresh grant reads token, grant and client at once); another
    /// client is read as usual.
    async fn authenticate_known_client(
        &self,
        client_id_param: Option<&str>,
        credentials: &ClientCredentials,
        known: Option<KnownClient>,
    ) -> Result<Client, OidcError> {
        let read = |id: &str| {
            let id = id.to_string();
            let known = known.clone();
            async move {
                match known.filter(|k| k.client.client_id == id) {
                    Some(k) => Ok(Some(k)),
                    None => self.client_with_secret(&id).await,
                }
            }
        };
        match credentials {
            ClientCredentials::Basic { client_id, secret } => {
                if client_id_param.is_some_and(|p| p != client_id) {
                    return Err(invalid_client(
                        "client_id differs from the Basic credentials",
                    ));
                }
                let known = read(client_id).await?;
                let matches = KnownClient::secret_matches(known.as_ref(), secret);
                match known {
                    Some(k)
                        if matches
                            && k.client.enabled
                            && k.client.auth_method == AuthMethod::ClientSecretBasic =>
                    {
                        Ok(k.client)
                    }
                    _ => Err(invalid_client("client authentication failed")),
                }
            }
            ClientCredentials::Assertion {
                assertion_type,
                assertion,
            } => {
                if assertion_type != JWT_BEARER_ASSERTION {
                    return Err(invalid_client("unsupported client_assertion_type"));
                }
                let iss = unverified_claims(assertion)
                    .and_then(|c| c["iss"].as_str().map(str::to_string))
                    .ok_or_else(|| {
                        invalid_client("the client assertion is not a JWT with an iss")
                    })?;
                if client_id_param.is_some_and(|p| p != iss) {
                    return Err(invalid_client("client_id differs from the assertion's iss"));
                }
                let client = read(&iss).await?.map(|k| k.client);
                self.verify_client_assertion(client, assertion).await
            }
            ClientCredentials::None => Err(invalid_client(
                "client authentication is required (client_secret_basic or private_key_jwt)",
            )),
        }
    }

    /// Verifies a `private_key_jwt` assertion (RFC 7523 §3) from `client` (the one its
    /// `iss` names) and remembers its `jti` until it expires, so that it cannot be replayed.
    async fn verify_client_assertion(
        &self,
        client: Option<Client>,
        assertion: &str,
    ) -> Result<Client, OidcError> {
        let fail = || invalid_client("client authentication failed");
        let client = client
            .filter(|c| c.enabled && c.auth_method == AuthMethod::PrivateKeyJwt)
            .ok_or_else(fail)?;
        let jwks = parse_client_jwks(client.jwks.as_deref().unwrap_or_default())?;
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| fail())?;
        let alg = SigningAlg::from_jwt(header.alg).ok_or_else(|| {
            invalid_client("client assertions must be signed with RS256 or ES256")
        })?;
        let mut validation = Validation::new(alg.jwt());
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        // RFC 7523 §3: the audience is the authorisation server; its token endpoint URL, or
        // the endpoint the assertion is sent to, identify it too.
        validation.set_audience(&[
            &self.settings.token_endpoint,
            &self.settings.revocation_endpoint,
            &self.settings.issuer,
        ]);
        let candidates = jwks.keys.iter().filter(|k| {
            jwk_fits(k, alg)
                && header
                    .kid
                    .as_ref()
                    .is_none_or(|kid| k.common.key_id.as_ref() == Some(kid))
        });
        let mut verified = None;
        for jwk in candidates {
            let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(jwk) else {
                continue;
            };
            if let Ok(data) = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
            {
                verified = Some(data.claims);
                break;
            }
        }
        let claims = verified.ok_or_else(fail)?;
        let now = now();
        if claims.exp > now + self.settings.assertion_max_lifetime.as_secs() as i64 + LEEWAY as i64
        {
            return Err(invalid_client(
                "the client assertion's exp is too far ahead",
            ));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| invalid_client("the client assertion has no jti"))?;
        let fresh = sqlx::query(
            "INSERT INTO oidc_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT (client_id, jti) DO NOTHING",
        )
        .bind(&client.client_id)
        .bind(&jti)
        .bind(claims.exp + LEEWAY as i64)
        .execute(self.db.pool())
        .await?;
        if fresh.rows_affected() == 0 {
            return Err(invalid_client("the client assertion was already used"));
        }
        Ok(client)
    }

    /// The token endpoint: authenticates the client, then runs the grant.
    pub async fn token(&self, req: &TokenRequest) -> Result<TokenResponse, OidcError> {
        let grant_type = req
            .grant_type
            .as_deref()
            .ok_or_else(|| invalid_request("grant_type is missing"))?;
        if !GRANT_TYPES.contains(&grant_type) {
            return Err(OidcError::protocol(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type `{grant_type}` is not supported"),
            ));
        }
        if grant_type == "refresh_token" {
            return self.refresh(req).await;
        }
        let client = self
            .authenticate_client(req.client_id.as_deref(), &req.credentials)
            .await?;
        self.redeem_code(&client, req).await
    }

    async fn revoke_grant(&self, grant_id: &str) -> Result<(), OidcError> {
        sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(grant_id)
        .execute(self.db.pool())
        .await?;
        self.grants_changed();
        Ok(())
    }

    /// The revocation endpoint's logic (RFC 7009): a client revokes an access or refresh
    /// token it holds, for example when the person signs out of it. The whole grant the
    /// token came from is revoked (§2.1 allows it), so every token of that family stops at
    /// once, and `identity.tokens_revoked` is logged. A token that is not ours, malformed,
    /// expired or already revoked is no error (§2.2); one issued to another client is
    /// refused.
    pub async fn revoke_token(&self, req: &RevocationRequest) -> Result<(), OidcError> {
        let client = self
            .authenticate_client(req.client_id.as_deref(), &req.credentials)
            .await?;
        let token = req
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid_request("token is missing"))?;
        let key = self.token_key().await?;
        let grant_id = match (
            bearer::open_access(&key, token),
            bearer::open_refresh(&key, token),
        ) {
            (Some(a), _) => a.grant_id,
            (_, Some(r)) => r.grant_id,
            (None, None) => return Ok(()),
        };
        let Some(grant) = self.grant(&grant_id).await? else {
            return Ok(());
        };
        if grant.client_id != client.client_id {
            return Err(OidcError::protocol(
                ErrorCode::UnauthorizedClient,
                "the token was issued to another client",
            ));
        }
        // The revocation and its event commit together (the ledger's outbox), so a failure
        // cannot leave a revoked grant with nothing logged.
        let event = Event::new(
            "identity.tokens_revoked",
            &format!("client:{}", client.client_id),
            &format!("oidc-grant/{}", grant.grant_id),
        )
        .about(self.subject_tag(&grant).await?)
        .with("client_id", client.client_id.as_str());
        let mut tx = self.db.pool().begin().await?;
        let revoked = sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1 WHERE grant_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(&grant.grant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoked == 1 {
            self.ledger.append_in(&mut tx, &[event]).await?;
        }
        tx.commit().await?;
        self.grants_changed();
        self.ledger.queued();
        Ok(())
    }

    async fn grant(&self, grant_id: &str) -> Result<Option<Grant>, OidcError> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM oidc_grants g WHERE g.grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn redeem_code(
        &self,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OidcError> {
        let code = req
            .code
            .as_deref()
            .ok_or_else(|| invalid_request("code is missing"))?;
        let hash = crate::secret::hash(code);
        let row = sqlx::query(
            "SELECT grant_id, client_id, redirect_uri, code_challenge, expires_at, used_at FROM oidc_codes WHERE code_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| invalid_grant("the code is not valid"))?;
        let grant_id: String = row.try_get("grant_id")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let now = now();
        // Single use, enforced by a compare-and-set: of two concurrent redemptions one wins.
        let won = used_at.is_none()
            && sqlx::query(
                "UPDATE oidc_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL",
            )
            .bind(now)
            .bind(&hash)
            .execute(self.db.pool())
            .await?
            .rows_affected()
                == 1;
        if !won {
            // RFC 6749 §4.1.2: a code used twice revokes what was issued from it.
            self.revoke_grant(&grant_id).await?;
            if let Some(g) = self.grant(&grant_id).await? {
                let event = Event::new(
                    "identity.authorization_code_reused",
                    &format!("client:{}", client.client_id),
                    &format!("oidc-grant/{grant_id}"),
                )
                .about(self.subject_tag(&g).await?)
                .with("client_id", g.client_id.as_str());
                self.ledger.append(&event).await?;
            }
            return Err(invalid_grant(
                "the code was already used; the tokens issued from it are revoked",
            ));
        }
        let code_client: String = row.try_get("client_id")?;
        if code_client != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        if now >= expires_at {
            return Err(invalid_grant("the code has expired"));
        }
        let redirect_uri: String = row.try_get("redirect_uri")?;
        if req.redirect_uri.as_deref() != Some(redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri differs from the authorisation request's",
            ));
        }
        let challenge: String = row.try_get("code_challenge")?;
        let verifier = req
            .code_verifier
            .as_deref()
            .ok_or_else(|| invalid_grant("code_verifier is missing (PKCE is required)"))?;
        if !pkce_matches(verifier, &challenge) {
            return Err(invalid_grant("the PKCE code_verifier does not match"));
        }
        let grant = self
            .grant(&grant_id)
            .await?
            .filter(|g| !g.revoked && now < g.expires_at)
            .ok_or_else(|| invalid_grant("the sign-in this code came from has ended"))?;
        let scope = grant.scope.clone();
        self.issue_tokens(client, &grant, &scope, grant.nonce.as_deref())
            .await
    }

    async fn refresh(&self, req: &TokenRequest) -> Result<TokenResponse, OidcError> {
        // The token names its grant; one read finds the grant and its client, which
        // authenticates the client without reading it again.
        let key = self.token_key().await?;
        let presented = req
            .refresh_token
            .as_deref()
            .and_then(|t| bearer::open_refresh(&key, t));
        let row = match &presented {
            Some(claims) => {
                sqlx::query(&format!(
                    "SELECT {GRANT_COLUMNS}, g.refresh_generation, {}
                 FROM oidc_grants g JOIN oidc_clients c ON c.client_id = g.client_id
                 WHERE g.grant_id = $1",
                    client_columns_in_join()
                ))
                .bind(&claims.grant_id)
                .fetch_optional(self.db.pool())
                .await?
            }
            None => None,
        };
        let known = row.as_ref().map(KnownClient::from_row).transpose()?;
        let client = self
            .authenticate_known_client(req.client_id.as_deref(), &req.credentials, known)
            .await?;
        let (Some(presented), Some(row)) = (presented, row) else {
            return Err(match req.refresh_token {
                None => invalid_request("refresh_token is missing"),
                Some(_) => invalid_grant("the refresh token is not valid"),
            });
        };
        let grant = grant_from_row(&row)?;
        if grant.client_id != client.client_id {
            return Err(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if grant.revoked {
            return Err(invalid_grant("the refresh token has been revoked"));
        }
        let current: i64 = row.try_get("refresh_generation")?;
        if presented.generation < current {
            return Err(self.refresh_reused(&client, &grant).await);
        }
        if presented.generation > current {
            // Sealed by us, yet ahead of its grant: only a restored database does that.
            return Err(invalid_grant("the refresh token is not valid"));
        }
        let now = now();
        if now >= presented.exp || now >= grant.expires_at {
            return Err(invalid_grant("the refresh token has expired"));
        }
        let held = split_list(&grant.scope);
        let scope = match req.scope.as_deref() {
            None => grant.scope.clone(),
            Some(s) => {
                let asked = split_list(s);
                if asked.iter().any(|a| !held.contains(a)) {
                    return Err(OidcError::protocol(
                        ErrorCode::InvalidScope,
                        "a refresh cannot add scopes",
                    ));
                }
                asked.join(" ")
            }
        };
        // The refresh token keeps the grant's scopes; only the access token is narrowed.
        let issued = self
            .issue_tokens_scoped(&client, &grant, &scope, None, Some(presented.generation))
            .await;
        match issued {
            Err(Refusal::Refused) => {
                // Lost the compare-and-set: the token was used meanwhile (someone holds a
                // copy), or the grant was revoked.
                let moved_on = sqlx::query(
                    "SELECT refresh_generation FROM oidc_grants WHERE grant_id = $1 AND revoked_at IS NULL",
                )
                .bind(&grant.grant_id)
                .fetch_optional(self.db.pool())
                .await?
                .map(|r| r.try_get::<i64, _>("refresh_generation"))
                .transpose()?
                .is_some_and(|g| g > presented.generation);
                Err(match moved_on {
                    true => self.refresh_reused(&client, &grant).await,
                    false => invalid_grant("the refresh token has been revoked"),
                })
            }
            Err(Refusal::Failed(e)) => Err(e),
            Ok(t) => Ok(t),
        }
    }

    /// A rotated-out refresh token came back: someone holds a copy. Revokes the family and
    /// logs it; returns the error for the client.
    async fn refresh_reused(&self, client: &Client, grant: &Grant) -> OidcError {
        let logged = async {
            self.revoke_grant(&grant.grant_id).await?;
            let event = Event::new(
                "identity.refresh_token_reused",
                &format!("client:{}", client.client_id),
                &format!("oidc-grant/{}", grant.grant_id),
            )
            .about(self.subject_tag(grant).await?)
            .with("client_id", client.client_id.as_str());
            self.ledger.append(&event).await?;
            Ok::<(), OidcError>(())
        };
        match logged.await {
            Ok(()) => invalid_grant(
                "the refresh token was already used; every token of its family is revoked",
            ),
            Err(e) => e,
        }
    }

    async fn issue_tokens(
        &self,
        client: &Client,
        grant: &Grant,
        scope: &str,
        nonce: Option<&str>,
    ) -> Result<TokenResponse, OidcError> {
        match self
            .issue_tokens_scoped(client, grant, scope, nonce, None)
            .await
        {
            Ok(t) => Ok(t),
            Err(Refusal::Refused) => Err(invalid_grant("the grant was revoked")),
            Err(Refusal::Failed(e)) => Err(e),
        }
    }

    /// Makes, stores and logs a token response; the access token carries `scope`, the
    /// refresh token the grant's. `consumes` is the generation of the refresh token it
    /// replaces (refresh grant); `Refused` when that token was used meanwhile or the grant
    /// revoked, so that nothing is handed out.
    async fn issue_tokens_scoped(
        &self,
        client: &Client,
        grant: &Grant,
        scope: &str,
        nonce: Option<&str>,
        consumes: Option<i64>,
    ) -> Result<TokenResponse, Refusal> {
        let now = now();
        let key = self.token_key().await?;
        // No token outlives its grant.
        let access_expires =
            (now + self.settings.access_token_lifetime.as_secs() as i64).min(grant.expires_at);
        let access = bearer::seal_access(
            &key,
            &AccessClaims {
                grant_id: grant.grant_id.clone(),
                exp: access_expires,
                scope: scope.to_string(),
            },
        );
        let refresh = bearer::seal_refresh(
            &key,
            &RefreshClaims {
                grant_id: grant.grant_id.clone(),
                generation: consumes.map_or(0, |g| g + 1),
                exp: (now + self.settings.refresh_token_lifetime.as_secs() as i64)
                    .min(grant.expires_at),
            },
        );
        let sub = self.subject(&client.sector, &grant.account_id).await?;
        let sid = self.session_sid(&grant.session_id).await?;
        let claims = IdTokenClaims {
            iss: &self.settings.issuer,
            sub: &sub,
            aud: &client.client_id,
            azp: &client.client_id,
            exp: access_expires,
            iat: now,
            auth_time: grant.auth_time,
            nonce,
            acr: &grant.acr,
            amr: split_list(&grant.amr),
            at_hash: at_hash(&access),
            sid: &sid,
        };
        let id_token = self.sign(client.id_token_alg, &claims).await?;
        let grant_type = if consumes.is_some() {
            "refresh_token"
        } else {
            "authorization_code"
        };
        let event = Event::new(
            "identity.tokens_issued",
            &format!("client:{}", client.client_id),
            &format!("oidc-grant/{}", grant.grant_id),
        )
        .about(self.subject_tag(grant).await?)
        .with("client_id", client.client_id.as_str())
        .with("grant_type", grant_type)
        .with("scope", scope)
        .with("acr", grant.acr.as_str());
        let written = self
            .write_tokens(NewTokens {
                grant_id: grant.grant_id.clone(),
                consumes,
                event,
            })
            .await?;
        if written == Written::Refused {
            return Err(Refusal::Refused);
        }
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: (access_expires - now).max(0) as u64,
            refresh_token: Some(refresh),
            id_token: Some(id_token),
            scope: scope.to_string(),
            authorization_details: grant.authorization_details.clone(),
        })
    }

    /// What an access token grants, or `None` when it is unknown, expired or revoked (or
    /// its client is disabled).
    pub async fn access_grant(&self, access_token: &str) -> Result<Option<AccessGrant>, OidcError> {
        let Some(claims) = self.live_access(access_token).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT g.account_id, g.session_id, g.revoked_at, g.authorization_details, c.client_id, c.sector, c.enabled
             FROM oidc_grants g JOIN oidc_clients c ON c.client_id = g.client_id
             WHERE g.grant_id = $1",
        )
        .bind(&claims.grant_id)
        .fetch_optional(&mut *self.db.lend().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        let enabled: i64 = row.try_get("enabled")?;
        if revoked.is_some() || enabled == 0 {
            return Ok(None);
        }
        let account_id: String = row.try_get("account_id")?;
        let sector: String = row.try_get("sector")?;
        Ok(Some(AccessGrant {
            client_id: row.try_get("client_id")?,
            sub: self.subject(&sector, &account_id).await?,
            account_id,
            session_id: row.try_get("session_id")?,
            scopes: split_list(&claims.scope),
            authorization_details: details_of(row.try_get("authorization_details")?),
        }))
    }

    /// An access token's claims, when it is ours and not expired (its grant still to be
    /// checked).
    async fn live_access(&self, access_token: &str) -> Result<Option<AccessClaims>, OidcError> {
        let key = self.token_key().await?;
        Ok(bearer::open_access(&key, access_token).filter(|c| now() < c.exp))
    }

    /// What an access token grants, with its client and the account it is about, read in
    /// one query (a data release needs all three on every call); `None` as for
    /// [`Provider::access_grant`], or when the account is disabled. On SQLite what the query
    /// found is kept in memory for a second ([`AccessMemo`]).
    pub async fn data_access(
        &self,
        access_token: &str,
    ) -> Result<Option<(AccessGrant, Client, crate::Account)>, OidcError> {
        let Some(claims) = self.live_access(access_token).await? else {
            return Ok(None);
        };
        let memo = self.access_memo();
        let generation = match memo.map(|m| m.get(&claims.grant_id)) {
            Some(Ok(found)) => return Ok(found.map(|f| f.for_token(&claims))),
            Some(Err(generation)) => Some(generation),
            None => None,
        };
        let found = self.read_data_access(&claims.grant_id).await?.map(Arc::new);
        if let (Some(memo), Some(generation)) = (memo, generation) {
            memo.put(generation, &claims.grant_id, found.clone());
        }
        Ok(found.map(|f| f.for_token(&claims)))
    }

    /// The memory of [`Provider::data_access`], on SQLite only: there this process makes
    /// every change of grants and clients, and forgets what it remembers as it makes one.
    /// Several nodes on PostgreSQL change them behind each other's back.
    fn access_memo(&self) -> Option<&AccessMemo> {
        (self.db.engine() == civitas_store::Engine::Sqlite).then_some(&*self.access_memo)
    }

    /// Forgets what [`Provider::data_access`] remembers, after a change of grants or
    /// clients has committed.
    pub(crate) fn grants_changed(&self) {
        self.access_memo.forget_all();
    }

    /// [`Provider::data_access`]'s query: grant `grant_id`, unless revoked, with its enabled
    /// client and its account, unless disabled.
    async fn read_data_access(&self, grant_id: &str) -> Result<Option<DataAccess>, OidcError> {
        static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let query = QUERY.get_or_init(|| {
            let account = crate::accounts::ACCOUNT_COLUMNS
                .split(", ")
                .map(|c| format!("a.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT g.account_id, g.session_id, g.revoked_at, g.authorization_details, {}, {account}
                 FROM oidc_grants g JOIN oidc_clients c ON c.client_id = g.client_id
                 JOIN accounts a ON a.id = g.account_id AND a.disabled_ms IS NULL
                 WHERE g.grant_id = $1",
                client_columns_in_join()
            )
        });
        let row = sqlx::query(query)
            .bind(grant_id)
            .fetch_optional(&mut *self.db.lend().await?)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        let client = KnownClient::from_row(&row)?.client;
        if revoked.is_some() || !client.enabled {
            return Ok(None);
        }
        let account = match crate::accounts::account_from(&row) {
            Ok(a) => a,
            Err(crate::IdentityError::Store(e)) => return Err(OidcError::Store(e)),
            // An account of a kind this program does not know is not one a token speaks for.
            Err(_) => return Ok(None),
        };
        Ok(Some(DataAccess {
            sub: self.subject(&client.sector, &account.id).await?,
            session_id: row.try_get("session_id")?,
            authorization_details: details_of(row.try_get("authorization_details")?),
            client,
            account,
        }))
    }

    /// Revokes every token issued within a Civitas session (at logout). Returns how many
    /// grants were revoked.
    pub async fn revoke_session(&self, session_id: &str) -> Result<u64, OidcError> {
        let done = sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1 WHERE session_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(session_id)
        .execute(self.db.pool())
        .await?;
        self.grants_changed();
        Ok(done.rows_affected())
    }

    /// Verifies an ID token this provider issued, expired or not (as `id_token_hint` at
    /// logout): signature by one of our keys, and our issuer.
    pub async fn verify_id_token_hint(&self, token: &str) -> Result<IdTokenHint, OidcError> {
        let bad = || invalid_request("id_token_hint is not an ID token issued here");
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
        let alg = SigningAlg::from_jwt(header.alg).ok_or_else(bad)?;
        let keys = self.verifying_keys().await?;
        let key = keys
            .iter()
            .find(|k| Some(&k.kid) == header.kid.as_ref() && k.alg == alg)
            .ok_or_else(bad)?;
        let mut validation = Validation::new(alg.jwt());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::from(["iss".to_string(), "sub".to_string()]);
        validation.set_issuer(&[&self.settings.issuer]);
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding_key()?, &validation)
            .map_err(|_| bad())?;
        let c = data.claims;
        let client_id = match &c["aud"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        Ok(IdTokenHint {
            client_id,
            sub: c["sub"].as_str().unwrap_or_default().to_string(),
            sid: c["sid"].as_str().map(str::to_string),
        })
    }
}
