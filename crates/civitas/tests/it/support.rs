//! Starting real Civitas servers for tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use civitas_core::config::{Config, Layers};

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether a missing optional dependency (PostgreSQL, browser) fails the test.
pub fn require_all() -> bool {
    std::env::var("CIVITAS_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The folder a test's outside tool is installed in (named by `var`), or `None` (with a
/// note) when it is not set and the run does not require everything.
pub fn installed(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(dir) => Some(dir),
        Err(_) => {
            assert!(
                !require_all(),
                "{var} must be set when CIVITAS_TEST_REQUIRE_ALL=1"
            );
            eprintln!("skipped: set {var} to run {what}");
            None
        }
    }
}

/// A real S3-compatible server for a test: moto's (from PyPI, in the folder
/// `CIVITAS_TEST_S3` names), which checks each request's AWS signature against the access
/// keys it has issued. Stopped when dropped.
pub struct S3Server {
    child: std::process::Child,
    /// Its address, `http://127.0.0.1:port`.
    pub url: String,
    /// The bucket, made empty.
    pub bucket: String,
    /// An access key allowed everything in S3, and its secret.
    pub key: (String, String),
    /// Where moto is installed, for a test's own Python client (boto3).
    pub pythonpath: String,
}

impl S3Server {
    /// Starts the server with one bucket and one user, or `None` when moto is not installed.
    pub async fn start(bucket: &str) -> Option<S3Server> {
        let pythonpath = installed("CIVITAS_TEST_S3", "the S3 upload test (moto's S3 server)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", &pythonpath)
            // The setting-up below goes without signatures; every request after it is
            // checked against the keys moto issued.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto's server");
        let url = format!("http://127.0.0.1:{port}");
        let mut server = S3Server {
            child,
            url,
            bucket: bucket.to_string(),
            key: Default::default(),
            pythonpath,
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // moto tells the services apart by the scope named in the Authorization header.
        let unsigned = |service: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIASETUP/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
            )
        };
        let made = http
            .put(format!("{}/{bucket}", server.url))
            .header("authorization", unsigned("s3"))
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "bucket: {}", made.status());
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        let mut key_xml = String::new();
        for form in [
            vec![("Action", "CreateUser")],
            vec![("Action", "CreateAccessKey")],
            vec![
                ("Action", "PutUserPolicy"),
                ("PolicyName", "s3"),
                ("PolicyDocument", policy),
            ],
        ] {
            let mut form = form;
            form.extend([("UserName", "civitas"), ("Version", "2010-05-08")]);
            let r = http
                .post(format!("{}/", server.url))
                .header("authorization", unsigned("iam"))
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert!(status.is_success(), "{body}");
            if body.contains("<SecretAccessKey>") {
                key_xml = body;
            }
        }
        let between = |open: &str, close: &str| {
            let from = key_xml.find(open).unwrap() + open.len();
            key_xml[from..from + key_xml[from..].find(close).unwrap()].to_string()
        };
        server.key = (
            between("<AccessKeyId>", "</AccessKeyId>"),
            between("<SecretAccessKey>", "</SecretAccessKey>"),
        );
        Some(server)
    }

    /// The bucket's settings for Civitas, with this secret.
    pub fn settings(&self, secret: &str) -> civitas_core::config::S3Bucket {
        civitas_core::config::S3Bucket {
            bucket: self.bucket.clone(),
            endpoint: Some(self.url.clone()),
            region: "us-east-1".into(),
            access_key_id: Some(self.key.0.clone()),
            secret_access_key: Some(secret.to_string()),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch folder for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    civitas_store::scratch::folder(&format!("it-{tag}-{n}"))
}

/// A fresh, empty PostgreSQL database, or `None` (with a note) when no server is configured.
pub async fn postgres_database() -> Option<String> {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    civitas_store::scratch::test_postgres(&format!("it_{n}")).await
}

/// The configuration a test server uses: a scratch data folder, a small demo country with a
/// fixed seed and date, a random port and frequent checkpoints.
pub fn test_layers(data: &std::path::Path, database: Option<&str>) -> Layers {
    let mut flags = vec![
        ("data_dir", data.display().to_string(), "--data"),
        ("listen", "127.0.0.1:0".to_string(), "--listen"),
        ("demo.citizens", "600".to_string(), "--citizens"),
        ("demo.seed", "42".to_string(), "--seed"),
        ("demo.as_of", "2026-11-22".to_string(), "--as-of"),
        ("shutdown_grace_secs", "5".to_string(), "--grace"),
        ("max_connections", "4".to_string(), "--max-connections"),
        ("ledger.checkpoint_ms", "20".to_string(), "--checkpoint-ms"),
        // The encrypted body archive is on, so every exchange test goes through it.
        ("exchange.archive_days", "7".to_string(), "--archive-days"),
        (
            "identity.dev_mail_sink",
            "true".to_string(),
            "--dev-mail-sink",
        ),
    ];
    if let Some(url) = database {
        flags.push(("database", url.to_string(), "--database"));
    }
    Layers {
        file: None,
        env: Vec::new(),
        flags,
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub ledger: civitas_ledger::Ledger,
    pub db: civitas_store::Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Starts a seeded server on `engine`, or returns `None` when the engine is unavailable.
    pub async fn spawn(engine: Engine) -> Option<TestApp> {
        TestApp::spawn_with(engine, |_| {}).await
    }

    /// [`TestApp::spawn`], with the configuration changed by `adjust` first.
    pub async fn spawn_with(engine: Engine, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let data = scratch("app");
        let database = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(postgres_database().await?),
        };
        let resolved = test_layers(&data, database.as_deref()).resolve().unwrap();
        let mut config = resolved.config.clone();
        adjust(&mut config);
        let (running, _) = civitas::demo::prepare(&config, &resolved.entries, false, true)
            .await
            .expect("seed the demo country");
        let ledger = running.ledger.clone();
        let db = running.db.clone();
        // Start-up events (migrations, configuration, seeding) are in a published checkpoint
        // before the test begins.
        ledger
            .wait_for_checkpoint(ledger.durable_size() - 1)
            .await
            .unwrap();
        let listener = civitas::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        // Requests go to 127.0.0.1, but the site calls itself localhost: WebAuthn refuses IP
        // addresses as relying parties, and passkeys are on only with a name.
        config.public_url = Some(format!("http://localhost:{}", addr.port()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = config.clone();
        let task = tokio::spawn(async move {
            civitas::serve(listener, running, served, async {
                let _ = stopped.await;
            })
            .await
            .expect("server ran");
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Some(TestApp {
            base,
            client,
            config,
            ledger,
            db,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// GETs a path and returns the response.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// Defines each test twice, `sqlite::name` and `postgres::name`, with a running [`TestApp`].
#[macro_export]
macro_rules! on_both_engines {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $app = $crate::support::TestApp::spawn($crate::support::Engine::Sqlite).await.unwrap();
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($app) = $crate::support::TestApp::spawn($crate::support::Engine::Postgres).await else { return };
                    $body
                }
            )*
        }
    };
}

/// One test on each engine for each test function that starts its own server
/// (`async fn name(engine: Engine)`, for a configuration of its own): `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! each_engine {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Engine::Postgres).await;
                }
            )*
        }
    };
}

/// A browser without a browser: keeps cookies, does not follow redirects, and fills in the
/// anti-forgery token of the last page it read.
pub struct Browser {
    pub base: String,
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
    /// The `csrf` value of the last HTML page read.
    pub csrf: String,
}

/// A response as the [`Browser`] saw it.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser::at(&app.base)
    }

    /// A browser for a server started some other way (a `civitas` process).
    pub fn at(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Default::default(),
            csrf: String::new(),
        }
    }

    /// The value of a cookie the browser holds.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Sets or replaces a cookie by hand.
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_string(), value.to_string());
    }

    async fn finish(&mut self, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let set_cookies: Vec<String> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let body = res.text().await.unwrap();
        if let Some(token) = hidden_value(&body, "csrf") {
            self.csrf = token;
        }
        Page {
            status,
            location,
            body,
            set_cookies,
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    /// Posts a form with the current anti-forgery token added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf".into(), self.csrf.clone()));
        }
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    /// Posts a multipart form (text fields, and files as name, file name, type and bytes)
    /// with the current anti-forgery token added.
    pub async fn post_multipart(
        &mut self,
        path: &str,
        fields: &[(String, String)],
        files: &[(String, String, String, Vec<u8>)],
    ) -> Page {
        let boundary = "civitas-test-boundary-7MA4YWxkTrZu0gW";
        let mut body: Vec<u8> = Vec::new();
        let mut all = fields.to_vec();
        if !fields.iter().any(|(k, _)| k == "csrf") {
            all.push(("csrf".into(), self.csrf.clone()));
        }
        for (k, v) in &all {
            body.extend(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for (k, name, kind, bytes) in files {
            body.extend(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\nContent-Type: {kind}\r\n\r\n").as_bytes(),
            );
            body.extend(bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").as_bytes());
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    /// PUTs or POSTs raw bytes with a content type and the anti-forgery token in
    /// `X-CSRF-Token`; returns the status and the JSON answer.
    pub async fn send_json(
        &mut self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("x-csrf-token", self.csrf.clone())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let page = self.finish(res).await;
        let json = serde_json::from_str(&page.body).unwrap_or(serde_json::Value::Null);
        (page.status, json)
    }

    /// POSTs a JSON body with the anti-forgery token in `X-CSRF-Token` (`None`: the token of
    /// the last page read); returns the status and the JSON answer (`Null` when empty).
    pub async fn post_json(
        &mut self,
        path: &str,
        body: &serde_json::Value,
        csrf: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let token = csrf.map_or_else(|| self.csrf.clone(), str::to_string);
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("x-csrf-token", token)
            .json(body)
            .send()
            .await
            .unwrap();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let page = self.finish(res).await;
        if page.status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{}", page.body);
        }
        let json = serde_json::from_str(&page.body).unwrap_or(serde_json::Value::Null);
        (page.status, json)
    }

    /// Signs in with a password (no second factor), asserting it worked.
    pub async fn sign_in(&mut self, identifier: &str, password: &str) {
        self.get("/signin").await;
        let page = self
            .post(
                "/signin",
                &[
                    ("identifier", identifier),
                    ("password", password),
                    ("next", "/account"),
                ],
            )
            .await;
        assert_eq!(page.status, 303, "sign-in failed: {}", page.body);
        self.get("/account").await;
    }
}

/// The `value` of the first hidden input named `name` in an HTML page.
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

/// A mail server for the tests: it speaks enough SMTP for a real client (EHLO, MAIL, RCPT,
/// DATA, RSET, NOOP, QUIT), refuses recipients whose address begins `refuse` with 550, and
/// keeps each message it accepts (its recipients and raw text).
pub struct SmtpSink {
    pub url: String,
    pub messages: Received,
}

/// What an [`SmtpSink`] received: each message's recipients and raw text.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(Vec<String>, String)>>>;

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        SmtpSink::start_on("127.0.0.1:0").await
    }

    /// A sink on `addr` (a port a test chose before the server was there).
    pub async fn start_on(addr: &str) -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let messages: Received = Default::default();
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read);
                    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
                    let mut rcpt = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let answer: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink.test\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("HELO")
                            || upper.starts_with("MAIL")
                            || upper.starts_with("NOOP")
                        {
                            b"250 OK\r\n"
                        } else if upper.starts_with("RSET") {
                            rcpt.clear();
                            b"250 OK\r\n"
                        } else if upper.starts_with("RCPT") {
                            let to = line[line.find('<').map_or(0, |i| i + 1)..]
                                .trim_end()
                                .trim_end_matches('>')
                                .to_string();
                            if to.starts_with("refuse") {
                                b"550 5.1.1 no such user\r\n"
                            } else {
                                rcpt.push(to);
                                b"250 OK\r\n"
                            }
                        } else if upper.starts_with("DATA") {
                            let _ = write.write_all(b"354 go ahead\r\n").await;
                            let mut data = String::new();
                            loop {
                                let mut l = String::new();
                                if lines.read_line(&mut l).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == ".\r\n" {
                                    break;
                                }
                                data.push_str(&l);
                            }
                            kept.lock().unwrap().push((std::mem::take(&mut rcpt), data));
                            b"250 queued\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"502 not implemented\r\n"
                        };
                        if write.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SmtpSink { url, messages }
    }
}

/// One request an [`HttpRecorder`] received: its path, headers and body.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

/// An HTTP server on loopback standing for someone Civitas calls (a provider, a service's
/// callback receiver): it keeps every request and answers each with the next of its
/// answers (status and JSON body), the last one again once they run out.
pub struct HttpRecorder {
    pub url: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl HttpRecorder {
    pub async fn start(answers: Vec<(u16, &'static str)>) -> HttpRecorder {
        let requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>> = Default::default();
        let kept = requests.clone();
        let handler =
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                let answers = answers.clone();
                async move {
                    let mut all = kept.lock().unwrap();
                    all.push(Recorded {
                        path: uri.path().to_string(),
                        headers,
                        body: body.to_vec(),
                    });
                    let (status, body) = answers[(all.len() - 1).min(answers.len() - 1)];
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpRecorder { url, requests }
    }

    /// The requests so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (up to ten seconds) until `n` requests have come.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        for _ in 0..200 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{n} requests did not come; got {:?}", self.received());
    }
}
