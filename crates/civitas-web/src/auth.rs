//! Sessions on the web: the session cookie, anti-forgery tokens for every form, and the
//! extractors pages use to know who is signed in and at what level of assurance.
//!
//! The session cookie holds a random token (the database keeps only its hash); it is
//! HttpOnly, SameSite=Lax (so a relying party's redirect to `/oidc/authorize` still carries
//! it) and Secure whenever the public URL is HTTPS. Forms carry a token bound to the
//! session, or before sign-in to a random `civitas_csrf` cookie (SameSite=Strict), and a
//! cross-origin `Origin` header is refused.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use civitas_identity::Loa;
use civitas_identity::session::{ClientInfo, SessionInfo, csrf_for};

use crate::Shared;

/// The session cookie.
pub const SESSION_COOKIE: &str = "civitas_session";
/// The anti-forgery cookie of visitors not yet signed in.
pub const CSRF_COOKIE: &str = "civitas_csrf";
/// The cookie of a sign-in waiting for its second factor.
pub const PENDING_COOKIE: &str = "civitas_pending";

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether cookies get the `Secure` attribute: when the site is served over HTTPS.
pub fn secure_cookies(app: &Shared) -> bool {
    app.config.base_url().starts_with("https://")
}

/// A `Set-Cookie` value. `max_age` of `Some(0)` deletes the cookie; `None` makes it last
/// for the browser session.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: Option<i64>,
    secure: bool,
    same_site: &str,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// The anti-forgery cookie value a request carries, or the one the middleware just made.
#[derive(Clone)]
struct CsrfCookie(String);

/// Gives every visitor an anti-forgery cookie on their first request, so the first form
/// they see can already carry a token.
pub(crate) async fn ensure_csrf_cookie(
    axum::extract::State(app): axum::extract::State<Shared>,
    mut req: Request,
    next: Next,
) -> Response {
    let existing = cookie(req.headers(), CSRF_COOKIE)
        .filter(|v| v.len() >= 32)
        .map(str::to_string);
    let fresh = existing.is_none();
    let value = existing.unwrap_or_else(|| {
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
    });
    req.extensions_mut().insert(CsrfCookie(value.clone()));
    let secure = secure_cookies(&app);
    let mut res = next.run(req).await;
    if fresh {
        res.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &value, None, secure, "Strict"),
        );
    }
    res
}

/// Who is making a request: their live session, if any, and the anti-forgery token their
/// forms must carry.
pub struct Visitor {
    /// The live session.
    pub session: Option<SessionInfo>,
    /// The token to put in forms (`<input type=hidden name=csrf>`).
    pub csrf: String,
    /// Address and browser, for sign-in records.
    pub client: ClientInfo,
}

impl Visitor {
    /// Whether a JSON call carries this visitor's token in `X-CSRF-Token` and is not from
    /// another origin.
    pub fn json_call_is_genuine(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get(crate::passkey_routes::CSRF_HEADER)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        self.form_is_genuine(headers, token)
    }

    /// Whether a submitted form's token is this visitor's, and the request is not from
    /// another origin.
    pub fn form_is_genuine(&self, headers: &HeaderMap, token: &str) -> bool {
        if let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
        {
            let origin = origin.to_str().unwrap_or_default();
            let host = host.to_str().unwrap_or_default();
            let same = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host);
            if !same {
                return false;
            }
        }
        !self.csrf.is_empty() && constant_time_eq(self.csrf.as_bytes(), token.as_bytes())
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Shared> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        let session = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => match app.identity.session(token).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "session lookup failed");
                    return Err(crate::Problem::internal(&e).into_response());
                }
            },
            None => None,
        };
        let csrf = match &session {
            Some(s) => s.csrf_token(),
            None => parts
                .extensions
                .get::<CsrfCookie>()
                .map(|c| csrf_for(&c.0, "anonymous"))
                .unwrap_or_default(),
        };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        Ok(Visitor {
            session,
            csrf,
            client: ClientInfo { ip, user_agent },
        })
    }
}

/// A path to come back to after signing in: only same-site paths are followed.
pub fn safe_next(next: Option<&str>) -> String {
    same_site_path(next).unwrap_or("/account").to_string()
}

/// `next` when it is a path on this site; an open redirect would let others borrow our
/// address.
pub fn same_site_path(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
}

/// Sends the browser to sign in, coming back to `uri` afterwards.
pub fn to_sign_in(uri: &Uri) -> Redirect {
    let here = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::to(&format!(
        "/signin?next={}",
        crate::pages::percent_encode(here)
    ))
}

/// What a page only signed-in people see starts from: the visitor, their session (at any
/// level of assurance), and the request's headers and original URI (before any nesting) for
/// the page chrome. Anyone else is sent to sign in and back. Handlers take it apart in that
/// order: `SignedIn(v, s, headers, uri): SignedIn`.
pub struct SignedIn(pub Visitor, pub SessionInfo, pub HeaderMap, pub Uri);

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_request_parts(parts, app).await?;
        let axum::extract::OriginalUri(uri) =
            axum::extract::OriginalUri::from_request_parts(parts, app)
                .await
                .map_err(|never| match never {})?;
        let session = require(&visitor, &uri, Loa::Low).map_err(IntoResponse::into_response)?;
        Ok(SignedIn(visitor, session, parts.headers.clone(), uri))
    }
}

/// The session, when signed in at `need` or above; otherwise the redirect to sign in or to
/// step up.
pub fn require(visitor: &Visitor, uri: &Uri, need: Loa) -> Result<SessionInfo, Redirect> {
    let Some(s) = &visitor.session else {
        return Err(to_sign_in(uri));
    };
    if s.loa < need {
        let here = uri.path_and_query().map_or("/", |p| p.as_str());
        return Err(Redirect::to(&format!(
            "/signin/step-up?need={}&next={}",
            need.code(),
            crate::pages::percent_encode(here)
        )));
    }
    Ok(s.clone())
}
