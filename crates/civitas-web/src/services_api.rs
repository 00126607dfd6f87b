//! One-stop services over JSON, in the shape of GovStack's registration building block
//! (`/api/v1/services`, a service's forms and applications, `/api/v1/applications`,
//! `/api/v1/tasks` and `/tasks/{id}/complete`), and what the pages share with it: who a
//! signed-in person is to the workflow, filling a form through the exchange, and telling
//! the applicant of every change through Notify.
//!
//! People call it with their session (a JSON call that changes something carries the page's
//! anti-forgery token in `X-CSRF-Token`): residents apply and read their own applications;
//! an agency's staff read and complete their agency's tasks (a task is a case).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use civitas_identity::session::SessionInfo;
use civitas_identity::{AccountKind, StaffRole};
use civitas_services::{
    Action, Actor, Application, Case, CaseState, FieldError, Offering, QueueFilter, ServicesError,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::auth::Visitor;
use crate::exchange::CallLog;
use crate::exchange_api::json_body;
use crate::mydata::Reason;
use crate::prefill::signed_in;
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{id}", get(service))
        .route("/api/v1/services/{id}/forms", get(forms))
        .route("/api/v1/services/{id}/eForms", get(forms))
        .route("/api/v1/services/{id}/applications", post(apply))
        .route("/api/v1/applications", get(applications))
        .route("/api/v1/applications/{id}", get(application).put(update))
        .route(
            "/api/v1/applications/{id}/documents",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(
                civitas_services::uploads::MAX_BYTES + 4096,
            )),
        )
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/tasks/{id}", get(task))
        .route("/api/v1/tasks/{id}/complete", post(complete))
}

/// Today in Taiwan (`YYYY-MM-DD`), against which dates in forms are checked.
pub(crate) fn today() -> String {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let f = time::macros::format_description!("[year]-[month]-[day]");
    now.date().format(&f).unwrap_or_default()
}

/// The workflow's actor for a staff member's session.
pub(crate) fn staff_actor(s: &SessionInfo) -> Option<Actor> {
    let a = &s.account;
    if a.kind != AccountKind::Staff {
        return None;
    }
    let role = match a.role.as_deref().and_then(StaffRole::from_code)? {
        StaffRole::Caseworker => civitas_services::StaffRole::Caseworker,
        StaffRole::Supervisor => civitas_services::StaffRole::Supervisor,
        StaffRole::AgencyAdministrator => civitas_services::StaffRole::AgencyAdmin,
    };
    Some(Actor::Staff {
        account_id: a.id.clone(),
        name: a.display_name.clone(),
        agency: a.agency_code.clone()?,
        role,
    })
}

/// The problem for a workflow error.
pub(crate) fn problem(e: &ServicesError) -> Response {
    let (status, kind, title) = match e {
        ServicesError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", "Invalid request"),
        ServicesError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ServicesError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        ServicesError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Not now"),
        _ => return Problem::internal(e).into_response(),
    };
    Problem::new(status, kind, title)
        .detail(e.to_string())
        .into_response()
}

fn field_problem(errors: &[FieldError], a: &Application) -> Response {
    let mut r = Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-answers",
        "Some answers need changing",
    )
    .detail(format!(
        "{} answers need changing: see errors.",
        errors.len()
    ))
    .into_response();
    // The errors, by question, in both languages.
    let body = json!({
        "type": "https://civitas.example/problems/invalid-answers",
        "title": "Some answers need changing",
        "status": 422,
        "detail": format!("{} answers need changing: see errors.", errors.len()),
        "errors": errors,
        // The draft is kept with what was given: correct it with PUT /api/v1/applications/{fileId}.
        "fileId": a.id,
        "reference": a.reference,
    });
    *r.body_mut() = axum::body::Body::from(body.to_string());
    r
}

/// Fills an application's form from the registers, through the exchange as the portal at
/// the applicant's own request (each read is checked, logged and in their "Who used my
/// data"), once every read is logged.
pub(crate) async fn prefill_for(
    app: &Shared,
    national_id: &str,
    offering: &str,
) -> Result<(Map<String, Value>, Vec<CallLog>), String> {
    let form = app.services.form(offering).map_err(|e| e.to_string())?;
    let items = form.prefill_items();
    if items.is_empty() {
        return Ok((Map::new(), Vec::new()));
    }
    let name = app.services.offering_name(offering);
    let purpose = header_text(&format!(
        "Filling in a form at the person's request: {}",
        name.en
    ));
    let why = Reason {
        purpose: &purpose,
        legal_basis: "Personal Data Protection Act art. 3 (the person's own request)",
        consent: None,
        release: None,
    };
    let portal = crate::mydata::portal(app.exchange.instance());
    crate::prefill::fill(app, &portal, national_id, &items, &why)
        .await
        .map_err(|e| match e {
            crate::prefill::NotFilled::UnknownItem(i) => format!("unknown item {i}"),
            crate::prefill::NotFilled::Refused(s, d) => format!("{s}: {d}"),
        })
}

/// Text for an exchange header (visible ASCII and spaces only).
pub(crate) fn header_text(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

/// Starts an application for a signed-in resident, filled from the registers.
pub(crate) async fn start_for(
    app: &Shared,
    s: &SessionInfo,
    offering: &str,
    given: &Map<String, Value>,
) -> Result<Application, ServicesError> {
    let not_read = |e: String| {
        tracing::error!(error = %e, "a form could not be filled from the registers");
        ServicesError::Invalid(
            "The registers could not be read to fill the form; try again shortly.".into(),
        )
    };
    let (prefilled, logs) = prefill_for(app, &s.account.username, offering)
        .await
        .map_err(not_read)?;
    let who = civitas_services::Applicant {
        account_id: s.account.id.clone(),
        subject_ref: s.account.subject_ref(),
        national_id: s.account.username.clone(),
        name: s.account.display_name.clone(),
    };
    // The draft is written while the reads are logged, so that both usually go in the
    // ledger's same batch; nothing of it is answered before the reads are logged, and a
    // draft whose reads could not be logged is withdrawn at once, by the platform.
    let (started, logged) = tokio::join!(
        app.services.start_with(offering, &who, &prefilled, given),
        crate::exchange::all_logged(logs)
    );
    let a = started?;
    if let Err(e) = logged {
        if let Err(w) = app
            .services
            .discard_draft(&a.id, "its register reads could not be logged")
            .await
        {
            tracing::error!(error = %w, application = %a.id, "a draft whose reads were not logged could not be withdrawn");
        }
        return Err(not_read(e));
    }
    Ok(a)
}

/// Tells the applicant of each changed case, by e-mail from the agency's Notify service to
/// the address the register holds (their choices of channel and language apply). Sent in
/// the background: a message that cannot go never undoes the change.
pub(crate) fn tell_applicant(app: &Shared, a: &Application, changed: &[Case]) {
    // A step still waiting for an earlier one is news only when it opens.
    let changed: Vec<Case> = changed
        .iter()
        .filter(|c| c.state != CaseState::Waiting)
        .cloned()
        .collect();
    let (app, a) = (app.clone(), a.clone());
    tokio::spawn(async move {
        for c in &changed {
            if let Err(e) = tell_one(&app, &a, c).await {
                tracing::warn!(error = %e, case = %c.id, "the applicant could not be told of a change");
            }
        }
    });
}

/// Each agency's live sending service and its "application update" e-mail template,
/// remembered for a minute (they change rarely; a message each change of every case would
/// otherwise look them up every time).
type Sender = (civitas_notify::Service, String);
/// See [`sender_of`]: by agency, when looked up and what was found.
pub type Senders =
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Option<Sender>)>>;

async fn sender_of(
    app: &Shared,
    agency: &str,
) -> Result<Option<Sender>, civitas_notify::NotifyError> {
    if let Some((at, s)) = app
        .service_senders
        .lock()
        .expect("not poisoned")
        .get(agency)
        && at.elapsed() < std::time::Duration::from_secs(60)
    {
        return Ok(s.clone());
    }
    let mut found = None;
    if let Some(service) = app
        .notify
        .services(Some(agency))
        .await?
        .into_iter()
        .find(|s| s.live)
        && let Some(t) = app
            .notify
            .templates(&service.id, Some(civitas_notify::Channel::Email))
            .await?
            .into_iter()
            .find(|t| t.body.contains("((reference))"))
    {
        found = Some((service, t.id));
    }
    app.service_senders.lock().expect("not poisoned").insert(
        agency.to_string(),
        (std::time::Instant::now(), found.clone()),
    );
    Ok(found)
}

async fn tell_one(
    app: &Shared,
    a: &Application,
    c: &Case,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use civitas_notify::{Channel, KeyType, NewNotification, auth::Caller};
    let Some((service, template_id)) = sender_of(app, &c.agency).await? else {
        return Ok(()); // the agency sends no messages
    };
    let Some(person) = civitas_registry::person_by_national_id(&app.db, &a.national_id).await?
    else {
        return Ok(());
    };
    let Some(email) = person.email else {
        return Ok(());
    };
    let l = app.services.current();
    let name = l
        .catalog
        .service(&c.service_id)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut values = Map::new();
    values.insert("name".into(), json!(a.applicant_name));
    values.insert("service".into(), json!(name.zh));
    values.insert("reference".into(), json!(a.reference));
    values.insert("status".into(), json!(c.state.label(true)));
    values.insert(
        "more".into(),
        json!(c.state == CaseState::MoreInformationNeeded),
    );
    let caller = Caller {
        service,
        key_id: "civitas-services".into(),
        key_type: KeyType::Live,
    };
    let n = NewNotification {
        channel: Channel::Email,
        recipient: a.national_id.clone(),
        template_id,
        personalisation: values,
        reference: Some(format!("{}/{}/{}", a.reference, c.service_id, c.version)),
        from_registers: Some((email, format!("person:{}", person.id))),
        scheduled_ms: None,
        language: None,
    };
    app.notify.accept(&caller, &n).await?;
    Ok(())
}

fn text(t: &civitas_services::Text) -> Value {
    json!({"zh-TW": t.zh, "en": t.en})
}

/// A service or life event as GovStack lists it, with Civitas's own fields beside.
fn offering_json(app: &Shared, o: Offering<'_>) -> Value {
    let l = app.services.current();
    let steps: Vec<Value> = l
        .catalog
        .steps_of(o)
        .iter()
        .map(|(s, after)| json!({"service": s.id, "agency": s.agency, "after": after}))
        .collect();
    let mut v = json!({
        "id": o.id(),
        "name": o.name().en,
        "version": l.version.to_string(),
        "type": "Public",
        "isExecutable": true,
        "isClosed": false,
        "names": text(o.name()),
        "loa": l.catalog.loa_of(o),
        "steps": steps,
    });
    match o {
        Offering::Service(s) => {
            v["kind"] = json!("service");
            v["description"] = json!(s.summary.en);
            v["agency"] = json!(s.agency);
            v["summary"] = text(&s.summary);
            v["eligibility"] = text(&s.eligibility);
            v["fee"] =
                json!({"amount": s.fee, "currency": "TWD", "note": s.fee_note.as_ref().map(text)});
            v["documents"] = Value::Array(s.documents.iter().map(text).collect());
            v["legalBasis"] = text(&s.legal_basis);
            v["slaDays"] = json!(s.sla_days);
            v["serviceBody"] = json!([{"code": "agency", "value": s.agency}]);
        }
        Offering::LifeEvent(e) => {
            v["kind"] = json!("life_event");
            v["description"] = json!(e.summary.en);
            v["summary"] = text(&e.summary);
            v["information"] = Value::Array(
                e.information
                    .iter()
                    .map(|i| json!({"title": text(&i.title), "body": text(&i.body)}))
                    .collect(),
            );
        }
    }
    v
}

/// What the catalogue lists may be narrowed by.
#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
pub(crate) struct ServicesQuery {
    /// Words to search for, in Chinese or English.
    q: Option<String>,
    /// GovStack's name filter (searched the same way).
    name: Option<String>,
    /// Only this agency's services.
    agency: Option<String>,
}

/// The catalogue: services and life events (searched, when words are given).
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(ServicesQuery),
    responses((status = 200, description = "Services and life events, best match first when searched", body = Object)))]
pub(crate) async fn services(
    State(app): State<Shared>,
    Query(q): Query<ServicesQuery>,
) -> Response {
    let l = app.services.current();
    let words = q.q.or(q.name).unwrap_or_default();
    let mut list: Vec<Offering<'_>> = if words.trim().is_empty() {
        l.catalog
            .life_events
            .iter()
            .map(Offering::LifeEvent)
            .chain(l.catalog.services.iter().map(Offering::Service))
            .collect()
    } else {
        l.index
            .search(&words)
            .iter()
            .filter_map(|h| l.catalog.offering(&h.id))
            .collect()
    };
    if let Some(a) = &q.agency {
        list.retain(|o| matches!(o, Offering::Service(s) if s.agency.eq_ignore_ascii_case(a)));
    }
    Json(Value::Array(
        list.into_iter().map(|o| offering_json(&app, o)).collect(),
    ))
    .into_response()
}

/// One service or life event.
#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = String, Path, description = "The service's or life event's id")),
    responses((status = 200, description = "The service", body = Object), (status = 404, description = "No such service", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn service(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let l = app.services.current();
    match l.catalog.offering(&id) {
        Some(o) => Json(offering_json(&app, o)).into_response(),
        None => Problem::not_found(format!("No service or life event {id}")).into_response(),
    }
}

/// A service's form (one, the current version): its steps, questions, conditions and
/// checks, and the declaration.
#[utoipa::path(get, path = "/api/v1/services/{id}/forms", tag = "services",
    params(("id" = String, Path, description = "The service's or life event's id")),
    responses((status = 200, description = "Its forms (one)", body = Object), (status = 404, description = "No such service", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn forms(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let l = app.services.current();
    let Some(o) = l.catalog.offering(&id) else {
        return Problem::not_found(format!("No service or life event {id}")).into_response();
    };
    let form = l.catalog.form_of(o);
    Json(json!([{
        "eFormId": format!("{id}@{}", l.version),
        "name": o.name().en,
        "description": format!("The form of {}", o.name().en),
        "version": l.version.to_string(),
        "latest": true,
        "schema": {"steps": form.steps, "declaration": text(o.declaration())},
    }]))
    .into_response()
}

/// An application submitted at once.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ApplyIn {
    /// GovStack's applicant id; when given, it must be the signed-in person's national ID.
    #[serde(rename = "applicantId")]
    applicant_id: Option<String>,
    /// The answers, by question id (`formData.data` in GovStack's shape); answers the
    /// registers hold are filled from them when not given.
    #[serde(rename = "formData")]
    form_data: Option<FormData>,
    /// Keep it as a draft instead of submitting it (to upload its documents first).
    #[serde(default)]
    draft: bool,
}

/// Answers to save on a draft, and whether to submit it then.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateIn {
    #[serde(rename = "formData")]
    form_data: Option<FormData>,
    /// Submit it once saved.
    #[serde(default)]
    submit: bool,
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct FormData {
    data: Map<String, Value>,
}

fn status_json(a: &Application, cases: &[Case]) -> Value {
    let (code, title) = if a.state == civitas_services::ApplicationState::Withdrawn {
        ("REJECTED", "Withdrawn")
    } else if cases
        .iter()
        .any(|c| c.state == CaseState::MoreInformationNeeded)
    {
        ("SENDBACK", "More information needed")
    } else if cases.iter().any(|c| c.outcome() == Some(false)) {
        ("REJECTED", "Not approved")
    } else if !cases.is_empty() && cases.iter().all(|c| c.outcome() == Some(true)) {
        ("APPROVED", "Approved")
    } else {
        ("PENDING", "Pending")
    };
    json!({"code": code, "title": title})
}

fn case_json(app: &Shared, c: &Case) -> Value {
    let l = app.services.current();
    let s = l.catalog.service(&c.service_id);
    let code = match (c.state, c.outcome()) {
        (CaseState::MoreInformationNeeded, _) => "SENDBACK",
        (_, Some(true)) => "APPROVED",
        (_, Some(false)) => "REJECTED",
        _ => "PENDING",
    };
    json!({
        "taskId": c.id,
        "fileId": c.application_id,
        "serviceId": c.service_id,
        "serviceName": s.map(|s| s.name.en.clone()),
        "agency": c.agency,
        "state": c.state,
        "status": {"code": code, "title": c.state.label(false)},
        "assigneeId": c.assignee,
        "roleId": "caseworker",
        "created": c.opened_ms,
        "due": c.due_ms,
        "escalated": c.escalated_ms.is_some(),
        "dependsOn": c.depends_on,
        "reason": c.reason,
        "decision": c.decision,
    })
}

async fn application_json(app: &Shared, a: &Application) -> Result<Value, ServicesError> {
    // A draft has no cases yet.
    let (cases, timeline) = if a.state == civitas_services::ApplicationState::Draft {
        (Vec::new(), Vec::new())
    } else {
        (
            app.services.cases_of(&a.id).await?,
            app.services.timeline(&a.id).await?,
        )
    };
    Ok(application_value(app, a, &cases, &timeline))
}

/// An application in GovStack's shape, with Civitas's tasks and timeline.
fn application_value(
    app: &Shared,
    a: &Application,
    cases: &[Case],
    timeline: &[civitas_services::TimelineEntry],
) -> Value {
    json!({
        "fileId": a.id,
        "reference": a.reference,
        "serviceId": a.offering,
        "serviceName": app.services.offering_name(&a.offering).en,
        "applicantId": a.national_id,
        "state": a.state,
        "status": status_json(a, cases),
        "registered": a.submitted_ms,
        "created": a.created_ms,
        "ended": cases.iter().all(|c| c.state.is_final()) && !cases.is_empty(),
        "applicationData": {"data": a.answers, "sources": a.sources},
        "tasks": cases.iter().map(|c| case_json(app, c)).collect::<Vec<_>>(),
        "timeline": timeline.iter().map(|t| json!({"at": t.at_ms, "taskId": t.case_id, "serviceId": t.service_id, "agency": t.agency, "from": t.from, "to": t.to, "note": t.note})).collect::<Vec<_>>(),
    })
}

fn resident(s: &SessionInfo) -> Result<(), Box<Response>> {
    if s.account.person_id.is_none() {
        return Err(Box::new(
            Problem::new(StatusCode::FORBIDDEN, "not-a-resident", "Forbidden")
                .detail("Only people in the population register apply here.")
                .into_response(),
        ));
    }
    Ok(())
}

fn loa_problem(need: &str) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "insufficient-level",
        "Sign in at a higher level",
    )
    .detail(format!(
        "This service needs level {need}: confirm your sign-in with a second factor."
    ))
    .into_response()
}

/// Whether a session is at a level at least `need` (`low`, `substantial`, `high`).
pub(crate) fn level_is(s: &SessionInfo, need: &str) -> bool {
    s.loa >= level(need)
}

/// A level of assurance by its code (the catalogue's are checked when it loads).
pub(crate) fn level(code: &str) -> civitas_identity::Loa {
    civitas_identity::Loa::from_code(code).unwrap_or(civitas_identity::Loa::Low)
}

/// Applies for a service or life event in one call: the form filled from the registers,
/// then from `formData.data`, checked, and submitted.
#[utoipa::path(post, path = "/api/v1/services/{id}/applications", tag = "services", request_body = ApplyIn,
    params(("id" = String, Path, description = "The service's or life event's id")),
    responses(
        (status = 200, description = "The application, submitted, with its tasks (GovStack's applicationFileResponse)", body = Object),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No anti-forgery token, not a resident, another person's id, or too low a level of assurance", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such service", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Answers that need changing (`errors`, by question); the draft is kept", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn apply(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let s = match signed_in(&v, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = resident(s) {
        return *r;
    }
    let body: ApplyIn = match json_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if body
        .applicant_id
        .as_deref()
        .is_some_and(|x| !x.eq_ignore_ascii_case(&s.account.username))
    {
        return Problem::new(StatusCode::FORBIDDEN, "not-yours", "Forbidden")
            .detail("People apply for themselves: applicantId must be your own national ID.")
            .into_response();
    }
    let Some(loa) = app.services.level_of(&id) else {
        return Problem::not_found(format!("No service or life event {id}")).into_response();
    };
    if !level_is(s, loa) {
        return loa_problem(loa);
    }
    let given = body.form_data.map(|f| f.data).unwrap_or_default();
    // The draft is written once, with the registers' values and the answers given.
    let a = match start_for(&app, s, &id, &given).await {
        Ok(a) => a,
        Err(e) => return problem(&e),
    };
    save_and_submit(&app, s, a, Map::new(), !body.draft).await
}

/// Saves answers to an application, and submits it when asked.
async fn save_and_submit(
    app: &Shared,
    s: &SessionInfo,
    mut a: Application,
    given: Map<String, Value>,
    submit: bool,
) -> Response {
    let today = today();
    let draft = a.state == civitas_services::ApplicationState::Draft;
    // Answers and submission in one write, for a draft; else the answers, then the cases
    // that asked for more go back.
    if !submit || !draft {
        if !given.is_empty() {
            match app
                .services
                .save_answers(&a.id, &s.account.id, &given, &today)
                .await
            {
                Ok((saved, _)) => a = saved,
                Err(e) => return problem(&e),
            }
        }
        if !submit {
            return match application_json(app, &a).await {
                Ok(v) => Json(v).into_response(),
                Err(e) => problem(&e),
            };
        }
    }
    if draft {
        // The application as read, submitted as a compare-and-set on it; the answer is made
        // from what was written, without reading it back.
        return match app.services.submit_loaded(a.clone(), &given, &today).await {
            Ok(Ok((a, cases))) => {
                tell_applicant(app, &a, &cases);
                let timeline: Vec<civitas_services::TimelineEntry> = cases
                    .iter()
                    .map(|c| civitas_services::TimelineEntry {
                        at_ms: c.updated_ms,
                        case_id: c.id.clone(),
                        service_id: c.service_id.clone(),
                        agency: c.agency.clone(),
                        from: "none".into(),
                        to: c.state,
                        note: None,
                        actor_name: "applicant".into(),
                    })
                    .collect();
                Json(application_value(app, &a, &cases, &timeline)).into_response()
            }
            Ok(Err(errors)) => field_problem(&errors, &a),
            Err(e) => problem(&e),
        };
    }
    match app.services.resubmit(&a.id, &s.account.id, &today).await {
        Ok(Ok(changed)) => {
            tell_applicant(app, &a, &changed);
            match application_json(app, &a).await {
                Ok(v) => Json(v).into_response(),
                Err(e) => problem(&e),
            }
        }
        Ok(Err(errors)) => field_problem(&errors, &a),
        Err(e) => problem(&e),
    }
}

/// The caller (a JSON call with the anti-forgery token) and their application `id`.
async fn own_application<'a>(
    app: &Shared,
    v: &'a Visitor,
    headers: &HeaderMap,
    id: &str,
) -> Result<(&'a SessionInfo, Application), Box<Response>> {
    let s = signed_in(v, headers)?;
    let a = app
        .services
        .application_of(id, &s.account.id)
        .await
        .map_err(|e| Box::new(problem(&e)))?;
    Ok((s, a))
}

/// Saves answers on one of the signed-in resident's applications (a draft, or one an
/// agency asked more of), and submits it (again) when asked.
#[utoipa::path(put, path = "/api/v1/applications/{id}", tag = "services", request_body = UpdateIn,
    params(("id" = String, Path, description = "The application's id (GovStack's fileId)")),
    responses(
        (status = 200, description = "The application", body = Object),
        (status = 404, description = "Not theirs or no such application", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Sent and not asked for more", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Answers that need changing; what was given is kept", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let (s, a) = match own_application(&app, &v, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body: UpdateIn = match json_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // Sending (again) needs the level the offering needs, as on the pages.
    if body.submit {
        let loa = app.services.level_of(&a.offering).unwrap_or("low");
        if !level_is(s, loa) {
            return loa_problem(loa);
        }
    }
    save_and_submit(
        &app,
        s,
        a,
        body.form_data.map(|f| f.data).unwrap_or_default(),
        body.submit,
    )
    .await
}

/// Where an uploaded document's name is given.
#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct DocumentQuery {
    /// The file's name, as the person sees it (default `document`).
    name: Option<String>,
}

/// Uploads a document for one of the signed-in resident's applications: the body is the
/// file, its `Content-Type` its type (PDF, JPEG, PNG or HEIC; at most 10 MB). The answer is
/// what a file question's answer is.
#[utoipa::path(post, path = "/api/v1/applications/{id}/documents", tag = "services", request_body(content = Vec<u8>, description = "The file", content_type = "application/pdf"), params(DocumentQuery, ("id" = String, Path, description = "The application's id")),
    responses(
        (status = 200, description = "The stored file: key, name, size, type, sha256", body = Object),
        (status = 400, description = "Empty, too large, or not an accepted type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not theirs or no such application", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn upload(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DocumentQuery>,
    bytes: axum::body::Bytes,
) -> Response {
    let (_, a) = match own_application(&app, &v, &headers, &id).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let kind = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match app
        .services
        .put_upload(
            &a.id,
            q.name.as_deref().unwrap_or("document"),
            kind,
            bytes.to_vec(),
        )
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem(&e),
    }
}

/// The signed-in resident's applications, newest first.
#[utoipa::path(get, path = "/api/v1/applications", tag = "services",
    responses((status = 200, description = "Their applications with their tasks' status", body = Object), (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn applications(State(app): State<Shared>, v: Visitor) -> Response {
    let Some(s) = &v.session else {
        return unauthorized();
    };
    let list = match app.services.applications_of(&s.account.id).await {
        Ok(l) => l,
        Err(e) => return problem(&e),
    };
    let mut out = Vec::new();
    for a in &list {
        match application_json(&app, a).await {
            Ok(v) => out.push(v),
            Err(e) => return problem(&e),
        }
    }
    Json(Value::Array(out)).into_response()
}

fn unauthorized() -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Not signed in")
        .detail("Sign in first.")
        .into_response()
}

/// One of the signed-in resident's applications, with its tasks and timeline.
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "services",
    params(("id" = String, Path, description = "The application's id (GovStack's fileId)")),
    responses((status = 200, description = "The application", body = Object), (status = 404, description = "Not theirs or no such application", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn application(
    State(app): State<Shared>,
    v: Visitor,
    Path(id): Path<String>,
) -> Response {
    let Some(s) = &v.session else {
        return unauthorized();
    };
    let a = match app.services.application_of(&id, &s.account.id).await {
        Ok(a) => a,
        Err(e) => return problem(&e),
    };
    match application_json(&app, &a).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem(&e),
    }
}

/// A task list's filters (GovStack's paging names).
#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct TasksQuery {
    /// Only this state.
    state: Option<String>,
    /// Only this service.
    #[serde(rename = "serviceId")]
    service_id: Option<String>,
    /// Only those assigned to this account (`me` for the caller).
    #[serde(rename = "assigneeId")]
    assignee_id: Option<String>,
    /// Skip this many.
    #[serde(rename = "firstResult")]
    first_result: Option<u32>,
    /// At most this many (default 50, at most 500).
    #[serde(rename = "maxResult")]
    max_result: Option<u32>,
}

/// An agency's staff member at level substantial (what they read is people's data).
fn staff(v: &Visitor) -> Result<(&SessionInfo, Actor, String), Box<Response>> {
    let Some(s) = &v.session else {
        return Err(Box::new(unauthorized()));
    };
    if staff_actor(s).is_some() && !level_is(s, "substantial") {
        return Err(Box::new(loa_problem("substantial")));
    }
    match staff_actor(s) {
        Some(actor @ Actor::Staff { .. }) => {
            let agency = s.account.agency_code.clone().unwrap_or_default();
            Ok((s, actor, agency))
        }
        _ => Err(Box::new(
            Problem::new(StatusCode::FORBIDDEN, "not-staff", "Forbidden")
                .detail("Tasks are an agency's staff's.")
                .into_response(),
        )),
    }
}

/// The caller's agency's open tasks (cases), due soonest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "services", params(TasksQuery),
    responses((status = 200, description = "Tasks", body = Object), (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Not agency staff", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn tasks(
    State(app): State<Shared>,
    v: Visitor,
    Query(q): Query<TasksQuery>,
) -> Response {
    let (s, _, agency) = match staff(&v) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let state = match q.state.as_deref().map(CaseState::parse) {
        Some(None) => {
            return Problem::new(StatusCode::BAD_REQUEST, "invalid", "Invalid request")
                .detail("state is one of waiting, submitted, in_review, more_information_needed, approved, rejected, withdrawn, closed")
                .into_response();
        }
        Some(s) => s,
        None => None,
    };
    let f = QueueFilter {
        state,
        service: q.service_id,
        assignee: q
            .assignee_id
            .map(|a| if a == "me" { s.account.id.clone() } else { a }),
        limit: q.max_result,
        offset: q.first_result.unwrap_or(0),
        ..Default::default()
    };
    match app.services.queue(&agency, &f).await {
        Ok(rows) => Json(Value::Array(
            rows.iter()
                .map(|r| {
                    let mut v = case_json(&app, &r.case);
                    v["reference"] = json!(r.reference);
                    v["applicantName"] = json!(r.applicant_name);
                    v
                })
                .collect(),
        ))
        .into_response(),
        Err(e) => problem(&e),
    }
}

/// A task of the caller's agency, with the answers its service asks for.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "services",
    params(("id" = String, Path, description = "The task's (case's) id")),
    responses((status = 200, description = "The task", body = Object), (status = 404, description = "Another agency's, or no such task", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn task(
    State(app): State<Shared>,
    v: Visitor,
    Path(id): Path<String>,
) -> Response {
    let (_, _, agency) = match staff(&v) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app.services.case_for_agency(&id, &agency).await {
        Ok((c, a)) => {
            let mut v = case_json(&app, &c);
            v["taskName"] = v["serviceName"].clone();
            v["reference"] = json!(a.reference);
            v["data"] = Value::Object(app.services.answers_for(&c, &a));
            Json(v).into_response()
        }
        Err(e) => problem(&e),
    }
}

/// What completing a task does.
#[derive(Deserialize, ToSchema)]
pub(crate) struct CompleteIn {
    /// `{"action": "take" | "start_review" | "request_information" | "approve" | "reject" |
    /// "close", "reason": "..."}`.
    data: Map<String, Value>,
}

/// Acts on a task: takes it, reviews it, asks for more, decides, closes. A decision opens
/// the steps that waited for it (or closes them when it is a refusal); the applicant is
/// told of each change.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "services", request_body = CompleteIn,
    params(("id" = String, Path, description = "The task's (case's) id")),
    responses(
        (status = 200, description = "The task after the action, and the tasks it changed", body = Object),
        (status = 400, description = "An unknown action, or a reason missing or too long", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not agency staff, no anti-forgery token, or not at level substantial", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Another agency's, or no such task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task's state does not allow it", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn complete(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let (s, actor, agency) = match staff(&v) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(r) = signed_in(&v, &headers) {
        return *r;
    }
    if !level_is(s, "substantial") {
        return loa_problem("substantial");
    }
    let body: CompleteIn = match json_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let name = body
        .data
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason = body
        .data
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(action) = Action::parse(name, reason) else {
        return Problem::new(StatusCode::BAD_REQUEST, "invalid", "Invalid request")
            .detail("data.action is one of take, start_review, request_information, approve, reject, close")
            .into_response();
    };
    match act_and_tell(&app, &id, &agency, &actor, action).await {
        Ok(changed) => Json(json!({
            "taskId": id,
            "fileId": changed.first().map(|c| c.application_id.clone()),
            "status": changed.first().map(|c| case_json(&app, c)["status"].clone()),
            "variables": {"changed": changed.iter().map(|c| case_json(&app, c)).collect::<Vec<_>>()},
        }))
        .into_response(),
        Err(e) => problem(&e),
    }
}

/// Acts on a case of `agency` and tells the applicant of what changed.
pub(crate) async fn act_and_tell(
    app: &Shared,
    case_id: &str,
    agency: &str,
    actor: &Actor,
    action: Action,
) -> Result<Vec<Case>, ServicesError> {
    let (before, a) = app.services.case_for_agency(case_id, agency).await?;
    let changed = app.services.act(case_id, actor, action).await?;
    // The applicant hears of changes of state, not of who took the case.
    let moved: Vec<Case> = changed
        .iter()
        .enumerate()
        .filter(|(i, c)| *i > 0 || c.state != before.state)
        .map(|(_, c)| c.clone())
        .collect();
    tell_applicant(app, &a, &moved);
    Ok(changed)
}
