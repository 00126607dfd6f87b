//! The exchange's gateway against X-Road's REST protocol text: the URL and its per-part
//! encoding, the headers passed on and added, the request hash, the errors, the access
//! rights, the reasons a call about a person must give, the metaservices, and the log.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use civitas_core::xroad::{ClientId, MemberId, ServiceId};
use civitas_exchange::protocol::{FILTERED, RequestHash};
use civitas_exchange::{Directory, Endpoint, NewService};
use serde_json::{Value, json};
use sha2::Digest;

use crate::on_both_engines;
use crate::support::TestApp;

/// A provider's information system: answers with what it received. `/missing` is its own
/// 404; it sets a `Server` header and an `X-Road-Service` header the gateway must replace.
/// `/too-large` answers 413 at once, before reading the body, and then reads and drops it,
/// as a web server's lingering close does (one that closed at once would have its unread
/// bytes answered with a reset, which can wipe out its answer before the caller reads it).
pub(crate) async fn provider() -> SocketAddr {
    async fn echo(
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let list: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let status = if uri.path().ends_with("/missing") {
            404
        } else {
            200
        };
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [
                ("server", "provider/1.0"),
                ("x-road-service", "FAKE/FAKE/FAKE/FAKE/FAKE"),
                ("x-powered-by", "echo"),
                ("set-cookie", "provider=1"),
            ],
            axum::Json(json!({
                "method": method.as_str(),
                "path_and_query": uri.path_and_query().map(|p| p.as_str()),
                "headers": list,
                "body_sha256": format!("{:x}", sha2::Sha256::digest(&body)),
                "body_len": body.len(),
            })),
        )
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new()
            .route(
                "/api/too-large",
                axum::routing::post(|headers: HeaderMap, body: axum::body::Body| async move {
                    tokio::spawn(async move {
                        use futures_util::StreamExt;
                        let mut unread = body.into_data_stream();
                        while let Some(Ok(_)) = unread.next().await {}
                    });
                    let list: Vec<(&str, String)> = headers
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    (
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        axum::Json(json!({ "error": "at most 1 MB", "headers": list })),
                    )
                }),
            )
            .fallback(echo)
            .layer(axum::extract::DefaultBodyLimit::disable());
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

const PERSONS: &str = r#"{"openapi":"3.0.3","info":{"title":"Persons","version":"1"},
  "servers":[{"url":"http://10.9.9.9/internal"}],
  "paths":{"/persons/{id}":{"get":{}},"/persons":{"get":{},"post":{}}}}"#;

struct Country {
    directory: Directory,
    portal: ClientId,
    persons: ServiceId,
    echo: ServiceId,
}

/// The private details of a logged call, which its entry commits to by their hash.
async fn details_of(
    app: &TestApp,
    e: &civitas_ledger::Event,
) -> civitas_exchange::tracker::CallDetails {
    civitas_exchange::tracker::CallDetails::find(
        &app.db,
        e.public["request_id"].as_str().unwrap(),
        e.payload_sha256.as_deref().unwrap(),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Two agencies: the Household Registration Office provides `persons` (about people,
/// described by OpenAPI) and `echo`; the Ministry of Digital Affairs' portal may read
/// persons and call echo. A third subsystem may only call from another network.
async fn country(app: &TestApp) -> Country {
    let provider = provider().await;
    let d = Directory::new(app.db.clone(), app.ledger.clone(), "TW");
    let hro = MemberId::new("TW", "TEST", "HRO").unwrap();
    let moda = MemberId::new("TW", "TEST", "MODA").unwrap();
    d.add_member(&hro, "Household Registration Office", "operator:test")
        .await
        .unwrap();
    d.add_member(&moda, "Ministry of Digital Affairs", "operator:test")
        .await
        .unwrap();
    let population = hro.subsystem("population").unwrap();
    let portal = moda.subsystem("portal").unwrap();
    let outsider = moda.subsystem("outsider").unwrap();
    d.add_subsystem(&population, "Population register", "127.0.0.1", "t")
        .await
        .unwrap();
    d.add_subsystem(&portal, "Portal", "127.0.0.0/8,::1", "t")
        .await
        .unwrap();
    d.add_subsystem(&outsider, "Outsider", "10.0.0.0/8", "t")
        .await
        .unwrap();
    let persons = population.service("persons").unwrap();
    let echo = population.service("echo").unwrap();
    let down = population.service("down").unwrap();
    let base = format!("http://{provider}/api");
    for (id, url, doc, personal) in [
        (&persons, base.clone(), Some(PERSONS), true),
        (&echo, base.clone(), None, false),
        (&down, "http://127.0.0.1:9".to_string(), None, false),
    ] {
        d.add_service(
            NewService {
                id: id.clone(),
                base_url: url,
                openapi: doc.map(str::to_string),
                endpoints: vec![Endpoint {
                    method: "*".into(),
                    path: "/".into(),
                }],
                personal,
            },
            "t",
        )
        .await
        .unwrap();
    }
    d.grant(&persons, &portal, "GET", "/persons", "t")
        .await
        .unwrap();
    d.grant(&echo, &portal, "*", "/", "t").await.unwrap();
    d.grant(&down, &portal, "*", "/", "t").await.unwrap();
    d.grant(&echo, &outsider, "*", "/", "t").await.unwrap();
    Country {
        directory: d,
        portal,
        persons,
        echo,
    }
}

/// Checks an error answer: its status, `X-Road-Error`, and `{type, message, detail}`.
async fn assert_fault(res: reqwest::Response, status: u16, kind: &str) -> String {
    assert_eq!(res.status(), status, "{kind}");
    assert_eq!(res.headers()["x-road-error"], kind);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], kind, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.len() == 36),
        "{body}"
    );
    body["message"].as_str().unwrap().to_string()
}

/// Sends `request` as it is and returns the whole answer.
async fn raw_request(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

on_both_engines! {
    async fn a_call_passes_through_with_x_roads_headers_and_request_hash(app) {
        let c = country(&app).await;
        let body = vec![7u8; 3_000_000];
        let path = format!("/r1/{}/a/b%2Fc?x=1&y=%20z", c.echo);
        let res = app
            .client
            .post(format!("{}{path}", app.base))
            .header("X-Road-Client", c.portal.to_string())
            .header("X-Road-Id", "my-call-1")
            .header("X-Road-Issue", "CASE-42")
            .header("User-Agent", "secret-client/9")
            .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
            .header("X-Road-Request-Hash", "forged")
            .header("X-Custom", "kept")
            .header("Connection", "keep-alive, X-Hop")
            .header("X-Hop", "only to the gateway")
            .header("Cookie", "civitas_session=stolen; theirs=1; civitas_csrf=x")
            .header("X-Road-Service", "TW/TEST/HRO/population/persons")
            .header("Content-Type", "application/octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers().clone();
        assert_eq!(h["x-road-id"], "my-call-1");
        assert_eq!(h["x-road-client"], "TW/TEST/MODA/portal");
        assert_eq!(h["x-road-service"], "TW/TEST/HRO/population/echo");
        assert_eq!(h["x-powered-by"], "echo", "other headers pass unchanged");
        assert!(h.get("server").is_none_or(|s| s != "provider/1.0"), "the provider's Server header is not passed");
        assert!(h.get("x-road-error").is_none());
        assert!(h.get("set-cookie").is_none(), "a provider sets no cookie for the gateway's site");
        let got: Value = res.json().await.unwrap();
        // The provider got the path under the service, still encoded, and the query as sent.
        assert_eq!(got["method"], "POST");
        assert_eq!(got["path_and_query"], "/api/a/b%2Fc?x=1&y=%20z");
        assert_eq!(got["body_len"], 3_000_000);
        assert_eq!(got["body_sha256"], format!("{:x}", sha2::Sha256::digest(&body)));
        let received: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
        let find = |n: &str| received.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(find("x-road-client"), Some("TW/TEST/MODA/portal"));
        assert_eq!(find("x-road-issue"), Some("CASE-42"));
        assert_eq!(find("x-custom"), Some("kept"));
        assert_eq!(find("x-hop"), None, "what Connection names is hop-by-hop");
        assert_eq!(find("x-road-request-id"), h["x-road-request-id"].to_str().ok());
        assert_ne!(find("user-agent"), Some("secret-client/9"));
        assert_eq!(find("proxy-authorization"), None);
        assert_eq!(find("cookie"), Some("theirs=1"), "Civitas's own cookies never leave");
        assert_eq!(find("x-road-service"), None, "a client does not name the service in a header");
        assert_ne!(find("x-road-request-hash"), Some("forged"));
        // The request hash: the header part as forwarded (what the provider received, less
        // the transport headers of the last hop), with the /r1 path, then the body.
        let forwarded = received.iter().filter(|(n, _)| !FILTERED.contains(&n.as_str()));
        let mut expected = RequestHash::new("POST", &path, forwarded.map(|(n, v)| (n.as_str(), v.as_bytes())));
        expected.body(&body);
        assert_eq!(h["x-road-request-hash"], expected.finish().as_str());

        // The archive (on in the tests) keeps the bodies encrypted: the request's first MiB
        // and the answer, readable only with the key in the data folder.
        let request_id = h["x-road-request-id"].to_str().unwrap().to_string();
        let key = civitas_exchange::archive::ArchiveKey::load_or_create(&app.config.data_dir).unwrap();
        let mut sealed = None;
        for _ in 0..100 {
            sealed = civitas_exchange::archive::sealed(&app.db, &request_id).await.unwrap();
            if sealed.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let sealed = sealed.expect("the call's bodies are archived");
        assert!(!String::from_utf8_lossy(&sealed).contains("body_len"), "encrypted");
        let record = key.open(&request_id, &sealed).unwrap();
        assert_eq!(record.status, 200);
        assert!(record.request_cut, "3 MB: the first MiB is kept");
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(&record.request_body).unwrap(), vec![7u8; 1 << 20]);
        let answer = String::from_utf8(b64.decode(&record.response_body).unwrap()).unwrap();
        assert!(answer.contains("\"body_len\":3000000"), "{answer}");

        // A provider that answers before reading a large body: the gateway reads the rest,
        // so the request hash and the log cover the whole request.
        let large = vec![7u8; 24 << 20];
        let early = format!("/r1/{}/too-large", c.echo);
        let res = app
            .client
            .post(format!("{}{early}", app.base))
            .header("X-Road-Client", c.portal.to_string())
            .header("X-Road-Id", "my-call-2")
            .header("Content-Type", "application/octet-stream")
            .body(large.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413);
        let early_id = res.headers()["x-road-request-id"].to_str().unwrap().to_string();
        let early_hash = res.headers()["x-road-request-hash"].to_str().unwrap().to_string();
        let refused: Value = res.json().await.unwrap();
        let received: Vec<(String, String)> = serde_json::from_value(refused["headers"].clone()).unwrap();
        let forwarded = received.iter().filter(|(n, _)| !FILTERED.contains(&n.as_str()));
        let mut expected = RequestHash::new("POST", &early, forwarded.map(|(n, v)| (n.as_str(), v.as_bytes())));
        expected.body(&large);
        // Logged before the answer is released, as the archive is on.
        let logged = app.ledger.latest_of_kind("exchange.call").await.unwrap().unwrap().1;
        assert_eq!(logged.public["request_id"], early_id.as_str());
        assert_eq!(logged.public["request_body_bytes"], 24 << 20);
        assert_eq!(logged.public["status"], 413);
        assert_eq!(early_hash, expected.finish());

        // Without X-Road-Id the gateway makes one, INSTANCE-UUID; a provider's own error
        // passes through without X-Road-Error.
        let res = app
            .client
            .get(format!("{}/r1/{}/missing", app.base, c.echo))
            .header("X-Road-Client", c.portal.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert!(res.headers().get("x-road-error").is_none());
        let id = res.headers()["x-road-id"].to_str().unwrap();
        assert!(id.starts_with("TW-") && id.len() == 39, "{id}");
        let config = app.config.clone();
        app.stop().await;

        // The operator reads an archived call from the command line, on a machine of their
        // own with the archive's key; the reading is logged. (On PostgreSQL the command's
        // ledger waits for a sequencer, and the stopped test server's lock goes only when
        // this test process ends: the command runs on SQLite here.)
        if config.database.is_some() {
            return;
        }
        let operator = crate::support::scratch("archive-reader");
        std::fs::copy(
            config.data_dir.join(civitas_exchange::archive::KEY_FILE),
            operator.join(civitas_exchange::archive::KEY_FILE),
        )
        .unwrap();
        let mut show = crate::cli::civitas();
        show.arg("--data").arg(&operator).args(["--database", &config.database_url()]);
        let out = crate::cli::run_ok(show.args(["exchange", "archive", "show", &request_id]));
        assert!(out.contains("answered 200") && out.contains("\"body_len\":3000000"), "{out}");
        let db = civitas_store::Db::connect(&config.database_url(), 1).await.unwrap();
        let reads: i64 = civitas_store::sqlx::query_scalar(
            "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'exchange.archive_read'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(reads, 1);
        // Past its retention, a record is purged.
        let later = civitas_ledger::event::now_ms() + 8 * 86_400_000;
        assert!(civitas_exchange::archive::purge(&db, later).await.unwrap() >= 1);
        assert!(civitas_exchange::archive::sealed(&db, &request_id).await.unwrap().is_none());
        db.close().await;
    }

    async fn the_gateway_refuses_what_the_protocol_and_the_directory_do_not_allow(app) {
        let c = country(&app).await;
        let call = |path: String, client: Option<String>| {
            let mut r = app.client.get(format!("{}{path}", app.base));
            if let Some(cl) = client {
                r = r.header("X-Road-Client", cl);
            }
            r.send()
        };
        let portal = Some(c.portal.to_string());
        let echo = c.echo.to_string();
        assert_fault(call(format!("/r1/{echo}"), None).await.unwrap(), 400, "Client.InvalidClientIdentifier").await;
        assert_fault(call(format!("/r1/{echo}"), Some("TW/GOV".into())).await.unwrap(), 400, "Client.InvalidClientIdentifier").await;
        assert_fault(call("/r1/TW/TEST/HRO".into(), portal.clone()).await.unwrap(), 400, "Client.BadRequest").await;
        // An encoded dot segment (sent raw: HTTP clients would resolve it before sending).
        let raw = raw_request(&app.base, &format!(
            "GET /r1/{echo}/a/%2E%2E/b HTTP/1.1\r\nHost: x\r\nX-Road-Client: {}\r\nConnection: close\r\n\r\n",
            c.portal
        ))
        .await;
        assert!(raw.starts_with("HTTP/1.1 400") && raw.contains("x-road-error: Client.BadRequest"), "{raw}");
        for sneaky in ["..%2Fb", "..;x", "%2E%2E%5Cb", "a%2F..%2Fb"] {
            let raw = raw_request(&app.base, &format!(
                "GET /r1/{echo}/{sneaky} HTTP/1.1\r\nHost: x\r\nX-Road-Client: {}\r\nConnection: close\r\n\r\n",
                c.portal
            ))
            .await;
            assert!(raw.starts_with("HTTP/1.1 400"), "{sneaky}: {raw}");
        }
        // X-Road's headers come once: a second X-Road-Client could be read by the provider.
        let twice = app.client.get(format!("{}/r1/{echo}/x", app.base))
            .header("X-Road-Client", c.portal.to_string())
            .header("X-Road-Client", "TW/TEST/MODA/outsider")
            .send().await.unwrap();
        assert_fault(twice, 400, "Client.BadRequest").await;
        assert_fault(call("/r1/TW/TEST/HRO/pop_ulation/echo".into(), portal.clone()).await.unwrap(), 400, "Client.BadRequest").await;
        let m = assert_fault(call(format!("/r1/{echo}"), Some("TW/TEST/MODA/nobody".into())).await.unwrap(), 500, "Server.ClientProxy.UnknownMember").await;
        assert!(m.contains("TW/TEST/MODA/nobody"), "{m}");
        // A subsystem whose information system is elsewhere cannot call from here.
        assert_fault(call(format!("/r1/{echo}"), Some("TW/TEST/MODA/outsider".into())).await.unwrap(), 500, "Server.ClientProxy.AccessDenied").await;
        assert_fault(call("/r1/TW/TEST/HRO/population/nothing".into(), portal.clone()).await.unwrap(), 500, "Server.ServerProxy.UnknownService").await;
        assert_fault(call("/r1/EE/GOV/HRO/population/echo".into(), portal.clone()).await.unwrap(), 500, "Server.ClientProxy.UnknownMember").await;
        // Rights: GET under /persons only.
        let persons = c.persons.to_string();
        let denied = app.client.post(format!("{}/r1/{persons}/persons", app.base))
            .header("X-Road-Client", c.portal.to_string()).send().await.unwrap();
        assert_fault(denied, 500, "Server.ServerProxy.AccessDenied").await;
        assert_fault(call(format!("/r1/{persons}/admin"), portal.clone()).await.unwrap(), 500, "Server.ServerProxy.AccessDenied").await;
        // A provider that does not answer.
        assert_fault(call("/r1/TW/TEST/HRO/population/down".into(), portal.clone()).await.unwrap(), 500, "Server.ServerProxy.NetworkError").await;
        // A revoked right stops the very next call.
        assert_eq!(call(format!("/r1/{echo}/x"), portal.clone()).await.unwrap().status(), 200);
        c.directory.revoke(&c.echo, &c.portal, "*", "/", "t").await.unwrap();
        assert_fault(call(format!("/r1/{echo}/x"), portal.clone()).await.unwrap(), 500, "Server.ServerProxy.AccessDenied").await;
        app.stop().await;
    }

    async fn a_call_about_a_person_needs_a_reason_and_the_person_finds_it_in_the_log(app) {
        let c = country(&app).await;
        let person = civitas_registry::demo_people(&app.db).await.unwrap()[0].national_id.clone();
        let url = format!("{}/r1/{}/persons/{person}", app.base, c.persons);
        let with = |pairs: &[(&str, &str)]| {
            let mut r = app.client.get(&url).header("X-Road-Client", c.portal.to_string());
            for (k, v) in pairs {
                r = r.header(*k, *v);
            }
            r.send()
        };
        let user = format!("TW{person}");
        let m = assert_fault(with(&[]).await.unwrap(), 400, "Client.MissingHeader").await;
        // The person must be someone the register knows: every call about a person is seen.
        let m2 = assert_fault(
            with(&[("X-Road-UserId", "TWA000000000"), ("X-Road-PDU-Purpose", "x"), ("X-Road-PDU-Legal-Basis", "y")]).await.unwrap(),
            400,
            "Client.BadRequest",
        )
        .await;
        assert!(m2.contains("population register"), "{m2}");
        assert!(m.contains("X-Road-UserId") && m.contains("X-Road-PDU-Purpose") && m.contains("X-Road-PDU-Legal-Basis"), "{m}");
        let m = assert_fault(
            with(&[("X-Road-UserId", &user), ("X-Road-PDU-Purpose", "x"), ("X-Road-PDU-Legal-Basis", "consent")]).await.unwrap(),
            400,
            "Client.MissingHeader",
        )
        .await;
        assert!(m.contains("X-Road-PDU-Consent-Reference"), "{m}");
        let res = with(&[
            ("X-Road-UserId", &user),
            ("X-Road-PDU-Purpose", "Childbirth%20allowance"),
            ("X-Road-PDU-Legal-Basis", "Household Registration Act art. 65"),
        ])
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let x_road_id = res.headers()["x-road-id"].to_str().unwrap().to_string();

        // The call is in the ledger, about the person, with its reason, and without the
        // person's number in plain text.
        let p = civitas_registry::person_by_national_id(&app.db, &person).await.unwrap().unwrap();
        let tag = app.ledger.subject_secret(&format!("person:{}", p.id)).await.unwrap().tag();
        let events = app.ledger.subject_events(tag).await.unwrap();
        let (idx, e) = events.iter().find(|(_, e)| e.kind == "exchange.call").expect("the call is logged about the person");
        assert_eq!(e.public["x_road_id"], x_road_id.as_str());
        // The caller's own words are not in the public log: a private row its hash commits to.
        assert!(e.public.get("purpose").is_none() && e.public.get("legal_basis").is_none(), "{:?}", e.public);
        let details = details_of(&app, e).await;
        assert_eq!(details.purpose, "Childbirth allowance");
        assert_eq!(details.legal_basis, "Household Registration Act art. 65");
        assert_eq!(e.actor, "xroad:TW/TEST/MODA/portal");
        assert_eq!(e.object, "exchange/service/TW/TEST/HRO/population/persons");
        let stored = serde_json::to_string(&e.public).unwrap();
        assert!(!stored.contains(&person), "{stored}");
        let key = app.ledger.verifier_key().to_string();
        app.ledger.wait_for_checkpoint(*idx).await.unwrap();

        // The person sees it: "Who used my data", the API, and a proof that verifies.
        let mut b = crate::support::Browser::new(&app);
        assert_eq!(b.get("/api/v1/me/data-usage").await.status, 401);
        b.sign_in(&person, civitas_identity::DEMO_PASSWORD).await;
        let page = b.get("/api/v1/me/data-usage").await;
        assert_eq!(page.status, 200);
        let uses: Value = serde_json::from_str(&page.body).unwrap();
        let first = &uses[0];
        assert_eq!(first["index"], *idx);
        assert_eq!(first["client"], "TW/TEST/MODA/portal");
        assert_eq!(first["client_name"], "Ministry of Digital Affairs");
        assert_eq!(first["provider_name"], "Household Registration Office");
        assert_eq!(first["purpose"], "Childbirth allowance");
        assert_eq!(first["x_road_id"], x_road_id.as_str());
        let html = b.get("/account/data-usage").await;
        assert_eq!(html.status, 200);
        for want in ["Childbirth allowance", "Household Registration Act art. 65", "Ministry of Digital Affairs"] {
            assert!(html.body.contains(want), "{want}");
        }
        let proof = b.get(first["proof"].as_str().unwrap()).await;
        assert_eq!(proof.status, 200);
        let bundle = civitas_ledger::ProofBundle::parse(&proof.body).unwrap();
        bundle.verify(&key).unwrap();
        let logged = civitas_ledger::Event::decode(bundle.extra.as_ref().unwrap()).unwrap();
        assert_eq!(logged.public["x_road_id"], x_road_id.as_str());
        // Someone else's entry (the log's first) is not theirs to fetch.
        assert_eq!(b.get("/account/data-usage/0/proof").await.status, 404);

        // Someone acting for the person names themselves: only a mandate in force lets them,
        // and the person sees under whose mandate the call was made.
        let helper = civitas_registry::demo_people(&app.db).await.unwrap()[1].clone();
        let holder = format!("TW{}", helper.national_id);
        let acting = [
            ("X-Road-UserId", user.as_str()),
            ("X-Road-PDU-Purpose", "Tax return"),
            ("X-Road-PDU-Legal-Basis", "Mandate"),
            ("X-Road-PDU-Mandate-Holder", holder.as_str()),
        ];
        let m = assert_fault(with(&acting).await.unwrap(), 400, "Client.BadRequest").await;
        assert!(m.contains("holds no mandate"), "{m}");
        let helper_id = civitas_registry::person_by_national_id(&app.db, &helper.national_id).await.unwrap().unwrap().id;
        let today = civitas_identity::Identity::today();
        civitas_store::sqlx::query(
            "INSERT INTO mandates (id, grantor_person_id, grantee_person_id, scope, valid_from, valid_until, note, created_ms) VALUES ('m-test', $1, $2, 'tax', $3, $3, '', 0)",
        )
        .bind(p.id)
        .bind(helper_id)
        .bind(&today)
        .execute(app.db.pool())
        .await
        .unwrap();
        assert_eq!(with(&acting).await.unwrap().status(), 200);
        let events = app.ledger.subject_events(tag).await.unwrap();
        let (_, e) = events.iter().rev().find(|(_, e)| e.kind == "exchange.call").unwrap();
        assert_eq!(e.public["mandate"], "granted");
        // The holder's tag is kept privately: in public it would link two people's entries.
        assert!(e.public.get("mandate_holder").is_none());
        let helper_tag = app.ledger.subject_secret(&format!("person:{helper_id}")).await.unwrap().tag();
        let details = details_of(&app, e).await;
        assert_eq!(details.mandate_holder, Some(helper_tag.to_string()));
        let uses: Value = serde_json::from_str(&b.get("/api/v1/me/data-usage").await.body).unwrap();
        assert_eq!(uses[0]["purpose"], "Tax return");
        assert_eq!(uses[0]["mandate"], "granted");
        assert_eq!(uses[0]["mandate_holder"], helper.name_zh.as_str());
        assert!(b.get("/account/data-usage").await.body.contains(&helper.name_zh));
        app.stop().await;
    }

    async fn a_deferral_is_allowed_by_law_only_time_limited_and_shown_when_it_ends(app) {
        use time::format_description::well_known::Rfc3339;
        let c = country(&app).await;
        let person = civitas_registry::demo_people(&app.db).await.unwrap()[0].national_id.clone();
        let call = |extra: Vec<(&'static str, String)>| {
            let mut r = app
                .client
                .get(format!("{}/r1/{}/persons/{person}", app.base, c.persons))
                .header("X-Road-Client", c.portal.to_string())
                .header("X-Road-UserId", format!("TW{person}"))
                .header("X-Road-PDU-Purpose", "Investigation")
                .header("X-Road-PDU-Legal-Basis", "Code of Criminal Procedure art. 245");
            for (k, v) in extra {
                r = r.header(k, v);
            }
            r.send()
        };
        let at = |secs: i64| (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs)).format(&Rfc3339).unwrap();
        let hidden = |until: String| vec![
            ("X-Road-PDU-Hidden", "true".to_string()),
            ("X-Road-PDU-Hidden-Reason", "Ongoing%20investigation%20123".to_string()),
            ("X-Road-PDU-Hidden-Until", until),
        ];
        // Only a subsystem the law allows may defer.
        let m = assert_fault(call(hidden(at(60))).await.unwrap(), 500, "Server.ServerProxy.AccessDenied").await;
        assert!(m.contains("may not defer"), "{m}");
        c.directory.set_may_defer(&c.portal, true, "operator:test").await.unwrap();
        // It must say why and until when: in the future, within the limit.
        assert_fault(call(vec![("X-Road-PDU-Hidden", "true".into())]).await.unwrap(), 400, "Client.BadRequest").await;
        assert_fault(call(hidden(at(-5))).await.unwrap(), 400, "Client.BadRequest").await;
        assert_fault(call(hidden(at(400 * 86_400))).await.unwrap(), 400, "Client.BadRequest").await;
        assert_fault(call(hidden("next week".into())).await.unwrap(), 400, "Client.BadRequest").await;
        // Deferred for two seconds: logged at once, out of the person's sight until then.
        assert_eq!(call(hidden(at(2))).await.unwrap().status(), 200);
        let mut b = crate::support::Browser::new(&app);
        b.sign_in(&person, civitas_identity::DEMO_PASSWORD).await;
        let seen = |body: &str| serde_json::from_str::<Value>(body).unwrap().as_array().unwrap().len();
        assert_eq!(seen(&b.get("/api/v1/me/data-usage").await.body), 0);
        // Nor can the person find it in the public log by their own tag (which their proof
        // bundles show them): it is logged under a subject of its own.
        let p = civitas_registry::person_by_national_id(&app.db, &person).await.unwrap().unwrap();
        let tag = app.ledger.subject_secret(&format!("person:{}", p.id)).await.unwrap().tag();
        assert!(
            app.ledger.subject_events(tag).await.unwrap().iter().all(|(_, e)| e.public.get("deferred_until").is_none()),
            "a deferred call is not under the person's tag"
        );
        let deferred = app.ledger.latest_of_kind("exchange.call").await.unwrap().unwrap().1;
        assert!(deferred.public.get("deferred_until").is_some() && deferred.subject.is_some());
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        let uses: Value = serde_json::from_str(&b.get("/api/v1/me/data-usage").await.body).unwrap();
        assert_eq!(uses.as_array().unwrap().len(), 1);
        assert_eq!(uses[0]["deferral_reason"], "Ongoing investigation 123");
        assert!(uses[0]["deferred_until"].as_str().is_some());
        let page = b.get("/account/data-usage").await.body;
        assert!(page.contains("Ongoing investigation 123"), "the page says it was deferred and why");
        app.stop().await;
    }

    async fn the_demo_countrys_base_registries_answer_through_the_exchange(app) {
        let person = civitas_registry::demo_people(&app.db).await.unwrap()[0].national_id.clone();
        let ask = |client: &'static str, path: String, reason: bool| {
            let mut r = app
                .client
                .get(format!("{}/r1/TW/GOV/{path}", app.base))
                .header("X-Road-Client", client);
            if reason {
                r = r
                    .header("X-Road-UserId", format!("TW{person}"))
                    .header("X-Road-PDU-Purpose", "My data")
                    .header("X-Road-PDU-Legal-Basis", "The person's own request");
            }
            r.send()
        };
        let portal = "TW/GOV/MODA/portal";
        // The population register: the record, the household, the children.
        let res = ask(portal, format!("HRO/registry/population/persons/{person}"), true).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-road-service"], "TW/GOV/HRO/registry/population");
        let record: Value = res.json().await.unwrap();
        assert_eq!(record["national_id"], person.as_str());
        assert!(record["family_name"].as_str().is_some_and(|n| !n.is_empty()), "{record}");
        let household: Value = ask(portal, format!("HRO/registry/population/persons/{person}/household"), true)
            .await.unwrap().json().await.unwrap();
        let household = household.as_array().unwrap();
        assert!(household.iter().any(|m| m["national_id"] == person.as_str()), "{household:?}");
        assert_eq!(household[0]["role"], "head");
        // Every registry answers the portal, each with its own record shape.
        for path in [
            format!("THB/registry/vehicles/persons/{person}/licences"),
            format!("THB/registry/vehicles/persons/{person}/vehicles"),
            format!("DLA/registry/land/persons/{person}/parcels"),
            format!("DLA/registry/land/persons/{person}/buildings"),
            format!("TXA/registry/tax/persons/{person}/income-tax"),
            format!("MOE/registry/education/persons/{person}/enrolments"),
        ] {
            let res = ask(portal, path.clone(), true).await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            assert!(res.json::<Value>().await.unwrap().is_array(), "{path}");
        }
        let res = ask(portal, format!("NHIA/registry/insurance/persons/{person}"), true).await.unwrap();
        assert!(matches!(res.status().as_u16(), 200 | 404), "insured or not: {}", res.status());
        // The business register is not about people: no reason needed.
        let ubn: String = civitas_store::sqlx::query_scalar("SELECT ubn FROM businesses ORDER BY ubn LIMIT 1")
            .fetch_one(app.db.pool()).await.unwrap();
        let b: Value = ask(portal, format!("TXA/registry/businesses/businesses/{ubn}"), false).await.unwrap().json().await.unwrap();
        assert_eq!(b["ubn"], ubn.as_str());
        // The registry's own errors pass through as its answers, without X-Road-Error.
        let bad = ask(portal, "TXA/registry/businesses/businesses/1234".into(), false).await.unwrap();
        assert_eq!(bad.status(), 400);
        assert!(bad.headers().get("x-road-error").is_none());
        // A read about a person is about the person the call names.
        let other = civitas_registry::demo_people(&app.db).await.unwrap()[1].national_id.clone();
        let m = assert_fault(ask(portal, format!("HRO/registry/population/persons/{other}"), true).await.unwrap(), 400, "Client.BadRequest").await;
        assert!(m.contains("asks about another"), "{m}");
        // Everyone in the household answer finds the call in their own view.
        let p = civitas_registry::person_by_national_id(&app.db, &person).await.unwrap().unwrap();
        let member: Option<String> = civitas_store::sqlx::query_scalar(
            "SELECT national_id FROM persons WHERE household_id = (SELECT household_id FROM persons WHERE id = $1) AND id <> $1 LIMIT 1",
        )
        .bind(p.id)
        .fetch_optional(app.db.pool())
        .await
        .unwrap();
        if let Some(member) = member {
            let m = civitas_registry::person_by_national_id(&app.db, &member).await.unwrap().unwrap();
            let tag = app.ledger.subject_secret(&format!("person:{}", m.id)).await.unwrap().tag();
            let events = app.ledger.subject_events(tag).await.unwrap();
            assert!(
                events.iter().any(|(_, e)| e.kind == "exchange.call" && e.public["in_answer_of"] == "another person"),
                "the household member sees the call"
            );
        }
        let missing = ask(portal, "HRO/registry/population/nothing/here".into(), true).await.unwrap();
        assert_eq!(missing.status(), 404);
        // Rights as the demo sets them: welfare reads people, not the land register.
        assert_eq!(ask("TW/GOV/DSA/services", format!("HRO/registry/population/persons/{person}"), true).await.unwrap().status(), 200);
        assert_fault(ask("TW/GOV/DSA/services", format!("DLA/registry/land/persons/{person}/parcels"), true).await.unwrap(), 500, "Server.ServerProxy.AccessDenied").await;
        // Each registry documents its API.
        let doc: Value = ask(portal, "HRO/registry/getOpenAPI?serviceCode=population".into(), false).await.unwrap().json().await.unwrap();
        assert!(doc["paths"]["/persons/{id}/household"]["get"].is_object(), "{doc}");
        app.stop().await;
    }

    async fn metaservices_list_clients_methods_allowed_methods_and_openapi(app) {
        let c = country(&app).await;
        let clients: Value = app.get("/listClients").await.json().await.unwrap();
        let ids: Vec<String> = clients["member"].as_array().unwrap().iter().map(|m| {
            let id = &m["id"];
            format!("{} {}/{}/{}{}", id["object_type"].as_str().unwrap(), id["xroad_instance"].as_str().unwrap(),
                id["member_class"].as_str().unwrap(), id["member_code"].as_str().unwrap(),
                id["subsystem_code"].as_str().map(|s| format!("/{s}")).unwrap_or_default())
        }).collect();
        for want in ["MEMBER TW/TEST/HRO", "MEMBER TW/TEST/MODA", "SUBSYSTEM TW/TEST/HRO/population", "SUBSYSTEM TW/TEST/MODA/portal"] {
            assert!(ids.iter().any(|i| i == want), "{want} in {ids:?}");
        }
        let other: Value = app.get("/listClients?xRoadInstance=EE").await.json().await.unwrap();
        assert_eq!(other["member"].as_array().unwrap().len(), 0);

        let meta = |code: &str| {
            app.client
                .get(format!("{}/r1/TW/TEST/HRO/population/{code}", app.base))
                .header("X-Road-Client", c.portal.to_string())
                .send()
        };
        let res = meta("listMethods").await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("x-road-request-hash").is_some());
        let all: Value = res.json().await.unwrap();
        let codes: Vec<&str> = all["service"].as_array().unwrap().iter().map(|s| s["service_code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["down", "echo", "persons"]);
        let persons = all["service"].as_array().unwrap().iter().find(|s| s["service_code"] == "persons").unwrap();
        assert_eq!(persons["service_type"], "OPENAPI");
        assert_eq!(persons["object_type"], "SERVICE");
        assert_eq!(persons["endpoint_list"], json!([
            {"method": "GET", "path": "/persons"}, {"method": "POST", "path": "/persons"}, {"method": "GET", "path": "/persons/*"}
        ]));
        // allowedMethods: only what the portal's rights open.
        c.directory.revoke(&c.echo, &c.portal, "*", "/", "t").await.unwrap();
        let allowed: Value = meta("allowedMethods").await.unwrap().json().await.unwrap();
        let allowed = allowed["service"].as_array().unwrap();
        let codes: Vec<&str> = allowed.iter().map(|s| s["service_code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["down", "persons"]);
        assert_eq!(allowed[1]["endpoint_list"], json!([
            {"method": "GET", "path": "/persons"}, {"method": "GET", "path": "/persons/*"}
        ]));
        // getOpenAPI: the document, without the provider's own addresses.
        let doc: Value = meta("getOpenAPI?serviceCode=persons").await.unwrap().json().await.unwrap();
        assert_eq!(doc["info"]["title"], "Persons");
        assert!(doc.get("servers").is_none(), "{doc}");
        assert_fault(meta("getOpenAPI").await.unwrap(), 500, "Server.ServerProxy.InvalidRequest").await;
        assert_fault(meta("getOpenAPI?serviceCode=echo").await.unwrap(), 500, "Server.ServerProxy.InternalError").await;
        app.stop().await;
    }
}

#[test]
fn the_operator_manages_the_directory_and_rights_from_the_cli() {
    use crate::cli::{assert_one_sentence_failure, civitas, run_ok};
    let data = crate::support::scratch("exchange-cli");
    let d = ["--data".to_string(), data.display().to_string()];
    let x = |args: &[&str]| {
        let mut c = civitas();
        c.args(&d).arg("exchange").args(args);
        c
    };
    run_ok(civitas().arg("migrate").args(&d));
    let doc = data.join("persons.json");
    std::fs::write(&doc, PERSONS).unwrap();
    assert!(
        run_ok(&mut x(&[
            "member",
            "add",
            "TW/GOV/HRO",
            "--name",
            "Household Registration Office"
        ]))
        .contains("Added member TW/GOV/HRO")
    );
    run_ok(&mut x(&[
        "member",
        "add",
        "TW/GOV/MODA",
        "--name",
        "Ministry of Digital Affairs",
    ]));
    let out = run_ok(&mut x(&[
        "subsystem",
        "add",
        "TW/GOV/HRO/population",
        "--name",
        "Population register",
    ]));
    assert!(
        out.contains("127.0.0.0/8,::1/128"),
        "loopback by default: {out}"
    );
    run_ok(&mut x(&[
        "subsystem",
        "add",
        "TW/GOV/MODA/portal",
        "--networks",
        "10.0.0.0/8",
    ]));
    assert!(
        run_ok(&mut x(&[
            "subsystem",
            "may-defer",
            "TW/GOV/MODA/portal",
            "yes"
        ]))
        .contains("may now defer")
    );
    let out = run_ok(&mut x(&[
        "service",
        "add",
        "TW/GOV/HRO/population/persons",
        "--url",
        "http://127.0.0.1:7000/api",
        "--openapi",
        doc.to_str().unwrap(),
        "--personal",
    ]));
    assert!(
        out.contains("OPENAPI service")
            && out.contains("3 endpoints")
            && out.contains("about people"),
        "{out}"
    );
    let out = run_ok(&mut x(&[
        "service",
        "add",
        "TW/GOV/HRO/population/echo",
        "--url",
        "http://127.0.0.1:7000/echo",
        "--endpoint",
        "GET /ping",
        "--endpoint",
        "POST /items",
    ]));
    assert!(
        out.contains("REST service") && out.contains("2 endpoints"),
        "{out}"
    );
    run_ok(&mut x(&[
        "grant",
        "TW/GOV/HRO/population/persons",
        "TW/GOV/MODA/portal",
        "--method",
        "GET",
        "--path",
        "/persons",
    ]));
    let listed = run_ok(&mut x(&["list"]));
    for want in [
        "member TW/GOV/HRO  Household Registration Office",
        "subsystem TW/GOV/MODA/portal  portal  (calls from 10.0.0.0/8)  may defer",
        "service TW/GOV/HRO/population/persons  OPENAPI  http://127.0.0.1:7000/api  personal",
        "GET /persons/*",
        "may call GET /persons of TW/GOV/HRO/population/persons",
    ] {
        assert!(listed.contains(want), "{want} in:\n{listed}");
    }
    // Mistakes get one sentence and a failure; nothing already accepted is lost.
    assert_one_sentence_failure(
        &mut x(&["member", "add", "TW/GOV/HRO", "--name", "again"]),
        "exists already",
    );
    assert_one_sentence_failure(
        &mut x(&["member", "add", "TW/GOV/a_b", "--name", "x"]),
        "'_'",
    );
    assert_one_sentence_failure(
        &mut x(&["member", "add", "EE/GOV/X", "--name", "x"]),
        "not this exchange's instance",
    );
    assert_one_sentence_failure(
        &mut x(&["subsystem", "add", "TW/GOV/NOBODY/s"]),
        "no member TW/GOV/NOBODY",
    );
    assert_one_sentence_failure(
        &mut x(&["subsystem", "add", "TW/GOV/HRO/x", "--networks", "anywhere"]),
        "not an address range",
    );
    assert_one_sentence_failure(
        &mut x(&[
            "service",
            "add",
            "TW/GOV/HRO/population/more",
            "--url",
            "ftp://x",
        ]),
        "not an http or https address",
    );
    assert_one_sentence_failure(
        &mut x(&[
            "service",
            "add",
            "TW/GOV/HRO/population/more",
            "--url",
            "http://x",
            "--endpoint",
            "GET",
        ]),
        "give a method and a path",
    );
    assert_one_sentence_failure(
        &mut x(&[
            "grant",
            "TW/GOV/HRO/population/persons",
            "TW/GOV/MODA/portal",
            "--method",
            "FETCH",
        ]),
        "not an HTTP method",
    );
    assert_one_sentence_failure(
        &mut x(&[
            "revoke",
            "TW/GOV/HRO/population/persons",
            "TW/GOV/MODA/portal",
        ]),
        "has no right",
    );
    run_ok(&mut x(&[
        "revoke",
        "TW/GOV/HRO/population/persons",
        "TW/GOV/MODA/portal",
        "--method",
        "GET",
        "--path",
        "/persons",
    ]));
    let listed = run_ok(&mut x(&["list"]));
    assert!(!listed.contains("may call"), "{listed}");
    assert!(
        listed.contains("service TW/GOV/HRO/population/echo"),
        "{listed}"
    );
    // Each accepted change is in the ledger, with the operator as actor.
    let kinds = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}", data.join("civitas.db").display());
        let db = civitas_store::Db::connect(&url, 1).await.unwrap();
        let rows: Vec<Vec<u8>> = civitas_store::sqlx::query_scalar(
            "SELECT data FROM ledger_entries WHERE kind LIKE 'exchange.%' ORDER BY idx",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        db.close().await;
        rows.iter()
            .map(|d| civitas_ledger::Event::decode(d).unwrap())
            .inspect(|e| assert_eq!(e.actor, "operator:cli"))
            .map(|e| e.kind)
            .collect::<Vec<_>>()
    });
    assert_eq!(
        kinds,
        [
            "exchange.member_added",
            "exchange.member_added",
            "exchange.subsystem_added",
            "exchange.subsystem_added",
            "exchange.deferral_allowed",
            "exchange.service_added",
            "exchange.service_added",
            "exchange.access_granted",
            "exchange.access_revoked",
        ]
    );
}
