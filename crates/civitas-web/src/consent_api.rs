//! The consent API (`/api/v1/consent/...` and `/api/v1/me/consents...`):
//! - anyone reads the registered purposes, the registries' data items, the key that
//!   verifies consent records, and an approved agreement;
//! - an organisation, authenticated as its registered OpenID Connect client (HTTP Basic with
//!   its client id and secret), proposes agreements, lists its own, and checks whether a
//!   consent to one of them is valid now;
//! - the operator (an access token of the operators' own tool, or a session with
//!   `X-CSRF-Token`; changes at level substantial) registers purposes and approves or
//!   rejects agreements;
//! - the signed-in person gives or refuses consent, withdraws, pauses and resumes it, and
//!   fetches each record's receipt (the signed record and its ledger proof).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use civitas_consent::{Change, ConsentError, NewAgreement, Purpose};
use civitas_identity::oidc::ClientCredentials;
use civitas_identity::session::SessionInfo;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::Visitor;
use crate::exchange_api::json_body;
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/consent/purposes", get(purposes).post(add_purpose))
        .route("/api/v1/consent/items", get(items))
        .route("/api/v1/consent/jwks", get(jwks))
        .route("/api/v1/consent/agreements", get(agreements).post(propose))
        .route("/api/v1/consent/agreements/{id}", get(agreement))
        .route(
            "/api/v1/consent/agreements/{id}/statistics",
            get(statistics),
        )
        .route("/api/v1/consent/agreements/{id}/approve", post(approve))
        .route("/api/v1/consent/agreements/{id}/reject", post(reject))
        .route("/api/v1/consent/records/{id}/validity", get(validity))
        .route("/api/v1/me/consents", get(my_consents).post(answer))
        .route("/api/v1/me/consents/{id}", get(my_consent))
        .route("/api/v1/me/consents/{id}/receipt", get(receipt))
        .route("/api/v1/me/consents/{id}/{change}", post(change))
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    Problem::new(status, kind, title)
        .detail(detail.to_string())
        .into_response()
}

/// A consent error as a problem.
fn failed(e: ConsentError) -> Response {
    let (status, kind, title) = match &e {
        ConsentError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", "Invalid request"),
        ConsentError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ConsentError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
        _ => return Problem::internal(&e).into_response(),
    };
    problem(status, kind, title, &e.to_string())
}

/// The organisation calling: its client, authenticated with HTTP Basic.
async fn organisation(
    app: &Shared,
    headers: &HeaderMap,
) -> Result<civitas_identity::oidc::Client, Response> {
    let unauthorised = |detail: &str| {
        let mut res = problem(
            StatusCode::UNAUTHORIZED,
            "invalid-client",
            "Client authentication failed",
            detail,
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"civitas\""),
        );
        res
    };
    let Some(Ok((client_id, secret))) = crate::oidc::basic_credentials(headers) else {
        return Err(unauthorised(
            "Send the organisation's client id and secret with HTTP Basic.",
        ));
    };
    app.oidc
        .authenticate_client(None, &ClientCredentials::Basic { client_id, secret })
        .await
        .map_err(|_| unauthorised("The client id or secret is wrong, or the client is disabled."))
}

/// An organisation (HTTP Basic: its client id) or an operator (`None`: every agreement).
async fn organisation_or_operator(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    if crate::oidc::basic_credentials(headers).is_some() {
        return organisation(app, headers).await.map(|c| Some(c.client_id));
    }
    crate::exchange_api::operator(app, v, headers, false)
        .await
        .map(|_| None)
}

/// The signed-in person, for their own consents; a change also needs the page's
/// anti-forgery token in `X-CSRF-Token`.
fn person<'a>(
    v: &'a Visitor,
    headers: &HeaderMap,
    change: bool,
) -> Result<&'a SessionInfo, Box<Response>> {
    let Some(s) = &v.session else {
        return Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not signed in",
            "Sign in to see and change your consents.",
        )));
    };
    if change && !v.json_call_is_genuine(headers) {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "csrf",
            "Forbidden",
            "A change from a browser needs the page's anti-forgery token in X-CSRF-Token.",
        )));
    }
    if s.account.person_id.is_none() {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "not-a-resident",
            "Forbidden",
            "Consents are given by people in the population register.",
        )));
    }
    Ok(s)
}

/// The registered purposes.
#[utoipa::path(get, path = "/api/v1/consent/purposes", tag = "consent",
    responses((status = 200, description = "Every registered purpose", body = Object)))]
pub(crate) async fn purposes(State(app): State<Shared>) -> Response {
    match app.consents.purposes().await {
        Ok(list) => Json(list).into_response(),
        Err(e) => failed(e),
    }
}

/// A new purpose.
#[derive(Deserialize, ToSchema)]
pub(crate) struct PurposeIn {
    /// Its code: a-z, 0-9 and -.
    code: String,
    /// Its name in English.
    name_en: String,
    /// Its name in Traditional Chinese.
    name_zh: String,
}

#[utoipa::path(post, path = "/api/v1/consent/purposes", tag = "consent", request_body = PurposeIn,
    responses(
        (status = 201, description = "Registered", body = Object),
        (status = 400, description = "Invalid", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator, or not at level substantial", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Exists already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn add_purpose(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let (op, p): (_, PurposeIn) =
        match crate::exchange_api::change(&app, &v, &headers, &bytes).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
    let purpose = Purpose {
        code: p.code,
        name_en: p.name_en,
        name_zh: p.name_zh,
    };
    match app.consents.add_purpose(&purpose, &op.0).await {
        Ok(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Err(e) => failed(e),
    }
}

/// The registries' data items an agreement may name.
#[utoipa::path(get, path = "/api/v1/consent/items", tag = "consent",
    responses((status = 200, description = "Every data item, with its registry and names", body = Object)))]
pub(crate) async fn items() -> Response {
    let list: Vec<Value> = civitas_registry::attributes::ATTRIBUTES
        .iter()
        .map(|a| {
            json!({
                "item": a.item,
                "registry": a.registry,
                "title_en": a.title_en,
                "title_zh": a.title_zh,
            })
        })
        .collect();
    Json(list).into_response()
}

/// The key that verifies consent records.
#[utoipa::path(get, path = "/api/v1/consent/jwks", tag = "consent",
    responses((status = 200, description = "A JWK Set with the Ed25519 key (EdDSA) that signs consent records", body = Object)))]
pub(crate) async fn jwks(State(app): State<Shared>) -> Response {
    Json(app.consents.jwks()).into_response()
}

/// An organisation's own agreements (HTTP Basic), or every agreement for an operator.
#[utoipa::path(get, path = "/api/v1/consent/agreements", tag = "consent",
    responses(
        (status = 200, description = "Agreements, newest first", body = Object),
        (status = 401, description = "Neither an organisation's client nor an operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn agreements(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
) -> Response {
    let client = match organisation_or_operator(&app, &v, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.consents.agreements(client.as_deref()).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => failed(e),
    }
}

#[utoipa::path(post, path = "/api/v1/consent/agreements", tag = "consent", request_body = Object,
    responses(
        (status = 201, description = "Proposed; it waits for the operator", body = Object),
        (status = 400, description = "Invalid (an unregistered purpose, an unknown item, an endless duration, ...)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not an organisation's client", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn propose(
    State(app): State<Shared>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let client = match organisation(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let new: NewAgreement = match json_body(&bytes) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    match app
        .consents
        .propose(&client.client_id, &client.name, &new)
        .await
    {
        Ok(a) => (StatusCode::CREATED, Json(a)).into_response(),
        Err(e) => failed(e),
    }
}

/// An approved agreement, as the people asked to consent to it see it.
#[utoipa::path(get, path = "/api/v1/consent/agreements/{id}", tag = "consent",
    responses(
        (status = 200, description = "The agreement", body = Object),
        (status = 404, description = "No approved agreement with this id", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn agreement(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    match app.consents.agreement(&id).await {
        Ok(Some(a)) if a.state == civitas_consent::AgreementState::Approved => {
            Json(a).into_response()
        }
        Ok(_) => failed(ConsentError::NotFound(format!(
            "no approved agreement {id}"
        ))),
        Err(e) => failed(e),
    }
}

/// How many people's consents to one of the organisation's agreements stand in each state
/// now (HTTP Basic); an operator may ask about any agreement.
#[utoipa::path(get, path = "/api/v1/consent/agreements/{id}/statistics", tag = "consent",
    responses(
        (status = 200, description = "Counts by state: given, paused, withdrawn, refused, expired", body = Object),
        (status = 401, description = "Neither an organisation's client nor an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of this organisation's agreements", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn statistics(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match organisation_or_operator(&app, &v, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.consents.agreement(&id).await {
        Ok(Some(a)) if client.as_ref().is_none_or(|c| *c == a.client_id) => {}
        Ok(_) => return failed(ConsentError::NotFound(format!("no agreement {id}"))),
        Err(e) => return failed(e),
    }
    match app.consents.statistics(&id).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => failed(e),
    }
}

/// Why an agreement is rejected.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RejectIn {
    /// The reason, which the organisation sees.
    reason: String,
}

#[utoipa::path(post, path = "/api/v1/consent/agreements/{id}/approve", tag = "consent",
    responses(
        (status = 200, description = "Approved: people may now consent to it", body = Object),
        (status = 403, description = "Not an operator, or not at level substantial", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Decided already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn approve(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    decide(app, v, headers, id, None).await
}

#[utoipa::path(post, path = "/api/v1/consent/agreements/{id}/reject", tag = "consent", request_body = RejectIn,
    responses(
        (status = 200, description = "Rejected", body = Object),
        (status = 400, description = "No reason given", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator, or not at level substantial", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Decided already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reject(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    decide(app, v, headers, id, Some(bytes)).await
}

/// Approves (`rejection` is `None`) or rejects with the reason in the body.
async fn decide(
    app: Shared,
    v: Visitor,
    headers: HeaderMap,
    id: String,
    rejection: Option<axum::body::Bytes>,
) -> Response {
    let op = match crate::exchange_api::operator(&app, &v, &headers, true).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let reason = match &rejection {
        Some(bytes) => match json_body::<RejectIn>(bytes) {
            Ok(r) => Some(r.reason),
            Err(r) => return *r,
        },
        None => None,
    };
    match app
        .consents
        .decide_agreement(&id, rejection.is_none(), reason.as_deref(), &op.0)
        .await
    {
        Ok(a) => Json(a).into_response(),
        Err(e) => failed(e),
    }
}

/// Whether a consent to one of the organisation's agreements allows a release now.
#[utoipa::path(get, path = "/api/v1/consent/records/{id}/validity", tag = "consent",
    responses(
        (status = 200, description = "Whether it is valid, its state and the items it covers", body = Object),
        (status = 401, description = "Not an organisation's client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No consent to this organisation's agreements with this id", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn validity(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match organisation(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match app.consents.check(&id, Some(&client.client_id)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

/// The signed-in person's consents, newest first, each with its agreement.
#[utoipa::path(get, path = "/api/v1/me/consents", tag = "me",
    responses(
        (status = 200, description = "The person's consent records with their agreements", body = Object),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn my_consents(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
) -> Response {
    let s = match person(&v, &headers, false) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let records = match app.consents.records_of(&s.account.subject_ref()).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut out = Vec::new();
    for r in records {
        let agreement = match app.consents.agreement(&r.agreement_id).await {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        out.push(json!({ "record": r, "agreement": agreement }));
    }
    Json(out).into_response()
}

/// One of the person's consents, with every version.
#[utoipa::path(get, path = "/api/v1/me/consents/{id}", tag = "me",
    responses(
        (status = 200, description = "The record, its agreement and its signed history", body = Object),
        (status = 404, description = "Not one of the person's consents", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn my_consent(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match person(&v, &headers, false) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let record = match own(&app, s, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (agreement, history) = match (
        app.consents.agreement(&record.agreement_id).await,
        app.consents.history(&id).await,
    ) {
        (Ok(a), Ok(h)) => (a, h),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    Json(json!({ "record": record, "agreement": agreement, "history": history })).into_response()
}

/// The person's own record `id` (anyone else's is not found).
async fn own(
    app: &Shared,
    s: &SessionInfo,
    id: &str,
) -> Result<civitas_consent::ConsentRecord, Response> {
    match app.consents.record(id).await {
        Ok((r, owner)) if owner == s.account.subject_ref() => Ok(r),
        Ok(_) => Err(failed(ConsentError::NotFound(format!("no consent {id}")))),
        Err(e) => Err(failed(e)),
    }
}

/// The person's answer to an agreement.
#[derive(Deserialize, ToSchema)]
pub(crate) struct AnswerIn {
    /// The agreement.
    agreement_id: String,
    /// `give` or `refuse`.
    decision: String,
}

#[utoipa::path(post, path = "/api/v1/me/consents", tag = "me", request_body = AnswerIn,
    responses(
        (status = 201, description = "Recorded: the receipt (the signed record and its ledger proof)", body = Object),
        (status = 404, description = "No approved agreement with this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A consent to it is in force already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn answer(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let s = match person(&v, &headers, true) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let a: AnswerIn = match json_body(&bytes) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let give = match a.decision.as_str() {
        "give" => true,
        "refuse" => false,
        _ => {
            return failed(ConsentError::Invalid(
                "the decision is give or refuse".into(),
            ));
        }
    };
    match app
        .consents
        .answer(&a.agreement_id, &s.account.subject_ref(), give, "citizen")
        .await
    {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => failed(e),
    }
}

#[utoipa::path(post, path = "/api/v1/me/consents/{id}/{change}", tag = "me",
    params(("change" = String, Path, description = "withdraw, pause or resume")),
    responses(
        (status = 200, description = "Changed: the new version's receipt", body = Object),
        (status = 404, description = "Not one of the person's consents", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Its state does not allow the change", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn change(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path((id, change)): Path<(String, String)>,
) -> Response {
    let s = match person(&v, &headers, true) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let change = match change.as_str() {
        "withdraw" => Change::Withdraw,
        "pause" => Change::Pause,
        "resume" => Change::Resume,
        _ => {
            return failed(ConsentError::NotFound(format!(
                "a consent is withdrawn, paused or resumed, not {change:?}"
            )));
        }
    };
    match app
        .consents
        .change(&id, &s.account.subject_ref(), change, "citizen")
        .await
    {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(e),
    }
}

/// The receipt of the person's consent: its current signed record and the ledger's proof.
#[utoipa::path(get, path = "/api/v1/me/consents/{id}/receipt", tag = "me",
    responses(
        (status = 200, description = "The receipt", body = Object),
        (status = 404, description = "Not one of the person's consents", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn receipt(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match person(&v, &headers, false) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = own(&app, s, &id).await {
        return r;
    }
    match app.consents.receipt(&id).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => failed(e),
    }
}
