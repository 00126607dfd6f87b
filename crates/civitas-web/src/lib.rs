//! The HTTP edge of Civitas: the public API under `/api/v1` with its OpenAPI document,
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`) and the server-rendered pages.
//!
//! Handlers stay thin: they parse the request, call a block's API and render the result.
//! Blocks never see HTTP types.

mod account;
mod account_texts;
mod admin;
mod admin_consent;
mod admin_exchange;
mod api;
mod applications;
pub mod auth;
mod coalesce;
mod consent_api;
mod consents_page;
mod console;
mod data_usage;
mod exchange;
mod exchange_api;
pub mod exchange_peer;
pub mod hop;
mod i18n;
mod inbox_page;
mod ledger;
pub mod memo;
mod my_data;
mod mydata;
mod notify_admin;
mod notify_api;
mod notify_providers;
mod oidc;
mod oidc_texts;
mod ops;
mod org_page;
mod pages;
mod passkey_routes;
mod prefill;
mod problem;
pub mod services_api;
mod services_pages;
mod unread;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use civitas_core::config::Config;
use civitas_store::{Component, Db};
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use problem::Problem;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// The schema components this build knows, for `/readyz`.
    pub components: &'static [Component],
    /// The ledger of consequential events.
    pub ledger: civitas_ledger::Ledger,
    /// The witness role, when this instance cosigns other logs' checkpoints.
    pub witness: Option<civitas_ledger::Witness>,
    /// Accounts, sign-in, sessions and mandates.
    pub identity: civitas_identity::Identity,
    /// The OpenID Connect provider.
    pub oidc: civitas_identity::oidc::Provider,
    /// The development mail sink, when configured (`identity.dev_mail_sink`).
    pub mail_sink: Option<civitas_identity::MailSink>,
    /// The exchange's directory.
    pub exchange: civitas_exchange::Directory,
    /// Data agreements and consent records.
    pub consents: civitas_consent::Consents,
    /// Notify: sending services, keys, templates and notifications.
    pub notify: civitas_notify::Notify,
    /// Notify's providers of text messages and letters, when configured: its secret signs
    /// what the sandbox sends and checks the receipts that come back.
    pub notify_provider: Option<civitas_notify::provider::Provider>,
    /// The HTTP client Notify calls its providers with.
    pub gateway: reqwest::Client,
    /// The client the gateway calls providers' information systems with.
    pub information_systems: hop::Hop,
    /// This node as the exchange gateway of one member (`role = "gateway"`).
    pub gateway_role: Option<Arc<exchange_peer::GatewayRole>>,
    /// The gateways' configuration polls, as the directory saw them.
    pub gateway_polls: exchange_peer::Polls,
    /// The key of the encrypted body archive, when it is on (`exchange.archive_days`).
    pub archive: Option<Arc<civitas_exchange::archive::ArchiveKey>>,
    /// What the registers never change while the program runs, remembered between requests.
    pub registers: Arc<memo::RegisterMemo>,
    /// One-stop services: the catalogue, applications and cases.
    pub services: civitas_services::Services,
    /// The agencies' Notify services and templates for applicants' messages, remembered.
    pub service_senders: Arc<services_api::Senders>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The applications of a gateway node (`role = "gateway"`): for its information systems
/// (the exchange's gateway and the operational endpoints) and, on the TLS listener, for
/// other gateways.
pub fn gateway_apps(state: AppState) -> (Router, Router) {
    ops::install_metrics();
    let state = Arc::new(state);
    // The gateway's own message log is public like every ledger: auditors fetch its tiles.
    let local = Router::new()
        .merge(ops::routes())
        .merge(exchange::routes())
        .merge(ledger::routes())
        .with_state(state.clone());
    let peers = Router::new()
        // civitas_exchange::message::PATH, which the calling gateways post to.
        .route(
            "/exchange/v1/message",
            axum::routing::post(exchange_peer::receive),
        )
        .with_state(state);
    (layered(local), peers)
}

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    ops::install_metrics();
    let state = Arc::new(state);
    // Only the pages people fill in get the anti-forgery cookie: API answers and the
    // ledger's immutable tiles stay cookie-free, so caches can keep them.
    let pages = Router::new()
        .merge(account::routes())
        .merge(applications::routes())
        .merge(data_usage::routes())
        .merge(consents_page::routes())
        .merge(my_data::routes())
        .merge(admin::routes())
        .merge(admin_exchange::routes())
        .merge(admin_consent::routes())
        .merge(notify_admin::routes())
        .merge(services_pages::routes())
        .merge(console::routes())
        .merge(passkey_routes::routes())
        .merge(pages::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::ensure_csrf_cookie,
        ));
    layered(
        Router::new()
            .merge(ops::routes())
            .merge(api::routes())
            .merge(ledger::routes())
            .merge(oidc::routes())
            .merge(consent_api::routes())
            .merge(mydata::routes())
            .merge(prefill::routes())
            .merge(org_page::routes())
            .merge(notify_api::routes())
            .merge(notify_providers::routes())
            .merge(inbox_page::routes())
            .merge(exchange::routes())
            .merge(data_usage::api_routes())
            .merge(exchange_api::routes())
            .merge(services_api::routes())
            .merge(pages)
            .with_state(state),
    )
}

/// The layers every request passes: request ids, tracing, metrics, security headers.
fn layered(router: Router) -> Router {
    router.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %logged_path(req.uri().path()), request_id = %id)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(ops::record_metrics))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                )),
        )
}

type Shared = Arc<AppState>;

/// A request's path as the logs keep it: an exchange call's path below its service (which
/// may name a person, such as `/persons/A123456789`) is left out.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.starts_with("/r1/") {
        return path.into();
    }
    let service: Vec<&str> = path.splitn(8, '/').take(7).collect();
    if path.split('/').count() > 7 {
        format!("{}/…", service.join("/")).into()
    } else {
        path.into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exchange_paths_are_logged_without_what_follows_the_service() {
        let p = super::logged_path("/r1/TW/GOV/HRO/registry/population/persons/A123456789");
        assert_eq!(p, "/r1/TW/GOV/HRO/registry/population/…");
        assert_eq!(
            super::logged_path("/r1/TW/GOV/HRO/registry/listMethods"),
            "/r1/TW/GOV/HRO/registry/listMethods"
        );
        assert_eq!(super::logged_path("/account/sessions"), "/account/sessions");
    }
}
