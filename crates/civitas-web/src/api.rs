//! The public JSON API under `/api/v1`, and its OpenAPI 3.1 document.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    Problem, Shared, consent_api, data_usage, exchange_api, ledger, mydata, ops, prefill,
    services_api,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Civitas API", description = "Public API of a Civitas digital-government platform."),
    paths(list_agencies, get_agency, status, ledger::checkpoints, data_usage::api, ops::healthz, ops::readyz,
        exchange_api::directory, exchange_api::add_member, exchange_api::add_subsystem, exchange_api::add_service,
        exchange_api::grant, exchange_api::revoke, exchange_api::add_gateway, exchange_api::revoke_gateway,
        consent_api::purposes, consent_api::add_purpose, consent_api::items, consent_api::jwks,
        consent_api::agreements, consent_api::propose, consent_api::agreement, consent_api::statistics, consent_api::approve,
        consent_api::reject, consent_api::validity, consent_api::my_consents, consent_api::my_consent,
        consent_api::answer, consent_api::change, consent_api::receipt, mydata::release,
        prefill::mine, prefill::for_person,
        services_api::services, services_api::service, services_api::forms, services_api::apply, services_api::applications,
        services_api::application, services_api::update, services_api::upload, services_api::tasks, services_api::task, services_api::complete),
    components(schemas(AgencyView, StatusView, Problem, ledger::CheckpointList, data_usage::DataUse,
        exchange_api::MemberIn, exchange_api::SubsystemIn, exchange_api::ServiceIn, exchange_api::RightIn, exchange_api::GatewayIn,
        consent_api::PurposeIn, consent_api::RejectIn, consent_api::AnswerIn,
        prefill::MineIn, prefill::ForPersonIn, services_api::ApplyIn, services_api::FormData, services_api::UpdateIn, services_api::CompleteIn)),
    tags(
        (name = "agencies", description = "The government agencies on this platform"),
        (name = "platform", description = "This instance"),
        (name = "ledger", description = "The transparency log of consequential events (its C2SP files live under /ledger)"),
        (name = "me", description = "The signed-in person's own records (session cookie)"),
        (name = "exchange", description = "The exchange's directory, for its operators (an access token, or a session with X-CSRF-Token; changes need level substantial)"),
        (name = "consent", description = "Data agreements and consent: purposes, data items and the records' key for anyone; proposals and validity checks for organisations (their client id and secret, HTTP Basic); decisions for operators"),
        (name = "services", description = "One-stop services in the shape of GovStack's registration building block: the catalogue for anyone; applications for residents (their session); tasks for agencies' staff (their session, X-CSRF-Token and level substantial to act)"),
        (name = "operations", description = "Health and readiness probes"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of the public API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/agencies", get(list_agencies))
        .route("/api/v1/agencies/{code}", get(get_agency))
        .route("/api/v1/status", get(status))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi()))
}

/// A government agency.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgencyView {
    /// Stable short code, also its exchange member code.
    code: String,
    /// Kind: `ministry`, `agency` or `operator`.
    kind: String,
    /// Name in Traditional Chinese.
    name_zh: String,
    /// Name in English.
    name_en: String,
    /// What it does, in Traditional Chinese.
    description_zh: String,
    /// What it does, in English.
    description_en: String,
    /// Its supervising ministry in Traditional Chinese, if any.
    parent_zh: String,
    /// Its supervising ministry in English, if any.
    parent_en: String,
    /// Its public website.
    website: String,
}

impl From<civitas_registry::Agency> for AgencyView {
    fn from(a: civitas_registry::Agency) -> Self {
        AgencyView {
            code: a.code,
            kind: a.kind,
            name_zh: a.name_zh,
            name_en: a.name_en,
            description_zh: a.description_zh,
            description_en: a.description_en,
            parent_zh: a.parent_zh,
            parent_en: a.parent_en,
            website: a.website,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/agencies", tag = "agencies",
    responses((status = 200, description = "Every agency, ordered by code", body = [AgencyView])))]
async fn list_agencies(State(app): State<Shared>) -> Response {
    match civitas_registry::agencies(&app.db).await {
        Ok(list) => {
            Json(list.into_iter().map(AgencyView::from).collect::<Vec<_>>()).into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/agencies/{code}", tag = "agencies",
    params(("code" = String, Path, description = "Agency code, e.g. `HRO`")),
    responses((status = 200, body = AgencyView), (status = 404, body = Problem)))]
async fn get_agency(State(app): State<Shared>, Path(code): Path<String>) -> Response {
    match civitas_registry::agency(&app.db, &code).await {
        Ok(Some(a)) => Json(AgencyView::from(a)).into_response(),
        Ok(None) => {
            Problem::not_found(format!("There is no agency with code `{code}`.")).into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// This instance: software version and database engine.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatusView {
    /// Civitas version.
    version: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
}

#[utoipa::path(get, path = "/api/v1/status", tag = "platform", responses((status = 200, body = StatusView)))]
async fn status(State(app): State<Shared>) -> Json<StatusView> {
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION"),
        database: app.db.engine().name(),
    })
}
