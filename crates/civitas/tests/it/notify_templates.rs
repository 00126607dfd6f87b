//! Templates in Chinese and English, and the admin pages where agency staff manage them:
//! a message goes out in the language the sender asks for, else the one the person chose,
//! else the template's own; supervisors change their agency's templates, caseworkers and
//! operators read and preview, other agencies' staff do not find them.

use serde_json::{Value, json};

use crate::authz::at_substantial;
use crate::notify::bearer;
use crate::support::{Engine, TestApp};

/// The demo's sending service of `agency`.
async fn demo_service(app: &TestApp, agency: &str) -> civitas_notify::Service {
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let mut found = notify.services(Some(agency)).await.unwrap();
    assert_eq!(found.len(), 1, "the demo gives {agency} one service");
    found.remove(0)
}

/// The ledger's entries of one kind, as logged.
async fn entries(app: &TestApp, kind: &str) -> Vec<String> {
    let rows: Vec<(Vec<u8>,)> = civitas_store::sqlx::query_as(
        "SELECT data FROM ledger_entries WHERE kind = $1 ORDER BY idx",
    )
    .bind(kind)
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(d,)| String::from_utf8(d).unwrap())
        .collect()
}

async fn post_json(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(bearer(key))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A message to a person named by national ID is written in the language the sender asks
/// for, else the one the person chose, else the template's; the API shows a template's
/// translation and previews it.
async fn messages_go_out_in_the_language_asked_for(engine: Engine) {
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let service = demo_service(&app, "HRO").await;
    assert!(service.live);
    let key = notify
        .create_key(
            &service.id,
            "k",
            civitas_notify::KeyType::Live,
            "operator:test",
        )
        .await
        .unwrap()
        .1;
    let email = notify
        .templates(&service.id, Some(civitas_notify::Channel::Email))
        .await
        .unwrap()
        .remove(0);
    let (id,): (String,) = civitas_store::sqlx::query_as(
        "SELECT p.national_id FROM demo_people d JOIN persons p ON p.id = d.person_id WHERE p.email IS NOT NULL ORDER BY d.role LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let values = json!({"name": "林美玲", "service": "出生登記", "reference": "B-7", "status": "已受理", "more": "no"});
    let send = |language: Option<&str>| {
        let mut body =
            json!({"email_address": id, "template_id": email.id, "personalisation": values});
        if let Some(l) = language {
            body["language"] = json!(l);
        }
        post_json(&app, &key, "/v2/notifications/email", body)
    };

    let (status, zh) = send(None).await;
    assert_eq!(status, 201, "{zh}");
    assert_eq!(zh["content"]["subject"], "您的出生登記申請：已受理");

    // The person chooses English for their messages.
    let mut person = crate::support::Browser::new(&app);
    person.sign_in(&id, civitas_identity::DEMO_PASSWORD).await;
    let page = person.get("/account/messages/settings").await;
    assert!(
        page.body.contains("name=\"language\" value=\"en\""),
        "{}",
        page.body
    );
    let saved = person
        .post(
            "/account/messages/settings",
            &[
                ("email", "1"),
                ("sms", "1"),
                ("inbox", "1"),
                ("language", "en"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303);
    let page = person.get("/account/messages/settings").await;
    assert!(
        page.body.contains("value=\"en\" checked"),
        "the choice is shown: {}",
        page.body
    );
    let (_, en) = send(None).await;
    assert_eq!(
        en["content"]["subject"],
        "Your 出生登記 application: 已受理"
    );
    assert!(
        en["content"]["body"]
            .as_str()
            .unwrap()
            .starts_with("Dear 林美玲,"),
        "{en}"
    );
    // The sender's own choice comes first.
    let (_, asked) = send(Some("zh-TW")).await;
    assert_eq!(asked["content"]["subject"], "您的出生登記申請：已受理");
    let (status, bad) = send(Some("fr")).await;
    assert_eq!(status, 400);
    assert_eq!(bad["errors"][0]["error"], "ValidationError", "{bad}");

    // Which language each message went in is kept, and logged, never the text.
    let langs: Vec<(String,)> = civitas_store::sqlx::query_as(
        "SELECT lang FROM notify_notifications WHERE service_id = $1 ORDER BY created_ms, id",
    )
    .bind(&service.id)
    .fetch_all(app.db.pool())
    .await
    .unwrap();
    let mut langs: Vec<String> = langs.into_iter().map(|(l,)| l).collect();
    langs.sort();
    assert_eq!(langs, ["en", "zh-TW", "zh-TW"]);
    let entries = entries(&app, "notify.accepted").await;
    assert!(entries.iter().any(|e| e.contains("\"language\":\"en\"")));
    assert!(entries.iter().all(|e| !e.contains("出生登記")));

    // The API shows the translation and previews it.
    let template: Value = app
        .client
        .get(format!("{}/v2/template/{}", app.base, email.id))
        .bearer_auth(bearer(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(template["language"], "zh-TW");
    assert_eq!(template["translations"][0]["language"], "en");
    let (status, preview) = post_json(
        &app,
        &key,
        &format!("/v2/template/{}/preview", email.id),
        json!({"personalisation": values, "language": "en"}),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["language"], "en");
    assert_eq!(preview["subject"], "Your 出生登記 application: 已受理");

    // A template in one language: asking for the other is refused; a person's choice
    // falls back to the template's own.
    let only_zh = notify
        .save_template(
            &service.id,
            None,
            &civitas_notify::NewTemplate {
                channel: civitas_notify::Channel::Email,
                name: "只有中文".into(),
                subject: Some("通知".into()),
                body: "((name))您好".into(),
                priority: civitas_notify::Priority::Normal,
                essential: false,
                lang: civitas_notify::Language::ZhTw,
                translation: None,
            },
            "operator:test",
        )
        .await
        .unwrap();
    let one = |language: Option<&str>| {
        let mut body = json!({"email_address": id, "template_id": only_zh.id, "personalisation": {"name": "美玲"}});
        if let Some(l) = language {
            body["language"] = json!(l);
        }
        post_json(&app, &key, "/v2/notifications/email", body)
    };
    let (status, refused) = one(Some("en")).await;
    assert_eq!(status, 400);
    assert_eq!(
        refused["errors"][0]["message"],
        "Template has no text in en"
    );
    let (status, fell_back) = one(None).await;
    assert_eq!(status, 201);
    assert_eq!(fell_back["content"]["body"], "美玲您好");
    app.stop().await;
}

/// The new-template form's fields, with `t_body` as the English text.
fn new_template(t_body: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("channel", "email"),
        ("name", "補件通知"),
        ("lang", "zh-TW"),
        ("subject", "請補件：((case))"),
        ("body", "((name))您好，您的案件 ((case)) 需要補件。"),
        ("t_subject", "Documents needed: ((case))"),
        ("t_body", t_body),
        ("priority", "normal"),
    ]
}

/// The first template link of a service page.
fn template_link(html: &str) -> String {
    html.split("href=\"/admin/notify/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .find(|l| l.contains("/templates/"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_staff_manage_their_templates_in_the_admin_pages() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let hro = demo_service(&app, "HRO").await;
    let nia = demo_service(&app, "NIA").await;
    let service_page = format!("/admin/notify/{}", hro.id);

    let mut sup = at_substantial(&app, "supervisor.1@hro.gov.example").await;
    let list = sup.get("/admin/notify").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&hro.name) && !list.body.contains(&nia.name));
    let page = sup.get(&service_page).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("申請進度") && page.body.contains("zh-TW, en"));

    // A translation with other placeholders is refused, with what was typed kept.
    let wrong = sup
        .post(
            &service_page,
            &new_template("Dear ((name)), please send your ((file))."),
        )
        .await;
    assert_eq!(wrong.status, 422, "{}", wrong.body);
    assert!(
        wrong.body.contains("error-summary")
            && wrong.body.contains("adds ((file))")
            && wrong
                .body
                .contains("Dear ((name)), please send your ((file))."),
        "{}",
        wrong.body
    );
    let made = sup
        .post(
            &service_page,
            &new_template("Dear ((name)), your case ((case)) needs documents."),
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.body);
    let at = made.location.unwrap();
    let shown = sup.get(&at).await;
    assert!(shown.body.contains("需要補件") && shown.body.contains("needs documents"));

    // The preview fills in what is typed, in the language chosen, and names what is not.
    let preview = sup
        .post(
            &format!("{at}/preview"),
            &[("lang", "en"), ("p.name", "Mei"), ("p.case", "A-9")],
        )
        .await;
    assert_eq!(preview.status, 200);
    assert!(
        preview
            .body
            .contains("Dear Mei, your case A-9 needs documents."),
        "{}",
        preview.body
    );
    let partial = sup
        .post(
            &format!("{at}/preview"),
            &[("lang", "zh-TW"), ("p.name", "Mei")],
        )
        .await;
    assert!(partial.body.contains("((case))") && partial.body.contains("請填入"));
    // Values never travel in the address: a preview asked for there is not made.
    let in_address = sup.get(&format!("{at}?preview=1&p.name=Mei")).await;
    assert!(
        !in_address.body.contains("預覽結果") && !in_address.body.contains("請填入"),
        "{}",
        in_address.body
    );

    // A new version; the old one stays readable.
    let mut fields = new_template("Dear ((name)), your case ((case)) still needs documents.");
    fields.retain(|(k, _)| *k != "channel");
    fields.push(("channel", "sms"));
    let saved = sup.post(&at, &fields).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let v2 = sup.get(&at).await;
    assert!(v2.body.contains("still needs documents") && v2.body.contains("?version=1"));
    assert!(
        v2.body.contains("<dd>email</dd>"),
        "a template keeps its channel"
    );
    let v1 = sup.get(&format!("{at}?version=1")).await;
    assert!(v1.body.contains("needs documents") && !v1.body.contains("still needs documents<"));
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let id = at.rsplit('/').next().unwrap();
    let t = notify.template(&hro.id, id, None).await.unwrap().unwrap();
    assert_eq!(t.version, 2);
    assert!(t.created_by.starts_with("account:"));
    let saved_events = entries(&app, "notify.template_saved").await;
    assert!(
        saved_events
            .iter()
            .any(|e| e.contains(id) && e.contains("\"languages\":\"zh-TW,en\"")),
        "{saved_events:?}"
    );

    // A caseworker reads and previews, and cannot change.
    let mut worker = at_substantial(&app, "caseworker.1@hro.gov.example").await;
    let read = worker.get(&at).await;
    assert_eq!(read.status, 200);
    let theirs = worker
        .post(
            &format!("{at}/preview"),
            &[("p.name", "Mei"), ("p.case", "A-9")],
        )
        .await;
    assert!(theirs.body.contains("您的案件 A-9"), "{}", theirs.body);
    worker.get(&at).await;
    assert!(!read.body.contains("Save as a new version") && !read.body.contains("儲存為新版本"));
    assert_eq!(worker.post(&at, &fields).await.status, 403);
    assert_eq!(
        worker.post(&service_page, &new_template("x")).await.status,
        403
    );

    // Another agency's staff do not find it; an operator reads it and cannot change it.
    let mut other = at_substantial(&app, "supervisor.1@nia.gov.example").await;
    assert_eq!(other.get(&service_page).await.status, 404);
    assert_eq!(other.get(&at).await.status, 404);
    assert_eq!(other.post(&at, &fields).await.status, 404);
    let own = other.get(&format!("/admin/notify/{}", nia.id)).await;
    assert_eq!(own.status, 200);
    let nia_template = template_link(&own.body);
    assert_eq!(
        sup.get(&format!("/admin/notify/{nia_template}"))
            .await
            .status,
        404
    );
    let mut op = at_substantial(&app, "operator.1@moda.gov.example").await;
    let all = op.get("/admin/notify").await;
    assert!(all.body.contains(&hro.name) && all.body.contains(&nia.name));
    assert_eq!(op.get(&at).await.status, 200);
    assert_eq!(op.post(&at, &fields).await.status, 403);

    // Residents are not staff.
    let resident = civitas_registry::demo_people(&app.db).await.unwrap()[0]
        .national_id
        .clone();
    let mut r = crate::support::Browser::new(&app);
    r.sign_in(&resident, civitas_identity::DEMO_PASSWORD).await;
    assert_eq!(r.get("/admin/notify").await.status, 403);
    assert_eq!(r.get(&service_page).await.status, 403);
    app.stop().await;
}

crate::each_engine!(messages_go_out_in_the_language_asked_for);
