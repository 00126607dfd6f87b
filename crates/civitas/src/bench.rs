//! `civitas bench startup`: how fast a seeded Civitas becomes ready, how little memory it
//! holds when idle, and how long a large demo country takes to build.
//!
//! Each figure is measured by running this same binary as a child process, the way an
//! operator would run it, and printed beside its target and the baseline the issue names.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Options of `civitas bench startup`.
#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// People in the demo country the server starts on.
    #[arg(long, default_value_t = 10_000)]
    citizens: u64,
    /// People in the large demo country whose seeding is timed (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    large: u64,
    /// How many cold starts to time.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn startup(args: &StartupArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the civitas executable")?;
    in_scratch(&args.scratch, "startup", |scratch| run(&exe, scratch, args))
}

/// Runs `f` in an empty scratch folder (`given`, or a new one under the system temp dir
/// named for the benchmark), removed afterwards however `f` ends.
pub(crate) fn in_scratch<T>(
    given: &Option<PathBuf>,
    bench: &str,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let scratch = given.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("civitas-bench-{bench}-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = f(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Runs a benchmark's async part on a multi-threaded runtime of its own.
pub(crate) fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Linux's scheduling policy for a benchmark's threads or child processes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// `SCHED_OTHER`, every thread's default.
    Normal,
    /// `SCHED_BATCH`: a thread the system wakes does not take the core from the thread
    /// running there; it waits its turn, or an idle core takes it.
    Batch,
}

impl Policy {
    /// Asks for this policy for the calling thread (and what it starts later). Needs no
    /// privilege; elsewhere than Linux nothing is asked.
    pub(crate) fn apply_here(self) -> std::io::Result<()> {
        self.apply_to(0)
    }

    /// Asks for this policy for every thread of this process, such as a runtime's workers.
    pub(crate) fn apply_to_process(self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        for entry in std::fs::read_dir("/proc/self/task")? {
            let Ok(tid) = entry?.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            match self.apply_to(tid) {
                // A thread that ended meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Asks for this policy for thread `tid` of this process (0: the calling one).
    fn apply_to(self, tid: i32) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let policy = match self {
                Policy::Normal => libc::SCHED_OTHER,
                Policy::Batch => libc::SCHED_BATCH,
            };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain system call with a parameter that lives across it; it is also
            // safe between fork and exec.
            if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = tid;
        Ok(())
    }

    /// How the benchmark's header names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::Normal => "SCHED_OTHER",
            Policy::Batch => "SCHED_BATCH",
        }
    }
}

fn run(exe: &Path, scratch: &Path, args: &StartupArgs) -> Result<()> {
    println!("civitas bench startup — {}", machine());
    let small = scratch.join("small");
    let seeded = seed(exe, &small, args.citizens)?;
    println!(
        "seeded {} people in {:.2} s (setup, not a figure)",
        args.citizens,
        seeded.as_secs_f64()
    );

    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..args.runs.max(1) {
        let (t, kib) = start_and_measure(exe, &small)?;
        ready.push(t);
        rss.push(kib);
    }
    ready.sort();
    rss.sort_unstable();
    let ready_median = ready[ready.len() / 2].as_secs_f64();
    let ready_max = ready[ready.len() - 1].as_secs_f64();
    let rss_mib = rss[rss.len() / 2] as f64 / 1024.0;
    println!();
    println!("| figure | value | target | ratio to target | baseline | ratio to baseline |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| start to /readyz 200, {} people (median of {}, max {:.3} s) | {:.3} s | < 1 s | {:.2} | — | — |",
        args.citizens,
        ready.len(),
        ready_max,
        ready_median,
        ready_median / 1.0
    );
    println!(
        "| idle resident memory after start (median) | {:.1} MiB | < 60 MB | {:.2} | X-Road security server minimum 3 GB | {:.4} |",
        rss_mib,
        rss_mib * 1.048_576 / 60.0,
        rss_mib / 3072.0
    );
    if args.large > 0 {
        let large = scratch.join("large");
        let t = seed(exe, &large, args.large)?;
        let bytes = folder_size(&large)?;
        println!(
            "| seed {} people (`civitas seed --citizens {}`) | {:.1} s, database {:.0} MiB | < 120 s | {:.2} | — | — |",
            args.large,
            args.large,
            t.as_secs_f64(),
            bytes as f64 / 1_048_576.0,
            t.as_secs_f64() / 120.0
        );
    }
    Ok(())
}

fn seed(exe: &Path, data: &Path, people: u64) -> Result<Duration> {
    let started = Instant::now();
    let out = Command::new(exe)
        .args([
            "seed",
            "--fresh",
            "--citizens",
            &people.to_string(),
            "--data",
        ])
        .arg(data)
        .env("CIVITAS_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .output()
        .context("cannot run civitas seed")?;
    if !out.status.success() {
        bail!(
            "civitas seed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}

/// Starts `civitas serve` on a free port, returns the time until `/readyz` answers 200 and
/// the resident memory (KiB) after two idle seconds, then stops it with SIGTERM.
fn start_and_measure(exe: &Path, data: &Path) -> Result<(Duration, u64)> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", &addr.to_string()])
        .env("CIVITAS_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start civitas serve")?;
    let ready = loop {
        if started.elapsed() > Duration::from_secs(30) {
            stop(&mut child);
            bail!("civitas serve did not become ready within 30 s");
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("civitas serve exited early with {status}");
        }
        if get_status(addr, "/readyz") == Some(200) {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss = resident_kib(child.id()).unwrap_or(0);
    stop(&mut child);
    Ok((ready, rss))
}

fn stop(child: &mut Child) {
    // SIGTERM lets the server drain and exit; fall back to kill if it does not.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..500 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A minimal HTTP/1.1 GET that returns the status code, so the measurement does not
/// depend on a client library's start-up.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub(crate) fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What another process has used so far: CPU seconds (user and system) and bytes it sent
/// to storage (`write_bytes` of `/proc/…/io`); zeros where that is not readable.
pub(crate) fn process_usage(pid: u32) -> Usage {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    Usage {
        cpu_secs: cpu_secs_of_stat(
            &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        ),
        written: io
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// A process's CPU time and storage writes so far ([`process_usage`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub cpu_secs: f64,
    pub written: u64,
}

impl Usage {
    /// What was used between `before` and this, per each of `calls`: microseconds of CPU
    /// and KiB written.
    pub(crate) fn per_call_since(&self, before: &Usage, calls: usize) -> (f64, f64) {
        let calls = calls.max(1) as f64;
        (
            (self.cpu_secs - before.cpu_secs) * 1e6 / calls,
            self.written.saturating_sub(before.written) as f64 / 1024.0 / calls,
        )
    }
}

fn folder_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// CPU time this process has used so far (user and system, every thread), in seconds.
/// Linux only (from `/proc/self/stat`, in the kernel's 100 Hz clock ticks); 0 elsewhere.
pub(crate) fn process_cpu_secs() -> f64 {
    cpu_secs_of_stat(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds used so far by this process's threads named `argon2-lane-…` (the password
/// hashing lanes), from `/proc/self/task`; 0 where that is not readable.
pub(crate) fn lanes_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| stat.contains("(argon2-lane-"))
        .map(|stat| cpu_secs_of_stat(&stat))
        .sum()
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn cpu_secs_of_stat(stat: &str) -> f64 {
    let field = |n| {
        stat_field(stat, n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(14) + field(15)) / 100.0
}

/// Field `n` of a `/proc/…/stat` line, counted from 1 as `man proc` does.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(n.checked_sub(3)?)
}

/// A one-line description of the machine for the record.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} memory, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// Options of `civitas bench ledger`.
#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// Seconds each throughput run lasts.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Entries in the log on which inclusion proofs are timed.
    #[arg(long, default_value_t = 10_000_000)]
    proof_log_size: u64,
    /// A PostgreSQL server URL where the benchmark may create and drop a scratch database
    /// (default: $CIVITAS_BENCH_POSTGRES; PostgreSQL runs are skipped without one).
    #[arg(long)]
    postgres: Option<String>,
    /// Scratch folder. Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Time only the inclusion proofs.
    #[arg(long)]
    proofs_only: bool,
}

/// Runs `civitas bench ledger` and prints its figures.
pub fn ledger(args: &LedgerArgs) -> Result<()> {
    in_scratch(&args.scratch, "ledger", |scratch| {
        block_on(ledger_async(args, scratch))
    })
}

async fn scratch_db(
    engine: &str,
    scratch: &Path,
    pg_admin: Option<&str>,
    name: &str,
) -> Result<civitas_store::Db> {
    let url = match engine {
        "sqlite" => {
            let dir = scratch.join(name);
            std::fs::create_dir_all(&dir)?;
            format!("sqlite://{}?mode=rwc", dir.join("bench.db").display())
        }
        _ => pg_scratch(pg_admin.context("no PostgreSQL URL")?, name).await?,
    };
    let db = civitas_store::Db::connect(&url, 16).await?;
    civitas_store::migrate(&db, crate::COMPONENTS).await?;
    Ok(db)
}

/// Creates an empty database `civitas_bench_<pid>_<name>` on the PostgreSQL server that
/// `admin` reaches (dropping one left by an earlier run of the same name), and returns its URL.
pub(crate) async fn pg_scratch(admin: &str, name: &str) -> Result<String> {
    let db = civitas_store::Db::connect(admin, 1).await?;
    let dbname = format!("civitas_bench_{}_{name}", std::process::id());
    civitas_store::sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {dbname}"))
        .execute(db.pool())
        .await?;
    civitas_store::sqlx::raw_sql(&format!("CREATE DATABASE {dbname}"))
        .execute(db.pool())
        .await?;
    db.close().await;
    let (base, _) = admin.rsplit_once('/').context("bad PostgreSQL URL")?;
    Ok(format!("{base}/{dbname}"))
}

/// Drops a database made by [`pg_scratch`].
pub(crate) async fn pg_drop_scratch(admin: &str, name: &str) -> Result<()> {
    let db = civitas_store::Db::connect(admin, 1).await?;
    let dbname = format!("civitas_bench_{}_{name}", std::process::id());
    civitas_store::sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
        .execute(db.pool())
        .await?;
    db.close().await;
    Ok(())
}

/// The ledger configuration used in production, with its hash file in the scratch folder.
fn bench_config(scratch: &Path, name: &str) -> civitas_ledger::LedgerConfig {
    let mut c = civitas_ledger::LedgerConfig::new("bench.civitas/ledger");
    let dir = scratch.join(format!("hashes-{name}"));
    let _ = std::fs::create_dir_all(&dir);
    c.hash_file = Some(dir.join("hashes.bin"));
    c
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Appends from `appenders` tasks for `secs`; returns appends/s and the sorted latencies (s)
/// from append to a published checkpoint, sampled on every 8th append.
async fn run_appends(
    ledger: &civitas_ledger::Ledger,
    appenders: usize,
    secs: u64,
) -> Result<(f64, Vec<f64>)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut waits = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let e =
                    civitas_ledger::Event::new("bench.append", "system", &format!("bench/{a}/{n}"));
                let idx = l.append(&e).await?;
                if n.is_multiple_of(8) {
                    let l2 = l.clone();
                    waits.push(tokio::spawn(async move {
                        l2.wait_for_checkpoint(idx)
                            .await
                            .map(|_| t0.elapsed().as_secs_f64())
                    }));
                }
                n += 1;
            }
            let mut lat = Vec::new();
            for w in waits {
                lat.push(w.await??);
            }
            anyhow::Ok((n, lat))
        }));
    }
    let mut total = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, lat) = t.await??;
        total += n;
        latencies.extend(lat);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((total as f64 / elapsed, latencies))
}

/// The design without batching: each append is its own synced single-row transaction.
async fn run_baseline(db: &civitas_store::Db, appenders: usize, secs: u64) -> Result<f64> {
    civitas_store::sqlx::raw_sql(
        &db.dialect("CREATE TABLE bench_baseline (idx BIGINT PRIMARY KEY, data BLOB NOT NULL)"),
    )
    .execute(db.pool())
    .await?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (db, next) = (db.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let data = vec![7u8; 120];
            while Instant::now() < deadline {
                let idx = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                civitas_store::sqlx::query(
                    "INSERT INTO bench_baseline (idx, data) VALUES ($1, $2)",
                )
                .bind(idx)
                .bind(data.as_slice())
                .execute(db.pool())
                .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn ledger_async(args: &LedgerArgs, scratch: &Path) -> Result<()> {
    println!("civitas bench ledger — {}", machine());
    let pg = args
        .postgres
        .clone()
        .or_else(|| std::env::var("CIVITAS_BENCH_POSTGRES").ok());
    let mut engines = vec!["sqlite"];
    if pg.is_some() {
        engines.push("postgres");
    } else {
        println!("(PostgreSQL skipped: pass --postgres URL or set CIVITAS_BENCH_POSTGRES)");
    }
    if !args.proofs_only {
        println!();
        println!(
            "| engine | appenders | durable appends/s | baseline: one synced row per append, /s | ratio | append→checkpoint p50 | p99 |"
        );
        println!("|---|---|---|---|---|---|---|");
    }
    for engine in engines.iter().filter(|_| !args.proofs_only) {
        for appenders in [1usize, 8, 64] {
            let db = scratch_db(engine, scratch, pg.as_deref(), &format!("a{appenders}")).await?;
            let ledger = civitas_ledger::Ledger::open(
                db.clone(),
                bench_config(scratch, &format!("{engine}-{appenders}")),
            )
            .await?;
            let (rate, lat) = run_appends(&ledger, appenders, args.seconds).await?;
            drop(ledger);
            let base_db =
                scratch_db(engine, scratch, pg.as_deref(), &format!("b{appenders}")).await?;
            let baseline = run_baseline(&base_db, appenders, args.seconds).await?;
            println!(
                "| {engine} | {appenders} | {rate:.0} | {baseline:.0} | {:.1}× | {:.0} ms | {:.0} ms |",
                rate / baseline,
                percentile(&lat, 0.5) * 1000.0,
                percentile(&lat, 0.99) * 1000.0
            );
            db.close().await;
            base_db.close().await;
        }
    }
    if args.proof_log_size > 0 {
        let db = scratch_db("sqlite", scratch, None, "proofs").await?;
        let t = Instant::now();
        civitas_ledger::bulk_load_for_benchmark(&db, args.proof_log_size).await?;
        println!();
        println!(
            "built a {}-entry log in {:.0} s (setup)",
            args.proof_log_size,
            t.elapsed().as_secs_f64()
        );
        let ledger = civitas_ledger::Ledger::open(db, bench_config(scratch, "proofs")).await?;
        let size = ledger
            .wait_for_checkpoint(args.proof_log_size - 1)
            .await?
            .size;
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let l = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w + 1);
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    l.inclusion_proof(x % size, size).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!(
            "| inclusion proofs on a {size}-entry log (SQLite, 8 tasks) | {rate:.0}/s | target 50,000/s | ratio {:.2} |",
            rate / 50_000.0
        );
    }
    Ok(())
}

/// Two kinds of request, `a` and `b` (each given the caller's running count), sent by
/// `clients` tasks in alternating rounds of about two seconds for about `secs` seconds of
/// each, so that a change in the machine's speed weighs on both alike. Each round ends by
/// letting the requests in flight finish; `after_b` runs at the end of each `b` round,
/// under load. Returns each kind's sorted latencies (s) and the seconds spent on it.
pub(crate) async fn alternate<A, B>(
    clients: usize,
    secs: u64,
    a: A,
    b: B,
    mut after_b: impl FnMut(),
) -> Result<((Vec<f64>, f64), (Vec<f64>, f64))>
where
    A: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
    B: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const IDLE: u64 = 0;
    const A: u64 = 1;
    const B: u64 = 2;
    const STOP: u64 = 3;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let phase = Arc::new(AtomicU64::new(IDLE));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (phase, in_flight, a, b) = (phase.clone(), in_flight.clone(), a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let (mut la, mut lb) = (Vec::new(), Vec::new());
            let mut n = i;
            loop {
                let p = phase.load(Ordering::SeqCst);
                if p == STOP {
                    break;
                }
                if p == IDLE {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                if phase.load(Ordering::SeqCst) != p {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                n += 1;
                let t = Instant::now();
                let res = if p == A { a(n) } else { b(n) }.send().await;
                let ok = match res {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if !ok {
                    return Err(anyhow::anyhow!("a request failed"));
                }
                if p == A { &mut la } else { &mut lb }.push(t.elapsed().as_secs_f64());
            }
            Ok((la, lb))
        }));
    }
    let rounds = (secs / 2).max(1);
    let round = Duration::from_secs_f64(secs as f64 / rounds as f64);
    println!(
        "{clients} clients, in {rounds} alternating rounds of {:.1} s each …",
        round.as_secs_f64()
    );
    let mut spent = [0.0f64; 2];
    for _ in 0..rounds {
        for (i, p) in [A, B].into_iter().enumerate() {
            let started = Instant::now();
            phase.store(p, Ordering::SeqCst);
            tokio::time::sleep(round).await;
            if p == B {
                after_b();
            }
            phase.store(IDLE, Ordering::SeqCst);
            while in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            spent[i] += started.elapsed().as_secs_f64();
        }
    }
    phase.store(STOP, Ordering::SeqCst);
    let (mut la, mut lb) = (Vec::new(), Vec::new());
    for t in tasks {
        let (x, y) = t.await??;
        la.extend(x);
        lb.extend(y);
    }
    la.sort_by(f64::total_cmp);
    lb.sort_by(f64::total_cmp);
    Ok(((la, spent[0]), (lb, spent[1])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_usage_is_read_and_divided_per_call() {
        let pid = std::process::id();
        let before = process_usage(pid);
        // Some CPU time and a written, synced file: both show.
        let dir = civitas_store::scratch::folder("bench-usage");
        let mut spin = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(300) {
            spin = spin.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(spin);
        let file = dir.join("f");
        std::fs::write(&file, vec![1u8; 1 << 20]).unwrap();
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        let after = process_usage(pid);
        assert!(
            after.cpu_secs > before.cpu_secs,
            "{before:?} then {after:?}"
        );
        let (cpu_us, kib) = after.per_call_since(&before, 10);
        assert!(cpu_us >= 1e4, "{cpu_us} µs a call");
        assert!(kib >= 100.0, "{kib} KiB a call");
        let same = Usage {
            cpu_secs: 2.0,
            written: 4096,
        };
        assert_eq!(same.per_call_since(&Usage::default(), 4), (500_000.0, 1.0));
    }

    /// The scheduling policy in a `/proc/…/stat` (its 41st field): 0 normal, 3 batch.
    fn policy_in_stat(text: &str) -> String {
        super::stat_field(text, 41).unwrap().to_string()
    }

    /// A thread asks for SCHED_BATCH and back without privilege; a process it starts
    /// meanwhile inherits it, which is why every node is started with a policy of its own.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_and_what_it_starts_take_the_policy_asked_for() {
        std::thread::spawn(|| {
            let policy = || unsafe { libc::sched_getscheduler(0) };
            Policy::Batch.apply_here().unwrap();
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::process::Command::new("cat")
                .arg("/proc/self/stat")
                .output()
                .unwrap();
            assert_eq!(policy_in_stat(&String::from_utf8_lossy(&child.stdout)), "3");
            Policy::Normal.apply_here().unwrap();
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    /// Every thread of the process takes it, a runtime's idle workers included.
    #[cfg(target_os = "linux")]
    #[test]
    fn every_thread_of_the_process_takes_the_policy_asked_for() {
        let (tell, told) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tell.send(unsafe { libc::gettid() }).unwrap();
            let _ = stopped.recv();
        });
        let tid = told.recv().unwrap();
        let policy_of = |tid: i32| {
            policy_in_stat(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap())
        };
        Policy::Batch.apply_to_process().unwrap();
        let batch = policy_of(tid);
        Policy::Normal.apply_to_process().unwrap();
        assert_eq!(batch, "3");
        assert_eq!(policy_of(tid), "0");
        stop.send(()).unwrap();
        other.join().unwrap();
    }
}
