//! The ledger's tables and every query on them, for SQLite and PostgreSQL alike.

use std::collections::HashMap;
use std::sync::Arc;

use civitas_store::sqlx::{self, Row};
use civitas_store::{BulkInsert, Component, Db, End, Migration, Script, Value, WriteTx};

use crate::LedgerError;
use crate::tree::Hash;

/// The ledger's schema.
pub const COMPONENT: Component = Component {
    name: "ledger",
    migrations: &[Migration {
        version: 1,
        name: "log, hashes, checkpoints, subjects, keys, witnessed logs",
        sql: "CREATE TABLE ledger_entries (
            idx BIGINT PRIMARY KEY,
            data BLOB NOT NULL,
            kind TEXT NOT NULL,
            subject_tag TEXT,
            time_ms BIGINT NOT NULL,
            queue_ref BIGINT
        );
        CREATE INDEX ledger_entries_subject ON ledger_entries (subject_tag) WHERE subject_tag IS NOT NULL;
        CREATE INDEX ledger_entries_kind ON ledger_entries (kind, idx);
        CREATE INDEX ledger_entries_queue_ref ON ledger_entries (queue_ref) WHERE queue_ref IS NOT NULL;
        CREATE TABLE ledger_queue (
            queue_ref BIGINT PRIMARY KEY,
            data BLOB NOT NULL,
            kind TEXT NOT NULL,
            subject_tag TEXT,
            time_ms BIGINT NOT NULL,
            queued_ms BIGINT NOT NULL
        );
        CREATE TABLE ledger_hashes (idx BIGINT PRIMARY KEY, hash BLOB NOT NULL);
        CREATE TABLE ledger_tree (id BIGINT PRIMARY KEY, size BIGINT NOT NULL, root BLOB NOT NULL);
        CREATE TABLE ledger_checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL, signed_ms BIGINT NOT NULL, published BOOLEAN NOT NULL);
        CREATE TABLE ledger_subjects (subject_ref TEXT PRIMARY KEY, secret BLOB NOT NULL);
        CREATE TABLE ledger_keys (name TEXT PRIMARY KEY, secret TEXT NOT NULL, created_ms BIGINT NOT NULL);
        CREATE TABLE ledger_witnessed (origin TEXT PRIMARY KEY, size BIGINT NOT NULL, root BLOB NOT NULL, updated_ms BIGINT NOT NULL);",
    }, Migration {
        version: 2,
        name: "entries and hashes stored by their index (SQLite)",
        // Every batch writes these two. With `BIGINT PRIMARY KEY`, SQLite stored each row by
        // a rowid of its own and kept the index in a second B-tree, so a commit changed, and
        // wrote to the log and synced, two pages more. Rebuilt with the index as the rowid
        // (`INTEGER PRIMARY KEY`, which `dialect` makes of `BIGINT PRIMARY KEY` on SQLite).
        sql: "-- on SQLite only
        CREATE TABLE ledger_entries_by_idx (
            idx BIGINT PRIMARY KEY,
            data BLOB NOT NULL,
            kind TEXT NOT NULL,
            subject_tag TEXT,
            time_ms BIGINT NOT NULL,
            queue_ref BIGINT
        );
        INSERT INTO ledger_entries_by_idx (idx, data, kind, subject_tag, time_ms, queue_ref)
            SELECT idx, data, kind, subject_tag, time_ms, queue_ref FROM ledger_entries ORDER BY idx;
        DROP TABLE ledger_entries;
        ALTER TABLE ledger_entries_by_idx RENAME TO ledger_entries;
        CREATE INDEX ledger_entries_subject ON ledger_entries (subject_tag) WHERE subject_tag IS NOT NULL;
        CREATE INDEX ledger_entries_kind ON ledger_entries (kind, idx);
        CREATE INDEX ledger_entries_queue_ref ON ledger_entries (queue_ref) WHERE queue_ref IS NOT NULL;
        CREATE TABLE ledger_hashes_by_idx (idx BIGINT PRIMARY KEY, hash BLOB NOT NULL);
        INSERT INTO ledger_hashes_by_idx (idx, hash) SELECT idx, hash FROM ledger_hashes ORDER BY idx;
        DROP TABLE ledger_hashes;
        ALTER TABLE ledger_hashes_by_idx RENAME TO ledger_hashes;",
    }],
};

fn to_hash(bytes: &[u8]) -> Result<Hash, LedgerError> {
    let a: [u8; 32] = bytes
        .try_into()
        .map_err(|_| LedgerError::Corrupt("a stored hash is not 32 bytes".into()))?;
    Ok(Hash(a))
}

pub(crate) fn sql(e: sqlx::Error) -> LedgerError {
    LedgerError::Store(e.into())
}

/// The durable size and root of the tree (0 and the empty hash before the first append).
pub(crate) async fn tree_state(db: &Db) -> Result<(u64, Hash), LedgerError> {
    let row = sqlx::query("SELECT size, root FROM ledger_tree WHERE id = 1")
        .fetch_optional(db.pool())
        .await
        .map_err(sql)?;
    match row {
        None => Ok((0, crate::tree::EMPTY_HASH)),
        Some(r) => {
            let size: i64 = r.try_get("size").map_err(sql)?;
            let root: Vec<u8> = r.try_get("root").map_err(sql)?;
            Ok((size as u64, to_hash(&root)?))
        }
    }
}

/// Reads stored hashes by index; fails if any is missing.
pub(crate) async fn read_hashes(
    db: &Db,
    indexes: &[u64],
) -> Result<HashMap<u64, Hash>, LedgerError> {
    let mut out = HashMap::with_capacity(indexes.len());
    for chunk in indexes.chunks(500) {
        let q = format!(
            "SELECT idx, hash FROM ledger_hashes WHERE idx IN ({})",
            civitas_store::marks(1, chunk.len())
        );
        let mut query = sqlx::query(&q);
        for i in chunk {
            query = query.bind(*i as i64);
        }
        for row in query.fetch_all(db.pool()).await.map_err(sql)? {
            let idx: i64 = row.try_get("idx").map_err(sql)?;
            let hash: Vec<u8> = row.try_get("hash").map_err(sql)?;
            out.insert(idx as u64, to_hash(&hash)?);
        }
    }
    if let Some(missing) = indexes.iter().find(|i| !out.contains_key(i)) {
        return Err(LedgerError::Corrupt(format!(
            "stored hash {missing} is missing"
        )));
    }
    Ok(out)
}

/// One entry ready to be written.
#[derive(Clone)]
pub(crate) struct NewEntry {
    pub idx: u64,
    pub data: Vec<u8>,
    pub kind: String,
    pub subject_tag: Option<String>,
    pub time_ms: i64,
    /// Set for entries queued by a node that does not sequence.
    pub queue_ref: Option<i64>,
}

/// Writes a batch of entries, their stored hashes and the new tree head in one transaction.
/// Fails (writing nothing) if another sequencer moved the tree since `expected_size`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_batch(
    db: &Db,
    expected_size: u64,
    entries: Vec<NewEntry>,
    hashes: Vec<(u64, Hash)>,
    new_size: u64,
    new_root: Hash,
    writes: Vec<Arc<Script>>,
    secrets: &[(String, [u8; 32])],
) -> Result<(), LedgerError> {
    // The tree head, the entries, the dequeued rows, the hashes, new subjects' secrets and
    // the writes that go with the entries (see `Ledger::append_with`) commit together.
    let mut script = Script::new();
    let head = vec![
        Value::I64(new_size as i64),
        Value::Bytes(new_root.0.to_vec()),
    ];
    if expected_size == 0 {
        script.push(
            "INSERT INTO ledger_tree (id, size, root) VALUES (1, ?, ?)",
            head,
        );
    } else {
        let mut head = head;
        head.push(Value::I64(expected_size as i64));
        script.push(
            "UPDATE ledger_tree SET size = ?, root = ? WHERE id = 1 AND size = ?",
            head,
        );
    }
    let mut rows = BulkInsert::new(
        "ledger_entries",
        &["idx", "data", "kind", "subject_tag", "time_ms", "queue_ref"],
    );
    // New subjects' secrets, before the entries that carry their tags. Each changes one
    // row: inserted, or already stored with the same value (written by
    // `create_subject_secrets` meanwhile); another value would fail the batch's count.
    for chunk in secrets.chunks(500) {
        let rows = vec!["(?, ?)"; chunk.len()].join(", ");
        script.push(
            &format!("INSERT INTO ledger_subjects (subject_ref, secret) VALUES {rows} ON CONFLICT (subject_ref) DO UPDATE SET secret = excluded.secret WHERE ledger_subjects.secret = excluded.secret"),
            chunk
                .iter()
                .flat_map(|(r, secret)| [Value::Text(r.clone()), Value::Bytes(secret.to_vec())])
                .collect(),
        );
    }
    let mut dequeued = Vec::new();
    let written = secrets.len() + entries.len() + hashes.len();
    for e in entries {
        dequeued.extend(e.queue_ref);
        rows.row([
            Value::I64(e.idx as i64),
            Value::Bytes(e.data),
            Value::Text(e.kind),
            e.subject_tag.into(),
            Value::I64(e.time_ms),
            e.queue_ref.into(),
        ]);
    }
    script.insert(&mut rows);
    for chunk in dequeued.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(",");
        script.push(
            &format!("DELETE FROM ledger_queue WHERE queue_ref IN ({marks})"),
            chunk.iter().map(|r| Value::I64(*r)).collect(),
        );
    }
    push_hashes(&mut script, db.engine(), hashes);
    // The tree head changes one row unless another sequencer moved the tree (then, too, its
    // entries would collide with ours); each queued entry is dequeued exactly once; each
    // companion statement changes one row.
    let own = (1 + written + dequeued.len()) as u64;
    let companions = writes.iter().map(|w| w.len() as u64).sum::<u64>();
    // The whole transaction, its counts checked before the commit: on SQLite in one
    // hand-off to the writer thread (one wake-up each way, where statement by statement
    // through the pool a batch took five to seven round trips).
    let mut scripts = vec![Arc::new(script)];
    scripts.extend(writes);
    let changed = match db.commit_scripts(scripts, Some(own + companions)).await? {
        End::Commit(_) => return Ok(()),
        End::Rollback(changed) => changed,
    };
    if companions > 0 && tree_state(db).await?.0 == expected_size {
        return Err(LedgerError::WritesRefused(format!(
            "the writes that go with the batch's entries changed {} rows, not {companions}",
            changed as i64 - own as i64
        )));
    }
    Err(LedgerError::Corrupt(format!(
        "the tree is no longer at size {expected_size}: another sequencer wrote to it"
    )))
}

/// Inserts the stored hashes of a batch (as many as the new tree nodes, one to two an
/// entry), on SQLite in one statement whose text is the same for any number of them: they
/// are numbered consecutively (tlog's stored hash index), so a first index, a count and
/// their bytes one after another say it all. A batch's script text then depends on its
/// number of entries alone and stays in the writers' connection's statement cache (100
/// texts), where multi-row inserts of both, sized each their own way, made hundreds of
/// texts, each prepared afresh.
pub(crate) fn push_hashes(
    script: &mut Script,
    engine: civitas_store::Engine,
    hashes: Vec<(u64, Hash)>,
) {
    let consecutive = hashes.windows(2).all(|w| w[1].0 == w[0].0 + 1);
    if engine == civitas_store::Engine::Sqlite && consecutive && !hashes.is_empty() {
        let mut bytes = Vec::with_capacity(hashes.len() * 32);
        for (_, h) in &hashes {
            bytes.extend_from_slice(&h.0);
        }
        script.push(
            SQLITE_HASHES,
            vec![
                Value::I64(hashes.len() as i64),
                Value::I64(hashes[0].0 as i64),
                Value::Bytes(bytes),
            ],
        );
        return;
    }
    let mut rows = BulkInsert::new("ledger_hashes", &["idx", "hash"]);
    for (idx, h) in hashes {
        rows.row([Value::I64(idx as i64), Value::Bytes(h.0.to_vec())]);
    }
    script.insert(&mut rows);
}

/// Consecutive stored hashes on SQLite: a count, the first index and the hashes' bytes.
const SQLITE_HASHES: &str = "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) INSERT INTO ledger_hashes (idx, hash) SELECT ? + i, substr(?, i * 32 + 1, 32) FROM k";

/// Entries `[start, end)` as stored bytes, in order.
pub(crate) async fn entries(
    db: &Db,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
    let rows = sqlx::query(
        "SELECT idx, data FROM ledger_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
    )
    .bind(start as i64)
    .bind(end as i64)
    .fetch_all(db.pool())
    .await
    .map_err(sql)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("idx").map_err(sql)? as u64,
                r.try_get("data").map_err(sql)?,
            ))
        })
        .collect()
}

/// Indexes and bytes of the entries carrying `tag`, in order.
pub(crate) async fn entries_with_tag(
    db: &Db,
    tag: &str,
) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
    let rows =
        sqlx::query("SELECT idx, data FROM ledger_entries WHERE subject_tag = $1 ORDER BY idx")
            .bind(tag)
            .fetch_all(db.pool())
            .await
            .map_err(sql)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("idx").map_err(sql)? as u64,
                r.try_get("data").map_err(sql)?,
            ))
        })
        .collect()
}

/// Stores a checkpoint note for `size`; `published` once it meets the witness policy.
pub(crate) async fn save_checkpoint(
    db: &Db,
    size: u64,
    note: &str,
    published: bool,
) -> Result<(), LedgerError> {
    let mut conn = db.write_conn().await.map_err(sql)?;
    sqlx::query("INSERT INTO ledger_checkpoints (size, note, signed_ms, published) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO UPDATE SET note = excluded.note, published = excluded.published")
        .bind(size as i64)
        .bind(note)
        .bind(crate::event::now_ms())
        .bind(published)
        .execute(&mut *conn)
        .await
        .map_err(sql)?;
    Ok(())
}

/// The newest published checkpoint note, if any.
pub(crate) async fn latest_published(db: &Db) -> Result<Option<String>, LedgerError> {
    let row = sqlx::query(
        "SELECT note FROM ledger_checkpoints WHERE published ORDER BY size DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await
    .map_err(sql)?;
    row.map(|r| r.try_get("note").map_err(sql)).transpose()
}

/// Every published checkpoint note, oldest first (for auditors).
pub(crate) async fn published_checkpoints(db: &Db) -> Result<Vec<String>, LedgerError> {
    let rows = sqlx::query("SELECT note FROM ledger_checkpoints WHERE published ORDER BY size")
        .fetch_all(db.pool())
        .await
        .map_err(sql)?;
    rows.into_iter()
        .map(|r| r.try_get("note").map_err(sql))
        .collect()
}

/// The log's signing key, created by `make` on first use. The key lives in the database
/// so that every node of a PostgreSQL deployment signs with the same one.
pub(crate) async fn signing_key(
    db: &Db,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<String, LedgerError> {
    let fetch = || async {
        sqlx::query("SELECT secret FROM ledger_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(db.pool())
            .await
            .map_err(sql)
    };
    if let Some(row) = fetch().await? {
        return row.try_get("secret").map_err(sql);
    }
    sqlx::query("INSERT INTO ledger_keys (name, secret, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(make())
        .bind(crate::event::now_ms())
        .execute(db.pool())
        .await
        .map_err(sql)?;
    // Another node may have won the race: read back whichever key was stored.
    let row = fetch()
        .await?
        .ok_or_else(|| LedgerError::Corrupt("the signing key vanished".into()))?;
    row.try_get("secret").map_err(sql)
}

/// The private secret of a subject, created on first use. Reads first: almost every call is
/// about someone who already has a secret, and a read costs no commit.
pub(crate) async fn stored_subject_secret(
    db: &Db,
    subject_ref: &str,
) -> Result<Option<Vec<u8>>, LedgerError> {
    // Asked before each event about someone not in memory (Notify: every message to a new
    // address): on SQLite a point read on the calling thread, not a round trip through the
    // pool.
    if db.reads_here() {
        match db.read_here(
            "SELECT secret FROM ledger_subjects WHERE subject_ref = ?",
            &[Value::Text(subject_ref.to_string())],
            |row| row.bytes(0),
        ) {
            Ok(found) => return Ok(found.flatten()),
            Err(e) => tracing::debug!(error = %e, "a subject's secret read through the pool"),
        }
    }
    sqlx::query("SELECT secret FROM ledger_subjects WHERE subject_ref = $1")
        .bind(subject_ref)
        .fetch_optional(&mut *db.lend().await?)
        .await
        .map_err(sql)?
        .map(|row| row.try_get("secret").map_err(sql))
        .transpose()
}

/// Stores the given secrets of the subjects that have none, in one commit, and reads back
/// every one of theirs. Two nodes may race on a first use: the first insert wins, both
/// read it back.
pub(crate) async fn create_subject_secrets(
    db: &Db,
    secrets: &[(&str, [u8; 32])],
) -> Result<HashMap<String, Vec<u8>>, LedgerError> {
    // In one order, so that two nodes' batches never wait on each other's rows.
    let mut sorted: Vec<(&str, [u8; 32])> = secrets.to_vec();
    sorted.sort_unstable_by_key(|(r, _)| *r);
    sorted.dedup_by_key(|(r, _)| *r);
    let refs: Vec<&str> = sorted.iter().map(|(r, _)| *r).collect();
    let mut w = Script::new();
    for (r, secret) in &sorted {
        w.push(
            "INSERT INTO ledger_subjects (subject_ref, secret) VALUES (?, ?) ON CONFLICT (subject_ref) DO NOTHING",
            vec![Value::Text(r.to_string()), Value::Bytes(secret.to_vec())],
        );
    }
    db.commit_script(w).await?;
    let text = format!(
        "SELECT subject_ref, secret FROM ledger_subjects WHERE subject_ref IN ({})",
        civitas_store::marks(1, refs.len())
    );
    let mut q = sqlx::query(&text);
    for r in &refs {
        q = q.bind(*r);
    }
    q.fetch_all(db.pool())
        .await
        .map_err(sql)?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("subject_ref").map_err(sql)?,
                row.try_get("secret").map_err(sql)?,
            ))
        })
        .collect()
}

/// Queues entries for the sequencer within the caller's transaction (the outbox: they are
/// committed with the caller's own writes, or not at all).
pub(crate) async fn enqueue_in(
    conn: &mut civitas_store::sqlx::AnyConnection,
    engine: civitas_store::Engine,
    entries: &[NewEntry],
) -> Result<(), LedgerError> {
    use rand_core::RngCore;
    let mut rows = BulkInsert::new(
        "ledger_queue",
        &[
            "queue_ref",
            "data",
            "kind",
            "subject_tag",
            "time_ms",
            "queued_ms",
        ],
    );
    let queued_ms = crate::event::now_ms();
    // References from one random start, in order, so that entries queued together are
    // sequenced in the order given (the queue is read by time, then reference).
    let start = (rand_core::OsRng.next_u64() >> 2) as i64;
    for (i, e) in entries.iter().enumerate() {
        rows.row([
            Value::I64(start + i as i64),
            Value::Bytes(e.data.clone()),
            Value::Text(e.kind.clone()),
            e.subject_tag.clone().into(),
            Value::I64(e.time_ms),
            Value::I64(queued_ms),
        ]);
    }
    rows.flush(conn, engine).await?;
    Ok(())
}

/// Runs in `tx` the writes that go with entries, each of which must change exactly one
/// row; otherwise the transaction is rolled back and the writes refused.
pub(crate) async fn companion_writes(
    db: &Db,
    mut tx: WriteTx,
    w: &Script,
) -> Result<WriteTx, LedgerError> {
    let changed = w.execute(&mut tx, db.engine()).await?;
    if changed != w.len() as u64 {
        tx.rollback().await.map_err(sql)?;
        return Err(LedgerError::WritesRefused(format!(
            "the writes that go with the entries changed {changed} rows, not {}",
            w.len()
        )));
    }
    Ok(tx)
}

/// Queues an entry for the sequencer (on a node that does not sequence); returns its reference.
pub(crate) async fn enqueue(
    db: &Db,
    e: &NewEntry,
    writes: Option<&Script>,
) -> Result<i64, LedgerError> {
    use rand_core::RngCore;
    let queue_ref = (rand_core::OsRng.next_u64() >> 1) as i64;
    let mut tx = db.begin_write().await.map_err(sql)?;
    if let Some(w) = writes {
        tx = companion_writes(db, tx, w).await?;
    }
    sqlx::query("INSERT INTO ledger_queue (queue_ref, data, kind, subject_tag, time_ms, queued_ms) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(queue_ref)
        .bind(e.data.as_slice())
        .bind(&e.kind)
        .bind(e.subject_tag.as_deref())
        .bind(e.time_ms)
        .bind(crate::event::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(sql)?;
    tx.commit().await.map_err(sql)?;
    Ok(queue_ref)
}

/// The index a queued entry received, once it is in the log.
pub(crate) async fn index_of_queued(db: &Db, queue_ref: i64) -> Result<Option<u64>, LedgerError> {
    let row = sqlx::query("SELECT idx FROM ledger_entries WHERE queue_ref = $1")
        .bind(queue_ref)
        .fetch_optional(db.pool())
        .await
        .map_err(sql)?;
    row.map(|r| r.try_get::<i64, _>("idx").map(|i| i as u64).map_err(sql))
        .transpose()
}

/// Up to `limit` queued entries, oldest first.
pub(crate) async fn queued(db: &Db, limit: usize) -> Result<Vec<NewEntry>, LedgerError> {
    let rows = sqlx::query("SELECT queue_ref, data, kind, subject_tag, time_ms FROM ledger_queue ORDER BY queued_ms, queue_ref LIMIT $1")
        .bind(limit as i64)
        .fetch_all(db.pool())
        .await
        .map_err(sql)?;
    rows.into_iter()
        .map(|r| {
            Ok(NewEntry {
                idx: 0,
                data: r.try_get("data").map_err(sql)?,
                kind: r.try_get("kind").map_err(sql)?,
                subject_tag: r.try_get("subject_tag").map_err(sql)?,
                time_ms: r.try_get("time_ms").map_err(sql)?,
                queue_ref: Some(r.try_get("queue_ref").map_err(sql)?),
            })
        })
        .collect()
}

/// The newest entry of a kind, if any.
pub(crate) async fn latest_of_kind(
    db: &Db,
    kind: &str,
) -> Result<Option<(u64, Vec<u8>)>, LedgerError> {
    let row = sqlx::query(
        "SELECT idx, data FROM ledger_entries WHERE kind = $1 ORDER BY idx DESC LIMIT 1",
    )
    .bind(kind)
    .fetch_optional(db.pool())
    .await
    .map_err(sql)?;
    row.map(|r| {
        Ok((
            r.try_get::<i64, _>("idx").map_err(sql)? as u64,
            r.try_get("data").map_err(sql)?,
        ))
    })
    .transpose()
}

/// Stored hashes `[start, end)` in index order.
pub(crate) async fn hash_range(db: &Db, start: u64, end: u64) -> Result<Vec<Hash>, LedgerError> {
    let rows =
        sqlx::query("SELECT hash FROM ledger_hashes WHERE idx >= $1 AND idx < $2 ORDER BY idx")
            .bind(start as i64)
            .bind(end as i64)
            .fetch_all(db.pool())
            .await
            .map_err(sql)?;
    rows.into_iter()
        .map(|r| to_hash(&r.try_get::<Vec<u8>, _>("hash").map_err(sql)?))
        .collect()
}
