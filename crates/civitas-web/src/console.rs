//! The agency staff's console for cases (`/console`): their agency's queue with filters
//! (state, service, their own, nobody's, past due, escalated), bulk actions on the cases
//! ticked, and a case's page with the answers its service asks for (an agency sees those
//! only), the files, the case's history, the registers read through the exchange (logged,
//! and in the person's "Who used my data"), and the actions its state allows.
//!
//! Staff see their own agency's cases only; another agency's case is "not found". Acting
//! needs level substantial. Operators and residents may not use the console.

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, Path, Query, RawForm, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_identity::Loa;
use civitas_identity::session::SessionInfo;
use civitas_services::{Action, Actor, Application, Case, CaseState, QueueFilter, ServicesError};
use serde::Deserialize;

use crate::Shared;
use crate::account::{guard_form, taiwan_time};
use crate::auth::{SignedIn, Visitor};
use crate::mydata::Reason;
use crate::pages::{Chrome, error_page, not_found_page, render};
use crate::services_api::{act_and_tell, staff_actor};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/console", get(queue))
        .route("/console/bulk", post(bulk))
        .route("/console/cases/{id}", get(case_page).post(act))
        .route("/console/cases/{id}/registers", post(registers))
        .route("/console/cases/{id}/files/{question}", get(file))
}

fn chrome(v: &Visitor, headers: &HeaderMap, uri: &axum::http::Uri) -> Chrome {
    Chrome::for_visitor(v, headers, uri, "console")
}

/// The staff member's actor and agency, or the page that refuses anyone else.
fn staff(s: &SessionInfo, c: Chrome) -> Result<(Chrome, Actor, String), Box<Response>> {
    match staff_actor(s) {
        Some(a) => {
            let agency = s.account.agency_code.clone().unwrap_or_default();
            Ok((c, a, agency))
        }
        None => Err(Box::new(crate::admin::forbidden_page(c))),
    }
}

/// [`staff`] for a page that reads cases: what staff read there is people's data, so at
/// level substantial (a lower session is sent to step up first).
fn staff_reading(
    v: &Visitor,
    s: &SessionInfo,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(Chrome, Actor, String), Box<Response>> {
    crate::auth::require(v, uri, Loa::Substantial).map_err(|r| Box::new(r.into_response()))?;
    staff(s, chrome(v, headers, uri))
}

fn pick(c: &Chrome, t: &civitas_services::Text) -> String {
    c.lang.pick(&t.zh, &t.en).to_string()
}

/// A queue row as the page shows it.
struct Row {
    id: String,
    reference: String,
    applicant: String,
    service: String,
    state: String,
    assignee: String,
    due: String,
    overdue: bool,
    escalated: bool,
}

#[derive(Template)]
#[template(path = "console.html")]
struct QueuePage {
    c: Chrome,
    agency: String,
    rows: Vec<Row>,
    counts: Vec<(String, i64)>,
    services: Vec<(String, String)>,
    states: Vec<(&'static str, String)>,
    f: QueueQuery,
    done: String,
    page: u32,
    more: bool,
}

#[derive(Deserialize, Default, Clone)]
struct QueueQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    service: String,
    /// `mine`, `unassigned`, `overdue`, `escalated` or empty.
    #[serde(default)]
    show: String,
    #[serde(default)]
    page: u32,
    #[serde(default)]
    done: String,
}

const PAGE: u32 = 50;

async fn queue(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Query(q): Query<QueueQuery>,
) -> Response {
    let (c, _, agency) = match staff_reading(&v, &s, &headers, &uri) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let now = civitas_ledger::event::now_ms();
    let f = QueueFilter {
        state: CaseState::parse(&q.state),
        service: (!q.service.is_empty()).then(|| q.service.clone()),
        assignee: (q.show == "mine").then(|| s.account.id.clone()),
        unassigned: q.show == "unassigned",
        overdue_at: (q.show == "overdue").then_some(now),
        escalated: q.show == "escalated",
        limit: Some(PAGE + 1),
        offset: q.page.min(10_000) * PAGE,
    };
    let found = async {
        Ok::<_, ServicesError>((
            app.services.queue(&agency, &f).await?,
            app.services.counts(&agency).await?,
        ))
    };
    let (mut list, counts) = match found.await {
        Ok(x) => x,
        Err(e) => return error_page(c, &headers, &e),
    };
    let more = list.len() > PAGE as usize;
    list.truncate(PAGE as usize);
    let l = app.services.current();
    let zh = c.lang.code() == "zh-TW";
    let name = |sid: &str| {
        l.catalog
            .service(sid)
            .map(|x| pick(&c, &x.name))
            .unwrap_or_else(|| sid.to_string())
    };
    let rows = list
        .iter()
        .map(|r| Row {
            id: r.case.id.clone(),
            reference: r.reference.clone(),
            applicant: r.applicant_name.clone(),
            service: name(&r.case.service_id),
            state: r.case.state.label(zh).to_string(),
            assignee: r.case.assignee_name.clone().unwrap_or_default(),
            due: r.case.due_ms.map(taiwan_time).unwrap_or_default(),
            overdue: r.case.due_ms.is_some_and(|d| d < now) && r.case.state.is_open(),
            escalated: r.case.escalated_ms.is_some(),
        })
        .collect();
    let services = l
        .catalog
        .services
        .iter()
        .filter(|x| x.agency == agency)
        .map(|x| (x.id.clone(), pick(&c, &x.name)))
        .collect();
    let page = QueuePage {
        agency: crate::services_pages::agency_name(
            &crate::services_pages::agency_names(&app, &c).await,
            &agency,
        ),
        rows,
        counts: counts
            .into_iter()
            .map(|(st, n)| (st.label(zh).to_string(), n))
            .collect(),
        services,
        states: CaseState::ALL
            .iter()
            .map(|st| (st.as_str(), st.label(zh).to_string()))
            .collect(),
        done: q.done.clone(),
        page: q.page,
        more,
        f: q,
        c,
    };
    render(&page, StatusCode::OK)
}

/// Bulk actions on the ticked cases: take them, or start their review.
async fn bulk(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    RawForm(raw): RawForm,
) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&raw).into_owned().collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let s = match guard_form(
        &v,
        &headers,
        &"/console".parse().unwrap_or(uri.clone()),
        Loa::Substantial,
        &get("csrf"),
    ) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (c, actor, agency) = match staff(&s, chrome(&v, &headers, &uri)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let action = get("action");
    if !matches!(action.as_str(), "take" | "start_review") {
        return crate::admin::forbidden_page(c);
    }
    let ids: Vec<&String> = pairs
        .iter()
        .filter(|(n, _)| n == "case")
        .map(|(_, v)| v)
        .take(200)
        .collect();
    let (mut done, mut skipped) = (0, 0);
    for id in ids {
        let Some(a) = Action::parse(&action, "") else {
            continue;
        };
        match act_and_tell(&app, id, &agency, &actor, a).await {
            Ok(_) => done += 1,
            Err(ServicesError::Conflict(_) | ServicesError::NotFound(_)) => skipped += 1,
            Err(e) => return error_page(c, &headers, &e),
        }
    }
    Redirect::to(&format!("/console?done={done}-{skipped}")).into_response()
}

/// An answer as the case page shows it.
struct AnswerView {
    question: String,
    label: String,
    answer: String,
    source: String,
    file: bool,
}

#[derive(Template)]
#[template(path = "console_case.html")]
struct CasePage {
    c: Chrome,
    case: Case,
    a: Application,
    service: String,
    state: String,
    due: String,
    overdue: bool,
    answers: Vec<AnswerView>,
    history: Vec<(String, String, String, String)>,
    others: Vec<(String, String, String)>,
    actions: Vec<(&'static str, String, bool)>,
    can_assign: bool,
    error: String,
    /// The field the error is about (`reason`, `assignee`), or none.
    error_field: &'static str,
    /// The reason as typed, when the page is shown again.
    reason_text: String,
    registers: Vec<(String, String, String)>,
    registers_error: String,
}

fn actions_for(c: &Chrome, st: CaseState) -> Vec<(&'static str, String, bool)> {
    let all: [(&'static str, &str, &str, bool); 6] = [
        ("take", "認領", "Take it", false),
        ("start_review", "開始審查", "Start the review", false),
        (
            "request_information",
            "請申請人補件",
            "Ask the applicant for more",
            true,
        ),
        ("approve", "核准", "Approve", false),
        ("reject", "不予核准", "Reject", true),
        ("close", "結案", "Close", false),
    ];
    all.iter()
        .filter(|(a, ..)| match st {
            CaseState::Submitted => *a != "close",
            CaseState::InReview => !matches!(*a, "start_review" | "close"),
            CaseState::MoreInformationNeeded => *a == "take",
            CaseState::Approved | CaseState::Rejected => *a == "close",
            _ => false,
        })
        .map(|(a, z, e, reason)| (*a, c.lang.pick(z, e).to_string(), *reason))
        .collect()
}

/// What a case page shows besides the case: an error (and the field it is about), the
/// reason as typed, and the registers as read.
#[derive(Default)]
struct Extra {
    error_field: &'static str,
    error: String,
    reason: String,
    registers: Vec<(String, String, String)>,
    registers_error: String,
}

async fn case_view(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    actor: &Actor,
    id: &str,
    extra: Extra,
) -> Response {
    let Actor::Staff { agency, .. } = actor else {
        return not_found_page(c);
    };
    let (case, a) = match app.services.case_for_agency(id, agency).await {
        Ok(x) => x,
        Err(ServicesError::NotFound(_)) => return not_found_page(c),
        Err(e) => return error_page(c, headers, &e),
    };
    let found = async {
        Ok::<_, ServicesError>((
            app.services.timeline(&a.id).await?,
            app.services.cases_of(&a.id).await?,
        ))
    };
    let (timeline, cases) = match found.await {
        Ok(x) => x,
        Err(e) => return error_page(c, headers, &e),
    };
    let zh = c.lang.code() == "zh-TW";
    let l = app.services.current();
    let name = |sid: &str| {
        l.catalog
            .service(sid)
            .map(|x| pick(&c, &x.name))
            .unwrap_or_else(|| sid.to_string())
    };
    let seen = app.services.answers_for(&case, &a);
    let answers = l
        .catalog
        .service(&case.service_id)
        .map(|svc| {
            svc.steps
                .iter()
                .flat_map(|st| &st.questions)
                .filter(|q| seen.contains_key(&q.id))
                .map(|q| {
                    let answer = crate::services_pages::answer_text(&c, &a, q);
                    AnswerView {
                        question: q.id.clone(),
                        label: pick(&c, &q.label),
                        source: a
                            .register_source(&q.id)
                            .map(|s| s.source_name)
                            .unwrap_or_default(),
                        answer,
                        file: q.kind == civitas_services::Kind::File,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let now = civitas_ledger::event::now_ms();
    let page = CasePage {
        service: name(&case.service_id),
        state: case.state.label(zh).to_string(),
        due: case.due_ms.map(taiwan_time).unwrap_or_default(),
        overdue: case.due_ms.is_some_and(|d| d < now) && case.state.is_open(),
        answers,
        history: timeline
            .iter()
            .filter(|t| t.case_id == case.id)
            .map(|t| {
                (
                    taiwan_time(t.at_ms),
                    t.actor_name.clone(),
                    t.to.label(zh).to_string(),
                    t.note.clone().unwrap_or_default(),
                )
            })
            .collect(),
        others: cases
            .iter()
            .filter(|x| x.id != case.id)
            .map(|x| {
                (
                    name(&x.service_id),
                    x.agency.clone(),
                    x.state.label(zh).to_string(),
                )
            })
            .collect(),
        actions: actions_for(&c, case.state),
        can_assign: matches!(actor, Actor::Staff { role, .. } if *role != civitas_services::StaffRole::Caseworker),
        error_field: extra.error_field,
        error: extra.error,
        reason_text: extra.reason,
        registers: extra.registers,
        registers_error: extra.registers_error,
        case,
        a,
        c,
    };
    let status = if page.error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(&page, status)
}

async fn case_page(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let (c, actor, _) = match staff_reading(&v, &s, &headers, &uri) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    case_view(&app, c, &headers, &actor, &id, Extra::default()).await
}

#[derive(Deserialize)]
struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    assignee: String,
}

async fn act(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (c, actor, agency) = match staff(&s, chrome(&v, &headers, &uri)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let action = if f.action == "assign" {
        // A colleague of the same agency, by their sign-in name.
        match app.identity.account_named(f.assignee.trim()).await {
            Ok(Some(to))
                if to.agency_code.as_deref() == Some(agency.as_str())
                    && to.kind == civitas_identity::AccountKind::Staff =>
            {
                Some(Action::Assign {
                    account_id: to.id,
                    name: to.display_name,
                })
            }
            _ => {
                let msg = c
                    .lang
                    .pick(
                        "找不到這位同機關的同仁",
                        "No colleague at your agency has that sign-in name",
                    )
                    .to_string();
                return case_view(
                    &app,
                    c,
                    &headers,
                    &actor,
                    &id,
                    Extra {
                        error_field: "assignee",
                        error: msg,
                        reason: f.reason.clone(),
                        ..Default::default()
                    },
                )
                .await;
            }
        }
    } else {
        Action::parse(&f.action, &f.reason)
    };
    let Some(action) = action else {
        return crate::admin::forbidden_page(c);
    };
    match act_and_tell(&app, &id, &agency, &actor, action).await {
        Ok(_) => Redirect::to(&format!("/console/cases/{id}")).into_response(),
        Err(ServicesError::NotFound(_)) => not_found_page(c),
        Err(ServicesError::Invalid(_)) => {
            let msg = c
                .lang
                .pick(
                    "請說明理由（2,000 字以內）：申請人會看到。",
                    "Give the reason (at most 2,000 characters): the applicant reads it.",
                )
                .to_string();
            case_view(
                &app,
                c,
                &headers,
                &actor,
                &id,
                Extra {
                    error_field: "reason",
                    error: msg,
                    reason: f.reason.clone(),
                    ..Default::default()
                },
            )
            .await
        }
        Err(ServicesError::Conflict(m) | ServicesError::Forbidden(m)) => {
            case_view(
                &app,
                c,
                &headers,
                &actor,
                &id,
                Extra {
                    error: m,
                    reason: f.reason.clone(),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Reads what the registers hold of the data items the service's form is bound to, about
/// the applicant, as the agency's case system (`GOV/{agency}/services`) on the service's
/// legal basis: the exchange's access rights decide, and each read is logged.
async fn registers(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let back = format!("/console/cases/{id}")
        .parse()
        .unwrap_or(uri.clone());
    let s = match guard_form(&v, &headers, &back, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (c, actor, agency) = match staff(&s, chrome(&v, &headers, &uri)) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (case, a) = match app.services.case_for_agency(&id, &agency).await {
        Ok(x) => x,
        Err(_) => return not_found_page(c),
    };
    let (items, purpose, basis) = {
        let l = app.services.current();
        let Some(svc) = l.catalog.service(&case.service_id) else {
            return not_found_page(c);
        };
        let items: Vec<String> = svc
            .steps
            .iter()
            .flat_map(|st| &st.questions)
            .flat_map(|q| [q.prefill.clone(), q.options_from.clone()])
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        (
            items,
            crate::services_api::header_text(&format!(
                "Deciding case {} ({})",
                a.reference, svc.name.en
            )),
            // Headers carry visible ASCII: the English text.
            crate::services_api::header_text(&svc.legal_basis.en),
        )
    };
    let client = format!("{}/GOV/{agency}/services", app.exchange.instance());
    let why = Reason {
        purpose: &purpose,
        legal_basis: &basis,
        consent: None,
        release: None,
    };
    let result = crate::prefill::fill(&app, &client, &a.national_id, &items, &why).await;
    let shown = match result {
        Ok((data, logs)) => {
            let mut ok = true;
            for log in logs {
                if crate::exchange::logged(log).await.is_err() {
                    ok = false;
                }
            }
            if ok {
                let rows = data
                    .iter()
                    .map(|(item, v)| {
                        let title = civitas_registry::attributes::attribute(item)
                            .map_or(item.clone(), |x| {
                                c.lang.pick(x.title_zh, x.title_en).to_string()
                            });
                        (
                            title,
                            v["value"].to_string(),
                            v["source_name"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                (rows, String::new())
            } else {
                (
                    vec![],
                    c.lang
                        .pick(
                            "讀取無法記錄，因此不顯示。",
                            "The reads could not be logged, so nothing is shown.",
                        )
                        .to_string(),
                )
            }
        }
        Err(crate::prefill::NotFilled::Refused(_, d)) => (vec![], d),
        Err(crate::prefill::NotFilled::UnknownItem(i)) => (vec![], i),
    };
    case_view(
        &app,
        c,
        &headers,
        &actor,
        &id,
        Extra {
            registers: shown.0,
            registers_error: shown.1,
            ..Default::default()
        },
    )
    .await
}

async fn file(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path((id, question)): Path<(String, String)>,
) -> Response {
    let (c, _, agency) = match staff_reading(&v, &s, &headers, &uri) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (case, a) = match app.services.case_for_agency(&id, &agency).await {
        Ok(x) => x,
        Err(_) => return not_found_page(c),
    };
    // Only the files its own service asks for.
    if !app.services.answers_for(&case, &a).contains_key(&question) {
        return not_found_page(c);
    }
    match crate::services_pages::send_file(&app, &a, &question).await {
        Ok(r) => r,
        Err(_) => not_found_page(c),
    }
}
