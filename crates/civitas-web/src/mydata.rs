//! The release of a person's data to an organisation under their consent (MyData's
//! third-party flow, after Singapore's Myinfo): `GET /api/v1/mydata/release` with the access
//! token the organisation's application received for a data agreement (its grant carries the
//! consent, RFC 9396). At every release the consent is checked (withdrawn, paused, expired,
//! used or no longer agreed: nothing is released); each item is read from its registry
//! through the exchange, as the portal's information system with the consent as legal basis,
//! so each read is logged and appears in the person's "Who used my data"; each read's entry
//! names the application the release goes to, the consent, the agreement and the items it
//! serves (one ledger entry per register read, none more for the release); and the answer is
//! a JWS signed with the provider's key the client verifies its ID tokens with, each item
//! with its source and dates, encrypted to the client's encryption key when it registered one
//! (a JWE around the JWS).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use civitas_consent::ConsentError;

use crate::oidc::{bearer_refused, bearer_token};
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/api/v1/mydata/release", get(release))
}

/// The JWS `typ` of a release, so that it cannot pass for an ID token (RFC 8725 §3.11).
pub(crate) const RELEASE_TYP: &str = "civitas-release+jwt";

/// The information system the releases are read as: the portal's, which the demo country
/// registers and allows to read every registry.
pub(crate) fn portal(instance: &str) -> String {
    format!("{instance}/GOV/MODA/portal")
}

fn refused(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    Problem::new(status, kind, title)
        .detail(detail.to_string())
        .into_response()
}

/// The person's data the consent covers, signed for the client.
#[utoipa::path(get, path = "/api/v1/mydata/release", tag = "consent",
    responses(
        (status = 200, description = "The data, as a JWS (application/jwt) signed with the provider's key for this client (see /oidc/jwks): each item with its value, source register and dates. When the client registered an encryption key (P-256, \"use\": \"enc\" in its JWKS), the JWS comes inside a JWE encrypted to it (ECDH-ES, A256GCM, cty JWT)", content_type = "application/jwt", body = String),
        (status = 401, description = "No valid access token", body = Object),
        (status = 403, description = "The token carries no consent, or the consent is not valid now (withdrawn, paused, expired, used)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "A registry did not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn release(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer_token(&headers) else {
        return bearer_refused(None);
    };
    // The grant, its client and the person, in one query.
    let (grant, client, account) = match app.oidc.data_access(&token).await {
        Ok(Some(found)) => found,
        Ok(None) => return bearer_refused(Some("invalid_token")),
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let Some(consent_id) = grant
        .authorization_details
        .iter()
        .find(|d| d["type"] == "civitas_data_agreement")
        .and_then(|d| d["consent_id"].as_str())
        .map(str::to_string)
    else {
        return refused(
            StatusCode::FORBIDDEN,
            "no-consent",
            "No consent",
            "This token was not granted for a data agreement (authorization_details).",
        );
    };
    let not_valid = |why: &str| {
        refused(
            StatusCode::FORBIDDEN,
            "consent-not-valid",
            "The consent does not allow this release",
            &format!("Nothing was released: {why}."),
        )
    };
    let subject_ref = account.subject_ref();
    let (validity, agreement) = match app
        .consents
        .start_release(&consent_id, &grant.client_id, &subject_ref)
        .await
    {
        Ok(v) => v,
        Err(ConsentError::NotFound(_) | ConsentError::Conflict(_)) => {
            return not_valid("the consent is not this person's to this application");
        }
        Err(e) => return Problem::internal(&e).into_response(),
    };
    if !validity.valid {
        return not_valid(
            validity
                .reason
                .as_deref()
                .unwrap_or("the consent is not valid"),
        );
    }
    let release = crate::exchange::ForRelease {
        client_id: client.client_id.clone(),
        consent_id: consent_id.clone(),
        agreement_id: agreement.id.clone(),
        // Each read's entry names those of them it serves (`prefill::fill`).
        items: agreement.items.clone(),
    };
    let why = Reason {
        purpose: &agreement.purpose,
        legal_basis: "consent",
        consent: Some(&consent_id),
        release: Some(&release),
    };
    let portal = portal(app.exchange.instance());
    let (data, logs) = match crate::prefill::fill(
        &app,
        &portal,
        &account.username,
        &agreement.items,
        &why,
    )
    .await
    {
        Ok(filled) => filled,
        // What a register said stays here: the organisation learns only that it failed.
        Err(e) => return e.problem_for_organisation(),
    };
    let now = civitas_ledger::event::now_ms() / 1000;
    let claims = ReleaseClaims {
        iss: app.oidc.issuer(),
        aud: &client.client_id,
        sub: &grant.sub,
        iat: now,
        exp: now + 600,
        jti: uuid::Uuid::new_v4().to_string(),
        consent_id: &consent_id,
        agreement_id: &agreement.id,
        purpose: &agreement.purpose,
        retention_days: agreement.retention_days,
        data: &data,
    };
    let jws = match app.oidc.seal_for(&client, RELEASE_TYP, &claims).await {
        Ok(j) => j,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    // Not released unless every read it made is logged, each with the release it serves.
    let reads_logged =
        futures_util::future::join_all(logs.into_iter().map(crate::exchange::logged)).await;
    if let Some(Err(e)) = reads_logged.into_iter().find(Result::is_err) {
        tracing::error!(error = %e, "a release's registry read could not be logged");
        return refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "logging-failed",
            "The release could not be logged",
            "Nothing was released: a register read could not be logged.",
        );
    }
    (
        [
            (header::CONTENT_TYPE, "application/jwt"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jws,
    )
        .into_response()
}

/// What a release's JWS says: who signed it for whom about whom, when, under which consent
/// and agreement, and the data (each item with its value, source and dates).
#[derive(serde::Serialize)]
struct ReleaseClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    consent_id: &'a str,
    agreement_id: &'a str,
    purpose: &'a str,
    retention_days: i64,
    data: &'a serde_json::Map<String, Value>,
}

/// Why a register is read for a person through the portal: the purpose and legal basis the
/// exchange logs, the consent when that is the basis, and the release the reads serve when
/// they are made for one (each read's entry names it, with the items it serves).
#[derive(Clone, Copy)]
pub(crate) struct Reason<'a> {
    pub(crate) purpose: &'a str,
    pub(crate) legal_basis: &'a str,
    pub(crate) consent: Option<&'a str>,
    pub(crate) release: Option<&'a crate::exchange::ForRelease>,
}

/// One registry read about the person `national_id` through the exchange, as the portal's
/// information system, for `why` (so it is checked, logged and in the person's "Who used my
/// data"), once its log is written. A record not found is `Null`; any other refusal is the
/// answer's text.
pub(crate) async fn read(
    app: &Shared,
    service_id: &str,
    path: &str,
    national_id: &str,
    why: &Reason<'_>,
) -> Result<Value, String> {
    let portal = portal(app.exchange.instance());
    let (value, log) = read_as(app, &portal, service_id, path, national_id, why)
        .await
        .map_err(|(_, detail)| detail)?;
    if let Some(log) = log {
        crate::exchange::logged(log).await?;
    }
    Ok(value)
}

/// [`read`] as the information system `client`, with the call's log still being written:
/// nothing of the answer may leave the platform before [`crate::exchange::logged`] says
/// the log is written. A read for a release (`why.release`) names it in its entry. A refusal
/// is the answer's status and text.
pub(crate) async fn read_as(
    app: &Shared,
    client: &str,
    service_id: &str,
    path: &str,
    national_id: &str,
    why: &Reason<'_>,
) -> Result<(Value, Option<crate::exchange::CallLog>), (StatusCode, String)> {
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let mut req = Request::builder()
        .method("GET")
        .uri(format!("/r1/{service_id}{path}"))
        .header("x-road-client", client)
        .header("x-road-userid", national_id)
        .header("x-road-pdu-purpose", why.purpose)
        .header("x-road-pdu-legal-basis", why.legal_basis);
    if let Some(c) = why.consent {
        req = req.header("x-road-pdu-consent-reference", c);
    }
    let mut req = req.body(Body::empty()).map_err(|e| failed(e.to_string()))?;
    if let Some(r) = why.release {
        req.extensions_mut().insert(r.clone());
    }
    let (res, log) = crate::exchange::call_from_here(app, req).await;
    // The exchange's own refusals carry X-Road's fault type: an access right missing is the
    // caller's lack of permission whatever the HTTP status.
    let status = match res
        .headers()
        .get("x-road-error")
        .and_then(|v| v.to_str().ok())
    {
        Some(t) if t.ends_with(".AccessDenied") => StatusCode::FORBIDDEN,
        _ => res.status(),
    };
    let (mut parts, body) = res.into_parts();
    if status.is_success()
        && let Some(crate::exchange::AnswerValue(value)) =
            parts.extensions.remove::<crate::exchange::AnswerValue>()
    {
        // The register's records themselves: their text, never read, is never written.
        drop(body);
        let value = Arc::try_unwrap(value).unwrap_or_else(|shared| Value::clone(&shared));
        return Ok((value, log));
    }
    let bytes = axum::body::to_bytes(body, 4 << 20)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if status == StatusCode::NOT_FOUND {
        return Ok((Value::Null, log));
    }
    if !status.is_success() {
        return Err((
            status,
            format!(
                "{service_id} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        ));
    }
    let value = serde_json::from_slice(&bytes).map_err(|e| failed(format!("{service_id}: {e}")))?;
    Ok((value, log))
}
