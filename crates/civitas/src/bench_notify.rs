//! `civitas bench notify`: e-mail notifications accepted per second through GOV.UK Notify's
//! v2 API, against a bare endpoint measured in the same run, and e-mail delivered per
//! second end to end into a local SMTP server.
//!
//! - Accepted: `POST /v2/notifications/email` on the running server (started as `civitas
//!   serve` starts it), with a live key of a live service: the call authenticated by its
//!   JWT, counted against the rate limit, the body checked, the template filled in, the
//!   daily limit checked, the message stored and `notify.accepted` logged under the
//!   recipient's tag. Each message goes to another address unless `--recipients` says
//!   how many to cycle through.
//! - The baseline: an endpoint this benchmark serves itself on another loopback port, with
//!   the same authentication (`Notify::authenticate` against the same stored keys, and the
//!   rate limit's count) and the same checks of the JSON body, answering 201 without
//!   storing anything. It is never part of the server's router. The two alternate in rounds
//!   of about two seconds, so a change in the machine's speed weighs on both.
//! - Delivered: a second server, on a fresh data folder, with `notify.smtp_url` pointing at
//!   an SMTP server in this process that counts what it receives. `--messages` e-mails are
//!   sent by the same clients as fast as they are accepted; the rate is the messages over
//!   the time from the first send to the last message's arrival.
//!
//! Each call carries a JWT made as Notify's clients make it (HS256 with the secret's
//! bytes, claims `iss` and `iat`), signed once a second and shared by the clients: the
//! server accepts `iat` within 30 s and remembers no token, so this costs the server what
//! a fresh token per call costs, and the clients almost nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use civitas_notify::{Channel, KeyType, NewTemplate, Notify};

use crate::bench::{machine, percentile};

/// Options of `civitas bench notify`.
#[derive(clap::Args, Debug)]
pub struct NotifyArgs {
    /// Seconds of load on the API and on its baseline (in alternating rounds of about two
    /// seconds).
    #[arg(long, default_value_t = 6)]
    secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// E-mail messages sent for the delivery rate (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    messages: u64,
    /// Distinct recipients the messages cycle through (0: every message to another
    /// address, as in a mailing to many people).
    #[arg(long, default_value_t = 0)]
    recipients: u64,
    /// Seconds to wait for the messages to arrive before giving the rate of those that did.
    #[arg(long, default_value_t = 45)]
    delivery_timeout: u64,
    /// Run on PostgreSQL instead of SQLite: a server URL where the benchmark may create (and
    /// afterwards drop) scratch databases.
    #[arg(long)]
    postgres: Option<String>,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn notify(args: &NotifyArgs) -> Result<()> {
    crate::bench::in_scratch(&args.scratch, "notify", |scratch| {
        crate::bench::block_on(run(args, scratch))
    })
}

/// The issue's targets for this 2-core machine.
const TARGET_ACCEPTED: f64 = 5_000.0;
const TARGET_RATIO: f64 = 0.30;
const TARGET_DELIVERED: f64 = 1_000.0;

async fn run(args: &NotifyArgs, scratch: &std::path::Path) -> Result<()> {
    if args.clients == 0 || args.secs == 0 {
        bail!("--clients and --secs must be at least 1");
    }
    let mut databases = Vec::new();
    let outcome = measure(args, scratch, &mut databases).await;
    if let Some(admin) = &args.postgres {
        for name in databases {
            crate::bench::pg_drop_scratch(admin, name).await?;
        }
    }
    outcome
}

async fn measure(
    args: &NotifyArgs,
    scratch: &std::path::Path,
    databases: &mut Vec<&'static str>,
) -> Result<()> {
    let engine = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("civitas bench notify — {}, {engine}", machine());

    // The API and its baseline, on a server without an SMTP server: what it accepts waits.
    databases.push("notify_accept");
    let server = Server::start(args, scratch, "notify_accept", None).await?;
    let bare = bare_server(&server).await?;
    println!("the API and its baseline:");
    let ((bare_lat, bare_secs), (accept_lat, accept_secs)) = accepts(args, &server, &bare).await?;
    server.stop().await;

    // Delivery, on a server of its own whose deliverer sends to the sink.
    let delivery = if args.messages > 0 {
        let sink = SmtpSink::start().await?;
        databases.push("notify_deliver");
        let server = Server::start(args, scratch, "notify_deliver", Some(&sink.url)).await?;
        let d = deliveries(args, &server, &sink).await;
        server.stop().await;
        Some(d?)
    } else {
        None
    };

    let ms = |lat: &[f64], p: f64| percentile(lat, p) * 1e3;
    let bare_rate = bare_lat.len() as f64 / bare_secs;
    let accept_rate = accept_lat.len() as f64 / accept_secs;
    let ratio = accept_rate / bare_rate;
    let recipients = match args.recipients {
        0 => "each to another address".to_string(),
        n => format!("to {n} addresses in turn"),
    };
    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| bare endpoint: the same authentication and JSON checks, 201 without storing ({} clients) | {bare_rate:.0}/s | {:.2} ms | {:.2} ms | — | — | the baseline |",
        args.clients,
        ms(&bare_lat, 0.5),
        ms(&bare_lat, 0.99),
    );
    println!(
        "| e-mail accepted: `POST /v2/notifications/email`, live key, checked, filled in, stored, logged, {recipients} ({} clients) | {accept_rate:.0}/s | {:.2} ms | {:.2} ms | {bare_rate:.0}/s | {ratio:.3} | ≥ 5,000/s (GOV.UK Notify: 360/s); ≥ 0.30 of the baseline |",
        args.clients,
        ms(&accept_lat, 0.5),
        ms(&accept_lat, 0.99),
    );
    if let Some(d) = &delivery {
        println!(
            "| e-mail accepted while the deliverer sends ({} messages, {} clients) | {:.0}/s | {:.2} ms | {:.2} ms | — | — | — |",
            args.messages,
            args.clients,
            d.accepted as f64 / d.accept_secs,
            ms(&d.latencies, 0.5),
            ms(&d.latencies, 0.99),
        );
        println!(
            "| e-mail delivered into a local SMTP server, from the first send to the last arrival ({} of {} arrived, {:.1} s after the last accept) | {:.0}/s | — | — | — | — | ≥ 1,000/s |",
            d.delivered,
            args.messages,
            d.tail_secs,
            d.rate(),
        );
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!(
        "accepted {accept_rate:.0}/s against 5,000/s: {}; {ratio:.3} of the bare endpoint against 0.30: {}",
        verdict(accept_rate >= TARGET_ACCEPTED),
        verdict(ratio >= TARGET_RATIO),
    );
    if let Some(d) = &delivery {
        println!(
            "delivered {:.0}/s against 1,000/s: {}",
            d.rate(),
            verdict(d.delivered == args.messages && d.rate() >= TARGET_DELIVERED),
        );
    }
    Ok(())
}

/// A server under test: started as `civitas serve` starts one, with a live service, its
/// live key and an e-mail template.
struct Server {
    base: String,
    db: civitas_store::Db,
    ledger: civitas_ledger::Ledger,
    rate_limit: u32,
    key: String,
    template_id: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Server {
    async fn start(
        args: &NotifyArgs,
        scratch: &std::path::Path,
        name: &'static str,
        smtp_url: Option<&str>,
    ) -> Result<Server> {
        let data = scratch.join(name);
        let mut flags = vec![
            ("data_dir", data.display().to_string(), "--data"),
            ("listen", "127.0.0.1:0".into(), "--listen"),
            ("log_level", "warn".into(), "--log-level"),
            // Notify's own limit is 3,000 calls a minute per service; the benchmark's one
            // service makes that many in well under a second.
            (
                "notify.rate_limit_per_minute",
                "1000000".into(),
                "--rate-limit",
            ),
        ];
        if let Some(url) = smtp_url {
            flags.push(("notify.smtp_url", url.into(), "--smtp-url"));
        }
        if let Some(admin) = &args.postgres {
            flags.push((
                "database",
                crate::bench::pg_scratch(admin, name).await?,
                "--postgres",
            ));
        }
        let layers = civitas_core::config::Layers {
            file: None,
            env: Vec::new(),
            flags,
        };
        let resolved = layers.resolve()?;
        let config = resolved.config.clone();
        let running = crate::start(&config, &resolved.entries).await?;
        let (db, ledger) = (running.db.clone(), running.ledger.clone());

        let notify = Notify::new(db.clone(), ledger.clone());
        let actor = "operator:bench";
        let service = notify.create_service("Benchmark office", actor).await?;
        notify.make_live(&service.id, actor).await?;
        let (_, key) = notify
            .create_key(&service.id, "bench", KeyType::Live, actor)
            .await?;
        let template = notify
            .save_template(
                &service.id,
                None,
                &NewTemplate {
                    channel: Channel::Email,
                    name: "Tax refund".into(),
                    subject: Some("Your ((year)) tax refund".into()),
                    body: "Dear ((name)),\n\nYour tax refund for ((year)) of NT$((amount)) has been approved. It will be paid into your account within five working days.\n\nReference: ((case))".into(),
                    priority: civitas_notify::Priority::Normal,
                    essential: false,
                    lang: civitas_notify::Language::En,
                    translation: None,
                },
                actor,
            )
            .await?;

        let listener = crate::bind(config.listen).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rate_limit = config.notify_rate_limit_per_minute;
        let task = tokio::spawn(crate::serve(listener, running, config, async {
            let _ = stopped.await;
        }));
        Ok(Server {
            base,
            db,
            ledger,
            rate_limit,
            key,
            template_id: template.id,
            stop,
            task,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The `Authorization` header Notify's clients send, made for a key: a JWT signed once a
/// second, shared by every client.
struct Bearer {
    service_id: String,
    secret: String,
    current: Mutex<(u64, String)>,
}

impl Bearer {
    /// For a key as its holder uses it (`{name}-{service id}-{secret}`): the secret is its
    /// last 36 characters, the service id the 36 before them, as Notify's clients take them.
    fn for_key(key: &str) -> Result<Bearer> {
        let n = key.len();
        let parts = (n >= 74).then(|| (key.get(n - 73..n - 37), key.get(n - 36..)));
        let Some((Some(service_id), Some(secret))) = parts else {
            bail!("not a Notify API key");
        };
        Ok(Bearer {
            service_id: service_id.to_string(),
            secret: secret.to_string(),
            current: Mutex::new((0, String::new())),
        })
    }

    fn header(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Ok(mut current) = self.current.lock() else {
            return self.sign(now);
        };
        if current.0 != now {
            *current = (now, self.sign(now));
        }
        current.1.clone()
    }

    fn sign(&self, iat: u64) -> String {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::Mac as _;
        let head = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({ "iss": self.service_id, "iat": iat })
                .to_string()
                .as_bytes(),
        );
        let signed = format!("{head}.{claims}");
        let signature = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes())
            .map(|mut mac| {
                mac.update(signed.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            })
            .unwrap_or_default();
        format!("Bearer {signed}.{signature}")
    }
}

/// The bodies of the sends: each to the next recipient.
struct Sends {
    template_id: String,
    recipients: u64,
    next: AtomicU64,
}

impl Sends {
    fn body(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let who = match self.recipients {
            0 => n,
            r => n % r,
        };
        format!(
            r#"{{"email_address":"resident-{who}@mail.bench.example","template_id":"{}","personalisation":{{"name":"Resident {who}","year":"2026","amount":"{}","case":"TX-{n:08}"}}}}"#,
            self.template_id,
            1_000 + n % 9_000,
        )
    }
}

/// What the clients send to an endpoint: a send with the current token.
fn send_request(
    client: &reqwest::Client,
    url: &str,
    bearer: &Bearer,
    sends: &Sends,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(reqwest::header::AUTHORIZATION, bearer.header())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(sends.body())
}

/// What the clients send with: one HTTP client (a kept-alive connection each), the key's
/// token and the bodies; and the server's send endpoint.
fn senders(
    args: &NotifyArgs,
    server: &Server,
) -> Result<(reqwest::Client, Arc<Bearer>, Arc<Sends>, String)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let sends = Sends {
        template_id: server.template_id.clone(),
        recipients: args.recipients,
        next: AtomicU64::new(0),
    };
    let api = format!("{}/v2/notifications/email", server.base);
    Ok((
        client,
        Arc::new(Bearer::for_key(&server.key)?),
        Arc::new(sends),
        api,
    ))
}

type Measured = (Vec<f64>, f64);

/// The baseline and the API in alternating rounds: each one's sorted latencies (s) and
/// seconds spent.
async fn accepts(args: &NotifyArgs, server: &Server, bare: &str) -> Result<(Measured, Measured)> {
    let (client, bearer, sends, api) = senders(args, server)?;
    let bare = format!("{bare}/v2/notifications/email");
    // One of each first: both paths work before they are timed.
    for url in [&bare, &api] {
        let probe = send_request(&client, url, &bearer, &sends).send().await?;
        if probe.status() != reqwest::StatusCode::CREATED {
            bail!(
                "a send to {url} failed: {} {}",
                probe.status(),
                probe.text().await?
            );
        }
    }
    crate::bench::alternate(
        args.clients,
        args.secs,
        {
            let (client, bearer, sends) = (client.clone(), bearer.clone(), sends.clone());
            move |_| send_request(&client, &bare, &bearer, &sends)
        },
        move |_| send_request(&client, &api, &bearer, &sends),
        || {},
    )
    .await
}

/// The baseline: `POST /v2/notifications/email` served by this benchmark on its own
/// loopback port, over the server's database. Returns its address.
async fn bare_server(server: &Server) -> Result<String> {
    let notify =
        Notify::with_rate_limit(server.db.clone(), server.ledger.clone(), server.rate_limit);
    let app = axum::Router::new()
        .route(
            "/v2/notifications/email",
            axum::routing::post(bare_send_email),
        )
        .with_state(notify);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // As the server's listener does.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// The fields a send to `/v2/notifications/email` may have.
const EMAIL_FIELDS: &[&str] = &[
    "email_address",
    "template_id",
    "personalisation",
    "reference",
    "email_reply_to_id",
    "one_click_unsubscribe_url",
];

/// What the API does before it accepts a message, and nothing after: the caller
/// authenticated and counted, the body parsed and checked as Notify's schema checks it.
async fn bare_send_email(
    axum::extract::State(notify): axum::extract::State<Notify>,
    headers: axum::http::HeaderMap,
    bytes: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let refused = |status: StatusCode, message: &str| {
        let body = serde_json::json!({"status_code": status.as_u16(), "errors": [{"error": "BenchError", "message": message}]});
        (status, axum::Json(body)).into_response()
    };
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match notify.authenticate(authorization).await {
        Ok(c) => c,
        Err(e) => return refused(StatusCode::FORBIDDEN, &e.message),
    };
    if let Err(o) = notify.count_call(&caller) {
        return refused(StatusCode::TOO_MANY_REQUESTS, &o.message);
    }
    match checked_send(&bytes) {
        Ok(template_id) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({
                "id": null,
                "reference": null,
                "template": { "id": template_id },
                "scheduled_for": null,
            })),
        )
            .into_response(),
        Err(message) => refused(StatusCode::BAD_REQUEST, &message),
    }
}

/// The checks Notify's schema makes of an e-mail send: a JSON object of known fields, the
/// address and template given, strings where strings are due, the template id a UUID and
/// the personalisation an object (taken, as the API takes it). Returns the template id.
fn checked_send(bytes: &[u8]) -> Result<String, String> {
    use serde_json::Value;
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
        return Err("Invalid JSON supplied in POST data".into());
    };
    if let Some(extra) = body.keys().find(|k| !EMAIL_FIELDS.contains(&k.as_str())) {
        return Err(format!("{extra} was unexpected"));
    }
    let text = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} is not of type string")),
    };
    let address = text("email_address")?.ok_or("email_address is a required property")?;
    let template = text("template_id")?.ok_or("template_id is a required property")?;
    let template = uuid::Uuid::try_parse(&template)
        .map_err(|_| "template_id is not a valid UUID".to_string())?;
    let personalisation = match body.get("personalisation") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err("personalisation is not of type object".into()),
    };
    text("reference")?;
    std::hint::black_box((address, personalisation));
    Ok(template.to_string())
}

/// What the delivery run gave.
struct Delivery {
    /// Messages accepted, the seconds that took, and each send's latency (s), sorted.
    accepted: u64,
    accept_secs: f64,
    latencies: Vec<f64>,
    /// Messages that arrived, and the seconds from the first send to the last arrival.
    delivered: u64,
    delivered_secs: f64,
    /// Seconds from the last accept to the last arrival.
    tail_secs: f64,
}

impl Delivery {
    fn rate(&self) -> f64 {
        if self.delivered == 0 {
            return 0.0;
        }
        self.delivered as f64 / self.delivered_secs
    }
}

/// Sends `--messages` e-mails from the clients as fast as they are accepted, and waits
/// until the sink has received them all (or the timeout).
async fn deliveries(args: &NotifyArgs, server: &Server, sink: &SmtpSink) -> Result<Delivery> {
    let (client, bearer, sends, api) = senders(args, server)?;
    let api = Arc::new(api);
    let total = args.messages;
    println!(
        "delivery: {total} e-mails from {} clients into a local SMTP server …",
        args.clients
    );
    let taken = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, bearer, sends, api, taken) = (
            client.clone(),
            bearer.clone(),
            sends.clone(),
            api.clone(),
            taken.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while taken.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let res = send_request(&client, &api, &bearer, &sends).send().await?;
                let status = res.status();
                if status != reqwest::StatusCode::CREATED {
                    bail!("a send failed: {status} {}", res.text().await?);
                }
                res.bytes().await?;
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let accept_secs = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mut arrived = sink.received.clone();
    let waited = tokio::time::timeout(
        Duration::from_secs(args.delivery_timeout),
        arrived.wait_for(|(n, _)| *n >= total),
    )
    .await;
    let (delivered, last) = *sink.received.borrow();
    let delivered_secs = last.map_or(0.0, |t| (t - started).as_secs_f64());
    if waited.is_err() {
        println!(
            "only {delivered} of {total} e-mails arrived within {} s of the last accept",
            args.delivery_timeout
        );
    }
    Ok(Delivery {
        accepted: total,
        accept_secs,
        latencies,
        delivered,
        delivered_secs,
        tail_secs: delivered_secs - accept_secs,
    })
}

/// A mail server on loopback that speaks enough SMTP for lettre (EHLO, HELO, MAIL, RCPT,
/// DATA, RSET, NOOP, QUIT), accepts every message and counts them.
struct SmtpSink {
    url: String,
    /// Messages received so far, and when the last one arrived.
    received: tokio::sync::watch::Receiver<Arrivals>,
}

type Arrivals = (u64, Option<Instant>);

impl SmtpSink {
    async fn start() -> Result<SmtpSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("smtp://{}", listener.local_addr()?);
        let (count, received) = tokio::sync::watch::channel((0, None));
        let count = Arc::new(count);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(socket, &count).await;
                });
            }
        });
        Ok(SmtpSink { url, received })
    }
}

/// One SMTP connection, until QUIT or the client goes.
async fn smtp_session(
    socket: tokio::net::TcpStream,
    count: &tokio::sync::watch::Sender<Arrivals>,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let _ = socket.set_nodelay(true);
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink.bench ESMTP\r\n").await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let answer: &[u8] = match verb.as_slice() {
            b"EHLO" => b"250-sink.bench\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            b"HELO" | b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 OK\r\n",
            b"DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                loop {
                    line.clear();
                    if read.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                count.send_modify(|(n, last)| (*n, *last) = (*n + 1, Some(Instant::now())));
                b"250 queued\r\n"
            }
            b"QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(answer).await?;
    }
}
