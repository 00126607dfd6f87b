//! `civitas bench consent`: consent decisions per second and their latency with a million
//! consent records, and full MyData releases per second against the same registry read
//! with no consent check and no log, measured in the same run.
//!
//! - Decisions: `Consents::check` (is this consent valid for this organisation now?) from
//!   many tasks at once, on random records among those loaded.
//! - Releases: `GET /api/v1/mydata/release` on the running server, with access tokens
//!   granted for a data agreement to the demo's featured people: the consent check, the
//!   registry read through the exchange (checked, and logged in one ledger entry that also
//!   names the release) and the JWS signature. The baseline is the same population-register
//!   read, served over HTTP by this benchmark straight from the registry, with nothing
//!   checked or logged.
//!   The two alternate in rounds of about two seconds, so a change in the machine's speed
//!   weighs on both.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::bench::{machine, percentile};

/// Options of `civitas bench consent`.
#[derive(clap::Args, Debug)]
pub struct ConsentArgs {
    /// Seconds of each measurement (decisions; releases and their baseline each).
    #[arg(long, default_value_t = 6)]
    secs: u64,
    /// Consent records loaded before the decisions.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn consent(args: &ConsentArgs) -> Result<()> {
    crate::bench::in_scratch(&args.scratch, "consent", |scratch| {
        crate::bench::block_on(run(args, scratch))
    })
}

const REDIRECT: &str = "https://bank.bench.example/callback";

async fn run(args: &ConsentArgs, scratch: &std::path::Path) -> Result<()> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
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
    println!("civitas bench consent — {}, SQLite", machine());
    let listener = crate::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, running, config.clone(), async {
        let _ = stop_rx.await;
    }));
    let consents = civitas_consent::Consents::open(db.clone(), ledger.clone(), &base).await?;
    let provider = civitas_identity::oidc::Provider::new(
        db.clone(),
        ledger.clone(),
        civitas_identity::oidc::Settings::new(&base),
    );

    // The organisation, its client and its approved agreement.
    let mut new = civitas_identity::oidc::NewClient::new("Benchmark bank", vec![REDIRECT.into()]);
    new.id_token_alg = civitas_identity::oidc::SigningAlg::Es256;
    let registered = provider.register_client(new, "bench").await?;
    let client_id = registered.client.client_id.clone();
    let secret = registered.secret.context("a basic client has a secret")?;
    let wanted = civitas_consent::NewAgreement {
        purpose: "loan-application".into(),
        legal_basis: "consent".into(),
        items: vec!["population.name".into(), "population.birth_date".into()],
        retention_days: 30,
        access: civitas_consent::Access::Periodic,
        duration_days: Some(90),
    };
    let agreement = consents
        .propose(&client_id, "Benchmark bank", &wanted)
        .await?;
    consents
        .decide_agreement(&agreement.id, true, None, "bench")
        .await?;

    let loaded = Instant::now();
    let ids = consents
        .bulk_load_for_benchmark(&agreement.id, args.records)
        .await?;
    println!(
        "loaded {} consent records in {:.1} s (setup, not a figure)",
        ids.len(),
        loaded.elapsed().as_secs_f64()
    );
    // What a server does in the background as it starts (the records were loaded behind the
    // block's back, so it has not seen them).
    let rss_before = crate::bench::resident_kib(std::process::id()).unwrap_or(0);
    let warming = Instant::now();
    let warmed = consents.warm().await?;
    let rss_after = crate::bench::resident_kib(std::process::id()).unwrap_or(0);
    println!(
        "read {warmed} records' decision state into memory in {:.1} s, as a server does when it starts: {:.0} MiB of tables (resident memory {:.0} → {:.0} MiB, with the pages SQLite mapped to read them) (setup)",
        warming.elapsed().as_secs_f64(),
        civitas_consent::Consents::decision_memory_bytes() as f64 / (1 << 20) as f64,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    let consents_ids = Arc::new(ids);
    let (decided, decision_secs, valid) =
        decisions(&consents, consents_ids.clone(), &client_id, args).await?;

    let over_http = validity_over_http(
        args,
        &base,
        &ids_sample(&consents_ids),
        (&client_id, &secret),
    )
    .await?;

    // Access tokens for the featured people, each granted for the agreement.
    let tokens = tokens(
        &consents,
        &provider,
        &agreement.id,
        (&client_id, &secret),
        &base,
        &db,
    )
    .await?;
    let baseline = baseline_server(db.clone()).await?;
    let (direct, releases) = releases(args, &base, &baseline, &tokens).await?;

    let _ = stop_tx.send(());
    let _ = server.await;

    let rate = |lat: &[f64], secs: f64| lat.len() as f64 / secs;
    let ms = |lat: &[f64], p: f64| percentile(lat, p) * 1e3;
    let decision_rate = rate(&decided, decision_secs);
    let (direct_lat, direct_secs) = direct;
    let (release_lat, release_secs) = releases;
    let (direct_rate, release_rate) = (
        rate(&direct_lat, direct_secs),
        rate(&release_lat, release_secs),
    );
    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| consent decisions, {} records, {} callers ({:.0}% valid) | {decision_rate:.0}/s | {:.3} ms | {:.3} ms | — | — | ≥ 100,000/s, p99 ≤ 1 ms |",
        args.records,
        args.clients,
        valid * 100.0,
        ms(&decided, 0.5),
        ms(&decided, 0.99),
    );
    let (http_lat, http_secs) = over_http;
    println!(
        "| the same decision asked over HTTP by the organisation (`GET /api/v1/consent/records/{{id}}/validity`, HTTP Basic client authentication), {} clients | {:.0}/s | {:.2} ms | {:.2} ms | — | — | — |",
        args.clients,
        rate(&http_lat, http_secs),
        ms(&http_lat, 0.5),
        ms(&http_lat, 0.99),
    );
    println!(
        "| population-register read over HTTP, no consent check, no log ({} clients) | {direct_rate:.0}/s | {:.2} ms | {:.2} ms | — | — | the baseline |",
        args.clients,
        ms(&direct_lat, 0.5),
        ms(&direct_lat, 0.99),
    );
    println!(
        "| full releases: consent checked, read through the exchange, logged, JWS signed ({} clients) | {release_rate:.0}/s | {:.2} ms | {:.2} ms | {direct_rate:.0}/s | {:.3} | ≥ 0.40 of the baseline |",
        args.clients,
        ms(&release_lat, 0.5),
        ms(&release_lat, 0.99),
        release_rate / direct_rate,
    );
    Ok(())
}

/// Decisions from `clients` tasks for `secs`, on random records; the sorted latencies (s),
/// the seconds spent and the share found valid.
async fn decisions(
    consents: &civitas_consent::Consents,
    ids: Arc<Vec<String>>,
    client_id: &str,
    args: &ConsentArgs,
) -> Result<(Vec<f64>, f64, f64)> {
    println!(
        "consent decisions: {} callers for {} s …",
        args.clients, args.secs
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let valid = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..args.clients {
        let (consents, ids, valid) = (consents.clone(), ids.clone(), valid.clone());
        let client_id = client_id.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // xorshift: a different random walk over the records per task.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = &ids[(x % ids.len() as u64) as usize];
                let t = Instant::now();
                let v = consents.check(id, Some(&client_id)).await?;
                lat.push(t.elapsed().as_secs_f64());
                if v.valid {
                    valid.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, civitas_consent::ConsentError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let share = valid.load(Ordering::Relaxed) as f64 / lat.len().max(1) as f64;
    Ok((lat, secs, share))
}

/// A few thousand record ids to ask about over HTTP.
fn ids_sample(ids: &[String]) -> Vec<String> {
    ids.iter()
        .step_by((ids.len() / 4096).max(1))
        .cloned()
        .collect()
}

/// The organisation asking the validity API from `clients` tasks for `secs`: the sorted
/// latencies (s) and the seconds spent.
async fn validity_over_http(
    args: &ConsentArgs,
    base: &str,
    ids: &[String],
    (client_id, secret): (&str, &str),
) -> Result<Measured> {
    println!(
        "the validity API: {} clients for {} s …",
        args.clients, args.secs
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let ids = Arc::new(ids.to_vec());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for t in 0..args.clients {
        let (http, ids) = (http.clone(), ids.clone());
        let (base, client_id, secret) =
            (base.to_string(), client_id.to_string(), secret.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = t;
            while Instant::now() < deadline {
                n += 7;
                let id = &ids[n % ids.len()];
                let at = Instant::now();
                let res = http
                    .get(format!("{base}/api/v1/consent/records/{id}/validity"))
                    .basic_auth(&client_id, Some(&secret))
                    .send()
                    .await?;
                if !res.status().is_success() {
                    bail!("a validity check failed: {}", res.status());
                }
                res.bytes().await?;
                lat.push(at.elapsed().as_secs_f64());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((lat, secs))
}

/// For each featured person: a consent to the agreement, and an access token granted for it
/// (the code issued as the provider's consent page would, and redeemed at the token
/// endpoint). Returns (national ID, access token) pairs.
async fn tokens(
    consents: &civitas_consent::Consents,
    provider: &civitas_identity::oidc::Provider,
    agreement_id: &str,
    (client_id, secret): (&str, &str),
    base: &str,
    db: &civitas_store::Db,
) -> Result<Vec<(String, String)>> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for (i, p) in civitas_registry::demo_people(db)
        .await?
        .into_iter()
        .enumerate()
    {
        let person = civitas_registry::person_by_national_id(db, &p.national_id)
            .await?
            .context("a featured person is in the register")?;
        let subject_ref = format!("person:{}", person.id);
        let receipt = consents
            .answer(agreement_id, &subject_ref, true, "citizen")
            .await?;
        let verifier = format!("bench-verifier-{i}-0123456789abcdefghijklmnopqrstuvwxyz");
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let details = json!([{ "type": "civitas_data_agreement", "agreement_id": agreement_id }]);
        let params = civitas_identity::oidc::AuthorizationParams {
            response_type: Some("code".into()),
            client_id: Some(client_id.into()),
            redirect_uri: Some(REDIRECT.into()),
            scope: Some("openid".into()),
            code_challenge: Some(challenge),
            code_challenge_method: Some("S256".into()),
            authorization_details: Some(details.to_string()),
            ..Default::default()
        };
        let req = provider
            .authorization_request(&params)
            .await
            .map_err(|e| anyhow::anyhow!("authorisation request refused: {e:?}"))?;
        let auth = civitas_identity::oidc::Authentication {
            account_id: format!("citizen-demo-{}", person.id),
            subject_ref,
            session_id: format!("bench-session-{i}"),
            loa: civitas_identity::Loa::Low,
            amr: vec!["pwd".into()],
            auth_time: civitas_ledger::event::now_ms() / 1000,
        };
        let granted = [json!({
            "type": "civitas_data_agreement",
            "agreement_id": agreement_id,
            "consent_id": receipt.record_id,
        })];
        let code = provider.issue_code_with(&req, &auth, &granted).await?;
        let res: serde_json::Value = http
            .post(format!("{base}/oidc/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?
            .json()
            .await?;
        let token = res["access_token"]
            .as_str()
            .with_context(|| format!("no access token: {res}"))?;
        out.push((p.national_id, token.to_string()));
    }
    Ok(out)
}

/// The baseline: the population register's person read, over HTTP, straight from the
/// registry (no exchange, no consent, no log). Returns its address.
async fn baseline_server(db: civitas_store::Db) -> Result<String> {
    use axum::extract::{Path, State};
    use axum::response::IntoResponse;
    async fn person(
        State(db): State<civitas_store::Db>,
        Path(id): Path<String>,
    ) -> axum::response::Response {
        match civitas_registry::services::answer(&db, "population", &format!("/persons/{id}")).await
        {
            Ok(civitas_registry::services::Answer::Found(v)) => axum::Json(v).into_response(),
            _ => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/persons/{id}", axum::routing::get(person))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

type Measured = (Vec<f64>, f64);

/// The baseline and the releases in alternating rounds: each one's sorted latencies (s) and
/// seconds spent.
async fn releases(
    args: &ConsentArgs,
    base: &str,
    direct: &str,
    tokens: &[(String, String)],
) -> Result<(Measured, Measured)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    // One release first: the whole path works before it is timed.
    let probe = client
        .get(format!("{base}/api/v1/mydata/release"))
        .bearer_auth(&tokens[0].1)
        .send()
        .await?;
    if !probe.status().is_success() {
        bail!(
            "a release failed: {} {}",
            probe.status(),
            probe.text().await?
        );
    }
    let tokens = Arc::new(tokens.to_vec());
    let people = tokens.clone();
    let release = format!("{base}/api/v1/mydata/release");
    let direct = direct.to_string();
    println!("releases and their baseline:");
    crate::bench::alternate(
        args.clients,
        args.secs,
        {
            let client = client.clone();
            move |n| client.get(format!("{direct}/persons/{}", people[n % people.len()].0))
        },
        move |n| {
            client
                .get(&release)
                .bearer_auth(&tokens[n % tokens.len()].1)
        },
        || {},
    )
    .await
}
