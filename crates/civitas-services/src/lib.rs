//! One-stop services: the catalogue of each agency's services and the life events that
//! bundle them ([`catalog`], written as data), their forms ([`form`]), people's
//! applications (drafts kept between visits, prefilled from the registers, submitted once),
//! and the case workflow ([`cases`]): a submission opens one case per agency step, each
//! waiting for the steps before it, each with its state, its queue, its due date from the
//! service level, reminders and escalation, and decisions with reasons. Every submission,
//! state change and decision is in the ledger, under the applicant's tag; the reasons and
//! answers stay in the database (their hashes are in the log).
//!
//! The block knows no HTTP and reads no register: the portal fills forms through the
//! exchange and hands the values in ([`Prefilled`]).

pub mod applications;
pub mod cases;
pub mod catalog;
pub mod form;
pub mod search;
#[cfg(test)]
mod tests;
pub mod uploads;

use std::sync::{Arc, RwLock};

use civitas_ledger::Ledger;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Component, Db, Migration};

pub use applications::{Applicant, Application, ApplicationState, Prefilled, Source};
pub use cases::{Action, Actor, Case, CaseState, QueueFilter, StaffRole, TimelineEntry};
pub use catalog::{Catalog, LifeEvent, Offering, Service, Text};
pub use form::{FieldError, Form, Kind, Question, Step};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The request or a catalogue is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such service, application or case (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// The caller may see it but not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Its state does not allow this now.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] civitas_store::StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] civitas_ledger::LedgerError),
    /// The object store of uploads failed.
    #[error("the store of uploaded files failed: {0}")]
    Files(String),
}

impl From<sqlx::Error> for ServicesError {
    fn from(e: sqlx::Error) -> Self {
        ServicesError::Store(e.into())
    }
}

impl From<serde_json::Error> for ServicesError {
    fn from(e: serde_json::Error) -> Self {
        ServicesError::Invalid(format!("stored data is not valid JSON: {e}"))
    }
}

/// The block's schema.
pub const COMPONENT: Component = Component {
    name: "services",
    migrations: &[Migration {
        version: 1,
        name: "catalogues, applications, cases and their history, correction requests",
        sql: "CREATE TABLE services_catalogs (
            version BIGINT PRIMARY KEY,
            body TEXT NOT NULL,
            loaded_ms BIGINT NOT NULL,
            loaded_by TEXT NOT NULL
        );
        CREATE TABLE services_applications (
            id TEXT PRIMARY KEY,
            reference TEXT NOT NULL UNIQUE,
            offering TEXT NOT NULL,
            catalog_version BIGINT NOT NULL,
            account_id TEXT NOT NULL,
            subject_ref TEXT NOT NULL,
            national_id TEXT NOT NULL,
            applicant_name TEXT NOT NULL,
            state TEXT NOT NULL,
            answers TEXT NOT NULL,
            sources TEXT NOT NULL,
            options TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            submitted_ms BIGINT
        );
        CREATE INDEX services_applications_account ON services_applications (account_id, created_ms);
        CREATE TABLE services_cases (
            id TEXT PRIMARY KEY,
            application_id TEXT NOT NULL,
            service_id TEXT NOT NULL,
            agency TEXT NOT NULL,
            state TEXT NOT NULL,
            depends_on TEXT NOT NULL,
            assignee TEXT,
            assignee_name TEXT,
            opened_ms BIGINT,
            due_ms BIGINT,
            reminded_ms BIGINT,
            escalated_ms BIGINT,
            updated_ms BIGINT NOT NULL,
            reason TEXT,
            decision TEXT,
            version BIGINT NOT NULL
        );
        CREATE INDEX services_cases_queue ON services_cases (agency, due_ms, id);
        CREATE INDEX services_cases_states ON services_cases (agency, state);
        CREATE INDEX services_cases_application ON services_cases (application_id);
        CREATE INDEX services_cases_due ON services_cases (due_ms);
        CREATE TABLE services_case_events (
            case_id TEXT NOT NULL,
            version BIGINT NOT NULL,
            at_ms BIGINT NOT NULL,
            actor TEXT NOT NULL,
            actor_name TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            note TEXT,
            PRIMARY KEY (case_id, version)
        );
        CREATE TABLE services_corrections (
            id TEXT PRIMARY KEY,
            application_id TEXT NOT NULL,
            item TEXT NOT NULL,
            source TEXT NOT NULL,
            note TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX services_corrections_application ON services_corrections (application_id);",
    }],
};

/// The catalogue in force, with its search index.
pub struct Loaded {
    /// Its version (0: none loaded yet).
    pub version: i64,
    /// The catalogue.
    pub catalog: Catalog,
    /// Its search index.
    pub index: search::Index,
}

/// Each agency's counts of cases by state, and when they were counted (ms).
type Counted = std::collections::HashMap<String, (i64, Vec<(CaseState, i64)>)>;

/// The services block.
#[derive(Clone)]
pub struct Services {
    db: Db,
    ledger: Ledger,
    loaded: Arc<RwLock<Arc<Loaded>>>,
    uploads: Option<Arc<dyn object_store::ObjectStore>>,
    /// Each agency's counts of cases by state, and when they were counted (ms).
    counted: Arc<std::sync::Mutex<Counted>>,
}

impl Services {
    /// Opens the block with the newest catalogue in the database (none yet: an empty one).
    pub async fn open(db: Db, ledger: Ledger) -> Result<Services, ServicesError> {
        let s = Services {
            db,
            ledger,
            loaded: Arc::new(RwLock::new(Arc::new(Loaded {
                version: 0,
                catalog: Catalog::default(),
                index: search::Index::default(),
            }))),
            uploads: None,
            counted: Default::default(),
        };
        s.refresh().await?;
        Ok(s)
    }

    /// The catalogue in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.read().expect("not poisoned").clone()
    }

    /// Reads the newest catalogue if another node (or command) loaded one since.
    pub async fn refresh(&self) -> Result<(), ServicesError> {
        let row = sqlx::query(
            "SELECT version, body FROM services_catalogs WHERE version = (SELECT MAX(version) FROM services_catalogs)",
        )
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(()) };
        let version: i64 = row.try_get("version")?;
        if version == self.current().version {
            return Ok(());
        }
        let body: String = row.try_get("body")?;
        let catalog = Catalog::parse(&body)?;
        self.install(version, catalog);
        Ok(())
    }

    fn install(&self, version: i64, catalog: Catalog) {
        let index = search::Index::build(&catalog);
        *self.loaded.write().expect("not poisoned") = Arc::new(Loaded {
            version,
            catalog,
            index,
        });
    }

    /// Loads a catalogue (TOML), checked whole, as the next version; logged as
    /// `services.catalog_loaded` with its digest. Returns the version.
    pub async fn load_catalog(&self, text: &str, actor: &str) -> Result<i64, ServicesError> {
        let catalog = Catalog::parse(text)?;
        let now = civitas_ledger::event::now_ms();
        let mut tx = self.db.begin_write().await?;
        // The write comes first: on SQLite a transaction that reads and then writes fails
        // at once ("database is locked") when another connection wrote in between.
        sqlx::query(
            "INSERT INTO services_catalogs (version, body, loaded_ms, loaded_by) \
             SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3 FROM services_catalogs",
        )
        .bind(text)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let version: i64 = sqlx::query("SELECT MAX(version) AS v FROM services_catalogs")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        let event = civitas_ledger::Event::new(
            "services.catalog_loaded",
            actor,
            &format!("services-catalog/{version}"),
        )
        .with("services", catalog.services.len() as i64)
        .with("life_events", catalog.life_events.len() as i64)
        .with(
            "sha256",
            civitas_ledger::event::hex(&sha256(text.as_bytes())),
        );
        self.ledger.append_in(&mut tx, &[event]).await?;
        tx.commit().await?;
        self.ledger.queued();
        self.install(version, catalog);
        Ok(version)
    }

    /// Loads the demo country's catalogue unless one is loaded already.
    pub async fn load_demo_catalog(&self, actor: &str) -> Result<(), ServicesError> {
        self.refresh().await?;
        if self.current().version == 0 {
            self.load_catalog(catalog::DEMO, actor).await?;
        }
        Ok(())
    }

    /// The level of assurance an offering of the catalogue in force needs (`low`,
    /// `substantial`, `high`: its strictest service's); `None` for no such offering.
    pub fn level_of(&self, offering: &str) -> Option<&'static str> {
        let l = self.current();
        l.catalog.offering(offering).map(|o| l.catalog.loa_of(o))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}
