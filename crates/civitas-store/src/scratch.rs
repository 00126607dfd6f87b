//! Scratch folders and databases for tests: each named after the process that made it, so
//! that what a finished process left behind (every test run leaves its folders; a failed or
//! killed one leaves its databases too) is removed by the next process that makes one.
//! Without it every run of the suite left about a megabyte in the temporary folder for each
//! test that starts a server (9 GB had piled up on the development machine), and a
//! database on the PostgreSQL server for each test on PostgreSQL.

use std::path::PathBuf;
use std::sync::Once;

use crate::{Db, StoreError};

const FOLDER: &str = "civitas-scratch-";
const DATABASE: &str = "civitas_scratch_";

/// The path of this process's scratch folder `tag` (see [`folder`]), without making it.
pub fn path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{FOLDER}{}-{tag}", std::process::id()))
}

/// This process's scratch folder `tag`, made empty. The first call in a process removes the
/// scratch folders of processes that have ended.
pub fn folder(tag: &str) -> PathBuf {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(sweep_folders);
    let dir = path(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder in the temporary folder");
    dir
}

/// A new, empty PostgreSQL database `tag` of this process on the server of `admin` (a
/// `postgres://` URL whose user may create databases); returns its URL. The first call in a
/// process drops the scratch databases of processes that have ended.
pub async fn postgres_database(admin: &str, tag: &str) -> Result<String, StoreError> {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let db = Db::connect(admin, 1).await?;
    SWEPT.get_or_init(|| sweep_databases(&db)).await;
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{DATABASE}{}_{tag}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(&sql).execute(db.pool()).await?;
    }
    db.close().await;
    Ok(with_database(admin, &name))
}

/// For a test: a new, empty database `tag` on the PostgreSQL server that
/// `CIVITAS_TEST_POSTGRES_URL` names, as [`postgres_database`] makes it; `None`, with a
/// note, when it names none, unless `CIVITAS_TEST_REQUIRE_ALL=1` (as `scripts/test` sets
/// it), which fails the test instead.
pub async fn test_postgres(tag: &str) -> Option<String> {
    let Ok(admin) = std::env::var("CIVITAS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CIVITAS_TEST_REQUIRE_ALL").as_deref() != Ok("1"),
            "CIVITAS_TEST_POSTGRES_URL is not set but CIVITAS_TEST_REQUIRE_ALL=1"
        );
        eprintln!("skipped: set CIVITAS_TEST_POSTGRES_URL to run this test on PostgreSQL");
        return None;
    };
    Some(
        postgres_database(&admin, tag)
            .await
            .expect("a scratch database on the test PostgreSQL server"),
    )
}

/// Drops the scratch databases of processes that have ended.
async fn sweep_databases(db: &Db) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, 'civitas_scratch_')",
    )
    .fetch_all(db.pool())
    .await
    .unwrap_or_default();
    for name in names {
        if owner(&name, DATABASE, '_').is_some_and(ended) {
            // FORCE (PostgreSQL 13): a process that died holding connections.
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(db.pool())
                .await;
        }
    }
}

/// `url` naming database `name` instead of its own, with its parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("", base));
    let server = rest.split_once('/').map_or(rest, |(s, _)| s);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{server}/{name}{query}")
}

/// Removes the scratch folders of processes that have ended.
fn sweep_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if owner(&name.to_string_lossy(), FOLDER, '-').is_some_and(ended) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The process id in a scratch name: `prefix`, the digits, then `sep`.
fn owner(name: &str, prefix: &str, sep: char) -> Option<u32> {
    let (pid, _) = name.strip_prefix(prefix)?.split_once(sep)?;
    pid.parse().ok()
}

/// Whether process `pid` has ended. Known only where `/proc` lists the processes (Linux);
/// elsewhere every process counts as running, and nothing is removed.
fn ended(pid: u32) -> bool {
    std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_their_process_and_only_ended_ones_are_swept() {
        assert_eq!(
            owner("civitas-scratch-123-it-app-4", FOLDER, '-'),
            Some(123)
        );
        assert_eq!(
            owner("civitas_scratch_77_ledger_x", DATABASE, '_'),
            Some(77)
        );
        assert_eq!(owner("civitas-scratch-x-1", FOLDER, '-'), None);
        assert_eq!(owner("civitas-it-123-app", FOLDER, '-'), None);
        assert!(!ended(std::process::id()));
        for (admin, url) in [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            (
                "postgres://u@h/postgres?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
            ("postgresql://u:p@h", "postgresql://u:p@h/x"),
        ] {
            assert_eq!(with_database(admin, "x"), url);
        }
        // A folder left by a process that has ended goes with the next sweep; this
        // process's own stay.
        if !std::path::Path::new("/proc/self").exists() {
            return;
        }
        let mine = folder("sweep-mine");
        // No process has this id (Linux's largest is 2^22).
        let left = std::env::temp_dir().join(format!("{FOLDER}{}-left", u32::MAX - 1));
        std::fs::create_dir_all(&left).unwrap();
        sweep_folders();
        assert!(!left.exists() && mine.exists());
        std::fs::remove_dir_all(mine).unwrap();
    }

    #[tokio::test]
    async fn on_postgres_the_databases_of_ended_processes_are_dropped() {
        let Ok(admin) = std::env::var("CIVITAS_TEST_POSTGRES_URL") else {
            return;
        };
        if !std::path::Path::new("/proc/self").exists() {
            return;
        }
        let url = postgres_database(&admin, "sweep-mine").await.unwrap();
        let db = Db::connect(&admin, 1).await.unwrap();
        let left = format!("{DATABASE}{}_left", u32::MAX - 1);
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {left}"))
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {left}"))
            .execute(db.pool())
            .await
            .unwrap();
        sweep_databases(&db).await;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname::text, 'civitas_scratch_')",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mine = format!("{DATABASE}{}_sweep_mine", std::process::id());
        assert!(url.ends_with(&format!("/{mine}")), "{url}");
        assert!(names.contains(&mine) && !names.contains(&left), "{names:?}");
        sqlx::raw_sql(&format!("DROP DATABASE {mine}"))
            .execute(db.pool())
            .await
            .unwrap();
        db.close().await;
    }
}
