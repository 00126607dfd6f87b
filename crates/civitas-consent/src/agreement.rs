//! Purposes and data agreements. An organisation (a registered OpenID Connect client)
//! proposes an agreement: a purpose from the registered list, a lawful basis, the data items
//! it wants (attributes of named registries), how long it keeps them, one-time or periodic
//! access and for how long; the operator approves or rejects it. Each step is a ledger event.

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row, any::AnyRow};
use civitas_store::{Script, Value as Sql};
use serde::{Deserialize, Serialize};

use crate::{ConsentError, Consents};

/// The lawful bases of GDPR Art. 6(1), as DPV names them.
pub const LEGAL_BASES: &[&str] = &[
    "consent",
    "contract",
    "legal-obligation",
    "vital-interest",
    "public-task",
    "legitimate-interest",
];

/// The longest an agreement's access may last: there is no endless access.
pub const MAX_DURATION_DAYS: i64 = 730;
/// The longest an organisation may keep what it received.
pub const MAX_RETENTION_DAYS: i64 = 3650;

/// A registered purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purpose {
    /// Its code, such as `loan-application`.
    pub code: String,
    /// Its name in English.
    pub name_en: String,
    /// Its name in Traditional Chinese.
    pub name_zh: String,
}

/// Whether access is once or repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// One release.
    OneTime,
    /// Releases while the consent lasts; it can be paused and resumed.
    Periodic,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::OneTime => "one-time",
            Access::Periodic => "periodic",
        }
    }
    fn parse(s: &str) -> Option<Access> {
        match s {
            "one-time" => Some(Access::OneTime),
            "periodic" => Some(Access::Periodic),
            _ => None,
        }
    }
}

/// Where an agreement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgreementState {
    /// Waiting for the operator.
    Proposed,
    /// In force: people may consent to it.
    Approved,
    /// Refused by the operator.
    Rejected,
}

impl AgreementState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgreementState::Proposed => "proposed",
            AgreementState::Approved => "approved",
            AgreementState::Rejected => "rejected",
        }
    }
    fn parse(s: &str) -> Option<AgreementState> {
        match s {
            "proposed" => Some(AgreementState::Proposed),
            "approved" => Some(AgreementState::Approved),
            "rejected" => Some(AgreementState::Rejected),
            _ => None,
        }
    }
}

/// What an organisation proposes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAgreement {
    /// A registered purpose's code.
    pub purpose: String,
    /// One of [`LEGAL_BASES`].
    pub legal_basis: String,
    /// Data items, `registry.attribute` (see `civitas_registry::attributes`).
    pub items: Vec<String>,
    /// How many days the organisation keeps what it receives.
    pub retention_days: i64,
    /// One-time or periodic.
    pub access: Access,
    /// How many days a consent to it lasts (at most [`MAX_DURATION_DAYS`]).
    pub duration_days: Option<i64>,
}

/// A data agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Its id.
    pub id: String,
    /// The receiving organisation's client id.
    pub client_id: String,
    /// The receiving organisation's name, as people see it.
    pub recipient: String,
    /// The purpose's code.
    pub purpose: String,
    /// The lawful basis.
    pub legal_basis: String,
    /// The data items.
    pub items: Vec<String>,
    /// Days the recipient keeps the data.
    pub retention_days: i64,
    /// One-time or periodic.
    pub access: Access,
    /// Days a consent lasts.
    pub duration_days: i64,
    /// Where it stands.
    pub state: AgreementState,
    /// When it was proposed (ms).
    pub proposed_ms: i64,
    /// When the operator decided (ms).
    pub decided_ms: Option<i64>,
    /// The operator's reason, for a rejection.
    pub reason: Option<String>,
}

fn agreement_of(r: &AnyRow) -> Result<Agreement, ConsentError> {
    let items: String = r.try_get("items")?;
    let corrupt = |what: &str| ConsentError::Invalid(format!("a stored agreement has {what}"));
    Ok(Agreement {
        id: r.try_get("id")?,
        client_id: r.try_get("client_id")?,
        recipient: r.try_get("recipient")?,
        purpose: r.try_get("purpose")?,
        legal_basis: r.try_get("legal_basis")?,
        items: serde_json::from_str(&items).map_err(|_| corrupt("unreadable items"))?,
        retention_days: r.try_get("retention_days")?,
        access: Access::parse(&r.try_get::<String, _>("access")?)
            .ok_or_else(|| corrupt("an unknown access"))?,
        duration_days: r.try_get("duration_days")?,
        state: AgreementState::parse(&r.try_get::<String, _>("state")?)
            .ok_or_else(|| corrupt("an unknown state"))?,
        proposed_ms: r.try_get("proposed_ms")?,
        decided_ms: r.try_get("decided_ms")?,
        reason: r.try_get("reason")?,
    })
}

const AGREEMENT_COLUMNS: &str = "id, client_id, recipient, purpose, legal_basis, items, retention_days, access, duration_days, state, proposed_ms, decided_ms, reason";

impl Consents {
    /// Registers a purpose agreements may name.
    pub async fn add_purpose(&self, p: &Purpose, actor: &str) -> Result<Purpose, ConsentError> {
        let code = p.code.trim();
        if code.is_empty()
            || code.len() > 64
            || !code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConsentError::Invalid(
                "a purpose's code is 1 to 64 characters of a-z, 0-9 and -".into(),
            ));
        }
        let (en, zh) = (p.name_en.trim(), p.name_zh.trim());
        if en.is_empty() || zh.is_empty() || en.len() > 200 || zh.len() > 200 {
            return Err(ConsentError::Invalid(
                "a purpose needs a name in English and in Chinese (each at most 200 bytes)".into(),
            ));
        }
        if self.purpose(code).await?.is_some() {
            return Err(ConsentError::Conflict(format!(
                "purpose {code} exists already"
            )));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO consent_purposes (code, name_en, name_zh, created_ms) VALUES (?, ?, ?, ?)",
            vec![
                Sql::Text(code.into()),
                Sql::Text(en.into()),
                Sql::Text(zh.into()),
                Sql::I64(now_ms()),
            ],
        );
        let event = Event::new(
            "consent.purpose_added",
            actor,
            &format!("consent/purpose/{code}"),
        );
        self.ledger
            .append_with(&event, w)
            .await
            .map_err(|e| conflict_or(e, &format!("purpose {code} exists already")))?;
        Ok(Purpose {
            code: code.into(),
            name_en: en.into(),
            name_zh: zh.into(),
        })
    }

    /// A registered purpose.
    pub async fn purpose(&self, code: &str) -> Result<Option<Purpose>, ConsentError> {
        Ok(self.purposes().await?.into_iter().find(|p| p.code == code))
    }

    /// Every registered purpose, by code.
    pub async fn purposes(&self) -> Result<Vec<Purpose>, ConsentError> {
        let rows = sqlx::query("SELECT code, name_en, name_zh FROM consent_purposes ORDER BY code")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Purpose {
                    code: r.try_get("code")?,
                    name_en: r.try_get("name_en")?,
                    name_zh: r.try_get("name_zh")?,
                })
            })
            .collect()
    }

    /// An organisation (client `client_id`, named `recipient`) proposes an agreement; it
    /// waits for the operator.
    pub async fn propose(
        &self,
        client_id: &str,
        recipient: &str,
        new: &NewAgreement,
    ) -> Result<Agreement, ConsentError> {
        let invalid = |m: String| Err(ConsentError::Invalid(m));
        if self.purpose(&new.purpose).await?.is_none() {
            return invalid(format!(
                "{:?} is not a registered purpose (GET /api/v1/consent/purposes lists them)",
                new.purpose
            ));
        }
        if !LEGAL_BASES.contains(&new.legal_basis.as_str()) {
            return invalid(format!(
                "the legal basis must be one of {}",
                LEGAL_BASES.join(", ")
            ));
        }
        if new.items.is_empty() || new.items.len() > 50 {
            return invalid("an agreement names 1 to 50 data items".into());
        }
        let mut items: Vec<String> = Vec::new();
        for item in &new.items {
            if civitas_registry::attributes::attribute(item).is_none() {
                return invalid(format!(
                    "{item:?} is not a data item of the registries (GET /api/v1/consent/items lists them)"
                ));
            }
            if !items.contains(item) {
                items.push(item.clone());
            }
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&new.retention_days) {
            return invalid(format!("the retention is 1 to {MAX_RETENTION_DAYS} days"));
        }
        let duration_days = match new.duration_days {
            Some(d) if (1..=MAX_DURATION_DAYS).contains(&d) => d,
            _ => {
                return invalid(format!(
                    "an agreement's access lasts 1 to {MAX_DURATION_DAYS} days; endless access is not agreed"
                ));
            }
        };
        let recipient = recipient.trim();
        let agreement = Agreement {
            id: uuid::Uuid::new_v4().to_string(),
            client_id: client_id.into(),
            recipient: recipient.into(),
            purpose: new.purpose.clone(),
            legal_basis: new.legal_basis.clone(),
            items,
            retention_days: new.retention_days,
            access: new.access,
            duration_days,
            state: AgreementState::Proposed,
            proposed_ms: now_ms(),
            decided_ms: None,
            reason: None,
        };
        let mut w = Script::new();
        w.push(
            "INSERT INTO consent_agreements (id, client_id, recipient, purpose, legal_basis, items, retention_days, access, duration_days, state, proposed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Sql::Text(agreement.id.clone()),
                Sql::Text(agreement.client_id.clone()),
                Sql::Text(agreement.recipient.clone()),
                Sql::Text(agreement.purpose.clone()),
                Sql::Text(agreement.legal_basis.clone()),
                Sql::Text(serde_json::to_string(&agreement.items).unwrap_or_default()),
                Sql::I64(agreement.retention_days),
                Sql::Str(agreement.access.as_str()),
                Sql::I64(duration_days),
                Sql::Str("proposed"),
                Sql::I64(agreement.proposed_ms),
            ],
        );
        let event = Event::new(
            "consent.agreement_proposed",
            &format!("client:{client_id}"),
            &format!("consent/agreement/{}", agreement.id),
        )
        .with("purpose", agreement.purpose.clone())
        .with("legal_basis", agreement.legal_basis.clone())
        .with("items", agreement.items.clone())
        .with("access", agreement.access.as_str())
        .with("duration_days", duration_days)
        .with("retention_days", agreement.retention_days);
        self.ledger.append_with(&event, w).await?;
        Ok(agreement)
    }

    /// The operator approves (`approve`) or rejects a proposed agreement, with a reason for
    /// a rejection.
    pub async fn decide_agreement(
        &self,
        id: &str,
        approve: bool,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<Agreement, ConsentError> {
        let mut agreement = self
            .agreement(id)
            .await?
            .ok_or_else(|| ConsentError::NotFound(format!("no agreement {id}")))?;
        if agreement.state != AgreementState::Proposed {
            return Err(ConsentError::Conflict(format!(
                "agreement {id} is {} already",
                agreement.state.as_str()
            )));
        }
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if !approve && reason.is_none_or(|r| r.len() > 500) {
            return Err(ConsentError::Invalid(
                "a rejection gives its reason (at most 500 bytes)".into(),
            ));
        }
        let state = if approve {
            AgreementState::Approved
        } else {
            AgreementState::Rejected
        };
        let at = now_ms();
        let mut w = Script::new();
        // Compare-and-set: two operators deciding at once cannot both succeed.
        w.push(
            "UPDATE consent_agreements SET state = ?, decided_ms = ?, decided_by = ?, reason = ? WHERE id = ? AND state = 'proposed'",
            vec![
                Sql::Str(state.as_str()),
                Sql::I64(at),
                Sql::Text(actor.into()),
                reason.map(str::to_string).into(),
                Sql::Text(id.into()),
            ],
        );
        let mut event = Event::new(
            if approve {
                "consent.agreement_approved"
            } else {
                "consent.agreement_rejected"
            },
            actor,
            &format!("consent/agreement/{id}"),
        );
        if let Some(r) = reason {
            event = event.with("reason", r);
        }
        self.ledger
            .append_with(&event, w)
            .await
            .map_err(|e| conflict_or(e, &format!("agreement {id} was decided meanwhile")))?;
        agreement.state = state;
        agreement.decided_ms = Some(at);
        agreement.reason = reason.map(str::to_string);
        // Before the decision returns: the very next consent decision sees it.
        self.remember_agreement(&std::sync::Arc::new(agreement.clone()));
        Ok(agreement)
    }

    /// Keeps an agreement for decisions, where that is sound (SQLite).
    pub(crate) fn remember_agreement(&self, a: &std::sync::Arc<Agreement>) {
        if self.remember
            && let Ok(mut m) = crate::decisions::agreements().write()
        {
            m.insert(a.id.clone(), a.clone());
        }
    }

    /// An agreement.
    pub async fn agreement(&self, id: &str) -> Result<Option<Agreement>, ConsentError> {
        let row = sqlx::query(&format!(
            "SELECT {AGREEMENT_COLUMNS} FROM consent_agreements WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(agreement_of).transpose()
    }

    /// Agreements, newest first: one organisation's (`client_id`) or all.
    pub async fn agreements(
        &self,
        client_id: Option<&str>,
    ) -> Result<Vec<Agreement>, ConsentError> {
        let rows = match client_id {
            Some(c) => sqlx::query(&format!(
                "SELECT {AGREEMENT_COLUMNS} FROM consent_agreements WHERE client_id = $1 ORDER BY proposed_ms DESC, id"
            ))
            .bind(c)
            .fetch_all(self.db.pool())
            .await?,
            None => sqlx::query(&format!(
                "SELECT {AGREEMENT_COLUMNS} FROM consent_agreements ORDER BY proposed_ms DESC, id"
            ))
            .fetch_all(self.db.pool())
            .await?,
        };
        rows.iter().map(agreement_of).collect()
    }
}

/// A ledger failure whose companion write was refused (a compare-and-set lost a race) as a
/// conflict.
pub(crate) fn conflict_or(e: civitas_ledger::LedgerError, conflict: &str) -> ConsentError {
    match e {
        civitas_ledger::LedgerError::WritesRefused(_) => {
            ConsentError::Conflict(conflict.to_string())
        }
        e => ConsentError::Ledger(e),
    }
}
