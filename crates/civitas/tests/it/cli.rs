//! The `civitas` binary as an operator uses it: configuration, migrations, the demo, and
//! clean shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{postgres_database, scratch};

pub(crate) fn civitas() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_civitas"));
    // Keep the developer's own configuration out of the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("CIVITAS_") && !k.starts_with("CIVITAS_TEST_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null()).current_dir(std::env::temp_dir());
    c
}

pub(crate) fn run(c: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run civitas");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Runs a command that must succeed and returns what it printed.
pub(crate) fn run_ok(c: &mut Command) -> String {
    let (ok, out, err) = run(c);
    assert!(ok, "{c:?} failed: {err}");
    out
}

/// A plain HTTP/1.1 GET; `None` when nothing answers.
pub(crate) fn try_get(url: &str, path: &str) -> Option<String> {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A failure must be one plain sentence on stderr and a non-zero exit.
pub(crate) fn assert_one_sentence_failure(c: &mut Command, expect: &str) {
    let (ok, _out, err) = run(c);
    assert!(!ok, "expected failure for {c:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("civitas: "), "{err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
}

#[test]
fn config_check_prints_sources_and_masks_secrets() {
    let dir = scratch("cfg");
    let file = dir.join("civitas.toml");
    std::fs::write(&file, "[demo]\ncitizens = 2500\n").unwrap();
    let (ok, out, err) = run(civitas()
        .args([
            "config",
            "check",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "postgres://app:hunter2@127.0.0.1:5432/civitas",
            "--config",
        ])
        .arg(&file)
        .env("CIVITAS_LOG_FORMAT", "json"));
    assert!(ok, "{err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "password printed: {out}"
    );
    assert!(
        out.contains("postgres://app:****@127.0.0.1:5432/civitas"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("database") && l.contains("[flag --database]")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("log_format")
            && l.contains("json")
            && l.contains("[environment variable CIVITAS_LOG_FORMAT]")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("demo.citizens") && l.contains("2500") && l.contains("[file ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("shutdown_grace_secs") && l.contains("[default]")),
        "{out}"
    );
}

#[test]
fn configuration_mistakes_give_one_sentence_and_a_non_zero_exit() {
    let dir = scratch("cfgbad");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nlisten_port = 8080\n").unwrap();
    assert_one_sentence_failure(
        civitas().args(["config", "check", "--config"]).arg(&file),
        "unknown configuration key `listen_port`",
    );
    assert_one_sentence_failure(
        civitas()
            .args(["config", "check"])
            .env("CIVITAS_PORT", "80"),
        "unknown configuration key `port`",
    );
    assert_one_sentence_failure(
        civitas().args(["config", "check", "--database", "mysql://x/y"]),
        "scheme `mysql` is not supported",
    );
    assert_one_sentence_failure(
        civitas().args(["config", "check", "--listen", "localhost"]),
        "is not an address like",
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_one_sentence_failure(
        civitas().args(["config", "check", "--listen", &addr]),
        "already in use",
    );
    assert_one_sentence_failure(
        civitas()
            .args(["serve", "--listen", &addr, "--data"])
            .arg(dir.join("d")),
        "already in use",
    );

    // A data folder below a regular file can never be created, even by root.
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let data = blocker.join("data");
    assert_one_sentence_failure(
        civitas()
            .args(["config", "check", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data),
        "cannot be created",
    );
    assert_one_sentence_failure(
        civitas()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data),
        "cannot be created",
    );
}

fn migrate_twice(db_args: &[String]) {
    let (ok, out, err) = run(civitas().arg("migrate").args(db_args));
    assert!(ok, "{err}");
    assert!(out.contains("applied ledger v1"), "{out}");
    assert!(out.contains("applied registry v1"), "{out}");
    assert!(out.contains("applied identity v1"), "{out}");
    let (ok, out, err) = run(civitas().arg("migrate").args(db_args));
    assert!(ok, "{err}");
    assert!(out.contains("schema is up to date"), "{out}");
}

async fn make_schema_newer(url: &str) {
    let db = civitas_store::Db::connect(url, 1).await.unwrap();
    civitas_store::sqlx::query("INSERT INTO civitas_schema (component, version, name, applied_unix) VALUES ('registry', 999, 'from the future', 0)")
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
}

fn assert_refuses_newer_schema(db_args: &[String]) {
    assert_one_sentence_failure(
        civitas()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(db_args),
        "the database schema is newer than this civitas: component `registry` is at version 999",
    );
    assert_one_sentence_failure(
        civitas().arg("migrate").args(db_args),
        "is newer than this civitas",
    );
}

#[tokio::test]
async fn migrate_applies_once_and_serve_refuses_a_newer_schema_on_sqlite() {
    let dir = scratch("mig");
    let args = vec!["--data".to_string(), dir.display().to_string()];
    migrate_twice(&args);
    make_schema_newer(&format!("sqlite://{}", dir.join("civitas.db").display())).await;
    assert_refuses_newer_schema(&args);
}

#[tokio::test]
async fn migrate_applies_once_and_serve_refuses_a_newer_schema_on_postgres() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let dir = scratch("migpg");
    let args = vec![
        "--database".to_string(),
        url.clone(),
        "--data".to_string(),
        dir.display().to_string(),
    ];
    migrate_twice(&args);
    make_schema_newer(&url).await;
    assert_refuses_newer_schema(&args);
}

fn seed(data: &Path, extra: &[&str]) -> String {
    let (ok, out, err) = run(civitas()
        .args([
            "seed",
            "--citizens",
            "300",
            "--as-of",
            "2026-11-22",
            "--data",
        ])
        .arg(data)
        .args(extra));
    assert!(ok, "{err}");
    out
}

#[test]
fn a_second_start_reuses_the_demo_and_fresh_rebuilds_it() {
    let dir = scratch("seed");
    assert!(seed(&dir, &[]).contains("Built the demo country"));
    let again = seed(&dir, &["--seed", "7"]);
    assert!(
        again.contains("Using the demo country already in the database: 300 people, seed 20261122"),
        "{again}"
    );
    let fresh = seed(&dir, &["--fresh", "--seed", "7"]);
    assert!(
        fresh.contains("Built the demo country") && fresh.contains("seed 7"),
        "{fresh}"
    );
}

/// Starts `civitas demo` and waits for the line announcing its address.
// The child is returned to the caller, which waits on it; only a failing assertion (which
// ends the test) leaves it unwaited.
#[allow(clippy::zombie_processes)]
fn start_demo(data: &Path, extra: &[&str]) -> (Child, String) {
    let mut cmd = civitas();
    cmd.args(["demo", "--citizens", "300", "--data"])
        .arg(data)
        .args(extra);
    spawn_announced(&mut cmd)
}

/// Starts a server on port 0 (the system picks a free one, so tests never race each other
/// for a port) and returns it with the address it announces on standard output.
pub(crate) fn spawn_announced(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let announced = lines.by_ref().map_while(Result::ok).find_map(|line| {
        let url = line.split(" at ").nth(1)?.split_whitespace().next()?;
        Some(url.trim_end_matches('/').to_string())
    });
    let Some(url) = announced else {
        let _ = child.kill();
        let status = child.wait();
        panic!("civitas ended before announcing its address: {status:?}");
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        !url.ends_with(":0"),
        "the announced port is the real one: {url}"
    );
    // Keep reading what it prints, so that it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
}

pub(crate) fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

pub(crate) fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn raw_get(url: &str, path: &str) -> String {
    try_get(url, path).expect("the server answers")
}

#[test]
fn demo_prints_its_address_serves_json_logs_and_drains_on_sigterm() {
    let dir = scratch("demo");
    let (mut child, url) = start_demo(&dir, &["--log-format", "json"]);
    assert!(raw_get(&url, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(raw_get(&url, "/").contains("政府服務"));

    // A request whose headers are still arriving when SIGTERM comes must still be answered.
    let host = url.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&host).unwrap();
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: {host}\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    write!(slow, "Connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request dropped: {answer:?}"
    );

    let status = wait_exit(&mut child);
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let json: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !json.is_empty() && json.len() == logs.lines().count(),
        "every log line is JSON: {logs}"
    );
    assert!(
        json.iter().any(|l| l["span"]["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36)),
        "request logs carry the request id: {logs}"
    );
}

#[test]
fn a_second_process_on_the_same_data_folder_is_refused() {
    let dir = scratch("lock");
    let (mut child, _url) = start_demo(&dir, &[]);
    assert_one_sentence_failure(
        civitas().arg("migrate").arg("--data").arg(&dir),
        "is in use by another civitas process",
    );
    assert_one_sentence_failure(
        civitas()
            .args(["seed", "--fresh", "--citizens", "300", "--data"])
            .arg(&dir),
        "is in use by another civitas process",
    );
    assert!(
        dir.join("civitas.db").exists(),
        "--fresh must not delete a running server's database"
    );
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
    // Once the server has stopped, the folder is free again.
    let (ok, out, err) = run(civitas().arg("migrate").arg("--data").arg(&dir));
    assert!(ok, "{out}{err}");
}

// The child is waited for at the end; only a failing assertion leaves it unwaited.
#[allow(clippy::zombie_processes)]
#[tokio::test]
async fn the_server_runs_requests_on_as_many_threads_as_workers_says() {
    for workers in [1, 3] {
        let dir = scratch(&format!("workers-{workers}"));
        let mut cmd = civitas();
        cmd.args(["serve", "--data"])
            .arg(&dir)
            .env("CIVITAS_WORKERS", workers.to_string());
        let (mut child, url) = spawn_announced(&mut cmd);
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!("civitas_runtime_workers {workers}\n")),
            "{metrics}"
        );
        sigterm(&child);
        assert!(wait_exit(&mut child).success());
    }
}
