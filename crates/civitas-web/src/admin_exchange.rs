//! Operator page for the exchange: the directory (members, subsystems, services) and the
//! access rights, with forms to add to it, grant and revoke rights, and allow deferrals.
//! Viewing needs an operator account; every change needs level substantial and is a ledger
//! event (logged by the directory, with the operator's account as actor).

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use civitas_core::xroad::{ClientId, ServiceId};
use civitas_exchange::{AccessRight, Endpoint, ExchangeError, NewService, Service, Subsystem};
use civitas_identity::Loa;
use serde::Deserialize;

use crate::Shared;
use crate::account::{FieldError, error_for, guard_form};
use crate::admin::operator_only;
use crate::auth::{SignedIn, Visitor};
use crate::pages::{Chrome, error_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/admin/exchange", get(show).post(change))
}

/// A subsystem with what it provides and what it may call.
struct SubsystemView {
    s: Subsystem,
    services: Vec<Service>,
    rights: Vec<AccessRight>,
}

struct MemberView {
    id: String,
    name: String,
    subsystems: Vec<SubsystemView>,
}

/// A registered gateway and what the directory last heard from it.
struct GatewayView {
    member: String,
    address: String,
    signing_key: String,
    /// When it last fetched the configuration (RFC 3339), if since this node started.
    last_poll: Option<String>,
    /// The version it held then.
    holds: Option<u64>,
    /// `current`, `behind` or `silent` (the alarm: no poll within a configuration's validity).
    state: &'static str,
}

#[derive(Template)]
#[template(path = "admin_exchange.html")]
struct ExchangePage {
    c: Chrome,
    errors: Vec<FieldError>,
    /// The directory's version, the configuration's validity, and the anchor gateways trust.
    version: u64,
    validity_secs: u64,
    anchor_key: String,
    gateways: Vec<GatewayView>,
    members: Vec<MemberView>,
    /// Every subsystem and service id, for the grant form's lists.
    clients: Vec<String>,
    services: Vec<String>,
    form: ChangeForm,
}

impl ExchangePage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

#[derive(Deserialize, Default, Clone)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    /// `member`, `subsystem`, `service`, `grant`, `revoke` or `may_defer`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    networks: String,
    #[serde(default)]
    url: String,
    /// One `METHOD /path` per line.
    #[serde(default)]
    endpoints: String,
    #[serde(default)]
    openapi: String,
    #[serde(default)]
    personal: Option<String>,
    #[serde(default)]
    service: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    allowed: String,
    /// A gateway's public keys, as `civitas exchange gateway keys` prints them.
    #[serde(default)]
    keys: String,
}

async fn page(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    errors: Vec<FieldError>,
    form: ChangeForm,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let built = async {
        let d = &app.exchange;
        let subsystems = d.subsystems().await?;
        let mut members = Vec::new();
        let (mut clients, mut services) = (Vec::new(), Vec::new());
        for m in d.members().await? {
            let mut subs = Vec::new();
            for s in subsystems.iter().filter(|s| s.id.member == m.id) {
                let provided = d.services(&s.id).await?;
                services.extend(provided.iter().map(|x| x.id.to_string()));
                clients.push(s.id.to_string());
                subs.push(SubsystemView {
                    rights: d.rights_of(&s.id, None).await?,
                    services: provided,
                    s: s.clone(),
                });
            }
            members.push(MemberView {
                id: m.id.to_string(),
                name: m.name,
                subsystems: subs,
            });
        }
        let version = d.configuration(0).await?.version;
        let polls = app.gateway_polls.all();
        let validity_ms = app.config.exchange_configuration_validity_secs as i64 * 1000;
        let now = civitas_ledger::event::now_ms();
        let gateways = d
            .gateways()
            .await?
            .into_iter()
            .map(|g| {
                let member = g.member.to_string();
                let poll = polls.iter().find(|(m, _, _)| *m == member);
                let state = match poll {
                    Some((_, at, _)) if now - at > validity_ms => "silent",
                    Some((_, _, held)) if *held < version => "behind",
                    Some(_) => "current",
                    None => "silent",
                };
                GatewayView {
                    last_poll: crate::ops::rfc3339(poll.map(|(_, at, _)| *at)),
                    holds: poll.map(|(_, _, v)| *v),
                    state,
                    address: g.address,
                    signing_key: g.signing_key,
                    member,
                }
            })
            .collect();
        let anchor_key = d.anchor().await?.key;
        Ok::<_, ExchangeError>((members, clients, services, version, gateways, anchor_key))
    };
    match built.await {
        Ok((members, clients, services, version, gateways, anchor_key)) => render(
            &ExchangePage {
                c,
                errors,
                version,
                validity_secs: app.config.exchange_configuration_validity_secs,
                anchor_key,
                gateways,
                members,
                clients,
                services,
                form,
            },
            status,
        ),
        Err(e) => error_page(c, headers, &e),
    }
}

async fn show(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => page(&app, c, &headers, Vec::new(), ChangeForm::default()).await,
        Err(r) => *r,
    }
}

/// The form field an action's error belongs to (the first field of its form).
fn field_of(action: &str) -> &'static str {
    match action {
        "member" => "member_id",
        "subsystem" => "subsystem_id",
        "service" => "service_id",
        "grant" => "grant_service",
        "gateway" => "gateway_member",
        _ => "directory",
    }
}

async fn change(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<ChangeForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let actor = format!("account:{}", s.account.id);
    match apply(&app, &f, &actor).await {
        Ok(()) => Redirect::to("/admin/exchange").into_response(),
        Err(ExchangeError::Store(e)) => error_page(c, &headers, &e),
        Err(ExchangeError::Ledger(e)) => error_page(c, &headers, &e),
        Err(e) => {
            let errors = vec![FieldError {
                field: field_of(&f.action),
                message: e.to_string(),
            }];
            page(&app, c, &headers, errors, f).await
        }
    }
}

async fn apply(app: &Shared, f: &ChangeForm, actor: &str) -> Result<(), ExchangeError> {
    let d = &app.exchange;
    let client = |t: &str| ClientId::parse(t.trim()).map_err(ExchangeError::from);
    let service = |t: &str| ServiceId::parse(t.trim()).map_err(ExchangeError::from);
    match f.action.as_str() {
        "member" => {
            let id = client(&f.id)?;
            if id.subsystem.is_some() {
                return Err(ExchangeError::Invalid(format!(
                    "{id} names a subsystem; a member is INSTANCE/CLASS/CODE"
                )));
            }
            d.add_member(&id.member, &f.name, actor).await.map(|_| ())
        }
        "subsystem" => {
            let networks = if f.networks.trim().is_empty() {
                civitas_exchange::network::LOOPBACK
            } else {
                f.networks.as_str()
            };
            d.add_subsystem(&client(&f.id)?, &f.name, networks, actor)
                .await
                .map(|_| ())
        }
        "service" => {
            let endpoints = f
                .endpoints
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(Endpoint::parse)
                .collect::<Result<Vec<_>, ExchangeError>>()?;
            let openapi = (!f.openapi.trim().is_empty()).then(|| f.openapi.trim().to_string());
            d.add_service(
                NewService {
                    id: service(&f.id)?,
                    base_url: f.url.clone(),
                    openapi,
                    endpoints,
                    personal: f.personal.is_some(),
                },
                actor,
            )
            .await
            .map(|_| ())
        }
        "grant" => d
            .grant(
                &service(&f.service)?,
                &client(&f.client)?,
                &f.method,
                &f.path,
                actor,
            )
            .await
            .map(|_| ()),
        "revoke" => {
            d.revoke(
                &service(&f.service)?,
                &client(&f.client)?,
                &f.method,
                &f.path,
                actor,
            )
            .await
        }
        "gateway" => {
            let member = civitas_core::xroad::MemberId::parse(&f.id)?;
            let keys: civitas_exchange::keys::PublicKeys =
                serde_json::from_str(&f.keys).map_err(|_| {
                    ExchangeError::Invalid(
                        "paste the keys exactly as `civitas exchange gateway keys` prints them"
                            .into(),
                    )
                })?;
            d.add_gateway(&member, f.url.trim(), &keys, actor)
                .await
                .map(|_| ())
        }
        "revoke_gateway" => {
            d.revoke_gateway(&civitas_core::xroad::MemberId::parse(&f.id)?, actor)
                .await
        }
        "may_defer" => {
            d.set_may_defer(&client(&f.id)?, f.allowed == "yes", actor)
                .await
        }
        other => Err(ExchangeError::Invalid(format!("unknown action {other:?}"))),
    }
}
