//! Per-component schema migrations, applied in order on SQLite and PostgreSQL.
//!
//! Each block owns a [`Component`] with its own numbered migrations; the table
//! `civitas_schema` records what has been applied. A database holding a version this build
//! does not know is refused: an older binary must never write to a newer schema.

use sqlx::Row;

use crate::{Db, StoreError, dialect};

/// One schema change of one component.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, starting at 1 and increasing by one.
    pub version: i64,
    /// Short name shown in `civitas migrate` output.
    pub name: &'static str,
    /// Portable SQL; may hold several statements. SQL that opens with [`ON_SQLITE_ONLY`]
    /// runs on SQLite only: PostgreSQL records the migration as applied and runs nothing.
    pub sql: &'static str,
}

/// The first line of a migration that only SQLite needs, such as a table rebuilt for a
/// storage layout only SQLite has (see [`Migration::sql`]).
pub const ON_SQLITE_ONLY: &str = "-- on SQLite only\n";

/// A block's schema: its name and its migrations in order.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// Unique component name, such as `registry`.
    pub name: &'static str,
    /// Migrations, ordered by version.
    pub migrations: &'static [Migration],
}

impl Component {
    /// The highest version this build knows.
    pub fn latest(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }
}

/// Where one component's schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Component name.
    pub component: String,
    /// Version applied in the database (0 when none).
    pub applied: i64,
    /// Highest version this build knows.
    pub known: i64,
}

impl SchemaStatus {
    /// How the applied version compares with this build.
    pub fn state(&self) -> SchemaState {
        match self.applied.cmp(&self.known) {
            std::cmp::Ordering::Less => SchemaState::Behind,
            std::cmp::Ordering::Equal => SchemaState::Current,
            std::cmp::Ordering::Greater => SchemaState::Newer,
        }
    }
}

/// The state of a component's schema relative to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// Migrations are pending.
    Behind,
    /// Up to date.
    Current,
    /// Written by a newer build.
    Newer,
}

const CREATE_SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS civitas_schema (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    applied_unix BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

/// Reports, per component, the applied and the known schema version. Components found in
/// the database but unknown to this build are reported with `known = 0`.
pub async fn schema_status(
    db: &Db,
    components: &[Component],
) -> Result<Vec<SchemaStatus>, StoreError> {
    sqlx::query(CREATE_SCHEMA_TABLE).execute(db.pool()).await?;
    let rows =
        sqlx::query("SELECT component, MAX(version) AS v FROM civitas_schema GROUP BY component")
            .fetch_all(db.pool())
            .await?;
    let mut out: Vec<SchemaStatus> = components
        .iter()
        .map(|c| SchemaStatus {
            component: c.name.to_string(),
            applied: 0,
            known: c.latest(),
        })
        .collect();
    for row in rows {
        let name: String = row.try_get("component")?;
        let v: i64 = row.try_get("v")?;
        match out.iter_mut().find(|s| s.component == name) {
            Some(s) => s.applied = v,
            None => out.push(SchemaStatus {
                component: name,
                applied: v,
                known: 0,
            }),
        }
    }
    Ok(out)
}

/// Fails with [`StoreError::SchemaNewer`] if any component is ahead of this build.
pub fn refuse_newer(status: &[SchemaStatus]) -> Result<(), StoreError> {
    match status.iter().find(|s| s.state() == SchemaState::Newer) {
        Some(s) => Err(StoreError::SchemaNewer {
            component: s.component.clone(),
            found: s.applied,
            known: s.known,
        }),
        None => Ok(()),
    }
}

/// Applies every pending migration, each in its own transaction, and returns what it
/// applied as `(component, version, name)`. Refuses a database whose schema is newer.
pub async fn migrate(
    db: &Db,
    components: &[Component],
) -> Result<Vec<(String, i64, String)>, StoreError> {
    let status = schema_status(db, components).await?;
    refuse_newer(&status)?;
    let mut applied = Vec::new();
    for c in components {
        let done = status
            .iter()
            .find(|s| s.component == c.name)
            .map_or(0, |s| s.applied);
        for m in c.migrations.iter().filter(|m| m.version > done) {
            let fail = |source| StoreError::Migration {
                component: c.name.to_string(),
                version: m.version,
                name: m.name.to_string(),
                source,
            };
            let mut tx = db.pool().begin().await?;
            if db.engine() == crate::Engine::Sqlite || !m.sql.starts_with(ON_SQLITE_ONLY) {
                sqlx::raw_sql(&dialect(db.engine(), m.sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query("INSERT INTO civitas_schema (component, version, name, applied_unix) VALUES ($1, $2, $3, $4)")
                .bind(c.name)
                .bind(m.version)
                .bind(m.name)
                .bind(unix_now())
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(
                component = c.name,
                version = m.version,
                name = m.name,
                "migration applied"
            );
            applied.push((c.name.to_string(), m.version, m.name.to_string()));
        }
    }
    Ok(applied)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
