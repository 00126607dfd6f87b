//! The provider's rules against a real SQLite database and ledger.

use std::time::Duration;

use civitas_ledger::{Ledger, LedgerConfig};
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use super::*;
use crate::secret::b64;

const ISSUER: &str = "https://civitas.test";
const REDIRECT: &str = "https://rp.example/callback";

struct Fixture {
    db: Db,
    ledger: Ledger,
    p: Provider,
}

async fn setup(name: &str, tune: impl FnOnce(&mut Settings)) -> Fixture {
    let dir = civitas_store::scratch::folder(&format!("oidc-{name}"));
    let db = Db::connect(
        &format!("sqlite://{}?mode=rwc", dir.join("o.db").display()),
        4,
    )
    .await
    .unwrap();
    civitas_store::migrate(&db, &[civitas_ledger::COMPONENT, crate::COMPONENT])
        .await
        .unwrap();
    let mut lc = LedgerConfig::new("civitas.test/ledger");
    lc.checkpoint_interval = Duration::from_millis(20);
    let ledger = Ledger::open(db.clone(), lc).await.unwrap();
    let mut settings = Settings::new(ISSUER);
    tune(&mut settings);
    let p = Provider::new(db.clone(), ledger.clone(), settings);
    Fixture { db, ledger, p }
}

fn auth(loa: Loa) -> Authentication {
    Authentication {
        account_id: "acct-1".into(),
        subject_ref: "account:acct-1".into(),
        session_id: "sess-1".into(),
        loa,
        amr: vec!["pwd".into()],
        auth_time: now(),
    }
}

fn pkce() -> (String, String) {
    use sha2::Digest;
    let verifier = crate::secret::token(32);
    let challenge = b64(&sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn params(client_id: &str, challenge: &str) -> AuthorizationParams {
    AuthorizationParams {
        response_type: Some("code".into()),
        client_id: Some(client_id.into()),
        redirect_uri: Some(REDIRECT.into()),
        scope: Some("openid profile email".into()),
        state: Some("st-1".into()),
        nonce: Some("n-1".into()),
        code_challenge: Some(challenge.into()),
        code_challenge_method: Some("S256".into()),
        ..Default::default()
    }
}

async fn register(p: &Provider, tune: impl FnOnce(&mut NewClient)) -> Registered {
    let mut new = NewClient::new("Tax Office App", vec![REDIRECT.into()]);
    tune(&mut new);
    p.register_client(new, "operator:test").await.unwrap()
}

fn basic(reg: &Registered) -> ClientCredentials {
    ClientCredentials::Basic {
        client_id: reg.client.client_id.clone(),
        secret: reg.secret.clone().unwrap(),
    }
}

async fn code_for(p: &Provider, client_id: &str, challenge: &str, a: &Authentication) -> String {
    let req = p
        .authorization_request(&params(client_id, challenge))
        .await
        .unwrap();
    p.issue_code(&req, a).await.unwrap()
}

fn code_request(code: &str, verifier: &str, credentials: ClientCredentials) -> TokenRequest {
    TokenRequest {
        grant_type: Some("authorization_code".into()),
        client_id: None,
        code: Some(code.into()),
        redirect_uri: Some(REDIRECT.into()),
        code_verifier: Some(verifier.into()),
        refresh_token: None,
        scope: None,
        credentials,
    }
}

fn refresh_request(token: &str, credentials: ClientCredentials) -> TokenRequest {
    TokenRequest {
        grant_type: Some("refresh_token".into()),
        client_id: None,
        code: None,
        redirect_uri: None,
        code_verifier: None,
        refresh_token: Some(token.into()),
        scope: None,
        credentials,
    }
}

/// Verifies an ID token against the published JWKS, as a relying party would.
async fn verify_id_token(p: &Provider, token: &str, aud: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(p.jwks().await.unwrap()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in JWKS");
    let mut v = Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

fn code_of(e: OidcError) -> ErrorCode {
    e.code()
}

/// The tokens of a fresh code exchange by `reg`, for a person signed in at level low.
async fn first_tokens(p: &Provider, reg: &Registered) -> TokenResponse {
    let (verifier, challenge) = pkce();
    let code = code_for(p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    p.token(&code_request(&code, &verifier, basic(reg)))
        .await
        .unwrap()
}

/// The newest event of `kind`, waiting a little for events that go through the ledger's
/// outbox (sequenced moments after their transaction commits).
async fn has_event(ledger: &Ledger, kind: &str) -> Option<civitas_ledger::Event> {
    for _ in 0..100 {
        if let Some((_, e)) = ledger.latest_of_kind(kind).await.unwrap() {
            return Some(e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn jwks_has_one_rs256_and_one_es256_key_with_public_parts_only() {
    let f = setup("jwks", |_| {}).await;
    let jwks = f.p.jwks().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let rsa = keys.iter().find(|k| k["alg"] == "RS256").unwrap();
    let ec = keys.iter().find(|k| k["alg"] == "ES256").unwrap();
    assert_eq!(rsa["kty"], "RSA");
    assert_eq!(rsa["e"], "AQAB");
    // 2048-bit modulus: 256 bytes, 342 base64url characters.
    assert_eq!(rsa["n"].as_str().unwrap().len(), 342);
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    for k in keys {
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].as_str().is_some_and(|s| s.len() == 43));
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none(), "{private} published");
        }
    }
    // A second node (another provider on the same database) signs with the same keys.
    let other = Provider::new(f.db.clone(), f.ledger.clone(), Settings::new(ISSUER));
    assert_eq!(other.jwks().await.unwrap(), jwks);
}

#[tokio::test]
async fn rotated_keys_keep_verifying_for_the_retention_period_then_drop_out() {
    let f = setup("rotate", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let before =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    let old_kids: Vec<String> = kids(&f.p.jwks().await.unwrap());

    let new_kids = f.p.rotate_keys().await.unwrap();
    assert_eq!(new_kids.len(), 2);
    let after = kids(&f.p.jwks().await.unwrap());
    assert_eq!(after.len(), 4);
    assert!(old_kids.iter().chain(&new_kids).all(|k| after.contains(k)));
    // The token signed before the rotation still verifies with the published keys.
    verify_id_token(
        &f.p,
        before.id_token.as_deref().unwrap(),
        &reg.client.client_id,
    )
    .await;
    // New tokens are signed with the new key.
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    let kid = jsonwebtoken::decode_header(t.id_token.unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert!(new_kids.contains(&kid));

    // Past the retention period, the old keys leave the JWKS.
    let long_ago = now() - f.p.settings().key_retention.as_secs() as i64 - 1;
    sqlx::query("UPDATE oidc_keys SET retired_at = $1 WHERE retired_at IS NOT NULL")
        .bind(long_ago)
        .execute(f.db.pool())
        .await
        .unwrap();
    let last = kids(&f.p.jwks().await.unwrap());
    assert_eq!(last.len(), 2);
    assert!(new_kids.iter().all(|k| last.contains(k)));
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_client_secret_is_shown_once_and_stored_only_as_a_hash() {
    let f = setup("secret", |_| {}).await;
    let reg = register(&f.p, |c| {
        c.post_logout_redirect_uris = vec!["https://rp.example/bye".into()]
    })
    .await;
    let secret = reg.secret.clone().unwrap();
    assert!(secret.len() >= 43);
    let row = sqlx::query("SELECT secret_hash FROM oidc_clients WHERE client_id = $1")
        .bind(&reg.client.client_id)
        .fetch_one(f.db.pool())
        .await
        .unwrap();
    let stored: String = row.try_get("secret_hash").unwrap();
    assert_ne!(stored, secret);
    assert_eq!(stored, crate::secret::hash(&secret));
    let listed = f.p.clients().await.unwrap();
    assert_eq!(listed, vec![reg.client.clone()]);
    assert_eq!(
        listed[0].post_logout_redirect_uris,
        vec!["https://rp.example/bye".to_string()]
    );
    assert_eq!(listed[0].sector, "rp.example");

    let event = has_event(&f.ledger, "identity.oidc_client_registered")
        .await
        .unwrap();
    assert_eq!(event.actor, "operator:test");
    assert_eq!(event.public["client_id"], reg.client.client_id.as_str());
    let text = serde_json::to_string(&event).unwrap();
    assert!(!text.contains(&secret) && !text.contains(&stored));
}

#[tokio::test]
async fn registration_refuses_unsafe_redirect_uris_and_missing_keys() {
    let f = setup("register-refused", |_| {}).await;
    for uri in [
        "http://rp.example/cb",
        "https://rp.example/cb#frag",
        "not a url",
        "javascript:alert(1)",
    ] {
        let new = NewClient::new("x", vec![uri.into()]);
        assert!(
            f.p.register_client(new, "operator:test").await.is_err(),
            "{uri}"
        );
    }
    for uri in [
        "http://127.0.0.1:9000/cb",
        "http://localhost/cb",
        "http://[::1]/cb",
    ] {
        let new = NewClient::new("x", vec![uri.into()]);
        f.p.register_client(new, "operator:test").await.unwrap();
    }
    let mut new = NewClient::new("x", vec![REDIRECT.into()]);
    new.auth_method = AuthMethod::PrivateKeyJwt;
    assert!(
        f.p.register_client(new.clone(), "operator:test")
            .await
            .is_err()
    );
    new.jwks = Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into());
    assert!(
        f.p.register_client(new, "operator:test").await.is_err(),
        "symmetric keys are refused"
    );
    let mut new = NewClient::new("x", vec![REDIRECT.into()]);
    new.scopes = vec!["profile".into()];
    assert!(
        f.p.register_client(new, "operator:test").await.is_err(),
        "openid is required"
    );
}

#[tokio::test]
async fn the_client_and_redirect_uri_are_checked_first_and_never_redirected_to() {
    let f = setup("redirect-first", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (_, challenge) = pkce();
    let id = reg.client.client_id.clone();
    for (mut p, why) in [
        (params("no-such-client", &challenge), "unknown client"),
        (params(&id, &challenge), "wrong redirect"),
        (params(&id, &challenge), "prefix of a registered one"),
        (params(&id, &challenge), "missing redirect"),
    ] {
        match why {
            "wrong redirect" => p.redirect_uri = Some("https://evil.example/callback".into()),
            "prefix of a registered one" => p.redirect_uri = Some(format!("{REDIRECT}/more")),
            "missing redirect" => p.redirect_uri = None,
            _ => {}
        }
        // Even a request with other errors is refused without a redirect.
        p.code_challenge = None;
        match f.p.authorization_request(&p).await {
            Err(AuthorizeError::NoRedirect { .. }) => {}
            other => panic!("{why}: {other:?}"),
        }
    }
    // A disabled client is refused the same way.
    assert!(f.p.set_client_enabled(&id, false).await.unwrap());
    assert!(matches!(
        f.p.authorization_request(&params(&id, &challenge)).await,
        Err(AuthorizeError::NoRedirect { .. })
    ));
}

#[tokio::test]
async fn pkce_s256_is_required_and_other_errors_go_back_to_the_client() {
    let f = setup("pkce-required", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (_, challenge) = pkce();
    let id = reg.client.client_id.clone();
    type Tweak = Box<dyn Fn(&mut AuthorizationParams)>;
    let cases: Vec<(Tweak, ErrorCode)> = vec![
        (
            Box::new(|p| p.code_challenge = None),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|p| p.code_challenge_method = None),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|p| p.code_challenge_method = Some("plain".into())),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|p| p.code_challenge = Some("short".into())),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|p| p.scope = Some("profile".into())),
            ErrorCode::InvalidScope,
        ),
        (
            Box::new(|p| p.response_type = Some("token".into())),
            ErrorCode::UnsupportedResponseType,
        ),
        (
            Box::new(|p| p.prompt = Some("none login".into())),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|p| p.max_age = Some("-1".into())),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (i, (tweak, expected)) in cases.into_iter().enumerate() {
        let mut p = params(&id, &challenge);
        tweak(&mut p);
        let err = f.p.authorization_request(&p).await.unwrap_err();
        match &err {
            AuthorizeError::Redirect { code, state, .. } => {
                assert_eq!(*code, expected, "case {i}");
                assert_eq!(state.as_deref(), Some("st-1"));
            }
            other => panic!("case {i}: {other:?}"),
        }
        let url = err.redirect_url(ISSUER).unwrap();
        assert!(
            url.starts_with(&format!("{REDIRECT}?error={}", expected.as_str())),
            "{url}"
        );
        assert!(
            url.contains("state=st-1") && url.contains("iss=https%3A%2F%2Fcivitas.test"),
            "{url}"
        );
    }
}

#[tokio::test]
async fn acr_values_and_the_clients_minimum_set_the_required_level() {
    let f = setup("acr", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let strict = register(&f.p, |c| c.min_loa = Loa::Substantial).await;
    let (_, challenge) = pkce();
    let mut p = params(&reg.client.client_id, &challenge);
    assert_eq!(
        f.p.authorization_request(&p).await.unwrap().required_loa,
        Loa::Low
    );
    p.acr_values =
        Some("http://eidas.europa.eu/LoA/high http://eidas.europa.eu/LoA/substantial".into());
    let req = f.p.authorization_request(&p).await.unwrap();
    assert_eq!(req.required_loa, Loa::Substantial);
    assert_eq!(
        f.p.decide(&req, Some(&auth(Loa::Low)), now())
            .await
            .unwrap(),
        Decision::StepUp(Loa::Substantial)
    );
    p.acr_values = Some("urn:unknown".into());
    assert_eq!(
        f.p.authorization_request(&p).await.unwrap().required_loa,
        Loa::Low
    );
    let p = params(&strict.client.client_id, &challenge);
    let req = f.p.authorization_request(&p).await.unwrap();
    assert_eq!(req.required_loa, Loa::Substantial);
    assert!(f.p.issue_code(&req, &auth(Loa::Low)).await.is_err());
}

#[tokio::test]
async fn sign_in_step_up_and_consent_are_asked_for_when_needed() {
    let f = setup("decide", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let first = register(&f.p, |c| c.first_party = true).await;
    let (_, challenge) = pkce();
    let id = reg.client.client_id.clone();
    let req =
        f.p.authorization_request(&params(&id, &challenge))
            .await
            .unwrap();
    let a = auth(Loa::Low);
    let t = now();
    assert_eq!(f.p.decide(&req, None, t).await.unwrap(), Decision::SignIn);
    assert_eq!(
        f.p.decide(&req, Some(&a), t).await.unwrap(),
        Decision::Consent
    );
    f.p.record_consent(&a.account_id, &id, &req.scopes)
        .await
        .unwrap();
    assert_eq!(
        f.p.decide(&req, Some(&a), t).await.unwrap(),
        Decision::Issue
    );
    // More scopes than were allowed: ask again.
    let mut more = params(&id, &challenge);
    more.scope = Some("openid profile email phone".into());
    let wider = f.p.authorization_request(&more).await.unwrap();
    assert_eq!(
        f.p.decide(&wider, Some(&a), t).await.unwrap(),
        Decision::Consent
    );
    // prompt=consent asks even when consent was given.
    let mut again = params(&id, &challenge);
    again.prompt = Some("consent".into());
    let again = f.p.authorization_request(&again).await.unwrap();
    assert_eq!(
        f.p.decide(&again, Some(&a), t).await.unwrap(),
        Decision::Consent
    );
    // First-party clients never ask.
    let req1 =
        f.p.authorization_request(&params(&first.client.client_id, &challenge))
            .await
            .unwrap();
    assert_eq!(
        f.p.decide(&req1, Some(&a), t).await.unwrap(),
        Decision::Issue
    );
    // max_age exceeded: sign in again.
    let mut aged = params(&id, &challenge);
    aged.max_age = Some("60".into());
    let aged = f.p.authorization_request(&aged).await.unwrap();
    let mut old = a.clone();
    old.auth_time = t - 61;
    assert_eq!(
        f.p.decide(&aged, Some(&old), t).await.unwrap(),
        Decision::SignIn
    );
    assert_eq!(
        f.p.decide(&aged, Some(&a), t).await.unwrap(),
        Decision::Issue
    );
    // prompt=login: sign in again, then accepted once the session is newer than the request.
    let mut login = params(&id, &challenge);
    login.prompt = Some("login".into());
    let req = f.p.authorization_request(&login).await.unwrap();
    assert_eq!(
        f.p.decide(&req, Some(&a), t).await.unwrap(),
        Decision::SignIn
    );
    login.login_after = Some((t - 5).to_string());
    let req = f.p.authorization_request(&login).await.unwrap();
    assert_eq!(
        f.p.decide(&req, Some(&a), t).await.unwrap(),
        Decision::Issue
    );
    assert_eq!(
        f.p.decide(&req, Some(&old), t).await.unwrap(),
        Decision::SignIn
    );
    // prompt=none turns every interaction into an error for the client.
    let mut none = params(&first.client.client_id, &challenge);
    none.prompt = Some("none".into());
    let req = f.p.authorization_request(&none).await.unwrap();
    assert!(matches!(
        f.p.decide(&req, None, t).await,
        Err(AuthorizeError::Redirect {
            code: ErrorCode::LoginRequired,
            ..
        })
    ));
    let mut none = params(&id, &challenge);
    none.prompt = Some("none".into());
    none.scope = Some("openid phone".into());
    let req = f.p.authorization_request(&none).await.unwrap();
    assert!(matches!(
        f.p.decide(&req, Some(&a), t).await,
        Err(AuthorizeError::Redirect {
            code: ErrorCode::ConsentRequired,
            ..
        })
    ));
}

#[tokio::test]
async fn a_code_gives_a_valid_id_token_with_pairwise_sub_and_every_claim() {
    let f = setup("code-flow", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let es = register(&f.p, |c| c.id_token_alg = SigningAlg::Es256).await;
    let other_sector =
        f.p.register_client(
            NewClient::new("Other", vec!["https://other.example/cb".into()]),
            "operator:test",
        )
        .await
        .unwrap();
    let (verifier, challenge) = pkce();
    let mut a = auth(Loa::Substantial);
    a.amr = vec!["pwd".into(), "otp".into(), "mfa".into()];
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, 600);
    assert_eq!(t.scope, "openid profile email");
    assert!(t.refresh_token.is_some());
    let id_token = t.id_token.clone().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&id_token).unwrap().alg,
        Algorithm::RS256
    );
    let c = verify_id_token(&f.p, &id_token, &reg.client.client_id).await;
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["nonce"], "n-1");
    assert_eq!(c["acr"], "http://eidas.europa.eu/LoA/substantial");
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(c["auth_time"], a.auth_time);
    assert_eq!(c["at_hash"], tokens::at_hash(&t.access_token).as_str());
    let sid = c["sid"].as_str().unwrap();
    assert_ne!(sid, a.session_id);
    let sub = c["sub"].as_str().unwrap().to_string();
    assert_ne!(sub, a.account_id);
    assert_eq!(sub.len(), 43);

    // Userinfo through the access token.
    let grant = f.p.access_grant(&t.access_token).await.unwrap().unwrap();
    assert_eq!(grant.sub, sub);
    assert_eq!(grant.account_id, a.account_id);
    assert_eq!(grant.scopes, vec!["openid", "profile", "email"]);

    // ES256 client: same person, same sector, same sub; signed with P-256.
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &es.client.client_id, &challenge, &a).await;
    let t2 =
        f.p.token(&code_request(&code, &verifier, basic(&es)))
            .await
            .unwrap();
    let id2 = t2.id_token.unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&id2).unwrap().alg,
        Algorithm::ES256
    );
    let c2 = verify_id_token(&f.p, &id2, &es.client.client_id).await;
    assert_eq!(c2["sub"], sub.as_str());
    assert_eq!(c2["sid"], sid);

    // Another sector sees another sub.
    assert_ne!(
        f.p.subject(&other_sector.client.sector, &a.account_id)
            .await
            .unwrap(),
        sub
    );

    // The ledger knows tokens were issued, but holds no token.
    let event = has_event(&f.ledger, "identity.tokens_issued")
        .await
        .unwrap();
    assert_eq!(event.public["grant_type"], "authorization_code");
    assert!(event.subject.is_some());
    let text = serde_json::to_string(&event).unwrap();
    for secret in [
        &t.access_token,
        t.refresh_token.as_ref().unwrap(),
        &id_token,
        &code,
    ] {
        assert!(!text.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn a_code_is_single_use_and_reuse_revokes_what_it_gave() {
    let f = setup("code-reuse", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_some());
    let again =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await;
    assert_eq!(code_of(again.unwrap_err()), ErrorCode::InvalidGrant);
    assert!(
        f.p.access_grant(&t.access_token).await.unwrap().is_none(),
        "access token revoked"
    );
    let refreshed =
        f.p.token(&refresh_request(
            t.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await;
    assert_eq!(
        code_of(refreshed.unwrap_err()),
        ErrorCode::InvalidGrant,
        "refresh token revoked"
    );
    assert!(
        has_event(&f.ledger, "identity.authorization_code_reused")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn codes_are_bound_to_verifier_redirect_uri_client_and_lifetime() {
    let f = setup("code-bound", |s| s.code_lifetime = Duration::from_secs(0)).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let expired =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await;
    match expired {
        Err(OidcError::Protocol { code, description }) => {
            assert_eq!(code, ErrorCode::InvalidGrant);
            assert!(description.contains("expired"), "{description}");
        }
        other => panic!("{other:?}"),
    }

    let f = setup("code-bound-2", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let other = register(&f.p, |_| {}).await;
    let a = auth(Loa::Low);
    let (verifier, challenge) = pkce();
    // A wrong verifier burns the code.
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let (wrong, _) = pkce();
    let r = f.p.token(&code_request(&code, &wrong, basic(&reg))).await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
    let r =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
    // A missing verifier.
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let mut req = code_request(&code, &verifier, basic(&reg));
    req.code_verifier = None;
    assert_eq!(
        code_of(f.p.token(&req).await.unwrap_err()),
        ErrorCode::InvalidGrant
    );
    // Another redirect URI.
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let mut req = code_request(&code, &verifier, basic(&reg));
    req.redirect_uri = Some("https://rp.example/other".into());
    assert_eq!(
        code_of(f.p.token(&req).await.unwrap_err()),
        ErrorCode::InvalidGrant
    );
    // Another client.
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let r =
        f.p.token(&code_request(&code, &verifier, basic(&other)))
            .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
    // A code whose session ended before it was redeemed.
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    assert!(f.p.revoke_session(&a.session_id).await.unwrap() >= 1);
    let r =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn a_wrong_secret_or_missing_credentials_are_invalid_client() {
    let f = setup("client-secret", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    for creds in [
        ClientCredentials::Basic {
            client_id: reg.client.client_id.clone(),
            secret: "wrong".into(),
        },
        ClientCredentials::Basic {
            client_id: "nobody".into(),
            secret: reg.secret.clone().unwrap(),
        },
        ClientCredentials::None,
    ] {
        let r = f.p.token(&code_request(&code, &verifier, creds)).await;
        assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidClient);
    }
    // The code was not burnt by failed client authentication.
    f.p.token(&code_request(&code, &verifier, basic(&reg)))
        .await
        .unwrap();
    // A disabled client cannot authenticate.
    f.p.set_client_enabled(&reg.client.client_id, false)
        .await
        .unwrap();
    let r = f.p.token(&refresh_request("x", basic(&reg))).await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidClient);
    let mut bad = refresh_request("x", basic(&reg));
    bad.grant_type = Some("password".into());
    assert_eq!(
        code_of(f.p.token(&bad).await.unwrap_err()),
        ErrorCode::UnsupportedGrantType
    );
}

/// A client's P-256 key pair: its JWKS and a signer of assertions.
fn client_key(kid: &str) -> (String, EncodingKey) {
    use p256_13::pkcs8::EncodePrivateKey;
    let key = p256_13::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    }]});
    let der = key.to_pkcs8_der().unwrap();
    (jwks.to_string(), EncodingKey::from_ec_der(der.as_bytes()))
}

fn assertion(
    key: &EncodingKey,
    kid: &str,
    client_id: &str,
    aud: &str,
    exp_in: i64,
    jti: &str,
) -> ClientCredentials {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": aud, "jti": jti,
        "iat": now(), "exp": now() + exp_in,
    });
    ClientCredentials::Assertion {
        assertion_type: JWT_BEARER_ASSERTION.into(),
        assertion: jsonwebtoken::encode(&header, &claims, key).unwrap(),
    }
}

#[tokio::test]
async fn private_key_jwt_assertions_are_checked_and_never_accepted_twice() {
    let f = setup("pkjwt", |_| {}).await;
    let (jwks, key) = client_key("k1");
    let reg = register(&f.p, |c| {
        c.auth_method = AuthMethod::PrivateKeyJwt;
        c.jwks = Some(jwks.clone());
        c.id_token_alg = SigningAlg::Es256;
    })
    .await;
    assert!(reg.secret.is_none());
    let id = reg.client.client_id.clone();
    let endpoint = f.p.settings().token_endpoint.clone();
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &id, &challenge, &auth(Loa::Low)).await;
    let good = assertion(&key, "k1", &id, &endpoint, 60, "jti-1");
    let t =
        f.p.token(&code_request(&code, &verifier, good.clone()))
            .await
            .unwrap();
    verify_id_token(&f.p, t.id_token.as_deref().unwrap(), &id).await;
    // The same assertion again: refused, even for another request.
    let r =
        f.p.token(&refresh_request(t.refresh_token.as_deref().unwrap(), good))
            .await;
    match r {
        Err(OidcError::Protocol { code, description }) => {
            assert_eq!(code, ErrorCode::InvalidClient);
            assert!(description.contains("already used"), "{description}");
        }
        other => panic!("{other:?}"),
    }
    // The issuer is an accepted audience too.
    let by_issuer = assertion(&key, "k1", &id, ISSUER, 60, "jti-2");
    f.p.authenticate_client(Some(&id), &by_issuer)
        .await
        .unwrap();
    // So is the revocation endpoint, where the client may send its next assertion.
    let revocation = f.p.settings().revocation_endpoint.clone();
    let to_revoke = assertion(&key, "k1", &id, &revocation, 60, "jti-r");
    f.p.revoke_token(&RevocationRequest {
        client_id: None,
        token: t.refresh_token.clone(),
        credentials: to_revoke,
    })
    .await
    .unwrap();
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_none());
    let (_, stranger) = client_key("k1");
    let mut refused = vec![
        (
            "wrong audience",
            assertion(&key, "k1", &id, "https://elsewhere.example/token", 60, "j3"),
        ),
        ("expired", assertion(&key, "k1", &id, &endpoint, -120, "j4")),
        (
            "too far ahead",
            assertion(&key, "k1", &id, &endpoint, 3600, "j5"),
        ),
        (
            "another key",
            assertion(&stranger, "k1", &id, &endpoint, 60, "j6"),
        ),
        ("no jti", assertion(&key, "k1", &id, &endpoint, 60, "")),
    ];
    // Symmetric "signatures" with the public key as secret, and alg none, are refused.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": id, "sub": id, "aud": endpoint, "jti": "j7", "exp": now() + 60}),
        &EncodingKey::from_secret(jwks.as_bytes()),
    )
    .unwrap();
    refused.push((
        "HS256",
        ClientCredentials::Assertion {
            assertion_type: JWT_BEARER_ASSERTION.into(),
            assertion: hs.clone(),
        },
    ));
    let parts: Vec<&str> = hs.split('.').collect();
    refused.push((
        "alg none",
        ClientCredentials::Assertion {
            assertion_type: JWT_BEARER_ASSERTION.into(),
            assertion: format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]),
        },
    ));
    for (why, creds) in refused {
        let r = f.p.authenticate_client(Some(&id), &creds).await;
        assert_eq!(
            r.map(|_| ()).map_err(code_of),
            Err(ErrorCode::InvalidClient),
            "{why}"
        );
    }
    // A client_secret_basic client cannot use an assertion, nor the reverse.
    let basic_client = register(&f.p, |_| {}).await;
    let creds = assertion(
        &key,
        "k1",
        &basic_client.client.client_id,
        &endpoint,
        60,
        "j8",
    );
    assert!(f.p.authenticate_client(None, &creds).await.is_err());
    let creds = ClientCredentials::Basic {
        client_id: id.clone(),
        secret: String::new(),
    };
    assert!(f.p.authenticate_client(None, &creds).await.is_err());
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let f = setup("refresh", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let first = first_tokens(&f.p, &reg).await;
    let r1 = first.refresh_token.clone().unwrap();
    let second = f.p.token(&refresh_request(&r1, basic(&reg))).await.unwrap();
    let r2 = second.refresh_token.clone().unwrap();
    assert_ne!(r1, r2);
    let c = verify_id_token(
        &f.p,
        second.id_token.as_deref().unwrap(),
        &reg.client.client_id,
    )
    .await;
    assert!(c.get("nonce").is_none(), "no nonce in a refreshed ID token");
    assert!(
        f.p.access_grant(&second.access_token)
            .await
            .unwrap()
            .is_some()
    );
    // A narrower scope for the new access token; never a wider one.
    let mut narrow = refresh_request(&r2, basic(&reg));
    narrow.scope = Some("openid".into());
    let third = f.p.token(&narrow).await.unwrap();
    assert_eq!(third.scope, "openid");
    let r3 = third.refresh_token.clone().unwrap();
    let mut wide = refresh_request(&r3, basic(&reg));
    wide.scope = Some("openid phone".into());
    assert_eq!(
        code_of(f.p.token(&wide).await.unwrap_err()),
        ErrorCode::InvalidScope
    );
    // r3 is still good after that refusal; an old one comes back: the whole family dies.
    let reuse = f.p.token(&refresh_request(&r1, basic(&reg))).await;
    assert_eq!(code_of(reuse.unwrap_err()), ErrorCode::InvalidGrant);
    for access in [
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ] {
        assert!(f.p.access_grant(access).await.unwrap().is_none());
    }
    let after = f.p.token(&refresh_request(&r3, basic(&reg))).await;
    assert_eq!(code_of(after.unwrap_err()), ErrorCode::InvalidGrant);
    let event = has_event(&f.ledger, "identity.refresh_token_reused")
        .await
        .unwrap();
    assert_eq!(event.public["client_id"], reg.client.client_id.as_str());
    assert!(event.subject.is_some());
    // Another client cannot use someone else's refresh token.
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    let thief = register(&f.p, |_| {}).await;
    let r =
        f.p.token(&refresh_request(
            t.refresh_token.as_deref().unwrap(),
            basic(&thief),
        ))
        .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn withdrawing_consent_forgets_it_and_ends_the_clients_tokens() {
    let f = setup("withdraw", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let other = register(&f.p, |_| {}).await;
    let a = auth(Loa::Low);
    let scopes = vec!["openid".to_string(), "profile".to_string()];
    f.p.record_consent(&a.account_id, &reg.client.client_id, &scopes)
        .await
        .unwrap();
    f.p.record_consent(&a.account_id, &other.client.client_id, &scopes)
        .await
        .unwrap();
    let mine = first_tokens(&f.p, &reg).await;
    let theirs = first_tokens(&f.p, &other).await;
    let listed = f.p.allowed_clients(&a.account_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|c| c.client_id == reg.client.client_id && c.scopes == scopes)
    );
    assert!(
        f.p.allowed_clients("someone-else")
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        f.p.withdraw_consent(&a.account_id, &a.subject_ref, &reg.client.client_id)
            .await
            .unwrap()
    );
    // Forgotten: the list and the next authorisation no longer have it.
    let listed = f.p.allowed_clients(&a.account_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].client_id, other.client.client_id);
    assert!(
        f.p.consented_scopes(&a.account_id, &reg.client.client_id)
            .await
            .unwrap()
            .is_empty()
    );
    // That client's tokens stop working at once; the other client's do not.
    assert!(
        f.p.access_grant(&mine.access_token)
            .await
            .unwrap()
            .is_none()
    );
    let r =
        f.p.token(&refresh_request(
            mine.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
    assert!(
        f.p.access_grant(&theirs.access_token)
            .await
            .unwrap()
            .is_some()
    );
    let event = has_event(&f.ledger, "identity.oidc_consent_withdrawn")
        .await
        .expect("the withdrawal is logged");
    assert_eq!(event.public["client_id"], reg.client.client_id.as_str());
    assert_eq!(event.public["grants_revoked"], 1);
    assert!(event.subject.is_some(), "about the person, by tag");
    // Nothing left to withdraw.
    assert!(
        !f.p.withdraw_consent(&a.account_id, &a.subject_ref, &reg.client.client_id)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_client_revokes_a_token_and_with_it_the_whole_grant() {
    let f = setup("revoke", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let revoke = |token: &str, credentials: ClientCredentials| RevocationRequest {
        client_id: None,
        token: Some(token.to_string()),
        credentials,
    };
    let t = first_tokens(&f.p, &reg).await;
    let refresh = t.refresh_token.clone().unwrap();
    // Another client may not revoke it; a client that does not authenticate neither.
    let thief = register(&f.p, |_| {}).await;
    let refused = f.p.revoke_token(&revoke(&refresh, basic(&thief))).await;
    assert_eq!(code_of(refused.unwrap_err()), ErrorCode::UnauthorizedClient);
    let refused =
        f.p.revoke_token(&revoke(&refresh, ClientCredentials::None))
            .await;
    assert_eq!(code_of(refused.unwrap_err()), ErrorCode::InvalidClient);
    let missing = RevocationRequest {
        token: None,
        ..revoke("", basic(&reg))
    };
    assert_eq!(
        code_of(f.p.revoke_token(&missing).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_some());
    // The owner revokes the refresh token: the access token dies with it.
    f.p.revoke_token(&revoke(&refresh, basic(&reg)))
        .await
        .unwrap();
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_none());
    let r = f.p.token(&refresh_request(&refresh, basic(&reg))).await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
    let event = has_event(&f.ledger, "identity.tokens_revoked")
        .await
        .expect("the revocation is logged");
    assert_eq!(event.public["client_id"], reg.client.client_id.as_str());
    assert!(event.subject.is_some());
    // Revoking again, or revoking something that is no token of ours, is no error (RFC 7009
    // §2.2); an access token revokes its grant the same way.
    f.p.revoke_token(&revoke(&refresh, basic(&reg)))
        .await
        .unwrap();
    f.p.revoke_token(&revoke("not-a-token", basic(&reg)))
        .await
        .unwrap();
    let other = first_tokens(&f.p, &reg).await;
    f.p.revoke_token(&revoke(&other.access_token, basic(&reg)))
        .await
        .unwrap();
    let r =
        f.p.token(&refresh_request(
            other.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused() {
    // Lifetimes of zero: every token is expired the moment it is issued.
    let f = setup("expired-tokens", |s| {
        s.access_token_lifetime = Duration::from_secs(0);
        s.refresh_token_lifetime = Duration::from_secs(0);
    })
    .await;
    let reg = register(&f.p, |_| {}).await;
    let t = first_tokens(&f.p, &reg).await;
    assert_eq!(t.expires_in, 0);
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_none());
    let refresh = t.refresh_token.as_deref().unwrap();
    match f.p.token(&refresh_request(refresh, basic(&reg))).await {
        Err(OidcError::Protocol {
            code: ErrorCode::InvalidGrant,
            description,
        }) => assert!(description.contains("expired"), "{description}"),
        other => panic!("an expired refresh token was not refused: {other:?}"),
    }
    // Tokens from another provider (another token key) are not ours, whatever they say.
    let other = setup("other-provider", |_| {}).await;
    let other_reg = register(&other.p, |_| {}).await;
    let theirs = first_tokens(&other.p, &other_reg).await;
    assert!(
        f.p.access_grant(&theirs.access_token)
            .await
            .unwrap()
            .is_none()
    );
    let r =
        f.p.token(&refresh_request(
            theirs.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_sent_eight_times_at_once_is_honoured_once() {
    // The rotations are committed in groups: requests with the same token may share one
    // group commit, and still only the first may win.
    let f = setup("refresh-race", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let r1 = first_tokens(&f.p, &reg).await.refresh_token.unwrap();
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (p, req) = (f.p.clone(), refresh_request(&r1, basic(&reg)));
            tokio::spawn(async move { p.token(&req).await })
        })
        .collect();
    let mut won = Vec::new();
    for t in tries {
        match t.await.unwrap() {
            Ok(t) => won.push(t),
            Err(e) => assert_eq!(code_of(e), ErrorCode::InvalidGrant),
        }
    }
    assert_eq!(won.len(), 1, "exactly one request gets new tokens");
    // The others were reuse: the family is revoked, the winner's tokens included.
    assert!(
        f.p.access_grant(&won[0].access_token)
            .await
            .unwrap()
            .is_none()
    );
    let next = refresh_request(won[0].refresh_token.as_deref().unwrap(), basic(&reg));
    assert_eq!(
        code_of(f.p.token(&next).await.unwrap_err()),
        ErrorCode::InvalidGrant
    );
}

#[tokio::test]
async fn logout_revokes_the_sessions_tokens_and_id_token_hints_verify() {
    let f = setup("logout", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let a = auth(Loa::Low);
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    let hint =
        f.p.verify_id_token_hint(t.id_token.as_deref().unwrap())
            .await
            .unwrap();
    assert_eq!(hint.client_id, reg.client.client_id);
    assert_eq!(
        hint.sid.as_deref(),
        Some(f.p.session_sid(&a.session_id).await.unwrap().as_str())
    );
    // A token signed by someone else is not a hint.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": ISSUER, "sub": hint.sub, "aud": hint.client_id}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert!(f.p.verify_id_token_hint(&forged).await.is_err());
    assert_eq!(f.p.revoke_session(&a.session_id).await.unwrap(), 1);
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_none());
    let r =
        f.p.token(&refresh_request(
            t.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await;
    assert_eq!(code_of(r.unwrap_err()), ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn removing_a_client_removes_its_tokens() {
    let f = setup("remove", |_| {}).await;
    let reg = register(&f.p, |_| {}).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&f.p, &reg.client.client_id, &challenge, &auth(Loa::Low)).await;
    let t =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    assert!(f.p.remove_client(&reg.client.client_id).await.unwrap());
    assert!(!f.p.remove_client(&reg.client.client_id).await.unwrap());
    assert!(f.p.access_grant(&t.access_token).await.unwrap().is_none());
    assert!(f.p.clients().await.unwrap().is_empty());
}

#[test]
fn userinfo_releases_claims_by_scope_only() {
    let account = AccountClaims {
        name: Some("陳怡君".into()),
        locale: Some("zh-TW".into()),
        email: Some("yijun@example.tw".into()),
        email_verified: true,
        phone_number: None,
        phone_number_verified: false,
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let only = userinfo_claims("abc", &s(&["openid"]), &account);
    assert_eq!(Value::Object(only), json!({"sub": "abc"}));
    let all = userinfo_claims(
        "abc",
        &s(&["openid", "profile", "email", "phone"]),
        &account,
    );
    assert_eq!(
        Value::Object(all),
        json!({"sub": "abc", "name": "陳怡君", "locale": "zh-TW", "email": "yijun@example.tw", "email_verified": true})
    );
}

#[tokio::test]
async fn pairwise_subjects_are_stable_per_sector_and_hide_the_account() {
    let f = setup("sub", |_| {}).await;
    let a = f.p.subject("rp.example", "acct-1").await.unwrap();
    assert_eq!(a, f.p.subject("rp.example", "acct-1").await.unwrap());
    assert_ne!(a, f.p.subject("other.example", "acct-1").await.unwrap());
    assert_ne!(a, f.p.subject("rp.example", "acct-2").await.unwrap());
    assert!(!a.contains("acct"));
    // Another node reads the same secret and computes the same sub.
    let other = Provider::new(f.db.clone(), f.ledger.clone(), Settings::new(ISSUER));
    assert_eq!(other.subject("rp.example", "acct-1").await.unwrap(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_details_are_checked_always_asked_and_carried_by_the_grant() {
    let f = setup("details", |_| {}).await;
    // Even an operators' own tool asks the person about a data agreement.
    let reg = register(&f.p, |c| c.first_party = true).await;
    let (verifier, challenge) = pkce();
    let with = |details: &str| {
        let mut p = params(&reg.client.client_id, &challenge);
        p.authorization_details = Some(details.into());
        p
    };
    for bad in [
        "not json",
        "[]",
        r#"[{"agreement_id": "a"}]"#,
        r#"[{"type": "payment_initiation"}]"#,
    ] {
        match f.p.authorization_request(&with(bad)).await {
            Err(AuthorizeError::Redirect { code, .. }) => {
                assert_eq!(code, ErrorCode::InvalidAuthorizationDetails, "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let asked = r#"[{"type": "civitas_data_agreement", "agreement_id": "a-1"}]"#;
    let req = f.p.authorization_request(&with(asked)).await.unwrap();
    assert_eq!(req.authorization_details.len(), 1);
    let a = auth(Loa::Substantial);
    assert_eq!(
        f.p.decide(&req, Some(&a), now()).await.unwrap(),
        Decision::Consent
    );
    // Without a session's answer, no code; with it, the grant carries what was granted.
    assert!(f.p.issue_code(&req, &a).await.is_err());
    let granted =
        vec![json!({"type": "civitas_data_agreement", "agreement_id": "a-1", "consent_id": "c-1"})];
    let code = f.p.issue_code_with(&req, &a, &granted).await.unwrap();
    let tokens =
        f.p.token(&code_request(&code, &verifier, basic(&reg)))
            .await
            .unwrap();
    assert_eq!(tokens.authorization_details, granted);
    let grant =
        f.p.access_grant(&tokens.access_token)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(grant.authorization_details, granted);
    // A refreshed token keeps them.
    let refreshed =
        f.p.token(&refresh_request(
            tokens.refresh_token.as_deref().unwrap(),
            basic(&reg),
        ))
        .await
        .unwrap();
    assert_eq!(refreshed.authorization_details, granted);
    // A grant without details has none.
    let plain = code_for(&f.p, &reg.client.client_id, &challenge, &a).await;
    let tokens =
        f.p.token(&code_request(&plain, &verifier, basic(&reg)))
            .await
            .unwrap();
    assert!(tokens.authorization_details.is_empty());
    let _ = (&f.db, &f.ledger);
}

#[tokio::test]
async fn a_data_release_remembers_its_grant_until_the_grant_or_its_client_changes() {
    let f = setup("data-access", |_| {}).await;
    sqlx::query("INSERT INTO accounts (id, kind, username, display_name, created_on) VALUES ('acct-1', 'citizen', 'acct-1', 'acct-1', 'test')")
        .execute(f.db.pool())
        .await
        .unwrap();
    let reg = register(&f.p, |_| {}).await;
    let live = |token: String| {
        let p = f.p.clone();
        async move { p.data_access(&token).await.unwrap().is_some() }
    };
    let revoke = |token: &str| RevocationRequest {
        client_id: None,
        token: Some(token.to_string()),
        credentials: basic(&reg),
    };

    // Read, then remembered: a change made behind the provider's back (another program on
    // the same file) shows only once the second is over.
    let t = first_tokens(&f.p, &reg).await;
    let (grant, client, account) = f.p.data_access(&t.access_token).await.unwrap().unwrap();
    assert_eq!(
        (grant.client_id.as_str(), account.id.as_str()),
        (reg.client.client_id.as_str(), "acct-1")
    );
    assert_eq!(client.client_id, reg.client.client_id);
    assert_eq!(
        grant,
        f.p.access_grant(&t.access_token).await.unwrap().unwrap()
    );
    sqlx::query("UPDATE oidc_grants SET revoked_at = 1")
        .execute(f.db.pool())
        .await
        .unwrap();
    assert!(live(t.access_token.clone()).await);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(!live(t.access_token.clone()).await);

    // Every change this provider makes ends a remembered grant at once: the revocation
    // endpoint, a refresh token used twice, logout, the client disabled, the person's
    // consent withdrawn, the client removed.
    let t = first_tokens(&f.p, &reg).await;
    assert!(live(t.access_token.clone()).await);
    f.p.revoke_token(&revoke(&t.access_token)).await.unwrap();
    assert!(!live(t.access_token.clone()).await);

    let t = first_tokens(&f.p, &reg).await;
    assert!(live(t.access_token.clone()).await);
    let refresh = t.refresh_token.clone().unwrap();
    f.p.token(&refresh_request(&refresh, basic(&reg)))
        .await
        .unwrap();
    assert!(
        f.p.token(&refresh_request(&refresh, basic(&reg)))
            .await
            .is_err()
    );
    assert!(!live(t.access_token.clone()).await);

    let t = first_tokens(&f.p, &reg).await;
    assert!(live(t.access_token.clone()).await);
    assert_eq!(f.p.revoke_session("sess-1").await.unwrap(), 1);
    assert!(!live(t.access_token.clone()).await);

    let t = first_tokens(&f.p, &reg).await;
    assert!(live(t.access_token.clone()).await);
    assert!(
        f.p.set_client_enabled(&reg.client.client_id, false)
            .await
            .unwrap()
    );
    assert!(!live(t.access_token.clone()).await);
    assert!(
        f.p.set_client_enabled(&reg.client.client_id, true)
            .await
            .unwrap()
    );
    assert!(live(t.access_token.clone()).await);

    let scopes = vec!["openid".to_string()];
    f.p.record_consent("acct-1", &reg.client.client_id, &scopes)
        .await
        .unwrap();
    assert!(
        f.p.withdraw_consent("acct-1", "account:acct-1", &reg.client.client_id)
            .await
            .unwrap()
    );
    assert!(!live(t.access_token.clone()).await);

    let t = first_tokens(&f.p, &reg).await;
    assert!(live(t.access_token.clone()).await);
    assert!(f.p.remove_client(&reg.client.client_id).await.unwrap());
    assert!(!live(t.access_token.clone()).await);
}

#[test]
fn a_read_that_raced_a_change_is_not_remembered() {
    let memo = tokens::AccessMemo::default();
    let Err(generation) = memo.get("g") else {
        panic!("nothing is remembered yet")
    };
    // The grant changes while the read is under way: what the read found is stale.
    memo.forget_all();
    memo.put(generation, "g", None);
    assert!(memo.get("g").is_err());
    let Err(next) = memo.get("g") else {
        unreachable!()
    };
    assert_eq!(next, generation + 1);
    memo.put(next, "g", None);
    assert!(matches!(memo.get("g"), Ok(None)));
}
