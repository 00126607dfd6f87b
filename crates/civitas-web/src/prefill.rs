//! Once-only inside government: a form filled from the base registries instead of asking
//! the person again. [`fill`] reads the named data items (`civitas_registry::attributes`)
//! through the exchange, as the information system that asks, for a stated purpose and
//! legal basis, so every read is checked against the access rights, logged, and shown to
//! the person in "Who used my data"; each value comes back with where it came from.
//!
//! It is what a data release to an organisation (`mydata::release`) uses, and what forms
//! use over HTTP:
//! - `POST /api/v1/me/prefill`: the signed-in resident's own form, read as the portal at
//!   their own request;
//! - `POST /api/v1/prefill`: an agency's staff prefilling a form for a person, read as the
//!   agency's case-handling system (`GOV/{agency}/services`, so the exchange's access
//!   rights decide which registers it may read) with the legal basis they state (the law
//!   and article). An agency is no party to a data agreement, so consent is no basis here;
//!   the person's own consent to fill their form is their own call above. The request is
//!   in the ledger (`prefill.requested`, by the staff member, under the person's tag,
//!   with the items); the purpose and basis are in each read's private log.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::Visitor;
use crate::exchange::CallLog;
use crate::exchange_api::json_body;
use crate::mydata::{Reason, read_as};
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/me/prefill", post(mine))
        .route("/api/v1/prefill", post(for_person))
}

/// Why a form could not be filled.
pub(crate) enum NotFilled {
    /// An item that is no registry attribute.
    UnknownItem(String),
    /// The exchange refused a read (its status and text).
    Refused(StatusCode, String),
}

impl NotFilled {
    /// The problem for an organisation outside government: that the release failed, with
    /// nothing of what a register or the exchange said.
    pub(crate) fn problem_for_organisation(&self) -> Response {
        if let NotFilled::Refused(status, detail) = self {
            tracing::error!(%status, %detail, "a release's register read failed");
        }
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "registry-failed",
            "A register did not answer",
        )
        .detail("Nothing was released: a register could not be read.".to_string())
        .into_response()
    }

    /// The problem for government's own callers (the person, an agency's staff).
    pub(crate) fn problem(&self) -> Response {
        let (status, kind, title, detail) = match self {
            NotFilled::UnknownItem(i) => (
                StatusCode::BAD_REQUEST,
                "unknown-item",
                "Unknown data item",
                format!("{i} is not a data item of the registers (see /api/v1/consent/items)"),
            ),
            NotFilled::Refused(s, d) if *s == StatusCode::FORBIDDEN => (
                StatusCode::FORBIDDEN,
                "read-refused",
                "The exchange refused a read",
                d.clone(),
            ),
            NotFilled::Refused(s, d) if s.is_client_error() => (
                StatusCode::BAD_REQUEST,
                "read-refused",
                "The exchange refused a read",
                d.clone(),
            ),
            NotFilled::Refused(_, d) => (
                StatusCode::BAD_GATEWAY,
                "registry-failed",
                "A register did not answer",
                d.clone(),
            ),
        };
        Problem::new(status, kind, title)
            .detail(detail)
            .into_response()
    }
}

/// Where data item `item` comes from: the attribute and the register service that holds it.
fn source(
    item: &str,
) -> Result<
    (
        &'static civitas_registry::attributes::Attribute,
        &'static civitas_registry::services::RegistryService,
    ),
    NotFilled,
> {
    let unknown = || NotFilled::UnknownItem(item.to_string());
    let at = civitas_registry::attributes::attribute(item).ok_or_else(unknown)?;
    let service = civitas_registry::services::service(at.registry).ok_or_else(unknown)?;
    Ok((at, service))
}

/// Reads `items` about the person `national_id` as the information system `client`, for
/// `why`: each item's value (only the fields it names) with its source register and dates,
/// and the reads' logs, still being written (nothing may leave before they are). Each
/// register is read once, however many items it gives.
pub(crate) async fn fill(
    app: &Shared,
    client: &str,
    national_id: &str,
    items: &[String],
    why: &Reason<'_>,
) -> Result<(Map<String, Value>, Vec<CallLog>), NotFilled> {
    let instance = app.exchange.instance();
    let last_updated = app
        .registers
        .as_of(&app.db)
        .await
        .map_err(|e| NotFilled::Refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Each register record is read once, for every item it serves.
    struct Read<'a> {
        item: &'a String,
        at: &'static civitas_registry::attributes::Attribute,
        service: &'static civitas_registry::services::RegistryService,
        service_id: String,
        path: String,
    }
    let mut reads = Vec::with_capacity(items.len());
    for item in items {
        let (at, service) = source(item)?;
        reads.push(Read {
            item,
            at,
            service,
            service_id: service.service_id(instance),
            path: at.path.replace("{id}", national_id),
        });
    }
    let same_record = |a: &Read, b: &Read| a.service_id == b.service_id && a.path == b.path;
    let mut answers: Vec<(&Read, Value)> = Vec::new();
    let mut logs = Vec::new();
    let mut data = Map::new();
    for read in &reads {
        let Read {
            item,
            at,
            service,
            service_id,
            path,
        } = read;
        let answered = match answers.iter().position(|(r, _)| same_record(r, read)) {
            Some(i) => i,
            None => {
                // A release's read names, of the release's items, those it serves.
                let serves = why.release.map(|r| crate::exchange::ForRelease {
                    client_id: r.client_id.clone(),
                    consent_id: r.consent_id.clone(),
                    agreement_id: r.agreement_id.clone(),
                    items: reads
                        .iter()
                        .filter(|other| same_record(other, read))
                        .map(|other| other.item.clone())
                        .collect(),
                });
                let why = Reason {
                    release: serves.as_ref(),
                    ..*why
                };
                let (v, log) = read_as(app, client, service_id, path, national_id, &why)
                    .await
                    .map_err(|(status, detail)| NotFilled::Refused(status, detail))?;
                logs.extend(log);
                answers.push((read, v));
                answers.len() - 1
            }
        };
        let answer = &answers[answered].1;
        let value = if at.fields.is_empty() || answer.is_null() {
            answer.clone()
        } else {
            Value::Object(
                at.fields
                    .iter()
                    .map(|f| (f.to_string(), answer[*f].clone()))
                    .collect(),
            )
        };
        data.insert(
            (*item).clone(),
            json!({
                "value": value,
                "source": service_id,
                "source_name": service.title,
                "last_updated": last_updated,
                "retrieved_at": civitas_ledger::event::now_ms() / 1000,
            }),
        );
    }
    Ok((data, logs))
}

/// The filled items once every read is logged, as an API answer.
async fn answered(filled: Result<(Map<String, Value>, Vec<CallLog>), NotFilled>) -> Response {
    let (data, logs) = match filled {
        Ok(f) => f,
        Err(e) => return e.problem(),
    };
    if let Err(e) = crate::exchange::all_logged(logs).await {
        tracing::error!(error = %e, "a prefill read could not be logged");
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "logging-failed",
            "The reads could not be logged",
        )
        .detail("Nothing is shown: a register read could not be logged.".to_string())
        .into_response();
    }
    Json(json!({ "items": data })).into_response()
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    Problem::new(status, kind, title)
        .detail(detail.to_string())
        .into_response()
}

/// The signed-in person, for a JSON call that needs the page's anti-forgery token.
pub(crate) fn signed_in<'a>(
    v: &'a Visitor,
    headers: &HeaderMap,
) -> Result<&'a civitas_identity::session::SessionInfo, Box<Response>> {
    let Some(s) = &v.session else {
        return Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not signed in",
            "Sign in to fill a form.",
        )));
    };
    if !v.json_call_is_genuine(headers) {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "csrf",
            "Forbidden",
            "A call from a browser needs the page's anti-forgery token in X-CSRF-Token.",
        )));
    }
    Ok(s)
}

/// A resident's own form.
#[derive(Deserialize, ToSchema)]
pub(crate) struct MineIn {
    /// The data items to fill (`population.name`, …; see /api/v1/consent/items).
    items: Vec<String>,
    /// The form or service being filled in, as the person's tracker will show it.
    form: String,
}

/// Fills the signed-in resident's own form from the registers (at their own request).
#[utoipa::path(post, path = "/api/v1/me/prefill", tag = "me", request_body = MineIn,
    responses(
        (status = 200, description = "Each item with its value, source register and dates", body = Object),
        (status = 400, description = "An unknown item, or no form named", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No anti-forgery token, or not a person in the population register", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn mine(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let s = match signed_in(&v, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if s.account.person_id.is_none() {
        return problem(
            StatusCode::FORBIDDEN,
            "not-a-resident",
            "Forbidden",
            "Only people in the population register have data in the registers.",
        );
    }
    let body: MineIn = match json_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let form = body.form.trim();
    if form.is_empty() || form.chars().count() > 200 {
        return problem(
            StatusCode::BAD_REQUEST,
            "no-form",
            "Which form?",
            "Name the form being filled in (1 to 200 characters): the person's tracker shows it.",
        );
    }
    let purpose = format!("Filling in a form at the person's request: {form}");
    let why = Reason {
        purpose: &purpose,
        legal_basis: "Personal Data Protection Act art. 3 (the person's own request)",
        consent: None,
        release: None,
    };
    let portal = crate::mydata::portal(app.exchange.instance());
    answered(fill(&app, &portal, &s.account.username, &body.items, &why).await).await
}

/// An agency's prefill for a person.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ForPersonIn {
    /// The person's national ID.
    national_id: String,
    /// The data items to fill.
    items: Vec<String>,
    /// Why: the purpose, as the person's tracker will show it.
    purpose: String,
    /// The legal basis: the law and article.
    legal_basis: String,
    /// Not accepted: an agency's reads rest on the law (a person fills their own form at
    /// `/api/v1/me/prefill`).
    consent_id: Option<String>,
}

/// Fills an agency's form for a person from the registers, read as the agency's case
/// system with the stated legal basis.
#[utoipa::path(post, path = "/api/v1/prefill", tag = "consent", request_body = ForPersonIn,
    responses(
        (status = 200, description = "Each item with its value, source register and dates", body = Object),
        (status = 400, description = "An unknown item or person, no purpose or legal basis, or consent named as the basis", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not agency staff, no anti-forgery token, or the agency may not read a register", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn for_person(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    let s = match signed_in(&v, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let agency = match (&s.account.kind, &s.account.agency_code) {
        (civitas_identity::AccountKind::Staff, Some(a)) => a.clone(),
        _ => {
            return problem(
                StatusCode::FORBIDDEN,
                "not-staff",
                "Forbidden",
                "Forms are prefilled for a person by an agency's staff.",
            );
        }
    };
    let body: ForPersonIn = match json_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (purpose, basis) = (body.purpose.trim(), body.legal_basis.trim());
    if purpose.is_empty() || basis.is_empty() || purpose.len() > 200 || basis.len() > 200 {
        return problem(
            StatusCode::BAD_REQUEST,
            "no-reason",
            "Why?",
            "A read about a person needs a purpose and a legal basis (each 1 to 200 characters).",
        );
    }
    let national_id = body.national_id.trim().to_ascii_uppercase();
    let subject = match app.registers.person_id(&app.db, &national_id).await {
        Ok(Some(id)) => format!("person:{id}"),
        Ok(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "unknown-person",
                "Unknown person",
                "The national ID names nobody in the population register.",
            );
        }
        Err(e) => return Problem::internal(&e).into_response(),
    };
    if basis.eq_ignore_ascii_case("consent") || body.consent_id.is_some() {
        // An agency is no party to a data agreement (organisations are): its reads rest on
        // the law. A person's own consent to fill their form is `/api/v1/me/prefill`.
        return problem(
            StatusCode::BAD_REQUEST,
            "consent-not-a-basis-here",
            "Name the law",
            "An agency reads the registers on a legal basis (the law and article); a person fills their own form from the registers themselves.",
        );
    }
    if body.items.is_empty() || body.items.len() > 50 {
        return problem(
            StatusCode::BAD_REQUEST,
            "no-items",
            "Which data?",
            "Name 1 to 50 data items (see /api/v1/consent/items).",
        );
    }
    // Nothing is logged for a request that cannot succeed: every item must be one the
    // agency's system may read.
    let client = format!("{}/GOV/{agency}/services", app.exchange.instance());
    if let Err(r) = readable_by(&app, &client, &body.items).await {
        return r;
    }
    let tag = match app.ledger.subject_secret(&subject).await {
        Ok(s) => s.tag(),
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let event = civitas_ledger::Event::new(
        "prefill.requested",
        &format!("account:{}", s.account.id),
        &format!("agency/{agency}"),
    )
    .about(tag)
    .with("items", body.items.clone());
    if let Err(e) = app.ledger.append(&event).await {
        return Problem::internal(&e).into_response();
    }
    let why = Reason {
        purpose,
        legal_basis: basis,
        consent: None,
        release: None,
    };
    answered(fill(&app, &client, &national_id, &body.items, &why).await).await
}

/// Whether the information system `client` may read each of `items` (known items, and an
/// access right to the register read each needs), as the exchange's directory says now.
async fn readable_by(app: &Shared, client: &str, items: &[String]) -> Result<(), Response> {
    let directory = app
        .exchange
        .snapshot()
        .await
        .map_err(|e| Problem::internal(&e).into_response())?;
    let client_id = civitas_core::xroad::ClientId::parse(client)
        .map_err(|e| Problem::internal(&e).into_response())?;
    let instance = app.exchange.instance();
    for item in items {
        let (at, service) = source(item).map_err(|e| e.problem())?;
        let service_id = civitas_core::xroad::ServiceId::parse(&service.service_id(instance))
            .map_err(|e| Problem::internal(&e).into_response())?;
        if !directory.may_call(&client_id, &service_id, "GET", at.path) {
            return Err(NotFilled::Refused(
                StatusCode::FORBIDDEN,
                format!("{client} has no access right to {service_id} for {item}"),
            )
            .problem());
        }
    }
    Ok(())
}
