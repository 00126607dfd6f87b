//! Consent records, after ISO/IEC TS 27560 (consent record information structure) with the
//! W3C Data Privacy Vocabulary's consent states. A record belongs to one person and one
//! agreement; each change of state is a new version, signed as a JWS whose claims name the
//! previous version's digest (so the history is a chain), appended to the ledger with the JWS
//! as its private payload, and kept in `consent_history`. The person's receipt is that JWS
//! with the ledger entry's C2SP tlog-proof.

use base64::Engine;
use civitas_ledger::event::{hex, now_ms};
use civitas_ledger::{Event, ProofBundle};
use civitas_store::sqlx::{self, Row, any::AnyRow};
use civitas_store::{Script, Value as Sql};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::agreement::conflict_or;
use crate::{Access, Agreement, AgreementState, ConsentError, Consents};

const DAY_MS: i64 = 86_400_000;

/// A consent record's state (DPV's consent status, and `paused` for periodic access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentState {
    /// Given, and valid for processing until it expires.
    Given,
    /// Refused when asked.
    Refused,
    /// Withdrawn by the person: no further release.
    Withdrawn,
    /// Past its duration.
    Expired,
    /// Periodic access paused by the person; it can be resumed.
    Paused,
}

impl ConsentState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Given => "given",
            ConsentState::Refused => "refused",
            ConsentState::Withdrawn => "withdrawn",
            ConsentState::Expired => "expired",
            ConsentState::Paused => "paused",
        }
    }

    /// Its term in the W3C Data Privacy Vocabulary (pausing has none: Civitas's own term).
    pub fn dpv(self) -> &'static str {
        match self {
            ConsentState::Given => "dpv:ConsentGiven",
            ConsentState::Refused => "dpv:ConsentRefused",
            ConsentState::Withdrawn => "dpv:ConsentWithdrawn",
            ConsentState::Expired => "dpv:ConsentExpired",
            ConsentState::Paused => "civitas:ConsentPaused",
        }
    }

    fn parse(s: &str) -> Option<ConsentState> {
        [
            ConsentState::Given,
            ConsentState::Refused,
            ConsentState::Withdrawn,
            ConsentState::Expired,
            ConsentState::Paused,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A change the person asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Withdraw a given or paused consent.
    Withdraw,
    /// Pause a given periodic consent.
    Pause,
    /// Resume a paused consent (its expiry does not move).
    Resume,
}

/// A person's consent record, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Its id.
    pub id: String,
    /// The agreement it answers.
    pub agreement_id: String,
    /// Its state as stored.
    pub state: ConsentState,
    /// Its state now: a given or paused consent past its expiry is expired.
    pub effective_state: ConsentState,
    /// Its current version (1 for the first decision).
    pub version: i64,
    /// When consent was given (ms).
    pub given_ms: Option<i64>,
    /// When it expires (ms).
    pub expires_ms: i64,
    /// When it last changed (ms).
    pub updated_ms: i64,
}

impl ConsentRecord {
    fn at(mut self, now: i64) -> ConsentRecord {
        self.effective_state = match self.state {
            ConsentState::Given | ConsentState::Paused if now >= self.expires_ms => {
                ConsentState::Expired
            }
            s => s,
        };
        self
    }
}

/// One version of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The version.
    pub version: i64,
    /// The state it set.
    pub state: ConsentState,
    /// When (ms).
    pub at_ms: i64,
    /// The signed record (compact JWS).
    pub jws: String,
    /// Its ledger entry.
    pub ledger_index: Option<i64>,
}

/// What a person keeps: the signed record and the proof that the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The record's id.
    pub record_id: String,
    /// The version this receipt is for.
    pub version: i64,
    /// The state that version set.
    pub state: ConsentState,
    /// The signed record (compact JWS, EdDSA).
    pub record: String,
    /// The ledger entry's index.
    pub ledger_index: u64,
    /// The entry's C2SP tlog-proof bundle (the entry itself as its extra data).
    pub proof: String,
}

/// Whether a consent allows a release now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// Whether it does.
    pub valid: bool,
    /// The record's state now.
    pub state: ConsentState,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agreement.
    pub agreement_id: String,
    /// The items it covers.
    pub items: Vec<String>,
    /// When it expires (ms).
    pub expires_ms: i64,
}

const RECORD_COLUMNS: &str =
    "id, agreement_id, subject_ref, state, version, given_ms, expires_ms, updated_ms";

fn record_of(r: &AnyRow) -> Result<(ConsentRecord, String), ConsentError> {
    let state: String = r.try_get("state")?;
    let state = ConsentState::parse(&state)
        .ok_or_else(|| ConsentError::Invalid(format!("a stored record's state {state:?}")))?;
    Ok((
        ConsentRecord {
            id: r.try_get("id")?,
            agreement_id: r.try_get("agreement_id")?,
            state,
            effective_state: state,
            version: r.try_get("version")?,
            given_ms: r.try_get("given_ms")?,
            expires_ms: r.try_get("expires_ms")?,
            updated_ms: r.try_get("updated_ms")?,
        },
        r.try_get("subject_ref")?,
    ))
}

impl Consents {
    /// The person (`subject_ref`, as the ledger knows them; `actor` for the log) gives
    /// (`give`) or refuses consent to an approved agreement. A new record either way; giving
    /// while a consent to the same agreement is in force is a conflict.
    pub async fn answer(
        &self,
        agreement_id: &str,
        subject_ref: &str,
        give: bool,
        actor: &str,
    ) -> Result<Receipt, ConsentError> {
        let agreement = self
            .agreement(agreement_id)
            .await?
            .filter(|a| a.state == AgreementState::Approved)
            .ok_or_else(|| {
                ConsentError::NotFound(format!("no approved agreement {agreement_id}"))
            })?;
        if agreement.legal_basis != "consent" {
            return Err(ConsentError::Invalid(format!(
                "agreement {agreement_id} rests on {}, not on consent",
                agreement.legal_basis
            )));
        }
        let now = now_ms();
        if give
            && self
                .records_of(subject_ref)
                .await?
                .iter()
                .any(|r| r.agreement_id == agreement_id && in_force(r.effective_state))
        {
            return Err(ConsentError::Conflict(format!(
                "a consent to agreement {agreement_id} is in force already"
            )));
        }
        let record = ConsentRecord {
            id: uuid::Uuid::new_v4().to_string(),
            agreement_id: agreement_id.into(),
            state: if give {
                ConsentState::Given
            } else {
                ConsentState::Refused
            },
            effective_state: ConsentState::Given,
            version: 1,
            given_ms: give.then_some(now),
            expires_ms: now + agreement.duration_days * DAY_MS,
            updated_ms: now,
        };
        let mut w = Script::new();
        // A consent is given only while none to the same agreement is in force: two answers
        // at once (a form sent twice) give one record, and the other append is refused.
        w.push(
            "INSERT INTO consent_records (id, agreement_id, subject_ref, state, version, given_ms, expires_ms, updated_ms) SELECT ?, ?, ?, ?, 1, ?, ?, ? WHERE ? = 'refused' OR NOT EXISTS (SELECT 1 FROM consent_records WHERE agreement_id = ? AND subject_ref = ? AND state IN ('given', 'paused') AND expires_ms > ?)",
            vec![
                Sql::Text(record.id.clone()),
                Sql::Text(agreement_id.into()),
                Sql::Text(subject_ref.into()),
                Sql::Str(record.state.as_str()),
                record.given_ms.into(),
                Sql::I64(record.expires_ms),
                Sql::I64(now),
                Sql::Str(record.state.as_str()),
                Sql::Text(agreement_id.into()),
                Sql::Text(subject_ref.into()),
                Sql::I64(now),
            ],
        );
        self.record_change(&agreement, record.at(now), subject_ref, None, w, actor)
            .await
            .map_err(|e| match e {
                ConsentError::Conflict(_) => ConsentError::Conflict(format!(
                    "a consent to agreement {agreement_id} is in force already"
                )),
                e => e,
            })
    }

    /// The person withdraws, pauses or resumes their consent record `id`.
    pub async fn change(
        &self,
        id: &str,
        subject_ref: &str,
        change: Change,
        actor: &str,
    ) -> Result<Receipt, ConsentError> {
        let now = now_ms();
        let (record, owner) = self.stored(id).await?;
        if owner != subject_ref {
            return Err(ConsentError::NotFound(format!("no consent {id}")));
        }
        let record = record.at(now);
        let agreement = self
            .agreement(&record.agreement_id)
            .await?
            .ok_or_else(|| ConsentError::NotFound(format!("no agreement for consent {id}")))?;
        let from = record.effective_state;
        let to = match (change, from) {
            (Change::Withdraw, ConsentState::Given | ConsentState::Paused) => {
                ConsentState::Withdrawn
            }
            (Change::Pause, ConsentState::Given) if agreement.access == Access::Periodic => {
                ConsentState::Paused
            }
            (Change::Pause, ConsentState::Given) => {
                return Err(ConsentError::Conflict(
                    "only a consent to periodic access can be paused".into(),
                ));
            }
            (Change::Resume, ConsentState::Paused) => ConsentState::Given,
            _ => {
                return Err(ConsentError::Conflict(format!(
                    "consent {id} is {}; it cannot be {}",
                    from.as_str(),
                    match change {
                        Change::Withdraw => "withdrawn",
                        Change::Pause => "paused",
                        Change::Resume => "resumed",
                    }
                )));
            }
        };
        self.transition(&agreement, record, subject_ref, to, actor)
            .await
    }

    /// Moves a record to its next version in state `to`: a compare-and-set on the version
    /// (of two changes at once, one wins), signed, chained to the version before, logged.
    async fn transition(
        &self,
        agreement: &Agreement,
        record: ConsentRecord,
        subject_ref: &str,
        to: ConsentState,
        actor: &str,
    ) -> Result<Receipt, ConsentError> {
        let previous = self
            .history(&record.id)
            .await?
            .into_iter()
            .find(|h| h.version == record.version)
            .map(|h| h.jws);
        let now = now_ms();
        let mut next = record.clone();
        next.state = to;
        next.effective_state = to;
        next.version += 1;
        next.updated_ms = now;
        let mut w = Script::new();
        w.push(
            "UPDATE consent_records SET state = ?, version = ?, updated_ms = ? WHERE id = ? AND version = ?",
            vec![
                Sql::Str(to.as_str()),
                Sql::I64(next.version),
                Sql::I64(now),
                Sql::Text(record.id.clone()),
                Sql::I64(record.version),
            ],
        );
        self.record_change(agreement, next, subject_ref, previous.as_deref(), w, actor)
            .await
    }

    /// Signs a record's new version, appends it to the ledger with `writes` (the record's
    /// row) and the history row, and returns the receipt.
    async fn record_change(
        &self,
        agreement: &Agreement,
        record: ConsentRecord,
        subject_ref: &str,
        previous: Option<&str>,
        mut writes: Script,
        actor: &str,
    ) -> Result<Receipt, ConsentError> {
        let tag = self.ledger.subject_secret(subject_ref).await?.tag();
        let claims = json!({
            "schema": "civitas.consent-record/1 (ISO/IEC TS 27560)",
            "iss": self.issuer,
            "iat": record.updated_ms / 1000,
            "record_id": record.id,
            "version": record.version,
            "data_subject": tag.to_string(),
            "data_controller": { "client_id": agreement.client_id, "name": agreement.recipient },
            "agreement_id": agreement.id,
            "purpose": agreement.purpose,
            "legal_basis": "dpv:A6-1-a",
            "personal_data": agreement.items,
            "processing": {
                "access": agreement.access,
                "retention_days": agreement.retention_days,
            },
            "state": record.state.as_str(),
            "dpv_state": record.state.dpv(),
            "state_at_ms": record.updated_ms,
            "given_ms": record.given_ms,
            "expires_ms": record.expires_ms,
            "previous_sha256": previous.map(|p| hex(&sha2::Sha256::digest(p.as_bytes()))),
        });
        let jws = self.key.sign(&claims);
        writes.push(
            // A change that lost its compare-and-set writes no version either (so the append
            // is refused as a conflict, not failed).
            "INSERT INTO consent_history (record_id, version, state, at_ms, jws) VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_id, version) DO NOTHING",
            vec![
                Sql::Text(record.id.clone()),
                Sql::I64(record.version),
                Sql::Str(record.state.as_str()),
                Sql::I64(record.updated_ms),
                Sql::Text(jws.clone()),
            ],
        );
        let kind = match (record.state, record.version) {
            (ConsentState::Given, v) if v > 1 => "consent.resumed",
            (s, _) => match s {
                ConsentState::Given => "consent.given",
                ConsentState::Refused => "consent.refused",
                ConsentState::Withdrawn => "consent.withdrawn",
                ConsentState::Paused => "consent.paused",
                ConsentState::Expired => "consent.expired",
            },
        };
        let event = Event::new(kind, actor, &format!("consent/{}", record.id))
            .about(tag)
            .with("agreement_id", agreement.id.clone())
            .with("purpose", agreement.purpose.clone())
            .with("version", record.version)
            .private_payload(jws.as_bytes());
        // The append and what decisions remember of it run as a task of their own: a caller
        // that goes away (a dropped request) cannot leave a committed change unremembered.
        let (this, kept, owner) = (self.clone(), record.clone(), subject_ref.to_string());
        let appended = tokio::spawn(async move {
            let done = this.ledger.append_with(&event, writes).await;
            match &done {
                // Before the change returns: the very next decision sees it.
                Ok(_) => this.remember(&kept, &owner),
                // Refused writes committed nothing; any other failure may have committed
                // (an unknown outcome), so the record is read again next time.
                Err(civitas_ledger::LedgerError::WritesRefused(_)) => {}
                Err(_) => this.forget(&kept.id),
            }
            done
        })
        .await
        .map_err(|e| ConsentError::Invalid(format!("the change's task failed: {e}")))?;
        let index = appended
            .map_err(|e| conflict_or(e, &format!("consent {} changed meanwhile", record.id)))?;
        // Where the receipt's proof is found; should this fail, `receipt` finds the entry
        // by the record's digest.
        let _ = sqlx::query(
            "UPDATE consent_history SET ledger_index = $1 WHERE record_id = $2 AND version = $3",
        )
        .bind(index as i64)
        .bind(&record.id)
        .bind(record.version)
        .execute(self.db.pool())
        .await;
        let proof = self.ledger.proof_bundle(index).await?;
        Ok(Receipt {
            record_id: record.id,
            version: record.version,
            state: record.state,
            record: jws,
            ledger_index: index,
            proof: proof.to_text(),
        })
    }

    async fn stored(&self, id: &str) -> Result<(ConsentRecord, String), ConsentError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM consent_records WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| ConsentError::NotFound(format!("no consent {id}")))?;
        record_of(&row)
    }

    /// A record with its owner's subject reference.
    pub async fn record(&self, id: &str) -> Result<(ConsentRecord, String), ConsentError> {
        let (r, owner) = self.stored(id).await?;
        Ok((r.at(now_ms()), owner))
    }

    /// A person's records, newest first.
    pub async fn records_of(&self, subject_ref: &str) -> Result<Vec<ConsentRecord>, ConsentError> {
        let now = now_ms();
        let rows = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM consent_records WHERE subject_ref = $1 ORDER BY updated_ms DESC, id"
        ))
        .bind(subject_ref)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok(record_of(r)?.0.at(now))).collect()
    }

    /// A record's versions, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, ConsentError> {
        let rows = sqlx::query(
            "SELECT version, state, at_ms, jws, ledger_index FROM consent_history WHERE record_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(HistoryEntry {
                    version: r.try_get("version")?,
                    state: ConsentState::parse(&state).ok_or_else(|| {
                        ConsentError::Invalid(format!("a stored version's state {state:?}"))
                    })?,
                    at_ms: r.try_get("at_ms")?,
                    jws: r.try_get("jws")?,
                    ledger_index: r.try_get("ledger_index")?,
                })
            })
            .collect()
    }

    /// The receipt of a record's current version.
    pub async fn receipt(&self, id: &str) -> Result<Receipt, ConsentError> {
        let (record, owner) = self.stored(id).await?;
        let entry = self
            .history(id)
            .await?
            .into_iter()
            .find(|h| h.version == record.version)
            .ok_or_else(|| ConsentError::NotFound(format!("consent {id} has no signed record")))?;
        let index = match entry.ledger_index {
            Some(i) => i as u64,
            None => {
                let digest = hex(&sha2::Sha256::digest(entry.jws.as_bytes()));
                let tag = self.ledger.subject_secret(&owner).await?.tag();
                self.ledger
                    .subject_events(tag)
                    .await?
                    .into_iter()
                    .find(|(_, e)| e.payload_sha256.as_deref() == Some(digest.as_str()))
                    .map(|(i, _)| i)
                    .ok_or_else(|| {
                        ConsentError::NotFound(format!("consent {id}'s ledger entry is missing"))
                    })?
            }
        };
        let proof = self.ledger.proof_bundle(index).await?;
        Ok(Receipt {
            record_id: record.id,
            version: entry.version,
            state: entry.state,
            record: entry.jws,
            ledger_index: index,
            proof: proof.to_text(),
        })
    }

    /// Whether consent `id` allows a release now, asked by the organisation `client_id`
    /// (`None`: the platform itself). An organisation learns only of consents to its own
    /// agreements.
    pub async fn check(&self, id: &str, client_id: Option<&str>) -> Result<Validity, ConsentError> {
        let (record, _) = self.for_decision(id).await?;
        let agreement = self.agreement_of(&record, client_id).await?;
        Ok(validity(&record, &agreement))
    }

    /// A record as of now, as a decision needs it (from memory where that is sound), and
    /// the digest of its owner's subject reference.
    async fn for_decision(&self, id: &str) -> Result<(ConsentRecord, u64), ConsentError> {
        let known = match crate::decisions::key(id).filter(|_| self.remember) {
            Some(key) => crate::decisions::memory().get(key),
            None => None,
        };
        let (record, owner) = match known {
            Some((k, agreement_id)) => (
                ConsentRecord {
                    id: id.to_string(),
                    agreement_id,
                    state: k.state,
                    effective_state: k.state,
                    version: k.version,
                    given_ms: None,
                    expires_ms: k.expires_ms,
                    updated_ms: 0,
                },
                k.owner,
            ),
            None => {
                let (record, owner) = self.stored(id).await?;
                self.remember(&record, &owner);
                (record, crate::decisions::owner_digest(&owner))
            }
        };
        Ok((record.at(now_ms()), owner))
    }

    /// An agreement, from memory where that is sound (SQLite: every decision on it is made
    /// in this process, which puts each decision on it there before it returns).
    async fn agreement_for_decision(
        &self,
        id: &str,
    ) -> Result<Option<std::sync::Arc<Agreement>>, ConsentError> {
        if self.remember
            && let Some(a) = crate::decisions::agreements()
                .read()
                .ok()
                .and_then(|m| m.get(id).cloned())
        {
            return Ok(Some(a));
        }
        let Some(a) = self.agreement(id).await? else {
            return Ok(None);
        };
        let a = std::sync::Arc::new(a);
        self.remember_agreement(&a);
        Ok(Some(a))
    }

    /// Keeps what a decision needs of `record` in memory, where that is sound (SQLite).
    fn remember(&self, record: &ConsentRecord, owner: &str) {
        if let Some(key) = crate::decisions::key(&record.id).filter(|_| self.remember) {
            crate::decisions::memory().put(
                key,
                &record.agreement_id,
                record.state,
                record.version,
                record.expires_ms,
                crate::decisions::owner_digest(owner),
            );
        }
    }

    /// Forgets what decisions remember of record `id`: the next decision reads it.
    fn forget(&self, id: &str) {
        if let Some(key) = crate::decisions::key(id) {
            crate::decisions::memory().forget(key);
        }
    }

    /// Puts every record's decision state in memory (SQLite; nothing on PostgreSQL), so the
    /// first decision on each does not wait for the database. A server does this in the
    /// background as it starts. Returns how many records it read.
    pub async fn warm(&self) -> Result<u64, ConsentError> {
        if !self.remember {
            return Ok(0);
        }
        let mut rows = sqlx::query(
            "SELECT id, agreement_id, state, version, expires_ms, subject_ref FROM consent_records",
        )
        .fetch(self.db.pool());
        let mut n = 0;
        use futures_util::TryStreamExt;
        while let Some(r) = rows.try_next().await? {
            let id: String = r.try_get("id")?;
            let agreement_id: String = r.try_get("agreement_id")?;
            let state: String = r.try_get("state")?;
            let (Some(key), Some(state)) =
                (crate::decisions::key(&id), ConsentState::parse(&state))
            else {
                continue;
            };
            crate::decisions::memory().put(
                key,
                &agreement_id,
                state,
                r.try_get("version")?,
                r.try_get("expires_ms")?,
                crate::decisions::owner_digest(&r.try_get::<String, _>("subject_ref")?),
            );
            n += 1;
        }
        Ok(n)
    }

    /// A record's agreement, for the organisation `client_id` (`None`: the platform); a
    /// consent to another organisation's agreement is not found.
    async fn agreement_of(
        &self,
        record: &ConsentRecord,
        client_id: Option<&str>,
    ) -> Result<std::sync::Arc<Agreement>, ConsentError> {
        let missing = || ConsentError::NotFound(format!("no consent {}", record.id));
        let agreement = self
            .agreement_for_decision(&record.agreement_id)
            .await?
            .ok_or_else(missing)?;
        if client_id.is_some_and(|c| c != agreement.client_id) {
            return Err(missing());
        }
        Ok(agreement)
    }
}

/// Whether `record` (its state as of when it was read) allows a release under `agreement`.
fn validity(record: &ConsentRecord, agreement: &Agreement) -> Validity {
    let reason = match record.effective_state {
        _ if agreement.state != AgreementState::Approved => {
            Some("its agreement is no longer in force".to_string())
        }
        ConsentState::Given => None,
        s => Some(format!("the consent is {}", s.as_str())),
    };
    Validity {
        valid: reason.is_none(),
        state: record.effective_state,
        reason,
        agreement_id: agreement.id.clone(),
        items: agreement.items.clone(),
        expires_ms: record.expires_ms,
    }
}

impl Consents {
    /// Starts a release under consent `id`, of the person `subject_ref`, to the organisation
    /// `client_id`: the consent is checked now, and a one-time consent is used up before
    /// anything is read (its next version is `expired`, signed and logged; of two releases at
    /// once, or a release and a withdrawal, one wins). Returns the validity (not valid:
    /// release nothing) and the agreement.
    pub async fn start_release(
        &self,
        id: &str,
        client_id: &str,
        subject_ref: &str,
    ) -> Result<(Validity, std::sync::Arc<Agreement>), ConsentError> {
        let not_theirs = || ConsentError::NotFound(format!("no consent {id}"));
        // A periodic consent is decided as any decision is (from memory on SQLite).
        let (known, owner) = self.for_decision(id).await?;
        if owner != crate::decisions::owner_digest(subject_ref) {
            return Err(not_theirs());
        }
        let agreement = self.agreement_of(&known, Some(client_id)).await?;
        if agreement.access != Access::OneTime {
            return Ok((validity(&known, &agreement), agreement));
        }
        // A one-time consent is used up: one read decides, and the use is a compare-and-set
        // on the version read here, so a withdrawal or another release after this read makes
        // it fail.
        let (record, owner) = self.record(id).await?;
        if owner != subject_ref {
            return Err(not_theirs());
        }
        let agreement = self.agreement_of(&record, Some(client_id)).await?;
        let mut validity = validity(&record, &agreement);
        if validity.valid {
            let actor = format!("client:{client_id}");
            match self
                .transition(&agreement, record, &owner, ConsentState::Expired, &actor)
                .await
            {
                Ok(_) => {}
                Err(ConsentError::Conflict(_)) => {
                    validity.valid = false;
                    validity.reason =
                        Some("the consent changed meanwhile (used or withdrawn)".into());
                }
                Err(e) => return Err(e),
            }
        }
        Ok((validity, agreement))
    }
}

fn in_force(s: ConsentState) -> bool {
    matches!(s, ConsentState::Given | ConsentState::Paused)
}

/// Checks a receipt: the record's signature under the consent key, the proof under the
/// ledger's verifier key, and that the proven entry is this record's (its object and the
/// digest of the signed record). Returns the record's claims.
pub fn verify_receipt(
    receipt: &Receipt,
    consent_key: &VerifyingKey,
    ledger_verifier_key: &str,
) -> Result<Value, ConsentError> {
    let claims = crate::verify_jws(&receipt.record, consent_key)?;
    let bundle = ProofBundle::parse(&receipt.proof)
        .map_err(|e| ConsentError::Unverified(format!("the proof is unreadable: {e}")))?;
    bundle
        .verify(ledger_verifier_key)
        .map_err(|e| ConsentError::Unverified(format!("the proof does not verify: {e}")))?;
    let entry = bundle
        .extra
        .as_deref()
        .and_then(|b| Event::decode(b).ok())
        .ok_or_else(|| ConsentError::Unverified("the proof carries no ledger entry".into()))?;
    let digest = hex(&sha2::Sha256::digest(receipt.record.as_bytes()));
    if entry.payload_sha256.as_deref() != Some(digest.as_str())
        || entry.object != format!("consent/{}", receipt.record_id)
        || bundle.index != receipt.ledger_index
        || claims["record_id"] != receipt.record_id.as_str()
        || claims["version"] != receipt.version
        || claims["state"] != receipt.state.as_str()
    {
        return Err(ConsentError::Unverified(
            "the ledger entry is not this record's".into(),
        ));
    }
    Ok(claims)
}

/// A verifying key from a JWK Set's first Ed25519 key (as `Consents::jwks` publishes it).
pub fn key_from_jwks(jwks: &Value) -> Option<VerifyingKey> {
    let x = jwks["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519")?["x"]
        .as_str()?;
    let bytes: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .ok()?
        .try_into()
        .ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

impl Consents {
    /// Loads `n` consent records to `agreement_id` straight into the table, for benchmarks:
    /// no signed history and no ledger events. Subjects are `bench:<i>`; states are spread
    /// as a live service's might be (of each 20: 16 given, 2 withdrawn, 1 paused, 1 past its
    /// end). Returns the records' ids.
    pub async fn bulk_load_for_benchmark(
        &self,
        agreement_id: &str,
        n: u64,
    ) -> Result<Vec<String>, ConsentError> {
        const CHUNK: u64 = 20_000;
        let now = now_ms();
        let mut ids = Vec::with_capacity(n as usize);
        let mut done = 0;
        while done < n {
            let count = CHUNK.min(n - done);
            let mut rows = civitas_store::BulkInsert::new(
                "consent_records",
                &[
                    "id",
                    "agreement_id",
                    "subject_ref",
                    "state",
                    "version",
                    "given_ms",
                    "expires_ms",
                    "updated_ms",
                ],
            );
            for i in done..done + count {
                let id = uuid::Uuid::new_v4().to_string();
                let (state, expires) = match i % 20 {
                    0 | 1 => (ConsentState::Withdrawn, now + DAY_MS),
                    2 => (ConsentState::Paused, now + DAY_MS),
                    3 => (ConsentState::Given, now - DAY_MS),
                    _ => (ConsentState::Given, now + 30 * DAY_MS),
                };
                rows.row([
                    Sql::Text(id.clone()),
                    Sql::Text(agreement_id.into()),
                    Sql::Text(format!("bench:{i}")),
                    Sql::Str(state.as_str()),
                    Sql::I64(1),
                    Sql::I64(now - DAY_MS),
                    Sql::I64(expires),
                    Sql::I64(now),
                ]);
                ids.push(id);
            }
            let mut tx = self.db.pool().begin().await?;
            rows.flush(&mut tx, self.db.engine()).await?;
            tx.commit().await?;
            done += count;
        }
        Ok(ids)
    }
}

/// How many people's consents to an agreement stand in each state now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistics {
    /// Given and in force.
    pub given: i64,
    /// Paused (periodic access).
    pub paused: i64,
    /// Withdrawn.
    pub withdrawn: i64,
    /// Refused when asked.
    pub refused: i64,
    /// Past their end, or used (one-time access).
    pub expired: i64,
}

impl Consents {
    /// Counts of an agreement's consent records by their state now.
    pub async fn statistics(&self, agreement_id: &str) -> Result<Statistics, ConsentError> {
        let rows = sqlx::query(
            "SELECT CASE WHEN state IN ('given', 'paused') AND expires_ms <= $2 THEN 'expired' ELSE state END AS now_state, COUNT(*) AS n FROM consent_records WHERE agreement_id = $1 GROUP BY 1",
        )
        .bind(agreement_id)
        .bind(now_ms())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Statistics::default();
        for r in rows {
            let state: String = r.try_get("now_state")?;
            let n: i64 = r.try_get("n")?;
            match ConsentState::parse(&state) {
                Some(ConsentState::Given) => out.given += n,
                Some(ConsentState::Paused) => out.paused += n,
                Some(ConsentState::Withdrawn) => out.withdrawn += n,
                Some(ConsentState::Refused) => out.refused += n,
                Some(ConsentState::Expired) => out.expired += n,
                None => {}
            }
        }
        Ok(out)
    }
}
