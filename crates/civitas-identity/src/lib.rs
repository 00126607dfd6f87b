//! Identity: who may act in Civitas and in which role.
//!
//! Today this holds the accounts of agency staff and platform operators with their roles,
//! and levels of assurance ([`Loa`]); sign-in methods, sessions, mandates and the OpenID
//! Connect provider build on it.

mod loa;

pub use loa::Loa;

use civitas_store::sqlx::{self, Row};
use civitas_store::{BulkInsert, Component, Db, Migration, Value};

/// The identity block's schema.
pub const COMPONENT: Component = Component {
    name: "identity",
    migrations: &[Migration {
        version: 1,
        name: "accounts",
        sql: "CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            agency_code TEXT,
            role TEXT,
            created_on TEXT NOT NULL
        );
        CREATE INDEX accounts_agency ON accounts (agency_code);",
    }],
};

/// Errors from the identity block.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        IdentityError::Store(e.into())
    }
}

/// What an agency staff member may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StaffRole {
    /// Handles cases.
    Caseworker,
    /// Assigns and reviews cases, decides escalations.
    Supervisor,
    /// Manages the agency's staff, services and settings.
    AgencyAdministrator,
}

impl StaffRole {
    /// Every role, in order of increasing authority.
    pub const ALL: [StaffRole; 3] = [
        StaffRole::Caseworker,
        StaffRole::Supervisor,
        StaffRole::AgencyAdministrator,
    ];

    /// Stable code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            StaffRole::Caseworker => "caseworker",
            StaffRole::Supervisor => "supervisor",
            StaffRole::AgencyAdministrator => "agency_admin",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<StaffRole> {
        StaffRole::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The demo's staff per agency: how many of each role.
const DEMO_STAFF: [(StaffRole, usize); 3] = [
    (StaffRole::Caseworker, 4),
    (StaffRole::Supervisor, 2),
    (StaffRole::AgencyAdministrator, 1),
];

/// Names given to demo staff, in turn.
const DEMO_NAMES: [&str; 14] = [
    "陳怡君",
    "林志明",
    "黃淑芬",
    "張家豪",
    "李美玲",
    "王建宏",
    "吳佳穎",
    "劉俊傑",
    "蔡雅婷",
    "楊宗翰",
    "許惠如",
    "鄭文彬",
    "謝佩珊",
    "郭冠廷",
];

/// Creates the demo's staff accounts for each agency, and platform operator accounts for
/// the agencies of kind "operator". Returns how many accounts were made.
pub async fn seed_demo_staff(db: &Db, agencies: &[(String, bool)]) -> Result<u64, IdentityError> {
    let mut rows = BulkInsert::new(
        "accounts",
        &[
            "id",
            "kind",
            "username",
            "display_name",
            "agency_code",
            "role",
            "created_on",
        ],
    );
    let mut n = 0usize;
    for (code, is_operator) in agencies {
        let lower = code.to_ascii_lowercase();
        for (role, count) in DEMO_STAFF {
            for i in 1..=count {
                let name = DEMO_NAMES[n % DEMO_NAMES.len()];
                n += 1;
                rows.row([
                    Value::from(format!("staff-{lower}-{}-{i}", role.code())),
                    "staff".into(),
                    format!("{}.{i}@{lower}.gov.example", role.code()).into(),
                    name.into(),
                    code.clone().into(),
                    role.code().into(),
                    "demo".into(),
                ]);
            }
        }
        if *is_operator {
            for i in 1..=2 {
                rows.row([
                    Value::from(format!("operator-{i}")),
                    "operator".into(),
                    format!("operator.{i}@{lower}.gov.example").into(),
                    DEMO_NAMES[(n + i) % DEMO_NAMES.len()].into(),
                    code.clone().into(),
                    "operator".into(),
                    "demo".into(),
                ]);
            }
        }
    }
    let mut tx = db.pool().begin().await?;
    let written = rows.flush(&mut tx, db.engine()).await?;
    tx.commit().await?;
    Ok(written)
}

/// How many staff accounts an agency has in each role.
pub async fn staff_counts(
    db: &Db,
    agency_code: &str,
) -> Result<Vec<(StaffRole, i64)>, IdentityError> {
    let rows = sqlx::query(
        "SELECT role, COUNT(*) AS n FROM accounts WHERE kind = 'staff' AND agency_code = $1 GROUP BY role",
    )
    .bind(agency_code)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for row in rows {
        let role: String = row.try_get("role")?;
        if let Some(r) = StaffRole::from_code(&role) {
            out.push((r, row.try_get("n")?));
        }
    }
    out.sort();
    Ok(out)
}

/// How many accounts of each kind exist (staff, operator, ...).
pub async fn account_counts(db: &Db) -> Result<Vec<(String, i64)>, IdentityError> {
    let rows = sqlx::query("SELECT kind, COUNT(*) AS n FROM accounts GROUP BY kind ORDER BY kind")
        .fetch_all(db.pool())
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.try_get("kind")?, r.try_get("n")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_agency_gets_each_role_and_operators_get_operator_accounts() {
        let dir = std::env::temp_dir().join(format!("civitas-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let _ = std::fs::remove_file(dir.join("t.db"));
        let db = Db::connect(&url, 2).await.unwrap();
        civitas_store::migrate(&db, &[COMPONENT]).await.unwrap();
        let made = seed_demo_staff(&db, &[("HRO".into(), false), ("MODA".into(), true)])
            .await
            .unwrap();
        assert_eq!(made, 7 + 7 + 2);
        let counts = staff_counts(&db, "HRO").await.unwrap();
        assert_eq!(
            counts,
            vec![
                (StaffRole::Caseworker, 4),
                (StaffRole::Supervisor, 2),
                (StaffRole::AgencyAdministrator, 1)
            ]
        );
        let kinds = account_counts(&db).await.unwrap();
        assert_eq!(
            kinds,
            vec![("operator".to_string(), 2), ("staff".to_string(), 14)]
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
