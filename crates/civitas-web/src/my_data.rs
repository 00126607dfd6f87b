//! "My data" (`/account/my-data`): everything the base registries hold about the signed-in
//! resident, register by register, with where each record comes from; downloadable as JSON
//! (`/account/my-data.json`). Each register is read through the exchange as the portal, for
//! the person's own request (Taiwan's Personal Data Protection Act, art. 3), so these reads
//! are logged like any other and appear in "Who used my data".

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use civitas_identity::session::SessionInfo;
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::SignedIn;
use crate::mydata::{Reason, read};
use crate::pages::{Chrome, message_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/account/my-data", get(page))
        .route("/account/my-data.json", get(download))
        .route("/account/my-data.pdf", get(download_pdf))
}

/// Why the portal reads the registers here.
const OWN_REQUEST: Reason<'static> = Reason {
    purpose: "My data: the person's own request to see what the registers hold",
    legal_basis: "Personal Data Protection Act art. 3 (the person's own request)",
    consent: None,
    release: None,
};

/// One read of one register, and what it gave.
struct Read {
    summary: &'static str,
    /// The records, each as (field, value) pairs; empty when there is none.
    records: Vec<Vec<(String, String)>>,
    data: Value,
}

/// One register.
struct Register {
    title: &'static str,
    agency: &'static str,
    service_id: String,
    reads: Vec<Read>,
}

#[derive(Template)]
#[template(path = "my_data.html")]
struct MyDataPage {
    c: Chrome,
    registers: Vec<Register>,
}

/// A value as the page shows it.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A read's answer as records of (field's name in `lang`, value).
fn records(v: &Value, lang: crate::i18n::Lang) -> Vec<Vec<(String, String)>> {
    let name = |k: &str| match civitas_registry::fields::label(k) {
        Some((zh, en)) => lang.pick(zh, en).to_string(),
        None => k.to_string(),
    };
    let record =
        |o: &serde_json::Map<String, Value>| o.iter().map(|(k, v)| (name(k), text(v))).collect();
    match v {
        Value::Object(o) => vec![record(o)],
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_object)
            .map(record)
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads every register about the person, through the exchange.
async fn gather(
    app: &Shared,
    s: &SessionInfo,
    lang: crate::i18n::Lang,
) -> Result<Vec<Register>, String> {
    let instance = app.exchange.instance().to_string();
    let national_id = s.account.username.clone();
    let mut out = Vec::new();
    for service in civitas_registry::services::SERVICES
        .iter()
        .filter(|s| s.personal)
    {
        let service_id = service.service_id(&instance);
        let mut reads = Vec::new();
        for (path, summary) in service.person_reads() {
            let path = path.replace("{id}", &national_id);
            let data = read(app, &service_id, &path, &national_id, &OWN_REQUEST).await?;
            reads.push(Read {
                summary,
                records: records(&data, lang),
                data,
            });
        }
        out.push(Register {
            title: service.title,
            agency: service.agency,
            service_id,
            reads,
        });
    }
    Ok(out)
}

/// Only a person in the register has data in it.
fn resident(s: &SessionInfo, c: Chrome) -> Result<Chrome, Box<Response>> {
    crate::admin::only_if(s.account.person_id.is_some(), c)
}

fn failed(c: Chrome, detail: &str) -> Response {
    tracing::error!(error = %detail, "cannot read the registers for My data");
    message_page(
        c,
        StatusCode::BAD_GATEWAY,
        |t| (t.error_title, t.error_text),
        String::new(),
    )
}

async fn page(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match resident(&s, Chrome::for_visitor(&v, &headers, &uri, "account")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match gather(&app, &s, c.lang).await {
        Ok(registers) => render(&MyDataPage { c, registers }, StatusCode::OK),
        Err(e) => failed(c, &e),
    }
}

/// The page's chrome and every register's records, or the page that says why not.
async fn gathered(
    app: &Shared,
    SignedIn(v, s, headers, uri): SignedIn,
) -> Result<(Chrome, SessionInfo, Vec<Register>), Response> {
    let c = resident(&s, Chrome::for_visitor(&v, &headers, &uri, "account")).map_err(|r| *r)?;
    match gather(app, &s, c.lang).await {
        Ok(r) => Ok((c, s, r)),
        Err(e) => Err(failed(c, &e)),
    }
}

async fn download(State(app): State<Shared>, signed_in: SignedIn) -> Response {
    let registers = match gathered(&app, signed_in).await {
        Ok((_, _, r)) => r,
        Err(page) => return page,
    };
    let body = json!({
        "retrieved_at": crate::ops::rfc3339(Some(civitas_ledger::event::now_ms())),
        "registers": registers.iter().map(|r| json!({
            "register": r.title,
            "agency": r.agency,
            "service": r.service_id,
            "reads": r.reads.iter().map(|x| json!({ "what": x.summary, "data": x.data })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"civitas-my-data.json\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// The same as a PDF, in the page's language, to keep or print.
async fn download_pdf(State(app): State<Shared>, signed_in: SignedIn) -> Response {
    let (c, s, registers) = match gathered(&app, signed_in).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let pick = |zh: &'static str, en: &'static str| c.lang.pick(zh, en);
    let mut pdf = civitas_pdf::Pdf::new();
    let title = pick("我的資料", "My data");
    pdf.text(title, 18.0, 0.0);
    pdf.text(
        &format!(
            "{}{} ({})",
            pick("姓名：", "Name: "),
            s.account.display_name,
            s.account.username
        ),
        10.0,
        0.0,
    );
    pdf.text(
        &format!(
            "{}{}",
            pick("讀取時間：", "Read at: "),
            crate::ops::rfc3339(Some(civitas_ledger::event::now_ms())).unwrap_or_default()
        ),
        10.0,
        0.0,
    );
    pdf.text(
        pick(
            "以下資料是應您本人的要求，經資料交換自各機關登記簿讀取；每次讀取都記在「誰使用了我的資料」。",
            "Read from the agencies' registers through the exchange at your own request; each read is listed under Who used my data.",
        ),
        9.0,
        0.0,
    );
    for r in &registers {
        pdf.gap(10.0);
        pdf.text(&format!("{} ({})", r.title, r.agency), 14.0, 0.0);
        pdf.text(
            &format!("{}{}", pick("來源：", "Source: "), r.service_id),
            8.0,
            0.0,
        );
        for x in &r.reads {
            pdf.gap(4.0);
            pdf.text(x.summary, 11.0, 0.0);
            if x.records.is_empty() {
                pdf.text(pick("沒有資料。", "Nothing recorded."), 10.0, 12.0);
            }
            for record in &x.records {
                for (field, value) in record {
                    pdf.text(&format!("{field}: {value}"), 10.0, 12.0);
                }
                pdf.gap(3.0);
            }
        }
    }
    let lang = pick("zh-TW", "en");
    (
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"civitas-my-data.pdf\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        pdf.finish(title, lang),
    )
        .into_response()
}
