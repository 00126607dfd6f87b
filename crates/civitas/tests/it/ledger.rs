//! The ledger end to end: its C2SP files over HTTP, the `civitas ledger` checks, witnesses
//! in separate processes, and durability across kill -9.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use civitas_ledger::note::verify_checkpoint;
use civitas_ledger::{TrustedCosigner, verify_cosigned};

use crate::cli::{civitas, run_ok, sigterm, wait_exit};
use crate::on_both_engines;
use crate::support::scratch;

on_both_engines! {
    async fn the_log_is_published_in_the_c2sp_layout_with_caching_headers(app) {
        let key_text = app.get("/ledger/key").await.text().await.unwrap();
        let mut lines = key_text.lines();
        let origin = lines.next().unwrap().to_string();
        let vkey = lines.next().unwrap().to_string();
        assert!(vkey.starts_with(&format!("{origin}+")), "{key_text}");

        let res = app.get("/ledger/checkpoint").await;
        assert_eq!(res.status(), 200);
        let cache = res.headers()["cache-control"].to_str().unwrap().to_string();
        assert!(cache.contains("max-age=2"), "short-lived: {cache}");
        let note = res.text().await.unwrap();
        let cp = verify_checkpoint(&note, &vkey).unwrap();
        assert!(cp.size >= 3, "migrations, configuration and seeding are logged: size {}", cp.size);

        let width = cp.size.min(256);
        let suffix = if width == 256 { String::new() } else { format!(".p/{width}") };
        let res = app.get(&format!("/ledger/tile/entries/000{suffix}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "public, max-age=31536000, immutable");
        let bundle = res.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&bundle);
        for kind in ["platform.schema_migrated", "platform.config_applied", "platform.demo_seeded"] {
            assert!(text.contains(kind), "{kind} not logged");
        }
        let tile = app.get(&format!("/ledger/tile/0/000{suffix}")).await.bytes().await.unwrap();
        assert_eq!(tile.len() as u64, width * 32);
        assert_eq!(app.get("/ledger/tile/0/000.p/999").await.status(), 404);
        assert_eq!(app.get(&format!("/ledger/tile/0/{:03}", 5)).await.status(), 404, "beyond the tree");
        assert_eq!(app.get(&format!("/ledger/tile/0/000.p/{}", width + 1)).await.status(), 404, "beyond the tree");
        // Once the log has grown, a client holding the older checkpoint still gets its
        // partial tiles, unchanged (C2SP: served for every size a checkpoint was made for).
        if width < 255 {
            let last = app.ledger.append(&civitas_ledger::Event::new("test.grow", "system", "x/1")).await.unwrap();
            app.ledger.wait_for_checkpoint(last).await.unwrap();
            let res = app.get(&format!("/ledger/tile/entries/000{suffix}")).await;
            assert_eq!(res.status(), 200);
            assert_eq!(res.bytes().await.unwrap(), bundle);
            assert_eq!(app.get(&format!("/ledger/tile/0/000{suffix}")).await.bytes().await.unwrap(), tile);
        }
        app.stop().await;
    }

    async fn audit_and_consistency_checks_pass_on_an_honest_log(app) {
        let dir = scratch("audit");
        let key = dir.join("log.key");
        std::fs::write(&key, app.get("/ledger/key").await.text().await.unwrap()).unwrap();
        let trusted = dir.join("trusted");
        let base = app.base.clone();
        let (k, t) = (key.clone(), trusted.clone());
        let first = tokio::task::spawn_blocking(move || run_ok(civitas().args(["ledger", "verify-consistency", &base, "--key"]).arg(&k).arg("--trusted").arg(&t))).await.unwrap();
        assert!(first.contains("for the first time"), "{first}");
        let mut last = 0;
        for i in 0..300 {
            last = app.ledger.append(&civitas_ledger::Event::new("test.grow", "system", &format!("x/{i}"))).await.unwrap();
        }
        app.ledger.wait_for_checkpoint(last).await.unwrap();
        let base = app.base.clone();
        let (k, t) = (key.clone(), trusted.clone());
        let second = tokio::task::spawn_blocking(move || run_ok(civitas().args(["ledger", "verify-consistency", &base, "--key"]).arg(&k).arg("--trusted").arg(&t))).await.unwrap();
        assert!(second.contains("consistent: size"), "{second}");
        let base = app.base.clone();
        let audit = tokio::task::spawn_blocking(move || run_ok(civitas().args(["ledger", "audit", &base, "--key"]).arg(&key))).await.unwrap();
        assert!(audit.contains("audit passed"), "{audit}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_bundle_verifies_offline_and_a_tampered_one_does_not() {
    let app = crate::support::TestApp::spawn(crate::support::Engine::Sqlite)
        .await
        .unwrap();
    let dir = scratch("bundle");
    let idx = app
        .ledger
        .append(&civitas_ledger::Event::new("test.bundle", "system", "x"))
        .await
        .unwrap();
    let bundle = app.ledger.proof_bundle(idx).await.unwrap().to_text();
    let file = dir.join("entry.tlog-proof");
    std::fs::write(&file, &bundle).unwrap();
    let key = dir.join("log.key");
    std::fs::write(&key, app.get("/ledger/key").await.text().await.unwrap()).unwrap();
    app.stop().await;

    let out = run_ok(
        civitas()
            .args(["ledger", "verify"])
            .arg(&file)
            .arg("--key")
            .arg(&key),
    );
    assert!(
        out.contains(&format!("verified: entry {idx} is in the log")),
        "{out}"
    );
    assert!(out.contains("event: test.bundle by system"), "{out}");

    // Change one character of the logged event: the proof no longer holds.
    let mut lines: Vec<String> = bundle.lines().map(str::to_string).collect();
    let extra = BASE64_STANDARD
        .decode(lines[1].strip_prefix("extra ").unwrap())
        .unwrap();
    let forged = String::from_utf8(extra)
        .unwrap()
        .replace("test.bundle", "test.bundlf");
    lines[1] = format!("extra {}", BASE64_STANDARD.encode(forged));
    let tampered = dir.join("tampered.tlog-proof");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = crate::cli::run(
        civitas()
            .args(["ledger", "verify"])
            .arg(&tampered)
            .arg("--key")
            .arg(&key),
    );
    assert!(!ok && err.contains("verification failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_finds_a_rewritten_entry_and_names_its_index() {
    let app = crate::support::TestApp::spawn(crate::support::Engine::Sqlite)
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..40 {
        last = app
            .ledger
            .append(&civitas_ledger::Event::new(
                "test.grow",
                "system",
                &format!("x/{i}"),
            ))
            .await
            .unwrap();
    }
    let cp = app.ledger.wait_for_checkpoint(last).await.unwrap();
    // Someone with database access rewrites entry 7 behind the log's back.
    let db = civitas_store::Db::connect(&app.config.database_url(), 1)
        .await
        .unwrap();
    civitas_store::sqlx::query("UPDATE ledger_entries SET data = $1 WHERE idx = 7")
        .bind(
            br#"{"v":1,"kind":"test.rewritten","actor":"system","object":"x","time_ms":1}"#
                .as_slice(),
        )
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let base = app.base.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        crate::cli::run(civitas().args(["ledger", "audit", &base]))
    })
    .await
    .unwrap();
    assert!(!ok, "the audit must fail: {out}");
    assert!(out.contains("from index 7"), "{out}");
    assert!(err.contains("mismatch"), "{err}");
    assert!(cp.size > 7);
    app.stop().await;
}

/// Starts `civitas serve` on a free port with extra environment; returns it and its URL.
fn serve(data: &std::path::Path, env: &[(&str, String)]) -> (Child, String) {
    let mut cmd = civitas();
    cmd.args(["serve", "--data"])
        .arg(data)
        .env("CIVITAS_LEDGER__CHECKPOINT_MS", "20")
        .env("CIVITAS_LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, url) = crate::cli::spawn_announced(&mut cmd);
    let started = Instant::now();
    while crate::cli::try_get(&url, "/readyz").is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, url)
}

fn body(url: &str, path: &str) -> String {
    let r = crate::cli::try_get(url, path).unwrap();
    r.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn stop(mut child: Child) -> String {
    sigterm(&child);
    wait_exit(&mut child);
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    logs
}

#[test]
fn two_witnesses_in_their_own_processes_cosign_the_log_and_catch_a_fork() {
    let dir = scratch("witness");
    let (log_dir, w1_dir, w2_dir) = (dir.join("log"), dir.join("w1"), dir.join("w2"));
    run_ok(
        civitas()
            .args(["seed", "--citizens", "200", "--data"])
            .arg(&log_dir),
    );
    let (log, log_url) = serve(&log_dir, &[]);
    let log_key = body(&log_url, "/ledger/key")
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    stop(log);

    let witness_env = |name: &str| {
        vec![
            ("CIVITAS_WITNESS__NAME", name.to_string()),
            ("CIVITAS_WITNESS__LOGS", log_key.clone()),
        ]
    };
    let (w1, w1_url) = serve(&w1_dir, &witness_env("w1.civitas.test"));
    let (w2, w2_url) = serve(&w2_dir, &witness_env("w2.civitas.test"));
    let k1 = body(&w1_url, "/ledger/witness/key").trim().to_string();
    let k2 = body(&w2_url, "/ledger/witness/key").trim().to_string();
    let policy = vec![
        (
            "CIVITAS_LEDGER__WITNESSES",
            format!("{w1_url}/ledger/witness {k1}, {w2_url}/ledger/witness {k2}"),
        ),
        ("CIVITAS_LEDGER__WITNESS_QUORUM", "2".to_string()),
    ];

    // The log restarts with a new configuration (an event), and both witnesses cosign.
    let (log, log_url) = serve(&log_dir, &policy);
    let trusted = [
        TrustedCosigner::parse(&k1).unwrap(),
        TrustedCosigner::parse(&k2).unwrap(),
    ];
    let started = Instant::now();
    let cosigned = loop {
        let note = body(&log_url, "/ledger/checkpoint");
        if verify_cosigned(&note, &log_key, &trusted, 2).is_ok() {
            break note;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never cosigned: {note}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let size = verify_checkpoint(&cosigned, &log_key).unwrap().size;
    stop(log);

    // A copy of the log's data grows one way and is witnessed...
    let fork_dir = dir.join("fork");
    std::fs::create_dir_all(&fork_dir).unwrap();
    for f in ["civitas.db", "civitas.db-wal", "civitas.db-shm"] {
        let _ = std::fs::copy(log_dir.join(f), fork_dir.join(f));
    }
    let grow = |data: &std::path::Path| {
        let mut c = civitas();
        c.args([
            "ledger",
            "load",
            "--appenders",
            "1",
            "--count",
            "3",
            "--data",
        ])
        .arg(data)
        .env("CIVITAS_LEDGER__CHECKPOINT_MS", "20");
        for (k, v) in &policy {
            c.env(k, v);
        }
        crate::cli::run(&mut c)
    };
    let (ok, out, err) = grow(&fork_dir);
    assert!(ok, "the first history is accepted: {out}{err}");
    // ...then the original log, with the same key, grows another way: the witnesses refuse it.
    let (ok, _out, err) = grow(&log_dir);
    assert!(!ok, "a forked history must not be published");
    assert!(
        err.contains("witness refused") || err.contains("not published"),
        "{err}"
    );
    let w1_logs = stop(w1);
    stop(w2);
    assert!(
        w1_logs.contains("forked") || w1_logs.contains("consistency proof does not verify"),
        "the witness reports the fork: {w1_logs}"
    );
    assert!(size > 0);
}

#[test]
fn kill_9_during_appends_loses_no_acknowledged_entry_and_keeps_the_tree_consistent() {
    let dir = scratch("crash");
    let mut child = civitas()
        .args([
            "ledger",
            "load",
            "--appenders",
            "8",
            "--count",
            "1000000",
            "--data",
        ])
        .arg(&dir)
        .env("CIVITAS_LEDGER__CHECKPOINT_MS", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut last_checkpoint: Option<(u64, String)> = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) || last_checkpoint.is_none() {
        let line = lines.next().expect("the load ended early").unwrap();
        if let Some(i) = line.strip_prefix("ack ") {
            acked.push(i.parse::<u64>().unwrap());
        } else if let Some(cp) = line.strip_prefix("checkpoint ") {
            let (size, root) = cp.split_once(' ').unwrap();
            last_checkpoint = Some((size.parse().unwrap(), root.to_string()));
        }
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    assert!(
        acked.len() > 100,
        "too few appends before the crash: {}",
        acked.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", dir.join("civitas.db").display());
        let db = civitas_store::Db::connect(&url, 2).await.unwrap();
        let ledger = civitas_ledger::Ledger::open(
            db,
            civitas_ledger::LedgerConfig::new("localhost:8080/ledger"),
        )
        .await
        .unwrap();
        for i in &acked {
            ledger
                .entry(*i)
                .await
                .unwrap_or_else(|_| panic!("acknowledged entry {i} was lost"));
        }
        let max = *acked.iter().max().unwrap();
        let now = ledger.wait_for_checkpoint(max).await.unwrap();
        let (old_size, old_root) = last_checkpoint.unwrap();
        let old_root = civitas_ledger::tree::Hash(
            BASE64_STANDARD
                .decode(old_root)
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let proof = ledger.consistency_proof(old_size, now.size).await.unwrap();
        civitas_ledger::tree::verify_consistency(&proof, now.size, now.root, old_size, old_root)
            .expect("the recovered tree extends the last checkpoint published before the crash");
    });
}
