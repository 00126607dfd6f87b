//! Reading people, their children and the businesses they represent: what identity needs to
//! link an account to the register and to derive mandates from it.

use civitas_store::Db;
use civitas_store::sqlx::{self, Row};

use crate::RegistryError;

/// A person as the population register holds them, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Row id in the register.
    pub id: i64,
    /// National identification number (or resident certificate number).
    pub national_id: String,
    /// Name in Chinese characters (family name first).
    pub name_zh: String,
    /// Name in Latin letters, given name first.
    pub name_latin: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// Date of death, when recorded.
    pub death_date: Option<String>,
    /// E-mail address registered for notices, if any.
    pub email: Option<String>,
    /// Mobile phone number registered for notices, if any.
    pub phone: Option<String>,
}

const PERSON_COLUMNS: &str = "p.id, p.national_id, p.family_name, p.given_name, p.family_name_latin, p.given_name_latin, p.birth_date, p.death_date, p.email, p.phone";

fn person_from(row: &civitas_store::sqlx::any::AnyRow) -> Result<Person, sqlx::Error> {
    let family: String = row.try_get("family_name")?;
    let given: String = row.try_get("given_name")?;
    let family_latin: String = row.try_get("family_name_latin")?;
    let given_latin: String = row.try_get("given_name_latin")?;
    Ok(Person {
        id: row.try_get("id")?,
        national_id: row.try_get("national_id")?,
        name_zh: format!("{family}{given}"),
        name_latin: format!("{given_latin} {family_latin}"),
        birth_date: row.try_get("birth_date")?,
        death_date: row.try_get("death_date")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
    })
}

/// Finds a person by identification number.
pub async fn person_by_national_id(
    db: &Db,
    national_id: &str,
) -> Result<Option<Person>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {PERSON_COLUMNS} FROM persons p WHERE p.national_id = $1"
    ))
    .bind(national_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(person_from).transpose()?)
}

/// Finds a person by register row id.
pub async fn person_by_id(db: &Db, id: i64) -> Result<Option<Person>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {PERSON_COLUMNS} FROM persons p WHERE p.id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(person_from).transpose()?)
}

/// The children the register links to a parent, oldest first.
pub async fn children_of(db: &Db, parent_id: i64) -> Result<Vec<Person>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {PERSON_COLUMNS} FROM parent_links l JOIN persons p ON p.id = l.child_id
         WHERE l.parent_id = $1 ORDER BY p.birth_date, p.id"
    ))
    .bind(parent_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(person_from).collect::<Result<_, _>>()?)
}

/// A person's parents, as the population register links them.
pub async fn parents_of(db: &Db, child_id: i64) -> Result<Vec<Person>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {PERSON_COLUMNS} FROM parent_links l JOIN persons p ON p.id = l.parent_id
         WHERE l.child_id = $1 ORDER BY p.id"
    ))
    .bind(child_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(person_from).collect::<Result<_, _>>()?)
}

/// A business a person represents, as the business register says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Representation {
    /// The business's unified business number.
    pub ubn: String,
    /// Its name in Chinese.
    pub name_zh: String,
    /// Its name in English.
    pub name_en: String,
    /// The person's role (`responsible_person`, `director`, ...).
    pub role: String,
    /// The business's status (`active`, `dissolved`, ...).
    pub status: String,
}

/// The businesses the register names `person_id` as a representative of.
pub async fn businesses_represented_by(
    db: &Db,
    person_id: i64,
) -> Result<Vec<Representation>, RegistryError> {
    let rows = sqlx::query(
        "SELECT b.ubn, b.name_zh, b.name_en, r.role, b.status FROM business_representatives r
         JOIN businesses b ON b.id = r.business_id WHERE r.person_id = $1 ORDER BY b.ubn",
    )
    .bind(person_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Representation {
                ubn: r.try_get("ubn")?,
                name_zh: r.try_get("name_zh")?,
                name_en: r.try_get("name_en")?,
                role: r.try_get("role")?,
                status: r.try_get("status")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
