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

/// An agreement as the operator's and the organisation's pages list it.
pub(crate) struct AgreementRow {
    pub(crate) a: Agreement,
    /// The purpose's name in the page's language.
    pub(crate) purpose: String,
    /// Each item's name in the page's language.
    pub(crate) items: Vec<String>,
    pub(crate) proposed: String,
    /// Its consents by state now (approved agreements).
    pub(crate) counts: civitas_consent::Statistics,
}

/// `agreements` as rows in the language `lang`, with the consent counts of those approved.
pub(crate) async fn agreement_rows(
    app: &Shared,
    agreements: Vec<Agreement>,
    purposes: &[Purpose],
    lang: crate::i18n::Lang,
) -> Result<Vec<AgreementRow>, ConsentError> {
    let mut rows = Vec::with_capacity(agreements.len());
    for a in agreements {
        let counts = if a.state == AgreementState::Approved {
            app.consents.statistics(&a.id).await?
        } else {
            civitas_consent::Statistics::default()
        };
        rows.push(AgreementRow {
            counts,
            proposed: taiwan_time(a.proposed_ms),
            purpose: purpose_name(purposes, &a.purpose, lang),
            items: a
                .items
                .iter()
                .map(|i| format!("{} ({i})", item_name(i, lang)))
                .collect(),
            a,
        });
    }
    Ok(rows)
}

#[derive(Template)]
#[template(path = "admin_consent.html")]
struct ConsentAdminPage {
    c: Chrome,
    errors: Vec<FieldError>,
    purposes: Vec<Purpose>,
    proposed: Vec<AgreementRow>,
    decided: Vec<AgreementRow>,
    members: Vec<MemberRow>,
    form: ChangeForm,
}

/// Someone who acts for an organisation, as the page lists them.
struct MemberRow {
    client_id: String,
    account_id: String,
    /// Their name and sign-in name.
    name: String,
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
    /// The organisation (client id) a member is added to.
    #[serde(default)]
    client_id: String,
    /// The member's sign-in name (national ID or e-mail address).
    #[serde(default)]
    member: String,
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
        let all = app.consents.agreements(None).await?;
        let (proposed, decided): (Vec<_>, Vec<_>) = agreement_rows(app, all, &purposes, c.lang)
            .await?
            .into_iter()
            .partition(|r| r.a.state == AgreementState::Proposed);
        let mut members = Vec::new();
        for (client_id, account_id) in app.consents.members().await? {
            let name = match app.identity.account(&account_id).await {
                Ok(Some(a)) => format!("{} ({})", a.display_name, a.username),
                _ => account_id.clone(),
            };
            members.push(MemberRow {
                client_id,
                account_id,
                name,
            });
        }
        Ok::<_, ConsentError>((purposes, proposed, decided, members))
    };
    match built.await {
        Ok((purposes, proposed, decided, members)) => render(
            &ConsentAdminPage {
                c,
                errors,
                purposes,
                proposed,
                decided,
                members,
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
        "member" => add_member(&app, &f, &actor).await,
        "remove_member" => (
            consents
                .remove_member(f.client_id.trim(), f.member.trim(), &actor)
                .await,
            "member",
        ),
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

/// Lets the account named in the form act for the organisation named in it.
/// Lets the account named in the form act for the organisation named in it; the outcome,
/// and the form's field an error belongs to.
async fn add_member(
    app: &Shared,
    f: &ChangeForm,
    actor: &str,
) -> (Result<(), ConsentError>, &'static str) {
    let invalid = |m: &str| Err(ConsentError::Invalid(m.to_string()));
    // A failure to read is the server's, not the form's: the error page.
    let failed = |e: String| {
        Err(ConsentError::Store(civitas_store::StoreError::Sql(
            civitas_store::sqlx::Error::Protocol(e),
        )))
    };
    let client_id = f.client_id.trim();
    match app.oidc.client(client_id).await {
        Ok(Some(c)) if c.enabled => {}
        Ok(Some(_)) => return (invalid("that organisation is disabled"), "client_id"),
        Ok(None) => {
            return (
                invalid("no registered organisation has that client id"),
                "client_id",
            );
        }
        Err(e) => return (failed(e.to_string()), "client_id"),
    }
    let account = match app.identity.account_named(&f.member).await {
        Ok(Some(a)) => a,
        Ok(None) => return (invalid("no account signs in with that name"), "member"),
        Err(e) => return (failed(e.to_string()), "member"),
    };
    (
        app.consents.add_member(client_id, &account.id, actor).await,
        "member",
    )
}
