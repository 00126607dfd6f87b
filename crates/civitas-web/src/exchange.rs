//! The exchange's gateway: X-Road's REST protocol (`{METHOD} /r1/{service}[/path][?query]`)
//! and its metaservices, so that existing X-Road clients work unchanged.
//!
//! A call names its client subsystem in `X-Road-Client`; the gateway checks that the
//! subsystem exists and that the call comes from its information system's address range,
//! that the service exists and is on, that the client holds a right for the method and path,
//! and, for a service about people, that the call names the person, a purpose and a legal
//! basis. It then streams the request to the provider's information system, streams the
//! answer back with `X-Road-Request-Hash` (which binds it to the request), and logs the call
//! to the ledger as hashes and metadata, about the person when there is one. Errors the
//! gateway raises itself are `{type, message, detail}` with `X-Road-Error`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use civitas_core::xroad::{ClientId, RepresentedParty, ServiceId, decode_segment};
use civitas_exchange::directory::Snapshot;
use civitas_exchange::protocol::{Fault, RequestHash, passes_on_request, passes_on_response};
use civitas_ledger::Event;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::Shared;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/r1/{*rest}", any(gateway))
        .route("/listClients", get(list_clients))
        .route("/exchange/v1/configuration", get(configuration))
        .route("/exchange/v1/tracker", axum::routing::post(tracker))
}

/// The metaservices a provider subsystem answers itself.
const METASERVICES: &[&str] = &["listMethods", "allowedMethods", "getOpenAPI"];

/// An error answer as X-Road gives it.
pub(crate) fn fault(f: Fault) -> Response {
    let detail = uuid::Uuid::new_v4().to_string();
    tracing::info!(fault = %f.kind, detail = %detail, message = %f.message, "exchange fault");
    let status = StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, f.body(&detail).to_string()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&f.kind) {
        h.insert("x-road-error", v);
    }
    res
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Fault {
    tracing::error!(error = %e, "exchange failure");
    Fault::server_proxy(
        "InternalError",
        "the gateway failed; the operator has the details",
    )
}

/// The last value of a header, as text.
pub(crate) fn last<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A header as it may leave for a provider: Civitas's own cookies (a session, the
/// anti-forgery cookie) never do, should a client ever send them; `None` when nothing is left.
fn without_own_cookies(name: &HeaderName, value: &HeaderValue) -> Option<HeaderValue> {
    if name != header::COOKIE {
        return Some(value.clone());
    }
    let kept: Vec<&str> = value
        .to_str()
        .ok()?
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("civitas_"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The service a request path names, and the path under it (raw, `""` or `/…`).
fn target(path: &str) -> Result<(ServiceId, String), Fault> {
    let bad = |m: String| Fault::client("BadRequest", m);
    let raw = path.strip_prefix("/r1/").unwrap_or_default();
    let mut pieces = raw.splitn(6, '/');
    let ids: Vec<&str> = pieces.by_ref().take(5).collect();
    if ids.len() < 5 || ids.iter().any(|p| p.is_empty()) {
        return Err(bad(format!(
            "Error parsing the client's REST request: the path must be /r1/INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/path], not {path}"
        )));
    }
    let service = ServiceId::parse(&ids.join("/")).map_err(|e| bad(e.to_string()))?;
    let rest = pieces.next().map(|r| format!("/{r}")).unwrap_or_default();
    // No way out of the service's root on any backend: no dot segments, also when encoded,
    // behind an encoded separator (`..%2F`, `..%5C`) or with a `;` parameter (`..;`).
    for segment in rest.split('/') {
        let s = decode_segment("the service path", segment).map_err(|e| bad(e.to_string()))?;
        let dots = s.split(['/', '\\']).any(|part| {
            let core = part.split(';').next().unwrap_or_default();
            core == "." || core == ".."
        });
        if dots {
            return Err(bad("the service path may not have . or .. segments".into()));
        }
    }
    Ok((service, rest))
}

/// The calling subsystem, checked: registered. Where the call comes from is the caller's
/// check (an information system's address range, or the gateway that hosts it).
fn caller<'a>(
    directory: &'a Snapshot,
    headers: &HeaderMap,
) -> Result<(ClientId, &'a civitas_exchange::Subsystem), Fault> {
    let text = last(headers, "x-road-client").ok_or_else(|| {
        Fault::client(
            "InvalidClientIdentifier",
            "The client identifier is missing (the X-Road-Client header)",
        )
    })?;
    let client = ClientId::parse(text)
        .map_err(|e| Fault::client("InvalidClientIdentifier", e.to_string()))?;
    let sub = directory.subsystem(&client).ok_or_else(|| {
        Fault::client_proxy("UnknownMember", format!("Client '{client}' not found"))
    })?;
    Ok((client, sub))
}

/// Why a call about a person is made (the data tracker's headers).
pub(crate) struct Reason {
    user: String,
    /// The person's ledger subject, once found in the register.
    subject: String,
    purpose: String,
    legal_basis: String,
    consent: Option<String>,
    /// Until when the person does not see the call, and why.
    deferral: Option<Deferral>,
    /// Who acted for the person, as `X-Road-PDU-Mandate-Holder` names them (the same forms as
    /// `X-Road-UserId`); once checked, the mandate's basis and the holder's ledger subject.
    holder: Option<String>,
    mandate: Option<(String, String)>,
}

/// A deferral asked for: until when (RFC 3339, and in ms), and why.
struct Deferral {
    until: String,
    until_ms: i64,
    reason: String,
}

/// A deferral the caller asks for (`X-Road-PDU-Hidden: true` with `…-Hidden-Reason` and
/// `…-Hidden-Until`): only a subsystem the law allows, for a stated reason, until a stated
/// time within [`civitas_exchange::directory::MAX_DEFERRAL_DAYS`].
fn deferral(
    headers: &HeaderMap,
    sub: &civitas_exchange::Subsystem,
) -> Result<Option<Deferral>, Fault> {
    use time::format_description::well_known::Rfc3339;
    if !last(headers, "x-road-pdu-hidden").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if !sub.may_defer {
        return Err(Fault::server_proxy(
            "AccessDenied",
            format!("{} may not defer when people see its calls", sub.id),
        ));
    }
    let bad = |m: &str| Fault::client("BadRequest", m.to_string());
    let reason = last(headers, "x-road-pdu-hidden-reason")
        .map(|v| decode_segment("header", v).unwrap_or_else(|_| v.to_string()))
        .ok_or_else(|| bad("a deferral needs X-Road-PDU-Hidden-Reason"))?;
    let until = last(headers, "x-road-pdu-hidden-until")
        .ok_or_else(|| bad("a deferral needs X-Road-PDU-Hidden-Until"))?;
    let until = time::OffsetDateTime::parse(until, &Rfc3339).map_err(|_| {
        bad("X-Road-PDU-Hidden-Until must be a time such as 2027-01-31T00:00:00+08:00")
    })?;
    let now = time::OffsetDateTime::now_utc();
    let max = now + time::Duration::days(civitas_exchange::directory::MAX_DEFERRAL_DAYS);
    if until <= now || until > max {
        return Err(bad(&format!(
            "X-Road-PDU-Hidden-Until must be in the future and at most {} days ahead",
            civitas_exchange::directory::MAX_DEFERRAL_DAYS
        )));
    }
    let until_ms = (until.unix_timestamp_nanos() / 1_000_000) as i64;
    let until = until
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(internal)?;
    Ok(Some(Deferral {
        until,
        until_ms,
        reason: reason.chars().take(200).collect(),
    }))
}

/// A call about a person names the person, a purpose and a legal basis, and a consent when
/// the legal basis is consent.
fn reason(headers: &HeaderMap, sub: &civitas_exchange::Subsystem) -> Result<Reason, Fault> {
    let user = last(headers, "x-road-userid");
    let purpose = last(headers, "x-road-pdu-purpose");
    let basis = last(headers, "x-road-pdu-legal-basis");
    let consent = last(headers, "x-road-pdu-consent-reference");
    let mut missing = Vec::new();
    if user.is_none() {
        missing.push("X-Road-UserId");
    }
    if purpose.is_none() {
        missing.push("X-Road-PDU-Purpose");
    }
    if basis.is_none() {
        missing.push("X-Road-PDU-Legal-Basis");
    }
    if basis.is_some_and(|b| b.eq_ignore_ascii_case("consent")) && consent.is_none() {
        missing.push("X-Road-PDU-Consent-Reference");
    }
    if user.is_some_and(|u| u.len() > 200) {
        return Err(Fault::client(
            "BadRequest",
            "X-Road-UserId is longer than 200 characters",
        ));
    }
    if !missing.is_empty() {
        return Err(Fault::client(
            "MissingHeader",
            format!(
                "this service is about people: a call must name the person, a purpose and a legal basis; missing {}",
                missing.join(", ")
            ),
        ));
    }
    let decode = |v: &str| {
        decode_segment("header", v)
            .unwrap_or_else(|_| v.to_string())
            .chars()
            .take(200)
            .collect::<String>()
    };
    Ok(Reason {
        user: user.unwrap_or_default().to_string(),
        subject: String::new(),
        purpose: decode(purpose.unwrap_or_default()),
        legal_basis: decode(basis.unwrap_or_default()),
        consent: consent.map(decode),
        deferral: deferral(headers, sub)?,
        holder: last(headers, "x-road-pdu-mandate-holder").map(str::to_string),
        mandate: None,
    })
}

/// The person `X-Road-UserId` names, as the ledger knows them (`person:<id>`) and by national
/// ID: the population register's person for a national ID, optionally after a two-letter
/// country prefix (`TWA123456789`). `None` when the register has no such person.
async fn subject_of(app: &Shared, user: &str) -> Option<(String, String)> {
    let user = user.trim().to_ascii_uppercase();
    let national = match user.get(2..) {
        Some(rest)
            if user.as_bytes()[..2].iter().all(u8::is_ascii_uppercase)
                && civitas_core::NationalId::parse(rest).is_ok() =>
        {
            rest.to_string()
        }
        _ => user.clone(),
    };
    match app.registers.person_id(&app.db, &national).await {
        Ok(Some(id)) => Some((format!("person:{id}"), national)),
        _ => None,
    }
}

/// Checks that the person `holder` names holds a mandate today for the person whose ledger
/// subject is `subject`; the mandate's basis and the holder's subject.
async fn mandate_of(app: &Shared, holder: &str, subject: &str) -> Result<(String, String), Fault> {
    let bad = |m: &str| Fault::client("BadRequest", m.to_string());
    let (holder_subject, _) = subject_of(app, holder)
        .await
        .ok_or_else(|| bad("X-Road-PDU-Mandate-Holder names nobody in the population register"))?;
    let id = |s: &str| {
        s.strip_prefix("person:")
            .and_then(|i| i.parse::<i64>().ok())
    };
    let (Some(holder_id), Some(person_id)) = (id(&holder_subject), id(subject)) else {
        return Err(internal("a person's subject is not person:<id>"));
    };
    let today = civitas_identity::Identity::today();
    let basis = civitas_identity::mandate::holds_for(&app.db, holder_id, person_id, &today)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            bad("X-Road-PDU-Mandate-Holder holds no mandate today for the person X-Road-UserId names")
        })?;
    Ok((basis, holder_subject))
}

/// The national IDs a registry's answer names (`national_id`, `principal_national_id`).
fn people_in(answer: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let records: Vec<&Value> = match answer {
        Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    for r in records {
        for key in ["national_id", "principal_national_id"] {
            if let Some(id) = r.get(key).and_then(Value::as_str)
                && !out.iter().any(|o| o == id)
            {
                out.push(id.to_string());
            }
        }
    }
    out
}

async fn gateway(
    State(app): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match call(&app, peer, req).await {
        Ok(res) => res,
        Err(f) => fault(f),
    }
}

/// The logging of a call whose answer went to an information system of this node, running
/// as a task of its own: what that system passes on of the answer may leave the platform
/// only once it finishes without error.
pub(crate) type CallLog = tokio::task::JoinHandle<Result<(), Fault>>;

/// A call this node makes for one of its own information systems (the portal releasing a
/// person's data under their consent): every check made from this machine. The answer comes
/// back as soon as it is there, with its log still being written (`None`: no log to wait
/// for), so the caller can wait for it beside its own; it must, before anything of the
/// answer leaves.
pub(crate) async fn call_from_here(app: &Shared, req: Request) -> (Response, Option<CallLog>) {
    // The answer's value is handed over as it is unless the archive must keep its text.
    let hand_over = app.archive.is_none();
    match call_logging(app, SocketAddr::from(([127, 0, 0, 1], 0)), req, hand_over).await {
        Ok((res, log)) => (res, log),
        Err(f) => (fault(f), None),
    }
}

/// Waits for a call's log; an error if it failed.
pub(crate) async fn logged(log: CallLog) -> Result<(), String> {
    match log.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(f)) => Err(format!("the call could not be logged: {}", f.message)),
        Err(e) => Err(format!("the call's log stopped: {e}")),
    }
}

/// Waits for every call's log, in turn; the first failure if one failed.
pub(crate) async fn all_logged(logs: Vec<CallLog>) -> Result<(), String> {
    for log in logs {
        logged(log).await?;
    }
    Ok(())
}

/// What a read made for a release under consent (see `mydata.rs`) records in its own entry:
/// the application the data goes to, the consent and agreement it goes under, and the items
/// this read serves. The release needs no entry of its own: the read's entry, durable before
/// anything of the answer leaves, tells the person (in "Who used my data") and an auditor who
/// received what. Only this node's own information systems attach one, to a call they make
/// in process (an extension of the request, which no HTTP client can set).
#[derive(Clone, Debug)]
pub(crate) struct ForRelease {
    pub(crate) client_id: String,
    pub(crate) consent_id: String,
    pub(crate) agreement_id: String,
    pub(crate) items: Vec<String>,
}

/// The public fields of a call's entry that tell of its release ([`ForRelease`]).
pub(crate) const RELEASE_FIELDS: [&str; 4] = ["released_to", "release_of", "agreement_id", "items"];

/// What the log keeps of a call.
pub(crate) struct Logged {
    client: ClientId,
    service: ServiceId,
    x_road_id: String,
    request_id: String,
    method: String,
    reason: Option<Reason>,
    represented: Option<RepresentedParty>,
    /// Other people the answer is about (a household's members): their ledger subjects.
    others: Vec<String>,
    /// The other gateway, for a call between gateways.
    peer: Option<Peer>,
    /// The request's body and target, for the archive.
    archive: Option<(Capture, String)>,
    /// The release the call reads for, when it does.
    release: Option<ForRelease>,
}

/// X-Road's own headers at most once each: a second `X-Road-Client` or `X-Road-UserId`
/// would let the provider read another value than the one checked and logged.
fn no_repeats(headers: &HeaderMap) -> Result<(), Fault> {
    for name in headers.keys() {
        if name.as_str().starts_with("x-road-") && headers.get_all(name).iter().count() > 1 {
            return Err(Fault::client(
                "BadRequest",
                format!("the header {name} may be sent only once"),
            ));
        }
    }
    Ok(())
}

/// An `X-Road-Id` as the log keeps it: the caller's own when it is a plain identifier (a
/// UUID, say), else its digest, so that nothing a caller puts there reaches the public log.
pub(crate) fn loggable_id(id: &str) -> String {
    use sha2::Digest;
    let plain = id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if plain {
        id.to_string()
    } else {
        format!("sha256:{:x}", sha2::Sha256::digest(id.as_bytes()))
    }
}

/// A call checked and ready to go to its provider.
pub(crate) struct Prepared {
    pub(crate) service_id: ServiceId,
    /// The path under the service (raw, `""` or `/…`).
    pub(crate) rest: String,
    pub(crate) client: ClientId,
    pub(crate) method: axum::http::Method,
    /// The path and query as received.
    pub(crate) target: String,
    pub(crate) query: Option<String>,
    pub(crate) x_road_id: String,
    pub(crate) request_id: String,
    /// The headers the provider receives, in order.
    pub(crate) forward: Vec<(HeaderName, HeaderValue)>,
    pub(crate) hash: RequestHash,
    pub(crate) represented: Option<RepresentedParty>,
    pub(crate) reason: Option<Reason>,
    /// The service (none for a metaservice).
    pub(crate) service: Option<Arc<civitas_exchange::Service>>,
    /// The request body as the archive keeps it, when the archive is on.
    pub(crate) capture: Option<Capture>,
    /// The release the call reads for, when one of this node's systems makes it for one.
    pub(crate) release: Option<ForRelease>,
}

/// A body as the archive keeps it, filled as it streams.
pub(crate) type Capture = Arc<Mutex<civitas_exchange::archive::Captured>>;

/// A body stream that also fills `capture`, when there is one.
pub(crate) fn capturing(body: BodyStream, capture: Option<&Capture>) -> BodyStream {
    match capture {
        None => body,
        Some(c) => {
            let c = c.clone();
            body.map(move |chunk| {
                if let (Ok(b), Ok(mut c)) = (&chunk, c.lock()) {
                    c.add(b);
                }
                chunk
            })
            .boxed()
        }
    }
}

/// Writes a call's bodies to the archive when its answer has streamed out (or the client
/// went away): the answer's body is filled as it passes.
struct ArchiveOnDrop {
    app: Shared,
    record: civitas_exchange::archive::Record,
    request: Capture,
    response: civitas_exchange::archive::Captured,
    /// Set once the call is logged: a call that could not be logged leaves no record.
    logged: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ArchiveOnDrop {
    fn drop(&mut self) {
        if !self.logged.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (Some(key), Ok(handle)) = (
            self.app.archive.clone(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        let mut record = self.record.clone();
        if let Ok(r) = self.request.lock() {
            record.request_body = r.base64();
            record.request_cut = r.cut;
        }
        record.response_body = self.response.base64();
        record.response_cut = self.response.cut;
        let app = self.app.clone();
        handle.spawn(async move {
            let now = civitas_ledger::event::now_ms();
            let days = app.config.exchange_archive_days as i64;
            let stored = async {
                let sealed = key.seal(&record)?;
                civitas_exchange::archive::store(
                    &app.db,
                    &record.request_id,
                    &sealed,
                    now,
                    now + days * 86_400_000,
                )
                .await
            };
            if let Err(e) = stored.await {
                tracing::error!(error = %e, request_id = %record.request_id, "cannot archive an exchange call's bodies");
            }
        });
    }
}

impl Prepared {
    /// What the log keeps of it.
    pub(crate) fn logged(&mut self, others: Vec<String>, peer: Option<Peer>) -> Logged {
        Logged {
            client: self.client.clone(),
            service: self.service_id.clone(),
            x_road_id: self.x_road_id.clone(),
            request_id: self.request_id.clone(),
            method: self.method.as_str().to_string(),
            reason: self.reason.take(),
            represented: self.represented.clone(),
            others,
            peer,
            archive: self.capture.clone().map(|c| (c, self.target.clone())),
            release: self.release.take(),
        }
    }
}

/// A call's body, as it streams to the provider.
pub(crate) type BodyStream =
    futures_util::stream::BoxStream<'static, Result<axum::body::Bytes, std::io::Error>>;

/// Refuses calls once a gateway's configuration has expired beyond its grace period; a
/// stale one within the grace period keeps serving (and raises the alarms).
pub(crate) fn configuration_in_force(app: &Shared, side: Side) -> Result<(), Fault> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    match app.exchange.configuration_state(now) {
        Some(s) if s.freshness == civitas_exchange::Freshness::Expired => {
            let message = format!(
                "the exchange's configuration (version {}) expired and its grace period is over; the gateway cannot reach the directory{}",
                s.version.unwrap_or_default(),
                s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            Err(side.fault("OutdatedGlobalConf", message))
        }
        _ => Ok(()),
    }
}

/// Which gateway raises a fault: the client's or the provider's.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Client,
    Provider,
}

impl Side {
    pub(crate) fn fault(self, code: &str, message: impl Into<String>) -> Fault {
        match self {
            Side::Client => Fault::client_proxy(code, message),
            Side::Provider => Fault::server_proxy(code, message),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Provider => "provider",
        }
    }
}

/// The other gateway of a call between gateways, for the log.
pub(crate) struct Peer {
    pub(crate) side: Side,
    /// The other gateway's member.
    pub(crate) gateway: String,
    /// The calling gateway's request id, as it logged the call (its digest when not plain).
    pub(crate) request_id: Option<String>,
}

/// The header part as X-Road serialises it: the request's own headers that pass, in order
/// (those the Connection header names are hop-by-hop too), then what the gateway adds: the
/// request id, and the X-Road id when it made one.
fn forwarded_headers(
    headers: &HeaderMap,
    request_id: &str,
    made_x_road_id: Option<&String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, Fault> {
    let hop: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut forward: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| passes_on_request(n.as_str()) && !hop.iter().any(|h| h == n.as_str()))
        .filter_map(|(n, v)| Some((n.clone(), without_own_cookies(n, v)?)))
        .collect();
    forward.push((
        HeaderName::from_static("x-road-request-id"),
        HeaderValue::from_str(request_id).map_err(internal)?,
    ));
    if let Some(id) = made_x_road_id {
        forward.push((
            HeaderName::from_static("x-road-id"),
            HeaderValue::from_str(id).map_err(internal)?,
        ));
    }
    Ok(forward)
}

/// Checks a call (its path, its X-Road headers, the client subsystem, the right to call,
/// the reason for a call about a person) and prepares what goes to the provider. Where the
/// call comes from is the caller's check. A call from another gateway brings the headers
/// the provider is to receive as that gateway signed them (`signed`); they go on unchanged.
pub(crate) async fn prepare(
    app: &Shared,
    directory: &Snapshot,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    signed: Option<Vec<(HeaderName, HeaderValue)>>,
) -> Result<Prepared, Fault> {
    let (service_id, rest) = target(uri.path())?;
    no_repeats(headers)?;
    let (client, subsystem) = caller(directory, headers)?;
    if service_id.provider.member.instance != app.exchange.instance() {
        return Err(Fault::client_proxy(
            "UnknownMember",
            format!(
                "{} is not a member of this exchange",
                service_id.provider.member
            ),
        ));
    }
    // Everything the log keeps is bounded before the call goes out, so a call is never
    // carried out and then found too large to log.
    if last(headers, "x-road-represented-party").is_some_and(|v| v.len() > 255) {
        return Err(Fault::client(
            "BadRequest",
            "X-Road-Represented-Party is longer than 255 characters",
        ));
    }
    let represented = match last(headers, "x-road-represented-party") {
        Some(v) => Some(
            RepresentedParty::parse(v).map_err(|e| Fault::client("BadRequest", e.to_string()))?,
        ),
        None => None,
    };
    let x_road_id = last(headers, "x-road-id").map(str::to_string);
    let generated_id = x_road_id.is_none();
    let x_road_id = x_road_id
        .unwrap_or_else(|| format!("{}-{}", app.exchange.instance(), uuid::Uuid::new_v4()));
    let request_id = uuid::Uuid::new_v4().to_string();

    let forward = match signed {
        Some(list) => list,
        None => forwarded_headers(headers, &request_id, generated_id.then_some(&x_road_id))?,
    };
    let target_text = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let hash = RequestHash::new(
        method.as_str(),
        &target_text,
        forward.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let mut prepared = Prepared {
        service_id,
        rest,
        client,
        method: method.clone(),
        target: target_text,
        query: uri.query().map(str::to_string),
        x_road_id,
        request_id,
        forward,
        hash,
        represented,
        reason: None,
        service: None,
        capture: app.archive.as_ref().map(|_| Capture::default()),
        release: None,
    };
    let (service_id, rest, client) = (&prepared.service_id, &prepared.rest, &prepared.client);
    if METASERVICES.contains(&service_id.code.as_str()) && rest.is_empty() {
        return Ok(prepared);
    }

    let service = directory.service(service_id).cloned().ok_or_else(|| {
        Fault::server_proxy("UnknownService", format!("Unknown service: {service_id}"))
    })?;
    if service.disabled {
        return Err(Fault::server_proxy(
            "ServiceDisabled",
            format!("Service {service_id} is disabled"),
        ));
    }
    let path = if rest.is_empty() { "/" } else { rest.as_str() };
    if !directory.may_call(client, service_id, method.as_str(), path) {
        return Err(Fault::server_proxy(
            "AccessDenied",
            format!("Request is not allowed: {service_id}"),
        ));
    }
    // A base registry served here is about people when it says so, whatever the directory says.
    let built_in = service
        .base_url
        .strip_prefix(civitas_exchange::directory::BUILT_IN)
        .map(str::to_string);
    let personal = service.personal
        || built_in
            .as_deref()
            .and_then(civitas_registry::services::service)
            .is_some_and(|r| r.personal);
    if personal {
        let mut r = reason(headers, subsystem)?;
        if app.exchange.is_remote() {
            // A gateway holds no register: the person is known by the identifier given.
            r.subject = format!("xroad-user:{}", r.user.to_ascii_uppercase());
            if r.holder.is_some() {
                return Err(Fault::client(
                    "BadRequest",
                    "a mandate is checked against the population register, which this gateway does not hold",
                ));
            }
        } else {
            let (subject, national) = subject_of(app, &r.user).await.ok_or_else(|| {
                Fault::client(
                    "BadRequest",
                    "X-Road-UserId names nobody in the population register",
                )
            })?;
            // A base registry's read about a person is about the person the call names.
            if built_in.is_some()
                && let Some(asked) = path
                    .strip_prefix("/persons/")
                    .and_then(|p| p.split('/').next())
                && !asked.eq_ignore_ascii_case(&national)
            {
                return Err(Fault::client(
                    "BadRequest",
                    "the call names one person in X-Road-UserId and asks about another",
                ));
            }
            if let Some(holder) = r.holder.clone() {
                r.mandate = Some(mandate_of(app, &holder, &subject).await?);
            }
            r.subject = subject;
        }
        prepared.reason = Some(r);
    }
    prepared.service = Some(service);
    Ok(prepared)
}

async fn call(app: &Shared, peer: SocketAddr, req: Request) -> Result<Response, Fault> {
    let (res, log) = call_logging(app, peer, req, false).await?;
    if let Some(log) = log {
        log.await.map_err(internal)??;
    }
    Ok(res)
}

/// A call, with the log of a call answered on this node still being written (see
/// [`call_from_here`]); a call answered elsewhere is logged before this returns. With
/// `hand_over`, a base registry's answer carries its value ([`AnswerValue`]).
async fn call_logging(
    app: &Shared,
    peer: SocketAddr,
    req: Request,
    hand_over: bool,
) -> Result<(Response, Option<CallLog>), Fault> {
    configuration_in_force(app, Side::Client)?;
    let directory = app.exchange.snapshot().await.map_err(unavailable)?;
    let (parts, body) = req.into_parts();
    let mut p = prepare(
        app,
        &directory,
        &parts.method,
        &parts.uri,
        &parts.headers,
        None,
    )
    .await?;
    p.release = parts.extensions.get::<ForRelease>().cloned();
    if !directory.calls_from(&p.client, peer.ip()) {
        return Err(Fault::client_proxy(
            "AccessDenied",
            format!(
                "the information system of {} may not call from {}",
                p.client,
                peer.ip()
            ),
        ));
    }
    if let Some(role) = &app.gateway_role
        && p.client.member != role.member
    {
        return Err(Fault::client_proxy(
            "AccessDenied",
            format!(
                "this gateway serves the information systems of {}, not {}",
                role.member, p.client
            ),
        ));
    }
    if p.service.is_none() {
        p.capture = None;
        let (content_type, answer) =
            metaservice(&directory, &p.client, &p.service_id, p.query.as_deref())?;
        let res = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(answer))
            .map_err(internal)?;
        let hash = p.hash.finish();
        return Ok((
            finish(app, res, p.logged(Vec::new(), None), hash, 0).await?,
            None,
        ));
    }
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let length = parts.headers.get(header::CONTENT_LENGTH).cloned();
    let stream: BodyStream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    let stream = capturing(stream, p.capture.as_ref());
    if let Some(role) = &app.gateway_role
        && p.service_id.provider.member != role.member
    {
        return Ok((
            crate::exchange_peer::forward(app, role, &directory, p, has_body, length, stream)
                .await?,
            None,
        ));
    }
    let hash = Arc::new(Mutex::new(std::mem::replace(
        &mut p.hash,
        RequestHash::new("", "", []),
    )));
    let (res, others) = deliver(
        app,
        &p,
        has_body,
        length,
        stream,
        Some(hash.clone()),
        hand_over,
    )
    .await?;
    let (request_hash, body_bytes) = {
        let h = hash.lock().map_err(internal)?;
        (h.finish(), h.body_bytes())
    };
    let (res, log) = finishing(app, res, p.logged(others, None), request_hash, body_bytes)?;
    if app.archive.is_some() {
        // The archive keeps only logged calls, and takes the answer's body as it is read:
        // logged first, so a caller that reads the body at once still has it archived.
        log.await?;
        return Ok((res, None));
    }
    Ok((res, Some(tokio::spawn(log))))
}

/// The gateway cannot work without a configuration.
pub(crate) fn unavailable(e: civitas_exchange::ExchangeError) -> Fault {
    match e {
        civitas_exchange::ExchangeError::Unavailable(m) => {
            Fault::client_proxy("OutdatedGlobalConf", m)
        }
        e => internal(e),
    }
}

/// Takes a checked call to its provider on this gateway: a base registry served here, or
/// the provider's information system, with the body streaming through (and hashed into
/// `feed` on the way, when given). Returns the answer and, for a base registry, the other
/// people the answer names; with `hand_over`, a base registry's records come with their
/// value ([`AnswerValue`]) and their text is written only if read.
pub(crate) async fn deliver(
    app: &Shared,
    p: &Prepared,
    has_body: bool,
    length: Option<HeaderValue>,
    body: BodyStream,
    feed: Option<Arc<Mutex<RequestHash>>>,
    hand_over: bool,
) -> Result<(Response, Vec<String>), Fault> {
    let service = p.service.as_ref().ok_or_else(|| internal("no service"))?;
    let path = if p.rest.is_empty() {
        "/"
    } else {
        p.rest.as_str()
    };
    // A base registry this program serves itself: answered in process.
    if let Some(code) = service
        .base_url
        .strip_prefix(civitas_exchange::directory::BUILT_IN)
    {
        if app.exchange.is_remote() {
            return Err(Fault::server_proxy(
                "ServiceFailed",
                format!(
                    "{} is a base registry served by the all-in-one node, not by this gateway",
                    p.service_id
                ),
            ));
        }
        let (res, named) = built_in_answer(app, code, &p.method, path, hand_over).await?;
        // Everyone else the answer is about finds the call in their own view too.
        let mut others = Vec::new();
        if let Some(r) = &p.reason {
            // The person the call names is logged already.
            for id in named.iter().filter(|n| !n.eq_ignore_ascii_case(&r.user)) {
                if let Some((subject, _)) = subject_of(app, id).await
                    && subject != r.subject
                    && !others.contains(&subject)
                {
                    others.push(subject);
                }
            }
        }
        return Ok((res, others));
    }

    let mut url = format!("{}{}", service.base_url, p.rest);
    if let Some(q) = &p.query {
        url.push('?');
        url.push_str(q);
    }
    let mut req = axum::http::Request::builder()
        .method(p.method.clone())
        .uri(&url);
    if let Some(out) = req.headers_mut() {
        for (n, v) in &p.forward {
            out.append(n, v.clone());
        }
        if let Some(len) = &length {
            out.insert(header::CONTENT_LENGTH, len.clone());
        }
    }
    // What the provider leaves unread is read after its answer (`unread`). A body hashed
    // here comes from the calling information system; any other, from the calling gateway.
    let from_client = feed.is_some();
    let (body, rest) = if has_body {
        let declared = length
            .as_ref()
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let fed = body
            .map(move |chunk| {
                if let (Ok(c), Some(Ok(mut h))) = (&chunk, feed.as_ref().map(|f| f.lock())) {
                    h.body(c);
                }
                chunk
            })
            .boxed();
        let (watched, rest) = crate::unread::watch(fed, declared);
        (Body::from_stream(watched), Some(rest))
    } else {
        (Body::empty(), None)
    };
    let unreachable = |e: String| {
        Fault::server_proxy(
            "NetworkError",
            format!("the provider's information system did not answer: {e}"),
        )
    };
    let req = req.body(body).map_err(|e| unreachable(e.to_string()))?;
    let answer = app
        .information_systems
        .send(req)
        .await
        .map_err(unreachable)?;
    // The request hash, the log and (between gateways) the caller's signature cover the
    // whole request, so an answer goes on only once the request has been read to its end.
    // On the provider's gateway a body whose signature fails breaks off here too.
    if let Some(rest) = rest {
        rest.read_out().await.map_err(|e| {
            let message = format!("the request's body did not end whole: {e}");
            if from_client {
                Fault::client("BadRequest", message)
            } else {
                Fault::server_proxy("InvalidMessage", message)
            }
        })?;
    }
    let (parts, body) = answer.into_parts();
    let mut res = Response::builder().status(parts.status);
    for (n, v) in &parts.headers {
        if passes_on_response(n.as_str()) {
            res = res.header(n, v);
        }
    }
    let res = res.body(body).map_err(internal)?;
    Ok((res, Vec::new()))
}

/// A base registry's records answering a call made in process, as a value: the caller takes
/// them from the answer's extensions instead of parsing their text, which the answer's body
/// still gives (written when read).
#[derive(Clone)]
pub(crate) struct AnswerValue(pub(crate) Arc<Value>);

/// A base registry's answer, as its own information system would give it: JSON records, or
/// a JSON error with 400, 404 or 405 (the provider's errors, so no `X-Road-Error`). With
/// `hand_over`, records found come with their value ([`AnswerValue`]).
async fn built_in_answer(
    app: &Shared,
    code: &str,
    method: &axum::http::Method,
    path: &str,
    hand_over: bool,
) -> Result<(Response, Vec<String>), Fault> {
    use civitas_registry::services::{Answer, answer};
    let (status, body) = if method != axum::http::Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "the registries are read with GET" }),
        )
    } else {
        match answer(&app.db, code, path).await.map_err(internal)? {
            Answer::Found(v) => (StatusCode::OK, v),
            Answer::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "error": m })),
            Answer::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({ "error": m })),
        }
    };
    let named = if status == StatusCode::OK {
        people_in(&body)
    } else {
        Vec::new()
    };
    let res = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if hand_over && status == StatusCode::OK {
        let value = Arc::new(body);
        let text = value.clone();
        let body = futures_util::stream::once(async move {
            Ok::<_, std::convert::Infallible>(text.to_string())
        });
        let mut res = res.body(Body::from_stream(body)).map_err(internal)?;
        res.extensions_mut().insert(AnswerValue(value));
        return Ok((res, named));
    }
    let res = res.body(Body::from(body.to_string())).map_err(internal)?;
    Ok((res, named))
}

/// The ledger tag of a subject (`person:…`, `xroad-user:…`, `deferral:…`), for the call's
/// log entries and the writes that commit with them.
async fn subject_tag(app: &Shared, subject: &str) -> Result<civitas_ledger::SubjectTag, Fault> {
    Ok(app
        .ledger
        .subject_secret_for_event(subject)
        .await
        .map_err(internal)?
        .tag())
}

/// Adds the response headers that bind the answer to the call, and logs the call.
pub(crate) async fn finish(
    app: &Shared,
    res: Response,
    call: Logged,
    request_hash: String,
    body_bytes: u64,
) -> Result<Response, Fault> {
    let (res, log) = finishing(app, res, call, request_hash, body_bytes)?;
    log.await?;
    Ok(res)
}

/// The answer with the headers that bind it to the call (and, with the archive on, its body
/// kept as it passes), and the logging of the call: a future to run beside whatever else
/// the answer waits for, and to finish before the answer is released.
pub(crate) fn finishing(
    app: &Shared,
    mut res: Response,
    mut call: Logged,
    request_hash: String,
    body_bytes: u64,
) -> Result<
    (
        Response,
        impl Future<Output = Result<(), Fault>> + Send + 'static,
    ),
    Fault,
> {
    let status = res.status().as_u16();
    let h = res.headers_mut();
    // Static names: a name given as text would be copied into the map each time.
    for (name, value) in [
        ("x-road-id", &call.x_road_id),
        ("x-road-client", &call.client.to_string()),
        ("x-road-service", &call.service.to_string()),
        ("x-road-request-id", &call.request_id),
        ("x-road-request-hash", &request_hash),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).map_err(internal)?,
        );
    }
    let logged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let res = match call.archive.take() {
        Some((request, target)) if app.archive.is_some() => {
            let (parts, body) = res.into_parts();
            let mut guard = ArchiveOnDrop {
                logged: logged.clone(),
                app: app.clone(),
                record: civitas_exchange::archive::Record {
                    request_id: call.request_id.clone(),
                    method: call.method.clone(),
                    target,
                    request_body: String::new(),
                    request_cut: false,
                    status,
                    response_body: String::new(),
                    response_cut: false,
                },
                request,
                response: Default::default(),
            };
            let body = body.into_data_stream().map(move |chunk| {
                if let Ok(b) = &chunk {
                    guard.response.add(b);
                }
                chunk
            });
            Response::from_parts(parts, Body::from_stream(body))
        }
        _ => res,
    };
    let app = app.clone();
    let log = async move {
        let mut event = Event::new(
            "exchange.call",
            &format!("xroad:{}", call.client),
            &format!("exchange/service/{}", call.service),
        )
        .with("x_road_id", loggable_id(&call.x_road_id))
        .with("request_id", call.request_id.clone())
        .with("method", call.method.clone())
        .with("status", u64::from(status))
        .with("request_body_bytes", body_bytes);
        if let Some(peer) = &call.peer {
            event = event
                .with("side", peer.side.name())
                .with("peer_gateway", peer.gateway.clone());
            if let Some(id) = &peer.request_id {
                event = event.with("peer_request_id", id.clone());
            }
        }
        if let Some(r) = &call.release {
            let [to, of, agreement, items] = RELEASE_FIELDS;
            event = event
                .with(to, r.client_id.clone())
                .with(of, format!("consent/{}", r.consent_id))
                .with(agreement, r.agreement_id.clone())
                .with(items, r.items.clone());
        }
        if let Some(p) = &call.represented {
            event = event.with(
                "represented_party",
                match &p.class {
                    Some(c) => format!("{c}/{}", p.code),
                    None => p.code.clone(),
                },
            );
        }
        // A gateway holds no register: the provider's gateway reports a call about a person to
        // the directory, whose tracker the person reads (the outbox commits with this entry).
        let report = match (&call.reason, &call.peer) {
            (Some(r), None)
            | (
                Some(r),
                Some(Peer {
                    side: Side::Provider,
                    ..
                }),
            ) if app.exchange.is_remote() => Some(civitas_exchange::tracker::Report {
                id: call.request_id.clone(),
                time_ms: civitas_ledger::event::now_ms(),
                client: call.client.to_string(),
                service: call.service.to_string(),
                x_road_id: call.x_road_id.clone(),
                method: call.method.clone(),
                status,
                user: r.user.clone(),
                purpose: r.purpose.clone(),
                legal_basis: r.legal_basis.clone(),
                consent_reference: r.consent.clone(),
                represented_party: call.represented.as_ref().map(|p| match &p.class {
                    Some(c) => format!("{c}/{}", p.code),
                    None => p.code.clone(),
                }),
                deferred_until_ms: r.deferral.as_ref().map(|d| d.until_ms),
                deferral_reason: r.deferral.as_ref().map(|d| d.reason.clone()),
            }),
            _ => None,
        };
        let mut writes = civitas_store::Script::new();
        if let Some(r) = &report {
            writes.extend_from(&civitas_exchange::tracker::outbox_record(r).map_err(internal)?);
        }
        match call.reason {
            // A release's read says only what the platform put there itself: the agreement's
            // registered purpose, `consent`, and the consent's id. No caller's words, so they
            // go in public beside the release, and no private row is written with the entry
            // (the tracker reads entries without one from their public fields).
            Some(r) if call.release.is_some() && r.mandate.is_none() && r.deferral.is_none() => {
                event = event
                    .with("purpose", r.purpose)
                    .with("legal_basis", r.legal_basis);
                if let Some(c) = r.consent {
                    event = event.with("consent_reference", c);
                }
                event = event.about(subject_tag(&app, &r.subject).await?);
            }
            Some(r) => {
                // The caller's own words stay out of the public log: a private row, which the
                // entry commits to by its hash, commits with it (see `CallDetails`). Under
                // whose mandate: its basis in public; the holder, by their tag, only privately
                // (their tag in public would link two people's entries). The person's own page
                // finds the holder's name among the people who may act for them.
                let mut mandate_holder = None;
                if let Some((basis, holder)) = r.mandate {
                    let tag = subject_tag(&app, &holder).await?;
                    event = event.with("mandate", basis);
                    mandate_holder = Some(tag.to_string());
                }
                let details = civitas_exchange::tracker::CallDetails {
                    purpose: r.purpose,
                    legal_basis: r.legal_basis,
                    consent_reference: r.consent,
                    deferral_reason: r.deferral.as_ref().map(|d| d.reason.clone()),
                    mandate_holder,
                };
                let (payload, record) = details.record(&call.request_id).map_err(internal)?;
                event = event.private_payload(&payload);
                writes.extend_from(&record);
                let mut subject = r.subject.clone();
                if let Some(d) = r.deferral {
                    event = event.with("deferred_until", d.until);
                    // Logged under a subject of its own until its time (see `deferral_record`).
                    subject = format!("deferral:{}", uuid::Uuid::new_v4());
                    writes.extend_from(&civitas_exchange::deferral_record(
                        &subject, &r.subject, d.until_ms,
                    ));
                }
                event = event.about(subject_tag(&app, &subject).await?);
            }
            None => {}
        }
        // A call that cannot be logged is not answered; nor one that cannot be logged for
        // everyone its answer is about.
        let failed = |e: civitas_ledger::LedgerError| {
            tracing::error!(error = %e, "cannot log an exchange call");
            Fault::server_proxy("LoggingFailed", "the call could not be logged")
        };
        let mut others = Vec::new();
        for other in &call.others {
            let tag = subject_tag(&app, other).await?;
            let mut theirs = event.clone();
            // What goes to a release is the person's own items, not the others' data.
            for key in RELEASE_FIELDS {
                theirs.public.remove(key);
            }
            others.push(theirs.with("in_answer_of", "another person").about(tag));
        }
        // The private details, a deferral's record and the tracker report commit with it.
        if writes.is_empty() {
            app.ledger.append(&event).await
        } else {
            app.ledger.append_with(&event, writes).await
        }
        .map_err(failed)?;
        for e in &others {
            app.ledger.append(e).await.map_err(failed)?;
        }
        logged.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    };
    Ok((res, log))
}

/// `listMethods`, `allowedMethods` and `getOpenAPI`: the content type and body, from the
/// directory (so a gateway answers them for any provider, as the configuration describes it).
fn metaservice(
    directory: &Snapshot,
    client: &ClientId,
    service: &ServiceId,
    query: Option<&str>,
) -> Result<(&'static str, Vec<u8>), Fault> {
    let provider = &service.provider;
    if directory.subsystem(provider).is_none() {
        return Err(Fault::server_proxy(
            "UnknownService",
            format!("Unknown service: {service}"),
        ));
    }
    let services = directory.services_of(provider);
    let describe = |s: &civitas_exchange::Service, endpoints: Vec<civitas_exchange::Endpoint>| {
        let m = &s.id.provider.member;
        json!({
            "object_type": "SERVICE",
            "xroad_instance": m.instance,
            "member_class": m.class,
            "member_code": m.code,
            "subsystem_code": s.id.provider.subsystem,
            "service_code": s.id.code,
            "service_type": s.kind,
            "endpoint_list": endpoints,
        })
    };
    match service.code.as_str() {
        "listMethods" => {
            let list: Vec<Value> = services
                .iter()
                .filter(|s| !s.disabled)
                .map(|s| describe(s, s.endpoints.clone()))
                .collect();
            Ok((
                "application/json",
                json!({ "service": list }).to_string().into_bytes(),
            ))
        }
        "allowedMethods" => {
            let rights = directory.rights_of(client, provider);
            let list: Vec<Value> = services
                .iter()
                .filter(|s| !s.disabled)
                .filter_map(|s| {
                    let open = civitas_exchange::allowed_endpoints(s, &rights);
                    (!open.is_empty()).then(|| describe(s, open))
                })
                .collect();
            Ok((
                "application/json",
                json!({ "service": list }).to_string().into_bytes(),
            ))
        }
        _ => {
            let code = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("serviceCode"))
                .map(|(_, v)| decode_segment("serviceCode", v).unwrap_or_default())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Fault::server_proxy("InvalidRequest", "Missing serviceCode in message body")
                })?;
            let id = provider
                .service(&code)
                .map_err(|e| Fault::server_proxy("InvalidRequest", e.to_string()))?;
            let doc = directory.openapi(&id).ok_or_else(|| {
                Fault::server_proxy(
                    "InternalError",
                    format!("Service not found or not described by OpenAPI: {id}"),
                )
            })?;
            // The provider's own addresses stay private: the servers list goes.
            let mut doc: Value = serde_json::from_str(doc).map_err(internal)?;
            if let Some(o) = doc.as_object_mut() {
                o.remove("servers");
            }
            Ok(("application/json", doc.to_string().into_bytes()))
        }
    }
}

#[derive(serde::Deserialize)]
struct ListClientsQuery {
    #[serde(rename = "xRoadInstance")]
    instance: Option<String>,
}

/// `GET /listClients`: every member and subsystem of this exchange, as X-Road lists them.
async fn list_clients(State(app): State<Shared>, Query(q): Query<ListClientsQuery>) -> Response {
    if let Err(f) = configuration_in_force(&app, Side::Client) {
        return fault(f);
    }
    let directory = match app.exchange.snapshot().await {
        Ok(d) => d,
        Err(e) => return fault(unavailable(e)),
    };
    let mut out = Vec::new();
    if q.instance
        .as_deref()
        .is_none_or(|i| i == app.exchange.instance())
    {
        for m in directory.members() {
            out.push(json!({
                "id": {
                    "object_type": "MEMBER",
                    "xroad_instance": m.id.instance,
                    "member_class": m.id.class,
                    "member_code": m.id.code,
                },
                "name": m.name,
            }));
        }
        for s in directory.subsystems() {
            out.push(json!({
                "id": {
                    "object_type": "SUBSYSTEM",
                    "xroad_instance": s.id.member.instance,
                    "member_class": s.id.member.class,
                    "member_code": s.id.member.code,
                    "subsystem_code": s.id.subsystem,
                },
                "name": s.member_name,
            }));
        }
    }
    axum::Json(json!({ "member": out })).into_response()
}

/// `GET /exchange/v1/configuration`: the directory as gateways receive it, signed. It names
/// the providers' addresses, so only a registered gateway gets it: the poll carries
/// `Civitas-Gateway: MEMBER TIME VERSION SIGNATURE`, signed with its message key, which
/// also tells the operators which version each gateway holds.
async fn configuration(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if app.exchange.is_remote() {
        return crate::Problem::new(
            StatusCode::NOT_FOUND,
            "not-a-directory",
            "Not the directory",
        )
        .detail("A gateway does not serve the configuration; ask the directory.")
        .into_response();
    }
    let claim = last(&headers, "civitas-gateway").unwrap_or_default();
    if !crate::exchange_peer::note_poll(&app, claim).await {
        return crate::Problem::new(
            StatusCode::FORBIDDEN,
            "not-a-registered-gateway",
            "Not a registered gateway",
        )
        .detail("The configuration goes only to registered gateways: send Civitas-Gateway signed with the gateway's message key (civitas exchange gateway add registers it).")
        .into_response();
    }
    let validity = std::time::Duration::from_secs(app.config.exchange_configuration_validity_secs);
    let signed = match app.exchange.signed_configuration(validity).await {
        Ok(s) => s,
        Err(e) => return fault(internal(e)),
    };
    let mut res = axum::Json(signed).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `POST /exchange/v1/tracker`: gateways' reports of calls about people (a JSON list of
/// `civitas_exchange::tracker::Report`), signed by the reporting gateway: `Civitas-Gateway`
/// names it (as when polling) and `Civitas-Signature` is its signature over the body. Each
/// report becomes the person's tracker entry here, once.
async fn tracker(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use civitas_exchange::tracker;
    let problem = |status: StatusCode, kind: &str, title: &str, detail: String| {
        crate::Problem::new(status, kind, title)
            .detail(detail)
            .into_response()
    };
    if app.exchange.is_remote() {
        return problem(
            StatusCode::NOT_FOUND,
            "not-a-directory",
            "Not the directory",
            "Report to the directory, not to a gateway.".into(),
        );
    }
    let directory = match app.exchange.snapshot().await {
        Ok(d) => d,
        Err(e) => return fault(internal(e)),
    };
    let now = civitas_ledger::event::now_ms();
    let claim = last(&headers, "civitas-gateway").unwrap_or_default();
    let reporter = civitas_exchange::configuration::read_poll_claim(claim, now, |m| {
        directory.gateway_of(m).map(|g| g.key)
    })
    .map(|(m, _, _)| m);
    let signed = reporter
        .as_ref()
        .and_then(|m| directory.gateway_of(m))
        .is_some_and(|g| {
            civitas_exchange::configuration::verify_body(
                &g.key,
                &body,
                last(&headers, "civitas-signature").unwrap_or_default(),
            )
        });
    let (Some(reporter), true) = (reporter, signed) else {
        return problem(
            StatusCode::FORBIDDEN,
            "not-a-registered-gateway",
            "Not a registered gateway",
            "Reports come from registered gateways, named in Civitas-Gateway and signed in Civitas-Signature with the gateway's message key.".into(),
        );
    };
    let reports: Vec<tracker::Report> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-report",
                "Invalid report",
                format!("The body is not a list of reports: {e}"),
            );
        }
    };
    // A report that cannot be right (another member's service, a malformed identifier) is
    // refused on its own, so that it never holds up the gateway's other reports.
    let mut recorded = 0u64;
    let mut refused = Vec::new();
    for r in reports {
        let service = ServiceId::parse(&r.service)
            .ok()
            .filter(|s| s.provider.member == reporter);
        let client = ClientId::parse(&r.client).ok();
        let (Some(service), Some(client)) = (service, client) else {
            tracing::warn!(reporter = %reporter, report = %loggable_id(&r.id), "a tracker report names another member's service or a malformed client; refused");
            refused.push(r.id);
            continue;
        };
        if r.user.len() > 200 {
            refused.push(r.id);
            continue;
        }
        match tracker::was_received(&app.db, &reporter.to_string(), &r.id).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => return fault(internal(e)),
        }
        if let Err(e) = record_report(&app, &reporter.to_string(), &client, &service, r).await {
            return fault(e);
        }
        recorded += 1;
    }
    axum::Json(json!({ "recorded": recorded, "refused": refused })).into_response()
}

/// A reported call as the person's tracker entry: logged about the person (found in the
/// register by `X-Road-UserId`), with the report's reason, once.
async fn record_report(
    app: &Shared,
    reporter: &str,
    client: &ClientId,
    service: &ServiceId,
    r: civitas_exchange::tracker::Report,
) -> Result<(), Fault> {
    use time::format_description::well_known::Rfc3339;
    let bounded = |v: &str| v.chars().take(200).collect::<String>();
    let mut event = Event::new(
        "exchange.call",
        &format!("xroad:{client}"),
        &format!("exchange/service/{service}"),
    )
    .with("x_road_id", loggable_id(&r.x_road_id))
    .with("request_id", loggable_id(&r.id))
    .with("method", bounded(&r.method))
    .with("status", u64::from(r.status))
    .with("side", "provider")
    .with("reported_by", reporter);
    if let Some(p) = &r.represented_party {
        event = event.with("represented_party", bounded(p));
    }
    let person = match subject_of(app, &r.user).await {
        Some((subject, _)) => subject,
        None => format!("xroad-user:{}", bounded(&r.user).to_ascii_uppercase()),
    };
    let mut writes = civitas_exchange::tracker::received_record(reporter, &r.id);
    let details = civitas_exchange::tracker::CallDetails {
        purpose: bounded(&r.purpose),
        legal_basis: bounded(&r.legal_basis),
        consent_reference: r.consent_reference.as_deref().map(bounded),
        deferral_reason: r.deferral_reason.as_deref().map(bounded),
        mandate_holder: None,
    };
    // Reports' ids are the reporters' own: kept apart per reporter.
    let key = format!("{reporter} {}", loggable_id(&r.id));
    let (payload, record) = details.record(&key).map_err(internal)?;
    event = event.private_payload(&payload).with("details_key", key);
    writes.extend_from(&record);
    let mut about = person.clone();
    if let Some(until_ms) = r.deferred_until_ms {
        let until =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(until_ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .ok_or_else(|| internal("a deferral's time is out of range"))?;
        event = event.with("deferred_until", until);
        about = format!("deferral:{}", uuid::Uuid::new_v4());
        writes.extend_from(&civitas_exchange::deferral_record(
            &about, &person, until_ms,
        ));
    }
    let tag = subject_tag(app, &about).await?;
    app.ledger
        .append_with(&event.about(tag), writes)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot log a reported exchange call");
            Fault::server_proxy("LoggingFailed", "the report could not be logged")
        })?;
    Ok(())
}
