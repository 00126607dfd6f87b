//! Mandates: acting for another person or for a business.
//!
//! Three sources: a parent acts for their minor children (from the population register's
//! parent links), a representative acts for a business (from the business register), and
//! anyone may grant a named person a mandate for a scope and a period, and revoke it.

use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use serde::{Deserialize, Serialize};

use crate::IdentityError;
use crate::secret::{now_ms, token};

/// What a granted mandate allows.
pub const SCOPES: [&str; 5] = ["all_services", "applications", "benefits", "health", "tax"];

/// Longest period a granted mandate may run, in days (renewable).
pub const MAX_DAYS: i64 = 2 * 366;

/// Whom a person acts for, and on what ground.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `parent` (for a minor child), `business` (as its representative) or `granted`.
    pub basis: String,
    /// Identifies the mandate: `parent:<child>`, `business:<ubn>`, or the granted mandate's id.
    pub key: String,
    /// The person acted for, when a person.
    pub person_id: Option<i64>,
    /// The business acted for, when a business (its unified business number).
    pub ubn: Option<String>,
    /// Name of the person or business, for pages.
    pub name: String,
    /// What the mandate allows.
    pub scope: String,
    /// Last day it is valid, `YYYY-MM-DD`, when limited.
    pub valid_until: Option<String>,
}

impl Principal {
    /// The ledger reference of the person or business acted for.
    pub fn subject_ref(&self) -> String {
        match (&self.person_id, &self.ubn) {
            (Some(p), _) => format!("person:{p}"),
            (None, Some(u)) => format!("business:{u}"),
            _ => format!("mandate:{}", self.key),
        }
    }
}

/// A mandate a person granted, as the grantor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Its id.
    pub id: String,
    /// Who may act.
    pub grantee_person_id: i64,
    /// Who is acted for.
    pub grantor_person_id: i64,
    /// What it allows.
    pub scope: String,
    /// First valid day.
    pub valid_from: String,
    /// Last valid day.
    pub valid_until: String,
    /// A note from the grantor (for example "home visits by the district office").
    pub note: String,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
}

/// Age in whole years on `today` of someone born on `birth` (both `YYYY-MM-DD`).
pub fn age_on(birth: &str, today: &str) -> Option<i64> {
    let parse = |d: &str| -> Option<(i64, i64, i64)> {
        let mut it = d.split('-').map(|p| p.parse::<i64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    let (by, bm, bd) = parse(birth)?;
    let (ty, tm, td) = parse(today)?;
    let mut age = ty - by;
    if (tm, td) < (bm, bd) {
        age -= 1;
    }
    Some(age)
}

/// Taiwan's age of majority (Civil Code art. 12, since 2023).
pub const AGE_OF_MAJORITY: i64 = 18;

/// Every mandate `person_id` holds on `today`: minor children, represented businesses, and
/// granted mandates in force.
pub async fn held_by(
    db: &Db,
    person_id: i64,
    today: &str,
) -> Result<Vec<Principal>, IdentityError> {
    let mut out = Vec::new();
    for child in civitas_registry::children_of(db, person_id).await? {
        let minor =
            age_on(&child.birth_date, today).is_some_and(|a| (0..AGE_OF_MAJORITY).contains(&a));
        if minor && child.death_date.is_none() {
            out.push(Principal {
                basis: "parent".into(),
                key: format!("parent:{}", child.id),
                person_id: Some(child.id),
                ubn: None,
                name: child.name_zh,
                scope: "all_services".into(),
                valid_until: None,
            });
        }
    }
    for rep in civitas_registry::businesses_represented_by(db, person_id).await? {
        if rep.status == "active" {
            out.push(Principal {
                basis: "business".into(),
                key: format!("business:{}", rep.ubn),
                person_id: None,
                ubn: Some(rep.ubn),
                name: rep.name_zh,
                scope: "all_services".into(),
                valid_until: None,
            });
        }
    }
    for g in granted(db, "grantee_person_id", person_id).await? {
        if g.revoked_ms.is_none()
            && g.valid_from.as_str() <= today
            && today <= g.valid_until.as_str()
        {
            let name = civitas_registry::person_by_id(db, g.grantor_person_id)
                .await?
                .map(|p| p.name_zh)
                .unwrap_or_default();
            out.push(Principal {
                basis: "granted".into(),
                key: g.id,
                person_id: Some(g.grantor_person_id),
                ubn: None,
                name,
                scope: g.scope,
                valid_until: Some(g.valid_until),
            });
        }
    }
    Ok(out)
}

/// Whether `holder_id` holds, on `today`, a mandate to act for the person `person_id`; the
/// mandate's basis (`parent` or `granted`) when so.
pub async fn holds_for(
    db: &Db,
    holder_id: i64,
    person_id: i64,
    today: &str,
) -> Result<Option<String>, IdentityError> {
    Ok(held_by(db, holder_id, today)
        .await?
        .into_iter()
        .find(|p| p.person_id == Some(person_id))
        .map(|p| p.basis))
}

/// Everyone who may have acted for `person_id` at some time: their parents and everyone
/// they ever granted a mandate to, with their names (for the person's own pages).
pub async fn possible_holders(
    db: &Db,
    person_id: i64,
) -> Result<Vec<(i64, String)>, IdentityError> {
    let mut out: Vec<(i64, String)> = civitas_registry::parents_of(db, person_id)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name_zh))
        .collect();
    for g in granted(db, "grantor_person_id", person_id).await? {
        if !out.iter().any(|(id, _)| *id == g.grantee_person_id)
            && let Some(p) = civitas_registry::person_by_id(db, g.grantee_person_id).await?
        {
            out.push((p.id, p.name_zh));
        }
    }
    Ok(out)
}

/// Mandates granted by (`grantor_person_id`) or to (`grantee_person_id`) a person, newest first.
pub(crate) async fn granted(
    db: &Db,
    column: &str,
    person_id: i64,
) -> Result<Vec<Granted>, IdentityError> {
    let column = match column {
        "grantor_person_id" => "grantor_person_id",
        _ => "grantee_person_id",
    };
    let rows = sqlx::query(&format!(
        "SELECT id, grantor_person_id, grantee_person_id, scope, valid_from, valid_until, note, revoked_ms
         FROM mandates WHERE {column} = $1 ORDER BY created_ms DESC, id"
    ))
    .bind(person_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Granted {
                id: r.try_get("id")?,
                grantor_person_id: r.try_get("grantor_person_id")?,
                grantee_person_id: r.try_get("grantee_person_id")?,
                scope: r.try_get("scope")?,
                valid_from: r.try_get("valid_from")?,
                valid_until: r.try_get("valid_until")?,
                note: r.try_get("note")?,
                revoked_ms: r.try_get("revoked_ms")?,
            })
        })
        .collect()
}

/// What a grantor asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Identification number of the person who may act.
    pub grantee_national_id: String,
    /// One of [`SCOPES`].
    pub scope: String,
    /// First valid day, `YYYY-MM-DD`.
    pub valid_from: String,
    /// Last valid day, `YYYY-MM-DD`.
    pub valid_until: String,
    /// A note for both sides.
    pub note: String,
}

/// Checks a grant and stores it. Returns the mandate and the grantee's person id.
pub(crate) async fn grant(
    db: &Db,
    grantor_person_id: i64,
    req: &GrantRequest,
    today: &str,
) -> Result<Granted, IdentityError> {
    let nid = req.grantee_national_id.trim().to_uppercase();
    if civitas_core::NationalId::parse(&nid).is_err() {
        return Err(IdentityError::Invalid(
            "enter the identification number of the person who may act for you, like A123456789"
                .into(),
        ));
    }
    let grantee = civitas_registry::person_by_national_id(db, &nid)
        .await?
        .ok_or_else(|| {
            IdentityError::Invalid(
                "no person with this identification number is in the register".into(),
            )
        })?;
    if grantee.id == grantor_person_id {
        return Err(IdentityError::Invalid(
            "you cannot grant a mandate to yourself".into(),
        ));
    }
    if !SCOPES.contains(&req.scope.as_str()) {
        return Err(IdentityError::Invalid(format!(
            "choose what the mandate allows: one of {}",
            SCOPES.join(", ")
        )));
    }
    let valid = |d: &str| {
        time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
    };
    let (Some(from), Some(until)) = (valid(&req.valid_from), valid(&req.valid_until)) else {
        return Err(IdentityError::Invalid(
            "enter the dates as YYYY-MM-DD".into(),
        ));
    };
    if req.valid_from.as_str() < today {
        return Err(IdentityError::Invalid(
            "the mandate cannot start in the past".into(),
        ));
    }
    if until < from {
        return Err(IdentityError::Invalid(
            "the last day must be on or after the first day".into(),
        ));
    }
    if (until - from).whole_days() > MAX_DAYS {
        return Err(IdentityError::Invalid(format!(
            "a mandate may run for at most {MAX_DAYS} days; grant a new one when it ends"
        )));
    }
    let g = Granted {
        id: format!("mandate-{}", token(9)),
        grantor_person_id,
        grantee_person_id: grantee.id,
        scope: req.scope.clone(),
        valid_from: req.valid_from.clone(),
        valid_until: req.valid_until.clone(),
        note: req.note.trim().chars().take(200).collect(),
        revoked_ms: None,
    };
    sqlx::query(
        "INSERT INTO mandates (id, grantor_person_id, grantee_person_id, scope, valid_from, valid_until, note, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&g.id)
    .bind(g.grantor_person_id)
    .bind(g.grantee_person_id)
    .bind(&g.scope)
    .bind(&g.valid_from)
    .bind(&g.valid_until)
    .bind(&g.note)
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    Ok(g)
}

/// Revokes a mandate the grantor gave. Returns it, or `NotFound` when it is not theirs or
/// already revoked.
pub(crate) async fn revoke(
    db: &Db,
    grantor_person_id: i64,
    id: &str,
) -> Result<Granted, IdentityError> {
    let done = sqlx::query(
        "UPDATE mandates SET revoked_ms = $3 WHERE id = $1 AND grantor_person_id = $2 AND revoked_ms IS NULL",
    )
    .bind(id)
    .bind(grantor_person_id)
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(IdentityError::NotFound);
    }
    granted(db, "grantor_person_id", grantor_person_id)
        .await?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or(IdentityError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::age_on;

    #[test]
    fn ages_count_whole_years() {
        assert_eq!(age_on("2008-11-23", "2026-11-22"), Some(17));
        assert_eq!(age_on("2008-11-22", "2026-11-22"), Some(18));
        assert_eq!(age_on("bad", "2026-11-22"), None);
    }
}
