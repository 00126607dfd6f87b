//! Notify's side of its providers (`civitas_notify::provider` has the protocol): the
//! receipts they send back (`POST /notify/receipts`), and the built-in sandbox provider of
//! text messages and letters (`POST /sandbox/sms`, `POST /sandbox/letters`), which takes
//! messages over HTTP exactly as a real provider would, checks their signatures, delivers
//! nothing, and sends its receipts back over HTTP, signed.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use civitas_core::config::ProviderEndpoint;
use civitas_notify::provider::{NOTIFICATION_HEADER, Provider, Receipt, SIGNATURE_HEADER};
use civitas_notify::{Channel, NotifyError};
use serde_json::json;

use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/notify/receipts", post(receipt))
        .route("/sandbox/sms", post(sandbox_sms))
        .route("/sandbox/letters", post(sandbox_letter))
}

/// The provider, when `headers` sign `body` for it; otherwise the problem to answer.
fn signed<'a>(
    app: &'a Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a Provider, Box<Response>> {
    let Some(provider) = &app.notify_provider else {
        return Err(Box::new(
            Problem::not_found("no provider is configured").into_response(),
        ));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !provider.verify(body, signature) {
        return Err(Box::new(Problem::new(StatusCode::UNAUTHORIZED, "bad-signature", "Bad signature")
            .detail(format!("{SIGNATURE_HEADER} must be sha256=<hex>, HMAC-SHA256 of the body under the secret shared with the provider"))
            .into_response()));
    }
    Ok(provider)
}

fn invalid(detail: impl Into<String>) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        "Invalid request",
    )
    .detail(detail)
    .into_response()
}

/// A provider's receipt: `200 {"moved": true|false}` (false: the message already knew
/// as much or more).
async fn receipt(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = signed(&app, &headers, &body) {
        return *r;
    }
    let receipt: Receipt = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(format!(
                "a receipt is {{\"id\", \"reference\", \"status\", \"at\"}}: {e}"
            ));
        }
    };
    match app.notify.receipt(&receipt).await {
        Ok(moved) => axum::Json(json!({ "moved": moved })).into_response(),
        Err(NotifyError::NotFound(m)) => Problem::not_found(m).into_response(),
        Err(NotifyError::Invalid(m)) => invalid(m),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// Whether this server is the sandbox provider of `channel`.
fn sandbox_of(app: &Shared, channel: Channel) -> bool {
    let endpoint = match channel {
        Channel::Sms => &app.config.notify_sms,
        _ => &app.config.notify_letters,
    };
    matches!(endpoint, Some(ProviderEndpoint::Sandbox))
}

/// The sandbox takes a text message: `{"id", "to", "text", "sender"}`.
async fn sandbox_sms(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !sandbox_of(&app, Channel::Sms) {
        return Problem::not_found("the SMS sandbox is off (notify.sms_url)").into_response();
    }
    let provider = match signed(&app, &headers, &body) {
        Ok(p) => p.clone(),
        Err(r) => return *r,
    };
    #[derive(serde::Deserialize)]
    struct Sms {
        id: String,
        to: String,
        text: String,
        #[allow(dead_code)]
        sender: Option<String>,
    }
    let sms: Sms = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return invalid(format!(
                "a text message is {{\"id\", \"to\", \"text\", \"sender\"}}: {e}"
            ));
        }
    };
    let digits = sms.to.strip_prefix('+').unwrap_or_default();
    if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return invalid("to is not an E.164 number");
    }
    if sms.text.is_empty() {
        return invalid("text is empty");
    }
    // Numbers Notify's simulator fails fail here too; every other number is reached.
    let end = civitas_notify::simulated_end(&sms.to);
    let steps = match end {
        "delivered" => vec!["pending", "delivered"],
        other => vec![other],
    };
    answer_and_report(app, provider, sms.id, steps)
}

/// The sandbox takes a letter: its PDF, its notification named in the header.
async fn sandbox_letter(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !sandbox_of(&app, Channel::Letter) {
        return Problem::not_found("the letter sandbox is off (notify.letter_url)").into_response();
    }
    let provider = match signed(&app, &headers, &body) {
        Ok(p) => p.clone(),
        Err(r) => return *r,
    };
    if !body.starts_with(b"%PDF-") {
        return invalid("a letter is a PDF");
    }
    let Some(id) = headers
        .get(NOTIFICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return invalid(format!("{NOTIFICATION_HEADER} names the letter"));
    };
    answer_and_report(app, provider, id, vec!["delivered"])
}

/// Answers with the sandbox's reference, and sends a receipt for each of `steps` back to
/// this server, signed, in order, each tried up to four times.
fn answer_and_report(
    app: Shared,
    provider: Provider,
    id: String,
    steps: Vec<&'static str>,
) -> Response {
    let reference = format!("sandbox-{}", uuid::Uuid::new_v4());
    let to = format!("{}/notify/receipts", app.oidc.issuer());
    let http = app.gateway.clone();
    let given = reference.clone();
    tokio::spawn(async move {
        // After the answer, as a real provider's receipts come.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for status in steps {
            let body = json!({
                "id": id,
                "reference": given,
                "status": status,
                "at": crate::ops::rfc3339(Some(civitas_ledger::event::now_ms())),
            })
            .to_string();
            let signature = provider.sign(body.as_bytes());
            for attempt in 0..4u32 {
                let sent = http
                    .post(&to)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() || r.status().is_client_error() => break,
                    _ => tokio::time::sleep(Duration::from_millis(500 << attempt)).await,
                }
            }
        }
    });
    axum::Json(json!({ "reference": reference })).into_response()
}
