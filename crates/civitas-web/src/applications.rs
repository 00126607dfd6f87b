//! "Applications you allowed": the OpenID Connect clients a person has consented to, what
//! each may read, and withdrawing that consent (which also ends the tokens the application
//! holds).

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::Shared;
use crate::account::{guard_form, taiwan_time};
use crate::auth::{SignedIn, Visitor};
use crate::oidc_texts::oidc_texts;
use crate::pages::{Chrome, error_page, render};
use civitas_identity::Loa;

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/account/applications", get(applications))
        .route("/account/applications/withdraw", post(withdraw))
}

struct AppRow {
    client_id: String,
    name: String,
    reads: String,
    allowed: String,
}

#[derive(Template)]
#[template(path = "applications.html")]
struct ApplicationsPage {
    c: Chrome,
    rows: Vec<AppRow>,
}

async fn applications(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let allowed = match app.oidc.allowed_clients(&s.account.id).await {
        Ok(l) => l,
        Err(e) => return error_page(c, &headers, &e),
    };
    let o = oidc_texts(c.lang);
    let rows = allowed
        .into_iter()
        .map(|a| AppRow {
            reads: a
                .scopes
                .iter()
                .filter_map(|sc| o.scope_label(sc))
                .collect::<Vec<_>>()
                .join(c.lang.pick("、", "; ")),
            allowed: taiwan_time(a.granted_at * 1000),
            client_id: a.client_id,
            name: a.name,
        })
        .collect();
    render(&ApplicationsPage { c, rows }, StatusCode::OK)
}

#[derive(Deserialize, Default)]
struct WithdrawForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    client: String,
}

async fn withdraw(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<WithdrawForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // Withdrawing what is not there (a second click, another tab) is no error.
    match app
        .oidc
        .withdraw_consent(&s.account.id, &s.account.subject_ref(), &f.client)
        .await
    {
        Ok(_) => Redirect::to("/account/applications").into_response(),
        Err(e) => error_page(
            Chrome::for_visitor(&v, &headers, &uri, "account"),
            &headers,
            &e,
        ),
    }
}
