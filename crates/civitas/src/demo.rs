//! The demo country: build it once in the database, reuse it on later starts, rebuild it
//! on `--fresh`.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use civitas_core::config::{Config, Source};
use civitas_ledger::Event;
use civitas_registry::{DemoSpec, DemoSummary};
use civitas_store::{Db, Engine};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Running;

/// The password of every demo account.
pub use civitas_identity::DEMO_PASSWORD;

/// Today's date in Taiwan (UTC+8), the demo country's default reference date.
pub fn today_in_taiwan() -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::hours(8)).date()
}

/// The demo specification the configuration asks for.
pub fn spec(config: &Config) -> Result<DemoSpec> {
    let as_of = match &config.demo_as_of {
        Some(d) => time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
            .with_context(|| format!("demo.as_of `{d}` is not a calendar date"))?,
        None => today_in_taiwan(),
    };
    Ok(DemoSpec {
        seed: config.demo_seed,
        people: config.demo_citizens,
        as_of,
    })
}

/// The file behind a `sqlite:` URL (`sqlite://PATH?options` or `sqlite:PATH`).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Removes a SQLite database file and its journal files so the demo is rebuilt from nothing.
pub fn remove_sqlite_files(url: &str) -> Result<()> {
    let Some(db) = sqlite_path(url) else {
        return Ok(());
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot remove {} to start fresh: {e}", path.display()),
        }
    }
    Ok(())
}

/// Empties a PostgreSQL database's `public` schema so the demo is rebuilt from nothing.
pub async fn reset_postgres(db: &Db) -> Result<()> {
    civitas_store::sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(db.pool())
        .await
        .context("cannot empty the PostgreSQL database to start fresh")?;
    Ok(())
}

/// What [`ensure_seeded`] did.
pub enum Seeded {
    /// The database already held a demo country.
    Reused(DemoSummary),
    /// A demo country was generated now, in this many seconds.
    Built(DemoSummary, f64),
}

/// Seeds the demo country unless the database already holds one. The database must be
/// migrated. Shows a progress bar on a terminal.
pub async fn ensure_seeded(db: &Db, spec: &DemoSpec, quiet: bool) -> Result<Seeded> {
    if let Some(existing) = civitas_registry::demo_summary(db).await? {
        return Ok(Seeded::Reused(existing));
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(spec.people)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} people, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("Building the demo country");
    let started = Instant::now();
    let summary =
        civitas_registry::seed_demo(db, spec, &|done, _total| bar.set_position(done)).await?;
    let agencies: Vec<(String, bool)> = civitas_registry::agencies(db)
        .await?
        .into_iter()
        .map(|a| {
            let operator = a.kind == "operator";
            (a.code, operator)
        })
        .collect();
    civitas_identity::seed_demo_staff(db, &agencies).await?;
    bar.finish_and_clear();
    Ok(Seeded::Built(summary, started.elapsed().as_secs_f64()))
}

/// Rebuilds from nothing when `fresh`, migrates, opens the ledger and seeds when needed;
/// logs the migrations, the configuration and the seeding. Returns the running parts and
/// what happened.
pub async fn prepare(
    config: &Config,
    entries: &[(&'static str, String, Source)],
    fresh: bool,
    quiet: bool,
) -> Result<(Running, Seeded)> {
    // Reset before the schema check: a fresh start must work even on a database that a
    // newer build wrote.
    // Lock before touching anything: `--fresh` must never delete a running server's files.
    crate::prepare_data_dir(&config.data_dir)?;
    crate::lock_data_dir(&config.data_dir)?;
    if fresh {
        let url = config.database_url();
        let hashes = config.data_dir.join("ledger-hashes.bin");
        if hashes.exists() {
            std::fs::remove_file(&hashes)
                .with_context(|| format!("cannot remove {} to start fresh", hashes.display()))?;
        }
        if url.starts_with("sqlite:") {
            remove_sqlite_files(&url)?;
        } else {
            let db = Db::connect(&url, 1).await?;
            if db.engine() == Engine::Postgres {
                reset_postgres(&db).await?;
            }
            db.close().await;
        }
    }
    let db = crate::open_database(config).await?;
    let applied = civitas_store::migrate(&db, crate::COMPONENTS).await?;
    let (ledger, witness) = crate::open_ledger(&db, config).await?;
    crate::record_migrations(&ledger, crate::SYSTEM, &applied).await?;
    crate::record_config(&ledger, entries).await?;
    crate::prepare_signing_keys(&db, &ledger).await?;
    let seeded = ensure_seeded(&db, &spec(config)?, quiet).await?;
    demo_exchange(&db, &ledger, &config.exchange_instance).await?;
    demo_purposes(&db, &ledger, &config.base_url()).await?;
    demo_notify(&db, &ledger).await?;
    civitas_services::Services::open(db.clone(), ledger.clone())
        .await?
        .load_demo_catalog(crate::SYSTEM)
        .await?;
    if let Seeded::Built(s, secs) = &seeded {
        let people = civitas_registry::demo_people(&db).await?;
        let mut featured: Vec<String> = people.iter().map(|p| p.national_id.clone()).collect();
        // A new baby's parent applies for it ("a baby is born"), so signs in too.
        if let Some(parent) = applying_parent(&db).await? {
            featured.push(parent.national_id);
        }
        let (identity, _) = crate::identity_for(&db, &ledger, config, None);
        identity
            .seed_demo_sign_ins(DEMO_PASSWORD, &featured)
            .await?;
        let event = Event::new("platform.demo_seeded", crate::SYSTEM, "registry/demo")
            .with("people", s.people)
            .with("households", s.households)
            .with("businesses", s.businesses)
            .with("seed", s.seed)
            .with("as_of", s.as_of.to_string())
            .with("seconds", (secs * 10.0).round() / 10.0);
        crate::record(&ledger, event).await?;
    }
    Ok((
        Running {
            db,
            ledger,
            witness,
        },
        seeded,
    ))
}
/// The demo country's exchange, once: every agency a member, each registry a service of the
/// agency that owns it (served in process), each agency's case system and the portal as
/// client subsystems on this machine, and the rights a demo needs: the portal reads every
/// registry (for a person's own data), welfare, health insurance and labour read what their
/// cases need.
async fn demo_exchange(db: &Db, ledger: &civitas_ledger::Ledger, instance: &str) -> Result<()> {
    use civitas_core::xroad::MemberId;
    use civitas_exchange::{Directory, NewService};
    use civitas_registry::services::{SERVICES, openapi};
    let d = Directory::new(db.clone(), ledger.clone(), instance);
    if !d.members().await?.is_empty() {
        return Ok(());
    }
    let actor = crate::SYSTEM;
    let loopback = civitas_exchange::network::LOOPBACK;
    let member = |code: &str| MemberId::new(instance, "GOV", code);
    for a in civitas_registry::agencies(db).await? {
        let m = member(&a.code)?;
        d.add_member(&m, &a.name_en, actor).await?;
        d.add_subsystem(&m.subsystem("services")?, "Case handling", loopback, actor)
            .await?;
    }
    let moda = member("MODA")?;
    let portal = moda.subsystem("portal")?;
    d.add_subsystem(&portal, "Citizen portal", loopback, actor)
        .await?;
    let mut registries = Vec::new();
    for s in SERVICES {
        let owner = member(s.agency)?.subsystem("registry")?;
        if d.subsystem(&owner).await?.is_none() {
            d.add_subsystem(&owner, "Base registries", loopback, actor)
                .await?;
        }
        let id = owner.service(s.code)?;
        d.add_service(
            NewService {
                id: id.clone(),
                base_url: format!("{}{}", civitas_exchange::directory::BUILT_IN, s.code),
                openapi: Some(openapi(s).to_string()),
                endpoints: Vec::new(),
                personal: s.personal,
            },
            actor,
        )
        .await?;
        d.grant(&id, &portal, "GET", "/", actor).await?;
        registries.push((s.code, id));
    }
    let service = |code: &str| {
        registries
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, id)| id.clone())
            .context("a demo registry is missing")
    };
    for (client, registry, path) in [
        ("DSA", "population", "/persons"),
        ("DSA", "tax", "/persons"),
        ("NHIA", "population", "/persons"),
        ("WDA", "residents", "/persons"),
        ("WDA", "businesses", "/businesses"),
        ("NIA", "businesses", "/businesses"),
        ("DLA", "tax", "/persons"),
        ("THB", "population", "/persons"),
        // The one-stop services' case handling reads what each agency's forms are bound to.
        ("HRO", "population", "/persons"),
        ("TXA", "land", "/persons"),
        ("DLA", "land", "/persons"),
        ("THB", "vehicles", "/persons"),
    ] {
        let c = member(client)?.subsystem("services")?;
        d.grant(&service(registry)?, &c, "GET", path, actor).await?;
    }
    Ok(())
}

/// The parent of the demo's newborn who applies for "a baby is born" with a demo sign-in:
/// not the one who registers on `/register` in the registration story (the first parent
/// with an e-mail address in the register), so the other, when the baby has two.
pub async fn applying_parent(db: &Db) -> Result<Option<civitas_registry::Person>> {
    let Some(baby) = civitas_registry::demo_people(db)
        .await?
        .into_iter()
        .find(|p| p.role == "baby_born_last_week")
    else {
        return Ok(None);
    };
    let Some(baby) = civitas_registry::person_by_national_id(db, &baby.national_id).await? else {
        return Ok(None);
    };
    let parents = civitas_registry::parents_of(db, baby.id).await?;
    let registering = parents.iter().find(|p| p.email.is_some()).map(|p| p.id);
    Ok(parents
        .into_iter()
        .rev()
        .find(|p| Some(p.id) != registering))
}

/// The demo's registered purposes, once, so organisations can propose data agreements at
/// once (MyData's common uses).
async fn demo_purposes(db: &Db, ledger: &civitas_ledger::Ledger, issuer: &str) -> Result<()> {
    let consents = civitas_consent::Consents::open(db.clone(), ledger.clone(), issuer).await?;
    if !consents.purposes().await?.is_empty() {
        return Ok(());
    }
    for (code, name_en, name_zh) in [
        ("loan-application", "Loan application", "貸款申請"),
        ("tenancy-application", "Renting a home", "租屋申請"),
        (
            "scholarship-application",
            "Scholarship application",
            "獎學金申請",
        ),
        ("employment-check", "Checks before employment", "聘僱前查核"),
        ("insurance-claim", "Insurance claim", "保險理賠"),
    ] {
        let purpose = civitas_consent::Purpose {
            code: code.into(),
            name_en: name_en.into(),
            name_zh: name_zh.into(),
        };
        consents.add_purpose(&purpose, crate::SYSTEM).await?;
    }
    Ok(())
}

/// The demo's sending services, once: one per agency (not the platform's operator), live,
/// managed by the agency's staff on `/admin/notify`, each with an e-mail and a text-message
/// template about an application, written in Chinese with an English translation.
async fn demo_notify(db: &Db, ledger: &civitas_ledger::Ledger) -> Result<()> {
    use civitas_notify::{Channel, Language, NewTemplate, Notify, Priority, Text};
    let notify = Notify::new(db.clone(), ledger.clone());
    if notify
        .services(None)
        .await?
        .iter()
        .any(|s| s.agency.is_some())
    {
        return Ok(());
    }
    let actor = crate::SYSTEM;
    let template = |channel: Channel| {
        let email = channel == Channel::Email;
        NewTemplate {
            channel,
            name: if email {
                "申請進度（電子郵件） Application update (e-mail)".into()
            } else {
                "申請進度（簡訊） Application update (text message)".into()
            },
            subject: email.then(|| "您的((service))申請：((status))".into()),
            body: "((name))您好：\n\n您的((service))申請（案號 ((reference))）目前狀態為：((status))。\n((more??請登入網站查看機關需要的補充資料。))".into(),
            priority: Priority::Normal,
            essential: false,
            lang: Language::ZhTw,
            translation: Some(Text {
                lang: Language::En,
                subject: email.then(|| "Your ((service)) application: ((status))".into()),
                body: "Dear ((name)),\n\nYour ((service)) application (reference ((reference))) is now: ((status)).\n((more??Sign in to see what more the agency needs from you.))".into(),
            }),
        }
    };
    for a in civitas_registry::agencies(db).await? {
        if a.kind == "operator" {
            continue;
        }
        let name = format!("{} {}", a.name_zh, a.name_en);
        let s = notify.create_agency_service(&name, &a.code, actor).await?;
        notify.make_live(&s.id, actor).await?;
        for channel in [Channel::Email, Channel::Sms] {
            notify
                .save_template(&s.id, None, &template(channel), actor)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/x.db?mode=rwc").unwrap().to_str(),
            Some("/var/x.db")
        );
        assert_eq!(
            sqlite_path("sqlite:rel/x.db").unwrap().to_str(),
            Some("rel/x.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
