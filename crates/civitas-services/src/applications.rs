//! Applications: a person's answers to an offering's form, kept as a draft between visits
//! (each step saved as it is left, wrong answers and all, so nothing typed is lost), filled
//! first from the registers with where each value came from, and submitted once, when
//! every asked step checks out. Submitting opens the cases ([`crate::cases`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use civitas_ledger::Event;
use civitas_store::sqlx::{self, Row, any::AnyRow};

use crate::catalog::Offering;
use crate::form::{self, Choice, FieldError, Form};
use crate::{Services, ServicesError, Text};

/// Who applies.
#[derive(Debug, Clone)]
pub struct Applicant {
    /// Their account.
    pub account_id: String,
    /// Their ledger subject (`person:<id>`).
    pub subject_ref: String,
    /// Their national ID (for the agencies' reads through the exchange).
    pub national_id: String,
    /// Their name, as staff see it in their queue.
    pub name: String,
}

/// The registers' values for a form, as the exchange returned them: each data item with
/// `value`, `source` (the register's service id), `source_name` and `retrieved_at`.
pub type Prefilled = Map<String, Value>;

/// Where a prefilled answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The data item (`population.address`).
    pub item: String,
    /// The register's service id.
    pub source: String,
    /// The register's name.
    pub source_name: String,
    /// When it was read (seconds).
    pub retrieved_at: i64,
    /// The value as the register gave it (to tell whether the applicant changed it).
    pub value: String,
}

/// Where an application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationState {
    /// Being filled in.
    Draft,
    /// Sent: its cases are open (or decided).
    Submitted,
    /// Withdrawn by the applicant.
    Withdrawn,
}

impl ApplicationState {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationState::Draft => "draft",
            ApplicationState::Submitted => "submitted",
            ApplicationState::Withdrawn => "withdrawn",
        }
    }

    fn parse(s: &str) -> ApplicationState {
        match s {
            "submitted" => ApplicationState::Submitted,
            "withdrawn" => ApplicationState::Withdrawn,
            _ => ApplicationState::Draft,
        }
    }
}

/// An application.
#[derive(Debug, Clone, Serialize)]
pub struct Application {
    /// Its id.
    pub id: String,
    /// The reference the applicant quotes (`A-7K3Q-9XWD`).
    pub reference: String,
    /// The service or life event.
    pub offering: String,
    /// The catalogue it was made under.
    pub catalog_version: i64,
    /// The applicant's account.
    pub account_id: String,
    /// The applicant's ledger subject.
    #[serde(skip)]
    pub subject_ref: String,
    /// The applicant's national ID.
    #[serde(skip)]
    pub national_id: String,
    /// The applicant's name.
    pub applicant_name: String,
    /// Where it is.
    pub state: ApplicationState,
    /// The answers, by question id.
    pub answers: Map<String, Value>,
    /// Where prefilled answers came from, by question id.
    pub sources: Map<String, Value>,
    /// The options a choice takes from the registers, by question id.
    pub options: Map<String, Value>,
    /// When it was started (ms).
    pub created_ms: i64,
    /// When it last changed (ms).
    pub updated_ms: i64,
    /// When it was submitted (ms).
    pub submitted_ms: Option<i64>,
}

impl Application {
    /// The options of a choice: its own, or those the registers gave.
    pub fn options_of(&self, q: &form::Question) -> Vec<Choice> {
        if q.options_from.is_none() {
            return q.options.clone();
        }
        self.options
            .get(&q.id)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Where an answer came from, if the registers filled it.
    pub fn source_of(&self, question: &str) -> Option<Source> {
        self.sources
            .get(question)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Where an answer came from, while it is still what the register gave.
    pub fn register_source(&self, question: &str) -> Option<Source> {
        self.source_of(question)
            .filter(|s| s.value == self.answer_text(question))
    }

    /// An answer as text.
    pub fn answer_text(&self, question: &str) -> String {
        match self.answers.get(question) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_string),
        }
    }
}

const COLUMNS: &str = "id, reference, offering, catalog_version, account_id, subject_ref, national_id, applicant_name, state, answers, sources, options, created_ms, updated_ms, submitted_ms";

pub(crate) fn from_row(r: &AnyRow) -> Result<Application, ServicesError> {
    let json = |c: &str| -> Result<Map<String, Value>, ServicesError> {
        let s: String = r.try_get(c)?;
        Ok(serde_json::from_str(&s)?)
    };
    Ok(Application {
        id: r.try_get("id")?,
        reference: r.try_get("reference")?,
        offering: r.try_get("offering")?,
        catalog_version: r.try_get("catalog_version")?,
        account_id: r.try_get("account_id")?,
        subject_ref: r.try_get("subject_ref")?,
        national_id: r.try_get("national_id")?,
        applicant_name: r.try_get("applicant_name")?,
        state: ApplicationState::parse(&r.try_get::<String, _>("state")?),
        answers: json("answers")?,
        sources: json("sources")?,
        options: json("options")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        submitted_ms: r.try_get("submitted_ms")?,
    })
}

/// A reference people can read out: `A-` and eight letters and digits without the ones
/// that look alike.
fn new_reference() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let s: String = bytes[..8]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % 32] as char)
        .collect();
    format!("A-{}-{}", &s[..4], &s[4..])
}

/// Fills a form's answers and choices from the registers' values.
pub fn apply_prefill(
    form: &Form,
    prefilled: &Prefilled,
) -> (Map<String, Value>, Map<String, Value>, Map<String, Value>) {
    let (mut answers, mut sources, mut options) = (Map::new(), Map::new(), Map::new());
    for q in form.questions() {
        if let (Some(item), Some(format)) = (&q.prefill, &q.prefill_format)
            && let Some(found) = prefilled.get(item)
            && !found["value"].is_null()
        {
            let value = form::format_record(format, &found["value"]);
            if !value.is_empty() {
                answers.insert(q.id.clone(), Value::String(value.clone()));
                let src = Source {
                    item: item.clone(),
                    source: found["source"].as_str().unwrap_or_default().to_string(),
                    source_name: found["source_name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    retrieved_at: found["retrieved_at"].as_i64().unwrap_or_default(),
                    value,
                };
                sources.insert(q.id.clone(), serde_json::to_value(src).unwrap_or_default());
            }
        }
        if let (Some(item), Some(vf), Some(lf)) =
            (&q.options_from, &q.option_value, &q.option_label)
        {
            let records = prefilled
                .get(item)
                .and_then(|f| f["value"].as_array().cloned())
                .unwrap_or_default();
            let choices: Vec<Choice> = records
                .iter()
                .map(|r| {
                    let label = form::format_record(lf, r);
                    Choice {
                        value: form::format_record(vf, r),
                        label: Text {
                            zh: label.clone(),
                            en: label,
                        },
                    }
                })
                .filter(|c| !c.value.is_empty())
                .collect();
            options.insert(
                q.id.clone(),
                serde_json::to_value(choices).unwrap_or_default(),
            );
        }
    }
    (answers, sources, options)
}

impl Services {
    /// The form of an offering of the catalogue in force.
    pub fn form(&self, offering: &str) -> Result<Form, ServicesError> {
        let l = self.current();
        let o = l.catalog.offering(offering).ok_or_else(|| {
            ServicesError::NotFound(format!("no service or life event {offering}"))
        })?;
        Ok(l.catalog.form_of(o))
    }

    /// Starts an application, filled from the registers' values.
    pub async fn start(
        &self,
        offering: &str,
        who: &Applicant,
        prefilled: &Prefilled,
    ) -> Result<Application, ServicesError> {
        self.start_with(offering, who, prefilled, &Map::new()).await
    }

    /// Starts an application filled from the registers' values, then with the answers
    /// `given` (a program applying over the API gives them at once), in one write.
    pub async fn start_with(
        &self,
        offering: &str,
        who: &Applicant,
        prefilled: &Prefilled,
        given: &Map<String, Value>,
    ) -> Result<Application, ServicesError> {
        let form = self.form(offering)?;
        let (mut answers, sources, options) = apply_prefill(&form, prefilled);
        merge(&form, &mut answers, given);
        let now = civitas_ledger::event::now_ms();
        let a = Application {
            id: uuid::Uuid::new_v4().to_string(),
            reference: new_reference(),
            offering: offering.to_string(),
            catalog_version: self.current().version,
            account_id: who.account_id.clone(),
            subject_ref: who.subject_ref.clone(),
            national_id: who.national_id.clone(),
            applicant_name: who.name.clone(),
            state: ApplicationState::Draft,
            answers,
            sources,
            options,
            created_ms: now,
            updated_ms: now,
            submitted_ms: None,
        };
        // Written with its ledger event, in the ledger's next batch (a group commit with
        // whatever else is being logged at that moment).
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let event = Event::new(
            "services.application_started",
            &format!("account:{}", a.account_id),
            &format!("application/{}", a.id),
        )
        .about(tag)
        .with("offering", a.offering.clone())
        .with("catalog_version", a.catalog_version);
        use civitas_store::Value as V;
        let mut w = civitas_store::Script::new();
        w.push(
            &format!("INSERT INTO services_applications ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            vec![
                V::Text(a.id.clone()),
                V::Text(a.reference.clone()),
                V::Text(a.offering.clone()),
                V::I64(a.catalog_version),
                V::Text(a.account_id.clone()),
                V::Text(a.subject_ref.clone()),
                V::Text(a.national_id.clone()),
                V::Text(a.applicant_name.clone()),
                V::Str(a.state.as_str()),
                V::Text(Value::Object(a.answers.clone()).to_string()),
                V::Text(Value::Object(a.sources.clone()).to_string()),
                V::Text(Value::Object(a.options.clone()).to_string()),
                V::I64(a.created_ms),
                V::I64(a.updated_ms),
                a.submitted_ms.into(),
            ],
        );
        self.ledger.append_all_with(&[event], w).await?;
        Ok(a)
    }

    /// An application by id.
    pub async fn application(&self, id: &str) -> Result<Option<Application>, ServicesError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM services_applications WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// An application of this account's (anyone else's is not found).
    pub async fn application_of(
        &self,
        id: &str,
        account_id: &str,
    ) -> Result<Application, ServicesError> {
        match self.application(id).await? {
            Some(a) if a.account_id == account_id => Ok(a),
            _ => Err(ServicesError::NotFound("no such application".into())),
        }
    }

    /// An account's applications, newest first.
    pub async fn applications_of(
        &self,
        account_id: &str,
    ) -> Result<Vec<Application>, ServicesError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM services_applications WHERE account_id = $1 ORDER BY created_ms DESC LIMIT 200"
        ))
        .bind(account_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Saves one step's answers, whatever is wrong with them (so nothing typed is lost),
    /// and says what is wrong. Only a draft, or an application an agency asked more of,
    /// can be changed.
    pub async fn save_step(
        &self,
        id: &str,
        account_id: &str,
        step_id: &str,
        given: Map<String, Value>,
        today: &str,
    ) -> Result<(Application, Vec<FieldError>), ServicesError> {
        let mut a = self.application_of(id, account_id).await?;
        let allowed = self.editable(&a).await?;
        let form = self.form(&a.offering)?;
        let step = form
            .step(step_id)
            .ok_or_else(|| ServicesError::NotFound(format!("no step {step_id}")))?;
        let mut merged = a.answers.clone();
        for q in &step.questions {
            if allowed.as_ref().is_some_and(|only| !only.contains(&q.id)) {
                continue;
            }
            match given.get(&q.id) {
                Some(v) => merged.insert(q.id.clone(), v.clone()),
                None => merged.remove(&q.id),
            };
        }
        let (_, mut errors) = form::check_step(step, &merged, today);
        errors.extend(self.choice_errors(&a, step.questions.iter(), &merged));
        a.answers = merged;
        self.store_answers(&mut a).await?;
        Ok((a, errors))
    }

    /// Saves answers to any of the form's questions at once (a null removes one), whatever
    /// is wrong with them, and says what is wrong in the steps they touch.
    pub async fn save_answers(
        &self,
        id: &str,
        account_id: &str,
        given: &Map<String, Value>,
        today: &str,
    ) -> Result<(Application, Vec<FieldError>), ServicesError> {
        let mut a = self.application_of(id, account_id).await?;
        let allowed = self.editable(&a).await?;
        let form = self.form(&a.offering)?;
        let given: Map<String, Value> = given
            .iter()
            .filter(|(k, _)| allowed.as_ref().is_none_or(|only| only.contains(*k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let given = &given;
        merge(&form, &mut a.answers, given);
        let mut errors = Vec::new();
        for step in form.asked_steps(&a.answers) {
            if step.questions.iter().any(|q| given.contains_key(&q.id)) {
                errors.extend(form::check_step(step, &a.answers, today).1);
                errors.extend(self.choice_errors(&a, step.questions.iter(), &a.answers));
            }
        }
        self.store_answers(&mut a).await?;
        Ok((a, errors))
    }

    /// Writes the answers, if nobody changed the application since it was read (two tabs,
    /// a submission at the same moment): else a conflict, and the person looks again.
    pub(crate) async fn store_answers(&self, a: &mut Application) -> Result<(), ServicesError> {
        let read = a.updated_ms;
        a.updated_ms = civitas_ledger::event::now_ms().max(read + 1);
        let mut conn = self.db.write_conn().await?;
        let n = sqlx::query(
            "UPDATE services_applications SET answers = $1, updated_ms = $2 WHERE id = $3 AND updated_ms = $4 AND state = $5",
        )
        .bind(Value::Object(a.answers.clone()).to_string())
        .bind(a.updated_ms)
        .bind(&a.id)
        .bind(read)
        .bind(a.state.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(crate::cases::changed_meanwhile());
        }
        Ok(())
    }

    /// Whether the applicant may change the answers now.
    pub(crate) async fn editable(
        &self,
        a: &Application,
    ) -> Result<Option<BTreeSet<String>>, ServicesError> {
        match a.state {
            ApplicationState::Draft => Ok(None),
            ApplicationState::Submitted => match self.editable_questions(a).await? {
                Some(q) => Ok(Some(q)),
                None => Err(sent()),
            },
            _ => Err(sent()),
        }
    }

    /// For a sent application an agency asked more of: the questions the applicant may
    /// change, those of the services that asked, less any that another agency is looking
    /// at or has decided on (what they saw stays what they saw). `None` when no agency
    /// asked.
    pub async fn editable_questions(
        &self,
        a: &Application,
    ) -> Result<Option<BTreeSet<String>>, ServicesError> {
        let cases = self.cases_of(&a.id).await?;
        if !cases
            .iter()
            .any(|c| c.state == crate::CaseState::MoreInformationNeeded)
        {
            return Ok(None);
        }
        let l = self.current();
        let questions = |service: &str| -> Vec<String> {
            l.catalog
                .service(service)
                .map(|s| {
                    s.steps
                        .iter()
                        .flat_map(|st| &st.questions)
                        .map(|q| q.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut open: BTreeSet<String> = BTreeSet::new();
        let mut held: BTreeSet<String> = BTreeSet::new();
        for c in &cases {
            match c.state {
                crate::CaseState::MoreInformationNeeded => open.extend(questions(&c.service_id)),
                crate::CaseState::Waiting => {}
                _ => held.extend(questions(&c.service_id)),
            }
        }
        Ok(Some(open.difference(&held).cloned().collect()))
    }

    /// Answers to choices from the registers that are not among the register's options.
    fn choice_errors<'a>(
        &self,
        a: &Application,
        questions: impl Iterator<Item = &'a form::Question>,
        answers: &Map<String, Value>,
    ) -> Vec<FieldError> {
        questions
            .filter(|q| q.options_from.is_some())
            .filter_map(|q| {
                let v = answers.get(&q.id)?.as_str()?;
                (!v.is_empty() && !a.options_of(q).iter().any(|c| c.value == v)).then(|| {
                    FieldError {
                        question: q.id.clone(),
                        message: Text {
                            zh: "請從選項中選擇".into(),
                            en: "Select one of the options".into(),
                        },
                    }
                })
            })
            .collect()
    }

    /// Checks the whole application: what is wrong in the steps asked.
    pub fn check(
        &self,
        a: &Application,
        today: &str,
    ) -> Result<(Map<String, Value>, Vec<FieldError>), ServicesError> {
        let form = self.form(&a.offering)?;
        let (kept, mut errors) = form.check_all(&a.answers, today);
        // A file is one stored for this application, of a type taken.
        for q in form.questions().filter(|q| q.kind == form::Kind::File) {
            if let Some(v) = kept.get(&q.id) {
                let key = v.get("key").and_then(Value::as_str).unwrap_or_default();
                let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
                if !crate::uploads::is_key_of(&a.id, key) || !crate::uploads::TYPES.contains(&kind)
                {
                    errors.push(FieldError {
                        question: q.id.clone(),
                        message: Text {
                            zh: "請上傳檔案".into(),
                            en: "Upload a file".into(),
                        },
                    });
                }
            }
        }
        let asked: Vec<_> = form
            .asked_steps(&a.answers)
            .into_iter()
            .flat_map(|s| &s.questions)
            .collect();
        errors.extend(self.choice_errors(a, asked.into_iter(), &kept));
        Ok((kept, errors))
    }

    /// Records that the applicant says a value the registers gave is wrong: a correction
    /// request to the agency that owns the register (never a change of the register), in
    /// the ledger as `services.correction_requested`.
    pub async fn request_correction(
        &self,
        id: &str,
        account_id: &str,
        question: &str,
        note: &str,
    ) -> Result<String, ServicesError> {
        let a = self.application_of(id, account_id).await?;
        let src = a.source_of(question).ok_or_else(|| {
            ServicesError::Invalid("That answer did not come from a register.".into())
        })?;
        let note = note.trim();
        if note.is_empty() || note.chars().count() > 1000 {
            return Err(ServicesError::Invalid(
                "Say what is wrong, in at most 1,000 characters.".into(),
            ));
        }
        let cid = uuid::Uuid::new_v4().to_string();
        let tag = self.ledger.subject_secret(&a.subject_ref).await?.tag();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO services_corrections (id, application_id, item, source, note, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&cid)
            .bind(&a.id)
            .bind(&src.item)
            .bind(&src.source)
            .bind(note)
            .bind(civitas_ledger::event::now_ms())
            .execute(&mut *tx)
            .await?;
        let event = Event::new(
            "services.correction_requested",
            &format!("account:{account_id}"),
            &format!("correction/{cid}"),
        )
        .about(tag)
        .with("item", src.item.clone())
        .with("register", src.source.clone())
        .private_payload(note.as_bytes());
        self.ledger.append_in(&mut tx, &[event]).await?;
        tx.commit().await?;
        self.ledger.queued();
        Ok(cid)
    }

    /// The correction requests made on an application: (item, register, note, when).
    pub async fn corrections(
        &self,
        application_id: &str,
    ) -> Result<Vec<(String, String, String, i64)>, ServicesError> {
        let rows = sqlx::query("SELECT item, source, note, created_ms FROM services_corrections WHERE application_id = $1 ORDER BY created_ms")
            .bind(application_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("item")?,
                    r.try_get("source")?,
                    r.try_get("note")?,
                    r.try_get("created_ms")?,
                ))
            })
            .collect()
    }

    /// The offering of an application, from the catalogue in force.
    pub fn offering_name(&self, offering: &str) -> Text {
        let l = self.current();
        l.catalog
            .offering(offering)
            .map(|o: Offering<'_>| o.name().clone())
            .unwrap_or_else(|| Text {
                zh: offering.to_string(),
                en: offering.to_string(),
            })
    }
}

/// Puts the answers `given` to the form's questions into `answers` (a null removes one);
/// anything else given is not the form's and is left out.
pub(crate) fn merge(form: &Form, answers: &mut Map<String, Value>, given: &Map<String, Value>) {
    for q in form.questions() {
        match given.get(&q.id) {
            Some(Value::Null) => {
                answers.remove(&q.id);
            }
            Some(v) => {
                answers.insert(q.id.clone(), v.clone());
            }
            None => {}
        }
    }
}

fn sent() -> ServicesError {
    ServicesError::Conflict("This application has been sent and cannot be changed now.".into())
}

/// The answers' digest, for the ledger (the answers stay in the database).
pub(crate) fn answers_digest(answers: &Map<String, Value>) -> String {
    civitas_ledger::event::hex(&crate::sha256(json!(answers).to_string().as_bytes()))
}
