//! "Who used my data": every exchange call about the signed-in person, from the ledger, with
//! when, which agency's system asked, which service answered, the purpose and the legal
//! basis, and a proof that the entry is in the log (a C2SP tlog-proof bundle the person can
//! check with `civitas ledger verify`, or anyone with the log's key).

use std::collections::HashMap;

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use civitas_identity::session::SessionInfo;
use serde::Serialize;
use utoipa::ToSchema;

use crate::account::taiwan_time;
use crate::auth::{SignedIn, Visitor};
use crate::pages::{Chrome, error_page, message_page, render};
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/account/data-usage", get(page))
        .route("/account/data-usage/{index}/proof", get(proof))
        .route("/account/data-usage/{index}/verify", get(verify))
}

pub(crate) fn api_routes() -> axum::Router<Shared> {
    axum::Router::new().route("/api/v1/me/data-usage", get(api))
}

/// One use of the person's data.
#[derive(Serialize, ToSchema)]
pub(crate) struct DataUse {
    /// The entry's index in the ledger.
    index: u64,
    /// When, RFC 3339 (UTC).
    time: String,
    /// The calling subsystem, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
    client: String,
    /// The calling organisation's name.
    client_name: String,
    /// The service called, `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`.
    service: String,
    /// The organisation that holds the data.
    provider_name: String,
    /// Why, as the caller said.
    purpose: String,
    /// The legal basis the caller named.
    legal_basis: String,
    /// The consent it relied on, when the basis is consent.
    consent_reference: Option<String>,
    /// The organisation the caller acted for, when it said so.
    represented_party: Option<String>,
    /// Under whose mandate the call was made for the person: the mandate's basis
    /// (`parent`, `granted`), when someone acted for them.
    mandate: Option<String>,
    /// The name of whoever acted for the person under that mandate, when they are among the
    /// people who may (their parents, or someone they granted a mandate to).
    mandate_holder: Option<String>,
    /// The call's `X-Road-Id`.
    x_road_id: String,
    /// The answer's HTTP status.
    status: u64,
    /// When the caller had the law's leave to keep the call from the person until a time
    /// (an investigation, say): that time, RFC 3339. The entry appears once it has passed.
    deferred_until: Option<String>,
    /// Why it was deferred.
    deferral_reason: Option<String>,
    /// When the read was made to release the data to an organisation's application under
    /// the person's consent: the application's `client_id`.
    released_to: Option<String>,
    /// That application's name.
    released_to_name: Option<String>,
    /// The data items the read served in that release.
    released_items: Vec<String>,
    /// Where to fetch the entry's inclusion proof.
    proof: String,
}

/// The person's data uses, newest first.
async fn uses(app: &Shared, s: &SessionInfo) -> Result<Vec<DataUse>, Box<dyn std::error::Error>> {
    let tag = app
        .ledger
        .subject_secret(&s.account.subject_ref())
        .await?
        .tag();
    let names: HashMap<String, String> = app
        .exchange
        .members()
        .await?
        .into_iter()
        .map(|m| (m.id.to_string(), m.name))
        .collect();
    let name_of = |id: &str| {
        let member: Vec<&str> = id.splitn(4, '/').take(3).collect();
        names.get(&member.join("/")).cloned().unwrap_or_default()
    };
    let text = |e: &civitas_ledger::Event, k: &str| {
        e.public.get(k).and_then(|v| v.as_str()).map(str::to_string)
    };
    // Who may have acted for the person, by the tag the log keeps of them.
    let mut holders: HashMap<String, String> = HashMap::new();
    if let Some(person) = s.account.person_id {
        for (id, name) in civitas_identity::mandate::possible_holders(&app.db, person).await? {
            let tag = app
                .ledger
                .subject_secret(&format!("person:{id}"))
                .await?
                .tag();
            holders.insert(tag.to_string(), name);
        }
    }
    let now = time::OffsetDateTime::now_utc();
    // The person's own entries, and the deferred ones whose time has come (each logged under
    // a subject of its own, so that nobody finds it by the person's tag before then).
    let mut events = app.ledger.subject_events(tag).await?;
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    for deferral in app
        .exchange
        .deferrals_due(&s.account.subject_ref(), now_ms)
        .await?
    {
        let tag = app.ledger.subject_secret(&deferral).await?.tag();
        events.extend(app.ledger.subject_events(tag).await?);
    }
    events.sort_by_key(|(i, _)| *i);
    // The applications the person's data was released to, by client id.
    let mut applications: HashMap<String, Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for (index, e) in events {
        if e.kind != "exchange.call" {
            continue;
        }
        // A deferred call stays out of sight until its time has passed.
        let deferred_until = text(&e, "deferred_until");
        if deferred_until.as_deref().is_some_and(|u| {
            time::OffsetDateTime::parse(u, &time::format_description::well_known::Rfc3339)
                .map_or(true, |t| t > now)
        }) {
            continue;
        }
        // What the caller said, from the private row the entry's hash commits to; entries
        // logged before that kept it in their public fields.
        let key = text(&e, "details_key")
            .or_else(|| text(&e, "request_id"))
            .unwrap_or_default();
        let details = match &e.payload_sha256 {
            Some(hash) => civitas_exchange::tracker::CallDetails::find(&app.db, &key, hash)
                .await?
                .unwrap_or_default(),
            None => civitas_exchange::tracker::CallDetails {
                purpose: text(&e, "purpose").unwrap_or_default(),
                legal_basis: text(&e, "legal_basis").unwrap_or_default(),
                consent_reference: text(&e, "consent_reference"),
                deferral_reason: text(&e, "deferral_reason"),
                mandate_holder: None,
            },
        };
        let client = e
            .actor
            .strip_prefix("xroad:")
            .unwrap_or(&e.actor)
            .to_string();
        let service = e
            .object
            .strip_prefix("exchange/service/")
            .unwrap_or(&e.object)
            .to_string();
        let time = time::OffsetDateTime::from_unix_timestamp(e.time_ms / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let released_to = text(&e, "released_to");
        let released_to_name = match &released_to {
            Some(id) => match applications.get(id) {
                Some(name) => name.clone(),
                None => {
                    let name = app.oidc.client(id).await?.map(|c| c.name);
                    applications.insert(id.clone(), name.clone());
                    name
                }
            },
            None => None,
        };
        let released_items = e
            .public
            .get("items")
            .and_then(|v| serde::Deserialize::deserialize(v).ok())
            .unwrap_or_default();
        out.push(DataUse {
            index,
            time,
            client_name: name_of(&client),
            provider_name: name_of(&service),
            client,
            service,
            purpose: details.purpose,
            legal_basis: details.legal_basis,
            consent_reference: details.consent_reference,
            represented_party: text(&e, "represented_party"),
            mandate: text(&e, "mandate"),
            mandate_holder: details
                .mandate_holder
                .as_ref()
                .and_then(|t| holders.get(t).cloned()),
            x_road_id: text(&e, "x_road_id").unwrap_or_default(),
            status: e.public.get("status").and_then(|v| v.as_u64()).unwrap_or(0),
            deferral_reason: details.deferral_reason,
            deferred_until,
            released_to,
            released_to_name,
            released_items,
            proof: format!("/account/data-usage/{index}/proof"),
        });
    }
    out.reverse();
    Ok(out)
}

/// The uses of the signed-in person's data, newest first.
#[utoipa::path(get, path = "/api/v1/me/data-usage", tag = "me",
    responses(
        (status = 200, description = "Every exchange call about the signed-in person, newest first", body = [DataUse]),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn api(State(app): State<Shared>, v: Visitor) -> Response {
    let Some(s) = &v.session else {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Not signed in")
            .detail("Sign in to see who used your data.")
            .into_response();
    };
    match uses(&app, s).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => Problem::internal(&*e).into_response(),
    }
}

#[derive(Template)]
#[template(path = "data_usage.html")]
struct UsagePage {
    c: Chrome,
    rows: Vec<(DataUse, String)>,
}

async fn page(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "account");
    match uses(&app, &s).await {
        Ok(list) => {
            let rows = list
                .into_iter()
                .map(|u| {
                    let when = time::OffsetDateTime::parse(
                        &u.time,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map(|t| taiwan_time(t.unix_timestamp() * 1000))
                    .unwrap_or_default();
                    (u, when)
                })
                .collect();
            render(&UsagePage { c, rows }, StatusCode::OK)
        }
        Err(e) => error_page(c, &headers, &*e),
    }
}

/// The page's chrome when use `index` is about the signed-in person; else not found.
async fn theirs(
    app: &Shared,
    c: Chrome,
    s: &SessionInfo,
    headers: &axum::http::HeaderMap,
    index: u64,
) -> Result<Chrome, Box<Response>> {
    match uses(app, s).await {
        Ok(list) if list.iter().any(|u| u.index == index) => Ok(c),
        Ok(_) => Err(Box::new(message_page(
            c,
            StatusCode::NOT_FOUND,
            |t| (t.not_found_title, t.not_found_text),
            String::new(),
        ))),
        Err(e) => Err(Box::new(error_page(c, headers, &*e))),
    }
}

/// The inclusion proof of one use, for the person it is about only.
async fn proof(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(index): Path<u64>,
) -> Response {
    let c = match theirs(
        &app,
        Chrome::for_visitor(&v, &headers, &uri, "account"),
        &s,
        &headers,
        index,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match app.ledger.proof_bundle(index).await {
        Ok(bundle) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    &format!("attachment; filename=\"civitas-proof-{index}.txt\""),
                ),
            ],
            bundle.to_text(),
        )
            .into_response(),
        Err(e) => error_page(c, &headers, &e),
    }
}

/// Checks one use's proof here, against the ledger's key: the entry is in the log under
/// a checkpoint the log signed.
async fn verify(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(index): Path<u64>,
) -> Response {
    let c = match theirs(
        &app,
        Chrome::for_visitor(&v, &headers, &uri, "account"),
        &s,
        &headers,
        index,
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let bundle = match app.ledger.proof_bundle(index).await {
        Ok(b) => b,
        Err(e) => return error_page(c, &headers, &e),
    };
    // Checked as anyone would check the downloaded file: from its text.
    let checked = civitas_ledger::ProofBundle::parse(&bundle.to_text())
        .and_then(|b| b.verify(app.ledger.verifier_key()));
    let lang = c.lang;
    let mut facts = vec![(lang.pick("帳本位置", "Ledger entry"), index.to_string())];
    let (ok, problem) = match checked {
        Ok(cp) => {
            facts.push((lang.pick("帳本大小", "Ledger size"), cp.size.to_string()));
            facts.push((lang.pick("帳本", "Ledger"), cp.origin));
            (true, String::new())
        }
        Err(e) => (false, e.to_string()),
    };
    if let Some(e) = bundle
        .extra
        .as_deref()
        .and_then(|b| civitas_ledger::Event::decode(b).ok())
    {
        facts.push((lang.pick("事件", "Event"), e.kind));
    }
    render(
        &crate::consents_page::VerifiedPage {
            c,
            ok,
            problem,
            facts,
            command: format!(
                "civitas ledger verify civitas-proof-{index}.txt --key <{}>",
                lang.pick("帳本公鑰（/ledger/key）", "the ledger's key (/ledger/key)")
            ),
            back: "/account/data-usage",
        },
        StatusCode::OK,
    )
}
