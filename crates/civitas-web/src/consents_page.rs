//! "My consents" (`/account/consents`): the signed-in resident's consent records, active
//! and past, with who receives which data from which registry, for what, kept how long and
//! until when; withdrawing, pausing and resuming each; and its receipt (the signed record
//! and its ledger proof) to download and check.

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_consent::{Change, ConsentError, ConsentState};
use civitas_identity::Loa;
use serde::Deserialize;

use crate::Shared;
use crate::account::{guard_form, taiwan_time};
use crate::auth::{SignedIn, Visitor};
use crate::i18n::Lang;
use crate::pages::{Chrome, error_page, not_found_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/account/consents", get(page))
        .route("/account/consents/{id}/receipt", get(receipt))
        .route("/account/consents/{id}/change", post(change))
        .route("/account/consents/{id}/verify", get(verify))
}

/// One record as the page shows it.
struct Row {
    id: String,
    recipient: String,
    purpose: String,
    items: Vec<String>,
    retention_days: i64,
    periodic: bool,
    state: ConsentState,
    state_text: &'static str,
    since: String,
    until: String,
}

#[derive(Template)]
#[template(path = "consents.html")]
struct ConsentsPage {
    c: Chrome,
    active: Vec<Row>,
    past: Vec<Row>,
}

fn state_text(lang: Lang, s: ConsentState) -> &'static str {
    match s {
        ConsentState::Given => lang.pick("已同意", "Given"),
        ConsentState::Refused => lang.pick("已拒絕", "Refused"),
        ConsentState::Withdrawn => lang.pick("已撤回", "Withdrawn"),
        ConsentState::Expired => lang.pick("已到期", "Expired"),
        ConsentState::Paused => lang.pick("已暫停", "Paused"),
    }
}

/// A purpose's name in `lang` (its code when it is not registered).
pub(crate) fn purpose_name(
    purposes: &[civitas_consent::Purpose],
    code: &str,
    lang: Lang,
) -> String {
    purposes
        .iter()
        .find(|p| p.code == code)
        .map_or(code.to_string(), |p| {
            lang.pick(&p.name_zh, &p.name_en).to_string()
        })
}

/// A data item's name in `lang` (the item itself when it is not a registry's).
pub(crate) fn item_name(item: &str, lang: Lang) -> String {
    match civitas_registry::attributes::attribute(item) {
        Some(at) => lang.pick(at.title_zh, at.title_en).to_string(),
        None => item.to_string(),
    }
}

async fn page(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let records = match app.consents.records_of(&s.account.subject_ref()).await {
        Ok(r) => r,
        Err(e) => return error_page(c, &headers, &e),
    };
    let purposes = match app.consents.purposes().await {
        Ok(p) => p,
        Err(e) => return error_page(c, &headers, &e),
    };
    let (mut active, mut past) = (Vec::new(), Vec::new());
    for r in records {
        let a = match app.consents.agreement(&r.agreement_id).await {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => return error_page(c, &headers, &e),
        };
        let purpose = purpose_name(&purposes, &a.purpose, c.lang);
        let items = a.items.iter().map(|i| item_name(i, c.lang)).collect();
        let row = Row {
            id: r.id,
            recipient: a.recipient,
            purpose,
            items,
            retention_days: a.retention_days,
            periodic: a.access == civitas_consent::Access::Periodic,
            state: r.effective_state,
            state_text: state_text(c.lang, r.effective_state),
            since: taiwan_time(r.given_ms.unwrap_or(r.updated_ms)),
            until: taiwan_time(r.expires_ms),
        };
        if matches!(row.state, ConsentState::Given | ConsentState::Paused) {
            active.push(row);
        } else {
            past.push(row);
        }
    }
    render(&ConsentsPage { c, active, past }, StatusCode::OK)
}

#[derive(Deserialize, Default)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    change: String,
}

async fn change(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Form(f): Form<ChangeForm>,
) -> Response {
    let back = "/account/consents".parse().unwrap_or_else(|_| uri.clone());
    let s = match guard_form(&v, &headers, &back, Loa::Low, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    let change = match f.change.as_str() {
        "withdraw" => Change::Withdraw,
        "pause" => Change::Pause,
        "resume" => Change::Resume,
        _ => return not_found_page(c),
    };
    match app
        .consents
        .change(&id, &s.account.subject_ref(), change, "citizen")
        .await
    {
        // A change that no longer applies (a second click, another tab) shows the page as
        // it now stands.
        Ok(_) | Err(ConsentError::Conflict(_)) => Redirect::to("/account/consents").into_response(),
        Err(ConsentError::NotFound(_)) => not_found_page(c),
        Err(e) => error_page(c, &headers, &e),
    }
}

/// The page's chrome when consent `id` is the signed-in person's; else not found.
async fn owned(
    app: &Shared,
    c: Chrome,
    s: &civitas_identity::session::SessionInfo,
    headers: &HeaderMap,
    id: &str,
) -> Result<Chrome, Box<Response>> {
    match app.consents.record(id).await {
        Ok((_, owner)) if owner == s.account.subject_ref() => Ok(c),
        Ok(_) | Err(ConsentError::NotFound(_)) => Err(Box::new(not_found_page(c))),
        Err(e) => Err(Box::new(error_page(c, headers, &e))),
    }
}

/// The receipt of one of the person's consents, as a JSON file.
async fn receipt(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let c = match owned(
        &app,
        Chrome::for_visitor(&v, &headers, &uri, "account"),
        &s,
        &headers,
        &id,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.consents.receipt(&id).await {
        Ok(r) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    &format!("attachment; filename=\"civitas-consent-{id}.json\""),
                ),
            ],
            serde_json::to_string_pretty(&r).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => error_page(c, &headers, &e),
    }
}

/// What a verification found, as the page shows it.
#[derive(Template)]
#[template(path = "verified.html")]
pub(crate) struct VerifiedPage {
    pub(crate) c: Chrome,
    pub(crate) ok: bool,
    pub(crate) problem: String,
    pub(crate) facts: Vec<(&'static str, String)>,
    pub(crate) command: String,
    pub(crate) back: &'static str,
}

/// Checks one of the person's consent receipts here: the signed record under the consent
/// key, its proof under the ledger's key, and that the proven entry is the record's.
async fn verify(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let c = match owned(
        &app,
        Chrome::for_visitor(&v, &headers, &uri, "account"),
        &s,
        &headers,
        &id,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let receipt = match app.consents.receipt(&id).await {
        Ok(r) => r,
        Err(e) => return error_page(c, &headers, &e),
    };
    let checked = civitas_consent::verify_receipt(
        &receipt,
        &app.consents.key().verifying_key(),
        app.ledger.verifier_key(),
    );
    let lang = c.lang;
    let mut facts = vec![
        (lang.pick("同意書", "Consent"), receipt.record_id.clone()),
        (lang.pick("版本", "Version"), receipt.version.to_string()),
        (
            lang.pick("狀態", "State"),
            state_text(lang, receipt.state).to_string(),
        ),
        (
            lang.pick("帳本位置", "Ledger entry"),
            receipt.ledger_index.to_string(),
        ),
        (
            lang.pick("簽章金鑰", "Signing key"),
            app.consents.key().kid().to_string(),
        ),
    ];
    if let Ok(b) = civitas_ledger::ProofBundle::parse(&receipt.proof)
        && let Ok(cp) = b.verify(app.ledger.verifier_key())
    {
        facts.push((lang.pick("帳本大小", "Ledger size"), cp.size.to_string()));
    }
    let (ok, problem) = match checked {
        Ok(_) => (true, String::new()),
        Err(e) => (false, e.to_string()),
    };
    render(
        &VerifiedPage {
            c,
            ok,
            problem,
            facts,
            command: format!(
                "civitas ledger verify civitas-consent-{id}.json --key <{}> --consent-key <{}>",
                lang.pick("帳本公鑰（/ledger/key）", "the ledger's key (/ledger/key)"),
                lang.pick(
                    "同意書公鑰（/api/v1/consent/jwks）",
                    "the consent keys (/api/v1/consent/jwks)"
                ),
            ),
            back: "/account/consents",
        },
        StatusCode::OK,
    )
}
