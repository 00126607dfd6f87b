//! Consent over HTTP: the operator registers a purpose and decides agreements, an
//! organisation (a registered client, HTTP Basic) proposes one and checks consents to it, and
//! people give, pause, withdraw and prove their consent.

use civitas_identity::oidc::{NewClient, Provider, Settings};
use serde_json::{Value, json};

use crate::on_both_engines;
use crate::support::{Browser, TestApp};

/// An organisation's client, registered as an operator would; its id and secret.
async fn organisation(app: &TestApp, name: &str) -> (String, String) {
    let reg = registered(app, name).await;
    (reg.client.client_id, reg.secret.unwrap())
}

/// An organisation's client, registered as an operator would.
async fn registered(app: &TestApp, name: &str) -> civitas_identity::oidc::Registered {
    registered_with_keys(app, name, None).await
}

/// An organisation's client with the public keys `jwks`.
async fn registered_with_keys(
    app: &TestApp,
    name: &str,
    jwks: Option<Value>,
) -> civitas_identity::oidc::Registered {
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
    let mut new = NewClient::new(name, vec![crate::oidc::REDIRECT.into()]);
    new.jwks = jwks.map(|j| j.to_string());
    provider
        .register_client(new, "operator:test")
        .await
        .unwrap()
}

/// A client's encryption key pair (P-256): its JWKS, and the private half, which opens one
/// JWE (ring's keys for agreement are single-use).
fn encryption_keys() -> (Value, ring::agreement::EphemeralPrivateKey) {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rng = ring::rand::SystemRandom::new();
    let key =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let public = key.compute_public_key().unwrap().as_ref().to_vec();
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "enc", "kid": "bank-enc-1",
        "x": b64(&public[1..33]), "y": b64(&public[33..65]),
    }]});
    (jwks, key)
}

/// Opens a compact JWE (ECDH-ES, A256GCM) with the client's key, as RFC 7516 and 7518
/// describe it: the JWS inside.
fn opened(jwe: &str, key: ring::agreement::EphemeralPrivateKey) -> String {
    use base64::Engine as _;
    use ring::aead;
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    let parts: Vec<&str> = jwe.split('.').collect();
    assert_eq!(parts.len(), 5, "a compact JWE: {jwe}");
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["enc"].as_str()),
        (Some("ECDH-ES"), Some("A256GCM"))
    );
    assert_eq!(header["cty"], "JWT");
    assert_eq!(header["kid"], "bank-enc-1");
    let epk = [
        vec![4u8],
        b64(header["epk"]["x"].as_str().unwrap()),
        b64(header["epk"]["y"].as_str().unwrap()),
    ]
    .concat();
    let peer = ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, epk);
    let cek = ring::agreement::agree_ephemeral(key, &peer, |z| {
        // Concat KDF, RFC 7518 §4.6.2: counter, Z, AlgorithmID, PartyUInfo, PartyVInfo,
        // SuppPubInfo (the key's bits).
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&1u32.to_be_bytes());
        ctx.update(z);
        ctx.update(&7u32.to_be_bytes());
        ctx.update(b"A256GCM");
        ctx.update(&[0u8; 8]);
        ctx.update(&256u32.to_be_bytes());
        ctx.finish().as_ref().to_vec()
    })
    .unwrap();
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &cek).unwrap());
    let iv: [u8; 12] = b64(parts[2]).try_into().unwrap();
    let mut data = [b64(parts[3]), b64(parts[4])].concat();
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::from(parts[0].as_bytes()),
            &mut data,
        )
        .expect("the JWE opens with the client's key");
    String::from_utf8(plain.to_vec()).unwrap()
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

/// An approved agreement of `org` for `items`, with `access`; its id.
async fn agreed(
    app: &TestApp,
    operator: &mut Browser,
    org: &(String, String),
    items: &[&str],
    access: &str,
) -> String {
    let proposal = json!({
        "purpose": "loan-application",
        "legal_basis": "consent",
        "items": items,
        "retention_days": 30,
        "access": access,
        "duration_days": 90,
    });
    let (status, a) = as_org(
        app,
        org,
        "POST",
        "/api/v1/consent/agreements",
        Some(proposal),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_string();
    operator.get("/account").await;
    let (status, body) = operator
        .post_json(
            &format!("/api/v1/consent/agreements/{id}/approve"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// The authorisation request path for `agreement`, and its PKCE verifier and nonce.
fn data_request(
    rp: &crate::oidc::Rp,
    agreement: &str,
) -> (
    String,
    openidconnect::PkceCodeVerifier,
    openidconnect::Nonce,
) {
    data_request_for(
        rp,
        json!([{ "type": "civitas_data_agreement", "agreement_id": agreement }]),
    )
}

/// [`data_request`] with any `authorization_details`.
fn data_request_for(
    rp: &crate::oidc::Rp,
    details: Value,
) -> (
    String,
    openidconnect::PkceCodeVerifier,
    openidconnect::Nonce,
) {
    use openidconnect::core::CoreAuthenticationFlow;
    use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_extra_param("authorization_details", details.to_string())
        .set_pkce_challenge(challenge)
        .url();
    (crate::oidc::path_of(url.as_str()), verifier, nonce)
}

/// The person consents on the provider's page; the application exchanges the code (the
/// `openidconnect` crate, checking the ID token) and returns the access token.
async fn consent_and_token(
    app: &TestApp,
    person: &mut Browser,
    rp: &crate::oidc::Rp,
    agreement: &str,
    shows: &str,
) -> String {
    use openidconnect::{AuthorizationCode, OAuth2TokenResponse, TokenResponse};
    let (path, verifier, nonce) = data_request(rp, agreement);
    let page = person.get(&path).await;
    assert!(
        page.body.contains(shows),
        "the consent page names what goes: {}",
        page.body
    );
    let back = crate::oidc::answer_consent(person, &page, "allow").await;
    assert_eq!(back.status, 303, "{}", back.body);
    let code = crate::oidc::param(back.location.as_deref().unwrap(), "code").expect("a code");
    let http = crate::oidc::http();
    let token = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    token
        .id_token()
        .unwrap()
        .claims(&rp.id_token_verifier(), &nonce)
        .expect("the ID token verifies");
    let _ = app;
    token.access_token().secret().clone()
}

/// A release: the status, and the verified claims of a 200 (checked against `/oidc/jwks`,
/// for this client and issuer).
async fn release(app: &TestApp, token: &str, client_id: &str) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}/api/v1/mydata/release", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    if status != 200 {
        return (status, res.json().await.unwrap_or(Value::Null));
    }
    assert_eq!(res.headers()["content-type"], "application/jwt");
    let jws = res.text().await.unwrap();
    (
        status,
        verified(app, &jws, client_id)
            .await
            .expect("the release verifies"),
    )
}

async fn verified(
    app: &TestApp,
    jws: &str,
    client_id: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwks: jsonwebtoken::jwk::JwkSet = app.get("/oidc/jwks").await.json().await.unwrap();
    let header = jsonwebtoken::decode_header(jws)?;
    // Typed, so that it cannot pass for an ID token.
    assert_eq!(header.typ.as_deref(), Some("civitas-release+jwt"));
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[crate::oidc::issuer(app).await]);
    Ok(jsonwebtoken::decode::<Value>(jws, &key, &validation)?.claims)
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
        // The organisation's statistics for its agreement; another organisation's are not found.
        let stats = format!("/api/v1/consent/agreements/{id}/statistics");
        let (status, counts) = as_org(&app, &bank, "GET", &stats, None).await;
        assert_eq!(status, 200);
        assert_eq!((counts["withdrawn"].as_i64(), counts["given"].as_i64()), (Some(1), Some(0)), "{counts}");
        assert_eq!(as_org(&app, &other, "GET", &stats, None).await.0, 404);
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
        // The person checks the receipt they downloaded with `civitas ledger verify`.
        let dir = crate::support::scratch("receipt");
        std::fs::create_dir_all(&dir).unwrap();
        let (file, keys) = (dir.join("receipt.json"), dir.join("jwks.json"));
        std::fs::write(&file, serde_json::to_string(&latest).unwrap()).unwrap();
        std::fs::write(&keys, jwks.to_string()).unwrap();
        let verify = |file: &std::path::Path| {
            crate::cli::run(
                crate::cli::civitas()
                    .args(["ledger", "verify"])
                    .arg(file)
                    .args(["--key", &ledger_key, "--consent-key"])
                    .arg(&keys),
            )
        };
        let (ok, out, err) = verify(&file);
        assert!(ok, "{out}{err}");
        assert!(out.contains("verified: consent") && out.contains("withdrawn"), "{out}");
        let mut forged = latest.clone();
        forged.state = civitas_consent::ConsentState::Given;
        std::fs::write(&file, serde_json::to_string(&forged).unwrap()).unwrap();
        let (ok, _, err) = verify(&file);
        assert!(!ok && err.contains("not this record"), "{err}");
        let checked = person.get(&format!("/account/consents/{record}/verify")).await;
        assert!(checked.status == 200 && checked.body.contains("驗證通過"), "{}", checked.body);
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

    async fn a_person_releases_registry_data_to_an_application_until_they_withdraw(app) {
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let me = &people[0];
        let reg = registered(&app, "First Bank loans").await;
        let bank = (reg.client.client_id.clone(), reg.secret.clone().unwrap());
        let rp = crate::oidc::relying_party(&app, &reg).await;
        let other = organisation(&app, "Another shop").await;
        let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
        let periodic = agreed(&app, &mut operator, &bank, &["population.name", "population.birth_date"], "periodic").await;
        let once = agreed(&app, &mut operator, &bank, &["population.sex"], "one-time").await;
        let theirs = agreed(&app, &mut operator, &other, &["tax.income"], "periodic").await;

        let mut person = Browser::new(&app);
        person.sign_in(&me.national_id, civitas_identity::DEMO_PASSWORD).await;

        // One of the bank's own that rests on a contract is not consented to here.
        let contract = json!({
            "purpose": "loan-application", "legal_basis": "contract", "items": ["population.name"],
            "retention_days": 30, "access": "one-time", "duration_days": 30,
        });
        let (_, c) = as_org(&app, &bank, "POST", "/api/v1/consent/agreements", Some(contract)).await;
        let contract = c["id"].as_str().unwrap().to_string();
        let (status, _) = operator
            .post_json(&format!("/api/v1/consent/agreements/{contract}/approve"), &json!({}), None)
            .await;
        assert_eq!(status, 200);
        // Another organisation's agreement, one not resting on consent, or none that exists,
        // is refused to the client.
        for wrong in [theirs.as_str(), contract.as_str(), "no-such-agreement"] {
            let (path, _, _) = data_request(&rp, wrong);
            let page = person.get(&path).await;
            assert_eq!(page.status, 303, "{}", page.body);
            let to = page.location.unwrap();
            assert_eq!(crate::oidc::param(&to, "error").as_deref(), Some("invalid_authorization_details"), "{to}");
        }

        // An agreement described in RFC 9396's own terms (the kinds of data and the
        // purpose) is the one of the client's approved agreements that fits; a description
        // that fits none, or that leaves out the purpose, is refused.
        let described = |items: &[&str], purpose: Option<&str>| {
            let mut d = json!({ "type": "civitas_data_agreement", "datatypes": items });
            if let Some(p) = purpose {
                d["purpose"] = json!(p);
            }
            data_request_for(&rp, json!([d])).0
        };
        for wrong in [
            described(&["tax.income"], Some("loan-application")),
            described(&["population.name"], Some("loan-application")),
            described(&["population.birth_date", "population.name"], Some("pension-advice")),
            described(&["population.birth_date", "population.name"], None),
        ] {
            let page = person.get(&wrong).await;
            assert_eq!(page.status, 303, "{}", page.body);
            let to = page.location.unwrap();
            assert_eq!(crate::oidc::param(&to, "error").as_deref(), Some("invalid_authorization_details"), "{to}");
        }

        // Refusing is recorded, and gives the client access_denied.
        let path = described(&["population.birth_date", "population.name"], Some("loan-application"));
        let page = person.get(&path).await;
        assert_eq!(page.status, 200, "the described agreement is put to the person: {}", page.body);
        // The person sees, before deciding, who gets what from which register, for what, and
        // for how long it is kept.
        let population = civitas_registry::services::service("population").unwrap();
        for shown in [
            "First Bank loans".to_string(),
            "貸款申請".to_string(),
            "30 天".to_string(),
            "姓名".to_string(),
            "出生日期".to_string(),
            format!("{} ({})", population.title, population.agency),
        ] {
            assert!(page.body.contains(&shown), "the consent page shows {shown}: {}", page.body);
        }
        let back = crate::oidc::answer_consent(&mut person, &page, "deny").await;
        assert_eq!(crate::oidc::param(back.location.as_deref().unwrap(), "error").as_deref(), Some("access_denied"));
        let mine: Value = serde_json::from_str(&person.get("/api/v1/me/consents").await.body).unwrap();
        assert_eq!(mine[0]["record"]["state"], "refused");
        assert_eq!(mine[0]["record"]["agreement_id"], periodic.as_str(), "{mine}");
        // Two approved agreements that fit one description: the client must name one.
        let twin = agreed(&app, &mut operator, &bank, &["population.name", "population.birth_date"], "periodic").await;
        let page = person.get(&path).await;
        let to = page.location.expect("refused to the client");
        assert_eq!(crate::oidc::param(&to, "error").as_deref(), Some("invalid_authorization_details"), "{to}");
        assert!(crate::oidc::param(&to, "error_description").unwrap().contains("agreement_id"), "{to}");
        let (path, _, _) = data_request(&rp, &twin);
        assert_eq!(person.get(&path).await.status, 200);

        // Consent given on the provider's page; the data arrives signed, each item with its
        // source, and nothing outside the agreement.
        let token = consent_and_token(&app, &mut person, &rp, &periodic, "出生日期").await;
        let (status, claims) = release(&app, &token, &bank.0).await;
        assert_eq!(status, 200, "{claims}");
        let data = claims["data"].as_object().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["population.birth_date", "population.name"]);
        let name = &data["population.name"]["value"];
        assert_eq!(
            format!("{}{}", name["family_name"].as_str().unwrap(), name["given_name"].as_str().unwrap()),
            me.name_zh
        );
        assert!(data["population.name"]["value"].get("national_id").is_none(), "{claims}");
        for (item, v) in data {
            assert!(v["source"].as_str().unwrap().ends_with("/GOV/HRO/registry/population"), "{item}: {v}");
            assert_eq!(v["source_name"], population.title, "{item}: {v}");
            assert!(v["last_updated"].is_string() && v["retrieved_at"].is_i64(), "{item}: {v}");
        }
        let consent_id = claims["consent_id"].as_str().unwrap().to_string();

        // A changed release does not verify.
        let jws = {
            let res = app.client.get(format!("{}/api/v1/mydata/release", app.base)).bearer_auth(&token).send().await.unwrap();
            res.text().await.unwrap()
        };
        let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
        parts[1] = parts[1].replacen('e', "f", 1);
        assert!(verified(&app, &parts.join("."), &bank.0).await.is_err());

        // Each release's reads are in the person's tracker, with the consent as the basis.
        let uses: Value = serde_json::from_str(&person.get("/api/v1/me/data-usage").await.body).unwrap();
        let under_consent: Vec<&Value> = uses.as_array().unwrap().iter()
            .filter(|u| u["consent_reference"] == consent_id.as_str()).collect();
        assert!(!under_consent.is_empty(), "{uses}");
        assert!(under_consent.iter().all(|u| u["legal_basis"] == "consent" && u["purpose"] == "loan-application"));
        // Each read names the application the release went to and the items it served: one
        // read of the population register for both items, and no entry besides.
        for u in &under_consent {
            assert_eq!(u["released_to"], bank.0.as_str(), "{u}");
            assert_eq!(u["released_to_name"], "First Bank loans", "{u}");
            assert_eq!(u["released_items"], json!(["population.name", "population.birth_date"]), "{u}");
        }
        let page = person.get("/account/data-usage").await;
        assert!(page.body.contains("依您的同意提供給：First Bank loans"), "{}", page.body);
        // Each use's proof checks out on the page too, and with `civitas ledger verify`.
        let index = under_consent[0]["index"].as_u64().unwrap();
        assert!(page.body.contains(&format!("href=\"/account/data-usage/{index}/verify\"")), "{}", page.body);
        let checked = person.get(&format!("/account/data-usage/{index}/verify")).await;
        assert!(checked.status == 200 && checked.body.contains("驗證通過"), "{}", checked.body);
        let proof = person.get(&format!("/account/data-usage/{index}/proof")).await;
        assert_eq!(proof.status, 200);
        let dir = crate::support::scratch("release-proof");
        std::fs::create_dir_all(&dir).unwrap();
        let (file, key) = (dir.join("proof.txt"), dir.join("ledger.key"));
        std::fs::write(&file, &proof.body).unwrap();
        std::fs::write(&key, app.get("/ledger/key").await.text().await.unwrap()).unwrap();
        let (ok, out, err) = crate::cli::run(
            crate::cli::civitas().args(["ledger", "verify"]).arg(&file).arg("--key").arg(&key),
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("verified: entry {index} is in the log")) && out.contains("event: exchange.call"), "{out}");

        // Paused: nothing; resumed: again; withdrawn (on the "My consents" page, with its
        // verify link): the very next release is refused.
        let page = person.get("/account/consents").await;
        assert!(page.body.contains(&format!("href=\"/account/consents/{consent_id}/verify\"")), "{}", page.body);
        for (change, expect) in [("pause", 403), ("resume", 200), ("withdraw", 403)] {
            if change == "withdraw" {
                person.get("/account/consents").await;
                let done = person
                    .post(&format!("/account/consents/{consent_id}/change"), &[("change", "withdraw")])
                    .await;
                assert_eq!((done.status, done.location.as_deref()), (303, Some("/account/consents")), "{}", done.body);
            } else {
                person.get("/account").await;
                let (status, body) = person
                    .post_json(&format!("/api/v1/me/consents/{consent_id}/{change}"), &json!({}), None)
                    .await;
                assert_eq!(status, 200, "{change}: {body}");
            }
            let (status, body) = release(&app, &token, &bank.0).await;
            assert_eq!(status, expect, "after {change}: {body}");
            if expect == 403 {
                assert_eq!(body["type"], "/problems/consent-not-valid", "{body}");
            }
        }

        // The withdrawn consent stays on the page, among the past ones.
        let page = person.get("/account/consents").await;
        assert!(page.body.contains(&format!("id=\"consent-{consent_id}\"")) && page.body.contains("已撤回"), "{}", page.body);

        // A one-time consent gives one release.
        let token = consent_and_token(&app, &mut person, &rp, &once, "性別").await;
        let before = app.ledger.durable_size();
        let (status, claims) = release(&app, &token, &bank.0).await;
        assert_eq!(status, 200, "{claims}");
        let (status, body) = release(&app, &token, &bank.0).await;
        assert_eq!(status, 403, "{body}");

        // Every release is in the ledger, under the person's tag: the entry of its register
        // read names the application, the consent, the agreement and the items.
        let (index, read) = app.ledger.latest_of_kind("exchange.call").await.unwrap().unwrap();
        assert!(index >= before);
        assert_eq!(read.public["released_to"], bank.0.as_str());
        assert_eq!(read.public["release_of"], format!("consent/{}", claims["consent_id"].as_str().unwrap()));
        assert_eq!(read.public["agreement_id"], once.as_str());
        assert_eq!(read.public["items"], json!(["population.sex"]));
        // What the platform itself said of the read (the agreement's purpose, the consent) is
        // public beside it: no private row to write.
        assert_eq!(read.public["legal_basis"], "consent");
        assert_eq!(read.public["consent_reference"], claims["consent_id"]);
        assert!(read.payload_sha256.is_none());
        assert!(!serde_json::to_string(&read).unwrap().contains(&me.national_id));
        let uses: Value = serde_json::from_str(&person.get("/api/v1/me/data-usage").await.body).unwrap();
        let shown = uses.as_array().unwrap().iter().find(|u| u["index"] == index).expect("the release's read in the tracker");
        assert_eq!(shown["released_items"], json!(["population.sex"]), "{shown}");
        // No entry of another kind for the release.
        assert!(app.ledger.latest_of_kind("consent.released").await.unwrap().is_none());
        app.stop().await;
    }

    async fn an_application_that_registered_an_encryption_key_receives_its_data_encrypted(app) {
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let (jwks, private) = encryption_keys();
        let reg = registered_with_keys(&app, "Sealed bank", Some(jwks)).await;
        let bank = (reg.client.client_id.clone(), reg.secret.clone().unwrap());
        let rp = crate::oidc::relying_party(&app, &reg).await;
        let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
        let periodic = agreed(&app, &mut operator, &bank, &["population.birth_date"], "periodic").await;
        let mut person = Browser::new(&app);
        person.sign_in(&people[1].national_id, civitas_identity::DEMO_PASSWORD).await;
        let token = consent_and_token(&app, &mut person, &rp, &periodic, "出生日期").await;
        let res = app.client.get(format!("{}/api/v1/mydata/release", app.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let jwe = res.text().await.unwrap();
        // Not readable without the key: the JWS is inside.
        assert!(verified(&app, &jwe, &bank.0).await.is_err());
        let claims = verified(&app, &opened(&jwe, private), &bank.0).await.expect("the JWS inside verifies");
        assert!(claims["data"]["population.birth_date"]["value"]["birth_date"].is_string(), "{claims}");

        // A key that is not a P-256 point, or not an EC key, is refused at registration.
        let provider = Provider::new(app.db.clone(), app.ledger.clone(), Settings::new(&crate::oidc::issuer(&app).await));
        for bad in [
            json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "enc", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}),
            json!({"keys": [{"kty": "oct", "use": "enc", "k": "c2VjcmV0"}]}),
        ] {
            let mut new = NewClient::new("Bad keys", vec![crate::oidc::REDIRECT.into()]);
            new.jwks = Some(bad.to_string());
            assert!(provider.register_client(new, "operator:test").await.is_err(), "{bad}");
        }
        app.stop().await;
    }

    async fn forms_are_prefilled_from_the_registers_for_the_person_and_for_agencies(app) {
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let me = &people[0];
        let mut person = Browser::new(&app);
        person.sign_in(&me.national_id, civitas_identity::DEMO_PASSWORD).await;
        person.get("/account").await;
        // The person's own form: each item with its value and where it came from.
        let own = json!({"items": ["population.name", "population.birth_date"], "form": "Driving licence renewal"});
        let (status, filled) = person.post_json("/api/v1/me/prefill", &own, None).await;
        assert_eq!(status, 200, "{filled}");
        let name = &filled["items"]["population.name"];
        assert_eq!(
            format!("{}{}", name["value"]["family_name"].as_str().unwrap(), name["value"]["given_name"].as_str().unwrap()),
            me.name_zh
        );
        assert!(name["source"].as_str().unwrap().ends_with("/GOV/HRO/registry/population"));
        assert!(filled["items"]["population.birth_date"]["last_updated"].is_string());
        // Bad input is refused with a problem, and nothing read.
        let (status, p) = person.post_json("/api/v1/me/prefill", &json!({"items": ["population.shoe_size"], "form": "x"}), None).await;
        assert_eq!((status, p["type"].as_str().unwrap().ends_with("unknown-item")), (400, true), "{p}");
        let (status, _) = person.post_json("/api/v1/me/prefill", &json!({"items": ["population.name"], "form": " "}), None).await;
        assert_eq!(status, 400);
        let (status, _) = person.post_json("/api/v1/me/prefill", &own, Some("wrong")).await;
        assert_eq!(status, 403, "a call without the page's token is refused");
        // A resident is not agency staff.
        let agency = json!({"national_id": me.national_id, "items": ["population.name", "tax.income"],
            "purpose": "Social assistance application", "legal_basis": "Social Assistance Act art. 4"});
        assert_eq!(person.post_json("/api/v1/prefill", &agency, None).await.0, 403);

        // A caseworker of an agency with the right to read the population and tax registers.
        let mut dsa = Browser::new(&app);
        dsa.sign_in("caseworker.1@dsa.gov.example", civitas_identity::DEMO_PASSWORD).await;
        dsa.get("/account").await;
        let (status, filled) = dsa.post_json("/api/v1/prefill", &agency, None).await;
        assert_eq!(status, 200, "{filled}");
        assert!(filled["items"]["tax.income"]["source"].as_str().unwrap().contains("/registry/tax"), "{filled}");
        // One without the right to the population register is refused by the exchange.
        let mut hro = Browser::new(&app);
        hro.sign_in("caseworker.1@hro.gov.example", civitas_identity::DEMO_PASSWORD).await;
        hro.get("/account").await;
        let before = app.ledger.latest_of_kind("prefill.requested").await.unwrap().map(|(i, _)| i);
        let (status, p) = hro.post_json("/api/v1/prefill", &agency, None).await;
        assert_eq!(status, 403, "{p}");
        // Refused before anything was asked or logged.
        assert_eq!(app.ledger.latest_of_kind("prefill.requested").await.unwrap().map(|(i, _)| i), before);
        let mut none = agency.clone();
        none["items"] = json!([]);
        assert_eq!(dsa.post_json("/api/v1/prefill", &none, None).await.0, 400);
        // An agency reads on the law, not on a consent; an unknown item is refused before
        // anything is read or logged.
        let mut by_consent = agency.clone();
        by_consent["legal_basis"] = json!("consent");
        by_consent["consent_id"] = json!("00000000-0000-0000-0000-000000000000");
        let (status, p) = dsa.post_json("/api/v1/prefill", &by_consent, None).await;
        assert_eq!(status, 400, "{p}");
        let logged = app.ledger.latest_of_kind("prefill.requested").await.unwrap().map(|(i, _)| i);
        let mut unknown = agency.clone();
        unknown["items"] = json!(["population.name", "population.secret_wish"]);
        assert_eq!(dsa.post_json("/api/v1/prefill", &unknown, None).await.0, 400);
        assert_eq!(app.ledger.latest_of_kind("prefill.requested").await.unwrap().map(|(i, _)| i), logged);
        let mut nobody = agency.clone();
        nobody["legal_basis"] = json!("");
        assert_eq!(dsa.post_json("/api/v1/prefill", &nobody, None).await.0, 400);

        // Every read is in the person's tracker with its purpose; the agency's request is in
        // the ledger under the staff member's name.
        let uses: Value = serde_json::from_str(&person.get("/api/v1/me/data-usage").await.body).unwrap();
        let purposes: Vec<&str> = uses.as_array().unwrap().iter().filter_map(|u| u["purpose"].as_str()).collect();
        assert!(purposes.iter().any(|p| p.contains("Driving licence renewal")), "{purposes:?}");
        assert!(purposes.contains(&"Social assistance application"), "{purposes:?}");
        let asked = app.ledger.latest_of_kind("prefill.requested").await.unwrap().unwrap().1;
        assert!(asked.actor.starts_with("account:"), "{}", asked.actor);
        app.stop().await;
    }

    async fn the_people_who_act_for_an_organisation_see_its_agreements_and_check_consents(app) {
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let bank = organisation(&app, "First Bank loans").await;
        let other = organisation(&app, "Another shop").await;
        let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
        let ours = agreed(&app, &mut operator, &bank, &["population.name"], "periodic").await;
        let theirs = agreed(&app, &mut operator, &other, &["tax.income"], "periodic").await;
        let mut person = Browser::new(&app);
        person.sign_in(&people[0].national_id, civitas_identity::DEMO_PASSWORD).await;
        person.get("/account/consents").await;
        let mut consent = Vec::new();
        for agreement in [&ours, &theirs] {
            let (status, r) = person
                .post_json("/api/v1/me/consents", &json!({"agreement_id": agreement, "decision": "give"}), None)
                .await;
            assert_eq!(status, 201, "{r}");
            consent.push(r["record_id"].as_str().unwrap().to_string());
        }

        // Before the operator names them, someone acts for no organisation.
        let mut rep = Browser::new(&app);
        rep.sign_in("caseworker.2@dsa.gov.example", civitas_identity::DEMO_PASSWORD).await;
        let page = rep.get("/org").await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("First Bank loans"), "{}", page.body);
        // The operator names them; an unknown organisation or account is an error on the form.
        for (client, member) in [("no-such-client", "caseworker.2@dsa.gov.example"), (bank.0.as_str(), "nobody@nowhere.example")] {
            let again = operator.post("/admin/consent", &[("action", "member"), ("client_id", client), ("member", member)]).await;
            assert_eq!(again.status, 422, "{}", again.body);
            assert!(again.body.contains("error-summary"));
        }
        let done = operator
            .post("/admin/consent", &[("action", "member"), ("client_id", &bank.0), ("member", "CASEWORKER.2@dsa.gov.example")])
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        let again = operator
            .post("/admin/consent", &[("action", "member"), ("client_id", &bank.0), ("member", "caseworker.2@dsa.gov.example")])
            .await;
        assert_eq!(again.status, 422, "named once");
        let added = app.ledger.latest_of_kind("consent.org_member_added").await.unwrap().unwrap().1;
        assert!(added.actor.starts_with("account:"), "{}", added.actor);

        // Now they see the bank's agreements with their consent counts, and not the shop's.
        let page = rep.get("/org").await;
        assert!(page.body.contains("First Bank loans") && page.body.contains(&ours), "{}", page.body);
        assert!(!page.body.contains(&theirs));
        assert!(page.body.contains("<td>1</td>"), "one consent given: {}", page.body);
        // A consent to the bank's agreement checks as valid; the shop's is not found.
        let page = rep.get(&format!("/org?client={}&consent={}", bank.0, consent[0])).await;
        assert!(page.body.contains("<dd>given</dd>"), "{}", page.body);
        let page = rep.get(&format!("/org?client={}&consent={}", bank.0, consent[1])).await;
        assert!(!page.body.contains("<dd>given</dd>"), "{}", page.body);
        assert!(page.body.contains("id=\"checked\""), "the check is answered");
        // Nothing is checked for an organisation they do not act for.
        let page = rep.get(&format!("/org?client={}&consent={}", other.0, consent[1])).await;
        assert!(!page.body.contains("id=\"checked\""), "{}", page.body);
        // The operator sees who acts for whom, and removes them: the page closes for them.
        let admin = operator.get("/admin/consent").await;
        assert!(admin.body.contains("caseworker.2@dsa.gov.example"), "{}", admin.body);
        let account_id: String = civitas_store::sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
            .bind("caseworker.2@dsa.gov.example")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
        let done = operator
            .post("/admin/consent", &[("action", "remove_member"), ("client_id", &bank.0), ("member", &account_id)])
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        assert!(!rep.get("/org").await.body.contains("First Bank loans"));
        assert!(app.ledger.latest_of_kind("consent.org_member_removed").await.unwrap().is_some());
        app.stop().await;
    }

    async fn the_operator_decides_agreements_and_registers_purposes_on_the_admin_page(app) {
        let bank = organisation(&app, "First Bank loans").await;
        let proposal = json!({
            "purpose": "loan-application", "legal_basis": "consent", "items": ["tax.income"],
            "retention_days": 30, "access": "one-time", "duration_days": 30,
        });
        let (_, a) = as_org(&app, &bank, "POST", "/api/v1/consent/agreements", Some(proposal.clone())).await;
        let (_, b) = as_org(&app, &bank, "POST", "/api/v1/consent/agreements", Some(proposal)).await;
        let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
        let page = operator.get("/admin/consent").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("First Bank loans") && page.body.contains("綜合所得稅"), "{}", page.body);
        // A rejection needs its reason: the form comes back with the error.
        let again = operator.post("/admin/consent", &[("action", "reject"), ("id", a), ("reason", "")]).await;
        assert_eq!(again.status, 422, "{}", again.body);
        assert!(again.body.contains("error-summary"));
        let done = operator
            .post("/admin/consent", &[("action", "reject"), ("id", a), ("reason", "asks for more than a loan needs")])
            .await;
        assert_eq!((done.status, done.location.as_deref()), (303, Some("/admin/consent")));
        let done = operator.post("/admin/consent", &[("action", "approve"), ("id", b)]).await;
        assert_eq!(done.status, 303);
        let done = operator
            .post("/admin/consent", &[("action", "purpose"), ("code", "pension-advice"), ("name_en", "Pension advice"), ("name_zh", "退休金諮詢")])
            .await;
        assert_eq!(done.status, 303);
        let (_, mine) = as_org(&app, &bank, "GET", "/api/v1/consent/agreements", None).await;
        let state = |id: &str| mine.as_array().unwrap().iter().find(|x| x["id"] == id).unwrap()["state"].clone();
        assert_eq!((state(a), state(b)), (json!("rejected"), json!("approved")));
        let purposes: Value = app.get("/api/v1/consent/purposes").await.json().await.unwrap();
        assert!(purposes.as_array().unwrap().iter().any(|p| p["code"] == "pension-advice"));
        let approved = app.ledger.latest_of_kind("consent.agreement_approved").await.unwrap().unwrap().1;
        assert!(approved.actor.starts_with("account:"), "{}", approved.actor);
        // Staff are not operators.
        let mut staff = crate::authz::at_substantial(&app, "agency_admin.1@hro.gov.example").await;
        assert_eq!(staff.get("/admin/consent").await.status, 403);
        app.stop().await;
    }

    async fn a_resident_sees_and_downloads_what_the_registers_hold_about_them(app) {
        let people = civitas_registry::demo_people(&app.db).await.unwrap();
        let me = &people[0];
        let mut person = Browser::new(&app);
        person.sign_in(&me.national_id, civitas_identity::DEMO_PASSWORD).await;
        let page = person.get("/account/my-data").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Population and household register"), "{}", page.body);
        assert!(page.body.contains(&me.national_id));
        // Fields by their names for people, not the registers' column names.
        assert!(page.body.contains("出生日期") || page.body.contains("Date of birth"), "{}", page.body);
        assert!(!page.body.contains("<dt>birth_date</dt>"));
        let file = person.get("/account/my-data.json").await;
        assert_eq!(file.status, 200);
        let file: Value = serde_json::from_str(&file.body).unwrap();
        let population = file["registers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"].as_str().unwrap().ends_with("/GOV/HRO/registry/population"))
            .expect("the population register");
        assert_eq!(population["reads"][0]["data"]["national_id"], me.national_id.as_str());
        // And as a PDF, with the person's name and the registers in it (UCS-2 text).
        let pdf = app.client.get(format!("{}/account/my-data.pdf", app.base))
            .header("cookie", person.cookie_header()).send().await.unwrap();
        assert_eq!(pdf.status(), 200);
        assert_eq!(pdf.headers()["content-type"], "application/pdf");
        let pdf = pdf.bytes().await.unwrap();
        assert!(pdf.starts_with(b"%PDF-1.7") && pdf.ends_with(b"%%EOF\n"));
        let ucs2 = |s: &str| s.chars().map(|c| format!("{:04X}", c as u32)).collect::<String>();
        let text = String::from_utf8_lossy(&pdf);
        for shown in [me.national_id.as_str(), "Population and household register"] {
            assert!(text.contains(&ucs2(shown)), "{shown} is in the PDF");
        }
        // Read through the exchange, at the person's own request: in their tracker.
        let uses: Value = serde_json::from_str(&person.get("/api/v1/me/data-usage").await.body).unwrap();
        assert!(
            uses.as_array().unwrap().iter().any(|u| u["purpose"].as_str().unwrap_or_default().starts_with("My data")),
            "{uses}"
        );
        app.stop().await;
    }
}
