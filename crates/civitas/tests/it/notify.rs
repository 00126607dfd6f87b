//! Notify's v2 API, spoken to by GOV.UK Notify's own clients, unchanged: the Python client
//! (`notifications-python-client`) and the Node client (`notifications-node-client`). With
//! the Python one: sending e-mail and text messages with a test
//! key, reading them back one by one and page by page, the templates and their preview,
//! and the refusals its users rely on (missing personalisation, a team key's reach, a
//! revoked key, a clock out of step). The client runs from the folder
//! `CIVITAS_TEST_NOTIFY_PYTHON` (`scripts/test` installs it there from PyPI).

use serde_json::{Value, json};

use crate::on_both_engines;
use crate::support::{TestApp, installed};

/// A live service (made by an operator) with one key of `kind` and the template `t`: the
/// key as its holder uses it, and the template.
pub(crate) async fn live_service(
    app: &TestApp,
    name: &str,
    kind: civitas_notify::KeyType,
    t: civitas_notify::NewTemplate,
) -> (String, civitas_notify::Template) {
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let actor = "operator:test";
    let service = notify.create_service(name, actor).await.unwrap();
    notify.make_live(&service.id, actor).await.unwrap();
    let key = notify
        .create_key(&service.id, "k", kind, actor)
        .await
        .unwrap()
        .1;
    let template = notify
        .save_template(&service.id, None, &t, actor)
        .await
        .unwrap();
    (key, template)
}

/// Where a Notify client is installed (the folder named by `var`), or `None` to skip unless
/// every test must run.
const SCRIPT: &str = r#"
import json, sys, time
import jwt
from notifications_python_client.notifications import NotificationsAPIClient
from notifications_python_client.errors import HTTPError

base, test_key, team_key, revoked_key, email_t, sms_t = sys.argv[1:7]
out = {}

def refused(call):
    try:
        call()
        return None
    except HTTPError as e:
        return {"status": e.status_code, "message": e.message}

c = NotificationsAPIClient(test_key, base_url=base)
sent = c.send_email_notification(
    email_address="Mei-Ling@Example.TW", template_id=email_t,
    personalisation={"name": "林美玲", "case": "A-1024", "urgent": "yes"}, reference="case-A-1024")
out["email"] = sent
out["email_read"] = c.get_notification_by_id(sent["id"])
out["sms"] = c.send_sms_notification(phone_number="0912-345-678", template_id=sms_t,
    personalisation={"code": "482913"})
out["failing"] = c.send_email_notification(email_address="perm-fail@simulator.notify",
    template_id=email_t, personalisation={"name": "x", "case": "y", "urgent": "no"})
out["all"] = c.get_all_notifications()
out["emails"] = c.get_all_notifications(template_type="email")
out["by_reference"] = c.get_all_notifications(reference="case-A-1024")
out["iterated"] = [n["id"] for n in c.get_all_notifications_iterator()]
out["template"] = c.get_template(email_t)
out["template_v1"] = c.get_template_version(email_t, 1)
out["templates"] = c.get_all_templates()
out["sms_templates"] = c.get_all_templates(template_type="sms")
out["preview"] = c.post_template_preview(email_t, personalisation={"name": "A", "case": "B", "urgent": "no"})
out["missing"] = refused(lambda: c.send_email_notification(email_address="a@example.tw",
    template_id=email_t, personalisation={"name": "only a name"}))
out["bad_address"] = refused(lambda: c.send_email_notification(email_address="not-an-address",
    template_id=email_t, personalisation={"name": "x", "case": "y", "urgent": "no"}))
out["unknown_notification"] = refused(lambda: c.get_notification_by_id("00000000-0000-4000-8000-000000000000"))
team = NotificationsAPIClient(team_key, base_url=base)
out["team_stranger"] = refused(lambda: team.send_email_notification(email_address="stranger@example.tw",
    template_id=email_t, personalisation={"name": "x", "case": "y", "urgent": "no"}))
out["team_guest"] = team.send_email_notification(email_address="guest@moda.gov.example",
    template_id=email_t, personalisation={"name": "x", "case": "y", "urgent": "no"})
out["team_sees"] = [n["id"] for n in team.get_all_notifications()["notifications"]]
out["revoked"] = refused(lambda: NotificationsAPIClient(revoked_key, base_url=base).get_all_templates())
# A token from a clock two minutes out, signed with the right secret.
service_id, secret = test_key[-73:-37], test_key[-36:]
import requests
old = jwt.encode({"iss": service_id, "iat": int(time.time()) - 120}, secret, algorithm="HS256")
r = requests.get(base + "/v2/templates", headers={"Authorization": "Bearer " + old})
out["late_clock"] = {"status": r.status_code, "body": r.json()}
r = requests.get(base + "/v2/templates")
out["no_token"] = {"status": r.status_code, "body": r.json()}
print(json.dumps(out))
"#;

on_both_engines! {
    async fn notifys_python_client_sends_and_reads_back_through_the_v2_api(app) {
        let Some(python) = installed("CIVITAS_TEST_NOTIFY_PYTHON", "Notify's Python client") else { return };
        let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
        let actor = "operator:test";
        let service = notify.create_service("Household registration office", actor).await.unwrap();
        let key = |name: &'static str, kind| {
            let notify = notify.clone();
            let id = service.id.clone();
            async move { notify.create_key(&id, name, kind, actor).await.unwrap().1 }
        };
        let test_key = key("test", civitas_notify::KeyType::Test).await;
        let team_key = key("team", civitas_notify::KeyType::Team).await;
        let revoked = key("old", civitas_notify::KeyType::Live).await;
        let revoked_id: String = civitas_store::sqlx::query_scalar("SELECT id FROM notify_api_keys WHERE name = 'old'")
            .fetch_one(app.db.pool()).await.unwrap();
        assert!(notify.revoke_key(&service.id, &revoked_id, actor).await.unwrap());
        notify.add_to_guest_list(&service.id, "Guest@moda.gov.example", actor).await.unwrap();
        let email = notify.save_template(&service.id, None, &civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Email,
            name: "Case update".into(),
            subject: Some("Your application ((case))".into()),
            body: "Dear ((name)),\n\nyour application ((case)) has moved on.((urgent?? Please reply today.))".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        }, actor).await.unwrap();
        // A second version: the first is still there to read.
        let email = notify.save_template(&service.id, Some(&email.id), &civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Email,
            name: "Case update".into(),
            subject: Some("案件進度 ((case))".into()),
            body: "((name)) 您好：\n\n您的案件 ((case)) 已有進度。((urgent??請於今日回覆。))".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        }, actor).await.unwrap();
        assert_eq!(email.version, 2);
        let sms = notify.save_template(&service.id, None, &civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Sms,
            name: "Code".into(),
            subject: None,
            body: "您的驗證碼是 ((code))".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        }, actor).await.unwrap();

        let dir = std::env::temp_dir().join(format!("civitas-notify-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("client.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let run = tokio::process::Command::new("python3")
            .arg(&script)
            .args([&app.base, &test_key, &team_key, &revoked, &email.id, &sms.id])
            .env("PYTHONPATH", &python)
            .output()
            .await
            .expect("python3 runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(run.status.success(), "the client failed: {}", String::from_utf8_lossy(&run.stderr));
        let out: Value = serde_json::from_slice(&run.stdout).unwrap();

        // Sent, in Notify's shape, filled in from the latest version.
        let sent = &out["email"];
        assert_eq!(sent["reference"], "case-A-1024");
        assert_eq!(sent["template"]["version"], 2);
        assert_eq!(sent["content"]["subject"], "案件進度 A-1024");
        assert_eq!(sent["content"]["from_email"], app.config.notify_from.as_str());
        assert_eq!(sent["content"]["body"], "林美玲 您好：\n\n您的案件 A-1024 已有進度。請於今日回覆。");
        assert!(sent["uri"].as_str().unwrap().ends_with(&format!("/v2/notifications/{}", sent["id"].as_str().unwrap())));
        // Read back: a test key delivers nothing and ends as Notify's simulator does.
        let read = &out["email_read"];
        assert_eq!((read["type"].as_str(), read["status"].as_str()), (Some("email"), Some("delivered")));
        assert_eq!(read["email_address"], "mei-ling@example.tw");
        assert!(read["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(out["sms"]["content"]["body"], "您的驗證碼是 482913");
        let failing = out["failing"]["id"].as_str().unwrap();
        let all = out["all"]["notifications"].as_array().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().find(|n| n["id"] == failing).unwrap()["status"], "permanent-failure");
        let created: Vec<&str> = all.iter().map(|n| n["created_at"].as_str().unwrap()).collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first: {created:?}");
        assert_eq!(out["emails"]["notifications"].as_array().unwrap().len(), 2);
        assert_eq!(out["by_reference"]["notifications"].as_array().unwrap().len(), 1);
        // The client's iterator follows `links.next` to an empty page.
        let iterated: Vec<&str> = out["iterated"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let listed: Vec<&str> = all.iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(iterated, listed);
        // Templates: the latest, the first version, all, by type, and a preview.
        assert_eq!(out["template"]["version"], 2);
        assert_eq!(out["template"]["personalisation"], json!({"case": {"required": true}, "name": {"required": true}, "urgent": {"required": true}}));
        assert_eq!(out["template_v1"]["subject"], "Your application ((case))");
        assert_eq!(out["templates"]["templates"].as_array().unwrap().len(), 2);
        assert_eq!(out["sms_templates"]["templates"][0]["type"], "sms");
        assert_eq!(out["preview"]["subject"], "案件進度 B");
        // Refusals as Notify words them.
        assert_eq!(out["missing"], json!({"status": 400, "message": [{"error": "BadRequestError", "message": "Missing personalisation: case, urgent"}]}));
        assert_eq!(out["bad_address"]["status"], 400);
        assert_eq!(out["unknown_notification"]["status"], 404);
        assert_eq!(out["team_stranger"]["message"][0]["message"], "Can’t send to this recipient using a team-only API key");
        assert!(out["team_guest"]["id"].is_string(), "a team key reaches its guest list");
        // Each key type sees only what it sent.
        assert_eq!(out["team_sees"], json!([out["team_guest"]["id"]]));
        assert_eq!(out["revoked"], json!({"status": 403, "message": [{"error": "AuthError", "message": "Invalid token: API key revoked"}]}));
        assert_eq!(out["late_clock"]["status"], 403);
        assert_eq!(out["late_clock"]["body"]["errors"][0]["message"], "Error: Your system clock must be accurate to within 30 seconds");
        assert_eq!(out["no_token"]["status"], 401);

        // The ledger has each message by the recipient's tag, its template and version, never
        // its content or address.
        let accepted = app.ledger.latest_of_kind("notify.accepted").await.unwrap().unwrap().1;
        let public = serde_json::to_string(&accepted.public).unwrap();
        assert!(accepted.subject.is_some());
        assert!(public.contains(&email.id) && !public.contains("guest@moda.gov.example") && !public.contains("案件"), "{public}");
        // The address's tag, unlisted: nobody looks an address up in the log.
        let address = app.ledger.subject_secret("notify-recipient:guest@moda.gov.example").await.unwrap().tag();
        assert_eq!(accepted.subject, Some(address));
        assert!(app.ledger.subject_events(address).await.unwrap().is_empty());
        app.stop().await;
    }
}

#[test]
fn the_command_line_registers_services_keys_guests_and_templates() {
    use crate::cli::{assert_one_sentence_failure, civitas, run_ok};
    let data = crate::support::scratch("notify-cli");
    let d = ["--data".to_string(), data.display().to_string()];
    run_ok(civitas().arg("migrate").args(&d));
    let service = run_ok(
        civitas()
            .args(["notify", "add-service", "Tax office"])
            .args(&d),
    )
    .trim()
    .to_string();
    assert!(uuid::Uuid::try_parse(&service).is_ok(), "{service}");
    let key = run_ok(
        civitas()
            .args(["notify", "add-key", &service, "ci", "--type", "team"])
            .args(&d),
    );
    let key = key.trim();
    // Notify's clients take the service id and the secret from the key's end.
    assert_eq!(&key[key.len() - 73..key.len() - 37], service);
    assert!(uuid::Uuid::try_parse(&key[key.len() - 36..]).is_ok());
    run_ok(
        civitas()
            .args(["notify", "add-guest", &service, "0912 345 678"])
            .args(&d),
    );
    let body = data.join("code.txt");
    std::fs::write(&body, "您的驗證碼是 ((code))").unwrap();
    let made = run_ok(
        civitas()
            .args([
                "notify",
                "add-template",
                &service,
                "--type",
                "sms",
                "--name",
                "Code",
                "--body",
            ])
            .arg(&body)
            .args(&d),
    );
    assert!(made.trim().ends_with(" 1"), "{made}");
    // An agency's service, whose template is in Chinese with an English translation.
    let agency_service = run_ok(
        civitas()
            .args(["notify", "add-service", "戶政司", "--agency", "hro"])
            .args(&d),
    )
    .trim()
    .to_string();
    let english = data.join("code-en.txt");
    std::fs::write(&english, "Your code is ((code))").unwrap();
    let bilingual = |translation: &std::path::Path| {
        let mut c = civitas();
        c.args([
            "notify",
            "add-template",
            &agency_service,
            "--type",
            "sms",
            "--name",
            "Code",
            "--lang",
            "zh-TW",
            "--body",
        ])
        .arg(&body)
        .arg("--translation")
        .arg(translation)
        .args(&d);
        c
    };
    assert!(run_ok(&mut bilingual(&english)).trim().ends_with(" 1"));
    let wrong = data.join("wrong-en.txt");
    std::fs::write(&wrong, "Your code is ((pin))").unwrap();
    assert_one_sentence_failure(&mut bilingual(&wrong), "same placeholders");
    run_ok(civitas().args(["notify", "make-live", &service]).args(&d));
    // Mistakes are one sentence and a non-zero exit.
    assert_one_sentence_failure(
        civitas()
            .args([
                "notify",
                "add-key",
                "00000000-0000-4000-8000-000000000000",
                "x",
            ])
            .args(&d),
        "no service",
    );
    assert_one_sentence_failure(
        civitas()
            .args([
                "notify",
                "add-template",
                &service,
                "--type",
                "email",
                "--name",
                "No subject",
                "--body",
            ])
            .arg(&body)
            .args(&d),
        "subject",
    );
    assert_one_sentence_failure(
        civitas()
            .args(["notify", "add-guest", &service, "not a phone"])
            .args(&d),
        "phone_number",
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// A Notify call's bearer token for `key`, made as Notify's clients make it.
pub(crate) fn bearer(key: &str) -> String {
    let (service, secret) = (&key[key.len() - 73..key.len() - 37], &key[key.len() - 36..]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "iss": service, "iat": now }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Notification `id` as its service reads it, once its status is one of `done` (ten
/// seconds at most).
pub(crate) async fn read_when(app: &TestApp, key: &str, id: &str, done: &[&str]) -> Value {
    let mut n = Value::Null;
    for _ in 0..100 {
        n = app
            .client
            .get(format!("{}/v2/notifications/{id}", app.base))
            .bearer_auth(bearer(key))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done.contains(&n["status"].as_str().unwrap_or_default()) {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("still not done: {n}");
}

/// A message's subject, decoded from its MIME header (RFC 2047, base64 or plain).
fn subject_of(raw: &str) -> String {
    use base64::Engine as _;
    let mut subject = String::new();
    let mut lines = raw.lines().skip_while(|l| !l.starts_with("Subject: "));
    if let Some(first) = lines.next() {
        subject.push_str(first.trim_start_matches("Subject: "));
        for more in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
            subject.push_str(more.trim());
        }
    }
    // RFC 2047: the space between two encoded words is not text; any other space is.
    let mut out = String::new();
    let mut previous_encoded = false;
    for word in subject.split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let encoded = lower.starts_with("=?utf-8?b?") && lower.ends_with("?=");
        if !out.is_empty() && (!encoded || !previous_encoded) {
            out.push(' ');
        }
        if encoded {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&word[10..word.len() - 2])
                .unwrap();
            out.push_str(&String::from_utf8(bytes).unwrap());
        } else {
            out.push_str(word);
        }
        previous_encoded = encoded;
    }
    out
}

/// E-mail from a live key goes out over SMTP to a real (test) mail server; the status
/// follows what the server said; the ledger has each status change.
async fn live_email_goes_out_over_smtp(engine: crate::support::Engine) {
    let sink = crate::support::SmtpSink::start().await;
    let url = sink.url.clone();
    let Some(app) = TestApp::spawn_with(engine, move |c| c.notify_smtp_url = Some(url)).await
    else {
        return;
    };
    let (key, template) = live_service(
        &app,
        "Tax office",
        civitas_notify::KeyType::Live,
        civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Email,
            name: "Refund".into(),
            subject: Some("退稅通知 ((year))".into()),
            body: "((name)) 您好：您的 ((year)) 年度退稅已核定。".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        },
    )
    .await;
    let send = |to: &str| {
        let body = json!({"email_address": to, "template_id": template.id, "personalisation": {"name": "王小明", "year": "2026"}});
        app.client
            .post(format!("{}/v2/notifications/email", app.base))
            .bearer_auth(bearer(&key))
            .json(&body)
            .send()
    };
    let sent: Value = send("wang@example.tw").await.unwrap().json().await.unwrap();
    let refused: Value = send("refuse@example.tw")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Once the deliverer has settled it.
    let status = |id: Value| {
        let (app, key) = (&app, key.clone());
        async move {
            read_when(
                app,
                &key,
                id.as_str().unwrap(),
                crate::notify_channels::FINAL,
            )
            .await
        }
    };
    let delivered = status(sent["id"].clone()).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert!(delivered["completed_at"].is_string());
    assert_eq!(
        status(refused["id"].clone()).await["status"],
        "permanent-failure"
    );
    let messages = sink.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "the refused one never arrived");
    let (to, raw) = &messages[0];
    assert_eq!(to, &vec!["wang@example.tw".to_string()]);
    assert_eq!(subject_of(raw), "退稅通知 2026");
    assert!(raw.contains("From: notify@civitas.localhost"), "{raw}");
    // A person named by national ID is written to at the address the population register
    // holds; the sender sees only the ID.
    let (national_id, address): (String, String) = civitas_store::sqlx::query_as(
        "SELECT national_id, email FROM persons WHERE email IS NOT NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let by_id = send(&national_id.to_lowercase()).await.unwrap();
    assert_eq!(by_id.status(), 201);
    let by_id: Value = by_id.json().await.unwrap();
    let read = status(by_id["id"].clone()).await;
    assert_eq!(read["status"], "delivered", "{read}");
    assert_eq!(read["email_address"], national_id.as_str());
    let messages = sink.messages.lock().unwrap().clone();
    assert_eq!(messages.last().unwrap().0, vec![address.to_lowercase()]);
    let (nobody,): (String,) = civitas_store::sqlx::query_as(
        "SELECT national_id FROM persons WHERE email IS NULL ORDER BY id LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let refused = send(&nobody).await.unwrap();
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(
        refused["errors"][0]["message"],
        "The population register holds no e-mail address for this person"
    );
    let settled = app
        .ledger
        .latest_of_kind("notify.status")
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(settled.subject.is_some());
    assert!(
        !serde_json::to_string(&settled.public)
            .unwrap()
            .contains("example.tw")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_email_goes_out_over_smtp_on_sqlite() {
    live_email_goes_out_over_smtp(crate::support::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_email_goes_out_over_smtp_on_postgres() {
    live_email_goes_out_over_smtp(crate::support::Engine::Postgres).await;
}

/// While the mail server is down, e-mail waits in the queue (tried again with a growing
/// wait), never failed as if the recipient were at fault; once the server is back, it goes.
async fn email_waits_while_the_mail_server_is_down(engine: crate::support::Engine) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{port}");
    let Some(app) = TestApp::spawn_with(engine, move |c| c.notify_smtp_url = Some(url)).await
    else {
        return;
    };
    let (key, template) = live_service(
        &app,
        "Labour office",
        civitas_notify::KeyType::Live,
        civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Email,
            name: "Permit".into(),
            subject: Some("Work permit".into()),
            body: "Your work permit is ready.".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        },
    )
    .await;
    let sent: Value = app
        .client
        .post(format!("{}/v2/notifications/email", app.base))
        .bearer_auth(bearer(&key))
        .json(&json!({"email_address": "chen@example.tw", "template_id": template.id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["id"].as_str().unwrap().to_string();
    let queued = || async {
        civitas_store::sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT status, attempts, next_attempt_ms FROM notify_notifications WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .unwrap()
    };
    let mut tried = queued().await;
    for _ in 0..50 {
        if tried.1 > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        tried = queued().await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        (tried.0.as_str(), tried.1),
        ("created", 1),
        "back in the queue after one try"
    );
    assert!(tried.2 > now, "with a wait before the next try");
    // The server comes back; the message falls due (as its wait would end) and goes.
    let sink = crate::support::SmtpSink::start_on(&format!("127.0.0.1:{port}")).await;
    civitas_store::sqlx::query("UPDATE notify_notifications SET next_attempt_ms = 0 WHERE id = $1")
        .bind(&id)
        .execute(app.db.pool())
        .await
        .unwrap();
    for _ in 0..50 {
        if !sink.messages.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sink.messages.lock().unwrap().len(), 1);
    let mut status = String::new();
    for _ in 0..50 {
        status = queued().await.0;
        if status == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "delivered");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_waits_while_the_mail_server_is_down_on_sqlite() {
    email_waits_while_the_mail_server_is_down(crate::support::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_waits_while_the_mail_server_is_down_on_postgres() {
    email_waits_while_the_mail_server_is_down(crate::support::Engine::Postgres).await;
}

/// Notify's limits, answered with 429 as Notify answers them: calls a minute per key type,
/// and messages a day per channel (test keys' not counted).
async fn limits_are_answered_with_429(engine: crate::support::Engine) {
    let Some(app) = TestApp::spawn_with(engine, |c| c.notify_rate_limit_per_minute = 5).await
    else {
        return;
    };
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let actor = "operator:test";
    let service = notify
        .create_service("Immigration agency", actor)
        .await
        .unwrap();
    notify.make_live(&service.id, actor).await.unwrap();
    let key = |kind| {
        let notify = notify.clone();
        let id = service.id.clone();
        async move { notify.create_key(&id, "k", kind, actor).await.unwrap().1 }
    };
    let (test, team, live) = (
        key(civitas_notify::KeyType::Test).await,
        key(civitas_notify::KeyType::Team).await,
        key(civitas_notify::KeyType::Live).await,
    );
    let templates = |key: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .get(format!("{}/v2/templates", app.base))
                .bearer_auth(bearer(&key))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    for _ in 0..5 {
        assert_eq!(templates(test.clone()).await.0, 200);
    }
    let (status, body) = templates(test.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"status_code": 429, "errors": [{"error": "RateLimitError",
        "message": "Exceeded rate limit for key type TEST of 5 requests per 60 seconds"}]})
    );
    assert_eq!(
        templates(team.clone()).await.0,
        200,
        "each key type has its own count"
    );

    notify.set_daily_limit(&service.id, 1, actor).await.unwrap();
    let template = notify
        .save_template(
            &service.id,
            None,
            &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Email,
                name: "Visa".into(),
                subject: Some("Visa".into()),
                body: "Your visa is ready.".into(),
                priority: Default::default(),
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            },
            actor,
        )
        .await
        .unwrap();
    let send = |key: String| {
        let app = &app;
        let template = template.id.clone();
        async move {
            let res = app
                .client
                .post(format!("{}/v2/notifications/email", app.base))
                .bearer_auth(bearer(&key))
                .json(&json!({"email_address": "lee@example.tw", "template_id": template}))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(send(live.clone()).await.0, 201);
    let (status, body) = send(live.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["errors"][0],
        json!({"error": "TooManyRequestsError", "message": "Exceeded send limits (email: 1) for today"})
    );
    assert_eq!(
        send(test.clone()).await.0,
        429,
        "the test key is over its rate"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_answered_with_429_on_sqlite() {
    limits_are_answered_with_429(crate::support::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_answered_with_429_on_postgres() {
    limits_are_answered_with_429(crate::support::Engine::Postgres).await;
}

const NODE_SCRIPT: &str = r#"
const NotifyClient = require('notifications-node-client').NotifyClient;
const [base, testKey, teamKey, emailT, smsT, letterT] = process.argv.slice(2);
const refused = (p) => p.then(() => null, (e) => ({ status: e.response.status, body: e.response.data }));
(async () => {
  const c = new NotifyClient(base, testKey);
  const out = {};
  out.email = (await c.sendEmail(emailT, 'ming@example.tw', {
    personalisation: { name: '陳大明', case: 'B-7', urgent: 'no' }, reference: 'node-1' })).data;
  out.email_read = (await c.getNotificationById(out.email.id)).data;
  out.sms = (await c.sendSms(smsT, '+886 912 345 678', { personalisation: { code: '777' } })).data;
  out.sms_read = (await c.getNotificationById(out.sms.id)).data;
  out.letter = (await c.sendLetter(letterT, { personalisation: {
    address_line_1: '陳大明', address_line_2: '新北市板橋區中山路一段161號', address_line_3: '220', case: 'B-7' },
    reference: 'node-letter' })).data;
  out.letter_read = (await c.getNotificationById(out.letter.id)).data;
  const pdf = await c.getPdfForLetterNotification(out.letter.id);
  out.pdf = { head: pdf.subarray(0, 5).toString(), size: pdf.length };
  out.list = (await c.getNotifications('email', null, 'node-1')).data;
  out.template = (await c.getTemplateById(emailT)).data;
  out.template_v1 = (await c.getTemplateByIdAndVersion(emailT, 1)).data;
  out.templates = (await c.getAllTemplates('email')).data;
  out.preview = (await c.previewTemplateById(emailT, { name: 'N', case: 'C', urgent: 'yes' })).data;
  out.missing = await refused(c.sendEmail(emailT, 'a@example.tw', { personalisation: {} }));
  const team = new NotifyClient(base, teamKey);
  out.team = await refused(team.sendEmail(emailT, 'stranger@example.tw', {
    personalisation: { name: 'x', case: 'y', urgent: 'no' } }));
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e && e.response ? JSON.stringify(e.response.data) : e); process.exit(1); });
"#;

/// The Node client's tests, in a module of their own (the macro makes one per engine).
mod node {
    use super::*;

    on_both_engines! {
        async fn notifys_node_client_works_unchanged(app) {
            let Some(modules) = installed("CIVITAS_TEST_NOTIFY_NODE", "Notify's Node client") else { return };
            let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
            let actor = "operator:test";
            let service = notify.create_service("Driving licences", actor).await.unwrap();
            let test_key = notify.create_key(&service.id, "node-test", civitas_notify::KeyType::Test, actor).await.unwrap().1;
            let team_key = notify.create_key(&service.id, "node-team", civitas_notify::KeyType::Team, actor).await.unwrap().1;
            let email = notify.save_template(&service.id, None, &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Email,
                name: "Licence".into(),
                subject: Some("Licence ((case))".into()),
                body: "Dear ((name)), licence ((case)) is renewed.((urgent?? Collect it today.))".into(),
                priority: Default::default(),
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            }, actor).await.unwrap();
            let sms = notify.save_template(&service.id, None, &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Sms,
                name: "Code".into(),
                subject: None,
                body: "Code ((code))".into(),
                priority: Default::default(),
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            }, actor).await.unwrap();
            let letter = notify.save_template(&service.id, None, &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Letter,
                name: "Licence letter".into(),
                subject: Some("駕照 ((case)) 已換發".into()),
                body: "((address_line_1)) 先生／女士：您的駕照 ((case)) 已換發。".into(),
                priority: Default::default(),
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            }, actor).await.unwrap();
            let dir = std::env::temp_dir().join(format!("civitas-notify-node-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join("client.js");
            std::fs::write(&script, NODE_SCRIPT).unwrap();
            let run = tokio::process::Command::new("node")
                .arg(&script)
                .args([&app.base, &test_key, &team_key, &email.id, &sms.id, &letter.id])
                .env("NODE_PATH", &modules)
                .output()
                .await
                .expect("node runs");
            let _ = std::fs::remove_dir_all(&dir);
            assert!(run.status.success(), "the client failed: {}", String::from_utf8_lossy(&run.stderr));
            let out: Value = serde_json::from_slice(&run.stdout).unwrap();
            assert_eq!(out["email"]["content"]["subject"], "Licence B-7");
            assert_eq!(out["email"]["content"]["body"], "Dear 陳大明, licence B-7 is renewed.");
            assert_eq!(out["email_read"]["status"], "delivered");
            assert_eq!(out["sms"]["content"]["body"], "Code 777");
            assert_eq!((out["sms_read"]["status"].as_str(), out["sms_read"]["phone_number"].as_str()), (Some("delivered"), Some("+886912345678")));
            // A test key's letter is received at once, as Notify's simulator has it.
            assert_eq!(out["letter"]["content"]["subject"], "駕照 B-7 已換發");
            assert_eq!((out["letter_read"]["status"].as_str(), out["letter_read"]["line_2"].as_str()), (Some("received"), Some("新北市板橋區中山路一段161號")));
            assert_eq!(out["pdf"]["head"], "%PDF-");
            assert_eq!(out["list"]["notifications"].as_array().unwrap().len(), 1);
            assert_eq!(out["list"]["notifications"][0]["id"], out["email"]["id"]);
            assert_eq!(out["template"]["name"], "Licence");
            assert_eq!(out["template_v1"]["version"], 1);
            assert_eq!(out["templates"]["templates"].as_array().unwrap().len(), 1);
            assert_eq!(out["preview"]["body"], "Dear N, licence C is renewed. Collect it today.");
            assert_eq!(out["missing"]["status"], 400);
            assert_eq!(out["missing"]["body"]["errors"][0]["message"], "Missing personalisation: name, case, urgent");
            assert_eq!(out["team"]["status"], 400);
            app.stop().await;
        }
    }
}

/// A sender that sends again after losing the answer (same reference, recipient and
/// template, within a day) gets the message accepted the first time, not a second one.
async fn a_message_sent_again_is_the_same_message(engine: crate::support::Engine) {
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let (key, template) = live_service(
        &app,
        "Health insurance",
        civitas_notify::KeyType::Test,
        civitas_notify::NewTemplate {
            channel: civitas_notify::Channel::Sms,
            name: "Card".into(),
            subject: None,
            body: "Your card ((card)) is on its way.".into(),
            priority: Default::default(),
            essential: false,
            lang: civitas_notify::Language::ZhTw,
            translation: None,
        },
    )
    .await;
    let send = |to: &'static str, reference: &'static str| {
        let app = &app;
        let key = key.clone();
        let template = template.id.clone();
        async move {
            let res = app
                .client
                .post(format!("{}/v2/notifications/sms", app.base))
                .bearer_auth(bearer(&key))
                .json(
                    &json!({"phone_number": to, "template_id": template, "reference": reference,
                              "personalisation": {"card": "NHI-1"}}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (first, again) = tokio::join!(
        send("0912345678", "card-1"),
        send("+886 912 345 678", "card-1")
    );
    assert_eq!(
        first, again,
        "two sends of one message, even at once, are one"
    );
    assert_eq!(send("0912345678", "card-1").await, first);
    let to_another = send("0987654321", "card-1").await;
    assert_ne!(to_another, first, "another recipient is another message");
    let referenced_otherwise = send("0912345678", "card-2").await;
    assert_ne!(
        referenced_otherwise, first,
        "another reference is another message"
    );
    // Another text under the same reference is another message.
    let other: Value = app
        .client
        .post(format!("{}/v2/notifications/sms", app.base))
        .bearer_auth(bearer(&key))
        .json(
            &json!({"phone_number": "0912345678", "template_id": template.id,
                      "reference": "card-1", "personalisation": {"card": "NHI-2"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(other["id"].as_str().unwrap(), first);
    // Message IDs are UUIDs of version 7: in the order the messages were made (each goes
    // at the end of the table's key index, not at a random place in it).
    let made = [
        first.clone(),
        to_another,
        referenced_otherwise,
        other["id"].as_str().unwrap().to_string(),
    ];
    for id in &made {
        assert_eq!(
            uuid::Uuid::parse_str(id).unwrap().get_version_num(),
            7,
            "{id}"
        );
    }
    assert!(made.windows(2).all(|w| w[0] < w[1]), "{made:?}");
    let listed: Value = app
        .client
        .get(format!("{}/v2/notifications?reference=card-1", app.base))
        .bearer_auth(bearer(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["notifications"].as_array().unwrap().len(), 3);
    let accepted: i64 = civitas_store::sqlx::query_scalar(
        "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'notify.accepted'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(accepted, 4, "logged once per message");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_again_is_the_same_message_on_sqlite() {
    a_message_sent_again_is_the_same_message(crate::support::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_again_is_the_same_message_on_postgres() {
    a_message_sent_again_is_the_same_message(crate::support::Engine::Postgres).await;
}
