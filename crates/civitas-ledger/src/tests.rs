//! The ledger against a real SQLite database.

use std::collections::HashMap;
use std::time::Duration;

use civitas_store::Db;

use crate::tree::{Frontier, record_hash, verify_consistency};
use crate::{Event, Ledger, LedgerConfig, ProofBundle, SubjectTag};

async fn open(name: &str) -> (Db, Ledger) {
    let dir = civitas_store::scratch::folder(&format!("ledger-{name}"));
    let db = Db::connect(
        &format!("sqlite://{}?mode=rwc", dir.join("l.db").display()),
        4,
    )
    .await
    .unwrap();
    civitas_store::migrate(&db, &[crate::COMPONENT])
        .await
        .unwrap();
    let mut config = LedgerConfig::new("test.civitas/ledger");
    config.checkpoint_interval = Duration::from_millis(20);
    config.hash_file = Some(dir.join("hashes.bin"));
    let ledger = Ledger::open(db.clone(), config).await.unwrap();
    (db, ledger)
}

fn hash_file(name: &str) -> std::path::PathBuf {
    civitas_store::scratch::path(&format!("ledger-{name}")).join("hashes.bin")
}

fn event(i: usize) -> Event {
    Event::new("test.appended", "system", &format!("object/{i}")).with("i", i as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_indexes_and_every_bundle_verifies() {
    let (_db, ledger) = open("concurrent").await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..40 {
                got.push(l.append(&event(t * 100 + i)).await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..320).collect::<Vec<u64>>(),
        "indexes are dense and unique"
    );

    let key = ledger.verifier_key().to_string();
    for i in [0u64, 1, 2, 100, 255, 256, 319] {
        let bundle = ledger.proof_bundle(i).await.unwrap();
        let text = bundle.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
        let parsed = ProofBundle::parse(&text).unwrap();
        assert_eq!(parsed, bundle);
        let cp = parsed.verify(&key).unwrap();
        assert!(cp.size > i);
        let logged = Event::decode(parsed.extra.as_ref().unwrap()).unwrap();
        assert_eq!(logged.kind, "test.appended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bundles_fail_verification() {
    let (_db, ledger) = open("tamper").await;
    for i in 0..10 {
        ledger.append(&event(i)).await.unwrap();
    }
    let bundle = ledger.proof_bundle(3).await.unwrap();
    let key = ledger.verifier_key().to_string();
    assert!(bundle.verify(&key).is_ok());

    let mut changed_entry = bundle.clone();
    changed_entry.extra = Some(event(4).encode().unwrap());
    assert!(
        changed_entry.verify(&key).is_err(),
        "another entry must not verify at index 3"
    );

    let mut moved = bundle.clone();
    moved.index = 4;
    assert!(
        moved.verify(&key).is_err(),
        "the proof is bound to its index"
    );

    let mut flipped = bundle.clone();
    flipped.proof[0].0[0] ^= 1;
    assert!(
        flipped.verify(&key).is_err(),
        "a flipped bit in the proof must fail"
    );

    let size = bundle.verify(&key).unwrap().size;
    let text = bundle.to_text();
    let forged_root = text.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
    assert_ne!(forged_root, text);
    assert!(
        ProofBundle::parse(&forged_root)
            .unwrap()
            .verify(&key)
            .is_err(),
        "a changed checkpoint must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_rebuild_the_checkpointed_root_and_checkpoints_stay_consistent() {
    let (_db, ledger) = open("tiles").await;
    for i in 0..300 {
        ledger.append(&event(i)).await.unwrap();
    }
    let cp = ledger.wait_for_checkpoint(299).await.unwrap();
    assert_eq!(cp.size, 300);
    // Rebuild the tree from the entry bundles alone, as an auditor would.
    let mut entries = Vec::new();
    for (n, width) in [(0u64, 256u32), (1, 44)] {
        let bundle = ledger.entry_bundle(n, width).await.unwrap();
        let mut rest = bundle.as_slice();
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            entries.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
    }
    let mut f = Frontier::empty();
    let mut hashes = Vec::new();
    for e in &entries {
        f.append(record_hash(e), &mut hashes);
    }
    assert_eq!(f.root(), cp.root);
    // The level-0 hash tile is the leaves' hashes; level 1 holds the one full subtree of 256.
    let tile0 = ledger.hash_tile(0, 0, 256).await.unwrap();
    assert_eq!(&tile0[..32], &record_hash(&entries[0]).0);
    let tile1 = ledger.hash_tile(1, 0, 1).await.unwrap();
    assert_eq!(tile1.len(), 32);
    assert!(
        ledger.hash_tile(0, 1, 45).await.is_err(),
        "no tile beyond the checkpoint"
    );
    // A partial tile of an earlier tree (of 256 + 43) is still served, the first 43 hashes
    // of the current one (C2SP's tlog-tiles: for every size a checkpoint was made for).
    let edge = ledger.hash_tile(0, 1, 44).await.unwrap();
    let earlier = ledger.hash_tile(0, 1, 43).await.unwrap();
    assert_eq!(earlier, edge[..43 * 32]);
    let bundle = ledger.entry_bundle(1, 43).await.unwrap();
    assert!(
        ledger
            .entry_bundle(1, 44)
            .await
            .unwrap()
            .starts_with(&bundle)
    );

    let old = ledger.checkpoint().await.unwrap();
    for i in 300..333 {
        ledger.append(&event(i)).await.unwrap();
    }
    let new = ledger.wait_for_checkpoint(332).await.unwrap();
    let proof = ledger.consistency_proof(old.size, new.size).await.unwrap();
    verify_consistency(&proof, new.size, new.root, old.size, old.root).unwrap();
    assert!(
        verify_consistency(&proof, new.size, new.root, old.size, record_hash(b"fork")).is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_finds_their_own_events_and_only_theirs() {
    let (_db, ledger) = open("subjects").await;
    let alice = ledger.subject_secret("person:1").await.unwrap();
    let bob = ledger.subject_secret("person:2").await.unwrap();
    assert_eq!(
        ledger.subject_secret("person:1").await.unwrap(),
        alice,
        "stable per person"
    );
    let mut mine = Vec::new();
    for i in 0..6 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        let idx = ledger.append(&event(i).about(who.tag())).await.unwrap();
        if i % 2 == 0 {
            mine.push(idx);
        }
    }
    let found = ledger.subject_events(alice.tag()).await.unwrap();
    assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), mine);
    let key = ledger.verifier_key().to_string();
    for (i, e) in &found {
        assert_eq!(e.subject, Some(alice.tag()));
        ledger.proof_bundle(*i).await.unwrap().verify(&key).unwrap();
    }
    // The log itself never holds the reference, only the tag.
    let raw = ledger.entry(mine[0]).await.unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("person:1"));
    let none = SubjectTag([7; 32]);
    assert!(ledger.subject_events(none).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_entry_carries_its_tag_but_is_not_listed_under_it() {
    let (db, ledger) = open("unlisted").await;
    let address = ledger
        .subject_secret("notify-recipient:a@example.org")
        .await
        .unwrap();
    let listed = ledger.append(&event(1).about(address.tag())).await.unwrap();
    let unlisted = ledger
        .append(&event(2).about_unlisted(address.tag()))
        .await
        .unwrap();
    // A later `about` lists it again.
    let relisted = ledger
        .append(&event(3).about_unlisted(address.tag()).about(address.tag()))
        .await
        .unwrap();
    let found = ledger.subject_events(address.tag()).await.unwrap();
    assert_eq!(
        found.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![listed, relisted]
    );
    // The entry is the event as encoded, tag included, and proven like any other.
    let e = Event::decode(&ledger.entry(unlisted).await.unwrap()).unwrap();
    assert_eq!(e.subject, Some(address.tag()));
    let key = ledger.verifier_key().to_string();
    ledger
        .proof_bundle(unlisted)
        .await
        .unwrap()
        .verify(&key)
        .unwrap();
    // Stored without the tag column that the index by tag covers.
    let tags: Vec<Option<String>> = civitas_store::sqlx::query_scalar(
        "SELECT subject_tag FROM ledger_entries WHERE idx IN ($1, $2) ORDER BY idx",
    )
    .bind(listed as i64)
    .bind(unlisted as i64)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(tags, vec![Some(address.tag().to_string()), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_persons_secret_is_written_with_the_first_events_about_them() {
    use civitas_store::{Script, Value};
    let (db, ledger) = open("subjects-for-events").await;
    let stored = |r: String| {
        let db = db.clone();
        async move {
            civitas_store::sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT secret FROM ledger_subjects WHERE subject_ref = $1",
            )
            .bind(r)
            .fetch_optional(db.pool())
            .await
            .unwrap()
        }
    };
    // Someone with a secret already keeps it.
    let old = ledger.subject_secret("person:old").await.unwrap();
    // Several events at once about each of a few new people, some of them refused (an
    // update that finds no row), so that batches mix them.
    let mut tasks = Vec::new();
    for i in 0..48usize {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let who = if i == 47 {
                "person:old".to_string()
            } else {
                format!("person:{}", i % 6)
            };
            let secret = l.subject_secret_for_event(&who).await.unwrap();
            let e = event(i).about(secret.tag());
            let done = if i % 8 == 3 {
                let mut w = Script::new();
                w.push(
                    "UPDATE ledger_tree SET size = size WHERE id = ?",
                    vec![Value::I64(7)],
                );
                l.append_with(&e, w).await
            } else {
                l.append(&e).await
            };
            (who, secret, i, done.is_ok())
        }));
    }
    let mut secrets: HashMap<String, crate::SubjectSecret> = HashMap::new();
    let mut logged: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let (who, secret, i, ok) = t.await.unwrap();
        assert_eq!(ok, i % 8 != 3, "event {i}");
        let first = secrets.entry(who.clone()).or_insert_with(|| secret.clone());
        assert_eq!(
            *first, secret,
            "one secret per person, however many ask at once"
        );
        *logged.entry(who).or_default() += usize::from(ok);
    }
    assert_eq!(
        secrets["person:old"], old,
        "a stored secret is never replaced"
    );
    for (who, secret) in &secrets {
        // Stored by the time the events are durable, and the person finds every one.
        assert_eq!(
            stored(who.clone()).await.as_deref(),
            Some(&secret.as_bytes()[..]),
            "{who}"
        );
        assert_eq!(ledger.subject_secret(who).await.unwrap(), *secret);
        let found = ledger.subject_events(secret.tag()).await.unwrap();
        assert_eq!(found.len(), logged[who], "{who}");
    }
    // A secret made for an event that was then refused is the one given later, and stored
    // once asked for as a stored one.
    let lost = ledger
        .subject_secret_for_event("person:refused")
        .await
        .unwrap();
    let mut w = Script::new();
    w.push(
        "UPDATE ledger_tree SET size = size WHERE id = ?",
        vec![Value::I64(7)],
    );
    assert!(
        ledger
            .append_with(&event(100).about(lost.tag()), w)
            .await
            .is_err()
    );
    assert_eq!(
        ledger
            .subject_secret_for_event("person:refused")
            .await
            .unwrap(),
        lost
    );
    assert_eq!(ledger.subject_secret("person:refused").await.unwrap(), lost);
    assert_eq!(
        stored("person:refused".into()).await.as_deref(),
        Some(&lost.as_bytes()[..])
    );
    // And another one, made but not yet used: the next batch writes it anyway.
    let waiting = ledger
        .subject_secret_for_event("person:waiting")
        .await
        .unwrap();
    assert_eq!(stored("person:waiting".into()).await, None);
    ledger.append(&event(200)).await.unwrap();
    assert_eq!(
        stored("person:waiting".into()).await.as_deref(),
        Some(&waiting.as_bytes()[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_for_an_event_is_stored_with_it_on_both_engines() {
    for (db, ledger) in crate::testing::ledgers_on_both_engines("secret-for-event", &[]).await {
        let secret = ledger.subject_secret_for_event("person:new").await.unwrap();
        let idx = ledger.append(&event(1).about(secret.tag())).await.unwrap();
        let stored: Vec<u8> = civitas_store::sqlx::query_scalar(
            "SELECT secret FROM ledger_subjects WHERE subject_ref = $1",
        )
        .bind("person:new")
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(stored, secret.as_bytes().to_vec(), "{:?}", db.engine());
        assert_eq!(ledger.subject_secret("person:new").await.unwrap(), secret);
        let found = ledger.subject_events(secret.tag()).await.unwrap();
        assert_eq!(found.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![idx]);
        // A secret stored before this ledger's memory knew it (by an earlier run, or another
        // node) is read, not made again, and the event about them commits.
        civitas_store::sqlx::query(
            "INSERT INTO ledger_subjects (subject_ref, secret) VALUES ($1, $2)",
        )
        .bind("person:earlier")
        .bind(vec![9u8; 32])
        .execute(db.pool())
        .await
        .unwrap();
        let earlier = ledger
            .subject_secret_for_event("person:earlier")
            .await
            .unwrap();
        assert_eq!(
            earlier.as_bytes().to_vec(),
            vec![9u8; 32],
            "{:?}",
            db.engine()
        );
        ledger.append(&event(2).about(earlier.tag())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_log_continues_where_it_stopped() {
    let (db, ledger) = open("reopen").await;
    let mut roots = HashMap::new();
    for i in 0..20 {
        ledger.append(&event(i)).await.unwrap();
    }
    let before = ledger.wait_for_checkpoint(19).await.unwrap();
    roots.insert(before.size, before.root);
    let key = ledger.verifier_key().to_string();
    drop(ledger);
    // The hash file is damaged while the log is down: the reopened log notices and rebuilds it.
    let path = hash_file("reopen");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0xff;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let mut config = LedgerConfig::new("test.civitas/ledger");
    config.hash_file = Some(path);
    let again = Ledger::open(db, config).await.unwrap();
    for i in [0, 1, 7, 19] {
        again.proof_bundle(i).await.unwrap().verify(&key).unwrap();
    }
    // Damage that the checks at open cannot see (one leaf hash in the middle) while the log
    // runs: bundles are still right, built from the database.
    let path = hash_file("reopen");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[32 * 2] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    for i in [2, 3] {
        again.proof_bundle(i).await.unwrap().verify(&key).unwrap();
    }
    assert_eq!(again.verifier_key(), key, "the same key after a restart");
    assert_eq!(again.append(&event(20)).await.unwrap(), 20);
    let after = again.wait_for_checkpoint(20).await.unwrap();
    let proof = again
        .consistency_proof(before.size, after.size)
        .await
        .unwrap();
    verify_consistency(&proof, after.size, after.root, before.size, before.root).unwrap();
}

#[test]
fn events_encode_canonically_and_refuse_bad_fields() {
    let e = Event {
        time_ms: 1,
        ..Event::new("platform.seeded", "system", "registry/demo")
    }
    .with("b", 2)
    .with("a", 1);
    let text = String::from_utf8(e.encode().unwrap()).unwrap();
    assert_eq!(
        text,
        r#"{"v":1,"kind":"platform.seeded","actor":"system","object":"registry/demo","time_ms":1,"public":{"a":1,"b":2}}"#
    );
    assert!(Event::new("Bad Kind", "system", "x").encode().is_err());
    assert!(Event::new("ok", "", "x").encode().is_err());
    let big = Event::new("ok", "system", "x").with("blob", "x".repeat(5000));
    assert!(big.encode().is_err());
}

/// Delivers add-checkpoint requests straight to in-process witnesses.
struct Direct(HashMap<String, crate::Witness>);

impl crate::WitnessTransport for Direct {
    fn add_checkpoint<'a>(
        &'a self,
        url: &'a str,
        body: String,
    ) -> crate::witness::TransportFuture<'a> {
        Box::pin(async move {
            let w = self.0.get(url).ok_or("no such witness")?;
            Ok(match w.add_checkpoint(&body).await {
                Ok(lines) => (200, lines),
                Err(crate::WitnessRefusal::Conflict(n)) => (409, format!("{n}\n")),
                Err(e) => (e.status(), e.to_string()),
            })
        })
    }
}

async fn scratch_db(name: &str) -> Db {
    let dir = civitas_store::scratch::folder(&format!("ledger-{name}"));
    let db = Db::connect(
        &format!("sqlite://{}?mode=rwc", dir.join("l.db").display()),
        4,
    )
    .await
    .unwrap();
    civitas_store::migrate(&db, &[crate::COMPONENT])
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_published_with_a_quorum_of_cosignatures_and_forks_are_caught() {
    use crate::{TrustedCosigner, Witness, WitnessEndpoint, WitnessPolicy, verify_cosigned};
    use std::sync::Arc;

    // The log's key is made first so the witnesses can trust it.
    let log_db = scratch_db("wlog").await;
    let skey = crate::note::generate_signer_key("test.civitas/ledger");
    civitas_store::sqlx::query(
        "INSERT INTO ledger_keys (name, secret, created_ms) VALUES ('log', $1, 0)",
    )
    .bind(&skey)
    .execute(log_db.pool())
    .await
    .unwrap();
    let log_vkey = crate::note::LogKey::from_signer_key(&skey)
        .unwrap()
        .verifier_key()
        .to_string();
    let w1 = Witness::open(
        scratch_db("w1").await,
        "w1.test",
        std::slice::from_ref(&log_vkey),
    )
    .await
    .unwrap();
    let w2 = Witness::open(
        scratch_db("w2").await,
        "w2.test",
        std::slice::from_ref(&log_vkey),
    )
    .await
    .unwrap();
    let trusted = vec![
        TrustedCosigner::parse(&w1.verifier_key()).unwrap(),
        TrustedCosigner::parse(&w2.verifier_key()).unwrap(),
    ];
    let transport = Arc::new(Direct(HashMap::from([
        ("w1".to_string(), w1.clone()),
        ("w2".to_string(), w2.clone()),
    ])));
    let mut config = LedgerConfig::new("test.civitas/ledger");
    config.checkpoint_interval = Duration::from_millis(20);
    config.witnesses = Some(WitnessPolicy {
        witnesses: vec![
            WitnessEndpoint {
                url: "w1".into(),
                key: trusted[0].clone(),
            },
            WitnessEndpoint {
                url: "w2".into(),
                key: trusted[1].clone(),
            },
        ],
        quorum: 2,
        transport,
    });
    let ledger = Ledger::open(log_db, config).await.unwrap();
    for i in 0..5 {
        ledger.append(&event(i)).await.unwrap();
    }
    let first = ledger.wait_for_checkpoint(4).await.unwrap();
    verify_cosigned(&first.note, &log_vkey, &trusted, 2).unwrap();
    for i in 5..9 {
        ledger.append(&event(i)).await.unwrap();
    }
    let second = ledger.wait_for_checkpoint(8).await.unwrap();
    verify_cosigned(&second.note, &log_vkey, &trusted, 2).unwrap();
    assert!(verify_cosigned(&second.note, &log_vkey, &trusted, 3).is_err());
    let bundle = ledger.proof_bundle(2).await.unwrap();
    verify_cosigned(&bundle.checkpoint, &log_vkey, &trusted, 2).unwrap();

    // Rollback: offering the first checkpoint again after the witness saw the second.
    let body = crate::witness::add_checkpoint_body(first.size, &[], &first.note);
    match w1.add_checkpoint(&body).await {
        Err(crate::WitnessRefusal::Conflict(n)) => assert_eq!(n, second.size),
        other => panic!("a rollback must be refused with 409, got {other:?}"),
    }

    // A fork: the same key signs a different history of the same size.
    let fork_db = scratch_db("wfork").await;
    civitas_store::sqlx::query(
        "INSERT INTO ledger_keys (name, secret, created_ms) VALUES ('log', $1, 0)",
    )
    .bind(&skey)
    .execute(fork_db.pool())
    .await
    .unwrap();
    let mut fork_config = LedgerConfig::new("test.civitas/ledger");
    fork_config.checkpoint_interval = Duration::from_millis(20);
    let fork = Ledger::open(fork_db, fork_config).await.unwrap();
    for i in 0..(second.size as usize) {
        fork.append(&Event::new("test.forged", "system", &format!("x/{i}")))
            .await
            .unwrap();
    }
    let forged = fork.wait_for_checkpoint(second.size - 1).await.unwrap();
    assert_eq!(forged.size, second.size);
    let body = crate::witness::add_checkpoint_body(second.size, &[], &forged.note);
    assert!(
        matches!(
            w1.add_checkpoint(&body).await,
            Err(crate::WitnessRefusal::Fork(_))
        ),
        "same size, other root"
    );
    fork.append(&event(99)).await.unwrap();
    let grown = fork.wait_for_checkpoint(second.size).await.unwrap();
    let proof = fork
        .consistency_proof(second.size, grown.size)
        .await
        .unwrap();
    let body = crate::witness::add_checkpoint_body(second.size, &proof, &grown.note);
    let refusal = w2.add_checkpoint(&body).await.unwrap_err();
    assert_eq!(
        refusal.status(),
        422,
        "an extension of a forked history: {refusal}"
    );
}

/// A fresh PostgreSQL database, when `CIVITAS_TEST_POSTGRES_URL` names a server.
async fn postgres(name: &str) -> Option<String> {
    civitas_store::scratch::test_postgres(&format!("ledger_{name}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_node_sequences_the_others_queue_and_a_successor_takes_over() {
    let Some(url) = postgres("failover").await else {
        return;
    };
    let node = |url: String, name: &'static str| async move {
        let db = Db::connect(&url, 4).await.unwrap();
        civitas_store::migrate(&db, &[crate::COMPONENT])
            .await
            .unwrap();
        let mut config = LedgerConfig::new("test.civitas/ledger");
        config.checkpoint_interval = Duration::from_millis(20);
        let path = hash_file(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        config.hash_file = Some(path);
        Ledger::open(db, config).await.unwrap()
    };
    let a = node(url.clone(), "node-a").await;
    let b = node(url.clone(), "node-b").await;
    assert!(
        a.is_sequencer() && !b.is_sequencer(),
        "exactly one node sequences"
    );
    let mut idx = Vec::new();
    for i in 0..5 {
        idx.push(a.append(&event(i)).await.unwrap());
        idx.push(b.append(&event(100 + i)).await.unwrap());
    }
    // A node that does not sequence queues an entry and its writes in one transaction.
    let db = Db::connect(&url, 1).await.unwrap();
    civitas_store::sqlx::raw_sql("CREATE TABLE companions (id TEXT PRIMARY KEY)")
        .execute(db.pool())
        .await
        .unwrap();
    let insert = |id: &'static str| {
        let mut s = civitas_store::Script::new();
        s.push("INSERT INTO companions (id) VALUES (?)", vec![id.into()]);
        s
    };
    idx.push(b.append_with(&event(7), insert("seven")).await.unwrap());
    assert!(b.append_with(&event(8), insert("seven")).await.is_err());
    let rows: i64 = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM companions")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let queued: i64 = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM ledger_queue")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        (rows, queued),
        (1, 0),
        "the refused one left nothing queued"
    );
    db.close().await;
    idx.sort_unstable();
    assert_eq!(idx, (0..11).collect::<Vec<u64>>());
    let before = b.wait_for_checkpoint(10).await.unwrap();
    let key = b.verifier_key().to_string();
    b.proof_bundle(3).await.unwrap().verify(&key).unwrap();

    drop(a); // the sequencer's node goes away; its lock is released
    let started = std::time::Instant::now();
    while !b.is_sequencer() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no node took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.append(&event(200)).await.unwrap(), 11);
    let after = b.wait_for_checkpoint(11).await.unwrap();
    let proof = b.consistency_proof(before.size, after.size).await.unwrap();
    verify_consistency(&proof, after.size, after.root, before.size, before.root).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_a_committed_transaction_reach_the_log_and_a_rolled_back_one_leaves_none() {
    let (db, ledger) = open("outbox").await;
    ledger.append(&event(0)).await.unwrap();
    // Rolled back: nothing is queued, nothing reaches the log.
    let mut tx = db.pool().begin().await.unwrap();
    ledger
        .append_in(
            &mut tx,
            &[Event::new("test.rolled_back", "system", "object/x")],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    ledger.queued();
    // Committed: both events are sequenced moments later, without anyone waiting on them.
    let mut tx = db.pool().begin().await.unwrap();
    ledger
        .append_in(&mut tx, &[event(1), event(2)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ledger.queued();
    let mut found = Vec::new();
    for _ in 0..200 {
        let rows: Vec<Vec<u8>> =
            civitas_store::sqlx::query_scalar("SELECT data FROM ledger_entries ORDER BY idx")
                .fetch_all(db.pool())
                .await
                .unwrap();
        found = rows
            .iter()
            .map(|d| Event::decode(d).unwrap())
            .filter(|e| e.kind == "test.appended")
            .map(|e| e.public["i"].as_u64().unwrap())
            .collect::<Vec<u64>>();
        if found.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(found, vec![0, 1, 2]);
    assert!(
        ledger
            .latest_of_kind("test.rolled_back")
            .await
            .unwrap()
            .is_none()
    );
    let queued: i64 = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM ledger_queue")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(queued, 0, "the queue is emptied as entries are sequenced");
    // And a checkpoint covers them: the log verifies as usual.
    let checkpoint = ledger.wait_for_checkpoint(2).await.unwrap();
    assert!(checkpoint.size >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_writes_commit_with_their_event_and_a_bad_one_fails_alone() {
    use civitas_store::{Script, Value};
    let (db, ledger) = open("companions").await;
    civitas_store::sqlx::raw_sql("CREATE TABLE companions (id TEXT PRIMARY KEY, idx BIGINT)")
        .execute(db.pool())
        .await
        .unwrap();
    let insert = |id: String| {
        let mut s = Script::new();
        s.push(
            "INSERT INTO companions (id) VALUES (?)",
            vec![Value::Text(id)],
        );
        s
    };
    ledger
        .append_with(&event(1000), insert("taken".into()))
        .await
        .unwrap();
    // Many at once, so that batches hold several appends with their writes, some failing:
    // a key already taken (the database refuses it) and an update that finds no row.
    let mut tasks = Vec::new();
    for i in 0..48usize {
        let l = ledger.clone();
        let writes = match i % 8 {
            3 => Some(insert("taken".into())),
            5 => {
                let mut s = Script::new();
                s.push(
                    "UPDATE companions SET idx = 1 WHERE id = ?",
                    vec![Value::Str("nobody")],
                );
                Some(s)
            }
            0 => None,
            _ => Some(insert(format!("row-{i}"))),
        };
        tasks.push(tokio::spawn(async move {
            match writes {
                Some(w) => l.append_with(&event(i), w).await,
                None => l.append(&event(i)).await,
            }
        }));
    }
    let mut good = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match (i % 8, t.await.unwrap()) {
            (3 | 5, Ok(idx)) => panic!("append {i} was logged at {idx} without its writes"),
            (3 | 5, Err(e)) => assert!(!e.to_string().contains("inconsistent"), "{e}"),
            (_, Ok(_)) => good.push(i as u64),
            (_, Err(e)) => panic!("append {i} failed with the bad ones: {e}"),
        }
    }
    // Every logged event's writes are there, and no failed one's event is logged.
    let logged: Vec<Vec<u8>> =
        civitas_store::sqlx::query_scalar("SELECT data FROM ledger_entries ORDER BY idx")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let mut logged: Vec<u64> = logged
        .iter()
        .map(|d| Event::decode(d).unwrap().public["i"].as_u64().unwrap())
        .filter(|i| *i < 1000)
        .collect();
    logged.sort_unstable();
    assert_eq!(logged, good);
    let rows: i64 = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM companions")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let inserted = good.iter().filter(|i| *i % 8 != 0).count() as i64;
    assert_eq!(
        rows,
        1 + inserted,
        "each logged event's insert, and only those"
    );
    // A bad one alone in its batch fails alone too.
    assert!(
        ledger
            .append_with(&event(1500), insert("taken".into()))
            .await
            .is_err()
    );
    // The sequencer carries on, and the log verifies.
    let last = ledger.append(&event(2000)).await.unwrap();
    assert_eq!(last as usize, logged.len() + 1, "indexes stay dense");
    let key = ledger.verifier_key().to_string();
    ledger.wait_for_checkpoint(last).await.unwrap();
    ledger
        .proof_bundle(last)
        .await
        .unwrap()
        .verify(&key)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_events_go_in_with_their_writes_in_order_or_not_at_all() {
    use civitas_store::{Script, Value};
    let (db, ledger) = open("all-with").await;
    civitas_store::sqlx::raw_sql("CREATE TABLE items (id TEXT PRIMARY KEY, state TEXT)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut w = Script::new();
    w.push(
        "INSERT INTO items (id, state) VALUES (?, ?)",
        vec![Value::Str("a"), Value::Str("draft")],
    );
    w.push(
        "INSERT INTO items (id, state) VALUES (?, ?)",
        vec![Value::Str("b"), Value::Str("draft")],
    );
    ledger
        .append_all_with(&[event(1), event(2), event(3)], w)
        .await
        .unwrap();
    let logged: Vec<Vec<u8>> =
        civitas_store::sqlx::query_scalar("SELECT data FROM ledger_entries ORDER BY idx")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let order: Vec<u64> = logged
        .iter()
        .map(|d| Event::decode(d).unwrap().public["i"].as_u64().unwrap())
        .collect();
    assert!(order.ends_with(&[1, 2, 3]), "{order:?}");
    // A compare-and-set that loses: none of the events, none of the writes.
    let mut lost = Script::new();
    lost.push(
        "INSERT INTO items (id, state) VALUES (?, ?)",
        vec![Value::Str("c"), Value::Str("draft")],
    );
    lost.push(
        "UPDATE items SET state = 'sent' WHERE id = ? AND state = ?",
        vec![Value::Str("a"), Value::Str("sent")],
    );
    let refused = ledger
        .append_all_with(&[event(4), event(5)], lost)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, crate::LedgerError::WritesRefused(_)),
        "{refused}"
    );
    let rows: i64 = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM items")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(ledger.durable_size() as usize, logged.len());
    // The log goes on, dense.
    let next = ledger.append(&event(6)).await.unwrap();
    assert_eq!(next as usize, logged.len());
}

#[test]
fn hex_is_two_lower_case_digits_a_byte() {
    assert_eq!(crate::event::hex(&[]), "");
    assert_eq!(crate::event::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    let every: Vec<u8> = (0..=255).collect();
    let expected: String = every.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(crate::event::hex(&every), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hashes_of_any_count_go_in_as_one_statement_and_read_back() {
    let db = scratch_db("hash-rows").await;
    let hash = |i: u64| record_hash(format!("leaf {i}").as_bytes());
    let mut start = 0u64;
    for count in [1u64, 2, 3, 7, 64, 130] {
        let hashes: Vec<_> = (start..start + count).map(|i| (i, hash(i))).collect();
        let mut script = civitas_store::Script::new();
        crate::storage::push_hashes(&mut script, db.engine(), hashes.clone());
        // Multi-row inserts would take one statement per set bit of the count.
        assert_eq!(script.len(), 1, "{count} hashes in one statement");
        assert_eq!(db.commit_script(script).await.unwrap(), count);
        let indexes: Vec<u64> = hashes.iter().map(|(i, _)| *i).collect();
        let stored = crate::storage::read_hashes(&db, &indexes).await.unwrap();
        for (i, h) in &hashes {
            assert_eq!(stored[i], *h, "hash {i} of {count}");
        }
        start += count;
    }
    // Hashes that are not consecutive (never the case in a batch) go in row by row.
    let gaps = vec![
        (start + 1, hash(1)),
        (start + 3, hash(3)),
        (start + 4, hash(4)),
    ];
    let mut script = civitas_store::Script::new();
    crate::storage::push_hashes(&mut script, db.engine(), gaps.clone());
    assert_eq!(db.commit_script(script).await.unwrap(), 3);
    let stored = crate::storage::read_hashes(&db, &[start + 1, start + 3, start + 4])
        .await
        .unwrap();
    assert_eq!(stored[&(start + 3)], hash(3));
    assert!(crate::storage::read_hashes(&db, &[start]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stored_with_bigint_keys_is_rebuilt_whole_on_sqlite_and_goes_on() {
    use civitas_store::sqlx::{query, query_scalar, raw_sql};
    let dir = civitas_store::scratch::folder("ledger-rowid");
    let db = Db::connect(
        &format!("sqlite://{}?mode=rwc", dir.join("l.db").display()),
        4,
    )
    .await
    .unwrap();
    // The first migration as SQLite ran it before `dialect` made such keys the rowid: a
    // table stored by rowid beside an index of its key.
    civitas_store::schema_status(&db, &[]).await.unwrap();
    raw_sql(crate::COMPONENT.migrations[0].sql)
        .execute(db.pool())
        .await
        .unwrap();
    query("INSERT INTO civitas_schema (component, version, name, applied_unix) VALUES ('ledger', 1, 'log', 0)")
        .execute(db.pool())
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            query_scalar::<_, i64>(sql)
                .fetch_one(db.pool())
                .await
                .unwrap()
        }
    };
    let key_indexes = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('ledger_entries', 'ledger_hashes') AND name LIKE 'sqlite_autoindex%'";
    assert_eq!(
        count(key_indexes).await,
        2,
        "each key in an index of its own"
    );
    let config = || {
        let mut c = LedgerConfig::new("test.civitas/ledger");
        c.checkpoint_interval = Duration::from_millis(20);
        c.hash_file = Some(dir.join("hashes.bin"));
        c
    };
    let ledger = Ledger::open(db.clone(), config()).await.unwrap();
    for i in 0..12 {
        ledger.append(&event(i)).await.unwrap();
    }
    ledger.wait_for_checkpoint(11).await.unwrap();
    let key = ledger.verifier_key().to_string();
    drop(ledger);

    let applied = civitas_store::migrate(&db, &[crate::COMPONENT])
        .await
        .unwrap();
    assert_eq!(
        applied
            .iter()
            .map(|(c, v, _)| (c.as_str(), *v))
            .collect::<Vec<_>>(),
        [("ledger", 2)]
    );
    assert_eq!(count(key_indexes).await, 0, "the key is the rowid");
    assert_eq!(
        count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'ledger_entries_%'").await,
        3,
        "the entries' own indexes are made again"
    );
    assert_eq!(count("SELECT COUNT(*) FROM ledger_entries").await, 12);

    // The same log, which goes on from where it was.
    let again = Ledger::open(db.clone(), config()).await.unwrap();
    for i in 12..20 {
        assert_eq!(again.append(&event(i)).await.unwrap(), i as u64);
    }
    again.wait_for_checkpoint(19).await.unwrap();
    for i in [0, 5, 11, 12, 19] {
        again.proof_bundle(i).await.unwrap().verify(&key).unwrap();
    }
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger_hashes WHERE idx < 0").await,
        0
    );
}
