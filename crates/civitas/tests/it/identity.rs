//! Identity end to end: password sign-in and lockout, anti-forgery tokens, registration
//! against the population register, authenticator apps and step-up, sessions and their
//! timeouts, mandates, and passkeys (with a software authenticator). Every test speaks HTTP to the running server.

use civitas_identity::softkey::SoftKey;
use civitas_store::sqlx::{self, Row};
use serde_json::json;

use crate::on_both_engines;
use crate::support::{Browser, TestApp, hidden_value};

const STAFF: &str = "caseworker.1@hro.gov.example";

/// Event kinds in the ledger, oldest first.
async fn ledger_kinds(app: &TestApp) -> Vec<(String, String)> {
    let rows = sqlx::query("SELECT data FROM ledger_entries ORDER BY idx")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let bytes: Vec<u8> = r.try_get("data").unwrap();
            let text = String::from_utf8(bytes).unwrap();
            let e = civitas_ledger::Event::decode(text.as_bytes()).unwrap();
            (e.kind.clone(), text)
        })
        .collect()
}

/// The current TOTP code for a base32 secret.
pub(crate) fn totp_now(secret_b32: &str) -> String {
    totp_ahead(secret_b32, 0)
}

/// The TOTP code `steps` steps from now (the server accepts one step of clock drift).
pub(crate) fn totp_ahead(secret_b32: &str, steps: u64) -> String {
    let secret = base32_decode(secret_b32);
    let step = steps
        + civitas_identity::totp::step_of(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    format!("{:06}", civitas_identity::totp::code_at_step(&secret, step))
}

fn base32_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'2'..=b'7' => ch - b'2' + 26,
            _ => continue,
        } as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buf >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

/// A parent of the demo's newborn who has an e-mail address in the register.
async fn newborns_parent(app: &TestApp) -> (String, String, String) {
    let row = sqlx::query(
        "SELECT p.national_id, p.birth_date, c.family_name || c.given_name AS child
         FROM demo_people d JOIN parent_links l ON l.child_id = d.person_id
         JOIN persons p ON p.id = l.parent_id JOIN persons c ON c.id = d.person_id
         WHERE d.role = 'baby_born_last_week' AND p.email IS NOT NULL ORDER BY p.id LIMIT 1",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    (
        row.try_get("national_id").unwrap(),
        row.try_get("birth_date").unwrap(),
        row.try_get("child").unwrap(),
    )
}

/// Registers a person through the pages; returns the signed-in browser.
async fn register(app: &TestApp, national_id: &str, birth_date: &str) -> Browser {
    let mut b = Browser::new(app);
    b.get("/register").await;
    let page = b
        .post(
            "/register",
            &[("national_id", national_id), ("birth_date", birth_date)],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let confirm = b.get(page.location.as_deref().unwrap()).await;
    assert!(confirm.body.contains("***@"), "masked address shown");
    let mail = b.get("/dev/mail").await.body;
    let code: String = mail
        .split("registration code is ")
        .nth(1)
        .unwrap()
        .chars()
        .take(6)
        .collect();
    b.get("/register/confirm").await;
    // A leaked password is refused, and the code stays usable.
    let weak = b
        .post(
            "/register/confirm",
            &[("code", &code), ("password", "password123")],
        )
        .await;
    assert_eq!(weak.status, 422);
    assert!(weak.body.contains("error-summary"));
    assert!(weak.body.contains("href=\"#password\""));
    let wrong = b
        .post(
            "/register/confirm",
            &[
                ("code", "000000x"),
                ("password", "Tainan-lantern-47-oyster"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    let done = b
        .post(
            "/register/confirm",
            &[("code", &code), ("password", "Tainan-lantern-47-oyster")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/account"));
    b
}

on_both_engines! {
    async fn password_sign_in_starts_a_session_that_sign_out_ends(app) {
        let mut b = Browser::new(&app);
        let page = b.get("/account").await;
        assert_eq!(page.status, 303);
        assert_eq!(page.location.as_deref(), Some("/signin?next=/account"));
        b.get("/signin").await;
        let page = b
            .post("/signin", &[("identifier", " CASEWORKER.1@hro.gov.example "), ("password", civitas_identity::DEMO_PASSWORD), ("next", "/account/sessions")])
            .await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/account/sessions"));
        let cookie = page.set_cookies.iter().find(|c| c.starts_with("civitas_session=")).unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        let old_token = b.cookie("civitas_session").unwrap().to_string();
        let account = b.get("/account").await;
        assert_eq!(account.status, 200);
        assert!(account.body.contains(STAFF));
        assert!(account.body.contains(">low<"));
        // A second sign-in gets a new session id, and both are listed.
        let mut other = Browser::new(&app);
        other.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
        assert_ne!(other.cookie("civitas_session").unwrap(), old_token);
        let sessions = b.get("/account/sessions").await;
        assert_eq!(sessions.body.matches("name=\"session\"").count(), 2);
        // Sign out ends the session on the server, not only in the browser.
        let out = b.post("/signout", &[]).await;
        assert_eq!(out.status, 303);
        b.set_cookie("civitas_session", &old_token);
        assert_eq!(b.get("/account").await.status, 303);
        let kinds = ledger_kinds(&app).await;
        assert!(kinds.iter().any(|(k, _)| k == "identity.signed_in"));
        assert!(kinds.iter().any(|(k, _)| k == "identity.signed_out"));
        app.stop().await;
    }

    async fn repeated_wrong_passwords_lock_the_account_and_are_logged_without_secrets(app) {
        let mut b = Browser::new(&app);
        b.get("/signin").await;
        for _ in 0..5 {
            let page = b.post("/signin", &[("identifier", STAFF), ("password", "Wrong-guess-123456")]).await;
            assert!(page.status == 422 || page.status == 429, "{}", page.status);
            assert!(page.body.contains("error-summary"));
        }
        // Locked: even the right password is refused for now, with a Retry-After.
        let page = b.post("/signin", &[("identifier", STAFF), ("password", civitas_identity::DEMO_PASSWORD)]).await;
        assert_eq!(page.status, 429);
        // An unknown identifier fails like a wrong password.
        let page = b.post("/signin", &[("identifier", "nobody@x.gov.example"), ("password", "Wrong-guess-123456")]).await;
        assert_eq!(page.status, 422);
        let kinds = ledger_kinds(&app).await;
        let failures: Vec<_> = kinds.iter().filter(|(k, _)| k == "identity.sign_in_failed").collect();
        assert_eq!(failures.len(), 6);
        assert!(failures.iter().all(|(_, t)| !t.contains("Wrong-guess") && !t.contains(STAFF)));
        app.stop().await;
    }

    async fn forms_need_the_anti_forgery_token_and_the_same_origin(app) {
        let mut b = Browser::new(&app);
        b.get("/signin").await;
        let page = b.post("/signin", &[("identifier", STAFF), ("password", civitas_identity::DEMO_PASSWORD), ("csrf", "forged")]).await;
        assert_eq!(page.status, 422);
        assert!(b.cookie("civitas_session").is_none());
        b.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
        // Signed in, the token is bound to the session: the anonymous one no longer works.
        let page = b.post("/signout", &[("csrf", "0123456789")]).await;
        assert_eq!(page.status, 403);
        let res = reqwest::Client::new()
            .post(format!("{}/signout", app.base))
            .header("cookie", format!("civitas_session={}", b.cookie("civitas_session").unwrap()))
            .header("origin", "https://evil.example")
            .form(&[("csrf", b.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(b.get("/account").await.status, 200, "still signed in");
        app.stop().await;
    }

    async fn a_citizen_registers_against_the_register_and_acts_for_their_baby(app) {
        let (nid, birth, child) = newborns_parent(&app).await;
        // Details that do not match the register are refused.
        let mut stranger = Browser::new(&app);
        stranger.get("/register").await;
        let page = stranger.post("/register", &[("national_id", &nid), ("birth_date", "1900-01-01")]).await;
        assert_eq!(page.status, 422);
        let mut b = register(&app, &nid, &birth).await;
        let account = b.get("/account").await;
        assert!(account.body.contains(&nid));
        // Registering twice is refused.
        let mut again = Browser::new(&app);
        again.get("/register").await;
        let page = again.post("/register", &[("national_id", &nid), ("birth_date", &birth)]).await;
        assert_eq!(page.status, 422);
        // The register makes the parent the newborn's mandate holder.
        let mandates = b.get("/account/mandates").await;
        assert!(mandates.body.contains(&child), "{}", mandates.body);
        let key = mandates.body.split("name=\"key\" value=\"parent:").nth(1).unwrap().split('"').next().unwrap().to_string();
        let acted = b.post("/account/act-for", &[("key", &format!("parent:{key}"))]).await;
        assert_eq!(acted.status, 303);
        let account = b.get("/account").await;
        assert!(account.body.contains(&child));
        // A mandate the person does not hold is refused.
        let page = b.post("/account/act-for", &[("key", "parent:1")]).await;
        assert_eq!(page.status, 404);
        let kinds = ledger_kinds(&app).await;
        assert!(kinds.iter().any(|(k, _)| k == "identity.account_registered"));
        let used = kinds.iter().find(|(k, _)| k == "identity.mandate_used").unwrap();
        assert!(used.1.contains("\"actor\""), "both actor and principal recorded: {}", used.1);
        assert!(!used.1.contains(&nid));
        app.stop().await;
    }

    async fn an_authenticator_app_adds_a_second_step_and_the_level_substantial(app) {
        let mut b = Browser::new(&app);
        b.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
        b.get("/account/security").await;
        let setup = b.post("/account/totp", &[]).await;
        assert_eq!(setup.status, 200);
        let secret = setup.body.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_string();
        let wrong = b.post("/account/totp/confirm", &[("code", "000000"), ("secret", &secret), ("uri", "x")]).await;
        assert_eq!(wrong.status, 422);
        let done = b.post("/account/totp/confirm", &[("code", &totp_now(&secret))]).await;
        assert_eq!(done.status, 200);
        let codes: Vec<String> = done.body.split("id=\"recovery-codes\">").nth(1).unwrap()
            .split("</ul>").next().unwrap().split("<li>").skip(1)
            .map(|c| c.split('<').next().unwrap().to_string()).collect();
        assert_eq!(codes.len(), 10);
        // Now a password alone is not enough.
        let mut c = Browser::new(&app);
        c.get("/signin").await;
        let page = c.post("/signin", &[("identifier", STAFF), ("password", civitas_identity::DEMO_PASSWORD), ("next", "/account")]).await;
        assert_eq!(page.status, 303);
        assert!(page.location.as_deref().unwrap().starts_with("/signin/code"));
        assert!(c.cookie("civitas_session").is_none());
        c.get(page.location.as_deref().unwrap()).await;
        assert_eq!(c.post("/signin/code", &[("code", "123456"), ("next", "/account")]).await.status, 422);
        // The code just used for confirming cannot be replayed; a recovery code works once.
        let page = c.post("/signin/code", &[("code", &codes[0].to_uppercase()), ("next", "/account")]).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert!(c.get("/account").await.body.contains(">low<"), "recovery code gives level low");
        // Step-up to substantial with the app is refused with a replayed code.
        let page = c.get("/account/mandates").await;
        assert_eq!(page.status, 200);
        c.get("/signin/step-up?need=substantial&next=/account").await;
        let page = c.post("/signin/step-up", &[("code", "999999"), ("next", "/account")]).await;
        assert_eq!(page.status, 422);
        let mut d = Browser::new(&app);
        d.get("/signin").await;
        d.post("/signin", &[("identifier", STAFF), ("password", civitas_identity::DEMO_PASSWORD)]).await;
        d.get("/signin/code").await;
        assert_eq!(d.post("/signin/code", &[("code", &codes[0])]).await.status, 422, "recovery codes work once");
        let kinds = ledger_kinds(&app).await;
        assert!(kinds.iter().any(|(k, _)| k == "identity.totp_enabled"));
        assert!(kinds.iter().all(|(_, t)| !t.contains(&secret)));
        app.stop().await;
    }

    async fn idle_and_expired_sessions_end(app) {
        let mut b = Browser::new(&app);
        b.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
        assert_eq!(b.get("/account").await.status, 200);
        sqlx::query("UPDATE sessions SET last_seen_ms = last_seen_ms - 31 * 60000")
            .execute(app.db.pool()).await.unwrap();
        assert_eq!(b.get("/account").await.status, 303, "idle for 31 minutes");
        b.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
        sqlx::query("UPDATE sessions SET expires_ms = 1 WHERE ended_ms IS NULL")
            .execute(app.db.pool()).await.unwrap();
        assert_eq!(b.get("/account").await.status, 303, "past the absolute timeout");
        let reasons: Vec<String> = sqlx::query("SELECT ended_reason FROM sessions ORDER BY created_ms")
            .fetch_all(app.db.pool()).await.unwrap()
            .iter().map(|r| r.try_get("ended_reason").unwrap()).collect();
        assert_eq!(reasons, vec!["idle".to_string(), "expired".to_string()]);
        app.stop().await;
    }
}

/// Granting needs level substantial; a granted mandate reaches the grantee and revoking it
/// takes it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_mandates_need_a_second_factor_and_can_be_revoked() {
    let app = TestApp::spawn(crate::support::Engine::Sqlite)
        .await
        .unwrap();
    let (nid, birth, _) = newborns_parent(&app).await;
    let mut grantor = register(&app, &nid, &birth).await;
    let grantee_nid: String = {
        let featured = civitas_registry::demo_people(&app.db).await.unwrap();
        featured
            .iter()
            .find(|p| p.role == "elderly_living_alone")
            .unwrap()
            .national_id
            .clone()
    };
    grantor.get("/account/mandates").await;
    let today = civitas_identity::Identity::today();
    let fields = [
        ("grantee", grantee_nid.as_str()),
        ("scope", "benefits"),
        ("valid_from", today.as_str()),
        ("valid_until", "2099-01-01"),
        ("note", "home visits"),
    ];
    let page = grantor.post("/account/mandates", &fields).await;
    assert_eq!(page.status, 303);
    assert!(
        page.location
            .unwrap()
            .starts_with("/signin/step-up?need=substantial")
    );
    // Set up an authenticator, step up, then grant.
    let setup = grantor.post("/account/totp", &[]).await;
    let secret = setup
        .body
        .split("id=\"totp-secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let first = totp_now(&secret);
    assert_eq!(
        grantor
            .post("/account/totp/confirm", &[("code", &first)])
            .await
            .status,
        200
    );
    grantor
        .get("/signin/step-up?need=substantial&next=/account/mandates")
        .await;
    // The code that confirmed the app cannot be used again; the next step's code can.
    let replay = grantor
        .post(
            "/signin/step-up",
            &[("code", &first), ("next", "/account/mandates")],
        )
        .await;
    assert_eq!(replay.status, 422);
    let stepped = grantor
        .post(
            "/signin/step-up",
            &[
                ("code", &totp_ahead(&secret, 1)),
                ("next", "/account/mandates"),
            ],
        )
        .await;
    assert_eq!(stepped.status, 303, "{}", stepped.body);
    grantor.get("/account/mandates").await;
    let too_long = grantor.post("/account/mandates", &fields).await;
    assert_eq!(too_long.status, 422, "an endless mandate is refused");
    assert!(too_long.body.contains("href=\"#valid_until\""));
    let fields = [
        ("grantee", grantee_nid.as_str()),
        ("scope", "benefits"),
        ("valid_from", today.as_str()),
        ("valid_until", "2027-06-30"),
        ("note", "home visits"),
    ];
    assert_eq!(grantor.post("/account/mandates", &fields).await.status, 303);
    // The grantee is told, at the contact the register holds for them.
    let person = civitas_registry::person_by_national_id(&app.db, &grantee_nid)
        .await
        .unwrap()
        .unwrap();
    let contact = person.email.clone().or(person.phone.clone()).unwrap();
    let told = mail_to(&app, &contact, "A mandate for you", 1).await;
    assert!(
        told[0].body.contains("benefits") && told[0].body.contains("2027-06-30"),
        "{}",
        told[0].body
    );
    let mut grantee = Browser::new(&app);
    grantee
        .sign_in(&grantee_nid, civitas_identity::DEMO_PASSWORD)
        .await;
    // A sign-in from a browser new to the account is told of; the same browser again is not.
    mail_to(&app, &contact, "New sign-in", 1).await;
    Browser::new(&app)
        .sign_in(&grantee_nid, civitas_identity::DEMO_PASSWORD)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    mail_to(&app, &contact, "New sign-in", 1).await;
    let held = grantee.get("/account/mandates").await;
    assert!(held.body.contains("2027-06-30"), "{}", held.body);
    let given = grantor.get("/account/mandates").await;
    let id = hidden_value(
        given.body.split("/account/mandates/revoke").nth(1).unwrap(),
        "key",
    )
    .unwrap();
    assert_eq!(
        grantor
            .post("/account/mandates/revoke", &[("key", &id)])
            .await
            .status,
        303
    );
    let held = grantee.get("/account/mandates").await;
    assert!(!held.body.contains("2027-06-30"));
    mail_to(&app, &contact, "A mandate was revoked", 1).await;
    let kinds = ledger_kinds(&app).await;
    for kind in [
        "identity.mandate_granted",
        "identity.mandate_revoked",
        "identity.stepped_up",
    ] {
        assert!(kinds.iter().any(|(k, _)| k == kind), "{kind}");
    }
    app.stop().await;
}

/// The messages to `to` whose subject has `subject` in it, once there are `n` (waiting up to
/// five seconds: alerts are sent in the background); exactly `n`.
async fn mail_to(
    app: &TestApp,
    to: &str,
    subject: &str,
    n: usize,
) -> Vec<civitas_identity::SentMessage> {
    let sink = civitas_identity::MailSink::new(app.db.clone());
    let mut found = Vec::new();
    for _ in 0..50 {
        found = sink
            .recent(200)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.recipient == to && m.subject.contains(subject))
            .collect();
        if found.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), n, "messages to {to} about {subject:?}");
    found
}

// ----- passkeys -------------------------------------------------------------------------

/// A featured demo citizen's identification number (they have the demo password).
async fn featured_citizen(app: &TestApp, role: &str) -> String {
    civitas_registry::demo_people(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.role == role)
        .unwrap()
        .national_id
}

/// A software authenticator used from the test site's origin (`http://localhost:PORT`).
fn soft_key(app: &TestApp) -> SoftKey {
    SoftKey::new(&app.config.base_url()).unwrap()
}

/// Starts a ceremony at `path`; returns its id and the options for the authenticator.
async fn ceremony(b: &mut Browser, path: &str) -> (String, String) {
    let (status, mut started) = b.post_json(path, &json!({}), None).await;
    assert_eq!(status, 200, "{started}");
    let id = started["ceremony"].as_str().unwrap().to_string();
    started.as_object_mut().unwrap().remove("ceremony");
    (id, started.to_string())
}

/// Adds a passkey to the signed-in account through the JSON endpoints.
async fn add_passkey(b: &mut Browser, key: &mut SoftKey, label: &str) {
    b.get("/account/security").await;
    let (id, options) = ceremony(b, "/account/passkeys/start").await;
    let credential: serde_json::Value =
        serde_json::from_str(&key.register(&options).unwrap()).unwrap();
    let (status, done) = b
        .post_json(
            "/account/passkeys/finish",
            &json!({"ceremony": id, "credential": credential, "label": label}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["redirect"], "/account/security?passkey=added");
}

/// Signs in with a passkey alone; returns the finish answer.
async fn passkey_sign_in(b: &mut Browser, key: &mut SoftKey) -> (u16, serde_json::Value) {
    let page = b.get("/signin").await;
    assert!(page.body.contains("id=\"passkey-sign-in\""));
    let (id, options) = ceremony(b, "/signin/passkey/start").await;
    let credential: serde_json::Value =
        serde_json::from_str(&key.sign_in(&options).unwrap()).unwrap();
    b.post_json(
        "/signin/passkey/finish",
        &json!({"ceremony": id, "credential": credential, "next": "/account"}),
        None,
    )
    .await
}

mod passkeys {
    use super::*;

    on_both_engines! {
        async fn a_citizen_adds_a_passkey_signs_in_with_it_alone_at_level_high_and_removes_it(app) {
            let nid = featured_citizen(&app, "elderly_living_alone").await;
            let mut key = soft_key(&app);
            let mut b = Browser::new(&app);
            b.sign_in(&nid, civitas_identity::DEMO_PASSWORD).await;
            let security = b.get("/account/security").await;
            assert!(security.body.contains("data-passkey=\"create\""), "{}", security.body);
            assert!(security.body.contains("data-passkey-nojs"));
            add_passkey(&mut b, &mut key, "Grandma's phone").await;
            let security = b.get("/account/security?passkey=added").await;
            assert!(security.body.contains("Grandma&#39;s phone") || security.body.contains("Grandma&#x27;s phone"), "{}", security.body);
            assert!(security.body.contains("role=\"status\""));
            assert_eq!(b.post("/signout", &[]).await.status, 303);
            assert!(b.cookie("civitas_session").is_none());

            let (status, done) = passkey_sign_in(&mut b, &mut key).await;
            assert_eq!(status, 200, "{done}");
            assert_eq!(done["redirect"], "/account");
            assert!(b.cookie("civitas_session").is_some());
            let account = b.get("/account").await;
            assert!(account.body.contains(&nid));
            assert!(account.body.contains(">high<"), "{}", account.body);

            // Removing it (the passkey session is above substantial) takes it off the account.
            let security = b.get("/account/security").await;
            let id = hidden_value(security.body.split("/account/passkeys/remove").nth(1).unwrap(), "passkey").unwrap();
            let removed = b.post("/account/passkeys/remove", &[("passkey", &id)]).await;
            assert_eq!(removed.status, 303);
            assert_eq!(removed.location.as_deref(), Some("/account/security"));
            assert!(!b.get("/account/security").await.body.contains("Grandma"));
            let mut other = Browser::new(&app);
            let (status, _) = passkey_sign_in(&mut other, &mut key).await;
            assert_eq!(status, 400, "a removed passkey no longer signs in");

            let kinds = ledger_kinds(&app).await;
            assert!(kinds.iter().any(|(k, _)| k == "identity.passkey_added"));
            assert!(kinds.iter().any(|(k, _)| k == "identity.passkey_removed"));
            let signed_in = kinds.iter().rfind(|(k, _)| k == "identity.signed_in").unwrap();
            assert!(signed_in.1.contains("\"hwk\"") && signed_in.1.contains("\"high\""), "{}", signed_in.1);
            app.stop().await;
        }
    }
}

/// A staff passkey gives substantial; wrong origins, replays and missing tokens are refused;
/// a passkey steps a password session up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_refuse_forgeries_and_replays_and_step_sessions_up() {
    let app = TestApp::spawn(crate::support::Engine::Sqlite)
        .await
        .unwrap();
    assert_eq!(
        app.get("/assets/passkey.js").await.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let mut key = soft_key(&app);
    let mut staff = Browser::new(&app);
    staff.sign_in(STAFF, civitas_identity::DEMO_PASSWORD).await;
    add_passkey(&mut staff, &mut key, "Office laptop").await;
    staff.post("/signout", &[]).await;

    // The anti-forgery header is required, and must be this visitor's.
    staff.get("/signin").await;
    for token in ["", "forged"] {
        let (status, problem) = staff
            .post_json("/signin/passkey/start", &json!({}), Some(token))
            .await;
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["type"], "/problems/csrf");
    }

    // A response made for another origin (a phishing page relaying the ceremony) is refused.
    let (id, options) = ceremony(&mut staff, "/signin/passkey/start").await;
    let mut phished = key.clone();
    phished.set_origin("https://civitas.evil.example").unwrap();
    let credential: serde_json::Value =
        serde_json::from_str(&phished.sign_in(&options).unwrap()).unwrap();
    let (status, problem) = staff
        .post_json(
            "/signin/passkey/finish",
            &json!({"ceremony": id, "credential": credential}),
            None,
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(staff.cookie("civitas_session").is_none());

    // The real one works once, at substantial for staff; its replay is refused.
    let (id, options) = ceremony(&mut staff, "/signin/passkey/start").await;
    let credential: serde_json::Value =
        serde_json::from_str(&key.sign_in(&options).unwrap()).unwrap();
    let body = json!({"ceremony": id, "credential": credential, "next": "//evil.example"});
    let (status, done) = staff.post_json("/signin/passkey/finish", &body, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["redirect"], "/account", "next is sanitised");
    let account = staff.get("/account").await;
    assert!(account.body.contains(">substantial<"), "{}", account.body);
    let mut replayer = Browser::new(&app);
    replayer.get("/signin").await;
    let (status, _) = replayer
        .post_json("/signin/passkey/finish", &body, None)
        .await;
    assert_eq!(status, 400, "a ceremony is single-use");

    // A citizen signed in with a password (low) steps up with their passkey.
    let nid = featured_citizen(&app, "elderly_living_alone").await;
    let mut citizen_key = soft_key(&app);
    let mut c = Browser::new(&app);
    c.sign_in(&nid, civitas_identity::DEMO_PASSWORD).await;
    add_passkey(&mut c, &mut citizen_key, "Phone").await;
    let page = c.get("/account/mandates").await;
    assert_eq!(page.status, 200);
    let page = c
        .get("/signin/step-up?need=substantial&next=/account/mandates")
        .await;
    assert!(
        page.body.contains("id=\"passkey-step-up-button\""),
        "{}",
        page.body
    );
    let old_token = c.cookie("civitas_session").unwrap().to_string();
    let (id, options) = ceremony(&mut c, "/signin/step-up/passkey/start").await;
    // Another account's passkey does not step this session up.
    let wrong: serde_json::Value =
        serde_json::from_str(&key.sign_in(&options).unwrap_or_else(|_| "{}".into())).unwrap();
    let (status, _) = c
        .post_json(
            "/signin/step-up/passkey/finish",
            &json!({"ceremony": id, "credential": wrong}),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let (id, options) = ceremony(&mut c, "/signin/step-up/passkey/start").await;
    let credential: serde_json::Value =
        serde_json::from_str(&citizen_key.sign_in(&options).unwrap()).unwrap();
    let (status, done) = c
        .post_json(
            "/signin/step-up/passkey/finish",
            &json!({"ceremony": id, "credential": credential, "next": "/account/mandates"}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["redirect"], "/account/mandates");
    assert_ne!(
        c.cookie("civitas_session").unwrap(),
        old_token,
        "step-up rotates the token"
    );
    assert!(c.get("/account").await.body.contains(">high<"));

    let kinds = ledger_kinds(&app).await;
    let failed: Vec<_> = kinds
        .iter()
        .filter(|(k, t)| k == "identity.sign_in_failed" && t.contains("\"passkey\""))
        .collect();
    assert_eq!(failed.len(), 2, "the foreign origin and the replay");
    let credential_id = credential["id"].as_str().unwrap();
    assert!(kinds.iter().all(|(_, t)| !t.contains(credential_id)));
    let stepped = kinds
        .iter()
        .find(|(k, _)| k == "identity.stepped_up")
        .unwrap();
    assert!(stepped.1.contains("\"hwk\""), "{}", stepped.1);
    let signed_in = kinds.iter().any(|(k, t)| {
        k == "identity.signed_in" && t.contains("\"hwk\"") && t.contains("\"substantial\"")
    });
    assert!(signed_in);
    app.stop().await;
}
