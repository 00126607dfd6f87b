//! The ledger over HTTP, in the C2SP layouts: `/ledger/checkpoint`, `/ledger/key`,
//! `/ledger/tile/...`, and the witness endpoint `/ledger/witness/add-checkpoint`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use civitas_ledger::LedgerError;
use civitas_ledger::tiles::TileRef;

use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/ledger/checkpoint", get(checkpoint))
        .route("/ledger/key", get(key))
        .route("/ledger/tile/{*path}", get(tile))
        .route("/ledger/witness/add-checkpoint", post(add_checkpoint))
        .route("/ledger/witness/key", get(witness_key))
        .route("/api/v1/ledger/checkpoints", get(checkpoints))
}

const TEXT: &str = "text/plain; charset=utf-8";
/// Checkpoints change as the log grows: caches may keep one only briefly.
const CHECKPOINT_CACHE: &str = "public, max-age=2, must-revalidate";
/// A tile's content never changes once served.
const TILE_CACHE: &str = "public, max-age=31536000, immutable";

fn ledger_problem(e: &LedgerError) -> Response {
    match e {
        LedgerError::NotFound(why) => Problem::not_found(why.clone()).into_response(),
        LedgerError::Unavailable(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger-unavailable",
            "Ledger unavailable",
        )
        .detail(why.clone())
        .into_response(),
        other => Problem::internal(other).into_response(),
    }
}

async fn checkpoint(State(app): State<Shared>) -> Response {
    match app.ledger.checkpoint().await {
        Ok(cp) => (
            [
                (header::CONTENT_TYPE, TEXT),
                (header::CACHE_CONTROL, CHECKPOINT_CACHE),
            ],
            cp.note.clone(),
        )
            .into_response(),
        Err(e) => ledger_problem(&e),
    }
}

/// The log's origin line and its verifier key, one per line.
async fn key(State(app): State<Shared>) -> Response {
    let body = format!("{}\n{}\n", app.ledger.origin(), app.ledger.verifier_key());
    (
        [
            (header::CONTENT_TYPE, TEXT),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn tile(State(app): State<Shared>, Path(path): Path<String>) -> Response {
    let Some(t) = TileRef::parse(&path) else {
        return Problem::not_found(format!("`tile/{path}` is not a tile path")).into_response();
    };
    let data = match t.level {
        Some(level) => app.ledger.hash_tile(level, t.n, t.width).await,
        None => app.ledger.entry_bundle(t.n, t.width).await,
    };
    match data {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, TILE_CACHE),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => ledger_problem(&e),
    }
}

async fn add_checkpoint(State(app): State<Shared>, body: Bytes) -> Response {
    let Some(witness) = app.witness.as_ref() else {
        return Problem::not_found("This instance is not configured as a witness.").into_response();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not UTF-8\n").into_response();
    };
    match witness.add_checkpoint(text).await {
        Ok(lines) => ([(header::CONTENT_TYPE, TEXT)], lines).into_response(),
        Err(civitas_ledger::WitnessRefusal::Conflict(size)) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(error = %e, "witness failed");
            } else {
                tracing::warn!(refusal = %e, "witness refused a checkpoint");
            }
            (status, [(header::CONTENT_TYPE, TEXT)], format!("{e}\n")).into_response()
        }
    }
}

async fn witness_key(State(app): State<Shared>) -> Response {
    match app.witness.as_ref() {
        Some(w) => (
            [(header::CONTENT_TYPE, TEXT)],
            format!("{}\n", w.verifier_key()),
        )
            .into_response(),
        None => Problem::not_found("This instance is not configured as a witness.").into_response(),
    }
}

/// Every checkpoint the ledger has published, oldest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CheckpointList {
    /// C2SP signed notes, each with the log's signature and any witness cosignatures.
    checkpoints: Vec<String>,
}

/// Every checkpoint the log has published, oldest first, so auditors can check that each
/// one is a prefix of today's tree.
#[utoipa::path(get, path = "/api/v1/ledger/checkpoints", tag = "ledger",
    responses((status = 200, description = "Published checkpoints, oldest first", body = CheckpointList)))]
pub(crate) async fn checkpoints(State(app): State<Shared>) -> Response {
    match app.ledger.published_checkpoints().await {
        Ok(checkpoints) => axum::Json(CheckpointList { checkpoints }).into_response(),
        Err(e) => ledger_problem(&e),
    }
}
