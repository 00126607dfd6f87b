//! Sign-in, registration and account pages: password and second-factor sign-in, step-up,
//! sign-out, registration against the population register, security settings (password,
//! authenticator app, recovery codes), sessions, mandates, and the development mailbox.

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_identity::mandate::{GrantRequest, Granted, Principal, SCOPES};
use civitas_identity::session::{SessionInfo, ended};
use civitas_identity::{AccountKind, IdentityError, Loa, SignInOutcome, SignInStep};
use serde::Deserialize;

use crate::Shared;
use crate::account_texts::AccountTexts;
use crate::auth::{
    PENDING_COOKIE, SESSION_COOKIE, SignedIn, Visitor, cookie, require, safe_next, secure_cookies,
    set_cookie,
};
use crate::pages::{Chrome, error_page, render};

const REGISTRATION_COOKIE: &str = "civitas_registration";

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/signin", get(sign_in_form).post(sign_in))
        .route("/signin/code", get(code_form).post(code))
        .route("/signin/step-up", get(step_up_form).post(step_up))
        .route("/signout", post(sign_out))
        .route("/register", get(register_form).post(register))
        .route("/register/confirm", get(confirm_form).post(confirm))
        .route("/account", get(account))
        .route("/account/security", get(security))
        .route("/account/password", post(change_password))
        .route("/account/totp", post(totp_begin))
        .route("/account/totp/confirm", post(totp_confirm))
        .route("/account/totp/remove", post(totp_remove))
        .route("/account/recovery-codes", post(recovery_codes))
        .route("/account/sessions", get(sessions))
        .route("/account/sessions/end", post(end_session))
        .route("/account/mandates", get(mandates).post(grant_mandate))
        .route("/account/mandates/revoke", post(revoke_mandate))
        .route("/account/act-for", post(act_for))
        .route("/dev/mail", get(dev_mail))
}

/// One error on a form: the field it belongs to (for the summary's link) and the message.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) field: &'static str,
    pub(crate) message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        field,
        message: message.into(),
    }]
}

pub(crate) fn error_for(errors: &[FieldError], field: &str) -> String {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

/// The message for an identity error on a form, in the reader's language.
fn explain(a: &AccountTexts, e: &IdentityError) -> String {
    match e {
        IdentityError::BadCredentials => a.err_bad_credentials.into(),
        IdentityError::Throttled(t) => format!("{} {}", a.err_throttled, t.retry_after_secs),
        IdentityError::WeakPassword(w) => match w.code() {
            "too_short" => a.err_weak_too_short,
            "too_long" => a.err_weak_too_long,
            "breached" => a.err_weak_breached,
            "personal" => a.err_weak_personal,
            _ => a.err_weak_guessable,
        }
        .into(),
        IdentityError::AlreadyRegistered => a.err_already_registered.into(),
        IdentityError::NoCourier => a.err_no_courier.into(),
        IdentityError::Expired => a.err_code_expired.into(),
        other => other.to_string(),
    }
}

/// Whether the error is the person's to fix (shown on the form) rather than ours (a 500).
fn is_user_error(e: &IdentityError) -> bool {
    !matches!(
        e,
        IdentityError::Store(_)
            | IdentityError::Ledger(_)
            | IdentityError::Registry(_)
            | IdentityError::Hashing(_)
    )
}

/// Sets the session cookie for a fresh sign-in and sends the browser on.
fn signed_in(app: &Shared, outcome: &SignInOutcome, next: &str) -> Response {
    session_cookies(app, outcome, Redirect::to(next).into_response())
}

/// Adds the cookies of a fresh sign-in (or step-up) to `res`: the new session token, and
/// the half-finished sign-in's cookie deleted.
pub(crate) fn session_cookies(
    app: &Shared,
    outcome: &SignInOutcome,
    mut res: Response,
) -> Response {
    let secure = secure_cookies(app);
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &outcome.token, None, secure, "Lax"),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(PENDING_COOKIE, "", Some(0), secure, "Strict"),
    );
    res
}

fn bad_form(
    c: Chrome,
    headers: &HeaderMap,
    e: IdentityError,
    f: impl FnOnce(Chrome, Vec<FieldError>) -> Response,
    field: &'static str,
) -> Response {
    if is_user_error(&e) {
        let message = explain(c.a, &e);
        let mut res = f(c, field_error(field, message));
        if let IdentityError::Throttled(t) = e {
            if let Ok(v) = t.retry_after_secs.to_string().parse() {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        }
        res
    } else {
        error_page(c, headers, &e)
    }
}

// ----- sign in ------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    c: Chrome,
    errors: Vec<FieldError>,
    identifier: String,
    next: String,
    /// Whether the site offers passkey sign-in.
    passkey: bool,
}

impl SignInPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

async fn sign_in_form(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<NextQuery>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let next = safe_next(q.next.as_deref());
    render(
        &SignInPage {
            c,
            errors: Vec::new(),
            identifier: String::new(),
            next,
            passkey: app.identity.passkeys_enabled(),
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize, Default)]
struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

async fn sign_in(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<SignInForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let next = safe_next(Some(&f.next));
    let passkey = app.identity.passkeys_enabled();
    let page = |c: Chrome, errors: Vec<FieldError>, identifier: String, next: String| {
        render(
            &SignInPage {
                c,
                errors,
                identifier,
                next,
                passkey,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        let msg = c.a.err_form_expired.to_string();
        return page(c, field_error("identifier", msg), f.identifier, next);
    }
    let mut errors = Vec::new();
    if f.identifier.trim().is_empty() {
        errors.push(FieldError {
            field: "identifier",
            message: c.a.err_identifier_missing.into(),
        });
    }
    if f.password.is_empty() {
        errors.push(FieldError {
            field: "password",
            message: c.a.err_password_missing.into(),
        });
    }
    if !errors.is_empty() {
        return page(c, errors, f.identifier, next);
    }
    match app
        .identity
        .sign_in_password(&f.identifier, &f.password, &v.client)
        .await
    {
        Ok(SignInStep::Done(outcome)) => signed_in(&app, &outcome, &next),
        Ok(SignInStep::SecondFactor { pending_token }) => {
            let mut res = Redirect::to(&format!(
                "/signin/code?next={}",
                crate::pages::percent_encode(&next)
            ))
            .into_response();
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    PENDING_COOKIE,
                    &pending_token,
                    Some(300),
                    secure_cookies(&app),
                    "Strict",
                ),
            );
            res
        }
        Err(e) => {
            let identifier = f.identifier.clone();
            bad_form(
                c,
                &headers,
                e,
                |c, errs| page(c, errs, identifier, next),
                "identifier",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "signin_code.html")]
struct CodePage {
    c: Chrome,
    errors: Vec<FieldError>,
    next: String,
    action: &'static str,
    heading: &'static str,
    lead: &'static str,
    /// Whether the page offers a passkey (step-up, when the account has one).
    passkey: bool,
}

impl CodePage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

async fn code_form(
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<NextQuery>,
) -> Response {
    if cookie(&headers, PENDING_COOKIE).is_none_or(str::is_empty) {
        return Redirect::to("/signin").into_response();
    }
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let (heading, lead) = (c.a.code_title, c.a.code_lead);
    render(
        &CodePage {
            c,
            errors: Vec::new(),
            next: safe_next(q.next.as_deref()),
            action: "/signin/code",
            heading,
            lead,
            passkey: false,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize, Default)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: String,
}

async fn code(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<CodeForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let next = safe_next(Some(&f.next));
    let (heading, lead) = (c.a.code_title, c.a.code_lead);
    let page = |c: Chrome, errors: Vec<FieldError>| {
        render(
            &CodePage {
                c,
                errors,
                next: next.clone(),
                action: "/signin/code",
                heading,
                lead,
                passkey: false,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        let msg = c.a.err_form_expired.to_string();
        return page(c, field_error("code", msg));
    }
    let Some(pending) = cookie(&headers, PENDING_COOKIE).filter(|p| !p.is_empty()) else {
        return Redirect::to("/signin").into_response();
    };
    match app
        .identity
        .sign_in_second_factor(pending, &f.code, &v.client)
        .await
    {
        Ok(outcome) => signed_in(&app, &outcome, &next),
        Err(IdentityError::Expired) => Redirect::to("/signin").into_response(),
        Err(IdentityError::BadCredentials) => {
            let msg = c.a.err_code_wrong.to_string();
            page(c, field_error("code", msg))
        }
        Err(e) => bad_form(c, &headers, e, page, "code"),
    }
}

#[derive(Deserialize, Default)]
struct StepUpQuery {
    need: Option<String>,
    next: Option<String>,
}

async fn step_up_form(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<StepUpQuery>,
) -> Response {
    let session = match require(&v, &uri, Loa::Low) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let next = safe_next(q.next.as_deref());
    let need = q
        .need
        .as_deref()
        .and_then(Loa::from_code)
        .unwrap_or(Loa::Substantial);
    if session.loa >= need {
        return Redirect::to(&next).into_response();
    }
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let has_totp = match app.identity.totp_enabled(&session.account.id).await {
        Ok(t) => t,
        Err(e) => return error_page(c, &headers, &e),
    };
    let passkey = match has_passkeys(&app, &session).await {
        Ok(p) => p,
        Err(e) => return error_page(c, &headers, &e),
    };
    let (heading, lead) = (
        c.a.step_up_title,
        if has_totp || passkey {
            c.a.step_up_lead
        } else {
            c.a.step_up_no_method
        },
    );
    render(
        &CodePage {
            c,
            errors: Vec::new(),
            next,
            action: "/signin/step-up",
            heading,
            lead,
            passkey,
        },
        StatusCode::OK,
    )
}

async fn step_up(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<CodeForm>,
) -> Response {
    let session = match require(&v, &uri, Loa::Low) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let next = safe_next(Some(&f.next));
    let (heading, lead) = (c.a.step_up_title, c.a.step_up_lead);
    let passkey = match has_passkeys(&app, &session).await {
        Ok(p) => p,
        Err(e) => return error_page(c, &headers, &e),
    };
    let page = |c: Chrome, errors: Vec<FieldError>| {
        render(
            &CodePage {
                c,
                errors,
                next: next.clone(),
                action: "/signin/step-up",
                heading,
                lead,
                passkey,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        let msg = c.a.err_form_expired.to_string();
        return page(c, field_error("code", msg));
    }
    match app.identity.step_up_totp(&session, &f.code).await {
        Ok(outcome) => signed_in(&app, &outcome, &next),
        Err(IdentityError::BadCredentials) => {
            let msg = c.a.err_code_wrong.to_string();
            page(c, field_error("code", msg))
        }
        Err(e) => bad_form(c, &headers, e, page, "code"),
    }
}

/// Whether the site has passkeys on and the account holds one.
async fn has_passkeys(app: &Shared, s: &SessionInfo) -> Result<bool, IdentityError> {
    if !app.identity.passkeys_enabled() {
        return Ok(false);
    }
    Ok(!app.identity.passkeys_of(&s.account.id).await?.is_empty())
}

#[derive(Deserialize, Default)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(s) = &v.session {
        if !v.form_is_genuine(&headers, &f.csrf) {
            return forbidden_form(&headers);
        }
        if let Err(e) = app
            .identity
            .end_session(&s.account, &s.id, ended::SIGNED_OUT)
            .await
        {
            tracing::error!(error = %e, "sign-out failed");
        }
        // What relying parties were given within this session ends with it.
        if let Err(e) = app.oidc.revoke_session(&s.id).await {
            tracing::error!(error = %e, "revoking the session's tokens failed");
        }
    }
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), secure_cookies(&app), "Lax"),
    );
    res
}

/// The session of a signed-in person submitting a genuine form at level `need`, or the
/// response to give instead: sign in, step up, or the expired-form page.
pub(crate) fn guard_form(
    v: &Visitor,
    headers: &HeaderMap,
    back: &axum::http::Uri,
    need: Loa,
    csrf: &str,
) -> Result<SessionInfo, Box<Response>> {
    let s = require(v, back, need).map_err(|r| Box::new(r.into_response()))?;
    if !v.form_is_genuine(headers, csrf) {
        return Err(Box::new(forbidden_form(headers)));
    }
    Ok(s)
}

/// [`guard_form`] for taking a sign-in method off: at the level a second factor gives, so a
/// stolen password alone cannot remove the owner's authenticators; stepping up returns to the
/// security page.
pub(crate) fn guard_security_form(
    v: &Visitor,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    csrf: &str,
) -> Result<SessionInfo, Box<Response>> {
    let back = "/account/security".parse().unwrap_or_else(|_| uri.clone());
    guard_form(v, headers, &back, Loa::Substantial, csrf)
}

pub(crate) fn forbidden_form(headers: &HeaderMap) -> Response {
    let c = Chrome::new(headers, &"/".parse().unwrap_or_default(), "");
    crate::pages::message_page(
        c,
        StatusCode::FORBIDDEN,
        |t| (t.form_expired_title, t.form_expired_text),
        String::new(),
    )
}

// ----- registration -------------------------------------------------------------------

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    c: Chrome,
    errors: Vec<FieldError>,
    national_id: String,
    birth_date: String,
}

impl RegisterPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

async fn register_form(v: Visitor, headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    render(
        &RegisterPage {
            c,
            errors: Vec::new(),
            national_id: String::new(),
            birth_date: String::new(),
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize, Default)]
struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    national_id: String,
    #[serde(default)]
    birth_date: String,
}

async fn register(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<RegisterForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let (nid, bd) = (f.national_id.clone(), f.birth_date.clone());
    let page = |c: Chrome, errors: Vec<FieldError>| {
        render(
            &RegisterPage {
                c,
                errors,
                national_id: nid,
                birth_date: bd,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        let msg = c.a.err_form_expired.to_string();
        return page(c, field_error("national_id", msg));
    }
    if civitas_core::NationalId::parse(f.national_id.trim().to_uppercase().as_str()).is_err() {
        let msg = c.a.national_id_hint.to_string();
        return page(c, field_error("national_id", msg));
    }
    match app
        .identity
        .start_registration(&f.national_id, &f.birth_date, &v.client)
        .await
    {
        Ok(reg) => {
            let mut res = Redirect::to(&format!(
                "/register/confirm?to={}",
                crate::pages::percent_encode(&reg.sent_to)
            ))
            .into_response();
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    REGISTRATION_COOKIE,
                    &reg.id,
                    Some(600),
                    secure_cookies(&app),
                    "Strict",
                ),
            );
            res
        }
        Err(IdentityError::NoContact) => {
            let msg = c.a.err_no_contact.to_string();
            page(c, field_error("national_id", msg))
        }
        Err(IdentityError::Invalid(_)) => {
            let msg = c.a.err_register_mismatch.to_string();
            page(c, field_error("national_id", msg))
        }
        Err(e) => bad_form(c, &headers, e, page, "national_id"),
    }
}

#[derive(Template)]
#[template(path = "register_confirm.html")]
struct ConfirmPage {
    c: Chrome,
    errors: Vec<FieldError>,
    sent_to: String,
}

impl ConfirmPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

#[derive(Deserialize, Default)]
struct SentTo {
    to: Option<String>,
}

async fn confirm_form(
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<SentTo>,
) -> Response {
    if cookie(&headers, REGISTRATION_COOKIE).is_none_or(str::is_empty) {
        return Redirect::to("/register").into_response();
    }
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    render(
        &ConfirmPage {
            c,
            errors: Vec::new(),
            sent_to: q.to.unwrap_or_default(),
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize, Default)]
struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    sent_to: String,
}

async fn confirm(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "signin");
    let sent_to = f.sent_to.clone();
    let page = |c: Chrome, errors: Vec<FieldError>| {
        render(
            &ConfirmPage { c, errors, sent_to },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    if !v.form_is_genuine(&headers, &f.csrf) {
        let msg = c.a.err_form_expired.to_string();
        return page(c, field_error("code", msg));
    }
    let Some(reg) = cookie(&headers, REGISTRATION_COOKIE).filter(|r| !r.is_empty()) else {
        return Redirect::to("/register").into_response();
    };
    match app
        .identity
        .complete_registration(reg, &f.code, &f.password, &v.client)
        .await
    {
        Ok(outcome) => {
            let mut res = signed_in(&app, &outcome, "/account");
            res.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    REGISTRATION_COOKIE,
                    "",
                    Some(0),
                    secure_cookies(&app),
                    "Strict",
                ),
            );
            res
        }
        Err(IdentityError::BadCredentials) => {
            let msg = c.a.err_code_wrong.to_string();
            page(c, field_error("code", msg))
        }
        Err(e @ IdentityError::WeakPassword(_)) => bad_form(c, &headers, e, page, "password"),
        Err(e) => bad_form(c, &headers, e, page, "code"),
    }
}

// ----- account ------------------------------------------------------------------------

fn level_text(a: &AccountTexts, l: Loa) -> &'static str {
    match l {
        Loa::Low => a.level_low,
        Loa::Substantial => a.level_substantial,
        Loa::High => a.level_high,
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    c: Chrome,
    s: SessionInfo,
    level: &'static str,
    kind: &'static str,
    acting: Option<Principal>,
    is_operator: bool,
}

async fn account(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let acting = match app.identity.current_principal(&s).await {
        Ok(p) => p,
        Err(e) => return error_page(c, &headers, &e),
    };
    let kind = match s.account.kind {
        AccountKind::Citizen => c.a.kind_citizen,
        AccountKind::Staff => c.a.kind_staff,
        AccountKind::Operator => c.a.kind_operator,
    };
    let level = level_text(c.a, s.loa);
    let is_operator = s.account.kind == AccountKind::Operator;
    render(
        &AccountPage {
            c,
            s,
            level,
            kind,
            acting,
            is_operator,
        },
        StatusCode::OK,
    )
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    c: Chrome,
    errors: Vec<FieldError>,
    notice: String,
    totp_on: bool,
    recovery_left: i64,
    /// Set while an authenticator is being set up: the key and the otpauth URI.
    totp_setup: Option<(String, String)>,
    /// Fresh recovery codes, shown once.
    new_codes: Vec<String>,
    /// Whether the site offers passkeys at all.
    passkeys_on: bool,
    passkeys: Vec<PasskeyRow>,
}

/// A passkey as the security page lists it.
struct PasskeyRow {
    id: String,
    label: String,
    created: String,
    last_used: String,
}

impl SecurityPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

/// What the security page shows besides the account's state.
#[derive(Default)]
struct SecurityView {
    errors: Vec<FieldError>,
    notice: String,
    totp_setup: Option<(String, String)>,
    new_codes: Vec<String>,
}

async fn security_page(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    s: &SessionInfo,
    view: SecurityView,
) -> Response {
    let status = if view.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let totp_on = match app.identity.totp_enabled(&s.account.id).await {
        Ok(t) => t,
        Err(e) => return error_page(c, headers, &e),
    };
    let recovery_left = match app.identity.recovery_codes_left(&s.account.id).await {
        Ok(n) => n,
        Err(e) => return error_page(c, headers, &e),
    };
    let passkeys = match app.identity.passkeys_of(&s.account.id).await {
        Ok(list) => list
            .into_iter()
            .map(|p| PasskeyRow {
                created: taiwan_time(p.created_ms),
                last_used: p
                    .last_used_ms
                    .map_or_else(|| c.a.passkey_never_used.to_string(), taiwan_time),
                id: p.id,
                label: p.label,
            })
            .collect(),
        Err(e) => return error_page(c, headers, &e),
    };
    render(
        &SecurityPage {
            c,
            errors: view.errors,
            notice: view.notice,
            totp_on,
            recovery_left,
            totp_setup: view.totp_setup,
            new_codes: view.new_codes,
            passkeys_on: app.identity.passkeys_enabled(),
            passkeys,
        },
        status,
    )
}

#[derive(Deserialize, Default)]
struct SecurityQuery {
    passkey: Option<String>,
}

async fn security(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Query(q): Query<SecurityQuery>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let notice = match q.passkey.as_deref() {
        Some("added") => c.a.passkey_added.to_string(),
        _ => String::new(),
    };
    security_page(
        &app,
        c,
        &headers,
        &s,
        SecurityView {
            notice,
            ..SecurityView::default()
        },
    )
    .await
}

#[derive(Deserialize, Default)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
}

async fn change_password(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Form(f): Form<PasswordForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    if !v.form_is_genuine(&headers, &f.csrf) {
        return forbidden_form(&headers);
    }
    match app
        .identity
        .change_password(&s, &f.current, &f.password)
        .await
    {
        Ok(()) => {
            let notice = c.a.password_changed.to_string();
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    notice,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) if is_user_error(&e) => {
            let field = if matches!(e, IdentityError::BadCredentials) {
                "current"
            } else {
                "password"
            };
            let errors = field_error(field, explain(c.a, &e));
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    errors,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

async fn totp_begin(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app.identity.begin_totp(&s).await {
        Ok(setup) => {
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    totp_setup: Some(setup),
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) if is_user_error(&e) => {
            let errors = field_error("code", explain(c.a, &e));
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    errors,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

#[derive(Deserialize, Default)]
struct TotpConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    uri: String,
}

async fn totp_confirm(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<TotpConfirmForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app.identity.confirm_totp(&s, &f.code).await {
        Ok(codes) => {
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    new_codes: codes,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(IdentityError::BadCredentials) => {
            let errors = field_error("code", c.a.err_code_wrong);
            let setup = Some((f.secret, f.uri));
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    errors,
                    totp_setup: setup,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) if is_user_error(&e) => {
            let errors = field_error("code", explain(c.a, &e));
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    errors,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

async fn totp_remove(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<CsrfOnly>,
) -> Response {
    // Removing a second factor needs the level it gives: a stolen password alone must not
    // be able to take the authenticator off.
    let s = match guard_security_form(&v, &headers, &uri, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app.identity.remove_totp(&s).await {
        Ok(()) => Redirect::to("/account/security").into_response(),
        Err(e) => error_page(c, &headers, &e),
    }
}

async fn recovery_codes(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let s = match guard_security_form(&v, &headers, &uri, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app.identity.new_recovery_codes(&s).await {
        Ok(codes) => {
            security_page(
                &app,
                c,
                &headers,
                &s,
                SecurityView {
                    new_codes: codes,
                    ..SecurityView::default()
                },
            )
            .await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

// ----- sessions -----------------------------------------------------------------------

/// A session as the sessions page shows it.
struct SessionRow {
    id: String,
    this: bool,
    started: String,
    last_seen: String,
    from: String,
    level: &'static str,
}

/// Unix milliseconds as a Taiwan-time date and minute.
pub(crate) use civitas_identity::taiwan_time;

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    c: Chrome,
    rows: Vec<SessionRow>,
}

async fn sessions(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let list = match app.identity.sessions(&s.account).await {
        Ok(l) => l,
        Err(e) => return error_page(c, &headers, &e),
    };
    let rows = list
        .into_iter()
        .map(|x| SessionRow {
            this: x.id == s.id,
            started: taiwan_time(x.created_ms),
            last_seen: taiwan_time(x.last_seen_ms),
            from: format!("{} · {}", x.client.ip, x.client.user_agent),
            level: level_text(c.a, x.loa),
            id: x.id,
        })
        .collect();
    render(&SessionsPage { c, rows }, StatusCode::OK)
}

#[derive(Deserialize, Default)]
struct EndForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    session: String,
}

async fn end_session(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<EndForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let ended = app
        .identity
        .end_session(&s.account, &f.session, ended::ENDED_BY_USER)
        .await;
    if ended.is_ok()
        && let Err(e) = app.oidc.revoke_session(&f.session).await
    {
        tracing::error!(error = %e, "revoking the session's tokens failed");
    }
    match ended {
        Ok(()) | Err(IdentityError::NotFound) => Redirect::to(if f.session == s.id {
            "/"
        } else {
            "/account/sessions"
        })
        .into_response(),
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}

// ----- mandates -----------------------------------------------------------------------

struct HeldRow {
    key: String,
    name: String,
    basis: &'static str,
    until: String,
    scope: &'static str,
}

struct GivenRow {
    id: String,
    grantee: String,
    scope: &'static str,
    period: String,
    note: String,
    revoked: bool,
}

fn scope_text(a: &AccountTexts, scope: &str) -> &'static str {
    match scope {
        "applications" => a.scope_applications,
        "benefits" => a.scope_benefits,
        "health" => a.scope_health,
        "tax" => a.scope_tax,
        _ => a.scope_all_services,
    }
}

#[derive(Template)]
#[template(path = "mandates.html")]
struct MandatesPage {
    c: Chrome,
    errors: Vec<FieldError>,
    held: Vec<HeldRow>,
    given: Vec<GivenRow>,
    scopes: Vec<(&'static str, &'static str)>,
    form: GrantForm,
    is_citizen: bool,
    acting: Option<String>,
}

impl MandatesPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

#[derive(Deserialize, Default, Clone)]
struct GrantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grantee: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    valid_from: String,
    #[serde(default)]
    valid_until: String,
    #[serde(default)]
    note: String,
}

async fn mandates_page(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    s: &SessionInfo,
    errors: Vec<FieldError>,
    form: GrantForm,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let held = match app.identity.mandates_held(&s.account).await {
        Ok(h) => h,
        Err(e) => return error_page(c, headers, &e),
    };
    let given: Vec<Granted> = match app.identity.mandates_granted(&s.account).await {
        Ok(g) => g,
        Err(e) => return error_page(c, headers, &e),
    };
    let acting = match app.identity.current_principal(s).await {
        Ok(p) => p.map(|p| p.name),
        Err(e) => return error_page(c, headers, &e),
    };
    let a = c.a;
    let held = held
        .into_iter()
        .map(|p| HeldRow {
            basis: match p.basis.as_str() {
                "parent" => a.basis_parent,
                "business" => a.basis_business,
                _ => a.basis_granted,
            },
            scope: scope_text(a, &p.scope),
            until: p.valid_until.clone().unwrap_or_default(),
            key: p.key,
            name: p.name,
        })
        .collect();
    let mut rows = Vec::new();
    for g in given {
        let grantee = match civitas_registry::person_by_id(&app.db, g.grantee_person_id).await {
            Ok(p) => p.map(|p| p.name_zh).unwrap_or_default(),
            Err(e) => return error_page(c, headers, &e),
        };
        rows.push(GivenRow {
            scope: scope_text(a, &g.scope),
            period: format!("{} – {}", g.valid_from, g.valid_until),
            revoked: g.revoked_ms.is_some(),
            id: g.id,
            grantee,
            note: g.note,
        });
    }
    let scopes = SCOPES.iter().map(|s| (*s, scope_text(a, s))).collect();
    let is_citizen = s.account.person_id.is_some();
    render(
        &MandatesPage {
            c,
            errors,
            held,
            given: rows,
            scopes,
            form,
            is_citizen,
            acting,
        },
        status,
    )
}

async fn mandates(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let today = civitas_identity::Identity::today();
    let form = GrantForm {
        valid_from: today.clone(),
        ..GrantForm::default()
    };
    mandates_page(&app, c, &headers, &s, Vec::new(), form).await
}

async fn grant_mandate(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<GrantForm>,
) -> Response {
    // Letting someone act for you is consequential: it needs a second factor.
    let s = match guard_form(&v, &headers, &uri, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let req = GrantRequest {
        grantee_national_id: f.grantee.clone(),
        scope: f.scope.clone(),
        valid_from: f.valid_from.clone(),
        valid_until: f.valid_until.clone(),
        note: f.note.clone(),
    };
    match app.identity.grant_mandate(&s, &req).await {
        Ok(_) => Redirect::to("/account/mandates").into_response(),
        Err(IdentityError::Invalid(m)) => {
            let field = if m.contains("date") || m.contains("day") || m.contains("days") {
                "valid_until"
            } else if m.contains("mandate allows") {
                "scope"
            } else {
                "grantee"
            };
            mandates_page(&app, c, &headers, &s, field_error(field, m), f).await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

#[derive(Deserialize, Default)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

async fn revoke_mandate(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<KeyForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match app.identity.revoke_mandate(&s, &f.key).await {
        Ok(_) | Err(IdentityError::NotFound) => Redirect::to("/account/mandates").into_response(),
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}

async fn act_for(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<KeyForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let key = (!f.key.is_empty()).then_some(f.key.as_str());
    match app.identity.act_for(&s, key).await {
        Ok(_) => Redirect::to("/account").into_response(),
        Err(IdentityError::NotFound) => {
            let c = Chrome::for_visitor(&v, &headers, &uri, "account");
            crate::pages::message_page(
                c,
                StatusCode::NOT_FOUND,
                |t| (t.not_found_title, t.not_found_text),
                String::new(),
            )
        }
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}

// ----- development mailbox ------------------------------------------------------------

struct MailRow {
    sent: String,
    to: String,
    subject: String,
    body: String,
}

#[derive(Template)]
#[template(path = "dev_mail.html")]
struct MailPage {
    c: Chrome,
    rows: Vec<MailRow>,
    demo_password: Option<&'static str>,
    /// The featured demo residents who have accounts: (identification number, name, note).
    people: Vec<(String, String, String)>,
}

async fn dev_mail(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "");
    let Some(sink) = &app.mail_sink else {
        return crate::pages::message_page(
            c,
            StatusCode::NOT_FOUND,
            |t| (t.not_found_title, t.not_found_text),
            String::new(),
        );
    };
    let people = match civitas_registry::demo_people(&app.db).await {
        Ok(list) => list
            .into_iter()
            .map(|p| {
                let note = c.lang.pick(&p.note_zh, &p.note_en).to_string();
                (p.national_id, p.name_zh, note)
            })
            .collect(),
        Err(e) => return error_page(c, &headers, &e),
    };
    match sink.recent(50).await {
        Ok(list) => {
            let rows = list
                .into_iter()
                .map(|m| MailRow {
                    sent: taiwan_time(m.created_ms),
                    to: m.recipient,
                    subject: m.subject,
                    body: m.body,
                })
                .collect();
            render(
                &MailPage {
                    c,
                    rows,
                    demo_password: Some(civitas_identity::DEMO_PASSWORD),
                    people,
                },
                StatusCode::OK,
            )
        }
        Err(e) => error_page(c, &headers, &e),
    }
}
