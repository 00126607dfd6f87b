//! One-stop services end to end: a parent applies once for "a baby is born" on the pages
//! (filled from the registers, step by step, checked and declared), the household office,
//! the welfare office and the health insurer work their cases in the console (only their
//! own), ask for more and decide; the parent follows one timeline and hears of each change.
//! And "selling a property" over the GovStack-shaped API, where the second step's refusal
//! closes the third.

use serde_json::{Value, json};

use crate::authz::at_substantial;
use crate::support::{Browser, Engine, S3Server, TestApp, hidden_value};

/// A small PDF, as an upload.
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

/// The `value` of the input with this id on a page.
fn input_value(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\" name=");
    let at = html.find(&marker)?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

fn html_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// An answer a careful applicant would give to a question of the form (`form` is the
/// question's JSON), or the page's own prefilled value.
fn answer_for(q: &Value, page: &str, national_id: &str) -> Vec<(String, String)> {
    let id = q["id"].as_str().unwrap();
    if q["prefill"].is_string()
        && let Some(v) = input_value(page, &html_id(id))
        && !v.is_empty()
    {
        return vec![(id.into(), v)];
    }
    let value = match q["kind"].as_str().unwrap() {
        "name" => "王小寶".to_string(),
        "national_id" => national_id.to_string(),
        "address" => "臺北市中正區重慶南路一段122號".to_string(),
        "date" if q["when"] == "future" => "2099-01-01".to_string(),
        "date" => "2026-01-05".to_string(),
        "number" => q["min"].as_i64().unwrap_or(1).max(1).to_string(),
        "select" => {
            // A fixed choice: its last option (so yes/no questions answer "no"); a choice
            // from the registers: the first option the page offers.
            match q["options"].as_array().filter(|o| !o.is_empty()) {
                Some(o) => o.last().unwrap()["value"].as_str().unwrap().to_string(),
                None => {
                    let select = page
                        .split(&format!("id=\"{}\"", html_id(id)))
                        .nth(1)
                        .unwrap();
                    let opt = select
                        .split("<option value=\"")
                        .nth(2)
                        .expect("an option from the registers");
                    opt.split('"').next().unwrap().to_string()
                }
            }
        }
        "group" => return vec![],
        "file" => return vec![],
        _ if q["max_length"].as_u64().is_some_and(|m| m <= 16) => "004".to_string(),
        _ => "測試用的說明".to_string(),
    };
    vec![(id.into(), value)]
}

/// Walks an application's steps from `location` to its check page, answering every
/// question asked; returns the check page's path.
async fn walk(b: &mut Browser, form: &Value, mut location: String, national_id: &str) -> String {
    let steps = form["schema"]["steps"].as_array().unwrap();
    for _ in 0..20 {
        if location.ends_with("/check") {
            return location;
        }
        let page = b.get(&location).await;
        assert_eq!(page.status, 200, "{location}: {}", page.body);
        let step_id = location.rsplit('/').next().unwrap();
        let step = steps
            .iter()
            .find(|s| s["id"] == step_id)
            .expect("a step of the form");
        let mut fields = vec![("go".to_string(), "next".to_string())];
        let mut files = Vec::new();
        for q in step["question"].as_array().unwrap() {
            let id = q["id"].as_str().unwrap();
            // Questions not shown (a condition not met) are not on the page.
            if !page.body.contains(&format!("name=\"{id}")) {
                continue;
            }
            if let Some(cond) = q["show_if"].as_object() {
                let on = cond["question"].as_str().unwrap();
                let given = fields.iter().find(|(k, _)| k == on).map(|(_, v)| v.clone());
                if given.is_some_and(|g| {
                    !cond["any_of"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == g.as_str())
                }) {
                    continue;
                }
            }
            if q["kind"] == "file" {
                files.push((
                    id.to_string(),
                    "證明.pdf".to_string(),
                    "application/pdf".to_string(),
                    PDF.to_vec(),
                ));
            } else if q["kind"] == "group" {
                for f in q["field"].as_array().unwrap() {
                    for (k, v) in answer_for(f, &page.body, national_id) {
                        fields.push((format!("{id}[0].{k}"), v));
                    }
                }
            } else {
                fields.extend(answer_for(q, &page.body, national_id));
            }
        }
        let saved = b.post_multipart(&location, &fields, &files).await;
        assert_eq!(saved.status, 303, "{location} {fields:?}: {}", saved.body);
        location = saved.location.unwrap();
    }
    panic!("the form did not end");
}

/// The case of `service` in an application, as the applicant's API shows it.
async fn task_of(b: &mut Browser, file_id: &str, service: &str) -> Value {
    let r = b.get(&format!("/api/v1/applications/{file_id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["serviceId"] == service)
        .unwrap()
        .clone()
}

async fn ledger_kinds(app: &TestApp, kind: &str) -> usize {
    let (n,): (i64,) =
        civitas_store::sqlx::query_as("SELECT COUNT(*) FROM ledger_entries WHERE kind = $1")
            .bind(kind)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    n as usize
}

/// A staff member acts on a case in the console.
async fn act(b: &mut Browser, case: &str, action: &str, reason: &str) -> u16 {
    b.get(&format!("/console/cases/{case}")).await;
    b.post(
        &format!("/console/cases/{case}"),
        &[("action", action), ("reason", reason)],
    )
    .await
    .status
}

async fn a_parent_applies_once_and_three_agencies_decide(engine: Engine) {
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let parent = civitas::demo::applying_parent(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut b = at_substantial(&app, &parent.national_id).await;

    // The catalogue: by life event, and searched in Chinese by words.
    let page = b.get("/services").await;
    assert!(page.body.contains("/services/baby-born"), "{}", page.body);
    let found = b
        .get("/services?q=%E5%87%BA%E7%94%9F%E7%99%BB%E8%A8%98")
        .await; // 出生登記
    assert!(found.body.contains("/services/hro-birth-registration"));
    let page = b.get("/services/baby-born").await;
    assert_eq!(page.status, 200);
    let started = b.post("/services/baby-born/apply", &[]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let first = started.location.unwrap();
    let id = first.split('/').nth(2).unwrap().to_string();

    // Filled from the population register, with its source and a way to say it is wrong.
    let step = b.get(&first).await;
    assert!(step.body.contains(&parent.name_zh.clone()), "{}", step.body);
    assert!(
        step.body
            .contains(&format!("/applications/{id}/corrections/parent.name"))
    );
    // A file that is not a document is refused on its question; what was typed is kept.
    let child = format!("/applications/{id}/steps/hro-birth-registration.child");
    b.get(&child).await;
    let bad = b
        .post_multipart(
            &child,
            &[
                ("go".into(), "next".into()),
                ("child.name".into(), "王小寶".into()),
            ],
            &[(
                "child.birth_certificate".into(),
                "x.exe".into(),
                "application/x-msdownload".into(),
                b"MZ".to_vec(),
            )],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(
        bad.body.contains("檔案須為 PDF") && bad.body.contains("value=\"王小寶\""),
        "{}",
        bad.body
    );
    // Without the page's token nothing is taken, files included.
    let forged = b
        .post_multipart(
            &child,
            &[
                ("csrf".into(), "forged".into()),
                ("child.name".into(), "偽造".into()),
            ],
            &[(
                "child.birth_certificate".into(),
                "c.pdf".into(),
                "application/pdf".into(),
                PDF.to_vec(),
            )],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(!b.get(&child).await.body.contains("偽造"));

    let form: Value =
        serde_json::from_str(&b.get("/api/v1/services/baby-born/forms").await.body).unwrap();
    let form = form[0].clone();
    let check = walk(&mut b, &form, first.clone(), &parent.national_id).await;

    // The check page, the declaration, the submission.
    let page = b.get(&check).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("證明.pdf"));
    let refused = b.post(&check, &[]).await;
    assert_eq!(refused.status, 422, "no declaration ticked");
    let sent = b.post(&check, &[("declare", "1")]).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let hro = task_of(&mut b, &id, "hro-birth-registration").await;
    assert_eq!(hro["state"], "submitted");
    assert_eq!(
        task_of(&mut b, &id, "dsa-childbirth-allowance").await["state"],
        "waiting"
    );
    let reference = {
        let v: Value =
            serde_json::from_str(&b.get(&format!("/api/v1/applications/{id}")).await.body).unwrap();
        v["reference"].as_str().unwrap().to_string()
    };

    // The household office sees it in its queue; the welfare office cannot open it.
    let mut hro_staff = at_substantial(&app, "caseworker.1@hro.gov.example").await;
    let queue = hro_staff.get("/console").await;
    assert!(queue.body.contains(&reference), "{}", queue.body);
    let hro_case = hro["taskId"].as_str().unwrap();
    let mut dsa_staff = at_substantial(&app, "caseworker.1@dsa.gov.example").await;
    assert_eq!(
        dsa_staff
            .get(&format!("/console/cases/{hro_case}"))
            .await
            .status,
        404
    );
    assert_eq!(
        dsa_staff
            .get(&format!(
                "/console/cases/{hro_case}/files/child.birth_certificate"
            ))
            .await
            .status,
        404
    );
    let file = hro_staff
        .get(&format!(
            "/console/cases/{hro_case}/files/child.birth_certificate"
        ))
        .await;
    assert_eq!((file.status, file.body.as_bytes()), (200, PDF));
    // Staff read the registers only through the exchange, as their agency, logged.
    hro_staff.get(&format!("/console/cases/{hro_case}")).await;
    let read = hro_staff
        .post(&format!("/console/cases/{hro_case}/registers"), &[])
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(
        read.body.contains(&parent.national_id[..1]) && read.body.contains("family_name"),
        "{}",
        read.body
    );
    // A refusal needs its reason; the approval opens the two steps waiting for it.
    assert_eq!(act(&mut hro_staff, hro_case, "reject", "").await, 422);
    assert_eq!(act(&mut hro_staff, hro_case, "approve", "").await, 303);
    let dsa = task_of(&mut b, &id, "dsa-childbirth-allowance").await;
    assert_eq!(dsa["state"], "submitted");
    let dsa_case = dsa["taskId"].as_str().unwrap();

    // The welfare office asks for more; the parent changes an answer and sends it again.
    assert_eq!(
        act(
            &mut dsa_staff,
            dsa_case,
            "request_information",
            "請補正確的銀行帳號"
        )
        .await,
        303
    );
    let mine = b.get(&format!("/applications/{id}")).await;
    assert!(
        mine.body.contains("請補正確的銀行帳號")
            && mine.body.contains(&format!("/applications/{id}/check"))
    );
    let check_again = b.get(&format!("/applications/{id}/check")).await;
    assert_eq!(check_again.status, 200);
    let resent = b.post(&check, &[("declare", "1")]).await;
    assert_eq!(resent.status, 303, "{}", resent.body);
    assert_eq!(
        task_of(&mut b, &id, "dsa-childbirth-allowance").await["state"],
        "submitted"
    );
    assert_eq!(act(&mut dsa_staff, dsa_case, "approve", "核准").await, 303);

    // The insurer refuses, with its reason, which the parent reads on one timeline.
    let nhia_case = task_of(&mut b, &id, "nhia-newborn-enrolment").await["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut nhia_staff = at_substantial(&app, "caseworker.1@nhia.gov.example").await;
    assert_eq!(
        act(&mut nhia_staff, &nhia_case, "reject", "已由另一位家長辦理").await,
        303
    );
    let mine = b.get(&format!("/applications/{id}")).await;
    assert!(mine.body.contains("已由另一位家長辦理"));
    assert!(
        mine.body.contains("data-state=\"approved\"")
            && mine.body.contains("data-state=\"rejected\"")
    );
    // Nothing more can be withdrawn: every step is decided.
    assert!(!mine.body.contains(&format!("/applications/{id}/withdraw")));

    // A correction request about a register's value goes to its agency, never changes it.
    b.get(&format!("/applications/{id}/corrections/parent.name"))
        .await;
    let asked = b
        .post(
            &format!("/applications/{id}/corrections/parent.name"),
            &[("note", "名字少了一個字")],
        )
        .await;
    assert_eq!(asked.status, 303);

    // The ledger has the submission, every change and the correction request; the reads
    // that filled the form are in the parent's tracker.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        ledger_kinds(&app, "services.application_submitted").await,
        1
    );
    assert!(ledger_kinds(&app, "services.case_changed").await >= 9);
    assert_eq!(ledger_kinds(&app, "services.correction_requested").await, 1);
    let usage = b.get("/api/v1/me/data-usage").await;
    assert!(usage.body.contains("Filling in a form"), "{}", usage.body);
    // Each change was sent to the parent by the agency's Notify service, when the register
    // holds an address for them.
    if parent.email.is_some() {
        let (n,): (i64,) = civitas_store::sqlx::query_as(
            "SELECT COUNT(*) FROM notify_notifications WHERE reference LIKE $1",
        )
        .bind(format!("{reference}/%"))
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert!(n >= 5, "{n} messages");
    }
    app.stop().await;
}

async fn demo_person(app: &TestApp, role: &str) -> civitas_registry::DemoPerson {
    civitas_registry::demo_people(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.role == role)
        .unwrap()
}

/// Starts a draft of a service over the API, filled from the registers; its file id.
async fn draft(b: &mut Browser, service: &str) -> String {
    let (status, draft) = b
        .post_json(
            &format!("/api/v1/services/{service}/applications"),
            &json!({"draft": true}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{draft}");
    draft["fileId"].as_str().unwrap().to_string()
}

/// Uploads a PDF contract over the API; the answer that names it.
async fn upload_contract(b: &mut Browser, file_id: &str) -> Value {
    let (status, doc) = b
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/applications/{file_id}/documents?name=contract.pdf"),
            "application/pdf",
            PDF.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    doc
}

async fn a_refused_step_closes_the_steps_after_it(engine: Engine) {
    let Some(app) = TestApp::spawn(engine).await else {
        return;
    };
    let seller = demo_person(&app, "property_seller").await;
    let buyer = demo_person(&app, "property_buyer").await;
    let mut b = at_substantial(&app, &seller.national_id).await;
    // The catalogue over the API: searched by a word people use.
    let found: Value =
        serde_json::from_str(&b.get("/api/v1/services?q=%E9%81%8E%E6%88%B6").await.body).unwrap(); // 過戶
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "selling-property"),
        "{found}"
    );
    // A draft, filled from the registers: the seller's buildings are the choices.
    let file_id = draft(&mut b, "selling-property").await;
    let a = {
        let services = civitas_services::Services::open(app.db.clone(), app.ledger.clone())
            .await
            .unwrap();
        services.application(&file_id).await.unwrap().unwrap()
    };
    let building = a.options["property.building"][0]["value"]
        .as_str()
        .expect("a building from the land register")
        .to_string();
    let doc = upload_contract(&mut b, &file_id).await;
    let (status, bad) = b
        .send_json(
            reqwest::Method::POST,
            &format!("/api/v1/applications/{file_id}/documents?name=x.exe"),
            "application/x-msdownload",
            b"MZ".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    // Wrong answers: 422 with each question's error, and nothing opens.
    let mut data = json!({
        "property.building": building, "sale.price": "0", "sale.contract_date": "2026-01-05",
        "buyer.national_id": buyer.national_id, "buyer.name": "買方", "sale.contract": doc,
        "payment.method": "bank-transfer", "transfer.agent": "self",
    });
    let body =
        |d: &Value| serde_json::to_vec(&json!({"formData": {"data": d}, "submit": true})).unwrap();
    let (status, refused) = b
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/applications/{file_id}"),
            "application/json",
            body(&data),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["question"] == "sale.price")
    );
    data["sale.price"] = json!("12000000");
    let (status, sent) = b
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/applications/{file_id}"),
            "application/json",
            body(&data),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let states: Vec<&str> = sent["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["submitted", "waiting", "waiting"]);
    assert_eq!(sent["status"]["code"], "PENDING");

    // The tax office's tasks; the land office cannot see them.
    let mut txa = at_substantial(&app, "caseworker.1@txa.gov.example").await;
    let tasks: Value = serde_json::from_str(&txa.get("/api/v1/tasks").await.body).unwrap();
    let declaration = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fileId"] == file_id.as_str())
        .unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut dla = at_substantial(&app, "caseworker.1@dla.gov.example").await;
    assert_eq!(
        dla.get(&format!("/api/v1/tasks/{declaration}"))
            .await
            .status,
        404
    );
    let (status, _) = dla
        .post_json(
            &format!("/api/v1/tasks/{declaration}/complete"),
            &json!({"data": {"action": "approve"}}),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // A resident has no tasks.
    assert_eq!(b.get("/api/v1/tasks").await.status, 403);
    // The declaration is approved: the payment opens; the payment is refused: the transfer
    // registration closes without being heard.
    txa.get("/account").await;
    let (status, done) = txa
        .post_json(
            &format!("/api/v1/tasks/{declaration}/complete"),
            &json!({"data": {"action": "approve"}}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let payment = task_of(&mut b, &file_id, "txa-tax-payment").await;
    assert_eq!(payment["state"], "submitted");
    let (status, _) = txa
        .post_json(
            &format!(
                "/api/v1/tasks/{}/complete",
                payment["taskId"].as_str().unwrap()
            ),
            &json!({"data": {"action": "reject"}}),
            None,
        )
        .await;
    assert_eq!(status, 400, "a refusal needs its reason");
    let (status, done) = txa
        .post_json(
            &format!(
                "/api/v1/tasks/{}/complete",
                payment["taskId"].as_str().unwrap()
            ),
            &json!({"data": {"action": "reject", "reason": "稅款未繳納"}}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        task_of(&mut b, &file_id, "dla-transfer-registration").await["state"],
        "closed"
    );
    let (status, twice) = txa
        .post_json(
            &format!(
                "/api/v1/tasks/{}/complete",
                payment["taskId"].as_str().unwrap()
            ),
            &json!({"data": {"action": "approve"}}),
            None,
        )
        .await;
    assert_eq!(status, 409, "{twice}");
    let v: Value =
        serde_json::from_str(&b.get(&format!("/api/v1/applications/{file_id}")).await.body)
            .unwrap();
    assert_eq!(v["status"]["code"], "REJECTED");
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["note"] == "稅款未繳納")
    );
    // Someone else's application is not found.
    let mut other = at_substantial(&app, &buyer.national_id).await;
    assert_eq!(
        other
            .get(&format!("/api/v1/applications/{file_id}"))
            .await
            .status,
        404
    );
    assert!(hidden_value(&other.get("/applications").await.body, "csrf").is_some());
    app.stop().await;
}

/// With `uploads.s3_bucket` set, files go to the bucket, with S3's signed requests, and
/// nothing to the local folder; a wrong secret stops the server at start, saying why.
async fn uploads_go_to_an_s3_bucket(engine: Engine) {
    let Some(s3) = S3Server::start("civitas-uploads").await else {
        return;
    };
    let refused = civitas_services::uploads::s3_store(&s3.settings("not-the-secret"))
        .await
        .expect_err("a wrong secret is refused")
        .to_string();
    assert!(
        refused.contains("`civitas-uploads`") && refused.contains("does not answer"),
        "{refused}"
    );
    let settings = s3.settings(&s3.key.1);
    let Some(app) = TestApp::spawn_with(engine, move |c| c.uploads_s3 = Some(settings)).await
    else {
        return;
    };
    let seller = demo_person(&app, "property_seller").await;
    let mut b = at_substantial(&app, &seller.national_id).await;
    let file_id = draft(&mut b, "selling-property").await;
    let doc = upload_contract(&mut b, &file_id).await;
    let key = doc["key"].as_str().unwrap();
    // Another S3 client (boto3, with the same key) finds the file in the bucket.
    let listed = std::process::Command::new("python3")
        .env("PYTHONPATH", &s3.pythonpath)
        .args([
            "-c",
            "import boto3, hashlib, sys\n\
             url, bucket, key, secret = sys.argv[1:5]\n\
             s3 = boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id=key, aws_secret_access_key=secret)\n\
             for o in s3.list_objects_v2(Bucket=bucket).get('Contents', []):\n\
             \x20   body = s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read()\n\
             \x20   print(o['Key'], hashlib.sha256(body).hexdigest())\n",
            &s3.url,
            &s3.bucket,
            &s3.key.0,
            &s3.key.1,
        ])
        .output()
        .expect("run boto3");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        format!("{key} {}", doc["sha256"].as_str().unwrap())
    );
    let local = app.config.data_dir.join("uploads");
    assert!(
        std::fs::read_dir(&local).map_or(true, |mut d| d.next().is_none()),
        "nothing in {}",
        local.display()
    );
    // Answered and read back through Civitas, from the bucket.
    let (status, saved) = b
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/applications/{file_id}"),
            "application/json",
            serde_json::to_vec(&json!({"formData": {"data": {"sale.contract": doc}}})).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    let got = b
        .get(&format!("/applications/{file_id}/files/sale.contract"))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.as_bytes(), PDF);
    app.stop().await;
}

crate::each_engine!(
    a_parent_applies_once_and_three_agencies_decide,
    a_refused_step_closes_the_steps_after_it,
    uploads_go_to_an_s3_bucket
);
