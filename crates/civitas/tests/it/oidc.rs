//! The OpenID Connect provider end to end, with the `openidconnect` crate as the relying
//! party: discovery, the code flow with PKCE (RS256 and ES256 clients), consent, userinfo,
//! refresh-token rotation, RP-initiated logout, `private_key_jwt`, and every refusal.

use civitas_identity::oidc::{AuthMethod, NewClient, Provider, Registered, Settings, SigningAlg};
use civitas_identity::{DEMO_PASSWORD, Loa};
use civitas_store::sqlx;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde_json::{Value, json};

use crate::on_both_engines;
use crate::support::{Browser, Page, TestApp, hidden_value};

const STAFF: &str = "caseworker.1@hro.gov.example";
/// A loopback redirect URI: the browser stand-in never follows it.
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/callback";
const BYE: &str = "http://127.0.0.1:9/signed-out";

pub(crate) type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// An HTTP client for the relying party: openidconnect wants redirects left alone.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The issuer the server announces.
pub(crate) async fn issuer(app: &TestApp) -> String {
    let doc: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    doc["issuer"].as_str().unwrap().to_string()
}

/// The provider on the test server's database, for registering clients as an operator would.
async fn provider(app: &TestApp) -> Provider {
    Provider::new(
        app.db.clone(),
        app.ledger.clone(),
        Settings::new(&issuer(app).await),
    )
}

async fn register(app: &TestApp, tune: impl FnOnce(&mut NewClient)) -> Registered {
    let mut new = NewClient::new("戶政線上申辦 Household Services", vec![REDIRECT.into()]);
    new.post_logout_redirect_uris = vec![BYE.into()];
    tune(&mut new);
    provider(app)
        .await
        .register_client(new, "operator:test")
        .await
        .unwrap()
}

pub(crate) async fn relying_party(app: &TestApp, reg: &Registered) -> Rp {
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer(app).await).unwrap(), &http())
            .await
            .expect("discovery accepted by openidconnect");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(reg.client.client_id.clone()),
        reg.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
}

/// The path and query of an absolute URL on the server.
pub(crate) fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

/// A query parameter of a URL.
pub(crate) fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A signed-in browser.
async fn signed_in(app: &TestApp) -> Browser {
    let mut b = Browser::new(app);
    b.sign_in(STAFF, DEMO_PASSWORD).await;
    b
}

/// Checks that a token response's access token no longer reads userinfo and its refresh
/// token no longer refreshes.
async fn refused_everywhere(
    app: &TestApp,
    http: &reqwest::Client,
    rp: &Rp,
    token: &openidconnect::core::CoreTokenResponse,
) {
    let res = http
        .get(format!("{}/oidc/userinfo", app.base))
        .bearer_auth(token.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let refresh = rp
        .exchange_refresh_token(token.refresh_token().unwrap())
        .unwrap()
        .request_async(http)
        .await
        .unwrap_err();
    assert_eq!(token_error(refresh), CoreErrorResponseType::InvalidGrant);
}

/// The path of an authorisation request for the `profile` scope, as far as the consent page
/// (the code it would give is not followed).
fn profile_request(rp: &Rp) -> String {
    let (url, _, _) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
        .url();
    path_of(url.as_str())
}

/// Answers the consent page the browser is on.
pub(crate) async fn answer_consent(b: &mut Browser, page: &Page, decision: &str) -> Page {
    assert_eq!(page.status, 200, "{}", page.body);
    let request = hidden_value(&page.body, "request")
        .expect("the consent form carries the request")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    b.post(
        "/oidc/authorize",
        &[("request", request.as_str()), ("decision", decision)],
    )
    .await
}

/// What one authorisation round trip gave the relying party.
struct Authorized {
    code: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

/// Runs the authorisation request through the browser (allowing consent when asked) and
/// returns the code, checking `state` and `iss` on the way back.
async fn authorize(app: &TestApp, b: &mut Browser, rp: &Rp, scopes: &[&str]) -> Authorized {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = rp.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in scopes {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    let mut page = b.get(&path_of(url.as_str())).await;
    if page.status == 200 && page.body.contains("name=\"decision\"") {
        page = answer_consent(b, &page, "allow").await;
    }
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(
        param(&location, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        param(&location, "iss"),
        Some(issuer(app).await),
        "RFC 9207 iss"
    );
    Authorized {
        code: param(&location, "code").expect("a code"),
        verifier,
        nonce,
    }
}

/// The OAuth error code of a refused token request.
fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> CoreErrorResponseType {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().clone(),
        other => panic!("not an OAuth error response: {other:?}"),
    }
}

/// Posts a raw token request; returns the status and the JSON body.
async fn token_post(
    app: &TestApp,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = http().post(format!("{}/oidc/token", app.base)).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap(), headers)
}

/// A P-256 key for `private_key_jwt`: the client's JWKS and its signing key.
fn client_key() -> (String, jsonwebtoken::EncodingKey) {
    use base64::Engine;
    use p256::pkcs8::EncodePrivateKey;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "rp-1", "use": "sig",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}]});
    let der = key.to_pkcs8_der().unwrap();
    (
        jwks.to_string(),
        jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
}

fn assertion(key: &jsonwebtoken::EncodingKey, client_id: &str, aud: &str, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("rp-1".into());
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "jti": jti,
        "iat": now, "exp": now + 60});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

on_both_engines! {
    async fn discovery_and_jwks_describe_the_provider(app) {
        let iss = issuer(&app).await;
        let res = app.get("/.well-known/openid-configuration").await;
        assert_eq!(res.status(), 200);
        let doc: Value = res.json().await.unwrap();
        assert_eq!(doc["issuer"], iss.as_str());
        assert_eq!(doc["token_endpoint"], format!("{iss}/oidc/token"));
        assert_eq!(doc["end_session_endpoint"], format!("{iss}/oidc/logout"));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["token_endpoint_auth_methods_supported"], json!(["client_secret_basic", "private_key_jwt"]));
        assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256", "ES256"]));
        assert_eq!(doc["subject_types_supported"], json!(["pairwise"]));
        assert!(doc["acr_values_supported"].as_array().unwrap().contains(&json!("http://eidas.europa.eu/LoA/high")));
        let jwks: Value = app.get("/oidc/jwks").await.json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.get("d").is_none() && k["use"] == "sig"));
        // Protocol endpoints are not part of the JSON API's OpenAPI document.
        let openapi: Value = app.get("/api/openapi.json").await.json().await.unwrap();
        assert!(openapi["paths"].as_object().unwrap().keys().all(|p| !p.contains("oidc")));
        app.stop().await;
    }

    async fn code_flow_with_pkce_gives_tokens_openidconnect_accepts(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let reg = register(&app, |c| c.id_token_alg = alg).await;
            let rp = relying_party(&app, &reg).await;
            // Third-party client: the consent page names it and what it will receive.
            let consent = b.get(&profile_request(&rp)).await;
            assert_eq!(consent.status, 200);
            assert!(consent.body.contains("戶政線上申辦 Household Services"), "{}", consent.body);
            assert!(consent.body.contains("name=\"csrf\""));
            let got = authorize(&app, &mut b, &rp, &["profile"]).await;
            let token = rp
                .exchange_code(AuthorizationCode::new(got.code))
                .unwrap()
                .set_pkce_verifier(got.verifier)
                .request_async(&http)
                .await
                .expect("the code is exchanged");
            let verifier = rp.id_token_verifier().set_allowed_algs(vec![match alg {
                SigningAlg::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                SigningAlg::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            }]);
            let id_token = token.id_token().expect("an ID token");
            let claims = id_token.claims(&verifier, &got.nonce).expect("openidconnect validates the ID token");
            assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(Loa::Low.acr()));
            assert!(claims.auth_time().is_some());
            let hash = AccessTokenHash::from_token(
                token.access_token(),
                id_token.signing_alg().unwrap(),
                id_token.signing_key(&verifier).unwrap(),
            )
            .unwrap();
            assert_eq!(claims.access_token_hash(), Some(&hash));
            assert!(token.refresh_token().is_some());
            let sub = claims.subject().clone();
            assert!(!sub.as_str().contains("caseworker"));

            // Userinfo, through openidconnect, for the same subject.
            let info: CoreUserInfoClaims = rp
                .user_info(token.access_token().clone(), Some(sub.clone()))
                .unwrap()
                .request_async(&http)
                .await
                .expect("userinfo");
            assert!(info.name().is_some(), "profile gives the name");
            assert!(info.email().is_none(), "email was not asked for");

            // Consent is remembered: the next request goes straight back with a code.
            let (url, _, _) = rp
                .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
                .add_scope(Scope::new("profile".into()))
                .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
                .url();
            assert_eq!(b.get(&path_of(url.as_str())).await.status, 303);
        }
        // A first-party client never shows the consent page.
        let first = register(&app, |c| c.first_party = true).await;
        let rp = relying_party(&app, &first).await;
        let (url, _, _) = rp
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
            .url();
        assert_eq!(b.get(&path_of(url.as_str())).await.status, 303);
        // Tokens issued are on the ledger, without their values. (Their events go through
        // the ledger's outbox, so they are sequenced moments after the response.)
        let mut issued = 0;
        for _ in 0..100 {
            let rows = sqlx::query("SELECT data FROM ledger_entries ORDER BY idx")
                .fetch_all(app.db.pool())
                .await
                .unwrap();
            issued = rows.iter().filter(|r| {
                use sqlx::Row;
                let bytes: Vec<u8> = r.try_get("data").unwrap();
                String::from_utf8_lossy(&bytes).contains("identity.tokens_issued")
            }).count();
            if issued >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(issued, 2);
        app.stop().await;
    }

    async fn refresh_tokens_rotate_and_a_reused_one_kills_the_family(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        let reg = register(&app, |_| {}).await;
        let rp = relying_party(&app, &reg).await;
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let first = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap();
        let r1 = first.refresh_token().unwrap().clone();
        let second = rp.exchange_refresh_token(&r1).unwrap().request_async(&http).await.expect("refreshed");
        let r2: RefreshToken = second.refresh_token().unwrap().clone();
        assert_ne!(r1.secret(), r2.secret(), "rotated");
        let refreshed_id = second.id_token().expect("a new ID token");
        refreshed_id.claims(&rp.id_token_verifier(), |_: Option<&Nonce>| Ok(())).expect("valid");
        // The old refresh token comes back: refused, and the new one dies with it.
        let reuse = rp.exchange_refresh_token(&r1).unwrap().request_async(&http).await.unwrap_err();
        assert_eq!(token_error(reuse), CoreErrorResponseType::InvalidGrant);
        let after = rp.exchange_refresh_token(&r2).unwrap().request_async(&http).await.unwrap_err();
        assert_eq!(token_error(after), CoreErrorResponseType::InvalidGrant);
        let res = http.get(format!("{}/oidc/userinfo", app.base))
            .bearer_auth(second.access_token().secret()).send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
        app.stop().await;
    }

    async fn rp_initiated_logout_ends_the_session_and_revokes_its_tokens(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        let reg = register(&app, |_| {}).await;
        let rp = relying_party(&app, &reg).await;
        let got = authorize(&app, &mut b, &rp, &["profile"]).await;
        let token = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap();
        let hint = token.id_token().unwrap().to_string();
        // An unregistered post-logout URI is refused without a redirect.
        let page = b.get(&format!("/oidc/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F")).await;
        assert_eq!(page.status, 400);
        assert!(page.location.is_none());
        assert!(b.cookie("civitas_session").is_some(), "still signed in");
        // Without a hint the person is asked first.
        let page = b.get("/oidc/logout").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("action=\"/oidc/logout\""));
        // With the session's own ID token: signed out and sent back with state.
        let page = b.get(&format!(
            "/oidc/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye-1",
            url::form_urlencoded::byte_serialize(BYE.as_bytes()).collect::<String>()
        )).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some(format!("{BYE}?state=bye-1").as_str()));
        assert!(b.cookie("civitas_session").is_none(), "the session cookie is cleared");
        assert_eq!(b.get("/account").await.status, 303, "signed out");
        refused_everywhere(&app, &http, &rp, &token).await;
        app.stop().await;
    }

    async fn bad_requests_are_refused(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        let reg = register(&app, |c| c.first_party = true).await;
        let id = reg.client.client_id.clone();
        let secret = reg.secret.clone().unwrap();
        let rp = relying_party(&app, &reg).await;
        let (_, challenge) = {
            let (c, v) = PkceCodeChallenge::new_random_sha256();
            (v, c.as_str().to_string())
        };
        let base_query = |redirect: &str| format!(
            "/oidc/authorize?response_type=code&client_id={id}&scope=openid&state=s1&redirect_uri={}",
            url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        );
        // A wrong redirect URI is shown as an error page, never redirected to.
        let page = b.get(&format!("{}&code_challenge={challenge}&code_challenge_method=S256", base_query("https://evil.example/cb"))).await;
        assert_eq!(page.status, 400);
        assert!(page.location.is_none());
        // Missing and plain PKCE go back to the client as invalid_request, with state and iss.
        for pkce in [String::new(), format!("&code_challenge={challenge}&code_challenge_method=plain"), format!("&code_challenge={challenge}")] {
            let page = b.get(&format!("{}{pkce}", base_query(REDIRECT))).await;
            assert_eq!(page.status, 303, "{pkce}");
            let loc = page.location.unwrap();
            assert_eq!(param(&loc, "error").as_deref(), Some("invalid_request"), "{pkce}");
            assert_eq!(param(&loc, "state").as_deref(), Some("s1"));
            assert!(param(&loc, "iss").is_some());
        }
        // A code used twice: refused, and what it gave is revoked.
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let verifier = got.verifier.secret().clone();
        let token = rp.exchange_code(AuthorizationCode::new(got.code.clone())).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap();
        let again = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(PkceCodeVerifier::new(verifier)).request_async(&http).await.unwrap_err();
        assert_eq!(token_error(again), CoreErrorResponseType::InvalidGrant);
        let res = http.get(format!("{}/oidc/userinfo", app.base))
            .bearer_auth(token.access_token().secret()).send().await.unwrap();
        assert_eq!(res.status(), 401, "tokens from a reused code are revoked");
        // A wrong PKCE verifier.
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let wrong = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(PkceCodeChallenge::new_random_sha256().1).request_async(&http).await.unwrap_err();
        assert_eq!(token_error(wrong), CoreErrorResponseType::InvalidGrant);
        // An expired code (its clock moved back through the database).
        let got = authorize(&app, &mut b, &rp, &[]).await;
        sqlx::query("UPDATE oidc_codes SET expires_at = 0 WHERE used_at IS NULL")
            .execute(app.db.pool()).await.unwrap();
        let expired = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap_err();
        assert_eq!(token_error(expired), CoreErrorResponseType::InvalidGrant);
        // A wrong client secret: 401 invalid_client, with OAuth's shape and no caching.
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let (status, body, headers) = token_post(&app, Some((&id, "not-the-secret")), &[
            ("grant_type", "authorization_code"), ("code", &got.code),
            ("redirect_uri", REDIRECT), ("code_verifier", got.verifier.secret()),
        ]).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "invalid_client");
        assert!(body["error_description"].is_string());
        assert_eq!(headers["cache-control"], "no-store");
        assert!(headers.contains_key("www-authenticate"));
        // The right secret still redeems that code (failed authentication does not burn it).
        let (status, body, headers) = token_post(&app, Some((&id, &secret)), &[
            ("grant_type", "authorization_code"), ("code", &got.code),
            ("redirect_uri", REDIRECT), ("code_verifier", got.verifier.secret()),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["token_type"], "Bearer");
        // Unsupported grants and repeated parameters.
        let (status, body, _) = token_post(&app, Some((&id, &secret)), &[("grant_type", "password")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
        let (status, body, _) = token_post(&app, Some((&id, &secret)), &[("grant_type", "refresh_token"), ("grant_type", "refresh_token")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
        app.stop().await;
    }

    async fn private_key_jwt_assertions_work_once(app) {
        let mut b = signed_in(&app).await;
        let (jwks, key) = client_key();
        let reg = register(&app, |c| {
            c.auth_method = AuthMethod::PrivateKeyJwt;
            c.jwks = Some(jwks);
            c.first_party = true;
        }).await;
        assert!(reg.secret.is_none());
        let id = reg.client.client_id.clone();
        let rp = relying_party(&app, &reg).await;
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let endpoint = format!("{}/oidc/token", issuer(&app).await);
        let jwt = assertion(&key, &id, &endpoint, "jti-once");
        let form = |extra: &[(&'static str, String)]| {
            let mut f: Vec<(&str, String)> = vec![
                ("client_id", id.clone()),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
                ("client_assertion", jwt.clone()),
            ];
            f.extend_from_slice(extra);
            f
        };
        let f = form(&[("grant_type", "authorization_code".into()), ("code", got.code.clone()),
            ("redirect_uri", REDIRECT.into()), ("code_verifier", got.verifier.secret().clone())]);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body, _) = token_post(&app, None, &pairs).await;
        assert_eq!(status, 200, "{body}");
        // The same assertion again, to refresh: a replay, refused.
        let refresh = body["refresh_token"].as_str().unwrap().to_string();
        let f = form(&[("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())]);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body, _) = token_post(&app, None, &pairs).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
        // A fresh assertion works.
        let fresh = assertion(&key, &id, &endpoint, "jti-two");
        let (status, body, _) = token_post(&app, None, &[
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &fresh), ("grant_type", "refresh_token"), ("refresh_token", &refresh),
        ]).await;
        assert_eq!(status, 200, "{body}");
        app.stop().await;
    }

    async fn sign_in_and_step_up_are_asked_for_when_needed(app) {
        let reg = register(&app, |c| c.first_party = true).await;
        let rp = relying_party(&app, &reg).await;
        let url = |extra: &[(&str, &str)]| {
            let mut r = rp.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
                .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0);
            for (k, v) in extra {
                r = r.add_extra_param(*k, *v);
            }
            path_of(r.url().0.as_str())
        };
        // Not signed in: to the sign-in page, coming back to the request.
        let mut b = Browser::new(&app);
        let page = b.get(&url(&[])).await;
        assert_eq!(page.status, 303);
        let to = page.location.unwrap();
        assert!(to.starts_with("/signin?next=/oidc/authorize%3F"), "{to}");
        // prompt=none without a session: login_required, back at the client.
        let page = b.get(&url(&[("prompt", "none")])).await;
        let loc = page.location.unwrap();
        assert_eq!(param(&loc, "error").as_deref(), Some("login_required"), "{loc}");
        // Signed in with a password (low), asked for substantial: step up first.
        b.sign_in(STAFF, DEMO_PASSWORD).await;
        let page = b.get(&url(&[("acr_values", Loa::Substantial.acr())])).await;
        let to = page.location.unwrap();
        assert!(to.starts_with("/signin/step-up?need=substantial&next=/oidc/authorize%3F"), "{to}");
        // prompt=login: sign in again, then the code comes.
        let page = b.get(&url(&[("prompt", "login")])).await;
        let to = page.location.unwrap();
        assert!(to.starts_with("/signin?next="), "{to}");
        let next = url::form_urlencoded::parse(to.split_once('?').unwrap().1.as_bytes())
            .find(|(k, _)| k == "next").unwrap().1.into_owned();
        assert!(next.contains("civitas_login_after="), "{next}");
        b.get("/signin").await;
        let signed = b.post("/signin", &[("identifier", STAFF), ("password", DEMO_PASSWORD), ("next", &next)]).await;
        assert_eq!(signed.status, 303);
        assert_eq!(signed.location.as_deref(), Some(next.as_str()));
        let page = b.get(&next).await;
        assert_eq!(page.status, 303, "{}", page.body);
        assert!(page.location.unwrap().starts_with(REDIRECT));
        app.stop().await;
    }

    async fn a_relying_party_revokes_its_refresh_token(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        let reg = register(&app, |_| {}).await;
        // Discovery names the endpoint (RFC 8414 metadata).
        let doc: Value = app.get("/.well-known/openid-configuration").await.json().await.unwrap();
        let endpoint = doc["revocation_endpoint"].as_str().expect("a revocation endpoint").to_string();
        assert_eq!(doc["revocation_endpoint_auth_methods_supported"], json!(["client_secret_basic", "private_key_jwt"]));
        let rp = relying_party(&app, &reg).await;
        let got = authorize(&app, &mut b, &rp, &[]).await;
        let token = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap();
        // RFC 7009 §2.1, as a client sends it. (openidconnect's own revocation client refuses
        // endpoints without TLS, and this server listens on plain HTTP on loopback.)
        let secret = reg.secret.clone().unwrap();
        let revoke = |token: String, hint: &'static str| {
            http.post(&endpoint)
                .basic_auth(&reg.client.client_id, Some(&secret))
                .form(&[("token", token), ("token_type_hint", hint.to_string())])
                .send()
        };
        let res = revoke(token.refresh_token().unwrap().secret().clone(), "refresh_token").await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        refused_everywhere(&app, &http, &rp, &token).await;
        // Revoking it again, or a token that is not ours, is still a success (§2.2).
        let res = revoke(token.access_token().secret().clone(), "access_token").await.unwrap();
        assert_eq!(res.status(), 200);
        let res = revoke("not-a-token".into(), "access_token").await.unwrap();
        assert_eq!(res.status(), 200);
        // Without client authentication: refused, in OAuth's error shape.
        let res = http.post(&endpoint).form(&[("token", "x")]).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        app.stop().await;
    }

    async fn a_person_withdraws_an_application_and_its_tokens_stop_working(app) {
        let http = http();
        let mut b = signed_in(&app).await;
        let reg = register(&app, |_| {}).await;
        let rp = relying_party(&app, &reg).await;
        let empty = b.get("/account/applications").await;
        assert_eq!(empty.status, 200);
        assert!(!empty.body.contains("戶政線上申辦 Household Services"));
        let got = authorize(&app, &mut b, &rp, &["profile"]).await;
        let token = rp.exchange_code(AuthorizationCode::new(got.code)).unwrap()
            .set_pkce_verifier(got.verifier).request_async(&http).await.unwrap();
        // The page lists the application and, in words, what it may read.
        let page = b.get("/account/applications").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("戶政線上申辦 Household Services"), "{}", page.body);
        assert!(page.body.contains("您的姓名與慣用語言"), "{}", page.body);
        let withdrawn = b.post("/account/applications/withdraw", &[("client", reg.client.client_id.as_str())]).await;
        assert_eq!(withdrawn.status, 303, "{}", withdrawn.body);
        assert_eq!(withdrawn.location.as_deref(), Some("/account/applications"));
        let page = b.get("/account/applications").await;
        assert!(!page.body.contains("戶政線上申辦 Household Services"), "{}", page.body);
        // What the application held stops working at once.
        refused_everywhere(&app, &http, &rp, &token).await;
        // And the next sign-in there asks again.
        let again = b.get(&profile_request(&rp)).await;
        assert_eq!(again.status, 200);
        assert!(again.body.contains("name=\"decision\""), "{}", again.body);
        // A form without its anti-forgery token withdraws nothing.
        let forged = b.post("/account/applications/withdraw", &[("client", reg.client.client_id.as_str()), ("csrf", "forged")]).await;
        assert_eq!(forged.status, 403);
        app.stop().await;
    }
}

/// The operator's commands, through the real binary: add (secret printed once), list,
/// disable, remove, and key rotation; the registration is on the ledger as `operator:cli`.
#[test]
fn the_cli_registers_lists_disables_and_removes_clients_and_rotates_keys() {
    use crate::cli::{civitas, run, run_ok};
    let data = crate::support::scratch("oidc-cli");
    let d = ["--data".to_string(), data.display().to_string()];
    run_ok(civitas().arg("migrate").args(&d));
    let out = run_ok(civitas().args(&d).args([
        "oidc",
        "client",
        "add",
        "--name",
        "Tax Office",
        "--redirect-uri",
        "https://tax.example/cb",
        "--redirect-uri",
        "https://tax.example/cb2",
        "--post-logout-uri",
        "https://tax.example/bye",
        "--alg",
        "ES256",
    ]));
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("client_id: "))
        .expect("the client id is printed")
        .to_string();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("the secret is printed once");
    assert!(secret.len() >= 43);
    // Ids are random base64url and may begin with `-`: taken as ids, not as flags.
    crate::cli::assert_one_sentence_failure(
        civitas()
            .args(&d)
            .args(["oidc", "client", "disable", "-NoSuchClient"]),
        "there is no client `-NoSuchClient`",
    );
    let listed = run_ok(civitas().args(&d).args(["oidc", "client", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("Tax Office") && listed.contains("alg=ES256"),
        "{listed}"
    );
    assert!(!listed.contains(secret), "the secret is never shown again");
    let (jwks_dir, jwks) = (crate::support::scratch("oidc-cli-jwks"), client_key().0);
    std::fs::write(jwks_dir.join("jwks.json"), jwks).unwrap();
    let out = run_ok(
        civitas()
            .args(&d)
            .args([
                "oidc",
                "client",
                "add",
                "--name",
                "Bank",
                "--redirect-uri",
                "https://bank.example/cb",
                "--auth",
                "private_key_jwt",
                "--jwks",
            ])
            .arg(jwks_dir.join("jwks.json")),
    );
    assert!(
        out.contains("client_id: ") && !out.contains("client_secret"),
        "{out}"
    );
    let (ok, _, err) = run(civitas().args(&d).args([
        "oidc",
        "client",
        "add",
        "--name",
        "Bad",
        "--redirect-uri",
        "http://evil.example/cb",
    ]));
    assert!(!ok && err.contains("https"), "{err}");
    run_ok(civitas().args(&d).args(["oidc", "client", "disable", &id]));
    assert!(run_ok(civitas().args(&d).args(["oidc", "client", "list"])).contains("DISABLED"));
    let rotated = run_ok(civitas().args(&d).args(["oidc", "keys", "rotate"]));
    assert_eq!(rotated.matches("New signing key").count(), 2, "{rotated}");
    run_ok(civitas().args(&d).args(["oidc", "client", "remove", &id]));
    assert!(!run_ok(civitas().args(&d).args(["oidc", "client", "list"])).contains(&id));
    let (ok, _, err) = run(civitas().args(&d).args(["oidc", "client", "remove", &id]));
    assert!(!ok && err.contains("no client"), "{err}");
    // The registrations are on the ledger, by the operator at the command line.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kinds = rt.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", data.join("civitas.db").display());
        let db = civitas_store::Db::connect(&url, 1).await.unwrap();
        let rows = sqlx::query("SELECT data FROM ledger_entries ORDER BY idx")
            .fetch_all(db.pool())
            .await
            .unwrap();
        let texts: Vec<String> = rows
            .iter()
            .map(|r| {
                use sqlx::Row;
                String::from_utf8(r.try_get::<Vec<u8>, _>("data").unwrap()).unwrap()
            })
            .collect();
        db.close().await;
        texts
    });
    let registered: Vec<&String> = kinds
        .iter()
        .filter(|t| t.contains("identity.oidc_client_registered"))
        .collect();
    assert_eq!(registered.len(), 2);
    assert!(
        registered
            .iter()
            .all(|t| t.contains("\"actor\":\"operator:cli\""))
    );
    assert!(
        kinds
            .iter()
            .any(|t| t.contains("identity.oidc_keys_rotated"))
    );
}

/// An access token for `rp`, from the person signed in on `b`.
async fn token_at(app: &TestApp, rp: &Rp, b: &mut Browser) -> String {
    let got = authorize(app, b, rp, &["openid"]).await;
    rp.exchange_code(AuthorizationCode::new(got.code))
        .unwrap()
        .set_pkce_verifier(got.verifier)
        .request_async(&http())
        .await
        .unwrap()
        .access_token()
        .secret()
        .clone()
}

/// The operators' exchange API with an access token Civitas issued: reading needs an
/// operator, changing needs the token's session at level substantial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_the_exchange_with_an_access_token() {
    let app = TestApp::spawn(crate::support::Engine::Sqlite)
        .await
        .unwrap();
    // The operators' own tool is a first-party client; another application is not.
    let reg = register(&app, |c| c.first_party = true).await;
    let rp = relying_party(&app, &reg).await;
    let other = register(&app, |_| {}).await;
    let other = relying_party(&app, &other).await;
    let api = |token: Option<String>, method: &str, path: &str, body: Option<Value>| {
        let url = format!("{}{path}", app.base);
        let method = method.to_string();
        async move {
            let mut req = if method == "GET" {
                http().get(url)
            } else {
                http().post(url)
            };
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let member = json!({ "id": "TW/COM/12345675", "name": "Tainan Pharmacy" });

    let mut operator = crate::authz::at_substantial(&app, "operator.1@moda.gov.example").await;
    let strong = token_at(&app, &rp, &mut operator).await;
    let (status, dir) = api(
        Some(strong.clone()),
        "GET",
        "/api/v1/exchange/directory",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        dir["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "TW/GOV/HRO"),
        "{dir}"
    );
    let (status, body) = api(
        Some(strong.clone()),
        "POST",
        "/api/v1/exchange/members",
        Some(member.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        Some(strong.clone()),
        "POST",
        "/api/v1/exchange/members",
        Some(member.clone()),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (409, Some("/problems/conflict")),
        "{body}"
    );
    let (status, _) = api(
        Some(strong.clone()),
        "POST",
        "/api/v1/exchange/members",
        Some(json!({ "id": "TW/COM/a b" })),
    )
    .await;
    assert_eq!(status, 400);
    let added = app
        .ledger
        .latest_of_kind("exchange.member_added")
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(added.actor.starts_with("account:"), "{}", added.actor);

    // An operator's token from a password-only session reads, but does not change.
    let mut weak = Browser::new(&app);
    weak.sign_in("operator.2@moda.gov.example", DEMO_PASSWORD)
        .await;
    let weak = token_at(&app, &rp, &mut weak).await;
    assert_eq!(
        api(
            Some(weak.clone()),
            "GET",
            "/api/v1/exchange/directory",
            None
        )
        .await
        .0,
        200
    );
    let (status, body) = api(
        Some(weak),
        "POST",
        "/api/v1/exchange/members",
        Some(json!({ "id": "TW/COM/22345677", "name": "x" })),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("/problems/step-up")),
        "{body}"
    );
    // An operator's strong token held by any other application acts for nobody here.
    let elsewhere = token_at(&app, &other, &mut operator).await;
    let (status, body) = api(Some(elsewhere), "GET", "/api/v1/exchange/directory", None).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (403, Some("/problems/not-an-operator-tool")),
        "{body}"
    );
    // A citizen's token, a made-up token, no token.
    let citizen = token_at(&app, &rp, &mut signed_in(&app).await).await;
    assert_eq!(
        api(Some(citizen), "GET", "/api/v1/exchange/directory", None)
            .await
            .0,
        403
    );
    assert_eq!(
        api(
            Some("nope".into()),
            "GET",
            "/api/v1/exchange/directory",
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        api(None, "POST", "/api/v1/exchange/members", Some(member))
            .await
            .0,
        401
    );
    app.stop().await;
}
