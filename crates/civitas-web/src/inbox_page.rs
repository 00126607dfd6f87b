//! "My messages" (`/account/messages`): what services have sent the signed-in resident by
//! their national ID, newest first, each opened on its own page (and marked read); and
//! their settings (`/account/messages/settings`): the channels they take non-essential
//! messages by, and each service that has written to them, whose non-essential messages
//! they can stop and restart. Notices the law requires reach them whatever they choose.

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_identity::Loa;
use civitas_identity::session::SessionInfo;
use civitas_notify::Language;
use civitas_notify::inbox::{InboxMessage, Preferences, Sender};
use serde::Deserialize;

use crate::Shared;
use crate::account::{guard_form, taiwan_time};
use crate::auth::{SignedIn, Visitor};
use crate::pages::{Chrome, error_page, not_found_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/account/messages", get(list))
        .route(
            "/account/messages/settings",
            get(settings).post(save_settings),
        )
        .route("/account/messages/senders/{service}", post(sender))
        .route("/account/messages/{id}", get(one))
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    c: Chrome,
    messages: Vec<(InboxMessage, String)>,
}

#[derive(Template)]
#[template(path = "inbox_message.html")]
struct MessagePage {
    c: Chrome,
    m: InboxMessage,
    when: String,
    paragraphs: Vec<String>,
}

#[derive(Template)]
#[template(path = "inbox_settings.html")]
struct SettingsPage {
    c: Chrome,
    p: Preferences,
    senders: Vec<Sender>,
    saved: bool,
}

/// Only a person in the register is written to by national ID.
fn resident(s: &SessionInfo, c: Chrome) -> Result<Chrome, Box<Response>> {
    crate::admin::only_if(s.account.person_id.is_some(), c)
}

async fn list(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match resident(&s, Chrome::for_visitor(&v, &headers, &uri, "account")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.notify.inbox(&s.account.subject_ref()).await {
        Ok(list) => {
            let messages = list
                .into_iter()
                .map(|m| {
                    let when = taiwan_time(m.created_ms);
                    (m, when)
                })
                .collect();
            render(&InboxPage { c, messages }, StatusCode::OK)
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

async fn one(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    // Only a resident's own messages are found: anyone else finds none.
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app.notify.open_message(&s.account.subject_ref(), &id).await {
        Ok(Some(m)) => {
            let when = taiwan_time(m.created_ms);
            let paragraphs = m
                .body
                .split("\n\n")
                .map(str::to_string)
                .filter(|p| !p.trim().is_empty())
                .collect();
            render(
                &MessagePage {
                    c,
                    m,
                    when,
                    paragraphs,
                },
                StatusCode::OK,
            )
        }
        Ok(None) => not_found_page(c),
        Err(e) => error_page(c, &headers, &e),
    }
}

async fn settings_page(
    app: &Shared,
    c: Chrome,
    s: &SessionInfo,
    headers: &HeaderMap,
    saved: bool,
) -> Response {
    let person = s.account.subject_ref();
    let found = async {
        Ok::<_, civitas_notify::NotifyError>((
            app.notify.preferences(&person).await?,
            app.notify.senders(&person).await?,
        ))
    };
    match found.await {
        Ok((p, senders)) => render(
            &SettingsPage {
                c,
                p,
                senders,
                saved,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(c, headers, &e),
    }
}

async fn settings(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match resident(&s, Chrome::for_visitor(&v, &headers, &uri, "account")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let saved = uri.query() == Some("saved");
    settings_page(&app, c, &s, &headers, saved).await
}

#[derive(Deserialize, Default)]
struct SettingsForm {
    #[serde(default)]
    csrf: String,
    email: Option<String>,
    sms: Option<String>,
    inbox: Option<String>,
    /// `zh-TW`, `en`, or anything else for the sender's choice.
    #[serde(default)]
    language: String,
    #[serde(default)]
    stop: String,
}

/// The session of a resident's form on these pages, or the answer to give instead.
fn guarded(
    v: &Visitor,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    csrf: &str,
) -> Result<SessionInfo, Box<Response>> {
    let back = "/account/messages/settings"
        .parse()
        .unwrap_or_else(|_| uri.clone());
    let s = guard_form(v, headers, &back, Loa::Low, csrf)?;
    resident(&s, Chrome::for_visitor(v, headers, uri, "account"))?;
    Ok(s)
}

async fn save_settings(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<SettingsForm>,
) -> Response {
    let s = match guarded(&v, &headers, &uri, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let p = Preferences {
        email: f.email.is_some(),
        sms: f.sms.is_some(),
        inbox: f.inbox.is_some(),
        language: civitas_notify::Language::parse(&f.language),
    };
    match app
        .notify
        .set_preferences(&s.account.subject_ref(), p)
        .await
    {
        Ok(()) => Redirect::to("/account/messages/settings?saved").into_response(),
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}

async fn sender(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(service): Path<String>,
    Form(f): Form<SettingsForm>,
) -> Response {
    let s = match guarded(&v, &headers, &uri, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match app
        .notify
        .unsubscribe(&s.account.subject_ref(), &service, f.stop == "1")
        .await
    {
        Ok(()) => Redirect::to("/account/messages/settings?saved").into_response(),
        Err(civitas_notify::NotifyError::NotFound(_)) => not_found_page(c),
        Err(e) => error_page(c, &headers, &e),
    }
}
