//! Notify's channels beyond e-mail and what surrounds delivery: text messages and letters
//! through a provider over HTTP (the built-in sandbox, and a provider the test stands in
//! for), receipts that arrive out of order, signed status callbacks with retries, scheduled
//! sends and emergencies first.

use serde_json::{Value, json};

use super::notify::{bearer, live_service, read_when};
use crate::support::installed;
use crate::support::{Engine, HttpRecorder, TestApp};

pub(crate) const FINAL: &[&str] = &[
    "delivered",
    "received",
    "permanent-failure",
    "temporary-failure",
    "technical-failure",
];

async fn post_v2(app: &TestApp, key: &str, channel: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v2/notifications/{channel}", app.base))
        .bearer_auth(bearer(key))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn sms_template() -> civitas_notify::NewTemplate {
    civitas_notify::NewTemplate {
        channel: civitas_notify::Channel::Sms,
        name: "Code".into(),
        subject: None,
        body: "您的驗證碼是 ((code))".into(),
        priority: civitas_notify::Priority::Priority,
        essential: false,
        lang: civitas_notify::Language::ZhTw,
        translation: None,
    }
}

const PYTHON: &str = r#"
import json, sys, time
from notifications_python_client.notifications import NotificationsAPIClient
base, key, sms_t, letter_t = sys.argv[1:5]
c = NotificationsAPIClient(key, base_url=base)
out = {}
out["sms"] = c.send_sms_notification(phone_number="0912 345 678", template_id=sms_t,
    personalisation={"code": "482913"}, reference="sms-1")
out["letter"] = c.send_letter_notification(template_id=letter_t, personalisation={
    "address_line_1": "王小明", "address_line_2": "臺北市中正區重慶南路一段122號",
    "address_line_3": "100", "year": "2026"}, reference="letter-1")
def final(id, done):
    for _ in range(100):
        n = c.get_notification_by_id(id)
        if n["status"] in done:
            return n
        time.sleep(0.1)
    return n
out["sms_read"] = final(out["sms"]["id"], ["delivered", "temporary-failure", "permanent-failure"])
out["letter_read"] = final(out["letter"]["id"], ["received", "technical-failure", "permanent-failure"])
pdf = c.get_pdf_for_letter(out["letter"]["id"]).read()
out["pdf"] = {"head": pdf[:5].decode(), "size": len(pdf)}
out["letters"] = c.get_all_notifications(template_type="letter", status="received")
print(json.dumps(out))
"#;

/// A text message and a letter from a live key, sent with Notify's Python client, go to
/// the sandbox provider over HTTP; its signed receipts come back and move them on, and the
/// client reads both back, and the letter's PDF.
async fn text_messages_and_letters_go_through_the_sandbox(engine: Engine) {
    use civitas_core::config::ProviderEndpoint;
    let Some(python) = installed("CIVITAS_TEST_NOTIFY_PYTHON", "Notify's Python client") else {
        return;
    };
    let Some(app) = TestApp::spawn_with(engine, |c| {
        c.notify_sms = Some(ProviderEndpoint::Sandbox);
        c.notify_letters = Some(ProviderEndpoint::Sandbox);
    })
    .await
    else {
        return;
    };
    let (key, sms) = live_service(
        &app,
        "Tax office",
        civitas_notify::KeyType::Live,
        sms_template(),
    )
    .await;
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let letter = notify
        .save_template(
            &sms.service_id,
            None,
            &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Letter,
                name: "Refund letter".into(),
                subject: Some("((year)) 年度綜合所得稅退稅通知".into()),
                body: "((address_line_1)) 君：\n\n您的 ((year)) 年度退稅已核定，將於十日內匯入您的帳戶。".into(),
                priority: civitas_notify::Priority::Normal,
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            },
            "operator:test",
        )
        .await
        .unwrap();
    let dir = crate::support::scratch("notify-python-channels");
    let script = dir.join("client.py");
    std::fs::write(&script, PYTHON).unwrap();
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .args([&app.base, &key, &sms.id, &letter.id])
        .env("PYTHONPATH", &python)
        .output()
        .await
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value = serde_json::from_slice(&run.stdout).unwrap();

    assert_eq!(out["sms"]["content"]["body"], "您的驗證碼是 482913");
    let text = &out["sms_read"];
    assert_eq!(
        (text["status"].as_str(), text["phone_number"].as_str()),
        (Some("delivered"), Some("+886912345678")),
        "{text}"
    );
    assert!(text["completed_at"].is_string());
    assert_eq!(
        out["letter"]["content"]["subject"],
        "2026 年度綜合所得稅退稅通知"
    );
    let read = &out["letter_read"];
    assert_eq!(read["status"], "received", "{read}");
    assert_eq!(
        (
            read["line_1"].as_str(),
            read["line_3"].as_str(),
            read["postcode"].as_str()
        ),
        (Some("王小明"), Some("100"), Some("100"))
    );
    assert_eq!(read["type"], "letter");
    assert_eq!(out["pdf"]["head"], "%PDF-");
    assert!(out["pdf"]["size"].as_u64().unwrap() > 500);
    assert_eq!(out["letters"]["notifications"].as_array().unwrap().len(), 1);

    // The sandbox reported the text message's progress as a provider would: each receipt
    // is kept as an event.
    let events: Vec<(String, String)> = civitas_store::sqlx::query_as(
        "SELECT status, source FROM notify_status_events WHERE notification_id = $1 ORDER BY at_ms, received_ms",
    )
    .bind(out["sms"]["id"].as_str().unwrap())
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let statuses: Vec<&str> = events.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        statuses.contains(&"pending") && statuses.contains(&"delivered"),
        "{events:?}"
    );
    assert!(events.iter().all(|(_, source)| source == "provider"));
    // The ledger has the status by the recipient's tag, never the number or the text.
    let status = app
        .ledger
        .latest_of_kind("notify.status")
        .await
        .unwrap()
        .unwrap()
        .1;
    let public = serde_json::to_string(&status.public).unwrap();
    assert!(
        status.subject.is_some() && !public.contains("912345678") && !public.contains("482913"),
        "{public}"
    );

    // A letter's address is checked as Notify checks it; a team key sends no letters.
    let short = post_v2(&app, &key, "letter", json!({"template_id": letter.id, "personalisation": {"address_line_1": "王小明", "address_line_2": "100", "year": "2026"}})).await;
    assert_eq!(short.status(), 400);
    let short: Value = short.json().await.unwrap();
    assert_eq!(
        short["errors"][0]["message"],
        "Address must be at least 3 lines"
    );
    let team = notify
        .create_key(
            &sms.service_id,
            "team",
            civitas_notify::KeyType::Team,
            "operator:test",
        )
        .await
        .unwrap()
        .1;
    let refused = post_v2(&app, &team, "letter", json!({"template_id": letter.id, "personalisation": {"address_line_1": "a", "address_line_2": "b", "address_line_3": "100", "year": "2026"}})).await;
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(
        refused["errors"][0]["message"],
        "Cannot send letters with a team api key"
    );
    // Only the provider may report: an unsigned receipt is refused.
    let forged = app
        .client
        .post(format!("{}/notify/receipts", app.base))
        .json(&json!({"id": out["letter"]["id"], "status": "permanent-failure", "at": "2026-11-23T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    app.stop().await;
}

const SECRET: &str = "provider-secret-for-the-test";

/// A receipt for `id`, signed as the provider signs it.
async fn receipt(app: &TestApp, body: Value, secret: &str) -> reqwest::Response {
    let body = body.to_string();
    app.client
        .post(format!("{}/notify/receipts", app.base))
        .header("content-type", "application/json")
        .header(
            civitas_notify::provider::SIGNATURE_HEADER,
            civitas_notify::provider::sign(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A provider (the test) takes text messages; its receipts come in out of order, and the
/// status follows the events' times and ranks, never moving back.
async fn receipts_out_of_order_never_move_a_status_back(engine: Engine) {
    use civitas_core::config::ProviderEndpoint;
    // The first message is refused by the provider for good; the next ones are taken.
    let provider = HttpRecorder::start(vec![
        (400, r#"{"error": "no such number"}"#),
        (200, r#"{"reference": "prov-2"}"#),
    ])
    .await;
    let url = provider.url.clone();
    let Some(app) = TestApp::spawn_with(engine, move |c| {
        c.notify_sms = Some(ProviderEndpoint::Url(format!("{url}/send")));
        c.notify_provider_secret = Some(SECRET.into());
    })
    .await
    else {
        return;
    };
    let (key, sms) = live_service(
        &app,
        "Health insurance",
        civitas_notify::KeyType::Live,
        sms_template(),
    )
    .await;
    let send = |to: &'static str| {
        post_v2(
            &app,
            &key,
            "sms",
            json!({"phone_number": to, "template_id": sms.id, "personalisation": {"code": "1234"}}),
        )
    };
    let refused: Value = send("0911 111 111").await.json().await.unwrap();
    let refused = read_when(&app, &key, refused["id"].as_str().unwrap(), FINAL).await;
    assert_eq!(refused["status"], "permanent-failure");
    let sent: Value = send("0922 222 222").await.json().await.unwrap();
    let id = sent["id"].as_str().unwrap().to_string();
    let requests = provider.wait_for(2).await;
    // What the provider got: the number and the text, signed with the shared secret.
    let taken = &requests[1];
    assert_eq!(taken.path, "/send");
    let signature = taken.headers[civitas_notify::provider::SIGNATURE_HEADER]
        .to_str()
        .unwrap();
    assert!(civitas_notify::provider::verify(
        SECRET.as_bytes(),
        &taken.body,
        signature
    ));
    let body: Value = serde_json::from_slice(&taken.body).unwrap();
    assert_eq!(
        (
            body["to"].as_str(),
            body["text"].as_str(),
            body["id"].as_str()
        ),
        (
            Some("+886922222222"),
            Some("您的驗證碼是 1234"),
            Some(id.as_str())
        )
    );
    // Handed on: `sending` until the provider reports (the reference is stored just after
    // the provider's answer).
    for _ in 0..100 {
        let stored: Option<String> = civitas_store::sqlx::query_scalar(
            "SELECT provider_ref FROM notify_notifications WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        read_when(&app, &key, &id, &["sending"]).await["status"],
        "sending"
    );

    let at = |s: u32| format!("2026-01-02T08:00:{s:02}.000Z");
    let moved = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["moved"].as_bool().unwrap()
    };
    // `delivered` (at :20) comes first; then the earlier `pending` (:10), and a `temporary-
    // failure` from before the delivery (:15): neither moves it back.
    assert!(
        moved(
            receipt(
                &app,
                json!({"id": id, "reference": "prov-2", "status": "delivered", "at": at(20)}),
                SECRET
            )
            .await
        )
        .await
    );
    assert!(
        !moved(
            receipt(
                &app,
                json!({"id": id, "reference": "prov-2", "status": "pending", "at": at(10)}),
                SECRET
            )
            .await
        )
        .await
    );
    assert!(!moved(receipt(&app, json!({"id": id, "reference": "prov-2", "status": "temporary-failure", "at": at(15)}), SECRET).await).await);
    // A final status stays, even against a later failure; and the same receipt twice
    // changes nothing either.
    assert!(!moved(receipt(&app, json!({"id": id, "reference": "prov-2", "status": "temporary-failure", "at": at(40)}), SECRET).await).await);
    assert!(
        !moved(
            receipt(
                &app,
                json!({"id": id, "reference": "prov-2", "status": "delivered", "at": at(20)}),
                SECRET
            )
            .await
        )
        .await
    );
    let read = read_when(&app, &key, &id, FINAL).await;
    assert_eq!(read["status"], "delivered");
    assert_eq!(read["completed_at"], "2026-01-02T08:00:20.000000Z");
    let kept: i64 = civitas_store::sqlx::query_scalar(
        "SELECT COUNT(*) FROM notify_status_events WHERE notification_id = $1",
    )
    .bind(&id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(kept, 5, "every receipt is kept");

    // Receipts that cannot be taken: another secret, another reference, no such message,
    // a status the channel has not.
    let refused = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        refused(
            receipt(
                &app,
                json!({"id": id, "status": "delivered", "at": at(30)}),
                "another-secret-entirely"
            )
            .await
        ),
        401
    );
    assert_eq!(
        refused(
            receipt(
                &app,
                json!({"id": id, "reference": "prov-9", "status": "delivered", "at": at(30)}),
                SECRET
            )
            .await
        ),
        400
    );
    assert_eq!(refused(receipt(&app, json!({"id": uuid::Uuid::new_v4().to_string(), "status": "delivered", "at": at(30)}), SECRET).await), 404);
    assert_eq!(
        refused(
            receipt(
                &app,
                json!({"id": id, "status": "received", "at": at(30)}),
                SECRET
            )
            .await
        ),
        400
    );
    assert_eq!(
        refused(
            receipt(
                &app,
                json!({"id": id, "status": "delivered", "at": "yesterday"}),
                SECRET
            )
            .await
        ),
        400
    );
    app.stop().await;
}

/// A service that registered a callback is told each final status, with its bearer token
/// and an HMAC signature of the body; a failed callback is tried again.
async fn status_callbacks_are_signed_and_retried(engine: Engine) {
    let receiver = HttpRecorder::start(vec![(500, "{}"), (200, "{}")]).await;
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let (key, sms) = live_service(
        &app,
        "Immigration",
        civitas_notify::KeyType::Test,
        sms_template(),
    )
    .await;
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let token = "callback-token-0123456789";
    let short = notify
        .set_callback(
            &sms.service_id,
            "https://example.tw/cb",
            "short",
            "operator:test",
        )
        .await;
    assert!(short.is_err(), "a token is at least 10 characters");
    let plain = notify
        .set_callback(
            &sms.service_id,
            "http://example.tw/cb",
            token,
            "operator:test",
        )
        .await;
    assert!(plain.is_err(), "callbacks go over https");
    notify
        .set_callback(
            &sms.service_id,
            &format!("{}/callback", receiver.url),
            token,
            "operator:test",
        )
        .await
        .unwrap();
    let sent: Value = post_v2(&app, &key, "sms", json!({"phone_number": "+886933333333", "template_id": sms.id, "personalisation": {"code": "77"}, "reference": "r-77"}))
        .await
        .json()
        .await
        .unwrap();
    let id = sent["id"].as_str().unwrap();
    // The first post fails (500): the callback waits, with the attempt counted.
    let first = receiver.wait_for(1).await;
    let mut waiting = (0, 0);
    for _ in 0..100 {
        waiting = civitas_store::sqlx::query_as("SELECT attempts, next_attempt_ms FROM notify_callback_queue WHERE notification_id = $1")
            .bind(id).fetch_one(app.db.pool()).await.unwrap();
        if waiting.0 == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(waiting.0, 1);
    assert!(
        waiting.1 > civitas_ledger::event::now_ms() + 5_000,
        "tried again after a wait"
    );
    // Its time comes (the clock moved on): tried again, taken, and gone from the queue.
    civitas_store::sqlx::query("UPDATE notify_callback_queue SET next_attempt_ms = 0")
        .execute(app.db.pool())
        .await
        .unwrap();
    let both = receiver.wait_for(2).await;
    for _ in 0..100 {
        let left: i64 =
            civitas_store::sqlx::query_scalar("SELECT COUNT(*) FROM notify_callback_queue")
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(first[0].body, both[1].body, "the same report both times");
    let r = &both[1];
    assert_eq!(r.path, "/callback");
    assert_eq!(r.headers["authorization"], format!("Bearer {token}"));
    let signature = r.headers[civitas_notify::provider::SIGNATURE_HEADER]
        .to_str()
        .unwrap();
    assert!(civitas_notify::provider::verify(
        token.as_bytes(),
        &r.body,
        signature
    ));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (
            body["id"].as_str(),
            body["status"].as_str(),
            body["notification_type"].as_str(),
            body["reference"].as_str(),
            body["to"].as_str()
        ),
        (
            Some(id),
            Some("delivered"),
            Some("sms"),
            Some("r-77"),
            Some("+886933333333")
        )
    );
    assert_eq!(body["template_id"], sms.id);
    assert!(body["completed_at"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}

/// Scheduled messages wait for their time; of those due, emergencies go first, then
/// priority ones, then the rest in order.
async fn scheduled_messages_wait_and_emergencies_go_first(engine: Engine) {
    use civitas_notify::{Channel, NewTemplate, Priority};
    // No mail server configured: the test runs the deliverer itself, once.
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let email = |name: &str, priority| NewTemplate {
        channel: Channel::Email,
        name: name.into(),
        subject: Some(name.into()),
        body: "((n))".into(),
        priority,
        essential: false,
        lang: civitas_notify::Language::ZhTw,
        translation: None,
    };
    let (key, normal) = live_service(
        &app,
        "Disaster agency",
        civitas_notify::KeyType::Live,
        email("Newsletter", Priority::Normal),
    )
    .await;
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let alert = notify
        .save_template(
            &normal.service_id,
            None,
            &email("Typhoon warning", Priority::Emergency),
            "operator:test",
        )
        .await
        .unwrap();
    let send = |template: &str, to: &str, extra: Value| {
        let mut body =
            json!({"email_address": to, "template_id": template, "personalisation": {"n": to}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post_v2(&app, &key, "email", body)
    };
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = send(
        &normal.id,
        "later@example.tw",
        json!({"scheduled_for": later}),
    )
    .await;
    assert_eq!(scheduled.status(), 201);
    let scheduled: Value = scheduled.json().await.unwrap();
    assert!(scheduled["scheduled_for"].as_str().unwrap().ends_with('Z'));
    for to in ["first@example.tw", "second@example.tw"] {
        assert_eq!(send(&normal.id, to, json!({})).await.status(), 201);
    }
    assert_eq!(
        send(&alert.id, "alert@example.tw", json!({}))
            .await
            .status(),
        201
    );
    // Not in the past, nor more than a day ahead; Taiwan's local time is taken too.
    let past: Value = send(
        &normal.id,
        "x@example.tw",
        json!({"scheduled_for": "2020-01-01 08:00"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        past["errors"][0]["message"],
        "scheduled_for datetime can not be in the past"
    );
    let far: Value = send(
        &normal.id,
        "x@example.tw",
        json!({"scheduled_for": "2099-01-01T08:00:00+08:00"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        far["errors"][0]["message"],
        "scheduled_for datetime can only be 24 hours in the future"
    );

    let sink = crate::support::SmtpSink::start().await;
    let smtp = civitas_notify::delivery::Smtp::new(&sink.url, "notify@civitas.test").unwrap();
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let claimed = notify
        .deliver_batch(
            Channel::Email,
            &civitas_notify::delivery::Carrier::Smtp(smtp),
            &stopping,
        )
        .await
        .unwrap();
    assert_eq!(claimed, 3, "the scheduled one is not due");
    let order: Vec<String> = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|(to, _)| to[0].clone())
        .collect();
    // The emergency has gone before the others start; those go together.
    assert_eq!(order[0], "alert@example.tw", "{order:?}");
    let mut rest = order[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["first@example.tw", "second@example.tw"]);
    let waiting = read_when(&app, &key, scheduled["id"].as_str().unwrap(), &["created"]).await;
    assert_eq!(waiting["scheduled_for"], scheduled["scheduled_for"]);
    app.stop().await;
}

/// A resident reads what services sent them by national ID in their inbox, chooses the
/// channels they take, and stops a service's non-essential messages; notices the law
/// requires still reach them.
async fn a_resident_reads_their_messages_and_chooses_how_they_are_told(engine: Engine) {
    use civitas_notify::{Channel, NewTemplate, Priority};
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let template = |name: &str, essential| NewTemplate {
        channel: Channel::Email,
        name: name.into(),
        subject: Some(name.into()),
        body: "((what))\n\n如有疑問請洽承辦人。".into(),
        priority: Priority::Normal,
        essential,
        lang: civitas_notify::Language::ZhTw,
        translation: None,
    };
    let (key, news) = live_service(
        &app,
        "Labour insurance",
        civitas_notify::KeyType::Live,
        template("勞保月報", false),
    )
    .await;
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let notice = notify
        .save_template(
            &news.service_id,
            None,
            &template("保費催繳通知", true),
            "operator:test",
        )
        .await
        .unwrap();
    let (id,): (String,) = civitas_store::sqlx::query_as(
        "SELECT p.national_id FROM demo_people d JOIN persons p ON p.id = d.person_id WHERE p.email IS NOT NULL ORDER BY d.role LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let send = |t: &str, what: &str| {
        post_v2(
            &app,
            &key,
            "email",
            json!({"email_address": id, "template_id": t, "personalisation": {"what": what}}),
        )
    };
    let status_of = |r: Value| {
        let (app, key) = (&app, key.clone());
        async move {
            read_when(
                app,
                &key,
                r["id"].as_str().unwrap(),
                &["created", "delivered"],
            )
            .await["status"]
                .clone()
        }
    };
    let first: Value = send(&news.id, "十一月份投保薪資已更新")
        .await
        .json()
        .await
        .unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert_eq!(
        status_of(first).await,
        "created",
        "by e-mail, and in the inbox too"
    );
    // Logged under the person's tag, and listed among the person's entries.
    let (person_ref,): (String,) =
        civitas_store::sqlx::query_as("SELECT subject_ref FROM notify_notifications WHERE id = $1")
            .bind(&first_id)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    let tag = app.ledger.subject_secret(&person_ref).await.unwrap().tag();
    let theirs = app.ledger.subject_events(tag).await.unwrap();
    assert!(
        theirs
            .iter()
            .any(|(_, e)| e.kind == "notify.accepted" && e.object.ends_with(&first_id)),
        "{theirs:?}"
    );

    let mut person = crate::support::Browser::new(&app);
    person.sign_in(&id, civitas_identity::DEMO_PASSWORD).await;
    let inbox = person.get("/account/messages").await;
    assert_eq!(inbox.status, 200);
    assert!(
        inbox.body.contains("勞保月報")
            && inbox.body.contains("Labour insurance")
            && inbox.body.contains("未讀"),
        "{}",
        inbox.body
    );
    let link = inbox
        .body
        .split("href=\"/account/messages/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .find(|l| l != "settings")
        .unwrap();
    let opened = person.get(&format!("/account/messages/{link}")).await;
    assert!(opened.body.contains("十一月份投保薪資已更新"));
    assert!(
        !person.get("/account/messages").await.body.contains("未讀"),
        "read once opened"
    );
    // Another person finds nothing there.
    let mut other = crate::support::Browser::new(&app);
    let people = civitas_registry::demo_people(&app.db).await.unwrap();
    let stranger = people.iter().find(|p| p.national_id != id).unwrap();
    other
        .sign_in(&stranger.national_id, civitas_identity::DEMO_PASSWORD)
        .await;
    assert_eq!(
        other.get(&format!("/account/messages/{link}")).await.status,
        404
    );

    // No e-mail: the next message is in the inbox only, and so delivered.
    person.get("/account/messages/settings").await;
    let saved = person
        .post(
            "/account/messages/settings",
            &[("sms", "1"), ("inbox", "1")],
        )
        .await;
    assert_eq!(
        saved.location.as_deref(),
        Some("/account/messages/settings?saved")
    );
    let second: Value = send(&news.id, "十二月份投保薪資已更新")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status_of(second).await, "delivered");
    // Neither e-mail nor inbox: a non-essential message cannot go; a notice the law
    // requires goes by e-mail all the same.
    person.get("/account/messages/settings").await;
    person
        .post("/account/messages/settings", &[("sms", "1")])
        .await;
    let refused: Value = send(&news.id, "x").await.json().await.unwrap();
    assert_eq!(
        refused["errors"][0]["message"],
        "This person does not take non-essential messages by e-mail"
    );
    let required: Value = send(&notice.id, "請於月底前繳納保費")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status_of(required).await, "created");
    // Unsubscribed from the service: its non-essential messages stop, its notices do not.
    person.get("/account/messages/settings").await;
    person
        .post(
            "/account/messages/settings",
            &[("email", "1"), ("sms", "1"), ("inbox", "1")],
        )
        .await;
    let page = person.get("/account/messages/settings").await;
    assert!(page.body.contains("Labour insurance"));
    let stopped = person
        .post(
            &format!("/account/messages/senders/{}", news.service_id),
            &[("stop", "1")],
        )
        .await;
    assert_eq!(stopped.status, 303);
    assert!(
        person
            .get("/account/messages/settings")
            .await
            .body
            .contains("已退訂")
    );
    let refused: Value = send(&news.id, "x").await.json().await.unwrap();
    assert_eq!(
        refused["errors"][0]["message"],
        "This person has unsubscribed from this service's non-essential messages"
    );
    assert_eq!(send(&notice.id, "最後催繳").await.status(), 201);
    assert!(
        person
            .get("/account/messages")
            .await
            .body
            .contains("保費催繳通知")
    );
    // Without the form's token, nothing changes.
    let forged = person
        .post(
            &format!("/account/messages/senders/{}", news.service_id),
            &[("stop", "0"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status, 403);
    // The ledger has the choice under the person's tag, never their ID.
    let event = app
        .ledger
        .latest_of_kind("notify.unsubscribed")
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(event.subject.is_some());
    assert!(!serde_json::to_string(&event.public).unwrap().contains(&id));
    app.stop().await;
}

/// Civitas's own messages go through Notify: a person registering gets their code by
/// e-mail from the system service, over SMTP; the code is not kept once sent.
async fn civitas_sends_its_own_codes_through_notify(engine: Engine) {
    let sink = crate::support::SmtpSink::start().await;
    let url = sink.url.clone();
    let Some(app) = TestApp::spawn_with(engine, move |c| {
        c.dev_mail_sink = false;
        c.notify_smtp_url = Some(url);
    })
    .await
    else {
        return;
    };
    let (id, birth, email): (String, String, String) = civitas_store::sqlx::query_as(
        "SELECT national_id, birth_date, email FROM persons WHERE email IS NOT NULL AND death_date IS NULL
         AND id NOT IN (SELECT person_id FROM accounts WHERE person_id IS NOT NULL) ORDER BY id LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let mut b = crate::support::Browser::new(&app);
    b.get("/register").await;
    let page = b
        .post("/register", &[("national_id", &id), ("birth_date", &birth)])
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let mut got = Vec::new();
    for _ in 0..100 {
        got = sink.messages.lock().unwrap().clone();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1, "one message");
    assert_eq!(got[0].0, [email.to_lowercase()]);
    assert!(got[0].1.contains("registration code"), "{}", got[0].1);
    let (service, status, body): (String, String, String) = civitas_store::sqlx::query_as(
        "SELECT service_id, status, body FROM notify_notifications ORDER BY created_ms DESC LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(service, civitas_notify::own::SYSTEM_SERVICE_ID);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("delivered", ""),
        "delivered, and the code forgotten"
    );
    app.stop().await;
}

crate::each_engine!(
    civitas_sends_its_own_codes_through_notify,
    a_resident_reads_their_messages_and_chooses_how_they_are_told,
    text_messages_and_letters_go_through_the_sandbox,
    receipts_out_of_order_never_move_a_status_back,
    status_callbacks_are_signed_and_retried,
    scheduled_messages_wait_and_emergencies_go_first,
);
