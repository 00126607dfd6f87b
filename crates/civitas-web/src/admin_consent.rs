//! Operator page for consent (`/admin/consent`): the registered purposes, with a form to add
//! one, and every data agreement, the proposed ones first, with its organisation, purpose,
//! lawful basis, data items, retention, access and duration, and forms to approve or reject
//! (with a reason). Viewing needs an operator account; every change needs level substantial
//! and is a ledger event with the operator's account as actor.

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use civitas_consent::{Agreement, AgreementState, ConsentError, Purpose};
use civitas_identity::Loa;
use serde::Deserialize;

use crate::Shared;
use crate::account::{FieldError, error_for, guard_form, taiwan_time};
use crate::admin::operator_only;
use crate::auth::{SignedIn, Visitor};
use crate::consents_page::{item_name, purpose_name};
use crate::pages::{Chrome, error_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/admin/consent", get(show).post(change))
}

/// An agreement as the page lists it.
struct AgreementRow {
    a: Agreement,
    /// The purpose's name in the page's language.
    purpose: String,
    /// Each item's name in the page's language.
    items: Vec<String>,
    proposed: String,
    /// Its consents by state now (decided agreements).
    counts: civitas_consent::Statistics,
}

#[derive(Template)]
#[template(path = "admin_consent.html")]
struct ConsentAdminPage {
    c: Chrome,
    errors: Vec<FieldError>,
    purposes: Vec<Purpose>,
    proposed: Vec<AgreementRow>,
    decided: Vec<AgreementRow>,
    form: ChangeForm,
}

impl ConsentAdminPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

#[derive(Deserialize, Default, Clone)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    /// `purpose`, `approve` or `reject`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    name_zh: String,
    /// The agreement decided.
    #[serde(default)]
    id: String,
    #[serde(default)]
    reason: String,
}

async fn page(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    errors: Vec<FieldError>,
    form: ChangeForm,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let built = async {
        let purposes = app.consents.purposes().await?;
        let (mut proposed, mut decided) = (Vec::new(), Vec::new());
        for a in app.consents.agreements(None).await? {
            let purpose = purpose_name(&purposes, &a.purpose, c.lang);
            let items = a
                .items
                .iter()
                .map(|i| format!("{} ({i})", item_name(i, c.lang)))
                .collect();
            let counts = if a.state == AgreementState::Approved {
                app.consents.statistics(&a.id).await?
            } else {
                civitas_consent::Statistics::default()
            };
            let row = AgreementRow {
                counts,
                proposed: taiwan_time(a.proposed_ms),
                purpose,
                items,
                a,
            };
            if row.a.state == AgreementState::Proposed {
                proposed.push(row);
            } else {
                decided.push(row);
            }
        }
        Ok::<_, ConsentError>((purposes, proposed, decided))
    };
    match built.await {
        Ok((purposes, proposed, decided)) => render(
            &ConsentAdminPage {
                c,
                errors,
                purposes,
                proposed,
                decided,
                form,
            },
            status,
        ),
        Err(e) => error_page(c, headers, &e),
    }
}

async fn show(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => page(&app, c, &headers, Vec::new(), ChangeForm::default()).await,
        Err(r) => *r,
    }
}

async fn change(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<ChangeForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let actor = format!("account:{}", s.account.id);
    let consents = &app.consents;
    let (done, field) = match f.action.as_str() {
        "purpose" => {
            let p = Purpose {
                code: f.code.clone(),
                name_en: f.name_en.clone(),
                name_zh: f.name_zh.clone(),
            };
            (consents.add_purpose(&p, &actor).await.map(|_| ()), "code")
        }
        "approve" | "reject" => (
            consents
                .decide_agreement(&f.id, f.action == "approve", Some(&f.reason), &actor)
                .await
                .map(|_| ()),
            "reason",
        ),
        _ => (
            Err(ConsentError::Invalid("unknown action".into())),
            "consent",
        ),
    };
    match done {
        Ok(()) => Redirect::to("/admin/consent").into_response(),
        Err(e @ (ConsentError::Store(_) | ConsentError::Ledger(_))) => error_page(c, &headers, &e),
        Err(e) => {
            let errors = vec![FieldError {
                field,
                message: e.to_string(),
            }];
            page(&app, c, &headers, errors, f).await
        }
    }
}
