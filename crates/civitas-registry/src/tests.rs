//! Seeding tests against SQLite files in the temporary directory.

use std::collections::HashSet;
use std::path::PathBuf;

use civitas_core::national_id::{Holder, NationalId, Sex};
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use time::macros::date;

use super::*;

/// A fresh, migrated database in its own temporary folder; the folder goes away on drop.
struct TempDb {
    db: Db,
    dir: PathBuf,
}

impl TempDb {
    async fn new(name: &str) -> TempDb {
        let dir = civitas_store::scratch::folder(&format!("registry-{name}"));
        let url = format!("sqlite://{}?mode=rwc", dir.join("civitas.db").display());
        let db = Db::connect(&url, 4).await.unwrap();
        civitas_store::migrate(&db, &[COMPONENT]).await.unwrap();
        TempDb { db, dir }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const AS_OF: Date = date!(2025 - 03 - 14);

fn spec(seed: u64, people: u64) -> DemoSpec {
    DemoSpec {
        seed,
        people,
        as_of: AS_OF,
    }
}

async fn seed(db: &Db, spec: &DemoSpec) -> DemoSummary {
    let calls = std::sync::Mutex::new(Vec::new());
    let summary = seed_demo(db, spec, &|done, total| {
        calls.lock().unwrap().push((done, total))
    })
    .await
    .unwrap();
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.first(), Some(&(0, spec.people)));
    assert_eq!(calls.last(), Some(&(spec.people, spec.people)));
    assert!(
        calls.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress only grows"
    );
    let largest_step = calls.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or(0);
    assert!(
        largest_step <= spec.people.div_ceil(100).max(100),
        "progress at least every ~1%"
    );
    summary
}

async fn scalar(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Every table's rows, in key order, as text.
async fn dump(db: &Db) -> Vec<String> {
    let tables = [
        ("cities", "code"),
        ("districts", "code"),
        ("agencies", "code"),
        ("households", "id"),
        ("persons", "id"),
        ("parent_links", "child_id, parent_id"),
        ("businesses", "id"),
        ("business_representatives", "business_id, person_id"),
        ("resident_certificates", "person_id"),
        ("driving_licences", "person_id, class"),
        ("vehicles", "plate"),
        ("land_parcels", "id"),
        ("buildings", "id"),
        ("tax_records", "person_id, tax_year"),
        ("health_insurance", "person_id"),
        ("school_enrolments", "person_id, school_year"),
        ("demo_people", "role"),
        ("demo_meta", "id"),
    ];
    let mut out = Vec::new();
    for (table, key) in tables {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {key}"))
            .fetch_all(db.pool())
            .await
            .unwrap();
        for row in rows {
            let mut line = String::from(table);
            for i in 0..row.len() {
                line.push('|');
                if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                    line.push_str(&format!("{v:?}"));
                } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    line.push_str(&format!("{v:?}"));
                } else {
                    let v: Option<f64> = row.try_get(i).unwrap();
                    line.push_str(&format!("{v:?}"));
                }
            }
            out.push(line);
        }
    }
    out
}

fn days(a: &str, b: Date) -> i32 {
    dates::jd(dates::parse_iso(a).unwrap()) - dates::jd(b)
}

#[tokio::test]
async fn the_demo_country_is_complete_and_consistent() {
    // More than one transaction of 20,000 people.
    const PEOPLE: u64 = 25_000;
    let t = TempDb::new("complete").await;
    let db = &t.db;
    assert_eq!(demo_summary(db).await.unwrap(), None);
    let summary = seed(db, &spec(7, PEOPLE)).await;
    let wal = std::fs::metadata(t.dir.join("civitas.db-wal")).map_or(0, |m| m.len());
    assert!(
        wal < 1 << 20,
        "the write-ahead log is folded back after seeding ({wal} bytes)"
    );
    assert_eq!(demo_summary(db).await.unwrap(), Some(summary.clone()));

    // Foreign keys hold although seeding skipped their checks.
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        broken.is_empty(),
        "{} rows break foreign keys",
        broken.len()
    );

    // Counts agree with the tables and are plausible.
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM persons").await as u64,
        PEOPLE
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM households").await as u64,
        summary.households
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM businesses").await as u64,
        summary.businesses
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM vehicles").await as u64,
        summary.vehicles
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM tax_records").await as u64,
        summary.tax_records
    );
    assert_eq!(summary.businesses, PEOPLE / 40);
    assert_eq!(summary.agencies, 11);
    let per_household = (PEOPLE - summary.foreign_residents) as f64 / summary.households as f64;
    assert!(
        (2.2..3.3).contains(&per_household),
        "{per_household} people per household"
    );
    let foreign = summary.foreign_residents as f64 / PEOPLE as f64;
    assert!(
        (0.012..0.045).contains(&foreign),
        "{foreign} foreign residents"
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) FROM persons WHERE nationality <> 'TW'").await as u64,
        summary.foreign_residents
    );
    assert!(
        summary.land_parcels > summary.households / 2 && summary.buildings > summary.households / 2
    );
    let share = |n: u64| n as f64 / PEOPLE as f64;
    assert!((0.15..0.28).contains(&share(summary.school_enrolments)));
    assert!((0.7..1.4).contains(&share(summary.driving_licences)));
    assert!((0.4..0.8).contains(&share(summary.vehicles)));
    assert!((1.2..2.4).contains(&share(summary.tax_records)));
    assert!(share(summary.health_insured) > 0.99);
    let elderly = scalar(
        db,
        "SELECT COUNT(*) FROM persons WHERE birth_date <= '1960-03-14'",
    )
    .await;
    assert!(
        (0.14..0.22).contains(&share(elderly as u64)),
        "{elderly} aged 65+"
    );

    // National IDs: valid, unique, matching nationality, sex and region.
    let rows = sqlx::query("SELECT national_id, nationality, sex, city_code FROM persons")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for row in &rows {
        let nid: String = row.get(0);
        let nationality: String = row.get(1);
        let sex: String = row.get(2);
        let city: String = row.get(3);
        let id = NationalId::parse(&nid).unwrap_or_else(|e| panic!("{nid}: {e}"));
        assert_eq!(id.holder() == Holder::Citizen, nationality == "TW", "{nid}");
        assert_eq!(id.sex() == Sex::Male, sex == "M");
        assert_eq!(&nid[..1], city);
        assert!(seen.insert(nid));
    }
    let certificates = scalar(
        db,
        "SELECT COUNT(*) FROM resident_certificates c JOIN persons p ON p.id = c.person_id WHERE c.certificate_no = p.national_id",
    )
    .await;
    assert_eq!(certificates as u64, summary.foreign_residents);

    // Parents are at least 16 years older than their children and share their household.
    let rows = sqlx::query(
        "SELECT c.birth_date, p.birth_date, c.household_id, p.household_id, l.relation, p.sex FROM parent_links l \
         JOIN persons c ON c.id = l.child_id JOIN persons p ON p.id = l.parent_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(share(rows.len() as u64) > 0.2);
    for row in &rows {
        let child: String = row.get(0);
        let parent: String = row.get(1);
        let gap = dates::age_on(
            dates::jd(dates::parse_iso(&parent).unwrap()),
            dates::jd(dates::parse_iso(&child).unwrap()),
        );
        assert!(gap >= 16, "parent born {parent}, child {child}");
        assert_eq!(row.get::<Option<i64>, _>(2), row.get::<Option<i64>, _>(3));
        let relation: String = row.get(4);
        let sex: String = row.get(5);
        assert_eq!(relation == "father", sex == "M");
    }

    // Every household has its head among its members.
    let orphans = scalar(
        db,
        "SELECT COUNT(*) FROM households h LEFT JOIN persons p ON p.id = h.head_person_id AND p.household_id = h.id WHERE p.id IS NULL",
    )
    .await;
    assert_eq!(orphans, 0);

    // Business numbers pass the checksum and every business has a responsible person.
    let ubns: Vec<String> = sqlx::query_scalar("SELECT ubn FROM businesses")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(ubns.iter().all(|u| ubn_is_valid(u)));
    let without = scalar(
        db,
        "SELECT COUNT(*) FROM businesses b WHERE NOT EXISTS (SELECT 1 FROM business_representatives r WHERE r.business_id = b.id AND r.role = 'responsible_person')",
    )
    .await;
    assert_eq!(without, 0);

    // Nobody younger than 18 drives, owns a vehicle or pays tax.
    for sql in [
        "SELECT COUNT(*) FROM driving_licences l JOIN persons p ON p.id = l.person_id WHERE p.birth_date > l.issued OR l.issued > '2025-03-14'",
        "SELECT COUNT(*) FROM vehicles v JOIN persons p ON p.id = v.owner_person_id WHERE p.birth_date > '2007-03-14'",
        "SELECT COUNT(*) FROM vehicles WHERE (owner_person_id IS NULL) = (owner_business_id IS NULL)",
        "SELECT COUNT(*) FROM land_parcels WHERE (owner_person_id IS NULL) = (owner_business_id IS NULL)",
        "SELECT COUNT(*) FROM health_insurance WHERE insured_since > '2025-03-14'",
        "SELECT COUNT(*) FROM resident_certificates WHERE expires < '2025-03-14' OR issued > '2025-03-14'",
        "SELECT COUNT(*) FROM driving_licences WHERE expires <= '2025-03-14'",
        "SELECT COUNT(*) FROM vehicles WHERE inspection_due < '2025-03-14' AND registered > '2020-03-14'",
        "SELECT COUNT(*) FROM tax_records WHERE tax_paid > tax_due OR (status = 'paid') <> (tax_paid = tax_due)",
        "SELECT COUNT(*) FROM health_insurance d JOIN health_insurance p ON p.person_id = d.principal_person_id \
         WHERE d.insured_type <> 'dependent' OR p.insured_type <> 'principal' OR d.category <> p.category",
        "SELECT COUNT(*) FROM business_representatives r JOIN persons p ON p.id = r.person_id WHERE p.birth_date > '2005-03-14'",
        "SELECT COUNT(*) FROM school_enrolments s JOIN persons p ON p.id = s.person_id WHERE s.level = 'elementary' \
         AND (p.birth_date > '2018-09-01' OR p.birth_date < '2012-09-01')",
    ] {
        assert_eq!(scalar(db, sql).await, 0, "{sql}");
    }
}

#[tokio::test]
async fn featured_people_have_their_stories() {
    // Month ends, leap days and the start of the school year included.
    for (n, (seed_value, as_of)) in [
        (11, AS_OF),
        (1, date!(2024 - 02 - 29)),
        (2, date!(2025 - 12 - 31)),
        (3, date!(2025 - 08 - 01)),
        (4, date!(2026 - 01 - 28)),
    ]
    .into_iter()
    .enumerate()
    {
        let t = TempDb::new(&format!("featured-{n}")).await;
        seed(
            &t.db,
            &DemoSpec {
                seed: seed_value,
                people: 500,
                as_of,
            },
        )
        .await;
        check_featured(&t.db, as_of).await;
    }
}

async fn check_featured(db: &Db, as_of: Date) {
    let people = demo_people(db).await.unwrap();
    let roles: Vec<&str> = people.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "baby_born_last_week",
            "child_turning_5_5",
            "elderly_living_alone",
            "foreign_professional",
            "licence_expiring_next_month",
            "property_buyer",
            "property_seller",
        ]
    );
    for p in &people {
        assert!(NationalId::parse(&p.national_id).is_ok());
        assert!(p.name_romanised.contains(", "), "{}", p.name_romanised);
        assert!(!p.note_en.is_empty() && !p.note_zh.is_empty());
    }
    let id_of = |role: &str| -> String {
        people
            .iter()
            .find(|p| p.role == role)
            .map(|p| p.national_id.clone())
            .unwrap()
    };
    let person = |nid: String| async move {
        sqlx::query(
            "SELECT id, birth_date, household_id, nationality FROM persons WHERE national_id = $1",
        )
        .bind(nid)
        .fetch_one(db.pool())
        .await
        .unwrap()
    };

    // The baby: 3-9 days old, both parents at home, registered, not yet insured.
    let baby = person(id_of("baby_born_last_week")).await;
    let (baby_id, birth): (i64, String) = (baby.get(0), baby.get(1));
    assert!((-9..=-3).contains(&days(&birth, as_of)), "born {birth}");
    let parents = scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM parent_links l JOIN persons p ON p.id = l.parent_id JOIN persons c ON c.id = l.child_id \
             WHERE l.child_id = {baby_id} AND p.household_id = c.household_id"
        ),
    )
    .await;
    assert_eq!(parents, 2);
    assert_eq!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM health_insurance WHERE person_id = {baby_id}")
        )
        .await,
        0
    );

    // The licence holder: car licence expires in 20-40 days.
    let driver = person(id_of("licence_expiring_next_month")).await;
    let driver_id: i64 = driver.get(0);
    let expires: String = sqlx::query_scalar(
        "SELECT expires FROM driving_licences WHERE person_id = $1 AND class = 'car' AND status = 'valid'",
    )
    .bind(driver_id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(
        (20..=40).contains(&days(&expires, as_of)),
        "expires {expires}"
    );

    // The child turns 5 years 6 months within 30 days, living with a parent.
    let child = person(id_of("child_turning_5_5")).await;
    let (child_id, birth): (i64, String) = (child.get(0), child.get(1));
    let half =
        dates::add_months(dates::jd(dates::parse_iso(&birth).unwrap()), 66) - dates::jd(as_of);
    assert!((1..=30).contains(&half), "5.5 in {half} days");
    let with_parent = scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM parent_links l JOIN persons p ON p.id = l.parent_id JOIN persons c ON c.id = l.child_id \
             WHERE l.child_id = {child_id} AND p.household_id = c.household_id"
        ),
    )
    .await;
    assert!(with_parent >= 1);

    // The foreign professional: employed, certificate expiring soon, insured.
    let pro = person(id_of("foreign_professional")).await;
    let (pro_id, nationality): (i64, String) = (pro.get(0), pro.get(3));
    assert_ne!(nationality, "TW");
    let cert = sqlx::query(
        "SELECT c.expires, c.purpose, b.name_en FROM resident_certificates c JOIN businesses b ON b.id = c.employer_business_id WHERE c.person_id = $1",
    )
    .bind(pro_id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let expires: String = cert.get(0);
    assert!(
        (1..=60).contains(&days(&expires, as_of)),
        "certificate expires {expires}"
    );
    assert_eq!(cert.get::<String, _>(1), "employment");
    assert_eq!(
        scalar(
            db,
            &format!(
                "SELECT COUNT(*) FROM health_insurance WHERE person_id = {pro_id} AND category = 1"
            )
        )
        .await,
        1
    );

    // The seller owns land and a building and owes no tax; the buyer owns nothing.
    let seller: i64 = person(id_of("property_seller")).await.get(0);
    assert!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM land_parcels WHERE owner_person_id = {seller}")
        )
        .await
            >= 1
    );
    assert!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM buildings WHERE owner_person_id = {seller}")
        )
        .await
            >= 1
    );
    assert!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM tax_records WHERE person_id = {seller}")
        )
        .await
            >= 1
    );
    assert_eq!(
        scalar(
            db,
            &format!(
                "SELECT COUNT(*) FROM tax_records WHERE person_id = {seller} AND status <> 'paid'"
            )
        )
        .await,
        0
    );
    let buyer: i64 = person(id_of("property_buyer")).await.get(0);
    assert_eq!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM land_parcels WHERE owner_person_id = {buyer}")
        )
        .await,
        0
    );

    // The older person is 80 or more and alone in their household.
    let old = person(id_of("elderly_living_alone")).await;
    let (birth, household): (String, i64) = (old.get(1), old.get(2));
    assert!(
        dates::age_on(
            dates::jd(dates::parse_iso(&birth).unwrap()),
            dates::jd(as_of)
        ) >= 80
    );
    assert_eq!(
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM persons WHERE household_id = {household}")
        )
        .await,
        1
    );
}

#[tokio::test]
async fn same_spec_same_rows_other_seed_other_people() {
    let a = TempDb::new("same-a").await;
    let b = TempDb::new("same-b").await;
    let c = TempDb::new("same-c").await;
    seed(&a.db, &spec(42, 1_500)).await;
    seed(&b.db, &spec(42, 1_500)).await;
    seed(&c.db, &spec(43, 1_500)).await;
    let (da, db_, dc) = (dump(&a.db).await, dump(&b.db).await, dump(&c.db).await);
    assert!(da.len() > 5_000);
    assert!(da == db_, "same spec, same rows");
    let persons = |d: &[String]| {
        d.iter()
            .filter(|l| l.starts_with("persons|"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (pa, pc) = (persons(&da), persons(&dc));
    assert_eq!(pa.len(), pc.len());
    assert!(
        pa.iter().zip(&pc).filter(|(x, y)| x == y).count() == 0,
        "another seed, other people"
    );
}

#[tokio::test]
async fn seeding_needs_empty_tables_and_a_sane_spec() {
    let t = TempDb::new("guard").await;
    let db = &t.db;
    let none = |_: u64, _: u64| {};
    assert!(matches!(
        seed_demo(db, &spec(1, 10), &none).await,
        Err(RegistryError::InvalidSpec(_))
    ));
    assert!(matches!(
        seed_demo(db, &spec(1, 40_000_000), &none).await,
        Err(RegistryError::InvalidSpec(_))
    ));
    seed_demo(db, &spec(1, 100), &none).await.unwrap();
    assert!(matches!(
        seed_demo(db, &spec(1, 100), &none).await,
        Err(RegistryError::NotEmpty)
    ));
    // Every connection, including the one used for seeding, is back to its settings.
    for _ in 0..4 {
        let mut conn = db.pool().acquire().await.unwrap();
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!((cache, keys), (-2000, 1));
    }
}

#[test]
fn seeding_can_run_on_any_runtime_thread() {
    fn send<T: Send>(_: &T) {}
    async fn probe(db: Db) {
        let _ = seed_demo(&db, &spec(1, 100), &|_, _| {}).await;
        let _ = demo_summary(&db).await;
        let _ = demo_people(&db).await;
        let _ = agencies(&db).await;
        let _ = agency(&db, "HRO").await;
    }
    let _ = |db: Db| send(&probe(db));
}

#[tokio::test]
async fn agencies_are_listed_by_code() {
    let t = TempDb::new("agencies").await;
    let db = &t.db;
    assert!(agencies(db).await.unwrap().is_empty());
    seed(db, &spec(5, 100)).await;
    let all = agencies(db).await.unwrap();
    let codes: Vec<&str> = all.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "BOCA", "DLA", "DSA", "HRO", "MODA", "MOE", "NHIA", "NIA", "THB", "TXA", "WDA"
        ]
    );
    for a in &all {
        assert!(a.code.bytes().all(|b| b.is_ascii_uppercase()));
        assert_eq!(a.services_zh.len(), a.services_en.len());
        assert!(!a.services_en.is_empty() && a.website.starts_with("https://"));
        assert!(matches!(
            a.kind.as_str(),
            "ministry" | "agency" | "operator"
        ));
    }
    let hro = agency(db, "HRO").await.unwrap().unwrap();
    assert_eq!(hro.name_zh, "內政部戶政司");
    assert_eq!(hro.parent_en, "Ministry of the Interior");
    assert_eq!(agency(db, "MODA").await.unwrap().unwrap().kind, "operator");
    assert_eq!(agency(db, "NOPE").await.unwrap(), None);
}
