//! The service catalogue as data: each agency's services (what they are, who may apply,
//! fees, documents, legal basis, service level, the level of assurance and the form) and
//! the life events that bundle several of them into one application, with the order in
//! which their steps may start. A catalogue is written in TOML (`catalog/demo.toml` is the
//! demo country's) and checked whole before it is used: every reference must resolve.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ServicesError;
use crate::form::{Form, Step};

/// A text in Traditional Chinese and English.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Traditional Chinese.
    pub zh: String,
    /// English.
    pub en: String,
}

impl Text {
    /// The text in a language (`zh-TW`, anything else English).
    pub fn get(&self, zh: bool) -> &str {
        if zh { &self.zh } else { &self.en }
    }
}

/// One service of one agency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its identifier (`hro-birth-registration`).
    pub id: String,
    /// The agency that decides it (its code, `HRO`).
    pub agency: String,
    /// Its name.
    pub name: Text,
    /// What it is, in a sentence or two.
    pub summary: Text,
    /// Who may apply.
    pub eligibility: Text,
    /// Its fee in New Taiwan dollars (0 when free).
    #[serde(default)]
    pub fee: u32,
    /// What the fee depends on, when it is not one amount.
    #[serde(default)]
    pub fee_note: Option<Text>,
    /// The documents the applicant needs (each uploaded on the form, unless the registers
    /// already hold what it proves).
    #[serde(default)]
    pub documents: Vec<Text>,
    /// The law it rests on; also the legal basis the agency's staff state when they read the
    /// registers about the applicant.
    pub legal_basis: Text,
    /// The service level: the days within which the agency decides.
    pub sla_days: u32,
    /// The level of assurance an applicant must have signed in at (`low`, `substantial`,
    /// `high`).
    pub loa: String,
    /// Words people search for it by (in either language), besides its name and summary.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The form: its steps of questions.
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    /// What the applicant declares when submitting.
    pub declaration: Text,
}

/// One service in a life event, and the steps it waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleStep {
    /// The service.
    pub service: String,
    /// The services of the same life event whose decision it waits for (each approved).
    #[serde(default)]
    pub after: Vec<String>,
}

/// Information a life event gives without any application (a schedule, where to go next).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Information {
    /// Its heading.
    pub title: Text,
    /// Its text.
    pub body: Text,
}

/// A life event: several services, applied for at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifeEvent {
    /// Its identifier (`baby-born`).
    pub id: String,
    /// Its name.
    pub name: Text,
    /// What it covers.
    pub summary: Text,
    /// Its services in order, with what each waits for.
    #[serde(rename = "step")]
    pub steps: Vec<BundleStep>,
    /// Information that goes with it.
    #[serde(default)]
    pub information: Vec<Information>,
    /// Words people search for it by.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// What the applicant declares when submitting.
    pub declaration: Text,
}

/// What a person applies for: one service, or a life event's services together.
#[derive(Debug, Clone, Copy)]
pub enum Offering<'a> {
    /// A service on its own.
    Service(&'a Service),
    /// A life event.
    LifeEvent(&'a LifeEvent),
}

impl Offering<'_> {
    /// Its identifier.
    pub fn id(&self) -> &str {
        match self {
            Offering::Service(s) => &s.id,
            Offering::LifeEvent(l) => &l.id,
        }
    }

    /// Its name.
    pub fn name(&self) -> &Text {
        match self {
            Offering::Service(s) => &s.name,
            Offering::LifeEvent(l) => &l.name,
        }
    }

    /// Its declaration.
    pub fn declaration(&self) -> &Text {
        match self {
            Offering::Service(s) => &s.declaration,
            Offering::LifeEvent(l) => &l.declaration,
        }
    }
}

/// A whole catalogue, checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The services.
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// The life events.
    #[serde(default, rename = "life_event")]
    pub life_events: Vec<LifeEvent>,
}

/// The demo country's catalogue, as shipped.
pub const DEMO: &str = include_str!("../catalog/demo.toml");

const LEVELS: [&str; 3] = ["low", "substantial", "high"];

impl Catalog {
    /// Reads and checks a catalogue written in TOML.
    pub fn parse(text: &str) -> Result<Catalog, ServicesError> {
        let c: Catalog = toml::from_str(text)
            .map_err(|e| ServicesError::Invalid(format!("the catalogue is not valid: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// Checks that every identifier is unique and every reference resolves.
    pub fn check(&self) -> Result<(), ServicesError> {
        let bad = |m: String| Err(ServicesError::Invalid(m));
        let mut ids = BTreeSet::new();
        for s in &self.services {
            if !is_identifier(&s.id) {
                return bad(format!(
                    "service id {:?} is not lower-case letters, digits and hyphens",
                    s.id
                ));
            }
            if !ids.insert(s.id.as_str()) {
                return bad(format!("{} is defined twice", s.id));
            }
            if !LEVELS.contains(&s.loa.as_str()) {
                return bad(format!("{}: loa must be low, substantial or high", s.id));
            }
            if s.sla_days == 0 || s.sla_days > 365 {
                return bad(format!("{}: sla_days must be 1 to 365", s.id));
            }
            crate::form::check_steps(&s.id, &s.steps)?;
        }
        for l in &self.life_events {
            if !is_identifier(&l.id) {
                return bad(format!(
                    "life event id {:?} is not lower-case letters, digits and hyphens",
                    l.id
                ));
            }
            if !ids.insert(l.id.as_str()) {
                return bad(format!("{} is defined twice", l.id));
            }
            if l.steps.is_empty() {
                return bad(format!("{}: a life event needs at least one step", l.id));
            }
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for st in &l.steps {
                if self.service(&st.service).is_none() {
                    return bad(format!("{}: no service {}", l.id, st.service));
                }
                for a in &st.after {
                    // Only an earlier step: so the order has no cycle.
                    if !seen.contains(a.as_str()) {
                        return bad(format!(
                            "{}: {} waits for {a}, which is not an earlier step",
                            l.id, st.service
                        ));
                    }
                }
                if !seen.insert(&st.service) {
                    return bad(format!("{}: {} is a step twice", l.id, st.service));
                }
            }
            // The bundle's form must be consistent: a question asked by two services must
            // be the same question.
            let mut questions = BTreeMap::new();
            for st in &l.steps {
                let s = self.service(&st.service).expect("checked above");
                for q in s.steps.iter().flat_map(|x| &x.questions) {
                    if let Some(prev) = questions.insert(q.id.as_str(), q)
                        && prev != q
                    {
                        return bad(format!(
                            "{}: question {} differs between its services",
                            l.id, q.id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A service by its identifier.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// A life event by its identifier.
    pub fn life_event(&self, id: &str) -> Option<&LifeEvent> {
        self.life_events.iter().find(|l| l.id == id)
    }

    /// A service or life event by its identifier.
    pub fn offering(&self, id: &str) -> Option<Offering<'_>> {
        self.service(id)
            .map(Offering::Service)
            .or_else(|| self.life_event(id).map(Offering::LifeEvent))
    }

    /// The services of an offering in order, each with the services it waits for.
    pub fn steps_of<'a>(&'a self, o: Offering<'a>) -> Vec<(&'a Service, Vec<&'a str>)> {
        match o {
            Offering::Service(s) => vec![(s, vec![])],
            Offering::LifeEvent(l) => l
                .steps
                .iter()
                .filter_map(|st| {
                    self.service(&st.service)
                        .map(|s| (s, st.after.iter().map(String::as_str).collect()))
                })
                .collect(),
        }
    }

    /// The form of an offering: its services' steps in order, each question asked once
    /// (a question two services share is asked in the first that has it; a step left
    /// without questions is dropped).
    pub fn form_of(&self, o: Offering<'_>) -> Form {
        let mut asked = BTreeSet::new();
        let mut steps = Vec::new();
        for (s, _) in self.steps_of(o) {
            for st in &s.steps {
                let questions: Vec<_> = st
                    .questions
                    .iter()
                    .filter(|q| asked.insert(q.id.clone()))
                    .cloned()
                    .collect();
                if !questions.is_empty() {
                    steps.push(Step {
                        id: format!("{}.{}", s.id, st.id),
                        questions,
                        ..st.clone()
                    });
                }
            }
        }
        Form { steps }
    }

    /// The strictest level of assurance among an offering's services.
    pub fn loa_of(&self, o: Offering<'_>) -> &'static str {
        let rank = |l: &str| LEVELS.iter().position(|x| *x == l).unwrap_or(0);
        let top = self
            .steps_of(o)
            .iter()
            .map(|(s, _)| rank(&s.loa))
            .max()
            .unwrap_or(0);
        LEVELS[top]
    }

    /// The agencies that have services, in order.
    pub fn agencies(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.services.iter().map(|s| s.agency.as_str()).collect();
        set.into_iter().collect()
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
