//! For other blocks' tests: a fresh database with the ledger on it, on SQLite and, when
//! `CIVITAS_TEST_POSTGRES_URL` names a server where databases may be created, on PostgreSQL
//! too (required when `CIVITAS_TEST_REQUIRE_ALL=1`, as `scripts/test` sets it).

use std::time::Duration;

use civitas_store::{Component, Db};

use crate::{Ledger, LedgerConfig};

/// A database per engine with `components` migrated (the ledger's first) and a ledger on it
/// that signs checkpoints every 20 ms. `tag` names the scratch folder and database.
pub async fn ledgers_on_both_engines(tag: &str, components: &[Component]) -> Vec<(Db, Ledger)> {
    let dir = civitas_store::scratch::folder(tag);
    let mut urls = vec![format!("sqlite://{}?mode=rwc", dir.join("x.db").display())];
    urls.extend(civitas_store::scratch::test_postgres(tag).await);
    let mut all = vec![crate::COMPONENT];
    all.extend_from_slice(components);
    let mut out = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let db = Db::connect(url, 4).await.expect("the database");
        civitas_store::migrate(&db, &all).await.expect("migrations");
        let mut config = LedgerConfig::new("test.civitas/ledger");
        config.checkpoint_interval = Duration::from_millis(20);
        config.hash_file = Some(dir.join(format!("hashes-{i}.bin")));
        let ledger = Ledger::open(db.clone(), config).await.expect("the ledger");
        out.push((db, ledger));
    }
    out
}
