//! `civitas bench services`: complete "a baby is born" applications per second through the
//! API, against the same submission written straight to the database, in the same run; and
//! the caseworker's queue page with 100,000 open cases.
//!
//! - Applications: a demo country (2,000 people) served as `civitas demo` serves it; the
//!   baby's parent, signed in at level substantial, applies over the API as a program would:
//!   a draft filled from the registers through the exchange (the read checked, logged, in
//!   the parent's tracker), the birth certificate uploaded, the answers saved and submitted
//!   (every step checked, three cases opened at three agencies, the first due by its service
//!   level, the submission and each case in the ledger, the parent's message queued in
//!   Notify). One application is those three calls; the rate is complete applications.
//! - The baseline: the same application written straight to the database by as many tasks
//!   in this process: its row (the answers as JSON) and its three cases in one transaction,
//!   without prefill, checks, workflow, ledger or message. The two run one after the other.
//! - The queue: 100,000 open cases at the household registration office (written in bulk),
//!   then `GET /console` (the first page of the open queue, with the counts by state) as one
//!   of its caseworkers, from 8 clients: p50 and p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::bench::{machine, percentile};

/// Options of `civitas bench services`.
#[derive(clap::Args, Debug)]
pub struct ServicesArgs {
    /// Seconds of applications (and as many of the baseline).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent applicants.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Open cases in the queue.
    #[arg(long, default_value_t = 100_000)]
    open_cases: u64,
    /// Requests for the queue page.
    #[arg(long, default_value_t = 2_000)]
    queue_requests: usize,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<std::path::PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn services(args: &ServicesArgs) -> Result<()> {
    crate::bench::in_scratch(&args.scratch, "services", |scratch| {
        crate::bench::block_on(run(args, scratch))
    })
}

const TARGET_RATE: f64 = 500.0;
const TARGET_QUEUE_P99_MS: f64 = 50.0;
/// A small PDF, the birth certificate.
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

/// A signed-in person as the benchmark's clients present them.
struct Session {
    cookie: String,
    csrf: String,
}

async fn session_of(identity: &civitas_identity::Identity, username: &str) -> Result<Session> {
    let account = identity
        .account_named(username)
        .await?
        .with_context(|| format!("no account {username}"))?;
    let client = civitas_identity::session::ClientInfo {
        ip: "127.0.0.1".into(),
        user_agent: "civitas-bench".into(),
    };
    // Level substantial, as after a password and a one-time code (setup, not measured).
    let out = identity
        .start_session(
            &account,
            civitas_identity::Loa::Substantial,
            &["pwd", "otp"],
            &client,
        )
        .await?;
    Ok(Session {
        cookie: format!("civitas_session={}", out.token),
        csrf: out.session.csrf_token(),
    })
}

async fn run(args: &ServicesArgs, scratch: &std::path::Path) -> Result<()> {
    if args.clients == 0 || args.secs == 0 {
        bail!("--clients and --secs must be at least 1");
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
    println!("civitas bench services — {}, SQLite", machine());
    let (identity, _) = crate::identity_for(&db, &ledger, &config, None);
    let listener = crate::bind(config.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, running, config.clone(), async {
        let _ = stop_rx.await;
    }));

    let parent = crate::demo::applying_parent(&db)
        .await?
        .context("the demo's newborn has a parent with a sign-in")?;
    let applicant = Arc::new(session_of(&identity, &parent.national_id).await?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(8))
        .build()?;
    let form: Value = client
        .get(format!("{base}/api/v1/services/baby-born/forms"))
        .send()
        .await?
        .json()
        .await?;
    let answers = Arc::new(answers_for(&form[0], &parent.national_id));

    // One application first: the path works before it is timed.
    apply(&client, &base, &applicant, &answers, &Calls::default()).await?;

    let baseline = baseline(&db, args, &answers, &parent.national_id).await?;
    let calls = Arc::new(Calls::default());
    let cpu_before = crate::bench::process_cpu_secs();
    let applications = applications(&client, &base, &applicant, &answers, args, &calls).await?;
    let cpu_per_application =
        (crate::bench::process_cpu_secs() - cpu_before) / applications.0.len().max(1) as f64;
    let queued: (i64,) = civitas_store::sqlx::query_as(
        "SELECT COUNT(*) FROM notify_notifications WHERE reference LIKE 'A-%'",
    )
    .fetch_one(db.pool())
    .await?;

    let loaded = Instant::now();
    load_open_cases(&db, args.open_cases).await?;
    println!(
        "wrote {} open cases at HRO in {:.1} s (setup, not a figure)",
        args.open_cases,
        loaded.elapsed().as_secs_f64()
    );
    let caseworker = session_of(&identity, "caseworker.1@hro.gov.example").await?;
    let queue = queue_page(&client, &base, &caseworker, args.queue_requests).await?;

    let _ = stop_tx.send(());
    let _ = server.await;

    let ms = |lat: &[f64], p: f64| percentile(lat, p) * 1e3;
    let (base_lat, base_secs) = &baseline;
    let (app_lat, app_secs) = &applications;
    let base_rate = base_lat.len() as f64 / base_secs;
    let rate = app_lat.len() as f64 / app_secs;
    let ratio = rate / base_rate;
    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| baseline: the application's row and its 3 cases written straight to the database ({} tasks) | {base_rate:.0}/s | {:.2} ms | {:.2} ms | — | — | the baseline |",
        args.clients,
        ms(base_lat, 0.5),
        ms(base_lat, 0.99),
    );
    println!(
        "| \"a baby is born\" applications: draft filled through the exchange, certificate uploaded, checked, submitted, 3 cases, ledger, message queued ({} applicants) | {rate:.0}/s | {:.2} ms | {:.2} ms | {base_rate:.0}/s | {ratio:.3} | ≥ 500/s (Camunda's smallest SaaS cluster: 5 process instances/s) |",
        args.clients,
        ms(app_lat, 0.5),
        ms(app_lat, 0.99),
    );
    println!(
        "| the caseworker's queue page (`GET /console`) with {} open cases, 8 clients, {} requests | {:.0}/s | {:.2} ms | {:.2} ms | — | — | p99 ≤ 50 ms |",
        args.open_cases,
        queue.0.len(),
        queue.0.len() as f64 / queue.1,
        ms(&queue.0, 0.5),
        ms(&queue.0, 0.99),
    );
    println!();
    println!("Where an application's time goes (each call's latency under the same load):");
    let mut calls = std::mem::take(&mut *calls.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    for (name, lat) in [
        "POST /api/v1/services/baby-born/applications (the draft, filled from the registers)",
        "POST /api/v1/applications/{id}/documents (the certificate)",
        "PUT /api/v1/applications/{id} (checked and submitted)",
    ]
    .into_iter()
    .zip(calls.iter_mut())
    {
        lat.sort_by(f64::total_cmp);
        println!(
            "- {name}: p50 {:.2} ms, p99 {:.2} ms",
            ms(lat, 0.5),
            ms(lat, 0.99)
        );
    }
    println!(
        "CPU time per application, its client's included: {:.3} ms ({:.2} cores busy)",
        cpu_per_application * 1e3,
        cpu_per_application * rate
    );
    println!();
    println!(
        "{} messages to the parent queued in Notify for {} applications",
        queued.0,
        app_lat.len() + 1
    );
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "applications {rate:.0}/s against 500/s: {}; queue page p99 {:.1} ms against 50 ms: {}",
        verdict(rate >= TARGET_RATE),
        ms(&queue.0, 0.99),
        verdict(ms(&queue.0, 0.99) <= TARGET_QUEUE_P99_MS),
    );
    Ok(())
}

/// The answers a parent gives to the questions the registers do not fill: a fixed choice's
/// last option (so yes/no questions answer "no"), and plain values by kind; no files (they
/// are uploaded) and no repeating groups (optional).
fn answers_for(form: &Value, national_id: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let steps = form["schema"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for q in steps
        .iter()
        .flat_map(|s| s["question"].as_array().cloned().unwrap_or_default())
    {
        if q["prefill"].is_string() {
            continue;
        }
        if let Some(cond) = q["show_if"].as_object() {
            let on = cond["question"].as_str().unwrap_or_default();
            let given = out
                .get(on)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !cond["any_of"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == given.as_str()))
            {
                continue;
            }
        }
        let v = match q["kind"].as_str().unwrap_or_default() {
            "name" => "王小寶".to_string(),
            "national_id" => national_id.to_string(),
            "address" => "臺北市中正區重慶南路一段122號".to_string(),
            "date" => "2026-01-05".to_string(),
            "number" => q["min"].as_i64().unwrap_or(1).max(1).to_string(),
            "select" => match q["options"].as_array().and_then(|o| o.last()) {
                Some(o) => o["value"].as_str().unwrap_or_default().to_string(),
                None => continue,
            },
            "file" | "group" => continue,
            _ if q["max_length"].as_u64().is_some_and(|m| m <= 16) => "004".to_string(),
            _ => "申請說明".to_string(),
        };
        out.insert(
            q["id"].as_str().unwrap_or_default().to_string(),
            Value::String(v),
        );
    }
    out
}

/// One complete application over the API: draft (filled from the registers), the
/// certificate, the answers submitted.
/// Each call's latencies (s): the draft, the upload, the submission.
type Calls = std::sync::Mutex<[Vec<f64>; 3]>;

async fn apply(
    client: &reqwest::Client,
    base: &str,
    s: &Session,
    answers: &Map<String, Value>,
    calls: &Calls,
) -> Result<()> {
    let mut took = [0.0; 3];
    let mut t = Instant::now();
    let mut lap = |i: usize| {
        took[i] = t.elapsed().as_secs_f64();
        t = Instant::now();
    };
    let call = |method: reqwest::Method, path: String| {
        client
            .request(method, format!("{base}{path}"))
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
    };
    let draft = call(
        reqwest::Method::POST,
        "/api/v1/services/baby-born/applications".into(),
    )
    .json(&json!({"draft": true, "formData": {"data": answers}}))
    .send()
    .await?;
    if !draft.status().is_success() {
        bail!("a draft failed: {} {}", draft.status(), draft.text().await?);
    }
    let draft: Value = draft.json().await?;
    lap(0);
    let id = draft["fileId"]
        .as_str()
        .context("a draft has an id")?
        .to_string();
    let doc = call(
        reqwest::Method::POST,
        format!("/api/v1/applications/{id}/documents?name=birth.pdf"),
    )
    .header("content-type", "application/pdf")
    .body(PDF)
    .send()
    .await?;
    if !doc.status().is_success() {
        bail!("an upload failed: {} {}", doc.status(), doc.text().await?);
    }
    let doc: Value = doc.json().await?;
    lap(1);
    let sent = call(reqwest::Method::PUT, format!("/api/v1/applications/{id}"))
        .json(&json!({"formData": {"data": {"child.birth_certificate": doc}}, "submit": true}))
        .send()
        .await?;
    if !sent.status().is_success() {
        bail!(
            "a submission failed: {} {}",
            sent.status(),
            sent.text().await?
        );
    }
    lap(2);
    if let Ok(mut c) = calls.lock() {
        for (all, one) in c.iter_mut().zip(took) {
            all.push(one);
        }
    }
    Ok(())
}

type Measured = (Vec<f64>, f64);

/// Runs `work` from `clients` tasks for `secs`: each completion's latency (sorted, s) and
/// the seconds taken.
async fn load<F, Fut>(clients: usize, secs: u64, work: F) -> Result<Measured>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                work(n).await?;
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all, secs))
}

async fn applications(
    client: &reqwest::Client,
    base: &str,
    s: &Arc<Session>,
    answers: &Arc<Map<String, Value>>,
    args: &ServicesArgs,
    calls: &Arc<Calls>,
) -> Result<Measured> {
    let (client, base, s, answers, calls) = (
        client.clone(),
        base.to_string(),
        s.clone(),
        answers.clone(),
        calls.clone(),
    );
    load(args.clients, args.secs, move |_| {
        let (client, base, s, answers, calls) = (
            client.clone(),
            base.clone(),
            s.clone(),
            answers.clone(),
            calls.clone(),
        );
        async move { apply(&client, &base, &s, &answers, &calls).await }
    })
    .await
}

/// The same application written straight to the database.
async fn baseline(
    db: &civitas_store::Db,
    args: &ServicesArgs,
    answers: &Map<String, Value>,
    national_id: &str,
) -> Result<Measured> {
    let (db, body, nid) = (
        db.clone(),
        Value::Object(answers.clone()).to_string(),
        national_id.to_string(),
    );
    load(args.clients, args.secs, move |n| {
        let (db, body, nid) = (db.clone(), body.clone(), nid.clone());
        async move {
            use civitas_store::sqlx;
            let now = civitas_ledger::event::now_ms();
            let id = uuid::Uuid::new_v4().to_string();
            let mut tx = db.pool().begin().await?;
            sqlx::query("INSERT INTO services_applications (id, reference, offering, catalog_version, account_id, subject_ref, national_id, applicant_name, state, answers, sources, options, created_ms, updated_ms, submitted_ms) VALUES ($1, $2, 'baby-born', 1, 'bench', 'person:0', $3, 'bench', 'submitted', $4, '{}', '{}', $5, $5, $5)")
                .bind(&id)
                .bind(format!("B-{n:010}"))
                .bind(&nid)
                .bind(&body)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for (service, agency) in [("hro-birth-registration", "HRO"), ("dsa-childbirth-allowance", "DSA"), ("nhia-newborn-enrolment", "NHIA")] {
                sqlx::query("INSERT INTO services_cases (id, application_id, service_id, agency, state, depends_on, updated_ms, version) VALUES ($1, $2, $3, $4, 'submitted', '[]', $5, 1)")
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(&id)
                    .bind(service)
                    .bind(agency)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    })
    .await
}

/// Open cases at HRO, due over the next 30 days, with their applications.
async fn load_open_cases(db: &civitas_store::Db, n: u64) -> Result<()> {
    use civitas_store::{BulkInsert, Value as V};
    let now = civitas_ledger::event::now_ms();
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(10_000);
        let mut apps = BulkInsert::new(
            "services_applications",
            &[
                "id",
                "reference",
                "offering",
                "catalog_version",
                "account_id",
                "subject_ref",
                "national_id",
                "applicant_name",
                "state",
                "answers",
                "sources",
                "options",
                "created_ms",
                "updated_ms",
                "submitted_ms",
            ],
        );
        let mut cases = BulkInsert::new(
            "services_cases",
            &[
                "id",
                "application_id",
                "service_id",
                "agency",
                "state",
                "depends_on",
                "opened_ms",
                "due_ms",
                "updated_ms",
                "version",
            ],
        );
        for i in done..done + chunk {
            let app = format!("bench-app-{i}");
            apps.row([
                V::Text(app.clone()),
                V::Text(format!("Q-{i:010}")),
                V::Str("hro-birth-registration"),
                V::I64(1),
                V::Str("bench"),
                V::Text(format!("person:bench-{i}")),
                V::Str("A123456789"),
                V::Text(format!("申請人{i}")),
                V::Str("submitted"),
                V::Str("{}"),
                V::Str("{}"),
                V::Str("{}"),
                V::I64(now),
                V::I64(now),
                V::I64(now),
            ]);
            let state = if i % 3 == 0 { "in_review" } else { "submitted" };
            cases.row([
                V::Text(format!("bench-case-{i}")),
                V::Text(app),
                V::Str("hro-birth-registration"),
                V::Str("HRO"),
                V::Str(state),
                V::Str("[]"),
                V::I64(now),
                V::I64(now + (i as i64 * 7919) % (30 * 86_400_000)),
                V::I64(now),
                V::I64(1),
            ]);
        }
        let mut tx = db.pool().begin().await?;
        apps.flush(&mut tx, db.engine()).await?;
        cases.flush(&mut tx, db.engine()).await?;
        tx.commit().await?;
        done += chunk;
    }
    Ok(())
}

async fn queue_page(
    client: &reqwest::Client,
    base: &str,
    s: &Session,
    requests: usize,
) -> Result<Measured> {
    let probe = client
        .get(format!("{base}/console"))
        .header("cookie", &s.cookie)
        .send()
        .await?;
    if probe.status() != reqwest::StatusCode::OK {
        bail!("the queue page failed: {}", probe.status());
    }
    let body = probe.text().await?;
    if !body.contains("/console/cases/") {
        bail!("the queue page lists no case");
    }
    let per = requests.div_ceil(8);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, cookie) = (client.clone(), format!("{base}/console"), s.cookie.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..per {
                let t = Instant::now();
                let r = client.get(&url).header("cookie", &cookie).send().await?;
                if r.status() != reqwest::StatusCode::OK {
                    bail!("the queue page failed: {}", r.status());
                }
                r.bytes().await?;
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all, secs))
}
