//! The citizen's side of one-stop services: the catalogue (`/services`, by life event and
//! by agency, searched with a Chinese word segmenter), a service or life event's page with
//! everything needed to apply, and the application itself: started already filled from the
//! registers (each value with its source, and a way to say it is wrong), one step at a time
//! (each saved as it is left, so the person can stop and come back), a "check your answers"
//! page with the declaration, and afterwards one timeline across every agency involved.

use askama::Template;
use axum::extract::{Multipart, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_identity::Loa;
use civitas_identity::session::SessionInfo;
use civitas_services::form::{Kind, Question};
use civitas_services::{
    Application, ApplicationState, Case, CaseState, FieldError, Offering, ServicesError,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Shared;
use crate::account::{guard_form, taiwan_time};
use crate::auth::{SignedIn, Visitor, require};
use crate::pages::{Chrome, error_page, not_found_page, render};
use crate::services_api::{level, start_for, tell_applicant, today};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/services", get(catalogue))
        .route("/services/{id}", get(offering))
        .route("/services/{id}/apply", post(apply))
        .route("/applications", get(mine))
        .route("/applications/{id}", get(application))
        .route(
            "/applications/{id}/steps/{step}",
            get(step)
                .post(save_step)
                .layer(axum::extract::DefaultBodyLimit::max(
                    civitas_services::uploads::MAX_BYTES * 3,
                )),
        )
        .route("/applications/{id}/check", get(check).post(submit))
        .route("/applications/{id}/withdraw", post(withdraw))
        .route(
            "/applications/{id}/corrections/{question}",
            get(correction).post(correct),
        )
        .route("/applications/{id}/files/{question}", get(file))
}

/// A text in the page's language.
fn pick(c: &Chrome, t: &civitas_services::Text) -> String {
    c.lang.pick(&t.zh, &t.en).to_string()
}

fn zh(c: &Chrome) -> bool {
    c.lang.code() == "zh-TW"
}

/// An agency's name in the page's language.
pub(crate) async fn agency_names(app: &Shared, c: &Chrome) -> Vec<(String, String)> {
    civitas_registry::agencies(&app.db)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            (
                a.code.clone(),
                c.lang.pick(&a.name_zh, &a.name_en).to_string(),
            )
        })
        .collect()
}

pub(crate) fn agency_name(names: &[(String, String)], code: &str) -> String {
    names
        .iter()
        .find(|(c, _)| c == code)
        .map_or_else(|| code.to_string(), |(_, n)| n.clone())
}

/// A service or life event as a list shows it.
struct Listed {
    id: String,
    name: String,
    summary: String,
    agency: String,
}

fn listed(c: &Chrome, o: Offering<'_>, names: &[(String, String)]) -> Listed {
    match o {
        Offering::Service(s) => Listed {
            id: s.id.clone(),
            name: pick(c, &s.name),
            summary: pick(c, &s.summary),
            agency: agency_name(names, &s.agency),
        },
        Offering::LifeEvent(l) => Listed {
            id: l.id.clone(),
            name: pick(c, &l.name),
            summary: pick(c, &l.summary),
            agency: String::new(),
        },
    }
}

#[derive(Template)]
#[template(path = "services.html")]
struct CataloguePage {
    c: Chrome,
    q: String,
    found: Option<Vec<Listed>>,
    life_events: Vec<Listed>,
    /// Each agency's name and services.
    by_agency: Vec<(String, Vec<Listed>)>,
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn catalogue(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(sq): Query<SearchQuery>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let names = agency_names(&app, &c).await;
    let l = app.services.current();
    let q =
        sq.q.unwrap_or_default()
            .trim()
            .chars()
            .take(100)
            .collect::<String>();
    let found = (!q.is_empty()).then(|| {
        l.index
            .search(&q)
            .iter()
            .filter_map(|h| l.catalog.offering(&h.id))
            .map(|o| listed(&c, o, &names))
            .collect()
    });
    let life_events = l
        .catalog
        .life_events
        .iter()
        .map(|e| listed(&c, Offering::LifeEvent(e), &names))
        .collect();
    let by_agency = l
        .catalog
        .agencies()
        .into_iter()
        .map(|a| {
            let list = l
                .catalog
                .services
                .iter()
                .filter(|s| s.agency == a)
                .map(|s| listed(&c, Offering::Service(s), &names))
                .collect();
            (agency_name(&names, a), list)
        })
        .collect();
    render(
        &CataloguePage {
            c,
            q,
            found,
            life_events,
            by_agency,
        },
        StatusCode::OK,
    )
}

/// A service of a life event, as its page lists them.
struct StepView {
    id: String,
    name: String,
    agency: String,
    after: Vec<String>,
    sla_days: u32,
    fee: u32,
}

#[derive(Template)]
#[template(path = "service.html")]
struct OfferingPage {
    c: Chrome,
    id: String,
    name: String,
    summary: String,
    life_event: bool,
    agency: String,
    eligibility: String,
    fee: u32,
    fee_note: String,
    documents: Vec<String>,
    legal_basis: String,
    sla_days: u32,
    loa: &'static str,
    steps: Vec<StepView>,
    information: Vec<(String, String)>,
}

async fn offering(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let names = agency_names(&app, &c).await;
    let l = app.services.current();
    let Some(o) = l.catalog.offering(&id) else {
        return not_found_page(c);
    };
    let steps: Vec<StepView> = l
        .catalog
        .steps_of(o)
        .into_iter()
        .map(|(s, after)| StepView {
            id: s.id.clone(),
            name: pick(&c, &s.name),
            agency: agency_name(&names, &s.agency),
            after: after
                .iter()
                .filter_map(|a| l.catalog.service(a).map(|x| pick(&c, &x.name)))
                .collect(),
            sla_days: s.sla_days,
            fee: s.fee,
        })
        .collect();
    let loa = l.catalog.loa_of(o);
    let page = match o {
        Offering::Service(s) => OfferingPage {
            id: s.id.clone(),
            name: pick(&c, &s.name),
            summary: pick(&c, &s.summary),
            life_event: false,
            agency: agency_name(&names, &s.agency),
            eligibility: pick(&c, &s.eligibility),
            fee: s.fee,
            fee_note: s.fee_note.as_ref().map(|t| pick(&c, t)).unwrap_or_default(),
            documents: s.documents.iter().map(|d| pick(&c, d)).collect(),
            legal_basis: pick(&c, &s.legal_basis),
            sla_days: s.sla_days,
            loa,
            steps,
            information: vec![],
            c,
        },
        Offering::LifeEvent(e) => OfferingPage {
            id: e.id.clone(),
            name: pick(&c, &e.name),
            summary: pick(&c, &e.summary),
            life_event: true,
            agency: String::new(),
            eligibility: String::new(),
            fee: steps.iter().map(|s| s.fee).sum(),
            fee_note: String::new(),
            documents: l
                .catalog
                .steps_of(o)
                .iter()
                .flat_map(|(s, _)| s.documents.iter().map(|d| pick(&c, d)))
                .collect(),
            legal_basis: String::new(),
            sla_days: 0,
            loa,
            steps,
            information: e
                .information
                .iter()
                .map(|i| (pick(&c, &i.title), pick(&c, &i.body)))
                .collect(),
            c,
        },
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// A resident starts an application: at the level the offering needs, filled from the
/// registers.
async fn apply(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let Some(need) = app.services.level_of(&id).map(level) else {
        return not_found_page(c);
    };
    let back: Uri = format!("/services/{id}")
        .parse()
        .unwrap_or_else(|_| uri.clone());
    let s = match guard_form(&v, &headers, &back, need, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match crate::admin::only_if(s.account.person_id.is_some(), c) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match start_for(&app, &s, &id, &Map::new()).await {
        Ok(a) => Redirect::to(&first_step(&app, &a)).into_response(),
        Err(e) => page_error(c, &headers, &e),
    }
}

fn first_step(app: &Shared, a: &Application) -> String {
    match app.services.form(&a.offering) {
        Ok(f) => match f.asked_steps(&a.answers).first() {
            Some(s) => format!("/applications/{}/steps/{}", a.id, s.id),
            None => format!("/applications/{}/check", a.id),
        },
        Err(_) => format!("/applications/{}", a.id),
    }
}

#[derive(Template)]
#[template(path = "services_notice.html")]
struct NoticePage {
    c: Chrome,
    message: String,
}

fn page_error(c: Chrome, headers: &HeaderMap, e: &ServicesError) -> Response {
    match e {
        ServicesError::NotFound(_) => not_found_page(c),
        ServicesError::Forbidden(_) => crate::admin::forbidden_page(c),
        ServicesError::Invalid(m) | ServicesError::Conflict(m) => render(
            &NoticePage {
                c,
                message: m.clone(),
            },
            StatusCode::CONFLICT,
        ),
        _ => error_page(c, headers, e),
    }
}

/// An application in the list of a person's applications.
struct MineRow {
    id: String,
    reference: String,
    name: String,
    state: String,
    started: String,
    action_needed: bool,
}

#[derive(Template)]
#[template(path = "my_applications.html")]
struct MinePage {
    c: Chrome,
    rows: Vec<MineRow>,
}

/// What a person reads as the whole application's state.
fn overall(c: &Chrome, a: &Application, cases: &[Case]) -> (String, bool) {
    let z = zh(c);
    let needs = cases
        .iter()
        .any(|x| x.state == CaseState::MoreInformationNeeded);
    let s = match a.state {
        ApplicationState::Draft => c.lang.pick("尚未送出", "Not sent yet").to_string(),
        ApplicationState::Withdrawn => CaseState::Withdrawn.label(z).to_string(),
        ApplicationState::Submitted if needs => {
            CaseState::MoreInformationNeeded.label(z).to_string()
        }
        ApplicationState::Submitted if cases.iter().all(|x| x.state.is_final()) => c
            .lang
            .pick("已全部處理完畢", "Every step decided")
            .to_string(),
        ApplicationState::Submitted => c.lang.pick("處理中", "In progress").to_string(),
    };
    (s, needs || a.state == ApplicationState::Draft)
}

fn resident_chrome(s: &SessionInfo, c: Chrome) -> Result<Chrome, Box<Response>> {
    crate::admin::only_if(s.account.person_id.is_some(), c)
}

async fn mine(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match resident_chrome(&s, Chrome::for_visitor(&v, &headers, &uri, "services")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let list = match app.services.applications_of(&s.account.id).await {
        Ok(l) => l,
        Err(e) => return error_page(c, &headers, &e),
    };
    let mut rows = Vec::new();
    for a in &list {
        let cases = app.services.cases_of(&a.id).await.unwrap_or_default();
        let (state, action_needed) = overall(&c, a, &cases);
        rows.push(MineRow {
            id: a.id.clone(),
            reference: a.reference.clone(),
            name: pick(&c, &app.services.offering_name(&a.offering)),
            state,
            started: taiwan_time(a.created_ms),
            action_needed,
        });
    }
    render(&MinePage { c, rows }, StatusCode::OK)
}

/// A case as the applicant's page shows it.
struct CaseView {
    service: String,
    agency: String,
    state: String,
    state_code: &'static str,
    due: String,
    reason: String,
}

/// A line of the timeline.
struct Line {
    when: String,
    service: String,
    agency: String,
    state: String,
    note: String,
}

#[derive(Template)]
#[template(path = "application.html")]
struct ApplicationPage {
    c: Chrome,
    a: Application,
    name: String,
    state: String,
    draft: bool,
    needs_more: bool,
    can_withdraw: bool,
    continue_href: String,
    cases: Vec<CaseView>,
    lines: Vec<Line>,
    corrections: Vec<(String, String, String)>,
}

async fn application(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let a = match app.services.application_of(&id, &s.account.id).await {
        Ok(a) => a,
        Err(e) => return page_error(c, &headers, &e),
    };
    let z = zh(&c);
    let found = async {
        Ok::<_, ServicesError>((
            app.services.cases_of(&id).await?,
            app.services.timeline(&id).await?,
            app.services.corrections(&id).await?,
        ))
    };
    let (cases, timeline, corrections) = match found.await {
        Ok(x) => x,
        Err(e) => return error_page(c, &headers, &e),
    };
    let names = agency_names(&app, &c).await;
    let l = app.services.current();
    let service_name = |sid: &str| {
        l.catalog
            .service(sid)
            .map(|s| pick(&c, &s.name))
            .unwrap_or_else(|| sid.to_string())
    };
    let (state, _) = overall(&c, &a, &cases);
    let needs_more = cases
        .iter()
        .any(|x| x.state == CaseState::MoreInformationNeeded);
    let page = ApplicationPage {
        name: pick(&c, &app.services.offering_name(&a.offering)),
        state,
        draft: a.state == ApplicationState::Draft,
        needs_more,
        can_withdraw: a.state == ApplicationState::Draft
            || (a.state == ApplicationState::Submitted
                && cases.iter().any(|x| !x.state.is_final())),
        continue_href: first_step(&app, &a),
        cases: cases
            .iter()
            .map(|x| CaseView {
                service: service_name(&x.service_id),
                agency: agency_name(&names, &x.agency),
                state: x.state.label(z).to_string(),
                state_code: x.state.as_str(),
                due: x
                    .due_ms
                    .filter(|_| x.state.is_open())
                    .map(taiwan_time)
                    .unwrap_or_default(),
                reason: x.reason.clone().unwrap_or_default(),
            })
            .collect(),
        lines: timeline
            .iter()
            .map(|t| Line {
                when: taiwan_time(t.at_ms),
                service: service_name(&t.service_id),
                agency: agency_name(&names, &t.agency),
                state: t.to.label(z).to_string(),
                note: t.note.clone().unwrap_or_default(),
            })
            .collect(),
        corrections: corrections
            .into_iter()
            .map(|(item, _, note, at)| {
                let title = civitas_registry::attributes::attribute(&item)
                    .map_or(item.clone(), |x| {
                        c.lang.pick(x.title_zh, x.title_en).to_string()
                    });
                (title, note, taiwan_time(at))
            })
            .collect(),
        a,
        c,
    };
    render(&page, StatusCode::OK)
}

/// A question as the step page shows it.
pub(crate) struct FieldView {
    name: String,
    html_id: String,
    kind: &'static str,
    label: String,
    hint: String,
    required: bool,
    value: String,
    options: Vec<(String, String, bool)>,
    source: String,
    correction_href: String,
    /// When the question is needed, for one that depends on another of the same page.
    condition: String,
    /// Whether it cannot be changed now (another agency has the answer).
    disabled: bool,
    file_name: String,
    error: String,
    rows: Vec<Vec<FieldView>>,
}

impl FieldView {
    fn has_error(&self) -> bool {
        !self.error.is_empty()
    }

    /// The ids of the texts that describe the input: its hint, its error.
    fn described_by(&self) -> String {
        let mut ids = Vec::new();
        if !self.hint.is_empty() || !self.condition.is_empty() {
            ids.push(format!("{}-hint", self.html_id));
        }
        if !self.source.is_empty() {
            ids.push(format!("{}-source", self.html_id));
        }
        if self.has_error() {
            ids.push(format!("{}-error", self.html_id));
        }
        ids.join(" ")
    }
}

fn html_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Date => "date",
        Kind::Number => "number",
        Kind::Select => "select",
        Kind::File => "file",
        Kind::Group => "group",
        Kind::Text => "textarea",
        _ => "text",
    }
}

fn field_view(
    c: &Chrome,
    a: &Application,
    q: &Question,
    name: &str,
    value: Option<&Value>,
    errors: &[FieldError],
) -> FieldView {
    let text = match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let error = errors
        .iter()
        .find(|e| e.question == name)
        .map(|e| pick(c, &e.message))
        .unwrap_or_default();
    let (source, correction_href) = match a.register_source(name) {
        Some(src) => (
            src.source_name.clone(),
            format!("/applications/{}/corrections/{}", a.id, name),
        ),
        _ => (String::new(), String::new()),
    };
    let rows = if q.kind == Kind::Group {
        let items = value.and_then(Value::as_array).cloned().unwrap_or_default();
        let shown = (items.len() + 1).min(q.max_items.unwrap_or(10));
        (0..shown)
            .map(|i| {
                q.fields
                    .iter()
                    .map(|f| {
                        let n = format!("{name}[{i}].{}", f.id);
                        field_view(c, a, f, &n, items.get(i).and_then(|x| x.get(&f.id)), errors)
                    })
                    .collect()
            })
            .collect()
    } else {
        vec![]
    };
    FieldView {
        name: name.to_string(),
        html_id: html_id(name),
        kind: kind_name(q.kind),
        label: pick(c, &q.label),
        hint: q.hint.as_ref().map(|h| pick(c, h)).unwrap_or_default(),
        required: q.required,
        options: a
            .options_of(q)
            .into_iter()
            .map(|o| {
                let selected = o.value == text;
                (o.value, pick(c, &o.label), selected)
            })
            .collect(),
        file_name: value
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        value: text,
        source,
        correction_href,
        condition: String::new(),
        disabled: false,
        error,
        rows,
    }
}

#[derive(Template)]
#[template(path = "application_step.html")]
struct StepPage {
    c: Chrome,
    a: Application,
    name: String,
    step_id: String,
    title: String,
    number: usize,
    total: usize,
    back: String,
    fields: Vec<FieldView>,
    errors: Vec<(String, String)>,
}

/// The application of the signed-in resident, and its form, for a page that changes it.
async fn editable(app: &Shared, s: &SessionInfo, id: &str) -> Result<Application, ServicesError> {
    let a = app.services.application_of(id, &s.account.id).await?;
    let cases = app.services.cases_of(id).await?;
    let open = a.state == ApplicationState::Draft
        || cases
            .iter()
            .any(|c| c.state == CaseState::MoreInformationNeeded);
    if !open {
        return Err(ServicesError::Conflict(
            "This application has been sent; its answers can be changed only when an agency asks for more.".into(),
        ));
    }
    Ok(a)
}

async fn step_page(
    app: &Shared,
    c: Chrome,
    a: Application,
    step_id: &str,
    errors: &[FieldError],
) -> Response {
    let form = match app.services.form(&a.offering) {
        Ok(f) => f,
        Err(_) => return not_found_page(c),
    };
    // When an agency asked for more, only its questions can change.
    let allowed = match a.state {
        ApplicationState::Draft => None,
        _ => app.services.editable_questions(&a).await.ok().flatten(),
    };
    let asked = form.asked_steps(&a.answers);
    let Some(pos) = asked.iter().position(|s| s.id == step_id) else {
        return not_found_page(c);
    };
    let st = asked[pos];
    // A question that depends on another of the same page is shown (the page has no script
    // to reveal it), saying when it is needed; one that depends on an earlier page only
    // when that answer asks for it.
    let fields: Vec<FieldView> = st
        .questions
        .iter()
        .filter_map(|q| {
            let on_this_page = q.show_if.as_ref().and_then(|cond| {
                st.questions
                    .iter()
                    .find(|x| x.id == cond.question)
                    .map(|x| (cond, x))
            });
            let mut f = match on_this_page {
                Some(_) => field_view(&c, &a, q, &q.id, a.answers.get(&q.id), errors),
                None if civitas_services::form::holds(&q.show_if, &a.answers) => {
                    field_view(&c, &a, q, &q.id, a.answers.get(&q.id), errors)
                }
                None => return None,
            };
            if let Some((cond, on)) = on_this_page {
                let answers: Vec<String> = a
                    .options_of(on)
                    .into_iter()
                    .filter(|o| cond.any_of.contains(&o.value))
                    .map(|o| pick(&c, &o.label))
                    .collect();
                f.condition = format!(
                    "{}{}{}",
                    c.lang.pick("只在「", "Only if you answered \""),
                    answers.join(c.lang.pick("」或「", "\" or \"")),
                    c.lang.pick("」時填寫", "\" above")
                );
                f.required = false;
            }
            Some(f)
        })
        .collect();
    let mut fields = fields;
    if let Some(only) = &allowed {
        for f in fields.iter_mut().filter(|f| !only.contains(&f.name)) {
            f.disabled = true;
        }
    }
    let back = match pos {
        0 => format!("/applications/{}", a.id),
        n => format!("/applications/{}/steps/{}", a.id, asked[n - 1].id),
    };
    let page = StepPage {
        name: pick(&c, &app.services.offering_name(&a.offering)),
        step_id: st.id.clone(),
        title: pick(&c, &st.title),
        number: pos + 1,
        total: asked.len(),
        back,
        errors: errors
            .iter()
            .map(|e| (html_id(&e.question), pick(&c, &e.message)))
            .collect(),
        fields,
        a,
        c,
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(&page, status)
}

async fn step(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path((id, step_id)): Path<(String, String)>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    match editable(&app, &s, &id).await {
        Ok(a) => step_page(&app, c, a, &step_id, &[]).await,
        Err(e) => page_error(c, &headers, &e),
    }
}

/// A file sent with a step: its field, the name it had, its type and its bytes.
type SentFile = (String, String, String, Vec<u8>);

/// Reads a step's form: text fields by name, groups' `q[i].f` into lists, and the files
/// sent (stored only once the form is known to be genuine, and only for the step's file
/// questions).
async fn read_step(
    mut mp: Multipart,
) -> Result<(String, String, Map<String, Value>, Vec<SentFile>), ServicesError> {
    let (mut csrf, mut go) = (String::new(), String::new());
    let mut out = Map::new();
    let mut files = Vec::new();
    let mut groups: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<usize, Map<String, Value>>,
    > = Default::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        ServicesError::Invalid(format!("The form could not be read: {e}"))
    };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let kind = field.content_type().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(bad)?;
        if let Some(f) = file_name {
            files.push((name, f, kind, bytes.to_vec()));
            continue;
        }
        let value = Value::String(String::from_utf8_lossy(&bytes).into_owned());
        match name.as_str() {
            "csrf" => csrf = value.as_str().unwrap_or_default().to_string(),
            "go" => go = value.as_str().unwrap_or_default().to_string(),
            _ => {
                if let Some((group, rest)) = name.split_once('[')
                    && let Some((i, field)) = rest.split_once("].")
                    && let Ok(i) = i.parse::<usize>()
                    && i < 50
                {
                    groups
                        .entry(group.to_string())
                        .or_default()
                        .entry(i)
                        .or_default()
                        .insert(field.to_string(), value);
                } else {
                    out.insert(name, value);
                }
            }
        }
    }
    for (g, rows) in groups {
        let list: Vec<Value> = rows
            .into_values()
            .filter(|m| {
                m.values()
                    .any(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()))
            })
            .map(Value::Object)
            .collect();
        out.insert(g, Value::Array(list));
    }
    Ok((csrf, go, out, files))
}

/// Stores the files sent for the step's file questions (an empty file field keeps the file
/// already given); a file that cannot be taken is an error on its question.
async fn store_files(
    app: &Shared,
    a: &Application,
    step_id: &str,
    files: Vec<SentFile>,
    given: &mut Map<String, Value>,
) -> Result<Vec<FieldError>, ServicesError> {
    let form = app.services.form(&a.offering)?;
    let Some(step) = form.step(step_id) else {
        return Ok(vec![]);
    };
    let mut errors = Vec::new();
    for q in step.questions.iter().filter(|q| q.kind == Kind::File) {
        let sent = files
            .iter()
            .find(|(name, f, _, bytes)| *name == q.id && !(f.is_empty() && bytes.is_empty()));
        let value = match sent {
            None => a.answers.get(&q.id).cloned(),
            Some((_, f, kind, bytes)) => {
                match app.services.put_upload(&a.id, f, kind, bytes.clone()).await {
                    Ok(v) => Some(v),
                    Err(ServicesError::Invalid(m)) => {
                        errors.push(FieldError {
                            question: q.id.clone(),
                            message: civitas_services::Text {
                                zh: upload_error_zh(&m).to_string(),
                                en: m,
                            },
                        });
                        a.answers.get(&q.id).cloned()
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if let Some(v) = value {
            given.insert(q.id.clone(), v);
        }
    }
    Ok(errors)
}

fn upload_error_zh(en: &str) -> &'static str {
    if en.contains("10 MB") {
        "檔案不可超過 10 MB"
    } else if en.contains("empty") {
        "檔案是空的"
    } else {
        "檔案須為 PDF、JPEG、PNG 或 HEIC"
    }
}

async fn save_step(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((id, step_id)): Path<(String, String)>,
    mp: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let Some(s) = v.session.clone() else {
        return require(&v, &uri, Loa::Low)
            .map_or_else(IntoResponse::into_response, |_| not_found_page(c));
    };
    let a = match editable(&app, &s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(c, &headers, &e),
    };
    // A step's form is sent as multipart (it may carry files); anything else is no form of
    // ours.
    let Ok(mp) = mp else {
        return crate::account::forbidden_form(&headers);
    };
    let (csrf, go, mut given, files) = match read_step(mp).await {
        Ok(x) => x,
        Err(ServicesError::Invalid(m)) => {
            let e = FieldError {
                question: "form".into(),
                message: civitas_services::Text {
                    zh: m.clone(),
                    en: m,
                },
            };
            return step_page(&app, c, a, &step_id, &[e]).await;
        }
        Err(e) => return page_error(c, &headers, &e),
    };
    if let Err(r) = guard_form(&v, &headers, &uri, Loa::Low, &csrf) {
        return *r;
    }
    let file_errors = match store_files(&app, &a, &step_id, files, &mut given).await {
        Ok(e) => e,
        Err(e) => return page_error(c, &headers, &e),
    };
    let (a, mut errors) = match app
        .services
        .save_step(&id, &s.account.id, &step_id, given, &today())
        .await
    {
        Ok(x) => x,
        Err(e) => return page_error(c, &headers, &e),
    };
    // A file refused stands in for the "upload a file" error on its question.
    errors.retain(|e| !file_errors.iter().any(|f| f.question == e.question));
    errors.extend(file_errors);
    if go == "later" {
        return Redirect::to("/applications").into_response();
    }
    if !errors.is_empty() {
        return step_page(&app, c, a, &step_id, &errors).await;
    }
    let next = match app.services.form(&a.offering) {
        Ok(f) => {
            let asked = f.asked_steps(&a.answers);
            let pos = asked.iter().position(|x| x.id == step_id);
            match pos.and_then(|p| asked.get(p + 1)) {
                Some(n) => format!("/applications/{}/steps/{}", a.id, n.id),
                None => format!("/applications/{}/check", a.id),
            }
        }
        Err(e) => return page_error(c, &headers, &e),
    };
    Redirect::to(&next).into_response()
}

/// One answer on the check page.
struct AnswerRow {
    label: String,
    answer: String,
    source: String,
    error: String,
    html_id: String,
}

#[derive(Template)]
#[template(path = "application_check.html")]
struct CheckPage {
    c: Chrome,
    a: Application,
    name: String,
    resubmit: bool,
    steps: Vec<(String, String, Vec<AnswerRow>)>,
    declaration: String,
    errors: Vec<(String, String, String)>,
    /// The declaration was not ticked.
    declare_missing: bool,
}

pub(crate) fn answer_text(c: &Chrome, a: &Application, q: &Question) -> String {
    match a.answers.get(&q.id) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|it| {
                q.fields
                    .iter()
                    .map(|f| {
                        it.get(&f.id)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    })
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ if q.kind == Kind::Select => {
            let v = a.answer_text(&q.id);
            a.options_of(q)
                .into_iter()
                .find(|o| o.value == v)
                .map_or(v, |o| pick(c, &o.label))
        }
        _ => a.answer_text(&q.id),
    }
}

async fn check_page(
    app: &Shared,
    c: Chrome,
    a: Application,
    errors: &[FieldError],
    declare_missing: bool,
) -> Response {
    let form = match app.services.form(&a.offering) {
        Ok(f) => f,
        Err(_) => return not_found_page(c),
    };
    let cases = app.services.cases_of(&a.id).await.unwrap_or_default();
    let resubmit = cases
        .iter()
        .any(|x| x.state == CaseState::MoreInformationNeeded);
    let mut all_errors = Vec::new();
    let steps = form
        .asked_steps(&a.answers)
        .into_iter()
        .map(|st| {
            let href = format!("/applications/{}/steps/{}", a.id, st.id);
            let rows = st
                .questions
                .iter()
                .filter(|q| civitas_services::form::holds(&q.show_if, &a.answers))
                .map(|q| {
                    let error = errors
                        .iter()
                        .find(|e| {
                            e.question == q.id || e.question.starts_with(&format!("{}[", q.id))
                        })
                        .map(|e| pick(&c, &e.message))
                        .unwrap_or_default();
                    if !error.is_empty() {
                        all_errors.push((html_id(&q.id), error.clone(), href.clone()));
                    }
                    AnswerRow {
                        label: pick(&c, &q.label),
                        answer: answer_text(&c, &a, q),
                        source: a
                            .register_source(&q.id)
                            .map(|s| s.source_name)
                            .unwrap_or_default(),
                        error,
                        html_id: html_id(&q.id),
                    }
                })
                .collect();
            (pick(&c, &st.title), href, rows)
        })
        .collect();
    if declare_missing {
        all_errors.push((
            "declare".into(),
            c.lang
                .pick(
                    "請勾選聲明後再送出",
                    "Tick the declaration to send the application",
                )
                .into(),
            String::new(),
        ));
    }
    let declaration = {
        let l = app.services.current();
        l.catalog
            .offering(&a.offering)
            .map(|o| pick(&c, o.declaration()))
            .unwrap_or_default()
    };
    let status = if all_errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = CheckPage {
        name: pick(&c, &app.services.offering_name(&a.offering)),
        resubmit,
        steps,
        declaration,
        errors: all_errors,
        declare_missing,
        a,
        c,
    };
    render(&page, status)
}

async fn check(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    match editable(&app, &s, &id).await {
        Ok(a) => check_page(&app, c, a, &[], false).await,
        Err(e) => page_error(c, &headers, &e),
    }
}

#[derive(Deserialize)]
struct SubmitForm {
    #[serde(default)]
    csrf: String,
    declare: Option<String>,
}

async fn submit(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<SubmitForm>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let need = match app.services.application(&id).await {
        Ok(Some(a)) => level(app.services.level_of(&a.offering).unwrap_or("low")),
        _ => Loa::Low,
    };
    let s = match guard_form(&v, &headers, &uri, need, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let a = match editable(&app, &s, &id).await {
        Ok(a) => a,
        Err(e) => return page_error(c, &headers, &e),
    };
    let today = today();
    if f.declare.is_none() {
        let errors = app
            .services
            .check(&a, &today)
            .map(|(_, e)| e)
            .unwrap_or_default();
        return check_page(&app, c, a, &errors, true).await;
    }
    let result = if a.state == ApplicationState::Draft {
        app.services
            .submit(&id, &s.account.id, &today)
            .await
            .map(|r| r.map(|(_, cases)| cases))
    } else {
        app.services.resubmit(&id, &s.account.id, &today).await
    };
    match result {
        Ok(Ok(changed)) => {
            tell_applicant(&app, &a, &changed);
            Redirect::to(&format!("/applications/{id}?sent")).into_response()
        }
        Ok(Err(errors)) => check_page(&app, c, a, &errors, false).await,
        Err(e) => page_error(c, &headers, &e),
    }
}

/// The page's chrome, the session of a genuine form, and the person's own application `id`
/// (anyone else's is not found).
async fn own_by_form(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    uri: &Uri,
    csrf: &str,
    id: &str,
) -> Result<(Chrome, SessionInfo, Application), Box<Response>> {
    let s = guard_form(v, headers, uri, Loa::Low, csrf)?;
    match app.services.application_of(id, &s.account.id).await {
        Ok(a) => Ok((Chrome::for_visitor(v, headers, uri, "services"), s, a)),
        Err(e) => Err(Box::new(page_error(
            Chrome::for_visitor(v, headers, uri, "services"),
            headers,
            &e,
        ))),
    }
}

async fn withdraw(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    let (c, s, a) = match own_by_form(&app, &v, &headers, &uri, &f.csrf, &id).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app.services.withdraw(&id, &s.account.id).await {
        Ok(changed) => {
            tell_applicant(&app, &a, &changed);
            Redirect::to(&format!("/applications/{id}")).into_response()
        }
        Err(e) => page_error(c, &headers, &e),
    }
}

#[derive(Template)]
#[template(path = "application_correction.html")]
struct CorrectionPage {
    c: Chrome,
    a: Application,
    question: String,
    label: String,
    value: String,
    source: String,
    note: String,
    error: String,
    done: bool,
}

async fn correction_page(
    app: &Shared,
    c: Chrome,
    a: Application,
    question: &str,
    note: String,
    error: String,
    done: bool,
) -> Response {
    let Some(src) = a.source_of(question) else {
        return not_found_page(c);
    };
    let label = app
        .services
        .form(&a.offering)
        .ok()
        .and_then(|f| {
            f.questions()
                .find(|q| q.id == question)
                .map(|q| pick(&c, &q.label))
        })
        .unwrap_or_default();
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = CorrectionPage {
        question: question.to_string(),
        label,
        value: src.value,
        source: src.source_name,
        note,
        error,
        done,
        a,
        c,
    };
    render(&page, status)
}

async fn correction(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path((id, question)): Path<(String, String)>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    match app.services.application_of(&id, &s.account.id).await {
        Ok(a) => {
            correction_page(
                &app,
                c,
                a,
                &question,
                String::new(),
                String::new(),
                uri.query() == Some("sent"),
            )
            .await
        }
        Err(e) => page_error(c, &headers, &e),
    }
}

#[derive(Deserialize)]
struct CorrectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

async fn correct(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((id, question)): Path<(String, String)>,
    axum::Form(f): axum::Form<CorrectForm>,
) -> Response {
    let (c, s, a) = match own_by_form(&app, &v, &headers, &uri, &f.csrf, &id).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app
        .services
        .request_correction(&id, &s.account.id, &question, &f.note)
        .await
    {
        Ok(_) => {
            Redirect::to(&format!("/applications/{id}/corrections/{question}?sent")).into_response()
        }
        Err(ServicesError::Invalid(_)) => {
            let msg = c
                .lang
                .pick(
                    "請說明哪裡不正確（1,000 字以內）",
                    "Say what is wrong (at most 1,000 characters)",
                )
                .to_string();
            correction_page(&app, c, a, &question, f.note, msg, false).await
        }
        Err(e) => page_error(c, &headers, &e),
    }
}

/// Sends a stored file, as a download (never shown inline: it is what a person uploaded).
pub(crate) async fn send_file(
    app: &Shared,
    a: &Application,
    question: &str,
) -> Result<Response, ServicesError> {
    let v = a
        .answers
        .get(question)
        .ok_or_else(|| ServicesError::NotFound("no such file".into()))?;
    let key = v.get("key").and_then(Value::as_str).unwrap_or_default();
    let name = v.get("name").and_then(Value::as_str).unwrap_or("file");
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream");
    let bytes = app.services.get_upload(&a.id, key).await?;
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
                    crate::pages::percent_encode(name)
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    )
        .into_response())
}

async fn file(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path((id, question)): Path<(String, String)>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "services");
    let a = match app.services.application_of(&id, &s.account.id).await {
        Ok(a) => a,
        Err(e) => return page_error(c, &headers, &e),
    };
    match send_file(&app, &a, &question).await {
        Ok(r) => r,
        Err(e) => page_error(c, &headers, &e),
    }
}
