//! The authorisation endpoint's logic: checking a request (client and redirect URI first),
//! deciding what the person must do (sign in, step up, consent) and issuing codes.

use civitas_store::sqlx;
use serde::Deserialize;

use super::{
    AUTHORIZATION_DETAILS_TYPES, Authentication, Client, ErrorCode, OidcError, PKCE_METHOD,
    Provider, SUPPORTED_SCOPES, now, split_list,
};
use crate::Loa;
use crate::secret::b64;

/// The parameters of an authorisation request, as sent (all optional until checked).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizationParams {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// One of the client's registered redirect URIs, exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated scopes; must include `openid`.
    pub scope: Option<String>,
    /// Opaque value returned to the client.
    pub state: Option<String>,
    /// Opaque value copied into the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge: base64url(SHA-256(verifier)).
    pub code_challenge: Option<String>,
    /// PKCE method; only `S256` is accepted.
    pub code_challenge_method: Option<String>,
    /// Requested `acr` values, space-separated.
    pub acr_values: Option<String>,
    /// `none`, `login`, `consent` (space-separated).
    pub prompt: Option<String>,
    /// Longest time since the person signed in, in seconds.
    pub max_age: Option<String>,
    /// Only `query` is supported.
    pub response_mode: Option<String>,
    /// RFC 9396: a JSON array of objects, each with a `type` the provider supports.
    pub authorization_details: Option<String>,
    /// Request objects are not supported.
    pub request: Option<String>,
    /// Request objects by reference are not supported.
    pub request_uri: Option<String>,
    /// Set by Civitas when it sends the person to sign in again (`prompt=login`): the
    /// session must have signed in at or after this time (seconds since the Unix epoch).
    #[serde(rename = "civitas_login_after")]
    pub login_after: Option<String>,
}

/// What `prompt` asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// `none`: no page may be shown.
    pub none: bool,
    /// `login`: sign in again.
    pub login: bool,
    /// `consent`: ask again even if consent was given.
    pub consent: bool,
}

/// A checked authorisation request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    /// The client.
    pub client: Client,
    /// The redirect URI, one of the client's.
    pub redirect_uri: String,
    /// The client's state.
    pub state: Option<String>,
    /// The client's nonce.
    pub nonce: Option<String>,
    /// Scopes requested and allowed for the client (unknown ones are ignored).
    pub scopes: Vec<String>,
    /// The PKCE challenge (S256).
    pub code_challenge: String,
    /// The weakest level the session may have: the client's minimum or the requested one.
    pub required_loa: Loa,
    /// What `prompt` asked for.
    pub prompt: Prompt,
    /// `max_age`, in seconds.
    pub max_age: Option<i64>,
    /// The session must have signed in at or after this time.
    pub login_after: Option<i64>,
    /// RFC 9396 authorisation details, as requested (each an object with a supported
    /// `type`). Their meaning is the caller's: a request with any is always put to the
    /// person, and the details granted are what the caller gives [`Provider::issue_code`].
    pub authorization_details: Vec<serde_json::Value>,
}

/// Why an authorisation request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The client or the redirect URI is unknown or wrong: show this to the person and never
    /// redirect (the redirect URI cannot be trusted).
    #[error("{description}")]
    NoRedirect {
        /// What is wrong, for the person and the developer.
        description: String,
    },
    /// Tell the client, at its redirect URI.
    #[error("{code}: {description}")]
    Redirect {
        /// The client's redirect URI.
        redirect_uri: String,
        /// The client's state.
        state: Option<String>,
        /// The error code.
        code: ErrorCode,
        /// A sentence for the developer.
        description: String,
    },
    /// Our failure.
    #[error(transparent)]
    Internal(#[from] OidcError),
}

impl AuthorizeError {
    /// Where to send the browser with the error (RFC 6749 §4.1.2.1, `iss` per RFC 9207), or
    /// `None` when it must be shown instead.
    pub fn redirect_url(&self, issuer: &str) -> Option<String> {
        match self {
            AuthorizeError::Redirect {
                redirect_uri,
                state,
                code,
                description,
            } => Some(with_query(
                redirect_uri,
                &[
                    ("error", Some(code.as_str())),
                    ("error_description", Some(description.as_str())),
                    ("state", state.as_deref()),
                    ("iss", Some(issuer)),
                ],
            )),
            _ => None,
        }
    }
}

/// Appends query parameters to a URI, keeping the query it has.
fn with_query(uri: &str, params: &[(&str, Option<&str>)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    if let Some(v) = v {
                        q.append_pair(k, v);
                    }
                }
            }
            u.to_string()
        }
        // Registered URIs were parsed at registration; this cannot happen.
        Err(_) => uri.to_string(),
    }
}

/// What the person must do before a code can be issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign in (no session, `prompt=login`, `max_age` exceeded).
    SignIn,
    /// Sign in again at this level or higher.
    StepUp(Loa),
    /// Allow or deny the client these scopes.
    Consent,
    /// Issue a code now.
    Issue,
}

fn is_pkce_value(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AuthorizationRequest {
    /// Where to send the browser with a code (with `state` and `iss`, RFC 9207).
    pub fn success_redirect_url(&self, code: &str, issuer: &str) -> String {
        with_query(
            &self.redirect_uri,
            &[
                ("code", Some(code)),
                ("state", self.state.as_deref()),
                ("iss", Some(issuer)),
            ],
        )
    }

    /// A refusal sent back to the client.
    pub fn refuse(&self, code: ErrorCode, description: &str) -> AuthorizeError {
        AuthorizeError::Redirect {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            code,
            description: description.to_string(),
        }
    }
}

impl Provider {
    /// Checks an authorisation request: the client and its redirect URI first (refusals
    /// shown, never redirected), then everything else (refusals redirected to the client).
    pub async fn authorization_request(
        &self,
        p: &AuthorizationParams,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let no = |d: &str| AuthorizeError::NoRedirect {
            description: d.to_string(),
        };
        let client_id = p
            .client_id
            .as_deref()
            .ok_or_else(|| no("The request names no client (client_id is missing)."))?;
        let client = self
            .client(client_id)
            .await?
            .filter(|c| c.enabled)
            .ok_or_else(|| no("The application that sent you here is not registered with Civitas, or has been disabled."))?;
        let redirect_uri = p.redirect_uri.as_deref().ok_or_else(|| {
            no("The request has no redirect_uri, so there is nowhere safe to send you back to.")
        })?;
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(no(
                "The address the application asked to send you back to is not one it registered with Civitas.",
            ));
        }
        let state = p.state.clone();
        let fail = |code: ErrorCode, d: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.to_string(),
            state: state.clone(),
            code,
            description: d.to_string(),
        };
        let invalid = |d: &str| fail(ErrorCode::InvalidRequest, d);
        if p.request.is_some() || p.request_uri.is_some() {
            return Err(invalid("request objects are not supported"));
        }
        if p.state.as_ref().is_some_and(|s| s.len() > 1024)
            || p.nonce.as_ref().is_some_and(|s| s.len() > 512)
        {
            return Err(invalid("state or nonce is too long"));
        }
        match p.response_type.as_deref() {
            Some("code") => {}
            None => return Err(invalid("response_type is missing")),
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ));
            }
        }
        if p.response_mode.as_deref().is_some_and(|m| m != "query") {
            return Err(invalid("only response_mode=query is supported"));
        }
        let requested = split_list(p.scope.as_deref().unwrap_or_default());
        if !requested.iter().any(|s| s == "openid") {
            return Err(fail(
                ErrorCode::InvalidScope,
                "the openid scope is required",
            ));
        }
        let scopes: Vec<String> = requested
            .into_iter()
            .filter(|s| SUPPORTED_SCOPES.contains(&s.as_str()) && client.scopes.contains(s))
            .collect();
        let Some(challenge) = p.code_challenge.as_deref() else {
            return Err(invalid(
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            ));
        };
        if p.code_challenge_method.as_deref() != Some(PKCE_METHOD) {
            return Err(invalid("only code_challenge_method=S256 is accepted"));
        }
        if !is_pkce_value(challenge) {
            return Err(invalid("code_challenge must be 43 base64url characters"));
        }
        let mut prompt = Prompt::default();
        for value in split_list(p.prompt.as_deref().unwrap_or_default()) {
            match value.as_str() {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => {}
                other => return Err(invalid(&format!("unknown prompt value `{other}`"))),
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(invalid("prompt=none cannot be combined with other values"));
        }
        let max_age = match p.max_age.as_deref() {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| invalid("max_age must be a number of seconds"))?,
            ),
        };
        // eIDAS levels are ordered: any listed value is acceptable, and a stronger sign-in
        // satisfies a weaker request, so the weakest listed level is what is required.
        let requested_loa = split_list(p.acr_values.as_deref().unwrap_or_default())
            .iter()
            .filter_map(|a| Loa::from_acr(a))
            .min();
        let required_loa = requested_loa.map_or(client.min_loa, |l| l.max(client.min_loa));
        let login_after = p.login_after.as_deref().and_then(|v| v.parse().ok());
        let authorization_details = match p.authorization_details.as_deref() {
            None => Vec::new(),
            Some(text) => {
                let bad = |d: &str| fail(ErrorCode::InvalidAuthorizationDetails, d);
                let list: Vec<serde_json::Value> = serde_json::from_str(text)
                    .map_err(|_| bad("authorization_details is not a JSON array"))?;
                if list.is_empty() || list.len() > 8 || text.len() > 4096 {
                    return Err(bad("authorization_details holds 1 to 8 objects"));
                }
                for d in &list {
                    let known = d["type"]
                        .as_str()
                        .is_some_and(|t| AUTHORIZATION_DETAILS_TYPES.contains(&t));
                    if !known {
                        return Err(bad(&format!(
                            "each authorization_details object needs a type, one of {}",
                            AUTHORIZATION_DETAILS_TYPES.join(", ")
                        )));
                    }
                }
                list
            }
        };
        Ok(AuthorizationRequest {
            redirect_uri: redirect_uri.to_string(),
            state: p.state.clone(),
            nonce: p.nonce.clone(),
            scopes,
            code_challenge: challenge.to_string(),
            required_loa,
            prompt,
            max_age,
            login_after,
            authorization_details,
            client,
        })
    }

    /// What the person must do next, given their session (if any) at time `now`.
    /// With `prompt=none`, anything but [`Decision::Issue`] is an error for the client.
    pub async fn decide(
        &self,
        req: &AuthorizationRequest,
        session: Option<&Authentication>,
        now: i64,
    ) -> Result<Decision, AuthorizeError> {
        let decision = match session {
            None => Decision::SignIn,
            Some(s) => {
                let stale = req.max_age.is_some_and(|m| now - s.auth_time > m)
                    || req.login_after.is_some_and(|t| s.auth_time < t)
                    || (req.prompt.login && req.login_after.is_none());
                if stale {
                    Decision::SignIn
                } else if s.loa < req.required_loa {
                    Decision::StepUp(req.required_loa)
                } else if !req.authorization_details.is_empty() {
                    // What the details authorise (a release of the person's data) is asked
                    // every time, of every client.
                    Decision::Consent
                } else if req.client.first_party {
                    Decision::Issue
                } else {
                    let given = self
                        .consented_scopes(&s.account_id, &req.client.client_id)
                        .await?;
                    if req.prompt.consent || req.scopes.iter().any(|sc| !given.contains(sc)) {
                        Decision::Consent
                    } else {
                        Decision::Issue
                    }
                }
            }
        };
        if req.prompt.none {
            match decision {
                Decision::Issue => {}
                Decision::SignIn => {
                    return Err(req.refuse(ErrorCode::LoginRequired, "the person must sign in"));
                }
                Decision::StepUp(_) => {
                    return Err(req.refuse(
                        ErrorCode::LoginRequired,
                        "the person must sign in at a higher level of assurance",
                    ));
                }
                Decision::Consent => {
                    return Err(req.refuse(
                        ErrorCode::ConsentRequired,
                        "the person has not allowed this application these scopes or details",
                    ));
                }
            }
        }
        Ok(decision)
    }

    /// Issues a single-use code for a checked request and a session that satisfies it.
    pub async fn issue_code(
        &self,
        req: &AuthorizationRequest,
        auth: &Authentication,
    ) -> Result<String, OidcError> {
        self.issue_code_with(req, auth, &[]).await
    }

    /// [`Provider::issue_code`], for a grant that also carries the authorisation details the
    /// person granted (RFC 9396; the token response and every access token's grant carry
    /// them). Details were asked for and none given is a refusal.
    pub async fn issue_code_with(
        &self,
        req: &AuthorizationRequest,
        auth: &Authentication,
        granted: &[serde_json::Value],
    ) -> Result<String, OidcError> {
        if req.authorization_details.len() != granted.len() {
            return Err(OidcError::protocol(
                ErrorCode::AccessDenied,
                "the authorisation details asked for were not granted",
            ));
        }
        if auth.loa < req.required_loa {
            return Err(OidcError::protocol(
                ErrorCode::AccessDenied,
                "the session's level of assurance is too low",
            ));
        }
        // Old codes are of no use: clear them here rather than in a background task.
        self.purge_expired().await?;
        let code = crate::secret::token(32);
        let grant_id = b64(&crate::secret::bytes::<16>());
        let now = now();
        // The grant (the family of every token this code will give) exists from now on, so
        // that revoking it (a reused code, a logout) also covers a redemption in flight.
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO oidc_grants (grant_id, client_id, account_id, subject_ref, session_id, scope, acr, amr, auth_time, nonce, created_at, expires_at, authorization_details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&grant_id)
        .bind(&req.client.client_id)
        .bind(&auth.account_id)
        .bind(&auth.subject_ref)
        .bind(&auth.session_id)
        .bind(req.scopes.join(" "))
        .bind(auth.loa.acr())
        .bind(auth.amr.join(" "))
        .bind(auth.auth_time)
        .bind(req.nonce.clone())
        .bind(now)
        .bind(now + self.settings.grant_lifetime.as_secs() as i64)
        .bind((!granted.is_empty()).then(|| serde_json::Value::from(granted.to_vec()).to_string()))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, grant_id, client_id, redirect_uri, code_challenge, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(crate::secret::hash(&code))
        .bind(&grant_id)
        .bind(&req.client.client_id)
        .bind(&req.redirect_uri)
        .bind(&req.code_challenge)
        .bind(now)
        .bind(now + self.settings.code_lifetime.as_secs() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(code)
    }
}
