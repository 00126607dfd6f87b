//! Passkeys on the site: the JSON endpoints `assets/passkey.js` calls to run WebAuthn
//! ceremonies (sign in without a username, add a passkey, step up), and the form that
//! removes a passkey.
//!
//! Every JSON endpoint needs the visitor's anti-forgery token in an `X-CSRF-Token` header
//! and a same-origin `Origin` when one is sent; errors are RFC 9457 problem details whose
//! `detail` is written for the person, in their language.

use axum::Form;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use civitas_identity::passkey::CeremonyStarted;
use civitas_identity::session::SessionInfo;
use civitas_identity::{IdentityError, Loa};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::account::session_cookies;
use crate::account_texts::AccountTexts;
use crate::auth::{Visitor, safe_next};
use crate::i18n::Lang;
use crate::pages::{Chrome, error_page};
use crate::{Problem, Shared};

/// The header that carries the anti-forgery token on JSON requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Adding a passkey needs a password (or other proof) typed this recently.
const RECENT_AUTH_MS: i64 = 15 * 60_000;

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/signin/passkey/start", post(sign_in_start))
        .route("/signin/passkey/finish", post(sign_in_finish))
        .route("/signin/step-up/passkey/start", post(step_up_start))
        .route("/signin/step-up/passkey/finish", post(step_up_finish))
        .route("/account/passkeys/start", post(add_start))
        .route("/account/passkeys/finish", post(add_finish))
        .route("/account/passkeys/remove", post(remove))
}

fn texts(headers: &HeaderMap) -> &'static AccountTexts {
    Lang::from_headers(headers).account()
}

/// Refuses a JSON request without this visitor's token in `X-CSRF-Token`, or from another
/// origin.
fn check_csrf(v: &Visitor, headers: &HeaderMap) -> Result<(), Problem> {
    if v.json_call_is_genuine(headers) {
        Ok(())
    } else {
        Err(Problem::new(StatusCode::FORBIDDEN, "csrf", "Forbidden")
            .detail(texts(headers).err_form_expired))
    }
}

/// The session of a signed-in visitor whose call carries the anti-forgery header.
fn signed_in_session(v: &Visitor, headers: &HeaderMap) -> Result<SessionInfo, Problem> {
    check_csrf(v, headers)?;
    v.session.clone().ok_or_else(|| {
        Problem::new(StatusCode::UNAUTHORIZED, "signed-out", "Not signed in")
            .detail(texts(headers).err_code_expired)
    })
}

/// A ceremony's start as the browser gets it: the options (`publicKey`, and `mediation` for
/// a sign-in) with the ceremony's id beside them.
fn started(c: CeremonyStarted) -> Response {
    let mut body: Value = match serde_json::from_str(&c.challenge) {
        Ok(v) => v,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    if let Value::Object(map) = &mut body {
        map.insert("ceremony".into(), Value::String(c.ceremony_id));
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

/// The answer to a finished ceremony: where the page goes next.
fn redirect_json(to: &str) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "redirect": to })),
    )
        .into_response()
}

/// An identity error as a problem the script can show.
fn problem(headers: &HeaderMap, e: IdentityError) -> Response {
    let a = texts(headers);
    match e {
        IdentityError::PasskeyRejected(_)
        | IdentityError::CeremonyUnknown
        | IdentityError::CeremonyExpired => Problem::new(
            StatusCode::BAD_REQUEST,
            "passkey-refused",
            "Passkey refused",
        )
        .detail(a.passkey_failed)
        .into_response(),
        IdentityError::NoPasskey => Problem::new(StatusCode::CONFLICT, "no-passkey", "No passkey")
            .detail(a.passkey_none_for_step_up)
            .into_response(),
        IdentityError::InvalidLabel(m) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-label",
            "Invalid label",
        )
        .detail(format!("{}: {m}", a.passkey_name))
        .into_response(),
        IdentityError::Throttled(t) => {
            let mut res = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many attempts",
            )
            .detail(format!("{} {}", a.err_throttled, t.retry_after_secs))
            .into_response();
            if let Ok(v) = t.retry_after_secs.to_string().parse() {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
        IdentityError::PasskeySetup(_) => {
            Problem::new(StatusCode::NOT_FOUND, "passkeys-off", "Passkeys are off")
                .detail(a.passkey_needs_js)
                .into_response()
        }
        other => Problem::internal(&other).into_response(),
    }
}

/// The JSON body of a finish request.
#[derive(Deserialize)]
struct Finish {
    ceremony: String,
    credential: Value,
    #[serde(default)]
    next: String,
    #[serde(default)]
    label: String,
}

fn parse_finish(body: &Bytes) -> Result<(Finish, String), Problem> {
    let f: Finish = serde_json::from_slice(body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(format!(
            "expected {{\"ceremony\", \"credential\", ...}}: {e}"
        ))
    })?;
    let credential = f.credential.to_string();
    Ok((f, credential))
}

// ----- sign in without a username -----------------------------------------------------

async fn sign_in_start(State(app): State<Shared>, v: Visitor, headers: HeaderMap) -> Response {
    if let Err(r) = check_csrf(&v, &headers) {
        return r.into_response();
    }
    match app.identity.start_passkey_sign_in(&v.client).await {
        Ok(c) => started(c),
        Err(e) => problem(&headers, e),
    }
}

async fn sign_in_finish(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_csrf(&v, &headers) {
        return r.into_response();
    }
    let (f, credential) = match parse_finish(&body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let next = safe_next(Some(&f.next));
    match app
        .identity
        .finish_passkey_sign_in(&f.ceremony, &credential, &v.client)
        .await
    {
        Ok(outcome) => session_cookies(&app, &outcome, redirect_json(&next)),
        Err(e) => problem(&headers, e),
    }
}

// ----- step-up ------------------------------------------------------------------------

async fn step_up_start(State(app): State<Shared>, v: Visitor, headers: HeaderMap) -> Response {
    let s = match signed_in_session(&v, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match app.identity.start_passkey_step_up(&s).await {
        Ok(c) => started(c),
        Err(e) => problem(&headers, e),
    }
}

async fn step_up_finish(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = match signed_in_session(&v, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let (f, credential) = match parse_finish(&body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let next = safe_next(Some(&f.next));
    match app
        .identity
        .finish_passkey_step_up(&s, &f.ceremony, &credential)
        .await
    {
        Ok(outcome) => session_cookies(&app, &outcome, redirect_json(&next)),
        Err(e) => problem(&headers, e),
    }
}

// ----- adding and removing ------------------------------------------------------------

/// The session, when it may add a passkey: the person proved themselves recently, and at
/// the level their account's second factor gives when they have one (a passkey earns more
/// than a password, so a stolen password session must not be able to add one later).
async fn may_add(app: &Shared, v: &Visitor, headers: &HeaderMap) -> Result<SessionInfo, Response> {
    let s = signed_in_session(v, headers).map_err(IntoResponse::into_response)?;
    let a = texts(headers);
    let now = civitas_ledger::event::now_ms();
    let need = match app.identity.totp_enabled(&s.account.id).await {
        Ok(true) => Loa::Substantial,
        Ok(false) => Loa::Low,
        Err(e) => return Err(problem(headers, e)),
    };
    if now - s.auth_time_ms > RECENT_AUTH_MS || s.loa < need {
        return Err(
            Problem::new(StatusCode::FORBIDDEN, "reauthenticate", "Sign in again")
                .detail(a.passkey_reauthenticate)
                .into_response(),
        );
    }
    Ok(s)
}

async fn add_start(State(app): State<Shared>, v: Visitor, headers: HeaderMap) -> Response {
    let s = match may_add(&app, &v, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match app.identity.start_passkey_registration(&s).await {
        Ok(c) => started(c),
        Err(e) => problem(&headers, e),
    }
}

async fn add_finish(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = match may_add(&app, &v, &headers).await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let (f, credential) = match parse_finish(&body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match app
        .identity
        .finish_passkey_registration(&s, &f.ceremony, &credential, &f.label)
        .await
    {
        Ok(_) => redirect_json("/account/security?passkey=added"),
        Err(e) => problem(&headers, e),
    }
}

#[derive(Deserialize, Default)]
struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    passkey: String,
}

async fn remove(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<RemoveForm>,
) -> Response {
    // Like the authenticator app, a passkey is taken off only at the level a second factor
    // gives, so a stolen password cannot lock the owner out of their strongest sign-in.
    let s = match crate::account::guard_security_form(&v, &headers, &uri, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match app.identity.remove_passkey(&s, &f.passkey).await {
        Ok(()) | Err(IdentityError::NotFound) => Redirect::to("/account/security").into_response(),
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}
