//! The operators' API for the exchange's directory (`/api/v1/exchange/...`): read the whole
//! directory, add members, subsystems, services and gateways, grant and revoke rights,
//! revoke a gateway's keys. The same changes as the CLI and the admin page, each a ledger
//! event with the operator's account as actor.
//!
//! An operator calls it either with an OpenID Connect access token Civitas issued to a
//! first-party client (the operators' own tool; `Authorization: Bearer`, for scripts), or
//! from a signed-in browser session with the anti-forgery token in `X-CSRF-Token`. Reading needs an operator account; every change
//! needs the session (the token's, or the browser's) at level substantial.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use civitas_core::xroad::{ClientId, MemberId, ServiceId};
use civitas_exchange::{Endpoint, ExchangeError, NewService};
use civitas_identity::AccountKind;
use civitas_identity::Loa;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::Visitor;
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/exchange/directory", get(directory))
        .route("/api/v1/exchange/members", post(add_member))
        .route("/api/v1/exchange/subsystems", post(add_subsystem))
        .route("/api/v1/exchange/services", post(add_service))
        .route("/api/v1/exchange/rights", post(grant))
        .route("/api/v1/exchange/rights/revoke", post(revoke))
        .route("/api/v1/exchange/gateways", post(add_gateway))
        .route(
            "/api/v1/exchange/gateways/{member}/revoke",
            post(revoke_gateway),
        )
}

/// Who is calling, once checked: their ledger actor.
pub(crate) struct Operator(pub(crate) String);

fn refused(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let mut res = Problem::new(status, kind, title)
        .detail(detail.to_string())
        .into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"civitas\"")
    {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// Checks the caller: an operator, and for a change (`change`), a session at level
/// substantial and, from a browser, the anti-forgery token.
pub(crate) async fn operator(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    change: bool,
) -> Result<Operator, Response> {
    let bearer = crate::oidc::bearer_token(headers);
    let internal = |e: &dyn std::error::Error| {
        tracing::error!(error = %e, "cannot check the operator");
        Problem::internal(e).into_response()
    };
    let (account, loa) = match bearer {
        Some(token) => {
            let grant = match app.oidc.access_grant(&token).await {
                Ok(Some(g)) => g,
                Ok(None) => {
                    return Err(refused(
                        StatusCode::UNAUTHORIZED,
                        "invalid-token",
                        "Invalid token",
                        "The access token is unknown, expired or revoked.",
                    ));
                }
                Err(e) => return Err(internal(&e)),
            };
            // Only an operators' own tool (a first-party client the operator registered) may
            // act for an operator: a token any other application holds does not.
            match app.oidc.client(&grant.client_id).await {
                Ok(Some(c)) if c.first_party && c.enabled => {}
                Ok(_) => {
                    return Err(refused(
                        StatusCode::FORBIDDEN,
                        "not-an-operator-tool",
                        "Forbidden",
                        "This API takes tokens of the operators' own (first-party) tools only.",
                    ));
                }
                Err(e) => return Err(internal(&e)),
            }
            let account = match app.identity.account(&grant.account_id).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return Err(refused(
                        StatusCode::UNAUTHORIZED,
                        "invalid-token",
                        "Invalid token",
                        "The token's account is gone.",
                    ));
                }
                Err(e) => return Err(internal(&e)),
            };
            // The token is as strong as the session it was issued in, while that lasts.
            let loa = match app.identity.sessions(&account).await {
                Ok(list) => list
                    .into_iter()
                    .find(|s| s.id == grant.session_id)
                    .map(|s| s.loa),
                Err(e) => return Err(internal(&e)),
            };
            (account, loa)
        }
        None => {
            let Some(s) = &v.session else {
                return Err(refused(
                    StatusCode::UNAUTHORIZED,
                    "signed-out",
                    "Not signed in",
                    "Sign in as an operator, or send an access token (Authorization: Bearer).",
                ));
            };
            if change && !v.json_call_is_genuine(headers) {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "Forbidden",
                    "A change from a browser needs the page's anti-forgery token in X-CSRF-Token.",
                ));
            }
            (s.account.clone(), Some(s.loa))
        }
    };
    if account.kind != AccountKind::Operator {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "not-an-operator",
            "Forbidden",
            "Only the exchange's operators manage its directory.",
        ));
    }
    if change && loa.is_none_or(|l| l < Loa::Substantial) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "step-up",
            "Level substantial needed",
            "Changing the directory needs a session at level substantial (a second factor); the token's session is not, or has ended.",
        ));
    }
    Ok(Operator(format!("account:{}", account.id)))
}

/// An exchange error as a problem.
fn failed(e: ExchangeError) -> Response {
    let (status, kind, title) = match &e {
        ExchangeError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", "Invalid request"),
        ExchangeError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ExchangeError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Exists already"),
        _ => return Problem::internal(&e).into_response(),
    };
    Problem::new(status, kind, title)
        .detail(e.to_string())
        .into_response()
}

/// A change's caller, checked first, and then its JSON body.
pub(crate) async fn change<T: serde::de::DeserializeOwned>(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Operator, T), Box<Response>> {
    let op = operator(app, v, headers, true).await.map_err(Box::new)?;
    Ok((op, json_body(body)?))
}

/// A JSON body, or the problem that says it is not the JSON the call takes.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(
            Problem::new(StatusCode::BAD_REQUEST, "invalid", "Invalid request")
                .detail(format!("The body is not the JSON this call takes: {e}"))
                .into_response(),
        )
    })
}

fn done(status: StatusCode, value: Value) -> Response {
    (status, Json(value)).into_response()
}

/// The whole directory: members, subsystems, services (with endpoints), rights and the
/// gateways in force, with the directory's version.
#[utoipa::path(get, path = "/api/v1/exchange/directory", tag = "exchange",
    responses(
        (status = 200, description = "The directory", body = Object),
        (status = 401, description = "Not signed in, or no valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn directory(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = operator(&app, &v, &headers, false).await {
        return r;
    }
    match app.exchange.configuration(0).await {
        Ok(c) => done(
            StatusCode::OK,
            json!({
                "instance": c.instance,
                "version": c.version,
                "members": c.members,
                "subsystems": c.subsystems,
                "services": c.services,
                "rights": c.rights,
                "gateways": c.gateways,
            }),
        ),
        Err(e) => failed(e),
    }
}

/// A new member.
#[derive(Deserialize, ToSchema)]
pub(crate) struct MemberIn {
    /// `INSTANCE/CLASS/CODE`.
    id: String,
    /// Its name.
    name: String,
}

#[utoipa::path(post, path = "/api/v1/exchange/members", tag = "exchange", request_body = MemberIn,
    responses(
        (status = 201, description = "Added", body = Object),
        (status = 400, description = "Invalid", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator, or not at level substantial", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Exists already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn add_member(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (op, m): (Operator, MemberIn) = match change(&app, &v, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let id = match MemberId::parse(&m.id) {
        Ok(id) => id,
        Err(e) => return failed(e.into()),
    };
    match app.exchange.add_member(&id, &m.name, &op.0).await {
        Ok(m) => done(StatusCode::CREATED, json!(m)),
        Err(e) => failed(e),
    }
}

/// A new subsystem.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SubsystemIn {
    /// `INSTANCE/CLASS/CODE/SUBSYSTEM`.
    id: String,
    /// Its name (default: its code).
    #[serde(default)]
    name: String,
    /// Address ranges its information system calls from (default: this machine).
    #[serde(default)]
    networks: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/exchange/subsystems", tag = "exchange", request_body = SubsystemIn,
    responses((status = 201, description = "Added", body = Object)))]
pub(crate) async fn add_subsystem(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (op, s): (Operator, SubsystemIn) = match change(&app, &v, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let id = match ClientId::parse(&s.id) {
        Ok(id) => id,
        Err(e) => return failed(e.into()),
    };
    let networks = s
        .networks
        .unwrap_or_else(|| civitas_exchange::network::LOOPBACK.to_string());
    match app
        .exchange
        .add_subsystem(&id, &s.name, &networks, &op.0)
        .await
    {
        Ok(s) => done(StatusCode::CREATED, json!(s)),
        Err(e) => failed(e),
    }
}

/// A new service.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ServiceIn {
    /// `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
    id: String,
    /// Where the provider's information system serves it.
    url: String,
    /// Its OpenAPI 3 document, which gives its endpoints.
    #[serde(default)]
    #[schema(value_type = Object)]
    openapi: Option<Value>,
    /// Its endpoints (`METHOD /path`), for a service without an OpenAPI document.
    #[serde(default)]
    endpoints: Vec<String>,
    /// Whether calls are about people.
    #[serde(default)]
    personal: bool,
}

#[utoipa::path(post, path = "/api/v1/exchange/services", tag = "exchange", request_body = ServiceIn,
    responses((status = 201, description = "Added", body = Object)))]
pub(crate) async fn add_service(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (op, s): (Operator, ServiceIn) = match change(&app, &v, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let id = match ServiceId::parse(&s.id) {
        Ok(id) => id,
        Err(e) => return failed(e.into()),
    };
    let endpoints = match s
        .endpoints
        .iter()
        .map(|e| Endpoint::parse(e))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let openapi = s.openapi.map(|doc| match doc {
        Value::String(text) => text,
        other => other.to_string(),
    });
    let new = NewService {
        id,
        base_url: s.url,
        openapi,
        endpoints,
        personal: s.personal,
    };
    match app.exchange.add_service(new, &op.0).await {
        Ok(s) => done(StatusCode::CREATED, json!(s)),
        Err(e) => failed(e),
    }
}

/// A right: a client subsystem may call a service's method under a path prefix.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RightIn {
    /// The service.
    service: String,
    /// The client subsystem.
    client: String,
    /// The method, or `*` (the default).
    #[serde(default)]
    method: Option<String>,
    /// The path prefix (default `/`, the whole service).
    #[serde(default)]
    path: Option<String>,
}

impl RightIn {
    fn parts(&self) -> Result<(ServiceId, ClientId, String, String), ExchangeError> {
        Ok((
            ServiceId::parse(&self.service)?,
            ClientId::parse(&self.client)?,
            self.method.clone().unwrap_or_else(|| "*".into()),
            self.path.clone().unwrap_or_else(|| "/".into()),
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/exchange/rights", tag = "exchange", request_body = RightIn,
    responses((status = 201, description = "Granted", body = Object)))]
pub(crate) async fn grant(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    right_change(&app, &v, &headers, &body, true).await
}

#[utoipa::path(post, path = "/api/v1/exchange/rights/revoke", tag = "exchange", request_body = RightIn,
    responses((status = 200, description = "Revoked", body = Object)))]
pub(crate) async fn revoke(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    right_change(&app, &v, &headers, &body, false).await
}

/// Grants (`grant`) or revokes a right.
async fn right_change(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    body: &[u8],
    grant: bool,
) -> Response {
    let (op, r): (Operator, RightIn) = match change(app, v, headers, body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (service, client, method, path) = match r.parts() {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let d = &app.exchange;
    if grant {
        match d.grant(&service, &client, &method, &path, &op.0).await {
            Ok(right) => done(StatusCode::CREATED, json!(right)),
            Err(e) => failed(e),
        }
    } else {
        match d.revoke(&service, &client, &method, &path, &op.0).await {
            Ok(()) => done(StatusCode::OK, json!({ "revoked": true })),
            Err(e) => failed(e),
        }
    }
}

/// A member's gateway: where other gateways reach it and its public keys.
#[derive(Deserialize, ToSchema)]
pub(crate) struct GatewayIn {
    /// The member it serves.
    member: String,
    /// `https://host:port`.
    address: String,
    /// Its public keys, as `civitas exchange gateway keys` prints them.
    #[schema(value_type = Object)]
    keys: civitas_exchange::keys::PublicKeys,
}

#[utoipa::path(post, path = "/api/v1/exchange/gateways", tag = "exchange", request_body = GatewayIn,
    responses((status = 201, description = "Registered", body = Object)))]
pub(crate) async fn add_gateway(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (op, g): (Operator, GatewayIn) = match change(&app, &v, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let member = match MemberId::parse(&g.member) {
        Ok(m) => m,
        Err(e) => return failed(e.into()),
    };
    match app
        .exchange
        .add_gateway(&member, &g.address, &g.keys, &op.0)
        .await
    {
        Ok(g) => done(StatusCode::CREATED, json!(g)),
        Err(e) => failed(e),
    }
}

#[utoipa::path(post, path = "/api/v1/exchange/gateways/{member}/revoke", tag = "exchange",
    params(("member" = String, Path, description = "The member, INSTANCE/CLASS/CODE, percent-encoded")),
    responses((status = 200, description = "Revoked", body = Object)))]
pub(crate) async fn revoke_gateway(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    Path(member): Path<String>,
) -> Response {
    let op = match operator(&app, &v, &headers, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let member = match MemberId::parse(&member) {
        Ok(m) => m,
        Err(e) => return failed(e.into()),
    };
    match app.exchange.revoke_gateway(&member, &op.0).await {
        Ok(()) => done(StatusCode::OK, json!({ "revoked": member.to_string() })),
        Err(e) => failed(e),
    }
}
