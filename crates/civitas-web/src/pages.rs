//! Server-rendered pages: the portal home, the agency directory and one page per agency,
//! the language switch, and the error pages.

use askama::Template;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use civitas_identity::StaffRole;
use serde::Deserialize;

use crate::i18n::{LANG_COOKIE, Lang, Texts};
use crate::{Problem, Shared};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/", get(home))
        .route("/agencies", get(agencies))
        .route("/agencies/{code}", get(agency))
        .route("/lang/{code}", get(switch_language))
        .route("/assets/site.css", get(stylesheet))
        .route("/assets/passkey.js", get(passkey_script))
        .fallback(not_found)
}

/// What every page's layout needs.
pub(crate) struct Chrome {
    pub(crate) t: &'static Texts,
    pub(crate) a: &'static crate::account_texts::AccountTexts,
    pub(crate) lang: Lang,
    pub(crate) section: &'static str,
    pub(crate) switch_href: String,
    /// The signed-in person's name, for the header.
    pub(crate) user: Option<String>,
    /// The anti-forgery token for forms on the page (the header's sign-out among them).
    pub(crate) csrf: String,
}

impl Chrome {
    pub(crate) fn new(headers: &HeaderMap, uri: &axum::http::Uri, section: &'static str) -> Chrome {
        let lang = Lang::from_headers(headers);
        let here = uri.path_and_query().map_or("/", |p| p.as_str());
        Chrome {
            t: lang.texts(),
            a: lang.account(),
            lang,
            section,
            switch_href: format!(
                "/lang/{}?next={}",
                lang.other().code(),
                percent_encode(here)
            ),
            user: None,
            csrf: String::new(),
        }
    }

    /// The chrome for a visitor: their name in the header when signed in.
    pub(crate) fn for_visitor(
        v: &crate::auth::Visitor,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        section: &'static str,
    ) -> Chrome {
        let mut c = Chrome::new(headers, uri, section);
        c.user = v.session.as_ref().map(|s| s.account.display_name.clone());
        c.csrf = v.csrf.clone();
        c
    }
}

pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The demo country's figures, formatted for reading.
struct CountryFigures {
    people: String,
    households: String,
    businesses: String,
    agencies: String,
}

/// A count with thousands separators: 1000000 becomes "1,000,000".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    c: Chrome,
    country: Option<CountryFigures>,
}

async fn home(
    State(app): State<Shared>,
    v: crate::auth::Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "home");
    match civitas_registry::demo_summary(&app.db).await {
        Ok(summary) => {
            let country = summary.map(|s| CountryFigures {
                people: grouped(s.people),
                households: grouped(s.households),
                businesses: grouped(s.businesses),
                agencies: grouped(s.agencies),
            });
            render(&HomePage { c, country }, StatusCode::OK)
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

/// An agency as a page shows it, in the reader's language.
struct AgencyText {
    code: String,
    name: String,
    kind: &'static str,
    parent: String,
    description: String,
    website: String,
    services: Vec<String>,
}

impl AgencyText {
    fn new(a: civitas_registry::Agency, lang: Lang) -> AgencyText {
        let t = lang.texts();
        let kind = match a.kind.as_str() {
            "ministry" => t.kind_ministry,
            "operator" => t.kind_operator,
            _ => t.kind_agency,
        };
        AgencyText {
            name: lang.pick(&a.name_zh, &a.name_en).to_string(),
            parent: lang.pick(&a.parent_zh, &a.parent_en).to_string(),
            description: lang.pick(&a.description_zh, &a.description_en).to_string(),
            services: match lang {
                Lang::Zh => a.services_zh,
                Lang::En => a.services_en,
            },
            code: a.code,
            kind,
            website: a.website,
        }
    }
}

#[derive(Template)]
#[template(path = "agencies.html")]
struct AgenciesPage {
    c: Chrome,
    agencies: Vec<AgencyText>,
}

async fn agencies(
    State(app): State<Shared>,
    v: crate::auth::Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "agencies");
    match civitas_registry::agencies(&app.db).await {
        Ok(list) => {
            let agencies = list
                .into_iter()
                .map(|a| AgencyText::new(a, c.lang))
                .collect();
            render(&AgenciesPage { c, agencies }, StatusCode::OK)
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

#[derive(Template)]
#[template(path = "agency.html")]
struct AgencyPage {
    c: Chrome,
    a: AgencyText,
    staff: Vec<(&'static str, i64)>,
}

async fn agency(
    State(app): State<Shared>,
    Path(code): Path<String>,
    v: crate::auth::Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "agencies");
    let found = match civitas_registry::agency(&app.db, &code).await {
        Ok(found) => found,
        Err(e) => return error_page(c, &headers, &e),
    };
    let Some(a) = found else {
        return message_page(
            c,
            StatusCode::NOT_FOUND,
            |t| (t.not_found_title, t.not_found_text),
            String::new(),
        );
    };
    let staff = match civitas_identity::staff_counts(&app.db, &a.code).await {
        Ok(s) => s,
        Err(e) => return error_page(c, &headers, &e),
    };
    let t = c.t;
    let staff = staff
        .into_iter()
        .map(|(role, n)| {
            let label = match role {
                StaffRole::Caseworker => t.role_caseworker,
                StaffRole::Supervisor => t.role_supervisor,
                StaffRole::AgencyAdministrator => t.role_agency_admin,
            };
            (label, n)
        })
        .collect();
    let a = AgencyText::new(a, c.lang);
    render(&AgencyPage { c, a, staff }, StatusCode::OK)
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// Sets the language cookie and returns to the page the person was on.
async fn switch_language(Path(code): Path<String>, Query(q): Query<Next>) -> Response {
    let Some(lang) = Lang::from_code(&code) else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown-language",
            "Unknown language",
        )
        .detail(format!(
            "`{code}` is not a language of this site; use zh-TW or en."
        ))
        .into_response();
    };
    let next = crate::auth::same_site_path(q.next.as_deref()).unwrap_or("/");
    let mut res = Redirect::to(next).into_response();
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.code()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/site.css"),
    )
        .into_response()
}

async fn passkey_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../assets/passkey.js"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    c: Chrome,
    heading: &'static str,
    text: &'static str,
    request_id: String,
}

pub(crate) fn message_page(
    c: Chrome,
    status: StatusCode,
    texts: impl Fn(&'static Texts) -> (&'static str, &'static str),
    request_id: String,
) -> Response {
    let (heading, text) = texts(c.t);
    render(
        &MessagePage {
            c,
            heading,
            text,
            request_id,
        },
        status,
    )
}

pub(crate) fn error_page(c: Chrome, headers: &HeaderMap, err: &dyn std::error::Error) -> Response {
    tracing::error!(error = %err, "page failed");
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    message_page(
        c,
        StatusCode::INTERNAL_SERVER_ERROR,
        |t| (t.error_title, t.error_text),
        id,
    )
}

async fn not_found(headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Response {
    if uri.path().starts_with("/api/") {
        return Problem::not_found(format!("There is no API resource at {}.", uri.path()))
            .into_response();
    }
    not_found_page(Chrome::new(&headers, &uri, ""))
}

/// The "page not found" page.
pub(crate) fn not_found_page(c: Chrome) -> Response {
    message_page(
        c,
        StatusCode::NOT_FOUND,
        |t| (t.not_found_title, t.not_found_text),
        String::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
