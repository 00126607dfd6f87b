//! `civitas bench identity`: password sign-ins per second through the real sign-in page,
//! against the floor set by argon2id itself with the same parameters, measured in the same
//! run on the same cores; and refresh-token grants per second at the token endpoint.
//!
//! The floor and the sign-ins run in alternating rounds of about two seconds, so that a
//! change in the machine's speed during the run (this machine is a virtual one that shares
//! its host) weighs on both alike. Each round ends by letting the operations in flight
//! finish; every operation counts, and so does the time it took.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{lanes_cpu_secs, machine, percentile, process_cpu_secs};

/// Options of `civitas bench identity`.
#[derive(clap::Args, Debug)]
pub struct IdentityArgs {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent sign-in clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Concurrent clients of the token endpoint.
    #[arg(long, default_value_t = 64)]
    token_clients: usize,
    /// Run only one measurement: `floor`, `signin` or `tokens` (all three when absent;
    /// ratios need both `floor` and `signin`).
    #[arg(long, value_parser = ["floor", "signin", "tokens"])]
    only: Option<String>,
    /// Run on PostgreSQL instead of SQLite: a server URL where the benchmark may create (and
    /// afterwards drop) a scratch database.
    #[arg(long)]
    postgres: Option<String>,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn identity(args: &IdentityArgs) -> Result<()> {
    crate::bench::in_scratch(&args.scratch, "identity", |scratch| {
        crate::bench::block_on(run(args, scratch))
    })
}

/// What runs now; the workers of the other measurement wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Floor,
    SignIn,
    Stop,
}

/// The switch between rounds, shared by the floor's threads and the sign-in clients.
struct Gate {
    phase: tokio::sync::watch::Sender<Phase>,
    in_flight: AtomicUsize,
}

impl Gate {
    /// Waits (on a thread) until `phase` runs; false once the benchmark stops.
    fn wait_blocking(&self, phase: Phase) -> bool {
        loop {
            match *self.phase.borrow() {
                p if p == phase => return true,
                Phase::Stop => return false,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (in a task) until `phase` runs; false once the benchmark stops.
    async fn wait(&self, phase: Phase) -> bool {
        let mut rx = self.phase.subscribe();
        matches!(
            rx.wait_for(|p| *p == phase || *p == Phase::Stop).await.as_deref(),
            Ok(p) if *p == phase
        )
    }

    /// Counts an operation in flight if `phase` still runs; the caller must call `done`.
    fn start(&self, phase: Phase) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if *self.phase.borrow() == phase {
            return true;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        false
    }

    fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Seconds and CPU seconds a measurement ran for, over all its rounds.
#[derive(Default)]
struct Spent {
    secs: f64,
    cpu: f64,
    /// CPU seconds of the service's hashing lanes alone.
    lanes: f64,
}

/// One floor thread: argon2id verifications with the sign-in's parameters, while the floor
/// runs. Returns the latencies (s).
fn floor_worker(gate: &Gate, hash: &str) -> Vec<f64> {
    let mut lat = Vec::new();
    while gate.wait_blocking(Phase::Floor) {
        if !gate.start(Phase::Floor) {
            continue;
        }
        let t = Instant::now();
        let ok = civitas_identity::password::verify("Tainan-lantern-47-oyster", hash);
        lat.push(t.elapsed().as_secs_f64());
        gate.done();
        assert!(ok, "the floor's password did not verify");
    }
    lat
}

/// Runs the rounds: each wanted phase in turn for `round`, `rounds` times. Returns the time
/// and CPU each phase took, in the order of `phases`.
async fn alternate(gate: &Gate, phases: &[Phase], rounds: u64, round: Duration) -> Vec<Spent> {
    let mut spent: Vec<Spent> = phases.iter().map(|_| Spent::default()).collect();
    for _ in 0..rounds {
        for (i, phase) in phases.iter().enumerate() {
            let (started, cpu) = (Instant::now(), process_cpu_secs());
            let lanes = lanes_cpu_secs();
            gate.phase.send_replace(*phase);
            tokio::time::sleep(round).await;
            gate.phase.send_replace(Phase::Idle);
            while gate.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            spent[i].secs += started.elapsed().as_secs_f64();
            spent[i].cpu += process_cpu_secs() - cpu;
            spent[i].lanes += lanes_cpu_secs() - lanes;
        }
    }
    gate.phase.send_replace(Phase::Stop);
    spent
}

/// A measured figure: operations per second, sorted latencies (s), CPU seconds per operation.
struct Figure {
    rate: f64,
    lat: Vec<f64>,
    cpu_per_op: f64,
    lanes_per_op: f64,
}

impl Figure {
    fn new(mut lat: Vec<f64>, spent: &Spent) -> Figure {
        lat.sort_by(f64::total_cmp);
        let ops = lat.len().max(1) as f64;
        Figure {
            rate: lat.len() as f64 / spent.secs,
            cpu_per_op: spent.cpu / ops,
            lanes_per_op: spent.lanes / ops,
            lat,
        }
    }

    fn ms(&self, p: f64) -> f64 {
        percentile(&self.lat, p) * 1e3
    }
}

/// The floor and the sign-ins, in alternating rounds over `secs` seconds each.
async fn floor_and_sign_ins(
    args: &IdentityArgs,
    base: &str,
    floor: bool,
    signin: bool,
) -> Result<(Option<Figure>, Option<Figure>)> {
    let gate = Arc::new(Gate {
        phase: tokio::sync::watch::Sender::new(Phase::Idle),
        in_flight: AtomicUsize::new(0),
    });
    let hash = civitas_identity::password::hash("Tainan-lantern-47-oyster")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let floor_threads: Vec<_> = (0..if floor { cores } else { 0 })
        .map(|_| {
            let (gate, hash) = (gate.clone(), hash.clone());
            std::thread::spawn(move || floor_worker(&gate, &hash))
        })
        .collect();
    let clients = if signin {
        sign_in_clients(base, args.clients, &gate).await?
    } else {
        Vec::new()
    };
    let mut phases = Vec::new();
    if floor {
        phases.push(Phase::Floor);
    }
    if signin {
        phases.push(Phase::SignIn);
    }
    let rounds = (args.secs / 2).max(1);
    let round = Duration::from_secs_f64(args.secs as f64 / rounds as f64);
    println!(
        "{}: {rounds} alternating rounds of {:.1} s each …",
        phases
            .iter()
            .map(|p| match p {
                Phase::Floor => "argon2id floor on every core".to_string(),
                _ => format!("password sign-ins from {} clients", args.clients),
            })
            .collect::<Vec<_>>()
            .join(" / "),
        round.as_secs_f64()
    );
    let spent = alternate(&gate, &phases, rounds, round).await;
    let mut spent = spent.iter();
    let mut floor_lat = Vec::new();
    for t in floor_threads {
        floor_lat.extend(
            t.join()
                .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?,
        );
    }
    let mut signin_lat = Vec::new();
    for c in clients {
        signin_lat.extend(c.await??);
    }
    let floor = floor.then(|| Figure::new(floor_lat, spent.next().unwrap_or(&Spent::default())));
    let signin = signin.then(|| Figure::new(signin_lat, spent.next().unwrap_or(&Spent::default())));
    Ok((floor, signin))
}

async fn run(args: &IdentityArgs, scratch: &std::path::Path) -> Result<()> {
    let mut flags = vec![
        ("data_dir", scratch.display().to_string(), "--data"),
        ("listen", "127.0.0.1:0".into(), "--listen"),
        ("demo.citizens", "2000".into(), "--citizens"),
        ("log_level", "warn".into(), "--log-level"),
    ];
    if let Some(admin) = &args.postgres {
        flags.push((
            "database",
            crate::bench::pg_scratch(admin, "identity").await?,
            "--postgres",
        ));
    }
    let result = measure(args, flags).await;
    if let Some(admin) = &args.postgres {
        crate::bench::pg_drop_scratch(admin, "identity").await?;
    }
    result
}

async fn measure(
    args: &IdentityArgs,
    flags: Vec<(&'static str, String, &'static str)>,
) -> Result<()> {
    let layers = civitas_core::config::Layers {
        file: None,
        env: Vec::new(),
        flags,
    };
    let resolved = layers.resolve()?;
    let config = resolved.config.clone();
    let (running, _) = crate::demo::prepare(&config, &resolved.entries, true, true).await?;
    let (db, ledger) = (running.db.clone(), running.ledger.clone());
    println!(
        "civitas bench identity — {}, {}",
        machine(),
        match db.engine() {
            civitas_store::Engine::Sqlite => "SQLite".to_string(),
            civitas_store::Engine::Postgres => "PostgreSQL".to_string(),
        }
    );
    let listener = crate::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, running, config.clone(), async {
        let _ = stop_rx.await;
    }));

    let wants = |part: &str| args.only.as_deref().is_none_or(|o| o == part);
    let (floor, signins) = if wants("floor") || wants("signin") {
        floor_and_sign_ins(args, &base, wants("floor"), wants("signin")).await?
    } else {
        (None, None)
    };
    let mut tokens = None;
    if wants("tokens") {
        println!(
            "token endpoint (refresh grant): {} clients for {} s …",
            args.token_clients, args.secs
        );
        let provider = civitas_identity::oidc::Provider::new(
            db.clone(),
            ledger.clone(),
            civitas_identity::oidc::Settings::new(&base),
        );
        let (lat, spent) = refreshes(&provider, &base, args.token_clients, args.secs).await?;
        tokens = Some(Figure::new(lat, &spent));
    }

    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    if let Some(f) = &floor {
        println!(
            "| argon2id verify (m=19 MiB, t=2, p=1), every core | {:.1}/s | {:.1} ms | {:.1} ms | — | — | the floor |",
            f.rate,
            f.ms(0.5),
            f.ms(0.99),
        );
    }
    if let Some(s) = &signins {
        let (baseline, ratio) = match &floor {
            Some(f) => (
                format!("argon2id floor {:.1}/s", f.rate),
                format!("{:.3}", s.rate / f.rate),
            ),
            None => ("not measured (--only)".into(), "—".into()),
        };
        println!(
            "| password sign-ins through POST /signin ({} clients) | {:.1}/s | {:.1} ms | {:.1} ms | {baseline} | {ratio} | ≥ 0.90 |",
            args.clients,
            s.rate,
            s.ms(0.5),
            s.ms(0.99),
        );
    }
    if let Some(t) = &tokens {
        println!(
            "| token endpoint, refresh grant with rotation ({} clients) | {:.0}/s | {:.1} ms | {:.1} ms | — | — | ≥ 5,000/s |",
            args.token_clients,
            t.rate,
            t.ms(0.5),
            t.ms(0.99),
        );
    }
    println!();
    for (what, figure) in [
        ("argon2id verify at the floor", &floor),
        ("sign-in, clients included", &signins),
        ("refresh, clients included", &tokens),
    ] {
        if let Some(f) = figure {
            println!("CPU time per {what}: {:.3} ms", f.cpu_per_op * 1e3);
        }
    }
    // Where a sign-in's CPU goes: argon2id on the hashing lanes, and everything else (HTTP
    // on both ends, the database, the ledger).
    if let Some(s) = &signins {
        println!(
            "CPU time per sign-in on the hashing lanes: {:.3} ms; elsewhere: {:.3} ms",
            s.lanes_per_op * 1e3,
            (s.cpu_per_op - s.lanes_per_op) * 1e3
        );
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

type Client = tokio::task::JoinHandle<Result<Vec<f64>>>;

/// Starts `clients` sign-in clients, each a different demo staff member with its own
/// anti-forgery cookie, that sign in over and over while the sign-in phase runs. Each returns
/// its latencies (s).
async fn sign_in_clients(base: &str, clients: usize, gate: &Arc<Gate>) -> Result<Vec<Client>> {
    let agencies = [
        "hro", "nia", "txa", "dla", "moe", "nhia", "thb", "wda", "boca", "dsa",
    ];
    let mut tasks = Vec::new();
    for i in 0..clients {
        let user = format!(
            "caseworker.{}@{}.gov.example",
            i / agencies.len() % 4 + 1,
            agencies[i % agencies.len()]
        );
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        // One visit to the form gives the anti-forgery cookie and its token.
        let res = client.get(format!("{base}/signin")).send().await?;
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("civitas_csrf="))
            .and_then(|c| c.split(';').next())
            .context("no anti-forgery cookie")?
            .to_string();
        let html = res.text().await?;
        let token = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .context("no anti-forgery token")?
            .to_string();
        let (base, gate) = (base.to_string(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while gate.wait(Phase::SignIn).await {
                if !gate.start(Phase::SignIn) {
                    continue;
                }
                let t = Instant::now();
                let res = client
                    .post(format!("{base}/signin"))
                    .header("cookie", &cookie)
                    .form(&[
                        ("csrf", token.as_str()),
                        ("identifier", user.as_str()),
                        ("password", civitas_identity::DEMO_PASSWORD),
                        ("next", "/account"),
                    ])
                    .send()
                    .await;
                gate.done();
                let status = res?.status();
                if status != 303 {
                    bail!("sign-in answered {status}");
                }
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    Ok(tasks)
}

/// Each client gets a grant through the provider (as if a person had consented), then
/// refreshes over HTTP as fast as it can; every answer carries the next refresh token.
async fn refreshes(
    provider: &civitas_identity::oidc::Provider,
    base: &str,
    clients: usize,
    secs: u64,
) -> Result<(Vec<f64>, Spent)> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut new = civitas_identity::oidc::NewClient::new(
        "Benchmark relying party",
        vec!["https://rp.bench.example/callback".into()],
    );
    new.id_token_alg = civitas_identity::oidc::SigningAlg::Es256;
    new.first_party = true;
    let registered = provider.register_client(new, "bench").await?;
    let client_id = registered.client.client_id.clone();
    let secret = registered.secret.context("a basic client has a secret")?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let http = reqwest::Client::new();
    let mut refresh_tokens = Vec::new();
    for i in 0..clients {
        let verifier = format!("bench-verifier-{i}-0123456789abcdefghijklmnopqrstuvwxyz");
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let params = civitas_identity::oidc::AuthorizationParams {
            response_type: Some("code".into()),
            client_id: Some(client_id.clone()),
            redirect_uri: Some("https://rp.bench.example/callback".into()),
            scope: Some("openid profile offline_access".into()),
            code_challenge: Some(challenge),
            code_challenge_method: Some("S256".into()),
            ..Default::default()
        };
        let req = provider
            .authorization_request(&params)
            .await
            .map_err(|e| anyhow::anyhow!("authorisation request refused: {e:?}"))?;
        let auth = civitas_identity::oidc::Authentication {
            account_id: "staff-hro-caseworker-1".into(),
            subject_ref: "account:staff-hro-caseworker-1".into(),
            session_id: format!("bench-session-{i}"),
            loa: civitas_identity::Loa::Low,
            amr: vec!["pwd".into()],
            auth_time: civitas_ledger::event::now_ms() / 1000,
        };
        let code = provider.issue_code(&req, &auth).await?;
        let res: serde_json::Value = http
            .post(format!("{base}/oidc/token"))
            .header("authorization", format!("Basic {basic}"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", "https://rp.bench.example/callback"),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?
            .json()
            .await?;
        refresh_tokens.push(
            res["refresh_token"]
                .as_str()
                .with_context(|| format!("no refresh token: {res}"))?
                .to_string(),
        );
    }
    let (started, cpu) = (Instant::now(), process_cpu_secs());
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for mut refresh in refresh_tokens {
        let (http, base, basic) = (http.clone(), base.to_string(), basic.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = http
                    .post(format!("{base}/oidc/token"))
                    .header("authorization", format!("Basic {basic}"))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                    ])
                    .send()
                    .await?;
                if res.status() != 200 {
                    bail!(
                        "the token endpoint answered {}: {}",
                        res.status(),
                        res.text().await?
                    );
                }
                let body: serde_json::Value = res.json().await?;
                refresh = body["refresh_token"]
                    .as_str()
                    .context("no refresh token in the answer")?
                    .to_string();
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let spent = Spent {
        secs: started.elapsed().as_secs_f64(),
        cpu: process_cpu_secs() - cpu,
        lanes: 0.0,
    };
    Ok((all, spent))
}
