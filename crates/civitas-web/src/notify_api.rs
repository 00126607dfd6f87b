//! GOV.UK Notify's v2 API (`/v2/...`), so that Notify's client libraries work against
//! Civitas unchanged: each call authenticated by its JWT (`civitas_notify::auth`), its
//! request and answer in Notify's shapes, and its errors as Notify gives them:
//! `{"status_code": N, "errors": [{"error": "...", "message": "..."}]}`. The facts behind
//! each shape are in `docs/design/notify-v2.md`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use civitas_notify::{
    Caller, Channel, Language, NewNotification, Notification, NotifyError, Template, template,
};
use serde_json::{Map, Value, json};

use crate::Shared;

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/v2/notifications/email", post(send_email))
        .route("/v2/notifications/sms", post(send_sms))
        .route("/v2/notifications/letter", post(send_letter))
        .route("/v2/notifications/{id}", get(notification))
        .route("/v2/notifications/{id}/pdf", get(letter_pdf))
        .route("/v2/notifications", get(notifications))
        .route("/v2/template/{id}", get(template_latest))
        .route("/v2/template/{id}/version/{version}", get(template_version))
        .route("/v2/template/{id}/preview", post(preview))
        .route("/v2/templates", get(templates))
}

/// An error as Notify answers it.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "status_code": status.as_u16(),
            "errors": [{ "error": kind, "message": message }],
        })),
    )
        .into_response()
}

fn validation(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "ValidationError", message)
}

fn failed(e: NotifyError) -> Response {
    match e {
        NotifyError::Invalid(m) => validation(&m),
        NotifyError::BadRequest(m) => error(StatusCode::BAD_REQUEST, "BadRequestError", &m),
        NotifyError::Forbidden(m) => error(StatusCode::FORBIDDEN, "BadRequestError", &m),
        NotifyError::Missing(m) => {
            error(StatusCode::BAD_REQUEST, "BadRequestError", &m.to_string())
        }
        NotifyError::NotFound(_) => {
            error(StatusCode::NOT_FOUND, "NoResultFound", "No result found")
        }
        NotifyError::OverLimit(o) => error(StatusCode::TOO_MANY_REQUESTS, o.error, &o.message),
        e => {
            tracing::error!(error = %e, "a Notify call failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal server error",
            )
        }
    }
}

/// The caller, or Notify's `AuthError`.
async fn caller(app: &Shared, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = app.notify.authenticate(authorization).await.map_err(|e| {
        Box::new(error(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::FORBIDDEN),
            "AuthError",
            &e.message,
        ))
    })?;
    // Counted before anything else is looked at, as Notify counts.
    app.notify
        .count_call(&caller)
        .map_err(|o| Box::new(failed(NotifyError::OverLimit(o))))?;
    Ok(caller)
}

/// Notify's time format: `2026-11-23T06:32:31.123000Z`.
fn when(ms: Option<i64>) -> Value {
    ms.and_then(civitas_notify::callbacks::notify_time)
        .map_or(Value::Null, Value::String)
}

fn base(app: &Shared) -> String {
    app.config.base_url()
}

/// A JSON object body, or Notify's error for anything else; its fields checked against
/// those allowed (`required` among them), as Notify's schemas do.
fn object_body(
    bytes: &[u8],
    allowed: &[&str],
    required: &[&str],
) -> Result<Map<String, Value>, Box<Response>> {
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(bytes).map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "Invalid JSON supplied in POST data",
            ))
        })?
    };
    let Value::Object(body) = body else {
        return Err(Box::new(validation(
            "The request body must be a JSON object",
        )));
    };
    if let Some(extra) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Box::new(validation(&format!(
            "Additional properties are not allowed ({extra} was unexpected)"
        ))));
    }
    if let Some(missing) = required.iter().find(|r| !body.contains_key(**r)) {
        return Err(Box::new(validation(&format!(
            "{missing} is a required property"
        ))));
    }
    Ok(body)
}

fn string_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Box<Response>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Box::new(validation(&format!(
            "{name} {other} is not of type string"
        )))),
    }
}

fn uuid_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Box<Response>> {
    let Some(s) = string_field(body, name)? else {
        return Ok(None);
    };
    uuid::Uuid::try_parse(&s)
        .map(|u| Some(u.to_string()))
        .map_err(|_| Box::new(validation(&format!("{name} is not a valid UUID"))))
}

fn personalisation(body: &Map<String, Value>) -> Result<Map<String, Value>, Box<Response>> {
    match body.get("personalisation") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(other) => Err(Box::new(validation(&format!(
            "personalisation {other} is not of type object"
        )))),
    }
}

async fn send_email(
    State(app): State<Shared>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    send(
        app,
        headers,
        &bytes,
        Channel::Email,
        "email_address",
        &[
            "email_address",
            "template_id",
            "personalisation",
            "reference",
            "email_reply_to_id",
            "one_click_unsubscribe_url",
            "scheduled_for",
            "language",
        ],
    )
    .await
}

async fn send_sms(
    State(app): State<Shared>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    send(
        app,
        headers,
        &bytes,
        Channel::Sms,
        "phone_number",
        &[
            "phone_number",
            "template_id",
            "personalisation",
            "reference",
            "sms_sender_id",
            "scheduled_for",
            "language",
        ],
    )
    .await
}

async fn send_letter(
    State(app): State<Shared>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Response {
    // A precompiled letter (a PDF of the sender's own) is not taken: letters are made from
    // the service's templates.
    if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&bytes)
        && body.contains_key("content")
    {
        if let Err(r) = caller(&app, &headers).await {
            return *r;
        }
        return validation(
            "Precompiled letters are not accepted: send template_id and personalisation",
        );
    }
    send(
        app,
        headers,
        &bytes,
        Channel::Letter,
        "personalisation",
        &["template_id", "personalisation", "reference", "language"],
    )
    .await
}

async fn send(
    app: Shared,
    headers: HeaderMap,
    bytes: &[u8],
    channel: Channel,
    recipient_field: &str,
    allowed: &[&str],
) -> Response {
    let caller = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body = match object_body(bytes, allowed, &[recipient_field, "template_id"]) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let parsed = (|| {
        Ok::<_, Box<Response>>((
            // A letter's recipient is the address in its personalisation.
            match channel {
                Channel::Letter => String::new(),
                _ => string_field(&body, recipient_field)?.unwrap_or_default(),
            },
            uuid_field(&body, "template_id")?.unwrap_or_default(),
            personalisation(&body)?,
            string_field(&body, "reference")?,
            scheduled_for(&body)?,
            language_field(&body)?,
        ))
    })();
    let (recipient, template_id, personalisation, reference, scheduled_ms, language) = match parsed
    {
        Ok(p) => p,
        Err(r) => return *r,
    };
    // Reply-to addresses, SMS senders and unsubscribe links are not kept per service yet.
    for unsupported in ["email_reply_to_id", "sms_sender_id"] {
        if let Ok(Some(id)) = string_field(&body, unsupported) {
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!(
                    "{unsupported} {id} does not exist in database for service id {}",
                    caller.service.id
                ),
            );
        }
    }
    // A person named by national ID is reached at the contact the population register
    // holds for them; the sender never sees it.
    let from_registers = match contact_in_registers(&app, &caller, channel, &recipient).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let new = NewNotification {
        channel,
        recipient,
        template_id,
        personalisation,
        reference,
        from_registers,
        scheduled_ms,
        language,
    };
    let (n, t) = match app.notify.accept(&caller, &new).await {
        Ok(done) => done,
        Err(e) => return failed(e),
    };
    let base = base(&app);
    let content = match channel {
        Channel::Email => json!({
            "subject": n.subject,
            "body": n.body,
            // Notify's answer names the address the e-mail is sent from.
            "from_email": app.config.notify_from,
            "one_click_unsubscribe_url": Value::Null,
        }),
        Channel::Sms => json!({ "body": n.body, "from_number": "Civitas" }),
        Channel::Letter => json!({ "subject": n.subject, "body": n.body }),
    };
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": n.id,
            "reference": n.reference,
            "uri": format!("{base}/v2/notifications/{}", n.id),
            "template": {
                "id": t.id,
                "version": t.version,
                "uri": format!("{base}/services/{}/templates/{}", caller.service.id, t.id),
            },
            "scheduled_for": when(n.scheduled_ms),
            "content": content,
        })),
    )
        .into_response()
}

/// When `recipient` is a national ID: the person's e-mail address or mobile number in the
/// population register, and their subject reference; an error when they have none.
async fn contact_in_registers(
    app: &Shared,
    caller: &Caller,
    channel: Channel,
    recipient: &str,
) -> Result<Option<(String, String)>, Box<Response>> {
    let id = recipient.trim().to_ascii_uppercase();
    if channel == Channel::Letter || civitas_core::NationalId::parse(&id).is_err() {
        return Ok(None);
    }
    // A key that reaches only a guest list names its recipients by address: the register
    // is not asked on its behalf.
    let restricted = match caller.key_type {
        civitas_notify::KeyType::Team => true,
        civitas_notify::KeyType::Live => !caller.service.live,
        civitas_notify::KeyType::Test => false,
    };
    if restricted {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            "A key that reaches only the service's guest list names recipients by address",
        )));
    }
    let person = civitas_registry::person_by_national_id(&app.db, &id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "the population register could not be read");
            Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal server error",
            ))
        })?;
    let none = |what: &str| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            &format!("The population register holds no {what} for this person"),
        ))
    };
    // One answer whether there is no such person or no contact: the sender learns nothing
    // more of the register than that the message cannot go.
    let what = match channel {
        Channel::Email => "e-mail address",
        _ => "mobile number",
    };
    let contact = match (person, channel) {
        (Some(p), Channel::Email) => p.email.map(|e| (e, p.id)),
        (Some(p), _) => p.phone.map(|e| (e, p.id)),
        (None, _) => None,
    };
    let (contact, person_id) = contact.ok_or_else(|| none(what))?;
    Ok(Some((contact, format!("person:{person_id}"))))
}

/// A notification as Notify's GET gives it: every field, `null` when it does not apply.
fn notification_json(base: &str, n: &Notification) -> Value {
    let (email, phone) = match n.channel {
        Channel::Email => (Value::String(n.recipient.clone()), Value::Null),
        Channel::Sms => (Value::Null, Value::String(n.recipient.clone())),
        Channel::Letter => (Value::Null, Value::Null),
    };
    let lines: Vec<&str> = match n.channel {
        Channel::Letter => n.recipient.lines().collect(),
        _ => Vec::new(),
    };
    // A letter's last line is its postal code when it is one.
    let postcode = lines
        .last()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit() || c == '-'));
    let mut v = json!({
        "id": n.id,
        "reference": n.reference,
        "email_address": email,
        "phone_number": phone,
        "postcode": postcode,
        "type": n.channel.code(),
        "status": shown_status(n.channel, &n.status),
        "template": {
            "id": n.template_id,
            "version": n.template_version,
            "uri": format!("{base}/v2/template/{}/version/{}", n.template_id, n.template_version),
        },
        "body": n.body,
        "subject": n.subject,
        "created_at": when(Some(n.created_ms)),
        "created_by_name": null,
        "sent_at": when(n.sent_ms),
        "completed_at": when(n.completed_ms),
        "scheduled_for": when(n.scheduled_ms),
        "postage": (n.channel == Channel::Letter).then_some("second"),
    });
    for i in 0..7 {
        v[format!("line_{}", i + 1)] = lines.get(i).map_or(Value::Null, |l| json!(l));
    }
    v
}

/// A status as Notify shows it: a letter is `accepted` until the print provider has it,
/// then `received`.
fn shown_status(channel: Channel, status: &str) -> &str {
    match (channel, status) {
        (Channel::Letter, "created" | "sending") => "accepted",
        (Channel::Letter, "delivered") => "received",
        (_, s) => s,
    }
}

/// `scheduled_for`: an RFC 3339 time, or `YYYY-MM-DD HH:MM[:SS]` in Taiwan's time (UTC+8).
fn scheduled_for(body: &Map<String, Value>) -> Result<Option<i64>, Box<Response>> {
    let Some(text) = string_field(body, "scheduled_for")? else {
        return Ok(None);
    };
    let bad = || {
        Box::new(validation(
            "scheduled_for datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601",
        ))
    };
    let rfc3339 = time::format_description::well_known::Rfc3339;
    let at = match time::OffsetDateTime::parse(text.trim(), &rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let local = text.trim().replace('T', " ");
            let with_seconds = if local.len() == 16 {
                format!("{local}:00")
            } else {
                local
            };
            let format =
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
            time::PrimitiveDateTime::parse(&with_seconds, &format)
                .map_err(|_| bad())?
                .assume_offset(time::macros::offset!(+8))
        }
    };
    Ok(Some((at.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// The caller's notification `id`, or Notify's error.
async fn own_notification(
    app: &Shared,
    headers: &HeaderMap,
    id: &str,
) -> Result<Notification, Box<Response>> {
    let caller = caller(app, headers).await?;
    let Ok(id) = uuid::Uuid::try_parse(id).map(|u| u.to_string()) else {
        return Err(Box::new(validation("notification_id is not a valid UUID")));
    };
    match app.notify.notification(&caller.service.id, &id).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(Box::new(failed(NotifyError::NotFound(id)))),
        Err(e) => Err(Box::new(failed(e))),
    }
}

async fn notification(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match own_notification(&app, &headers, &id).await {
        Ok(n) => axum::Json(notification_json(&base(&app), &n)).into_response(),
        Err(r) => *r,
    }
}

/// A letter as the PDF it is printed from.
async fn letter_pdf(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let n = match own_notification(&app, &headers, &id).await {
        Ok(n) => n,
        Err(r) => return *r,
    };
    if n.channel != Channel::Letter {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            "Notification is not a letter",
        );
    }
    let lines: Vec<String> = n.recipient.lines().map(str::to_string).collect();
    let pdf = civitas_notify::letter::pdf(
        &lines,
        n.subject.as_deref().unwrap_or_default(),
        &n.body,
        n.created_ms,
    );
    ([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response()
}

const STATUSES: &[&str] = &[
    "created",
    "sending",
    "sent",
    "delivered",
    "pending",
    "failed",
    "technical-failure",
    "temporary-failure",
    "permanent-failure",
    "accepted",
    "received",
];

async fn notifications(
    State(app): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let query = query.unwrap_or_default();
    let (mut channels, mut statuses) = (Vec::new(), Vec::new());
    let (mut reference, mut older_than) = (None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "template_type" => match Channel::parse(&v) {
                Some(c) => channels.push(c),
                None => {
                    return validation(&format!(
                        "template_type {v} is not one of [sms, email, letter]"
                    ));
                }
            },
            "status" => {
                if !STATUSES.contains(&v.as_ref()) {
                    return validation(&format!(
                        "status {v} is not one of [{}]",
                        STATUSES.join(", ")
                    ));
                }
                if v == "accepted" {
                    // A letter not yet with the print provider.
                    statuses.extend(["created".to_string(), "sending".to_string()]);
                } else if v == "received" {
                    statuses.push("delivered".to_string());
                } else if v == "failed" {
                    // Notify's word for any failure.
                    for s in [
                        "technical-failure",
                        "temporary-failure",
                        "permanent-failure",
                    ] {
                        statuses.push(s.to_string());
                    }
                } else {
                    statuses.push(v.into_owned());
                }
            }
            "reference" => reference = Some(v.into_owned()),
            "older_than" => match uuid::Uuid::try_parse(&v) {
                Ok(u) => older_than = Some(u.to_string()),
                Err(_) => return validation("older_than is not a valid UUID"),
            },
            "include_jobs" => {}
            other => {
                return validation(&format!(
                    "Additional properties are not allowed ({other} was unexpected)"
                ));
            }
        }
    }
    let page = match app
        .notify
        .notifications(
            &caller.service.id,
            caller.key_type,
            &channels,
            &statuses,
            reference.as_deref(),
            older_than.as_deref(),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let base = base(&app);
    // The same query, for `current`; `next` pages on from the last one (Notify's clients
    // follow `next` until a page comes back empty).
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "older_than")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let link = |older: Option<&str>| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        // First: the Python client pages on with the first UUID it finds in the link, and a
        // reference may look like one.
        if let Some(o) = older {
            q.append_pair("older_than", o);
        }
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        let q = q.finish();
        if q.is_empty() {
            format!("{base}/v2/notifications")
        } else {
            format!("{base}/v2/notifications?{q}")
        }
    };
    let mut links = json!({ "current": link(older_than.as_deref()) });
    if let Some(last) = page.notifications.last() {
        links["next"] = Value::String(link(Some(&last.id)));
    }
    axum::Json(json!({
        "notifications": page.notifications.iter().map(|n| notification_json(&base, n)).collect::<Vec<_>>(),
        "links": links,
    }))
    .into_response()
}

/// The language a sender asks for (Civitas's addition to Notify's requests: `zh-TW` or
/// `en`), if any.
fn language_field(body: &Map<String, Value>) -> Result<Option<Language>, Box<Response>> {
    match string_field(body, "language")? {
        None => Ok(None),
        Some(tag) => Language::parse(&tag).map(Some).ok_or_else(|| {
            Box::new(validation(&format!(
                "language {tag} is not one of [zh-TW, en]"
            )))
        }),
    }
}

/// A template as Notify's GET gives it, with its language and translation (Civitas's
/// additions, which Notify's clients pass through).
fn template_json(t: &Template) -> Value {
    let personalisation: Map<String, Value> = template::placeholders(&format!(
        "{}\n{}",
        t.subject.as_deref().unwrap_or_default(),
        t.body
    ))
    .into_iter()
    .map(|p| (p.name, json!({ "required": true })))
    .collect();
    json!({
        "id": t.id,
        "type": t.channel.code(),
        "created_at": when(Some(t.created_ms)),
        "updated_at": when(t.updated_ms),
        "created_by": t.created_by,
        "version": t.version,
        "body": t.body,
        "subject": t.subject,
        "name": t.name,
        "personalisation": personalisation,
        "postage": null,
        "letter_contact_block": null,
        "language": t.lang.code(),
        "translations": t.translation.iter().map(|x| json!({
            "language": x.lang.code(),
            "subject": x.subject,
            "body": x.body,
        })).collect::<Vec<_>>(),
    })
}

async fn template_at(
    app: &Shared,
    headers: &HeaderMap,
    id: &str,
    version: Option<i64>,
) -> Response {
    let caller = match caller(app, headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Ok(id) = uuid::Uuid::try_parse(id).map(|u| u.to_string()) else {
        return validation("id is not a valid UUID");
    };
    match app.notify.template(&caller.service.id, &id, version).await {
        Ok(Some(t)) => axum::Json(template_json(&t)).into_response(),
        Ok(None) => failed(NotifyError::NotFound(id)),
        Err(e) => failed(e),
    }
}

async fn template_latest(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    template_at(&app, &headers, &id, None).await
}

async fn template_version(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Response {
    match version.parse::<i64>() {
        Ok(v) if v >= 1 => template_at(&app, &headers, &id, Some(v)).await,
        _ => validation("version is not a valid integer"),
    }
}

async fn preview(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let caller = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body = match object_body(&bytes, &["personalisation", "language"], &[]) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let (values, language) =
        match personalisation(&body).and_then(|v| Ok((v, language_field(&body)?))) {
            Ok(v) => v,
            Err(r) => return *r,
        };
    let Ok(id) = uuid::Uuid::try_parse(&id).map(|u| u.to_string()) else {
        return validation("id is not a valid UUID");
    };
    let t = match app.notify.template(&caller.service.id, &id, None).await {
        Ok(Some(t)) => t,
        Ok(None) => return failed(NotifyError::NotFound(id)),
        Err(e) => return failed(e),
    };
    if let Some(l) = language
        && !t.languages().contains(&l)
    {
        return failed(NotifyError::BadRequest(format!(
            "Template has no text in {}",
            l.code()
        )));
    }
    match t.fill(language, &values) {
        Ok((lang, subject, body)) => axum::Json(json!({
            "id": t.id,
            "type": t.channel.code(),
            "version": t.version,
            "html": (t.channel == Channel::Email).then(|| html_of(&body)),
            "body": body,
            "subject": subject,
            "postage": null,
            "language": lang.code(),
        }))
        .into_response(),
        Err(m) => failed(NotifyError::Missing(m)),
    }
}

async fn templates(
    State(app): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let caller = match caller(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut channel = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), Channel::parse(&v)) {
            ("type", Some(c)) => channel = Some(c),
            ("type", None) => {
                return validation(&format!("type {v} is not one of [sms, email, letter]"));
            }
            (other, _) => {
                return validation(&format!(
                    "Additional properties are not allowed ({other} was unexpected)"
                ));
            }
        }
    }
    match app.notify.templates(&caller.service.id, channel).await {
        Ok(list) => axum::Json(json!({
            "templates": list.iter().map(template_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => failed(e),
    }
}

/// An e-mail's text as HTML: paragraphs at blank lines, line breaks within them, and every
/// character that means something in HTML escaped.
fn html_of(text: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", escape(p.trim()).replace('\n', "<br>")))
        .collect()
}
