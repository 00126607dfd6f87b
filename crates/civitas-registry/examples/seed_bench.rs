//! Seeds a demo country into a fresh database and reports how long it took.
//!
//! `cargo run --release -p civitas-registry --example seed_bench -- [PEOPLE] [SEED] [TARGET]`
//!
//! TARGET is a folder for a SQLite database, or a `postgres://` URL of an empty database.
//! Without it the SQLite database goes to a temporary folder that is removed afterwards.

use std::path::PathBuf;
use std::time::Instant;

use civitas_registry::{COMPONENT, DemoSpec, seed_demo};
use civitas_store::Db;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let people: u64 = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let target = args.next();
    let temp = std::env::temp_dir().join(format!("civitas-seed-bench-{}", std::process::id()));
    let (url, remove): (String, Option<PathBuf>) = match &target {
        Some(t) if t.starts_with("postgres") => (t.clone(), None),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (
                format!(
                    "sqlite://{}?mode=rwc",
                    PathBuf::from(dir).join("civitas.db").display()
                ),
                None,
            )
        }
        None => {
            std::fs::create_dir_all(&temp)?;
            (
                format!("sqlite://{}?mode=rwc", temp.join("civitas.db").display()),
                Some(temp.clone()),
            )
        }
    };
    let db = Db::connect(&url, 4).await?;
    civitas_store::migrate(&db, &[COMPONENT]).await?;
    let spec = DemoSpec {
        seed,
        people,
        as_of: time::macros::date!(2025 - 03 - 14),
    };
    let start = Instant::now();
    let summary = seed_demo(&db, &spec, &|done, total| {
        if total >= 100_000 && done % (total / 10).max(1) == 0 {
            eprintln!(
                "{done}/{total} after {:.1} s",
                start.elapsed().as_secs_f64()
            );
        }
    })
    .await?;
    println!(
        "seeded {people} people on {} in {:.2} s",
        db.engine().name(),
        start.elapsed().as_secs_f64()
    );
    println!("{summary:#?}");
    db.close().await;
    if let Some(dir) = remove {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
