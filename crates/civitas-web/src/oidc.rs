//! The OpenID Connect provider's endpoints: discovery, JWKS, authorisation (with the consent
//! page), token, userinfo and RP-initiated logout.
//!
//! These are protocol endpoints, not part of `/api/v1`: errors take OAuth's own shapes
//! (a redirect with `error` to the client, or `{"error": ...}` from the token endpoint), and
//! they are not in the OpenAPI document. The protocol's rules live in
//! `civitas_identity::oidc`; this module parses, calls it and renders.

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use civitas_identity::oidc::{
    self, AccountClaims, Authentication, AuthorizationParams, AuthorizationRequest, AuthorizeError,
    ClientCredentials, Decision, ErrorCode, OidcError, RevocationRequest, TokenRequest,
};
use civitas_identity::session::{SessionInfo, ended};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::{SESSION_COOKIE, Visitor, secure_cookies, set_cookie};
use crate::i18n::Lang;
use crate::oidc_texts::{OidcTexts, oidc_texts};
use crate::pages::{Chrome, error_page, percent_encode, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/jwks", get(jwks))
        .route("/oidc/authorize", get(authorize).post(consent))
        .route("/oidc/token", axum::routing::post(token))
        .route("/oidc/revoke", axum::routing::post(revoke))
        .route("/oidc/userinfo", get(userinfo).post(userinfo))
        .route("/oidc/logout", get(logout).post(logout_confirmed))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the provider needs to know of a Civitas session.
fn authentication(s: &SessionInfo) -> Authentication {
    Authentication {
        account_id: s.account.id.clone(),
        subject_ref: s.account.subject_ref(),
        session_id: s.id.clone(),
        loa: s.loa,
        amr: s.amr.clone(),
        auth_time: s.auth_time_ms / 1000,
    }
}

fn json_response(status: StatusCode, body: &Value, cache: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, cache),
        ],
        body.to_string(),
    )
        .into_response()
}

// ----- discovery and keys ---------------------------------------------------------------

async fn discovery(State(app): State<Shared>) -> Response {
    let iss = app.oidc.issuer();
    let algs = oidc::SigningAlg::ALL.map(|a| a.name());
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": app.oidc.settings().token_endpoint,
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/oidc/jwks"),
        "end_session_endpoint": format!("{iss}/oidc/logout"),
        "revocation_endpoint": app.oidc.settings().revocation_endpoint,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": oidc::GRANT_TYPES,
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": [oidc::PKCE_METHOD],
        "scopes_supported": oidc::SUPPORTED_SCOPES,
        "claims_supported": oidc::SUPPORTED_CLAIMS,
        "acr_values_supported": oidc::acr_values_supported(),
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": ["zh-TW", "en"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_details_types_supported": oidc::AUTHORIZATION_DETAILS_TYPES,
        "authorization_response_iss_parameter_supported": true,
    });
    json_response(StatusCode::OK, &doc, "public, max-age=300")
}

async fn jwks(State(app): State<Shared>) -> Response {
    match app.oidc.jwks().await {
        Ok(keys) => json_response(StatusCode::OK, &keys, "public, max-age=300"),
        Err(e) => {
            tracing::error!(error = %e, "JWKS failed");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "server_error"}),
                "no-store",
            )
        }
    }
}

// ----- authorisation --------------------------------------------------------------------

#[derive(Template)]
#[template(path = "oidc_message.html")]
struct OidcMessagePage {
    c: Chrome,
    heading: &'static str,
    text: &'static str,
    detail_label: &'static str,
    detail: String,
}

/// A refusal shown to the person: used when the client cannot be trusted with a redirect.
fn refused_page(c: Chrome, detail: &str) -> Response {
    let o = oidc_texts(c.lang);
    render(
        &OidcMessagePage {
            heading: o.refused_title,
            text: o.refused_text,
            detail_label: o.refused_detail,
            detail: detail.to_string(),
            c,
        },
        StatusCode::BAD_REQUEST,
    )
}

fn refusal(app: &Shared, c: Chrome, headers: &HeaderMap, e: AuthorizeError) -> Response {
    if let Some(url) = e.redirect_url(app.oidc.issuer()) {
        return Redirect::to(&url).into_response();
    }
    match e {
        AuthorizeError::NoRedirect { description } => refused_page(c, &description),
        AuthorizeError::Internal(err) => error_page(c, headers, &err),
        AuthorizeError::Redirect { .. } => refused_page(c, ""),
    }
}

/// The authorisation request's query, minus our own `civitas_login_after`.
fn request_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("civitas_login_after="))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Template)]
#[template(path = "oidc_consent.html")]
struct ConsentPage {
    c: Chrome,
    o: &'static OidcTexts,
    client_name: String,
    person: String,
    return_host: String,
    claims: Vec<&'static str>,
    request: String,
    /// The data agreement the application asks the person to consent to, if any.
    agreement: Option<AgreementView>,
}

/// A data agreement as the consent page shows it.
struct AgreementView {
    recipient: String,
    purpose: String,
    /// Each item's name and the registry (and its agency) it comes from.
    items: Vec<(String, String)>,
    retention_days: i64,
    periodic: bool,
    duration_days: i64,
}

/// The data agreement an authorisation request asks consent to: approved, resting on
/// consent, and the requesting client's own; anything else is refused to the client. The
/// request names it by `agreement_id`, or describes it in RFC 9396's own terms: the kinds of
/// data (`datatypes`, the agreement's items) and its `purpose`, which must fit exactly one
/// such agreement.
async fn requested_agreement(
    app: &Shared,
    req: &AuthorizationRequest,
) -> Result<Option<civitas_consent::Agreement>, AuthorizeError> {
    let wanted: Vec<&Value> = req
        .authorization_details
        .iter()
        .filter(|d| d["type"] == "civitas_data_agreement")
        .collect();
    let detail = match wanted.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(req.refuse(
                ErrorCode::InvalidAuthorizationDetails,
                "ask for one data agreement at a time",
            ));
        }
    };
    let usable = |a: &civitas_consent::Agreement| {
        a.state == civitas_consent::AgreementState::Approved
            && a.client_id == req.client.client_id
            && a.legal_basis == "consent"
    };
    let refused = |why: &str| Err(req.refuse(ErrorCode::InvalidAuthorizationDetails, why));
    let found = match detail.get("agreement_id") {
        Some(id) => app
            .consents
            .agreement(id.as_str().unwrap_or_default())
            .await
            .map(|a| a.into_iter().filter(|a| usable(a)).collect::<Vec<_>>()),
        None => {
            let datatypes: Option<std::collections::BTreeSet<&str>> = detail["datatypes"]
                .as_array()
                .filter(|d| !d.is_empty())
                .and_then(|d| d.iter().map(Value::as_str).collect());
            let (Some(datatypes), Some(purpose)) = (datatypes, detail["purpose"].as_str()) else {
                return refused(
                    "name the data agreement (agreement_id), or describe it: its datatypes (the data items) and purpose",
                );
            };
            app.consents
                .agreements(Some(&req.client.client_id))
                .await
                .map(|list| {
                    list.into_iter()
                        .filter(|a| {
                            usable(a)
                                && a.purpose == purpose
                                && a.items
                                    .iter()
                                    .map(String::as_str)
                                    .collect::<std::collections::BTreeSet<_>>()
                                    == datatypes
                        })
                        .collect()
                })
        }
    };
    match found {
        Ok(mut list) if list.len() == 1 => Ok(list.pop()),
        Ok(list) if list.len() > 1 => refused(
            "several approved data agreements of this client fit this description: name one by agreement_id",
        ),
        Ok(_) => refused("no approved data agreement of this client that rests on consent fits"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a data agreement");
            Err(req.refuse(
                ErrorCode::ServerError,
                "the data agreement could not be read",
            ))
        }
    }
}

/// How the consent page shows an agreement, in the page's language.
async fn agreement_view(app: &Shared, lang: Lang, a: &civitas_consent::Agreement) -> AgreementView {
    let purposes = app.consents.purposes().await.unwrap_or_default();
    let purpose = crate::consents_page::purpose_name(&purposes, &a.purpose, lang);
    let items = a
        .items
        .iter()
        .map(|i| match civitas_registry::attributes::attribute(i) {
            Some(at) => {
                let source = civitas_registry::services::service(at.registry)
                    .map(|s| format!("{} ({})", s.title, s.agency))
                    .unwrap_or_default();
                (crate::consents_page::item_name(i, lang), source)
            }
            None => (i.clone(), String::new()),
        })
        .collect();
    AgreementView {
        recipient: a.recipient.clone(),
        purpose,
        items,
        retention_days: a.retention_days,
        periodic: a.access == civitas_consent::Access::Periodic,
        duration_days: a.duration_days,
    }
}

async fn authorize(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<AuthorizationParams>, QueryRejection>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "");
    let Ok(Query(params)) = params else {
        return refused_page(c, "The authorisation request's parameters cannot be read.");
    };
    let req = match app.oidc.authorization_request(&params).await {
        Ok(r) => r,
        Err(e) => return refusal(&app, c, &headers, e),
    };
    let query = uri.query().unwrap_or_default();
    let auth = v.session.as_ref().map(authentication);
    let decision = match app.oidc.decide(&req, auth.as_ref(), now()).await {
        Ok(d) => d,
        Err(e) => return refusal(&app, c, &headers, e),
    };
    match decision {
        Decision::SignIn => {
            if req.login_after.is_some() && auth.is_some() {
                // We already sent the person to sign in anew for this request, and they came
                // back without doing so: tell the client rather than go round in circles.
                return refusal(
                    &app,
                    c,
                    &headers,
                    req.refuse(ErrorCode::LoginRequired, "the person did not sign in again"),
                );
            }
            // Coming back, the session must be newer than now (prompt=login, max_age).
            let next = format!(
                "/oidc/authorize?{}&civitas_login_after={}",
                request_query(query),
                now()
            );
            Redirect::to(&format!("/signin?next={}", percent_encode(&next))).into_response()
        }
        Decision::StepUp(need) => {
            let next = format!("/oidc/authorize?{query}");
            Redirect::to(&format!(
                "/signin/step-up?need={}&next={}",
                need.code(),
                percent_encode(&next)
            ))
            .into_response()
        }
        Decision::Consent => {
            let Some(s) = &v.session else {
                return refused_page(c, "");
            };
            let o = oidc_texts(c.lang);
            let claims = req
                .scopes
                .iter()
                .filter_map(|sc| o.scope_label(sc))
                .collect();
            let return_host = url_host(&req.redirect_uri);
            let agreement = match requested_agreement(&app, &req).await {
                Ok(Some(a)) => Some(agreement_view(&app, c.lang, &a).await),
                Ok(None) => None,
                Err(e) => return refusal(&app, c, &headers, e),
            };
            render(
                &ConsentPage {
                    o,
                    client_name: req.client.name.clone(),
                    person: s.account.display_name.clone(),
                    return_host,
                    claims,
                    request: request_query(query),
                    agreement,
                    c,
                },
                StatusCode::OK,
            )
        }
        Decision::Issue => match auth {
            Some(a) => issue(&app, c, &headers, &req, &a).await,
            None => refused_page(c, ""),
        },
    }
}

/// `scheme://host[:port]` of a URI, as the consent page shows where the person returns to.
fn url_host(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let scheme = uri.split_once("://").map_or("", |(s, _)| s);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

async fn issue(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    req: &AuthorizationRequest,
    auth: &Authentication,
) -> Response {
    match app.oidc.issue_code(req, auth).await {
        Ok(code) => {
            Redirect::to(&req.success_redirect_url(&code, app.oidc.issuer())).into_response()
        }
        Err(OidcError::Protocol { code, description }) => {
            refusal(app, c, headers, req.refuse(code, &description))
        }
        Err(e) => error_page(c, headers, &e),
    }
}

#[derive(Deserialize, Default)]
struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    decision: String,
}

async fn consent(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    axum::Form(f): axum::Form<ConsentForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "");
    let Ok(request_uri) = format!("/oidc/authorize?{}", f.request).parse::<axum::http::Uri>()
    else {
        return refused_page(c, "The consent form does not carry a readable request.");
    };
    let Ok(Query(params)) = Query::<AuthorizationParams>::try_from_uri(&request_uri) else {
        return refused_page(c, "The consent form does not carry a readable request.");
    };
    let req = match app.oidc.authorization_request(&params).await {
        Ok(r) => r,
        Err(e) => return refusal(&app, c, &headers, e),
    };
    let Some(session) = &v.session else {
        // The session ended while the page was open: sign in and see the question again.
        return Redirect::to(&format!(
            "/signin?next={}",
            percent_encode(&request_uri.to_string())
        ))
        .into_response();
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        return crate::pages::message_page(
            c,
            StatusCode::FORBIDDEN,
            |t| (t.form_expired_title, t.form_expired_text),
            String::new(),
        );
    }
    let allow = f.decision == "allow";
    let auth = authentication(session);
    if allow {
        match app.oidc.decide(&req, Some(&auth), now()).await {
            Ok(Decision::Consent | Decision::Issue) => {}
            Ok(_) => return Redirect::to(&request_uri.to_string()).into_response(),
            Err(e) => return refusal(&app, c, &headers, e),
        }
    }
    // A data agreement's answer, either way, is a consent record of its own (refusals too).
    let agreement = match requested_agreement(&app, &req).await {
        Ok(a) => a,
        Err(e) => return refusal(&app, c, &headers, e),
    };
    let mut granted = Vec::new();
    if let Some(a) = &agreement {
        if session.account.person_id.is_none() {
            return refusal(
                &app,
                c,
                &headers,
                req.refuse(
                    ErrorCode::AccessDenied,
                    "data agreements are consented to by people in the population register",
                ),
            );
        }
        let subject = session.account.subject_ref();
        match app.consents.answer(&a.id, &subject, allow, "citizen").await {
            Ok(receipt) => granted.push(json!({
                "type": "civitas_data_agreement",
                "agreement_id": a.id,
                "consent_id": receipt.record_id,
            })),
            // Consent in force already: the person has said yes before; this grant uses it.
            Err(civitas_consent::ConsentError::Conflict(_)) if allow => {
                let in_force = match app.consents.records_of(&subject).await {
                    Ok(list) => list.into_iter().find(|r| {
                        r.agreement_id == a.id
                            && r.effective_state == civitas_consent::ConsentState::Given
                    }),
                    Err(e) => return error_page(c, &headers, &e),
                };
                let Some(r) = in_force else {
                    return refusal(
                        &app,
                        c,
                        &headers,
                        req.refuse(
                            ErrorCode::AccessDenied,
                            "the person's consent to this agreement is paused",
                        ),
                    );
                };
                granted.push(json!({
                    "type": "civitas_data_agreement",
                    "agreement_id": a.id,
                    "consent_id": r.id,
                }));
            }
            Err(e) => return error_page(c, &headers, &e),
        }
    }
    if !allow {
        return refusal(
            &app,
            c,
            &headers,
            req.refuse(ErrorCode::AccessDenied, "the person did not allow it"),
        );
    }
    if let Err(e) = app
        .oidc
        .record_consent(&auth.account_id, &req.client.client_id, &req.scopes)
        .await
    {
        return error_page(c, &headers, &e);
    }
    match app.oidc.issue_code_with(&req, &auth, &granted).await {
        Ok(code) => {
            Redirect::to(&req.success_redirect_url(&code, app.oidc.issuer())).into_response()
        }
        Err(OidcError::Protocol { code, description }) => {
            refusal(&app, c, &headers, req.refuse(code, &description))
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

// ----- token ----------------------------------------------------------------------------

/// An OAuth error from the token or userinfo endpoint.
fn oauth_error(e: &OidcError) -> Response {
    let (status, body) = match e {
        OidcError::Protocol { code, description } => {
            let status = match code {
                ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                status,
                json!({"error": code.as_str(), "error_description": description}),
            )
        }
        other => {
            tracing::error!(error = %other, "token endpoint failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": "Something went wrong on our side."}),
            )
        }
    };
    let mut res = json_response(status, &body, "no-store");
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"civitas\""),
        );
    }
    res
}

/// Decodes one form-encoded value (RFC 6749 §2.3.1 encodes Basic credentials this way).
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", s.replace('&', "%26")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The client id and secret of an `Authorization: Basic` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((id, secret)) => Ok((form_decode(id), form_decode(secret))),
        None => Err(()),
    })
}

/// A form-encoded request from a client to the token or revocation endpoint: its parameters
/// and how the client authenticated.
struct ClientForm {
    form: Vec<(String, String)>,
    credentials: ClientCredentials,
}

impl ClientForm {
    /// Parses the body and the Authorization header; an OAuth error response when they are
    /// not acceptable.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<ClientForm, Box<Response>> {
        let invalid = |d: &str| oauth_error(&OidcError::protocol(ErrorCode::InvalidRequest, d));
        let mut form: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            // RFC 6749 §3.2: parameters must not be repeated.
            if form.iter().any(|(seen, _)| *seen == k) {
                return Err(Box::new(invalid(&format!(
                    "the parameter `{k}` is repeated"
                ))));
            }
            form.push((k.into_owned(), v.into_owned()));
        }
        let mut parsed = ClientForm {
            form,
            credentials: ClientCredentials::None,
        };
        parsed.credentials = match (basic_credentials(headers), parsed.get("client_assertion")) {
            (Some(_), Some(_)) => {
                return Err(Box::new(invalid(
                    "use one client authentication method, not two",
                )));
            }
            (Some(Ok((client_id, secret))), None) => ClientCredentials::Basic { client_id, secret },
            (Some(Err(())), None) => {
                return Err(Box::new(oauth_error(&OidcError::protocol(
                    ErrorCode::InvalidClient,
                    "the Authorization header is not valid Basic credentials",
                ))));
            }
            (None, Some(assertion)) => ClientCredentials::Assertion {
                assertion_type: parsed.get("client_assertion_type").unwrap_or_default(),
                assertion,
            },
            (None, None) => ClientCredentials::None,
        };
        Ok(parsed)
    }

    /// A parameter's value; an empty one counts as absent.
    fn get(&self, name: &str) -> Option<String> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for ClientForm {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        ClientForm::parse(&headers, &body).map_err(|r| *r)
    }
}

async fn token(State(app): State<Shared>, f: ClientForm) -> Response {
    let req = TokenRequest {
        grant_type: f.get("grant_type"),
        client_id: f.get("client_id"),
        code: f.get("code"),
        redirect_uri: f.get("redirect_uri"),
        code_verifier: f.get("code_verifier"),
        refresh_token: f.get("refresh_token"),
        scope: f.get("scope"),
        credentials: f.credentials,
    };
    match app.oidc.token(&req).await {
        Ok(t) => {
            let body = serde_json::to_value(&t).unwrap_or_default();
            let mut res = json_response(StatusCode::OK, &body, "no-store");
            res.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => oauth_error(&e),
    }
}

/// RFC 7009: the client revokes a token it holds (and with it the token's grant). 200 with no
/// body whether or not the token was known.
async fn revoke(State(app): State<Shared>, f: ClientForm) -> Response {
    let req = RevocationRequest {
        client_id: f.get("client_id"),
        token: f.get("token"),
        credentials: f.credentials,
    };
    match app.oidc.revoke_token(&req).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
        Err(e) => oauth_error(&e),
    }
}

// ----- userinfo -------------------------------------------------------------------------

pub(crate) fn bearer_refused(error: Option<&str>) -> Response {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"civitas\", error=\"{e}\""),
        None => "Bearer realm=\"civitas\"".to_string(),
    };
    let mut res = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": error.unwrap_or("invalid_request")}),
        "no-store",
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
}

async fn userinfo(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer_token(&headers) else {
        return bearer_refused(None);
    };
    let grant = match app.oidc.access_grant(&token).await {
        Ok(Some(g)) => g,
        Ok(None) => return bearer_refused(Some(ErrorCode::InvalidToken.as_str())),
        Err(e) => return oauth_error(&e),
    };
    let account = match app.identity.account(&grant.account_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return bearer_refused(Some(ErrorCode::InvalidToken.as_str())),
        Err(e) => {
            tracing::error!(error = %e, "userinfo failed");
            return oauth_error(&OidcError::protocol(ErrorCode::ServerError, ""));
        }
    };
    // Civitas keeps no language per account yet: the portal's default language stands in.
    let claims = AccountClaims {
        name: Some(account.display_name),
        locale: Some("zh-TW".into()),
        email: account.email,
        email_verified: false,
        phone_number: account.phone,
        phone_number_verified: false,
    };
    let body = Value::Object(oidc::userinfo_claims(&grant.sub, &grant.scopes, &claims));
    json_response(StatusCode::OK, &body, "no-store")
}

// ----- logout ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    #[serde(default)]
    csrf: String,
}

#[derive(Template)]
#[template(path = "oidc_logout.html")]
struct LogoutPage {
    c: Chrome,
    o: &'static OidcTexts,
    client_name: String,
    client_id: String,
    redirect_uri: String,
    state: String,
}

/// Where to go after logging out: a checked client and, if asked for, one of its
/// registered post-logout URIs.
struct LogoutTarget {
    client: Option<oidc::Client>,
    redirect_uri: Option<String>,
}

async fn logout_target(
    app: &Shared,
    client_id: Option<&str>,
    redirect_uri: Option<&str>,
) -> Result<LogoutTarget, String> {
    let client = match client_id {
        Some(id) => match app.oidc.client(id).await {
            Ok(Some(c)) if c.enabled => Some(c),
            Ok(_) => return Err(format!("`{id}` is not a registered application.")),
            Err(e) => return Err(e.to_string()),
        },
        None => None,
    };
    let redirect_uri = match (redirect_uri, &client) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(
                "post_logout_redirect_uri needs id_token_hint or client_id to say whose it is."
                    .into(),
            );
        }
        (Some(u), Some(c)) if c.post_logout_redirect_uris.iter().any(|r| r == u) => {
            Some(u.to_string())
        }
        (Some(_), Some(_)) => {
            return Err(
                "post_logout_redirect_uri is not one the application registered with Civitas."
                    .into(),
            );
        }
    };
    Ok(LogoutTarget {
        client,
        redirect_uri,
    })
}

async fn logout(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    params: Result<Query<LogoutParams>, QueryRejection>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "");
    let Ok(Query(p)) = params else {
        return refused_page(c, "The logout request's parameters cannot be read.");
    };
    let hint = match p.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => match app.oidc.verify_id_token_hint(h).await {
            Ok(hint) => Some(hint),
            Err(e) => return refused_page(c, &e.to_string()),
        },
        None => None,
    };
    let client_id = match (&hint, p.client_id.as_deref()) {
        (Some(h), Some(id)) if h.client_id != id => {
            return refused_page(c, "client_id differs from the id_token_hint's audience.");
        }
        (Some(h), _) => Some(h.client_id.clone()),
        (None, id) => id.map(str::to_string),
    };
    let target = match logout_target(
        &app,
        client_id.as_deref(),
        p.post_logout_redirect_uri.as_deref(),
    )
    .await
    {
        Ok(t) => t,
        Err(d) => return refused_page(c, &d),
    };
    let Some(session) = &v.session else {
        return logged_out(&app, c, &target, p.state.as_deref());
    };
    // With a hint for this very session the relying party speaks for the person; without
    // one, anyone could link here, so the person confirms.
    let sid = app.oidc.session_sid(&session.id).await.ok();
    if hint
        .as_ref()
        .is_some_and(|h| h.sid.is_some() && h.sid == sid)
    {
        end_session(&app, session).await;
        return logged_out(&app, c, &target, p.state.as_deref());
    }
    let o = oidc_texts(c.lang);
    render(
        &LogoutPage {
            o,
            client_name: target
                .client
                .as_ref()
                .map(|cl| cl.name.clone())
                .unwrap_or_default(),
            client_id: client_id.unwrap_or_default(),
            redirect_uri: target.redirect_uri.clone().unwrap_or_default(),
            state: p.state.unwrap_or_default(),
            c,
        },
        StatusCode::OK,
    )
}

async fn logout_confirmed(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    axum::Form(p): axum::Form<LogoutParams>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "");
    let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    let target = match logout_target(
        &app,
        nonempty(&p.client_id).as_deref(),
        nonempty(&p.post_logout_redirect_uri).as_deref(),
    )
    .await
    {
        Ok(t) => t,
        Err(d) => return refused_page(c, &d),
    };
    if let Some(session) = &v.session {
        if !v.form_is_genuine(&headers, &p.csrf) {
            return crate::pages::message_page(
                c,
                StatusCode::FORBIDDEN,
                |t| (t.form_expired_title, t.form_expired_text),
                String::new(),
            );
        }
        end_session(&app, session).await;
    }
    logged_out(&app, c, &target, nonempty(&p.state).as_deref())
}

/// Ends the Civitas session and revokes every token issued within it.
async fn end_session(app: &Shared, session: &SessionInfo) {
    if let Err(e) = app.oidc.revoke_session(&session.id).await {
        tracing::error!(error = %e, "revoking the session's tokens failed");
    }
    if let Err(e) = app
        .identity
        .end_session(&session.account, &session.id, ended::RP_LOGOUT)
        .await
    {
        tracing::error!(error = %e, "ending the session failed");
    }
}

#[derive(Template)]
#[template(path = "oidc_message.html")]
struct SignedOutPage {
    c: Chrome,
    heading: &'static str,
    text: &'static str,
    detail_label: &'static str,
    detail: String,
}

fn logged_out(app: &Shared, c: Chrome, target: &LogoutTarget, state: Option<&str>) -> Response {
    let mut res = match &target.redirect_uri {
        Some(u) => {
            let mut url = u.clone();
            if let Some(s) = state {
                let sep = if url.contains('?') { '&' } else { '?' };
                url.push(sep);
                url.push_str("state=");
                url.push_str(&percent_encode(s));
            }
            Redirect::to(&url).into_response()
        }
        None => {
            let o = oidc_texts(c.lang);
            render(
                &SignedOutPage {
                    heading: o.signed_out_title,
                    text: o.signed_out_text,
                    detail_label: "",
                    detail: String::new(),
                    c,
                },
                StatusCode::OK,
            )
        }
    };
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), secure_cookies(app), "Lax"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_parameter_is_stripped_from_the_request() {
        assert_eq!(
            request_query("a=1&civitas_login_after=5&b=2"),
            "a=1&b=2".to_string()
        );
        assert_eq!(
            url_host("https://rp.example:8443/cb?x=1"),
            "https://rp.example:8443"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        // "a%2Bb:s+c" → id "a+b", secret "s c".
        h.insert(header::AUTHORIZATION, "Basic YSUyQmI6cytj".parse().unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(Ok(("a+b".to_string(), "s c".to_string())))
        );
        h.insert(header::AUTHORIZATION, "Basic !!".parse().unwrap());
        assert_eq!(basic_credentials(&h), Some(Err(())));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }
}
