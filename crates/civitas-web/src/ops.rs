//! Operational endpoints: liveness, readiness, Prometheus metrics, and the middleware that
//! measures every request.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{Problem, Shared};

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide Prometheus recorder once.
pub(crate) fn install_metrics() {
    METRICS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (only in embedding tests): render an empty registry.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        // The recorder keeps every timing it is given until its upkeep folds them into the
        // histograms: without it, on a node nobody scrapes, eight bytes a request more
        // (a gateway at 5,000 calls a second would grow by 144 MB an hour).
        let upkept = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkept.run_upkeep();
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the metrics' upkeep");
        }
        handle
    });
}

/// How often the recorder's timings are folded into its histograms.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Counts and times every request by route template and status.
pub(crate) async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
}

/// Liveness: the process answers.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "alive" })
}

/// Readiness: the database answers and its schema matches this build; on a gateway, its
/// configuration from the directory is in force (a stale one within its grace period is
/// ready, with the alarm in `exchange`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    status: &'static str,
    database: &'static str,
    schema: Vec<ComponentSchema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<ExchangeReadiness>,
}

/// A gateway's configuration: `fresh`, `stale` (expired, served on within the grace period:
/// an alarm), `expired` (beyond the grace period: calls are refused) or `missing`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExchangeReadiness {
    configuration: &'static str,
    version: Option<u64>,
    expires_at: Option<String>,
    grace_ends_at: Option<String>,
    fetched_at: Option<String>,
    last_error: Option<String>,
}

/// A time in ms since the epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(ms: Option<i64>) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms?) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The gateway's configuration state, when this node is a gateway.
pub(crate) fn exchange_readiness(app: &Shared) -> Option<ExchangeReadiness> {
    use civitas_exchange::Freshness;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let s = app.exchange.configuration_state(now)?;
    let configuration = match s.freshness {
        Freshness::Missing => "missing",
        Freshness::Fresh => "fresh",
        Freshness::Stale => "stale",
        Freshness::Expired => "expired",
    };
    if let Some(expires) = s.expires_ms {
        metrics::gauge!("civitas_exchange_configuration_expires_in_seconds")
            .set((expires - now) as f64 / 1000.0);
    }
    metrics::gauge!("civitas_exchange_configuration_version")
        .set(s.version.unwrap_or_default() as f64);
    metrics::gauge!("civitas_exchange_configuration_stale").set(
        if matches!(s.freshness, Freshness::Fresh) {
            0.0
        } else {
            1.0
        },
    );
    Some(ExchangeReadiness {
        configuration,
        version: s.version,
        expires_at: rfc3339(s.expires_ms),
        grace_ends_at: rfc3339(s.grace_ends_ms),
        fetched_at: rfc3339(s.fetched_ms),
        last_error: s.last_error,
    })
}

/// One component's schema version in the database and in this build.
#[derive(Serialize, ToSchema)]
pub(crate) struct ComponentSchema {
    component: String,
    applied: i64,
    known: i64,
    current: bool,
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Database unreachable or schema not current", body = Problem)))]
pub(crate) async fn readyz(State(app): State<Shared>) -> Response {
    if let Err(e) = app.db.ping().await {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .detail(format!("The database does not answer: {e}"))
            .into_response();
    }
    let status = match civitas_store::schema_status(&app.db, app.components).await {
        Ok(s) => s,
        Err(e) => {
            return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
                .detail(format!("The schema cannot be read: {e}"))
                .into_response();
        }
    };
    let schema: Vec<ComponentSchema> = status
        .into_iter()
        .map(|s| ComponentSchema {
            current: s.state() == civitas_store::SchemaState::Current,
            component: s.component,
            applied: s.applied,
            known: s.known,
        })
        .collect();
    if let Some(stale) = schema.iter().find(|s| !s.current) {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .detail(format!(
                "Schema of `{}` is at version {} but this build expects {}; run `civitas migrate`.",
                stale.component, stale.applied, stale.known
            ))
            .into_response();
    }
    let exchange = exchange_readiness(&app);
    if let Some(x) = exchange
        .as_ref()
        .filter(|x| matches!(x.configuration, "missing" | "expired"))
    {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .detail(format!(
                "The exchange's configuration is {}{}: the gateway refuses calls until the directory answers.",
                x.configuration,
                x.version.map(|v| format!(" (version {v})")).unwrap_or_default()
            ))
            .into_response();
    }
    Json(Readiness {
        status: "ready",
        database: app.db.engine().name(),
        schema,
        exchange,
    })
    .into_response()
}

async fn prometheus(State(app): State<Shared>) -> Response {
    let (open, idle) = app.db.pool_usage();
    let in_use = f64::from(open) - idle as f64;
    metrics::gauge!("civitas_db_pool_connections", "state" => "in_use").set(in_use);
    metrics::gauge!("civitas_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("civitas_db_pool_max_connections").set(f64::from(app.config.max_connections));
    // The threads that run requests (`workers`: one per core unless set).
    metrics::gauge!("civitas_runtime_workers")
        .set(tokio::runtime::Handle::current().metrics().num_workers() as f64);
    exchange_readiness(&app);
    // On the directory: how long since each gateway last fetched the configuration.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    for (member, at, _) in app.gateway_polls.all() {
        metrics::gauge!("civitas_exchange_gateway_poll_age_seconds", "member" => member)
            .set((now - at) as f64 / 1000.0);
    }
    let body = METRICS
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metrics_recorder_has_its_upkeep_running() {
        super::install_metrics();
        super::install_metrics();
        let upkeep = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "metrics-upkeep")
                .count()
        };
        // A new thread names itself once it runs: given up to 5 s.
        let mut found = upkeep();
        for _ in 0..100 {
            if found > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            found = upkeep();
        }
        assert_eq!(found, 1, "one upkeep thread, however often it is installed");
    }
}
