//! The case workflow. Submitting an application opens one case per service of its offering,
//! at the service's agency; a case waits until every step it depends on is approved, and is
//! closed unheard when one of them is refused or withdrawn. A case's states:
//!
//! ```text
//! waiting ─▶ submitted ─▶ in_review ─▶ approved ─▶ closed
//!               │  ▲          │    └──▶ rejected ─▶ closed
//!               │  └── more_information_needed ◀─┘
//!               └──▶ approved | rejected
//! (any open state) ─▶ withdrawn   (by the applicant)
//! ```
//!
//! Each case sits in its agency's queue; a caseworker takes it (or a supervisor assigns it).
//! Its due date is its service level from when it opens (again from when the applicant
//! answers a request for more information); a reminder goes out a day before, and a missed
//! date escalates it to the agency's supervisors. Every change is a row of the case's
//! history and a `services.case_changed` ledger event under the applicant's tag (a decision's
//! or request's reason is its private payload: its hash is in the log, its text here).

use serde::Serialize;
use serde_json::{Map, Value};

use civitas_ledger::{Event, SubjectTag};
use civitas_store::sqlx::{self, Row, any::AnyRow};

use crate::applications::{Application, ApplicationState, answers_digest};
use crate::{Services, ServicesError};

/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// A case's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// Waiting for earlier steps.
    Waiting,
    /// Open, not yet looked at.
    Submitted,
    /// Being looked at.
    InReview,
    /// The agency asked the applicant for more.
    MoreInformationNeeded,
    /// Approved.
    Approved,
    /// Refused.
    Rejected,
    /// Withdrawn by the applicant.
    Withdrawn,
    /// Done with (after a decision, or because an earlier step was refused).
    Closed,
}

impl CaseState {
    /// Every state.
    pub const ALL: [CaseState; 8] = [
        CaseState::Waiting,
        CaseState::Submitted,
        CaseState::InReview,
        CaseState::MoreInformationNeeded,
        CaseState::Approved,
        CaseState::Rejected,
        CaseState::Withdrawn,
        CaseState::Closed,
    ];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Waiting => "waiting",
            CaseState::Submitted => "submitted",
            CaseState::InReview => "in_review",
            CaseState::MoreInformationNeeded => "more_information_needed",
            CaseState::Approved => "approved",
            CaseState::Rejected => "rejected",
            CaseState::Withdrawn => "withdrawn",
            CaseState::Closed => "closed",
        }
    }

    /// A state by its stored name.
    pub fn parse(s: &str) -> Option<CaseState> {
        CaseState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Its name for people.
    pub fn label(self, zh: bool) -> &'static str {
        let (z, e) = match self {
            CaseState::Waiting => ("等待前一步驟", "Waiting for an earlier step"),
            CaseState::Submitted => ("已送出", "Submitted"),
            CaseState::InReview => ("審查中", "In review"),
            CaseState::MoreInformationNeeded => ("需要補件", "More information needed"),
            CaseState::Approved => ("核准", "Approved"),
            CaseState::Rejected => ("不予核准", "Rejected"),
            CaseState::Withdrawn => ("已撤回", "Withdrawn"),
            CaseState::Closed => ("已結案", "Closed"),
        };
        if zh { z } else { e }
    }

    /// Whether the agency still has work to do (its due date runs).
    pub fn is_open(self) -> bool {
        matches!(self, CaseState::Submitted | CaseState::InReview)
    }

    /// Whether nothing more can happen to it but closing.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CaseState::Approved | CaseState::Rejected | CaseState::Withdrawn | CaseState::Closed
        )
    }
}

/// A staff member's role at their agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffRole {
    /// Works cases.
    Caseworker,
    /// Works cases, assigns them, is told of missed dates.
    Supervisor,
    /// Runs the agency's staff; a supervisor's powers on cases.
    AgencyAdmin,
}

/// Who acts on a case.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An agency's staff member.
    Staff {
        /// Their account.
        account_id: String,
        /// Their name (the case's history keeps it for the agency).
        name: String,
        /// Their agency's code.
        agency: String,
        /// Their role.
        role: StaffRole,
    },
    /// The applicant.
    Applicant {
        /// Their account.
        account_id: String,
    },
    /// The platform itself (deadlines, cascades).
    System,
}

impl Actor {
    fn ledger_name(&self) -> String {
        match self {
            Actor::Staff { account_id, .. } | Actor::Applicant { account_id } => {
                format!("account:{account_id}")
            }
            Actor::System => "system".into(),
        }
    }

    fn display(&self) -> String {
        match self {
            Actor::Staff { name, .. } => name.clone(),
            Actor::Applicant { .. } => "applicant".into(),
            Actor::System => "system".into(),
        }
    }
}

/// What a staff member does to a case.
#[derive(Debug, Clone)]
pub enum Action {
    /// Takes it from the queue (assigns it to themselves).
    Take,
    /// Assigns it to a colleague (supervisors).
    Assign {
        /// The colleague's account.
        account_id: String,
        /// Their name.
        name: String,
    },
    /// Starts the review.
    StartReview,
    /// Asks the applicant for more (the request is shown to them).
    RequestInformation {
        /// What is needed.
        note: String,
    },
    /// Approves it.
    Approve {
        /// Why (may be short).
        reason: String,
    },
    /// Refuses it.
    Reject {
        /// Why (required: the applicant is told).
        reason: String,
    },
    /// Closes a decided case.
    Close,
}

impl Action {
    /// The action named on a form or in the API, with its text.
    pub fn parse(name: &str, text: &str) -> Option<Action> {
        let text = text.trim().to_string();
        Some(match name {
            "take" => Action::Take,
            "start_review" => Action::StartReview,
            "request_information" => Action::RequestInformation { note: text },
            "approve" => Action::Approve { reason: text },
            "reject" => Action::Reject { reason: text },
            "close" => Action::Close,
            _ => return None,
        })
    }
}

impl Case {
    /// What became of it: approved (`Some(true)`), not approved (`Some(false)`: rejected,
    /// withdrawn, or closed without approval), or not decided yet (`None`). Closing a
    /// decided case keeps its decision.
    pub fn outcome(&self) -> Option<bool> {
        match self.state {
            CaseState::Approved => Some(true),
            CaseState::Rejected | CaseState::Withdrawn => Some(false),
            CaseState::Closed => Some(self.decision.as_deref() == Some("approved")),
            _ => None,
        }
    }
}

/// A case.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Its id.
    pub id: String,
    /// Its application.
    pub application_id: String,
    /// Its service.
    pub service_id: String,
    /// The agency that decides it.
    pub agency: String,
    /// Its state.
    pub state: CaseState,
    /// The cases it waits for.
    pub depends_on: Vec<String>,
    /// Who works it.
    pub assignee: Option<String>,
    /// Their name.
    pub assignee_name: Option<String>,
    /// When it opened (ms).
    pub opened_ms: Option<i64>,
    /// When it is due (ms).
    pub due_ms: Option<i64>,
    /// When the reminder went out.
    pub reminded_ms: Option<i64>,
    /// When it was escalated.
    pub escalated_ms: Option<i64>,
    /// When it last changed.
    pub updated_ms: i64,
    /// The decision's reason, or what more is needed.
    pub reason: Option<String>,
    /// The decision (`approved`, `rejected`), kept when the case is closed afterwards.
    pub decision: Option<String>,
    /// Its version (one per change).
    pub version: i64,
}

const COLUMNS: &str = "id, application_id, service_id, agency, state, depends_on, assignee, assignee_name, opened_ms, due_ms, reminded_ms, escalated_ms, updated_ms, reason, decision, version";

fn from_row(r: &AnyRow) -> Result<Case, ServicesError> {
    let state: String = r.try_get("state")?;
    let deps: String = r.try_get("depends_on")?;
    Ok(Case {
        id: r.try_get("id")?,
        application_id: r.try_get("application_id")?,
        service_id: r.try_get("service_id")?,
        agency: r.try_get("agency")?,
        state: CaseState::parse(&state)
            .ok_or_else(|| ServicesError::Invalid(format!("unknown case state {state}")))?,
        depends_on: serde_json::from_str(&deps)?,
        assignee: r.try_get("assignee")?,
        assignee_name: r.try_get("assignee_name")?,
        opened_ms: r.try_get("opened_ms")?,
        due_ms: r.try_get("due_ms")?,
        reminded_ms: r.try_get("reminded_ms")?,
        escalated_ms: r.try_get("escalated_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        reason: r.try_get("reason")?,
        decision: r.try_get("decision")?,
        version: r.try_get("version")?,
    })
}

/// One line of an application's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    /// When (ms).
    pub at_ms: i64,
    /// The case.
    pub case_id: String,
    /// Its service.
    pub service_id: String,
    /// Its agency.
    pub agency: String,
    /// The state before (`none` when it opened).
    pub from: String,
    /// The state after.
    pub to: CaseState,
    /// A reason or request, when there is one.
    pub note: Option<String>,
    /// Who (a staff member's name for the agency; `applicant`; `system`).
    #[serde(skip)]
    pub actor_name: String,
}

/// Which cases a queue shows.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// Only this state (else every state in which the agency has work: submitted, in
    /// review, waiting for the applicant).
    pub state: Option<CaseState>,
    /// Only this service.
    pub service: Option<String>,
    /// Only those assigned to this account.
    pub assignee: Option<String>,
    /// Only those nobody has taken.
    pub unassigned: bool,
    /// Only those past their due date at this time (ms).
    pub overdue_at: Option<i64>,
    /// Only escalated ones.
    pub escalated: bool,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u32>,
    /// Skipping this many.
    pub offset: u32,
}

/// A case in a queue, with what the queue shows of its application.
#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    /// The case.
    pub case: Case,
    /// The application's reference.
    pub reference: String,
    /// The applicant's name.
    pub applicant_name: String,
}

/// A case whose date came near or passed, for the people to tell.
#[derive(Debug, Clone)]
pub struct Deadline {
    /// The case.
    pub case: Case,
    /// Whether it is past due (escalated) rather than due within a day (reminded).
    pub escalated: bool,
}

/// What an action changed: the case acted on, then any case it opened or closed.
pub type Changed = Vec<Case>;

fn transition(from: CaseState, action: &Action) -> Result<CaseState, ServicesError> {
    use CaseState::*;
    let to = match (from, action) {
        (Submitted | InReview | MoreInformationNeeded, Action::Take | Action::Assign { .. }) => {
            from
        }
        (Submitted, Action::StartReview) => InReview,
        (Submitted | InReview, Action::RequestInformation { .. }) => MoreInformationNeeded,
        (Submitted | InReview, Action::Approve { .. }) => Approved,
        (Submitted | InReview, Action::Reject { .. }) => Rejected,
        (Approved | Rejected, Action::Close) => Closed,
        _ => {
            return Err(ServicesError::Conflict(format!(
                "A case that is {} cannot be changed that way.",
                from.label(false).to_lowercase()
            )));
        }
    };
    Ok(to)
}

impl Services {
    /// A case by id.
    pub async fn case(&self, id: &str) -> Result<Option<Case>, ServicesError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM services_cases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A case of this agency's, with its application (another agency's is not found).
    pub async fn case_for_agency(
        &self,
        id: &str,
        agency: &str,
    ) -> Result<(Case, Application), ServicesError> {
        let case = match self.case(id).await? {
            Some(c) if c.agency == agency => c,
            _ => return Err(ServicesError::NotFound("no such case".into())),
        };
        let app = self
            .application(&case.application_id)
            .await?
            .ok_or_else(|| ServicesError::NotFound("no such case".into()))?;
        Ok((case, app))
    }

    /// The cases of an application, in the offering's order.
    pub async fn cases_of(&self, application_id: &str) -> Result<Vec<Case>, ServicesError> {
        let columns = COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns}, a.offering FROM services_cases c JOIN services_applications a ON a.id = c.application_id WHERE c.application_id = $1"
        ))
        .bind(application_id)
        .fetch_all(self.db.pool())
        .await?;
        let mut cases: Vec<Case> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        let offering: Option<String> = match rows.first() {
            Some(r) => Some(r.try_get("offering")?),
            None => None,
        };
        let order: Vec<String> = {
            let l = self.current();
            offering
                .and_then(|o| {
                    l.catalog.offering(&o).map(|o| {
                        l.catalog
                            .steps_of(o)
                            .iter()
                            .map(|(s, _)| s.id.clone())
                            .collect()
                    })
                })
                .unwrap_or_default()
        };
        cases.sort_by_key(|c| {
            order
                .iter()
                .position(|s| *s == c.service_id)
                .unwrap_or(usize::MAX)
        });
        Ok(cases)
    }

    /// The answers of an application that a case's service asks for (an agency sees only
    /// those).
    pub fn answers_for(&self, case: &Case, a: &Application) -> Map<String, Value> {
        let l = self.current();
        let Some(s) = l.catalog.service(&case.service_id) else {
            return Map::new();
        };
        s.steps
            .iter()
            .flat_map(|st| &st.questions)
            .filter_map(|q| a.answers.get(&q.id).map(|v| (q.id.clone(), v.clone())))
            .collect()
    }

    fn sla_ms(&self, service_id: &str) -> i64 {
        self.current()
            .catalog
            .service(service_id)
            .map_or(30, |s| s.sla_days as i64)
            * DAY_MS
    }

    /// Submits an application: every asked step must check out. Opens its cases, each
    /// waiting for the steps it depends on, in one transaction with their ledger events.
    pub async fn submit(
        &self,
        id: &str,
        account_id: &str,
        today: &str,
    ) -> Result<Result<(Application, Changed), Vec<crate::FieldError>>, ServicesError> {
        self.submit_with(id, account_id, &Map::new(), today).await
    }

    /// Submits a draft with these last answers (saved, and kept when something is wrong).
    pub async fn submit_with(
        &self,
        id: &str,
        account_id: &str,
        given: &Map<String, Value>,
        today: &str,
    ) -> Result<Result<(Application, Changed), Vec<crate::FieldError>>, ServicesError> {
        let a = self.application_of(id, account_id).await?;
        self.submit_loaded(a, given, today).await
    }

    /// [`Services::submit_with`] for an application the caller has just read as its
    /// applicant's (`application_of`): the submission is a compare-and-set on the state and
    /// time it was read in, so nothing written since is overwritten.
    pub async fn submit_loaded(
        &self,
        mut a: Application,
        given: &Map<String, Value>,
        today: &str,
    ) -> Result<Result<(Application, Changed), Vec<crate::FieldError>>, ServicesError> {
        let account_id = a.account_id.clone();
        if a.state != ApplicationState::Draft {
            return Err(ServicesError::Conflict(
                "This application has been sent already.".into(),
            ));
        }
        if !given.is_empty() {
            let form = self.form(&a.offering)?;
            crate::applications::merge(&form, &mut a.answers, given);
        }
        let (kept, errors) = self.check(&a, today)?;
        if !errors.is_empty() {
            if !given.is_empty() {
                self.store_answers(&mut a).await?;
            }
            return Ok(Err(errors));
        }
        let l = self.current();
        let o = l.catalog.offering(&a.offering).ok_or_else(|| {
            ServicesError::NotFound(format!("no service or life event {}", a.offering))
        })?;
        let now = civitas_ledger::event::now_ms();
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let mut cases: Vec<Case> = Vec::new();
        for (s, after) in l.catalog.steps_of(o) {
            let depends_on: Vec<String> = after
                .iter()
                .filter_map(|x| {
                    cases
                        .iter()
                        .find(|c| c.service_id == *x)
                        .map(|c| c.id.clone())
                })
                .collect();
            let open = depends_on.is_empty();
            cases.push(Case {
                id: uuid::Uuid::new_v4().to_string(),
                application_id: a.id.clone(),
                service_id: s.id.clone(),
                agency: s.agency.clone(),
                state: if open {
                    CaseState::Submitted
                } else {
                    CaseState::Waiting
                },
                depends_on,
                assignee: None,
                assignee_name: None,
                opened_ms: open.then_some(now),
                due_ms: open.then_some(now + s.sla_days as i64 * DAY_MS),
                reminded_ms: None,
                escalated_ms: None,
                updated_ms: now,
                reason: None,
                decision: None,
                version: 1,
            });
        }
        a.answers = kept;
        a.state = ApplicationState::Submitted;
        a.submitted_ms = Some(now);
        let read = a.updated_ms;
        a.updated_ms = now.max(read + 1);
        // The application moves on only if nobody changed it since it was read (a
        // compare-and-set); it, its cases and their events commit together, in the ledger's
        // next batch with whatever else is being logged at that moment.
        let mut w = civitas_store::Script::new();
        w.push(
            "UPDATE services_applications SET state = 'submitted', answers = ?, submitted_ms = ?, updated_ms = ? WHERE id = ? AND state = 'draft' AND updated_ms = ?",
            vec![
                civitas_store::Value::Text(Value::Object(a.answers.clone()).to_string()),
                civitas_store::Value::I64(now),
                civitas_store::Value::I64(a.updated_ms),
                civitas_store::Value::Text(a.id.clone()),
                civitas_store::Value::I64(read),
            ],
        );
        let actor = Actor::Applicant {
            account_id: account_id.to_string(),
        };
        let mut events = vec![
            Event::new(
                "services.application_submitted",
                &actor.ledger_name(),
                &format!("application/{}", a.id),
            )
            .about(tag)
            .with("offering", a.offering.clone())
            .with("catalog_version", a.catalog_version)
            .with("cases", cases.len() as i64)
            .with("answers_sha256", answers_digest(&a.answers)),
        ];
        events.extend(open_cases(&mut w, &cases, &actor, tag)?);
        match self.ledger.append_all_with(&events, w).await {
            Ok(()) => {}
            Err(civitas_ledger::LedgerError::WritesRefused(_)) => return Err(changed_meanwhile()),
            Err(e) => return Err(e.into()),
        }
        Ok(Ok((a, cases)))
    }

    /// A staff member acts on a case of their agency's.
    pub async fn act(
        &self,
        case_id: &str,
        actor: &Actor,
        action: Action,
    ) -> Result<Changed, ServicesError> {
        let Actor::Staff {
            account_id,
            name,
            agency,
            role,
        } = actor
        else {
            return Err(ServicesError::Forbidden(
                "Only an agency's staff act on its cases.".into(),
            ));
        };
        let (mut case, app) = self.case_for_agency(case_id, agency).await?;
        let to = transition(case.state, &action)?;
        let now = civitas_ledger::event::now_ms();
        let mut note = None;
        match &action {
            Action::Take => {
                if case.assignee.as_deref() == Some(account_id) {
                    return Err(ServicesError::Conflict(
                        "You have this case already.".into(),
                    ));
                }
                case.assignee = Some(account_id.clone());
                case.assignee_name = Some(name.clone());
            }
            Action::Assign {
                account_id: to_id,
                name: to_name,
            } => {
                if *role == StaffRole::Caseworker {
                    return Err(ServicesError::Forbidden(
                        "Only a supervisor assigns cases to others.".into(),
                    ));
                }
                case.assignee = Some(to_id.clone());
                case.assignee_name = Some(to_name.clone());
            }
            Action::RequestInformation { note: n } | Action::Reject { reason: n } => {
                if n.is_empty() || n.chars().count() > 2000 {
                    return Err(ServicesError::Invalid(
                        "Say why, in at most 2,000 characters: the applicant is told.".into(),
                    ));
                }
                note = Some(n.clone());
            }
            Action::Approve { reason } => {
                if reason.chars().count() > 2000 {
                    return Err(ServicesError::Invalid(
                        "A reason is at most 2,000 characters.".into(),
                    ));
                }
                note = (!reason.is_empty()).then(|| reason.clone());
            }
            Action::StartReview | Action::Close => {}
        }
        // Deciding or reviewing takes the case, if nobody had.
        if case.assignee.is_none() && !matches!(action, Action::Close) {
            case.assignee = Some(account_id.clone());
            case.assignee_name = Some(name.clone());
        }
        let from = case.state;
        case.state = to;
        if note.is_some() {
            case.reason = note.clone();
        }
        match to {
            CaseState::Approved => case.decision = Some("approved".into()),
            CaseState::Rejected => case.decision = Some("rejected".into()),
            _ => {}
        }
        let tag = self.ledger.subject_secret(&app.subject_ref).await?.tag();
        let mut tx = self.db.begin_write().await?;
        lock_application(&mut tx, &app.id).await?;
        let mut events =
            vec![save_case(&mut tx, &mut case, from, now, actor, note.as_deref(), tag).await?];
        let mut changed = vec![case.clone()];
        if from != to {
            changed.extend(self.cascade(&mut tx, &case, now, tag, &mut events).await?);
        }
        self.ledger.append_in(&mut tx, &events).await?;
        tx.commit().await?;
        self.ledger.queued();
        Ok(changed)
    }

    /// After a case is decided: open the cases that now have every step they wait for
    /// approved, or close those that can no longer go ahead (and those after them).
    async fn cascade(
        &self,
        tx: &mut sqlx::AnyConnection,
        decided: &Case,
        now: i64,
        tag: SubjectTag,
        events: &mut Vec<Event>,
    ) -> Result<Changed, ServicesError> {
        if decided.outcome().is_none() {
            return Ok(vec![]);
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM services_cases WHERE application_id = $1"
        ))
        .bind(&decided.application_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut all: Vec<Case> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        if let Some(c) = all.iter_mut().find(|c| c.id == decided.id) {
            *c = decided.clone();
        }
        let mut changed = Vec::new();
        loop {
            let mut moved = false;
            for i in 0..all.len() {
                if all[i].state != CaseState::Waiting {
                    continue;
                }
                let deps: Vec<Option<bool>> = all[i]
                    .depends_on
                    .iter()
                    .filter_map(|d| all.iter().find(|c| c.id == *d).map(Case::outcome))
                    .collect();
                let blocked = deps.contains(&Some(false));
                let ready = deps.iter().all(|o| *o == Some(true));
                if !blocked && !ready {
                    continue;
                }
                let mut c = all[i].clone();
                let (to, note) = if blocked {
                    (
                        CaseState::Closed,
                        Some("An earlier step was not approved.".to_string()),
                    )
                } else {
                    c.opened_ms = Some(now);
                    c.due_ms = Some(now + self.sla_ms(&c.service_id));
                    (CaseState::Submitted, None)
                };
                c.state = to;
                c.reason = note.clone();
                events.push(
                    save_case(
                        tx,
                        &mut c,
                        CaseState::Waiting,
                        now,
                        &Actor::System,
                        note.as_deref(),
                        tag,
                    )
                    .await?,
                );
                all[i] = c.clone();
                changed.push(c);
                moved = true;
            }
            if !moved {
                return Ok(changed);
            }
        }
    }

    /// The applicant withdraws their application: every case not yet decided is withdrawn
    /// (a draft is simply withdrawn).
    pub async fn withdraw(&self, id: &str, account_id: &str) -> Result<Changed, ServicesError> {
        let a = self.application_of(id, account_id).await?;
        if a.state == ApplicationState::Withdrawn {
            return Err(ServicesError::Conflict(
                "This application is withdrawn already.".into(),
            ));
        }
        let now = civitas_ledger::event::now_ms();
        let cases = self.cases_of(id).await?;
        if a.state == ApplicationState::Submitted && cases.iter().all(|c| c.state.is_final()) {
            return Err(ServicesError::Conflict(
                "Every step of this application has been decided.".into(),
            ));
        }
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let actor = Actor::Applicant {
            account_id: account_id.to_string(),
        };
        let mut tx = self.db.begin_write().await?;
        // Only from the state it was read in: a submission at the same moment wins, and
        // the person is asked to look again.
        let n = sqlx::query(
            "UPDATE services_applications SET state = 'withdrawn', updated_ms = $1 WHERE id = $2 AND state = $3",
        )
        .bind(now)
        .bind(id)
        .bind(a.state.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(changed_meanwhile());
        }
        let mut events = vec![
            Event::new(
                "services.application_withdrawn",
                &actor.ledger_name(),
                &format!("application/{id}"),
            )
            .about(tag),
        ];
        let mut changed = Vec::new();
        for mut c in cases.into_iter().filter(|c| !c.state.is_final()) {
            let from = c.state;
            c.state = CaseState::Withdrawn;
            events.push(save_case(&mut tx, &mut c, from, now, &actor, None, tag).await?);
            changed.push(c);
        }
        self.ledger.append_in(&mut tx, &events).await?;
        tx.commit().await?;
        self.ledger.queued();
        Ok(changed)
    }

    /// Withdraws a draft that must not stand, by the platform and not its applicant
    /// (`services.application_discarded`, with the reason): one filled from register reads
    /// whose logs could not be written, say. A draft no longer a draft is left alone.
    pub async fn discard_draft(&self, id: &str, reason: &str) -> Result<(), ServicesError> {
        let a = self
            .application(id)
            .await?
            .ok_or_else(|| ServicesError::NotFound(format!("no application {id}")))?;
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let mut w = civitas_store::Script::new();
        w.push(
            "UPDATE services_applications SET state = 'withdrawn', updated_ms = ? WHERE id = ? AND state = 'draft'",
            vec![
                civitas_store::Value::I64(civitas_ledger::event::now_ms()),
                civitas_store::Value::Text(id.to_string()),
            ],
        );
        let event = Event::new(
            "services.application_discarded",
            &Actor::System.ledger_name(),
            &format!("application/{id}"),
        )
        .about(tag)
        .with("reason", reason.to_string());
        match self.ledger.append_with(&event, w).await {
            Ok(_) | Err(civitas_ledger::LedgerError::WritesRefused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The applicant sends the more an agency asked for: the answers are checked again and
    /// each case that asked goes back to the agency, with its service level from now.
    pub async fn resubmit(
        &self,
        id: &str,
        account_id: &str,
        today: &str,
    ) -> Result<Result<Changed, Vec<crate::FieldError>>, ServicesError> {
        let a = self.application_of(id, account_id).await?;
        let waiting: Vec<Case> = self
            .cases_of(id)
            .await?
            .into_iter()
            .filter(|c| c.state == CaseState::MoreInformationNeeded)
            .collect();
        if a.state != ApplicationState::Submitted || waiting.is_empty() {
            return Err(ServicesError::Conflict(
                "No agency is waiting for more from you on this application.".into(),
            ));
        }
        let (kept, errors) = self.check(&a, today)?;
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        let now = civitas_ledger::event::now_ms();
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let actor = Actor::Applicant {
            account_id: account_id.to_string(),
        };
        let mut tx = self.db.begin_write().await?;
        let n = sqlx::query(
            "UPDATE services_applications SET answers = $1, updated_ms = $2 WHERE id = $3 AND updated_ms = $4",
        )
        .bind(Value::Object(kept.clone()).to_string())
        .bind(now)
        .bind(id)
        .bind(a.updated_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(changed_meanwhile());
        }
        let mut events = Vec::new();
        let mut changed = Vec::new();
        for mut c in waiting {
            c.state = CaseState::Submitted;
            c.due_ms = Some(now + self.sla_ms(&c.service_id));
            c.reminded_ms = None;
            c.escalated_ms = None;
            let e = save_case(
                &mut tx,
                &mut c,
                CaseState::MoreInformationNeeded,
                now,
                &actor,
                None,
                tag,
            )
            .await?;
            events.push(e.with("answers_sha256", answers_digest(&kept)));
            changed.push(c);
        }
        self.ledger.append_in(&mut tx, &events).await?;
        tx.commit().await?;
        self.ledger.queued();
        Ok(Ok(changed))
    }

    /// An application's timeline across its agencies, oldest first.
    pub async fn timeline(
        &self,
        application_id: &str,
    ) -> Result<Vec<TimelineEntry>, ServicesError> {
        let rows = sqlx::query(
            "SELECT e.case_id, c.service_id, c.agency, e.at_ms, e.from_state, e.to_state, e.note, e.actor_name \
             FROM services_case_events e JOIN services_cases c ON c.id = e.case_id \
             WHERE c.application_id = $1 ORDER BY e.at_ms, e.case_id, e.version",
        )
        .bind(application_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let to: String = r.try_get("to_state")?;
                Ok(TimelineEntry {
                    at_ms: r.try_get("at_ms")?,
                    case_id: r.try_get("case_id")?,
                    service_id: r.try_get("service_id")?,
                    agency: r.try_get("agency")?,
                    from: r.try_get("from_state")?,
                    to: CaseState::parse(&to).unwrap_or(CaseState::Closed),
                    note: r.try_get("note")?,
                    actor_name: r.try_get("actor_name")?,
                })
            })
            .collect()
    }

    /// An agency's queue: open cases first by due date.
    pub async fn queue(
        &self,
        agency: &str,
        f: &QueueFilter,
    ) -> Result<Vec<QueueRow>, ServicesError> {
        let mut sql = String::from(
            "SELECT c.id, c.application_id, c.service_id, c.agency, c.state, c.depends_on, c.assignee, c.assignee_name, \
             c.opened_ms, c.due_ms, c.reminded_ms, c.escalated_ms, c.updated_ms, c.reason, c.decision, c.version, a.reference, a.applicant_name \
             FROM services_cases c JOIN services_applications a ON a.id = c.application_id WHERE c.agency = $1",
        );
        let mut binds: Vec<String> = vec![agency.to_string()];
        let mut push = |sql: &mut String, clause: &str, v: String| {
            binds.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
        };
        match f.state {
            Some(s) => push(&mut sql, " AND c.state = ?", s.as_str().to_string()),
            None => sql
                .push_str(" AND c.state IN ('submitted', 'in_review', 'more_information_needed')"),
        }
        if let Some(s) = &f.service {
            push(&mut sql, " AND c.service_id = ?", s.clone());
        }
        if let Some(a) = &f.assignee {
            push(&mut sql, " AND c.assignee = ?", a.clone());
        }
        if f.unassigned {
            sql.push_str(" AND c.assignee IS NULL");
        }
        if let Some(t) = f.overdue_at {
            sql.push_str(&format!(" AND c.due_ms < {t}"));
        }
        if f.escalated {
            sql.push_str(" AND c.escalated_ms IS NOT NULL");
        }
        let limit = f.limit.unwrap_or(50).clamp(1, 500);
        sql.push_str(&format!(
            " ORDER BY c.due_ms, c.id LIMIT {limit} OFFSET {}",
            f.offset
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(QueueRow {
                    case: from_row(r)?,
                    reference: r.try_get("reference")?,
                    applicant_name: r.try_get("applicant_name")?,
                })
            })
            .collect()
    }

    /// Marks the cases whose due date is a day away (reminded) or past (escalated) at
    /// `now`, each once, and returns them so their people can be told. Escalations are in
    /// the ledger (`services.case_escalated`). Called every minute by the server, and with
    /// any clock by tests.
    pub async fn check_deadlines(&self, now: i64) -> Result<Vec<Deadline>, ServicesError> {
        let mut out = Vec::new();
        for (escalated, sql) in [
            (
                false,
                "SELECT {C} FROM services_cases WHERE state IN ('submitted', 'in_review') AND due_ms <= $1 AND due_ms > $2 AND reminded_ms IS NULL LIMIT 500",
            ),
            (
                true,
                "SELECT {C} FROM services_cases WHERE state IN ('submitted', 'in_review') AND due_ms <= $2 AND escalated_ms IS NULL LIMIT 500",
            ),
        ] {
            let rows = sqlx::query(&sql.replace("{C}", COLUMNS))
                .bind(now + DAY_MS)
                .bind(now)
                .fetch_all(self.db.pool())
                .await?;
            for r in &rows {
                let mut c = from_row(r)?;
                let column = if escalated {
                    "escalated_ms"
                } else {
                    "reminded_ms"
                };
                // The applicant's tag before the turn to write: finding it may write.
                let subject = match escalated {
                    true => match self.application(&c.application_id).await? {
                        Some(a) => Some(self.ledger.subject_secret(&a.subject_ref).await?.tag()),
                        None => None,
                    },
                    false => None,
                };
                let mut tx = self.db.begin_write().await?;
                let n = sqlx::query(&format!(
                    "UPDATE services_cases SET {column} = $1, version = version + 1 WHERE id = $2 AND {column} IS NULL AND version = $3"
                ))
                .bind(now)
                .bind(&c.id)
                .bind(c.version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    continue; // another node took it
                }
                if escalated {
                    c.escalated_ms = Some(now);
                    c.version += 1;
                    let mut e = Event::new(
                        "services.case_escalated",
                        "system",
                        &format!("case/{}", c.id),
                    )
                    .with("agency", c.agency.clone())
                    .with("service", c.service_id.clone())
                    .with("due_ms", c.due_ms.unwrap_or_default());
                    if let Some(t) = subject {
                        e = e.about(t);
                    }
                    self.ledger.append_in(&mut tx, &[e]).await?;
                } else {
                    c.reminded_ms = Some(now);
                    c.version += 1;
                }
                tx.commit().await?;
                out.push(Deadline { case: c, escalated });
            }
        }
        if out.iter().any(|d| d.escalated) {
            self.ledger.queued();
        }
        Ok(out)
    }

    /// Counts of an agency's cases by state (the console's summary), as of at most
    /// [`COUNTS_MAX_AGE_MS`] ago: counting a large agency's cases reads every one of them,
    /// and the queue page is read far more often than the counts change meaningfully.
    pub async fn counts(&self, agency: &str) -> Result<Vec<(CaseState, i64)>, ServicesError> {
        let now = civitas_ledger::event::now_ms();
        if let Some((at, counts)) = self.counted.lock().expect("not poisoned").get(agency)
            && now - at < COUNTS_MAX_AGE_MS
        {
            return Ok(counts.clone());
        }
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM services_cases WHERE agency = $1 GROUP BY state",
        )
        .bind(agency)
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let s: String = r.try_get("state")?;
            if let Some(s) = CaseState::parse(&s) {
                out.push((s, r.try_get("n")?));
            }
        }
        out.sort_by_key(|(s, _)| CaseState::ALL.iter().position(|x| x == s));
        self.counted
            .lock()
            .expect("not poisoned")
            .insert(agency.to_string(), (now, out.clone()));
        Ok(out)
    }
}

/// How old the console's counts may be.
pub const COUNTS_MAX_AGE_MS: i64 = 5_000;

/// The answer when an application or case changed between reading and writing it.
pub(crate) fn changed_meanwhile() -> ServicesError {
    ServicesError::Conflict("This application changed at the same moment; look at it again.".into())
}

/// Takes the application's row lock for the rest of the transaction, so that changes to
/// its cases happen one after another (two approvals at once each see the other's, and
/// the step waiting for both opens).
async fn lock_application(tx: &mut sqlx::AnyConnection, id: &str) -> Result<(), ServicesError> {
    sqlx::query("UPDATE services_applications SET state = state WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Adds to `w` the statements that open `cases` (each case and its first history row, one
/// row a statement, as the ledger's companion writes must be), and returns their events.
fn open_cases(
    w: &mut civitas_store::Script,
    cases: &[Case],
    actor: &Actor,
    tag: SubjectTag,
) -> Result<Vec<Event>, ServicesError> {
    use civitas_store::Value as V;
    let mut events = Vec::new();
    for c in cases {
        w.push(
            "INSERT INTO services_cases (id, application_id, service_id, agency, state, depends_on, assignee, assignee_name, opened_ms, due_ms, reminded_ms, escalated_ms, updated_ms, reason, decision, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                V::Text(c.id.clone()),
                V::Text(c.application_id.clone()),
                V::Text(c.service_id.clone()),
                V::Text(c.agency.clone()),
                V::Str(c.state.as_str()),
                V::Text(serde_json::to_string(&c.depends_on)?),
                c.assignee.clone().into(),
                c.assignee_name.clone().into(),
                c.opened_ms.into(),
                c.due_ms.into(),
                c.reminded_ms.into(),
                c.escalated_ms.into(),
                V::I64(c.updated_ms),
                c.reason.clone().into(),
                c.decision.clone().into(),
                V::I64(c.version),
            ],
        );
        w.push(
            "INSERT INTO services_case_events (case_id, version, at_ms, actor, actor_name, from_state, to_state, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                V::Text(c.id.clone()),
                V::I64(c.version),
                V::I64(c.updated_ms),
                V::Text(actor.ledger_name()),
                V::Text(actor.display()),
                V::Str("none"),
                V::Str(c.state.as_str()),
                V::NullText,
            ],
        );
        events.push(change_event(c, "none", actor, None, tag));
    }
    Ok(events)
}

/// Writes a changed case (a compare-and-set on its version: two people acting at once, one
/// wins) with its history row, and returns its ledger event.
async fn save_case(
    tx: &mut sqlx::AnyConnection,
    c: &mut Case,
    from: CaseState,
    now: i64,
    actor: &Actor,
    note: Option<&str>,
    tag: SubjectTag,
) -> Result<Event, ServicesError> {
    let old = c.version;
    c.version += 1;
    c.updated_ms = now;
    let n = sqlx::query(
        "UPDATE services_cases SET state = $1, assignee = $2, assignee_name = $3, opened_ms = $4, due_ms = $5, reminded_ms = $6, \
         escalated_ms = $7, updated_ms = $8, reason = $9, decision = $10, version = $11 WHERE id = $12 AND version = $13",
    )
    .bind(c.state.as_str())
    .bind(&c.assignee)
    .bind(&c.assignee_name)
    .bind(c.opened_ms)
    .bind(c.due_ms)
    .bind(c.reminded_ms)
    .bind(c.escalated_ms)
    .bind(now)
    .bind(&c.reason)
    .bind(&c.decision)
    .bind(c.version)
    .bind(&c.id)
    .bind(old)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(ServicesError::Conflict(
            "Someone else changed this case at the same moment; look at it again.".into(),
        ));
    }
    history(tx, c, from.as_str(), actor, note, tag).await
}

async fn history(
    tx: &mut sqlx::AnyConnection,
    c: &Case,
    from: &str,
    actor: &Actor,
    note: Option<&str>,
    tag: SubjectTag,
) -> Result<Event, ServicesError> {
    sqlx::query(
        "INSERT INTO services_case_events (case_id, version, at_ms, actor, actor_name, from_state, to_state, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&c.id)
    .bind(c.version)
    .bind(c.updated_ms)
    .bind(actor.ledger_name())
    .bind(actor.display())
    .bind(from)
    .bind(c.state.as_str())
    .bind(note)
    .execute(&mut *tx)
    .await?;
    Ok(change_event(c, from, actor, note, tag))
}

/// The ledger event of a case's change: ids, codes and the reason's hash, never its text.
fn change_event(c: &Case, from: &str, actor: &Actor, note: Option<&str>, tag: SubjectTag) -> Event {
    let mut e = Event::new(
        "services.case_changed",
        &actor.ledger_name(),
        &format!("case/{}", c.id),
    )
    .about(tag)
    .with("application", c.application_id.clone())
    .with("agency", c.agency.clone())
    .with("service", c.service_id.clone())
    .with("from", from)
    .with("to", c.state.as_str())
    .with("version", c.version);
    if let Some(a) = &c.assignee {
        e = e.with("assignee", format!("account:{a}"));
    }
    if let Some(n) = note {
        e = e.private_payload(n.as_bytes());
    }
    e
}
