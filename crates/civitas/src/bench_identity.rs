//! `civitas bench identity`: password sign-ins per second through the real sign-in page,
//! against the floor set by argon2id itself with the same parameters, measured in the same
//! run on the same cores.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{machine, percentile};

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
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn identity(args: &IdentityArgs) -> Result<()> {
    let scratch = args.scratch.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("civitas-bench-identity-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(args, &scratch));
    drop(rt);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// argon2id verifications per second on every core, with the sign-in's parameters.
fn argon2_floor(secs: u64) -> Result<(f64, Vec<f64>)> {
    let hash = civitas_identity::password::hash("Tainan-lantern-47-oyster")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..cores)
        .map(|_| {
            let (hash, stop) = (hash.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    assert!(civitas_identity::password::verify(
                        "Tainan-lantern-47-oyster",
                        &hash
                    ));
                    lat.push(t.elapsed().as_secs_f64());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?,
        );
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((rate, all))
}

async fn run(args: &IdentityArgs, scratch: &std::path::Path) -> Result<()> {
    println!("civitas bench identity — {}", machine());
    let layers = civitas_core::config::Layers {
        file: None,
        env: Vec::new(),
        flags: vec![
            ("data_dir", scratch.display().to_string(), "--data"),
            ("listen", "127.0.0.1:0".into(), "--listen"),
            ("demo.citizens", "2000".into(), "--citizens"),
            ("log_level", "warn".into(), "--log-level"),
        ],
    };
    let resolved = layers.resolve()?;
    let config = resolved.config.clone();
    let (running, _) = crate::demo::prepare(&config, &resolved.entries, true, true).await?;
    let (db, ledger) = (running.db.clone(), running.ledger.clone());
    let listener = crate::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, running, config.clone(), async {
        let _ = stop_rx.await;
    }));

    println!("argon2id floor: {} s on every core …", args.secs);
    let (floor, floor_lat) = tokio::task::spawn_blocking({
        let secs = args.secs;
        move || argon2_floor(secs)
    })
    .await??;

    println!(
        "password sign-ins: {} clients for {} s …",
        args.clients, args.secs
    );
    let (signins, signin_lat) = sign_ins(&base, args.clients, args.secs).await?;

    println!(
        "token endpoint (refresh grant): {} clients for {} s …",
        args.token_clients, args.secs
    );
    let provider = civitas_identity::oidc::Provider::new(
        db.clone(),
        ledger.clone(),
        civitas_identity::oidc::Settings::new(&base),
    );
    let (tokens, token_lat) = refreshes(&provider, &base, args.token_clients, args.secs).await?;

    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| argon2id verify (m=19 MiB, t=2, p=1), every core | {floor:.1}/s | {:.1} ms | {:.1} ms | — | — | the floor |",
        percentile(&floor_lat, 0.5) * 1e3,
        percentile(&floor_lat, 0.99) * 1e3,
    );
    println!(
        "| password sign-ins through POST /signin ({} clients) | {signins:.1}/s | {:.1} ms | {:.1} ms | argon2id floor {floor:.1}/s | {:.3} | ≥ 0.90 |",
        args.clients,
        percentile(&signin_lat, 0.5) * 1e3,
        percentile(&signin_lat, 0.99) * 1e3,
        signins / floor
    );
    println!(
        "| token endpoint, refresh grant with rotation ({} clients) | {tokens:.0}/s | {:.1} ms | {:.1} ms | — | — | ≥ 5,000/s |",
        args.token_clients,
        percentile(&token_lat, 0.5) * 1e3,
        percentile(&token_lat, 0.99) * 1e3,
    );
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

/// Signs in over and over from `clients` clients, each as a different demo staff member.
async fn sign_ins(base: &str, clients: usize, secs: u64) -> Result<(f64, Vec<f64>)> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let agencies = [
        "hro", "nia", "txa", "dla", "moe", "nhia", "thb", "wda", "boca", "dsa",
    ];
    for i in 0..clients {
        let user = format!(
            "caseworker.{}@{}.gov.example",
            i / agencies.len() % 4 + 1,
            agencies[i % agencies.len()]
        );
        let base = base.to_string();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
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
            let mut lat = Vec::new();
            while Instant::now() < deadline {
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
                    .await?;
                if res.status() != 303 {
                    bail!("sign-in answered {}", res.status());
                }
                lat.push(t.elapsed().as_secs_f64());
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((rate, all))
}

/// Each client gets a grant through the provider (as if a person had consented), then
/// refreshes over HTTP as fast as it can; every answer carries the next refresh token.
async fn refreshes(
    provider: &civitas_identity::oidc::Provider,
    base: &str,
    clients: usize,
    secs: u64,
) -> Result<(f64, Vec<f64>)> {
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
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut refresh in refresh_tokens {
        let (http, base, basic, done) =
            (http.clone(), base.to_string(), basic.clone(), done.clone());
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
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((rate, all))
}
