//! Consent over HTTP: the operator registers a purpose and decides agreements, an
//! organisation (a registered client, HTTP Basic) proposes one and checks consents to it, and
//! people give, pause, withdraw and prove their consent.

use civitas_identity::oidc::{NewClient, Provider, Settings};
use serde_json::{Value, json};

use crate::on_both_engines;
use crate::support::{Browser, TestApp};

/// An organisation's client, registered as an operator would; its id and secret.
async fn organisation(app: &TestApp, name: &str) -> (String, String) {
    let issuer: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    let provider = Provider::new(
        app.db.clone(),
        app.ledger.clone(),
        Settings::new(issuer["issuer"].as_str().unwrap()),
    );
    let reg = provider
        .register_client(
            NewClient::new(name, vec!["http://127.0.0.1:9/callback".into()]),
            "operator:test",
        )
        .await
        .unwrap();
    (reg.client.client_id, reg.secret.unwrap())
}

/// A call as an organisation: status and JSON answer.
async fn as_org(
    app: &TestApp,
    (id, secret): &(String, String),
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", app.base);
    let mut req = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url),
    }
    .basic_auth(id, Some(secret));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    if status >= 400 {
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    (status, res.json().await.unwrap_or(Value::Null))
}

on_both_engines! {
    async fn an_organisation_proposes_the_operator_approves_and_a_person_consents_and_withdraws(app) {
        let bank = organisation(&app, "First Bank loans").await;
        let other = organisation(&app, "Another shop").await;

        // The operator registers the purpose (a session at level substantial).
        let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
        let purpose = json!({ "code": "pension-advice", "name_en": "Pension advice", "name_zh": "退休金諮詢" });
        let (status, body) = operator.post_json("/api/v1/consent/purposes", &purpose, None).await;
        assert_eq!(status, 201, "{body}");
        let (status, _) = operator.post_json("/api/v1/consent/purposes", &purpose, None).await;
        assert_eq!(status, 409);
        let listed: Value = app.get("/api/v1/consent/purposes").await.json().await.unwrap();
        // The demo's purposes and the new one.
        let codes: Vec<&str> = listed.as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
        assert!(codes.contains(&"loan-application") && codes.contains(&"pension-advice"), "{codes:?}");
        let items: Value = app.get("/api/v1/consent/items").await.json().await.unwrap();
        assert!(items.as_array().unwrap().iter().any(|i| i["item"] == "tax.income"), "{items}");

        // The organisation proposes; an endless one, or one with a wrong secret, is refused.
        let proposal = json!({
            "purpose": "pension-advice",
            "legal_basis": "consent",
            "items": ["population.name", "tax.income"],
            "retention_days": 30,
            "access": "periodic",
            "duration_days": 180,
        });
        let mut endless = proposal.clone();
        endless["duration_days"] = Value::Null;
        let (status, body) = as_org(&app, &bank, "POST", "/api/v1/consent/agreements", Some(endless)).await;
        assert_eq!(status, 400);
        assert!(body["detail"].as_str().unwrap().contains("endless"), "{body}");
        let wrong = (bank.0.clone(), "not-the-secret".to_string());
        let (status, _) = as_org(&app, &wrong, "POST", "/api/v1/consent/agreements", Some(proposal.clone())).await;
        assert_eq!(status, 401);
        let (status, agreement) = as_org(&app, &bank, "POST", "/api/v1/consent/agreements", Some(proposal)).await;
        assert_eq!(status, 201, "{agreement}");
        assert_eq!(agreement["state"], "proposed");
        assert_eq!(agreement["recipient"], "First Bank loans");
        let id = agreement["id"].as_str().unwrap().to_string();
        let (_, mine) = as_org(&app, &bank, "GET", "/api/v1/consent/agreements", None).await;
        assert_eq!(mine.as_array().unwrap().len(), 1);
        let (_, theirs) = as_org(&app, &other, "GET", "/api/v1/consent/agreements", None).await;
        assert!(theirs.as_array().unwrap().is_empty());
        // Not public, nor consentable, until approved; an organisation cannot approve.
        assert_eq!(app.get(&format!("/api/v1/consent/agreements/{id}")).await.status(), 404);
        let (status, _) = as_org(&app, &bank, "POST", &format!("/api/v1/consent/agreements/{id}/approve"), None).await;
        assert_eq!(status, 401);
        let (status, body) = operator
            .post_json(&format!("/api/v1/consent/agreements/{id}/approve"), &json!({}), None)
            .await;
        assert_eq!((status, body["state"].as_str()), (200, Some("approved")), "{body}");
        let (status, _) = operator
            .post_json(&format!("/api/v1/consent/agreements/{id}/reject"), &json!({ "reason": "late" }), None)
            .await;
        assert_eq!(status, 409);
        let public: Value = app.get(&format!("/api/v1/consent/agreements/{id}")).await.json().await.unwrap();
        assert_eq!(public["items"], json!(["population.name", "tax.income"]));

        // A person consents, and gets a receipt that verifies against the published keys.
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let mut person = Browser::new(&app);
        person.sign_in(&people[0].national_id, civitas_identity::DEMO_PASSWORD).await;
        let (status, _) = person
            .post_json("/api/v1/me/consents", &json!({ "agreement_id": id, "decision": "give" }), Some("forged"))
            .await;
        assert_eq!(status, 403);
        let (status, receipt) = person
            .post_json("/api/v1/me/consents", &json!({ "agreement_id": id, "decision": "give" }), None)
            .await;
        assert_eq!(status, 201, "{receipt}");
        let receipt: civitas_consent::Receipt = serde_json::from_value(receipt).unwrap();
        let jwks: Value = app.get("/api/v1/consent/jwks").await.json().await.unwrap();
        let key = civitas_consent::key_from_jwks(&jwks).unwrap();
        // `/ledger/key` is the log's origin, then its verifier key.
        let ledger_key = app.get("/ledger/key").await.text().await.unwrap();
        let ledger_key = ledger_key.lines().nth(1).unwrap().to_string();
        let claims = civitas_consent::verify_receipt(&receipt, &key, ledger_key.trim()).unwrap();
        assert_eq!(claims["data_controller"]["name"], "First Bank loans");
        let record = receipt.record_id.clone();
        let (status, again) = person
            .post_json("/api/v1/me/consents", &json!({ "agreement_id": id, "decision": "give" }), None)
            .await;
        assert_eq!(status, 409, "{again}");

        // The organisation checks it; another organisation learns nothing.
        let validity = format!("/api/v1/consent/records/{record}/validity");
        let (status, v) = as_org(&app, &bank, "GET", &validity, None).await;
        assert_eq!((status, v["valid"].as_bool()), (200, Some(true)), "{v}");
        let (status, _) = as_org(&app, &other, "GET", &validity, None).await;
        assert_eq!(status, 404);

        // The person sees it, pauses it (not valid), and withdraws it (the very next check
        // refuses).
        let listed = person.get("/api/v1/me/consents").await;
        let listed: Value = serde_json::from_str(&listed.body).unwrap();
        assert_eq!(listed[0]["record"]["id"], record.as_str());
        assert_eq!(listed[0]["agreement"]["purpose"], "pension-advice");
        // On the "My consents" page: who, what, and a pause button (periodic access).
        let page = person.get("/account/consents").await;
        assert!(page.body.contains("First Bank loans") && page.body.contains("綜合所得稅"), "{}", page.body);
        assert!(page.body.contains("value=\"pause\""));
        let paused = person
            .post(&format!("/account/consents/{record}/change"), &[("change", "pause")])
            .await;
        assert_eq!((paused.status, paused.location.as_deref()), (303, Some("/account/consents")));
        let page = person.get("/account/consents").await;
        assert!(page.body.contains("value=\"resume\""), "{}", page.body);
        person.get("/account").await;
        let (_, v) = as_org(&app, &bank, "GET", &validity, None).await;
        assert_eq!((v["valid"].as_bool(), v["state"].as_str()), (Some(false), Some("paused")));
        let (status, _) = person
            .post_json(&format!("/api/v1/me/consents/{record}/withdraw"), &json!({}), None)
            .await;
        assert_eq!(status, 200);
        let (_, v) = as_org(&app, &bank, "GET", &validity, None).await;
        assert_eq!((v["valid"].as_bool(), v["state"].as_str()), (Some(false), Some("withdrawn")));
        let (status, _) = person
            .post_json(&format!("/api/v1/me/consents/{record}/resume"), &json!({}), None)
            .await;
        assert_eq!(status, 409);
        let detail = person.get(&format!("/api/v1/me/consents/{record}")).await;
        let detail: Value = serde_json::from_str(&detail.body).unwrap();
        assert_eq!(
            detail["history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect::<Vec<_>>(),
            ["given", "paused", "withdrawn"]
        );
        let latest = person.get(&format!("/api/v1/me/consents/{record}/receipt")).await;
        let latest: civitas_consent::Receipt = serde_json::from_str(&latest.body).unwrap();
        let download = person.get(&format!("/account/consents/{record}/receipt")).await;
        assert_eq!(serde_json::from_str::<civitas_consent::Receipt>(&download.body).unwrap(), latest);
        let page = person.get("/account/consents").await;
        assert!(!page.body.contains("value=\"withdraw\""), "a withdrawn consent has no buttons");
        assert_eq!(latest.version, 3);
        civitas_consent::verify_receipt(&latest, &key, ledger_key.trim()).unwrap();

        // Nobody else sees or changes it.
        let mut stranger = Browser::new(&app);
        stranger.sign_in(&people[1].national_id, civitas_identity::DEMO_PASSWORD).await;
        assert_eq!(stranger.get(&format!("/api/v1/me/consents/{record}/receipt")).await.status, 404);
        assert_eq!(stranger.get(&format!("/account/consents/{record}/receipt")).await.status, 404);
        let tried = stranger
            .post(&format!("/account/consents/{record}/change"), &[("change", "withdraw")])
            .await;
        assert_eq!(tried.status, 404);
        let (status, _) = stranger
            .post_json(&format!("/api/v1/me/consents/{record}/withdraw"), &json!({}), None)
            .await;
        assert_eq!(status, 404);

        // Every step is in the ledger, the person's under their tag and never their number.
        for kind in ["consent.purpose_added", "consent.agreement_proposed", "consent.agreement_approved", "consent.given", "consent.paused", "consent.withdrawn"] {
            let (_, e) = app.ledger.latest_of_kind(kind).await.unwrap().unwrap_or_else(|| panic!("{kind}"));
            assert!(!serde_json::to_string(&e).unwrap().contains(&people[0].national_id), "{kind}");
        }
        app.stop().await;
    }
}
