//! Civitas base registries and the deterministic demo country.
//!
//! This crate owns the schema of the base registries ([`COMPONENT`]) and a generator that
//! seeds a realistic synthetic Taiwan from a seed ([`seed_demo`]). The same
//! [`DemoSpec`] always produces byte-identical rows, on SQLite and on PostgreSQL.
//!
//! To time a seed: `cargo run --release -p civitas-registry --example seed_bench -- 1000000`.
//!
//! # Tables
//!
//! | table | what | key |
//! |---|---|---|
//! | `cities` | the 22 cities and counties; `code` is the letter of the national IDs first registered there (`A` Taipei City) | `code` |
//! | `districts` | real districts; `code` is the city letter and a two-digit number (`A01` Da'an District) | `code` |
//! | `agencies` | the eleven agencies, see [`Agency`] | `code` |
//! | `households` | household number (戶號), head, address | `id` |
//! | `persons` | population register: national ID, names in Chinese (or Latin for foreigners) and romanised, sex `M`/`F`, birth and death dates, nationality (`TW` or ISO code), household, email, mobile phone, address | `id`, unique `national_id` |
//! | `parent_links` | child, parent, `father`/`mother`, for children living with their parents and adults living with their own parents | `(child_id, parent_id)` |
//! | `resident_certificates` | foreign residents' certificates; the number is their UI number, also their `national_id`; purpose `employment`, `migrant_work`, `study` or `family` | `person_id` |
//! | `driving_licences` | one row per class (`car` 普通小型車, `motorcycle` 普通重型機車, `light_motorcycle` 普通輕型機車, `professional_car` 職業小型車, `truck` 普通大貨車); licence number = national ID; status `valid`, `suspended` or `revoked`; `expires`: ordinary licences have had no validity period since 2013 until the holder turns 75, when they must be renewed after a medical check and a cognitive screening and then every three years, so their expiry is the 75th birthday (or the next three-year renewal); professional licences are valid six years at a time | `(person_id, class)` |
//! | `vehicles` | plates `ABC-1234` (cars, trucks) and `123-ABC` (motorcycles), owner person or business, make, model, year, registration date, next periodic inspection | `plate` |
//! | `land_parcels` | parcel number `district-subsection-lot` (`A01-3-0012-0001`), section (段, 小段), lot (地號), area, zoning (`residential`, `rural_residential`, `commercial`, `industrial`, `agricultural`), owner, announced value per m² | `id`, unique `parcel_no` |
//! | `buildings` | building number (建號, unique within a district), parcel, address (city, district, street), floor area, use (`residential`, `commercial`, `industrial`), year built, owner | `id` |
//! | `tax_records` | individual income tax for the three latest years whose filing season has closed; status `paid` or `overdue` | `(person_id, tax_year)` |
//! | `health_insurance` | National Health Insurance: status `insured`/`suspended`, category 1-6, `principal` or `dependent` (with the principal), unit (employer business, or a union, farmers' association or district office by name), insured since | `person_id` |
//! | `school_enrolments` | current school year (starting 1 August): `preschool` (grades 1-4 for ages 2-5), `elementary` 1-6, `junior_high` 7-9, `senior_high` 10-12, `university` 1-4, `graduate` 1-2 | `(person_id, school_year)` |
//! | `businesses` | unified business number (checked with [`ubn_is_valid`]), names, kind (`sole_proprietorship`, `partnership`, `limited_company`, `company_limited_by_shares`), industry, place, registration date, capital | `id`, unique `ubn` |
//! | `business_representatives` | `responsible_person`, `director`, `supervisor` or `partner` | `(business_id, person_id)` |
//! | `demo_meta` | the spec and counts of the seeded country, read by [`demo_summary`] | `id` |
//! | `demo_people` | the featured people, see [`demo_people`] | `role` |

mod catalog;
mod dates;
mod generator;
mod names;
mod people;
mod places;
mod rng;
mod schema;
mod ubn;

use civitas_store::sqlx::{self, Connection, Executor, Row};
use civitas_store::{Db, Engine, StoreError};
use time::Date;

pub use people::{
    Person, Representation, businesses_represented_by, children_of, parents_of, person_by_id,
    person_by_national_id,
};
pub use ubn::ubn_is_valid;

pub mod attributes;
pub mod fields;
pub mod services;

use civitas_store::{BulkInsert, Value};
use generator::{Generator, Rows};

/// The registry component: name `registry`, migrations from version 1 creating every table
/// listed in the crate documentation.
pub const COMPONENT: civitas_store::Component = schema::REGISTRY;

/// The number of people in the demo country unless told otherwise.
pub const DEFAULT_PEOPLE: u64 = 10_000;

/// Errors of the registries and the demo generator.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error("registry database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The store failed (connection, migrations).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The demo spec cannot be generated.
    #[error("invalid demo spec: {0}")]
    InvalidSpec(String),
    /// The registries already hold data; the demo country is only seeded into empty tables.
    #[error(
        "the registries are not empty (already seeded?); seed the demo country into a fresh database"
    )]
    NotEmpty,
    /// A stored value could not be read back.
    #[error("unreadable registry data: {0}")]
    Corrupt(String),
}

/// What to generate: the same spec always yields the same country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    /// Random seed; different seeds give different people.
    pub seed: u64,
    /// Number of people, from 100 to 30,000,000.
    pub people: u64,
    /// The day the country is seen from: ages, expiries and the featured people's stories
    /// are relative to it.
    pub as_of: Date,
}

impl DemoSpec {
    /// A spec of [`DEFAULT_PEOPLE`] people.
    pub fn new(seed: u64, as_of: Date) -> DemoSpec {
        DemoSpec {
            seed,
            people: DEFAULT_PEOPLE,
            as_of,
        }
    }
}

/// What was seeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// The seed.
    pub seed: u64,
    /// People in the population register.
    pub people: u64,
    /// The day the country is seen from.
    pub as_of: Date,
    /// Households.
    pub households: u64,
    /// Businesses.
    pub businesses: u64,
    /// Agencies.
    pub agencies: u64,
    /// Foreign residents holding a resident certificate.
    pub foreign_residents: u64,
    /// Driving licence classes held (one row per person and class).
    pub driving_licences: u64,
    /// Registered vehicles.
    pub vehicles: u64,
    /// Land parcels.
    pub land_parcels: u64,
    /// Buildings.
    pub buildings: u64,
    /// Income tax records.
    pub tax_records: u64,
    /// People enrolled in National Health Insurance.
    pub health_insured: u64,
    /// School and university enrolments.
    pub school_enrolments: u64,
}

/// A government agency of the demo country.
///
/// Codes are stable short ASCII identifiers, usable in URLs and as X-Road member codes:
///
/// | code | agency |
/// |---|---|
/// | `BOCA` | 外交部領事事務局 Bureau of Consular Affairs |
/// | `DLA` | 內政部地政司 Department of Land Administration |
/// | `DSA` | 衛生福利部社會救助及社工司 Department of Social Assistance and Social Work |
/// | `HRO` | 內政部戶政司 Department of Household Registration |
/// | `MODA` | 數位發展部 Ministry of Digital Affairs (the platform operator) |
/// | `MOE` | 教育部 Ministry of Education |
/// | `NHIA` | 衛生福利部中央健康保險署 National Health Insurance Administration |
/// | `NIA` | 內政部移民署 National Immigration Agency |
/// | `THB` | 交通部公路局 Highway Bureau (motor vehicles) |
/// | `TXA` | 財政部賦稅署 Taxation Administration |
/// | `WDA` | 勞動部勞動力發展署 Workforce Development Agency |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// Stable code, e.g. `HRO`.
    pub code: String,
    /// Name in Chinese.
    pub name_zh: String,
    /// Name in English.
    pub name_en: String,
    /// One sentence on what it does, in Chinese.
    pub description_zh: String,
    /// One sentence on what it does, in English.
    pub description_en: String,
    /// `ministry`, `agency` or `operator`.
    pub kind: String,
    /// Supervising ministry in Chinese, empty for ministries.
    pub parent_zh: String,
    /// Supervising ministry in English, empty for ministries.
    pub parent_en: String,
    /// Official website.
    pub website: String,
    /// Main services, in Chinese.
    pub services_zh: Vec<String>,
    /// Main services, in English, in the same order.
    pub services_en: Vec<String>,
}

/// A featured person of the demo country, with the story later demos rely on.
///
/// Roles: `baby_born_last_week`, `licence_expiring_next_month`, `child_turning_5_5`,
/// `foreign_professional`, `property_seller`, `property_buyer`, `elderly_living_alone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoPerson {
    /// The role, e.g. `baby_born_last_week`.
    pub role: String,
    /// National ID (or UI number for a foreign resident).
    pub national_id: String,
    /// Name as registered: Chinese characters, or the Latin name of a foreign resident.
    pub name_zh: String,
    /// Romanised name, e.g. `CHEN, Chih-Ming`.
    pub name_romanised: String,
    /// The story in English.
    pub note_en: String,
    /// The story in Chinese.
    pub note_zh: String,
}

/// People per transaction while seeding.
const COMMIT_PEOPLE: u64 = 20_000;
/// Buffered people before rows are written.
const FLUSH_PEOPLE: u64 = 2_000;

/// Seeds everything into an already-migrated, EMPTY set of registry tables. Calls
/// `progress(done_people, total_people)` after every block of about 1% of the people
/// (counting people generated; the last call, with `done_people == total_people`, comes
/// once everything is written).
///
/// Rows are written with multi-row inserts on a connection of its own and committed in
/// transactions of about 20,000 people; if seeding fails part-way, the tables hold a
/// partial country and [`demo_summary`] still returns `None`. On this 2-core machine a
/// release build seeds 10,000 people in about 0.3 s and 1,000,000 in about 35 s (SQLite).
pub async fn seed_demo(
    db: &Db,
    spec: &DemoSpec,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<DemoSummary, RegistryError> {
    if spec.people < generator::MIN_PEOPLE || spec.people > generator::MAX_PEOPLE {
        return Err(RegistryError::InvalidSpec(format!(
            "people must be between {} and {}, not {}",
            generator::MIN_PEOPLE,
            generator::MAX_PEOPLE,
            spec.people
        )));
    }
    let (year, _, _) = spec.as_of.to_calendar_date();
    if !(1990..=2200).contains(&year) {
        return Err(RegistryError::InvalidSpec(format!(
            "as_of must be between 1990 and 2200, not {}",
            spec.as_of
        )));
    }
    for table in ["persons", "agencies", "demo_meta", "cities"] {
        let found = sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1"))
            .fetch_optional(db.pool())
            .await?;
        if found.is_some() {
            return Err(RegistryError::NotEmpty);
        }
    }
    // The load runs on a connection taken out of the pool for good: it gets settings that
    // suit a bulk load and is closed afterwards, so even if this future is dropped half-way
    // no pooled connection keeps them. On SQLite a bigger page cache, in-memory statement
    // journals and fewer WAL checkpoints (every 256 MiB of log instead of 4 MiB) make the
    // load faster, and so does skipping foreign-key checks on rows the generator makes
    // consistent (the tests run `PRAGMA foreign_key_check` on seeded databases).
    let engine = db.engine();
    let mut conn = db.pool().acquire().await?.detach();
    if engine == Engine::Sqlite {
        conn.execute(
            "PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 65536;",
        )
        .await?;
    }
    let mut result = seed_on(&mut conn, engine, spec, progress).await;
    if engine == Engine::Sqlite && result.is_ok() {
        // Checkpoints were held back during the load; fold the write-ahead log into the
        // database now and shrink it back.
        if let Err(e) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await {
            result = Err(e.into());
        }
    }
    let closed = conn.close().await;
    if let (Ok(_), Err(e)) = (&result, closed) {
        return Err(e.into());
    }
    result
}

async fn seed_on(
    conn: &mut sqlx::AnyConnection,
    engine: Engine,
    spec: &DemoSpec,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<DemoSummary, RegistryError> {
    let started = std::time::Instant::now();
    let total = spec.people;
    let mut tx = conn.begin().await?;
    write_reference(&mut tx, engine).await?;
    progress(0, total);
    let mut generator = Generator::new(spec.seed, spec.people, spec.as_of);
    let mut rows = Rows::new();
    let (mut buffered, mut uncommitted) = (0, 0);
    while let Some(n) = generator.next_block(&mut rows) {
        buffered += n;
        uncommitted += n;
        let done = generator.counts().people;
        if buffered >= FLUSH_PEOPLE || done == total {
            for batch in rows.in_order() {
                batch.flush(&mut tx, engine).await?;
            }
            buffered = 0;
        }
        if uncommitted >= COMMIT_PEOPLE && done < total {
            tx.commit().await?;
            tx = conn.begin().await?;
            uncommitted = 0;
        }
        if done < total {
            progress(done, total);
        }
    }
    let counts = generator.counts();
    let summary = DemoSummary {
        seed: spec.seed,
        people: counts.people,
        as_of: spec.as_of,
        households: counts.households,
        businesses: counts.businesses,
        agencies: catalog::AGENCIES.len() as u64,
        foreign_residents: rows.certificates.written(),
        driving_licences: rows.licences.written(),
        vehicles: rows.vehicles.written(),
        land_parcels: rows.parcels.written(),
        buildings: rows.buildings.written(),
        tax_records: rows.taxes.written(),
        health_insured: rows.insurance.written(),
        school_enrolments: rows.schools.written(),
    };
    let mut meta = BulkInsert::new(
        "demo_meta",
        &[
            "id",
            "generator_version",
            "seed",
            "people",
            "as_of",
            "households",
            "businesses",
            "agencies",
            "foreign_residents",
            "driving_licences",
            "vehicles",
            "land_parcels",
            "buildings",
            "tax_records",
            "health_insured",
            "school_enrolments",
        ],
    );
    let n = |v: u64| Value::I64(v as i64);
    meta.row([
        Value::I64(1),
        Value::I64(generator::GENERATOR_VERSION),
        Value::Text(summary.seed.to_string()),
        n(summary.people),
        Value::Text(dates::iso(dates::jd(summary.as_of))),
        n(summary.households),
        n(summary.businesses),
        n(summary.agencies),
        n(summary.foreign_residents),
        n(summary.driving_licences),
        n(summary.vehicles),
        n(summary.land_parcels),
        n(summary.buildings),
        n(summary.tax_records),
        n(summary.health_insured),
        n(summary.school_enrolments),
    ]);
    meta.flush(&mut tx, engine).await?;
    tx.commit().await?;
    progress(total, total);
    tracing::info!(
        seed = spec.seed,
        people = total,
        households = summary.households,
        businesses = summary.businesses,
        seconds = started.elapsed().as_secs_f64(),
        "demo country seeded"
    );
    Ok(summary)
}

/// Cities, districts and agencies.
async fn write_reference(
    conn: &mut sqlx::AnyConnection,
    engine: Engine,
) -> Result<(), RegistryError> {
    let mut cities = BulkInsert::new("cities", &["code", "name_zh", "name_en", "kind"]);
    let mut districts = BulkInsert::new("districts", &["code", "city_code", "name_zh", "name_en"]);
    for c in places::CITIES {
        let code = c.letter.to_string();
        cities.row([
            Value::Text(code.clone()),
            Value::Str(c.zh),
            Value::Str(c.en),
            Value::Str(c.kind.code()),
        ]);
        for (i, d) in c.districts.iter().enumerate() {
            let mut dc = code.clone();
            dates::push_num(&mut dc, i as u32 + 1, 2);
            districts.row([
                Value::Text(dc),
                Value::Text(code.clone()),
                Value::Str(d.zh),
                Value::Str(d.en),
            ]);
        }
    }
    let mut agencies = BulkInsert::new(
        "agencies",
        &[
            "code",
            "name_zh",
            "name_en",
            "description_zh",
            "description_en",
            "kind",
            "parent_zh",
            "parent_en",
            "website",
            "services_zh",
            "services_en",
        ],
    );
    for a in catalog::AGENCIES {
        agencies.row([
            Value::Str(a.code),
            Value::Str(a.name_zh),
            Value::Str(a.name_en),
            Value::Str(a.description_zh),
            Value::Str(a.description_en),
            Value::Str(a.kind),
            Value::Str(a.parent_zh),
            Value::Str(a.parent_en),
            Value::Str(a.website),
            Value::Text(a.services_zh.join("\n")),
            Value::Text(a.services_en.join("\n")),
        ]);
    }
    cities.flush(conn, engine).await?;
    districts.flush(conn, engine).await?;
    agencies.flush(conn, engine).await?;
    Ok(())
}

fn count(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, RegistryError> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v).map_err(|_| RegistryError::Corrupt(format!("demo_meta.{column} is negative")))
}

/// What was seeded, or None if the registries have not been seeded.
pub async fn demo_summary(db: &Db) -> Result<Option<DemoSummary>, RegistryError> {
    let Some(row) = sqlx::query(
        "SELECT seed, people, as_of, households, businesses, agencies, foreign_residents, driving_licences, vehicles, \
         land_parcels, buildings, tax_records, health_insured, school_enrolments FROM demo_meta WHERE id = 1",
    )
    .fetch_optional(db.pool())
    .await?
    else {
        return Ok(None);
    };
    let seed: String = row.try_get("seed")?;
    let as_of: String = row.try_get("as_of")?;
    Ok(Some(DemoSummary {
        seed: seed
            .parse()
            .map_err(|_| RegistryError::Corrupt(format!("demo_meta.seed `{seed}`")))?,
        people: count(&row, "people")?,
        as_of: dates::parse_iso(&as_of)
            .ok_or_else(|| RegistryError::Corrupt(format!("demo_meta.as_of `{as_of}`")))?,
        households: count(&row, "households")?,
        businesses: count(&row, "businesses")?,
        agencies: count(&row, "agencies")?,
        foreign_residents: count(&row, "foreign_residents")?,
        driving_licences: count(&row, "driving_licences")?,
        vehicles: count(&row, "vehicles")?,
        land_parcels: count(&row, "land_parcels")?,
        buildings: count(&row, "buildings")?,
        tax_records: count(&row, "tax_records")?,
        health_insured: count(&row, "health_insured")?,
        school_enrolments: count(&row, "school_enrolments")?,
    }))
}

const AGENCY_COLUMNS: &str = "code, name_zh, name_en, description_zh, description_en, kind, parent_zh, parent_en, \
                              website, services_zh, services_en";

fn agency_from(row: &sqlx::any::AnyRow) -> Result<Agency, RegistryError> {
    let list = |column: &str| -> Result<Vec<String>, RegistryError> {
        let s: String = row.try_get(column)?;
        Ok(s.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    };
    Ok(Agency {
        code: row.try_get("code")?,
        name_zh: row.try_get("name_zh")?,
        name_en: row.try_get("name_en")?,
        description_zh: row.try_get("description_zh")?,
        description_en: row.try_get("description_en")?,
        kind: row.try_get("kind")?,
        parent_zh: row.try_get("parent_zh")?,
        parent_en: row.try_get("parent_en")?,
        website: row.try_get("website")?,
        services_zh: list("services_zh")?,
        services_en: list("services_en")?,
    })
}

/// Every agency, ordered by code.
pub async fn agencies(db: &Db) -> Result<Vec<Agency>, RegistryError> {
    let rows = sqlx::query(&format!(
        "SELECT {AGENCY_COLUMNS} FROM agencies ORDER BY code"
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(agency_from).collect()
}

/// One agency by code (e.g. `HRO`), or None.
pub async fn agency(db: &Db, code: &str) -> Result<Option<Agency>, RegistryError> {
    let row = sqlx::query(&format!(
        "SELECT {AGENCY_COLUMNS} FROM agencies WHERE code = $1"
    ))
    .bind(code)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(agency_from).transpose()
}

/// The featured people, ordered by role.
pub async fn demo_people(db: &Db) -> Result<Vec<DemoPerson>, RegistryError> {
    let rows = sqlx::query(
        "SELECT d.role, p.national_id, p.family_name, p.given_name, p.family_name_latin, p.given_name_latin, \
         p.nationality, d.note_zh, d.note_en FROM demo_people d JOIN persons p ON p.id = d.person_id ORDER BY d.role",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let family: String = row.try_get("family_name")?;
            let given: String = row.try_get("given_name")?;
            let family_latin: String = row.try_get("family_name_latin")?;
            let given_latin: String = row.try_get("given_name_latin")?;
            let nationality: String = row.try_get("nationality")?;
            Ok(DemoPerson {
                role: row.try_get("role")?,
                national_id: row.try_get("national_id")?,
                name_zh: if nationality == "TW" {
                    format!("{family}{given}")
                } else {
                    format!("{given} {family}")
                },
                name_romanised: format!("{}, {given_latin}", family_latin.to_uppercase()),
                note_en: row.try_get("note_en")?,
                note_zh: row.try_get("note_zh")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
