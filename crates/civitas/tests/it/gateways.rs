//! Several nodes: the directory and two agency gateways as separate `civitas` processes on
//! loopback. Agency A's information system calls agency B's service through gateway A and
//! gateway B (mutual TLS 1.3, every message signed); removing the right, revoking B's keys,
//! a tampered message and a configuration stale beyond its grace each give their error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use civitas_exchange::keys::GatewayKeys;
use civitas_exchange::message::{self, Decoder, END, HEAD, RequestHead, ResponseHead};
use civitas_exchange::protocol::RequestHash;
use serde_json::Value;

use crate::cli::{civitas, run_ok, sigterm, wait_exit};
use crate::support::scratch;

/// A configuration is valid this long; an expired one keeps serving this long again.
const VALIDITY_SECS: &str = "4";
const GRACE_SECS: &str = "4";

struct Node {
    child: Child,
    /// Its HTTP address, `http://127.0.0.1:PORT`.
    url: String,
    /// A gateway's address for other gateways, `https://127.0.0.1:PORT`.
    peers: Option<String>,
}

impl Node {
    fn stop(mut self) {
        sigterm(&self.child);
        assert!(wait_exit(&mut self.child).success());
    }
}

/// A test that fails half-way leaves no node running.
impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a node and reads the addresses it announces.
fn start(mut cmd: Command) -> Node {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut peers = None;
    let mut url = None;
    for line in lines.by_ref().map_while(Result::ok) {
        let at = line
            .split(" at ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next());
        if line.contains("takes calls from other gateways") {
            peers = at.map(str::to_string);
        } else if line.starts_with("Civitas is running") {
            url = at.map(|u| u.trim_end_matches('/').to_string());
            break;
        }
    }
    let Some(url) = url else {
        let _ = child.kill();
        panic!(
            "civitas ended before announcing its address: {:?}",
            child.wait()
        );
    };
    std::thread::spawn(move || lines.for_each(drop));
    Node { child, url, peers }
}

fn directory(data: &Path, listen: &str) -> Node {
    let mut c = civitas();
    c.arg("--data")
        .arg(data)
        .args(["serve", "--listen", listen])
        .env(
            "CIVITAS_EXCHANGE__CONFIGURATION_VALIDITY_SECS",
            VALIDITY_SECS,
        );
    start(c)
}

/// A gateway with `workers` threads for requests (`0`: one per core).
fn gateway(data: &Path, member: &str, directory: &str, anchor_key: &str, workers: u32) -> Node {
    let mut c = civitas();
    c.arg("--data")
        .arg(data)
        .args(["serve", "--role", "gateway", "--listen", "127.0.0.1:0"])
        .env("CIVITAS_EXCHANGE__GATEWAY_MEMBER", member)
        .env("CIVITAS_EXCHANGE__DIRECTORY_URL", directory)
        .env("CIVITAS_EXCHANGE__ANCHOR_KEY", anchor_key)
        .env("CIVITAS_EXCHANGE__GATEWAY_LISTEN", "127.0.0.1:0")
        .env("CIVITAS_EXCHANGE__POLL_SECS", "1")
        .env("CIVITAS_EXCHANGE__STALE_GRACE_SECS", GRACE_SECS)
        .env("CIVITAS_EXCHANGE__ARCHIVE_DAYS", "1")
        .env("CIVITAS_WORKERS", workers.to_string());
    start(c)
}

fn get_json(rt: &tokio::runtime::Runtime, url: &str) -> (u16, Value) {
    rt.block_on(async {
        let res = reqwest::get(url).await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    })
}

/// The version of the configuration the directory signs now, fetched as gateway A (only
/// registered gateways get it).
fn directory_version(rt: &tokio::runtime::Runtime, url: &str, a: &GatewayKeys) -> u64 {
    let member = civitas_core::xroad::MemberId::parse("TW/GOV/A").unwrap();
    let now = civitas_ledger::event::now_ms();
    let claim = civitas_exchange::configuration::poll_claim(&member, &a.signing, 0, now);
    let signed: Value = rt.block_on(async {
        let res = reqwest::Client::new()
            .get(format!("{url}/exchange/v1/configuration"))
            .header("civitas-gateway", claim)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    });
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signed["configuration"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice::<Value>(&json).unwrap()["version"]
        .as_u64()
        .unwrap()
}

/// Waits until every gateway holds the directory's current configuration.
fn until_current(
    rt: &tokio::runtime::Runtime,
    directory: &str,
    a: &GatewayKeys,
    gateways: &[&Node],
) {
    let version = directory_version(rt, directory, a);
    let started = Instant::now();
    for g in gateways {
        loop {
            let (_, ready) = get_json(rt, &format!("{}/readyz", g.url));
            if ready["exchange"]["version"].as_u64() == Some(version) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} never took version {version}: {ready}",
                g.url
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The operator's command on the directory's database (stopped: SQLite has one writer).
fn operator(data: &Path, args: &[&str]) -> String {
    let mut c = civitas();
    c.arg("--data").arg(data).arg("exchange").args(args);
    run_ok(&mut c)
}

/// The events a node's ledger holds so far, one a line (its first entry tile).
fn log_of(rt: &tokio::runtime::Runtime, url: &str) -> String {
    rt.block_on(async {
        let checkpoint = reqwest::get(format!("{url}/ledger/checkpoint"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let size: u64 = checkpoint.lines().nth(1).unwrap().parse().unwrap();
        assert!(size < 256, "one tile holds the whole log here");
        let res = reqwest::get(format!("{url}/ledger/tile/entries/000.p/{size}"))
            .await
            .unwrap();
        let status = res.status();
        let tile = res.bytes().await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tile));
        // An entry bundle: each entry after its length, two bytes big-endian.
        let mut entries = Vec::new();
        let mut rest = &tile[..];
        while let [hi, lo, more @ ..] = rest {
            let n = u16::from_be_bytes([*hi, *lo]) as usize;
            assert!(n <= more.len(), "an entry bundle cut short: {tile:?}");
            entries.push(String::from_utf8_lossy(&more[..n]).into_owned());
            rest = &more[n..];
        }
        entries.join("\n")
    })
}

/// The status and `X-Road-Error` of an answer, and its body as JSON.
async fn outcome(res: reqwest::Response) -> (u16, String, Value) {
    let status = res.status().as_u16();
    let error = res
        .headers()
        .get("x-road-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, error, res.json().await.unwrap_or(Value::Null))
}

/// Sends a framed message to B's gateway as A's gateway would (with A's keys), and reads
/// the head of the answer.
fn send_as_gateway(
    rt: &tokio::runtime::Runtime,
    keys: &GatewayKeys,
    b_certificate: &[u8],
    b_address: &str,
    body: &[u8],
    signed_body: &[u8],
) -> Result<ResponseHead, String> {
    let head = RequestHead {
        method: "POST".into(),
        target: "/r1/TW/GOV/B/api/echo/items".into(),
        headers: vec![
            ("x-road-client".into(), "TW/GOV/A/app".into()),
            ("x-road-id".into(), "tampering-1".into()),
            ("x-road-request-id".into(), "r-1".into()),
        ],
        has_body: true,
        content_length: Some(body.len() as u64),
    };
    let mut hash = RequestHash::new(
        &head.method,
        &head.target,
        head.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    hash.body(signed_body);
    let mut msg = message::json_frame(HEAD, &head);
    msg.extend(message::frame(message::DATA, body));
    msg.extend(message::json_frame(
        END,
        &message::sign_request(&keys.signing, &hash.finish()),
    ));
    let tls = civitas_exchange::tls::client_config(keys, b_certificate).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    rt.block_on(async {
        let res = client
            .post(format!("{b_address}{}", message::PATH))
            .header("content-type", message::CONTENT_TYPE)
            .body(msg)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        let mut d = Decoder::default();
        d.push(&bytes);
        let (kind, payload) = d.next_frame().unwrap().unwrap();
        assert_eq!(kind, HEAD);
        Ok(serde_json::from_slice(&payload).unwrap())
    })
}

fn header<'a>(head: &'a ResponseHead, name: &str) -> Option<&'a str> {
    head.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn public_keys(data: &Path) -> PathBuf {
    let mut c = civitas();
    c.arg("--data")
        .arg(data)
        .args(["exchange", "gateway", "keys"]);
    let out = run_ok(&mut c);
    let file = data.join("public-keys.json");
    std::fs::write(&file, out).unwrap();
    file
}

#[test]
fn two_gateways_call_each_other_over_mutual_tls_with_every_message_signed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let provider = rt.block_on(crate::exchange::provider());
    let (dir, ga, gb) = (scratch("gw-dir"), scratch("gw-a"), scratch("gw-b"));
    // The directory holds a small demo country: its register and its residents' accounts.
    run_ok(
        civitas()
            .arg("--data")
            .arg(&dir)
            .args(["seed", "--citizens", "100"]),
    );
    let resident = rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", dir.join("civitas.db").display());
        let db = civitas_store::Db::connect(&url, 1).await.unwrap();
        let first = civitas_registry::demo_people(&db).await.unwrap()[0]
            .national_id
            .clone();
        db.close().await;
        first
    });
    operator(&dir, &["member", "add", "TW/GOV/A", "--name", "Agency A"]);
    operator(&dir, &["member", "add", "TW/GOV/B", "--name", "Agency B"]);
    operator(&dir, &["subsystem", "add", "TW/GOV/A/app"]);
    operator(&dir, &["subsystem", "add", "TW/GOV/B/api"]);
    let base = format!("http://{provider}/api");
    operator(
        &dir,
        &[
            "service",
            "add",
            "TW/GOV/B/api/echo",
            "--url",
            &base,
            "--endpoint",
            "* /",
        ],
    );
    operator(&dir, &["grant", "TW/GOV/B/api/echo", "TW/GOV/A/app"]);
    operator(
        &dir,
        &[
            "service",
            "add",
            "TW/GOV/B/api/benefits",
            "--url",
            &base,
            "--endpoint",
            "* /",
            "--personal",
        ],
    );
    operator(&dir, &["grant", "TW/GOV/B/api/benefits", "TW/GOV/A/app"]);
    let anchor = operator(&dir, &["anchor"]);
    let key = anchor
        .lines()
        .find_map(|l| l.strip_prefix("exchange.anchor_key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let (keys_a, keys_b) = (public_keys(&ga), public_keys(&gb));

    let a_keys = GatewayKeys::load_or_create(&ga).unwrap();
    let d = directory(&dir, "127.0.0.1:0");
    // Before the gateways are registered, the configuration goes to nobody.
    let (status, _) = get_json(&rt, &format!("{}/exchange/v1/configuration", d.url));
    assert_eq!(status, 403);
    let directory_listen = d.url.trim_start_matches("http://").to_string();
    // A runs its requests on one thread (Tokio's current-thread scheduler, as the benchmark
    // runs both), B on one per core: each call passes through both kinds.
    let a = gateway(&ga, "TW/GOV/A", &d.url, &key, 1);
    let b = gateway(&gb, "TW/GOV/B", &d.url, &key, 0);
    let (a_peers, b_peers) = (a.peers.clone().unwrap(), b.peers.clone().unwrap());
    assert!(b_peers.starts_with("https://127.0.0.1:"), "{b_peers}");

    // The operator registers both gateways; the directory restarts on its address, and the
    // gateways take the new configuration at their next poll.
    let url = d.url.clone();
    d.stop();
    operator(
        &dir,
        &[
            "gateway",
            "add",
            "TW/GOV/A",
            "--address",
            &a_peers,
            "--keys",
            keys_a.to_str().unwrap(),
        ],
    );
    operator(
        &dir,
        &[
            "gateway",
            "add",
            "TW/GOV/B",
            "--address",
            &b_peers,
            "--keys",
            keys_b.to_str().unwrap(),
        ],
    );
    let d = directory(&dir, &directory_listen);
    assert_eq!(d.url, url);
    until_current(&rt, &d.url, &a_keys, &[&a, &b]);

    // A's information system calls B's service through both gateways.
    let http = reqwest::Client::new();
    let call = |body: Vec<u8>| {
        rt.block_on(async {
            http.post(format!("{}/r1/TW/GOV/B/api/echo/items?x=1", a.url))
                .header("x-road-client", "TW/GOV/A/app")
                .header("x-road-id", "call-1")
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    let res = call(b"hello".to_vec());
    assert_eq!(res.status(), 200);
    let hash = res.headers()["x-road-request-hash"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hash.len(), 88, "a base64 SHA-512");
    assert_eq!(res.headers()["x-road-service"], "TW/GOV/B/api/echo");
    let echoed: Value = rt.block_on(res.json()).unwrap();
    assert_eq!(echoed["path_and_query"], "/api/items?x=1");
    assert_eq!(echoed["body_len"], 5);
    let received: Vec<(String, String)> =
        serde_json::from_value(echoed["headers"].clone()).unwrap();
    let got = |n: &str| {
        received
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(got("x-road-client").as_deref(), Some("TW/GOV/A/app"));
    assert_eq!(got("x-road-id").as_deref(), Some("call-1"));
    assert!(got("x-road-request-id").is_some());

    // A body of several megabytes streams through both gateways unchanged.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let res = call(big.clone());
    assert_eq!(res.status(), 200);
    let echoed: Value = rt.block_on(res.json()).unwrap();
    assert_eq!(echoed["body_len"], 3_000_000);
    use sha2::Digest;
    assert_eq!(
        echoed["body_sha256"],
        format!("{:x}", sha2::Sha256::digest(&big))
    );

    // A provider that answers a large body before reading it: both gateways read the rest,
    // so the answer is signed over the whole request and verifies, and both logs hold the
    // whole body's length.
    let large: Vec<u8> = vec![7; 24 << 20];
    let res = rt.block_on(async {
        http.post(format!("{}/r1/TW/GOV/B/api/echo/too-large", a.url))
            .header("x-road-client", "TW/GOV/A/app")
            .header("x-road-id", "call-too-large")
            .body(large)
            .send()
            .await
            .unwrap()
    });
    let hash = res.headers().get("x-road-request-hash").cloned();
    let (status, error, refused) = rt.block_on(outcome(res));
    assert_eq!((status, error.as_str()), (413, ""), "{refused}");
    assert_eq!(hash.unwrap().len(), 88);
    assert_eq!(refused["error"], "at most 1 MB");
    for node in [&a, &b] {
        // A gateway publishes its log's checkpoint within a moment of the entry.
        let mut tries = 0;
        let entry = loop {
            let log = log_of(&rt, &node.url);
            if let Some(e) = log
                .split('\n')
                .find(|e| e.contains("\"x_road_id\":\"call-too-large\""))
            {
                break e.to_string();
            }
            tries += 1;
            assert!(tries < 100, "{log}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            entry.contains(&format!("\"request_body_bytes\":{}", 24 << 20))
                && entry.contains("\"status\":413"),
            "{entry}"
        );
    }

    // A call about a person: the provider's gateway reports it to the directory, and the
    // person finds it under "Who used my data" there.
    let res = rt.block_on(async {
        http.get(format!("{}/r1/TW/GOV/B/api/benefits/cases", a.url))
            .header("x-road-client", "TW/GOV/A/app")
            .header("x-road-userid", format!("TW{resident}"))
            .header("x-road-pdu-purpose", "Benefit check")
            .header("x-road-pdu-legal-basis", "Social Assistance Act art. 4")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(res.status(), 200);
    let mut person = crate::support::Browser::at(&d.url);
    rt.block_on(person.sign_in(&resident, civitas_identity::DEMO_PASSWORD));
    let started = Instant::now();
    let entry = loop {
        let page = rt.block_on(person.get("/api/v1/me/data-usage"));
        assert_eq!(page.status, 200, "{}", page.body);
        let uses: Value = serde_json::from_str(&page.body).unwrap();
        if let Some(e) = uses
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["purpose"] == "Benefit check")
        {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never reported: {uses}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entry["client"], "TW/GOV/A/app");
    assert_eq!(entry["service"], "TW/GOV/B/api/benefits");
    assert_eq!(entry["provider_name"], "Agency B");
    assert_eq!(entry["legal_basis"], "Social Assistance Act art. 4");

    // Both gateways logged the call: as its client's and as its provider's gateway.
    let log_a = log_of(&rt, &a.url);
    let log_b = log_of(&rt, &b.url);
    assert!(
        log_a.contains("\"peer_gateway\":\"TW/GOV/B\"") && log_a.contains("\"side\":\"client\""),
        "{log_a}"
    );
    assert!(
        log_b.contains("\"peer_gateway\":\"TW/GOV/A\"") && log_b.contains("\"side\":\"provider\""),
        "{log_b}"
    );
    assert!(!log_b.contains("hello"), "bodies are not logged");
    // The provider's gateway keeps them in its encrypted archive instead.
    let archived: i64 = rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", gb.join("civitas.db").display());
        let db = civitas_store::Db::connect(&url, 1).await.unwrap();
        let n = civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM exchange_archive")
            .fetch_one(db.pool())
            .await
            .unwrap();
        db.close().await;
        n
    });
    assert!(archived >= 2, "{archived}");
    assert!(gb.join(civitas_exchange::archive::KEY_FILE).exists());

    // A message changed on the way: B refuses it, signed; the same message unchanged passes.
    let b_public: Value = serde_json::from_str(&std::fs::read_to_string(&keys_b).unwrap()).unwrap();
    let b_cert = base64::engine::general_purpose::STANDARD
        .decode(b_public["tls_certificate"].as_str().unwrap())
        .unwrap();
    let tampered = send_as_gateway(&rt, &a_keys, &b_cert, &b_peers, b"HELLO", b"hello").unwrap();
    assert_eq!(tampered.status, 500);
    assert_eq!(
        header(&tampered, "x-road-error"),
        Some("Server.ServerProxy.InvalidSignatureValue")
    );
    let intact = send_as_gateway(&rt, &a_keys, &b_cert, &b_peers, b"hello", b"hello").unwrap();
    assert_eq!(intact.status, 200);
    // A gateway whose certificate the configuration does not name gets no connection.
    let stranger = GatewayKeys::generate().unwrap();
    let refused = send_as_gateway(&rt, &stranger, &b_cert, &b_peers, b"hello", b"hello");
    assert!(refused.is_err(), "{refused:?}");

    // An answer changed on the way (here: B's keys, at B's address, answering with a
    // signature that is not over this call): A has logged the answer as it came, refuses
    // it, and logs the refusal.
    b.stop();
    let b_keys = GatewayKeys::load_or_create(&gb).unwrap();
    let _rogue = rogue_gateway(&b_keys, &b_peers);
    let (status, error, _) = rt.block_on(outcome(call(b"hello".to_vec())));
    assert_eq!(
        (status, error.as_str()),
        (500, "Server.ClientProxy.InvalidSignatureValue")
    );
    let started = Instant::now();
    loop {
        // The log as far as its last checkpoint, which follows within a second or so.
        let log_a = log_of(&rt, &a.url);
        if log_a.contains("exchange.answer_refused") {
            assert!(log_a.contains("InvalidSignatureValue"), "{log_a}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{log_a}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The right removed: refused.
    d.stop();
    operator(&dir, &["revoke", "TW/GOV/B/api/echo", "TW/GOV/A/app"]);
    let d = directory(&dir, &directory_listen);
    // A checks the right itself (B is no longer running).
    until_current(&rt, &d.url, &a_keys, &[&a]);
    let (status, error, body) = rt.block_on(outcome(call(b"x".to_vec())));
    assert_eq!(
        (status, error.as_str()),
        (500, "Server.ServerProxy.AccessDenied")
    );
    assert_eq!(body["type"], "Server.ServerProxy.AccessDenied");

    // B's keys revoked (the right given back): A no longer trusts B.
    d.stop();
    operator(&dir, &["grant", "TW/GOV/B/api/echo", "TW/GOV/A/app"]);
    operator(&dir, &["gateway", "revoke", "TW/GOV/B"]);
    let d = directory(&dir, &directory_listen);
    // B is no longer registered: the directory sends it nothing more.
    until_current(&rt, &d.url, &a_keys, &[&a]);
    let (status, error, _) = rt.block_on(outcome(call(b"x".to_vec())));
    assert_eq!(
        (status, error.as_str()),
        (500, "Server.ClientProxy.SslAuthenticationFailed")
    );

    // The directory goes away: A serves on with a stale configuration, raising the alarm,
    // until the grace period ends; then it refuses calls.
    d.stop();
    let list = || {
        rt.block_on(async {
            http.get(format!("{}/listClients", a.url))
                .send()
                .await
                .unwrap()
        })
    };
    let started = Instant::now();
    loop {
        let (status, ready) = get_json(&rt, &format!("{}/readyz", a.url));
        if ready["exchange"]["configuration"] == "stale" {
            assert_eq!(status, 200, "stale, within the grace period: still ready");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(list().status(), 200);
    let metrics = rt.block_on(async {
        reqwest::get(format!("{}/metrics", a.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("civitas_exchange_configuration_stale 1"),
        "{metrics}"
    );
    loop {
        let (status, ready) = get_json(&rt, &format!("{}/readyz", a.url));
        if status == 503 {
            assert!(
                ready["detail"].as_str().unwrap().contains("expired"),
                "{ready}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, error, _) = rt.block_on(outcome(list()));
    assert_eq!(
        (status, error.as_str()),
        (500, "Server.ClientProxy.OutdatedGlobalConf")
    );
    let (status, error, _) = rt.block_on(outcome(call(b"x".to_vec())));
    assert_eq!(
        (status, error.as_str()),
        (500, "Server.ClientProxy.OutdatedGlobalConf")
    );
    a.stop();
}

/// Listens at `address` with `keys` (B's, taken from its data folder) and answers every
/// call with B's frames around a signature that is not over that call.
fn rogue_gateway(keys: &GatewayKeys, address: &str) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    // It speaks HTTP/1.1 only, and says so: the calling gateway falls back to it.
    let mut config =
        civitas_exchange::tls::server_config(keys, std::sync::Arc::new(|_: &[u8]| true)).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = std::sync::Arc::new(config);
    let signing = keys.signing.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // The request: its head, then as many bytes as its length says.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let length = loop {
                let Ok(n) = tls.read(&mut buf) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    break Some(end + 4 + length);
                }
            };
            let Some(total) = length else { continue };
            while got.len() < total {
                match tls.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let body = br#"{"ok":true}"#;
            let mut answer = message::json_frame(
                HEAD,
                &ResponseHead {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    length: Some(body.len() as u64),
                },
            );
            answer.extend(message::frame(message::DATA, body));
            answer.extend(message::json_frame(
                END,
                &message::sign_request(&signing, "another call"),
            ));
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                message::CONTENT_TYPE,
                answer.len()
            )
            .into_bytes();
            out.extend(answer);
            let _ = tls.write_all(&out);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    })
}
