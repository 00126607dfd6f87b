//! Forms as data: steps of questions with their answer types, the conditions under which a
//! step or question is asked, and their checks. Answers are a JSON object keyed by question
//! id (a repeating group's answer is a list of such objects; a file's is what the object
//! store holds of it). A question can be bound to a registry data item: the portal fills it
//! from the registers and shows where the value came from, and a choice can take its
//! options from a registry list (the applicant's licences, buildings, children).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ServicesError;
use crate::catalog::Text;

/// The kinds of answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A person's name.
    Name,
    /// A national ID (Taiwan's, or a resident certificate's number), checksum checked.
    NationalId,
    /// An address.
    Address,
    /// A date (`YYYY-MM-DD`).
    Date,
    /// One of the options.
    Select,
    /// A whole number.
    Number,
    /// Free text.
    Text,
    /// An uploaded file.
    File,
    /// A repeating group of questions (`fields`).
    Group,
}

/// When a step or question is asked: when another question's answer is one of `any_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The question.
    pub question: String,
    /// The answers that make it asked.
    pub any_of: Vec<String>,
}

/// An option of a choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// What is stored.
    pub value: String,
    /// What the applicant reads.
    pub label: Text,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Its id, unique in the catalogue's forms that share it (`child.name`).
    pub id: String,
    /// Its kind of answer.
    pub kind: Kind,
    /// Its label.
    pub label: Text,
    /// A hint under the label.
    #[serde(default)]
    pub hint: Option<Text>,
    /// Whether an answer is needed.
    #[serde(default)]
    pub required: bool,
    /// The options of a choice.
    #[serde(default)]
    pub options: Vec<Choice>,
    /// A registry data item (`population.address`) that fills it, and how its fields make
    /// the answer (`{street_zh}`).
    #[serde(default)]
    pub prefill: Option<String>,
    /// The answer made from the prefilled item's fields (`{family_name}{given_name}`).
    #[serde(default)]
    pub prefill_format: Option<String>,
    /// A registry list (`land.buildings`) whose records are the options of a choice.
    #[serde(default)]
    pub options_from: Option<String>,
    /// Each such option's value and label, from the record's fields.
    #[serde(default)]
    pub option_value: Option<String>,
    /// See `option_value`.
    #[serde(default)]
    pub option_label: Option<String>,
    /// The smallest number.
    #[serde(default)]
    pub min: Option<i64>,
    /// The largest number.
    #[serde(default)]
    pub max: Option<i64>,
    /// The longest text, in characters (default 500).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// For a date: `past` (today or before) or `future` (today or after).
    #[serde(default)]
    pub when: Option<String>,
    /// When it is asked.
    #[serde(default)]
    pub show_if: Option<Condition>,
    /// A repeating group's questions.
    #[serde(default, rename = "field")]
    pub fields: Vec<Question>,
    /// A group's most entries (default 10).
    #[serde(default)]
    pub max_items: Option<usize>,
}

/// One step (page) of a form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Its id.
    pub id: String,
    /// Its heading.
    pub title: Text,
    /// When it is asked.
    #[serde(default)]
    pub show_if: Option<Condition>,
    /// Its questions.
    #[serde(rename = "question")]
    pub questions: Vec<Question>,
}

/// A whole form: steps in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Form {
    /// Its steps.
    pub steps: Vec<Step>,
}

/// A wrong answer: which question, and what is wrong, in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The question's id (a group's entry is `group[2].field`).
    pub question: String,
    /// What is wrong.
    pub message: Text,
}

fn err(question: &str, zh: &str, en: &str) -> FieldError {
    FieldError {
        question: question.to_string(),
        message: Text {
            zh: zh.to_string(),
            en: en.to_string(),
        },
    }
}

/// Whether a condition holds for the answers so far.
pub fn holds(c: &Option<Condition>, answers: &Map<String, Value>) -> bool {
    match c {
        None => true,
        Some(c) => answers
            .get(&c.question)
            .and_then(Value::as_str)
            .is_some_and(|a| c.any_of.iter().any(|x| x == a)),
    }
}

impl Form {
    /// The steps asked, given the answers so far.
    pub fn asked_steps<'a>(&'a self, answers: &Map<String, Value>) -> Vec<&'a Step> {
        self.steps
            .iter()
            .filter(|s| holds(&s.show_if, answers))
            .collect()
    }

    /// A step by id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Every question of the form (not a group's fields).
    pub fn questions(&self) -> impl Iterator<Item = &Question> {
        self.steps.iter().flat_map(|s| &s.questions)
    }

    /// The registry items the form fills or takes options from.
    pub fn prefill_items(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .questions()
            .flat_map(|q| [q.prefill.clone(), q.options_from.clone()])
            .flatten()
            .collect();
        set.into_iter().collect()
    }

    /// Checks every asked step; the answers to questions not asked are dropped.
    pub fn check_all(
        &self,
        answers: &Map<String, Value>,
        today: &str,
    ) -> (Map<String, Value>, Vec<FieldError>) {
        let mut kept = Map::new();
        let mut errors = Vec::new();
        for step in self.asked_steps(answers) {
            let (k, e) = check_step(step, answers, today);
            kept.extend(k);
            errors.extend(e);
        }
        (kept, errors)
    }
}

/// Checks a step's answers: what is kept of them (trimmed, questions not asked dropped) and
/// what is wrong.
pub fn check_step(
    step: &Step,
    answers: &Map<String, Value>,
    today: &str,
) -> (Map<String, Value>, Vec<FieldError>) {
    let mut kept = Map::new();
    let mut errors = Vec::new();
    for q in &step.questions {
        if !holds(&q.show_if, answers) {
            continue;
        }
        check_question(q, &q.id, answers.get(&q.id), today, &mut kept, &mut errors);
    }
    (kept, errors)
}

fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn check_question(
    q: &Question,
    key: &str,
    v: Option<&Value>,
    today: &str,
    kept: &mut Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    if is_blank(v) {
        if q.required {
            errors.push(err(
                key,
                &format!("請填寫「{}」", q.label.zh),
                &format!("Enter {}", q.label.en.to_lowercase()),
            ));
        }
        return;
    }
    let v = v.expect("not blank");
    match q.kind {
        Kind::Group => {
            let Some(items) = v.as_array() else {
                errors.push(err(key, "格式不正確", "This answer is not a list"));
                return;
            };
            if items.len() > q.max_items.unwrap_or(10) {
                errors.push(err(key, "項目太多", "Too many entries"));
                return;
            }
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let empty = Map::new();
                let m = item.as_object().unwrap_or(&empty);
                let mut k = Map::new();
                for f in &q.fields {
                    check_question(
                        f,
                        &format!("{key}[{i}].{}", f.id),
                        m.get(&f.id),
                        today,
                        &mut k,
                        errors,
                    );
                }
                // Keys inside an entry are the field ids.
                let entry: Map<String, Value> = k
                    .into_iter()
                    .map(|(name, val)| (name.rsplit('.').next().unwrap_or(&name).to_string(), val))
                    .collect();
                out.push(Value::Object(entry));
            }
            kept.insert(key.to_string(), Value::Array(out));
        }
        Kind::File => {
            // What the object store holds: its key, the name given, its size and digest.
            let ok = v.get("key").and_then(Value::as_str).is_some()
                && v.get("name").and_then(Value::as_str).is_some();
            if ok {
                kept.insert(key.to_string(), v.clone());
            } else {
                errors.push(err(key, "請上傳檔案", "Upload a file"));
            }
        }
        _ => {
            let Some(s) = v.as_str().map(str::trim) else {
                errors.push(err(key, "格式不正確", "This answer is not text"));
                return;
            };
            if let Some(e) = check_text(q, key, s, today) {
                errors.push(e);
            } else {
                let s = if q.kind == Kind::NationalId {
                    s.to_ascii_uppercase()
                } else {
                    s.to_string()
                };
                kept.insert(key.to_string(), Value::String(s));
            }
        }
    }
}

fn check_text(q: &Question, key: &str, s: &str, today: &str) -> Option<FieldError> {
    let max = q.max_length.unwrap_or(500);
    if s.chars().count() > max {
        return Some(err(
            key,
            &format!("「{}」不可超過 {max} 個字", q.label.zh),
            &format!("{} must be {max} characters or fewer", q.label.en),
        ));
    }
    if s.chars().any(char::is_control) {
        return Some(err(
            key,
            "含有無法使用的字元",
            "This answer has characters that cannot be used",
        ));
    }
    match q.kind {
        Kind::NationalId if !national_id_is_valid(s) => Some(err(
            key,
            "身分證統一編號格式不正確（一個英文字母加九位數字）",
            "Enter a valid national ID: a letter and nine digits",
        )),
        Kind::Date => {
            let Some(d) = parse_date(s) else {
                return Some(err(
                    key,
                    &format!("「{}」須為有效日期，例如 2026-03-01", q.label.zh),
                    &format!("{} must be a real date, like 2026-03-01", q.label.en),
                ));
            };
            match q.when.as_deref() {
                Some("past") if d.as_str() > today => Some(err(
                    key,
                    &format!("「{}」不可晚於今天", q.label.zh),
                    &format!("{} must be today or in the past", q.label.en),
                )),
                Some("future") if d.as_str() < today => Some(err(
                    key,
                    &format!("「{}」不可早於今天", q.label.zh),
                    &format!("{} must be today or in the future", q.label.en),
                )),
                _ => None,
            }
        }
        Kind::Number => match s.parse::<i64>() {
            Err(_) => Some(err(
                key,
                &format!("「{}」須為整數", q.label.zh),
                &format!("{} must be a whole number", q.label.en),
            )),
            Ok(n) if q.min.is_some_and(|m| n < m) || q.max.is_some_and(|m| n > m) => {
                let (lo, hi) = (q.min.unwrap_or(i64::MIN), q.max.unwrap_or(i64::MAX));
                Some(err(
                    key,
                    &format!("「{}」須介於 {lo} 與 {hi} 之間", q.label.zh),
                    &format!("{} must be between {lo} and {hi}", q.label.en),
                ))
            }
            Ok(_) => None,
        },
        // A choice with options from a registry list is checked against that list when the
        // form is filled (`Application::options`); a fixed choice here.
        Kind::Select if q.options_from.is_none() && !q.options.iter().any(|o| o.value == s) => {
            Some(err(key, "請從選項中選擇", "Select one of the options"))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD` for a real calendar date, normalised.
pub fn parse_date(s: &str) -> Option<String> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &f)
        .ok()
        .map(|d| d.format(&f).unwrap_or_default())
}

/// A national ID or resident certificate number, with its check digit.
pub fn national_id_is_valid(s: &str) -> bool {
    civitas_core::NationalId::parse(s).is_ok()
}

/// Fills `{field}` placeholders from a record's fields.
pub fn format_record(format: &str, record: &Value) -> String {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &rest[start + 1..start + end];
        match record.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// Checks the form's steps when a catalogue is loaded.
pub(crate) fn check_steps(service: &str, steps: &[Step]) -> Result<(), ServicesError> {
    let bad = |m: String| Err(ServicesError::Invalid(format!("{service}: {m}")));
    let mut ids = BTreeSet::new();
    let mut step_ids = BTreeSet::new();
    for st in steps {
        if !step_ids.insert(st.id.as_str()) {
            return bad(format!("step {} is defined twice", st.id));
        }
        if st.questions.is_empty() {
            return bad(format!("step {} has no questions", st.id));
        }
        for q in &st.questions {
            if !ids.insert(q.id.as_str()) {
                return bad(format!("question {} is defined twice", q.id));
            }
            check_question_def(q).or_else(|m| bad(format!("question {}: {m}", q.id)))?;
        }
    }
    // A condition names a question asked before it.
    let mut before: BTreeSet<&str> = BTreeSet::new();
    for st in steps {
        if let Some(c) = &st.show_if
            && !before.contains(c.question.as_str())
        {
            return bad(format!(
                "step {} depends on {}, not asked before it",
                st.id, c.question
            ));
        }
        let step_start = before.clone();
        for q in &st.questions {
            if let Some(c) = &q.show_if
                && !before.contains(c.question.as_str())
                && !step_start.contains(c.question.as_str())
            {
                return bad(format!(
                    "question {} depends on {}, not asked before it",
                    q.id, c.question
                ));
            }
            before.insert(&q.id);
        }
    }
    Ok(())
}

fn check_question_def(q: &Question) -> Result<(), String> {
    if q.id.is_empty()
        || !q
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
    {
        return Err("an id is lower-case letters, digits, dots and underscores".into());
    }
    match q.kind {
        Kind::Select if q.options.is_empty() && q.options_from.is_none() => {
            return Err("a choice needs options or options_from".into());
        }
        Kind::Group if q.fields.is_empty() => return Err("a group needs fields".into()),
        _ => {}
    }
    if q.options_from.is_some() && (q.option_value.is_none() || q.option_label.is_none()) {
        return Err("options_from needs option_value and option_label".into());
    }
    if q.prefill.is_some() != q.prefill_format.is_some() {
        return Err("prefill and prefill_format go together".into());
    }
    if let Some(w) = &q.when
        && w != "past"
        && w != "future"
    {
        return Err("when is past or future".into());
    }
    for f in &q.fields {
        if f.kind == Kind::Group {
            return Err("a group cannot hold a group".into());
        }
        check_question_def(f)?;
    }
    Ok(())
}
