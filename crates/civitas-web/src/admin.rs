//! Operator pages: the OpenID Connect clients (relying parties) this provider serves.
//! Viewing needs an operator account; every change needs level substantial and is logged by
//! the provider (`identity.oidc_client_registered`, ...).

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use civitas_identity::oidc::{AuthMethod, Client, NewClient, OidcError, SigningAlg};
use civitas_identity::session::SessionInfo;
use civitas_identity::{AccountKind, Loa};
use serde::Deserialize;

use crate::Shared;
use crate::account::{FieldError, error_for, guard_form};
use crate::auth::{SignedIn, Visitor};
use crate::pages::{Chrome, error_page, message_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/admin/clients", get(clients).post(register))
        .route("/admin/clients/state", post(set_state))
        .route("/admin/clients/remove", post(remove))
}

/// Refuses anyone but an operator with the "not allowed" page.
pub(crate) fn operator_only(s: &SessionInfo, c: Chrome) -> Result<Chrome, Box<Response>> {
    only_if(s.account.kind == AccountKind::Operator, c)
}

/// The page's chrome when `allowed`, else the page that says the visitor may not see it.
pub(crate) fn only_if(allowed: bool, c: Chrome) -> Result<Chrome, Box<Response>> {
    if allowed {
        Ok(c)
    } else {
        Err(Box::new(forbidden_page(c)))
    }
}

/// The page that says the visitor may not see or do this (403).
pub(crate) fn forbidden_page(c: Chrome) -> Response {
    message_page(
        c,
        StatusCode::FORBIDDEN,
        |t| (t.forbidden_title, t.forbidden_text),
        String::new(),
    )
}

#[derive(Template)]
#[template(path = "admin_clients.html")]
struct ClientsPage {
    c: Chrome,
    errors: Vec<FieldError>,
    clients: Vec<Client>,
    form: RegisterForm,
    /// Set right after a registration: the new client and its secret, shown once.
    created: Option<(String, Option<String>)>,
}

impl ClientsPage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }
}

async fn page(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    errors: Vec<FieldError>,
    form: RegisterForm,
    created: Option<(String, Option<String>)>,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match app.oidc.clients().await {
        Ok(clients) => render(
            &ClientsPage {
                c,
                errors,
                clients,
                form,
                created,
            },
            status,
        ),
        Err(e) => error_page(c, headers, &e),
    }
}

async fn clients(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    page(&app, c, &headers, Vec::new(), RegisterForm::default(), None).await
}

#[derive(Deserialize, Default, Clone)]
struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// One per line.
    #[serde(default)]
    redirect_uris: String,
    /// One per line.
    #[serde(default)]
    post_logout_uris: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    jwks: String,
    #[serde(default)]
    alg: String,
    #[serde(default)]
    first_party: Option<String>,
    #[serde(default)]
    min_loa: String,
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

async fn register(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<RegisterForm>,
) -> Response {
    let s = match guard_form(&v, &headers, &uri, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match operator_only(&s, Chrome::for_visitor(&v, &headers, &uri, "admin")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut new = NewClient::new(f.name.trim(), lines(&f.redirect_uris));
    new.post_logout_redirect_uris = lines(&f.post_logout_uris);
    new.auth_method = AuthMethod::parse(&f.auth).unwrap_or(AuthMethod::ClientSecretBasic);
    new.jwks = (!f.jwks.trim().is_empty()).then(|| f.jwks.trim().to_string());
    new.id_token_alg = SigningAlg::parse(&f.alg).unwrap_or(SigningAlg::Rs256);
    new.first_party = f.first_party.is_some();
    new.min_loa = Loa::from_code(&f.min_loa).unwrap_or(Loa::Low);
    match app
        .oidc
        .register_client(new, &format!("account:{}", s.account.id))
        .await
    {
        Ok(r) => {
            let created = Some((r.client.client_id.clone(), r.secret));
            page(
                &app,
                c,
                &headers,
                Vec::new(),
                RegisterForm::default(),
                created,
            )
            .await
        }
        Err(OidcError::Protocol { description, .. }) => {
            let field = if description.contains("name") {
                "name"
            } else if description.contains("JWKS") || description.contains("key") {
                "jwks"
            } else {
                "redirect_uris"
            };
            let errors = vec![FieldError {
                field,
                message: description,
            }];
            page(&app, c, &headers, errors, f, None).await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

#[derive(Deserialize, Default)]
struct ClientForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    enabled: Option<String>,
}

async fn set_state(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<ClientForm>,
) -> Response {
    change(&app, &v, &headers, &uri, &f, |app, id, enabled| {
        Box::pin(async move { app.oidc.set_client_enabled(id, enabled).await.map(|_| ()) })
    })
    .await
}

async fn remove(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Form(f): Form<ClientForm>,
) -> Response {
    change(&app, &v, &headers, &uri, &f, |app, id, _| {
        Box::pin(async move { app.oidc.remove_client(id).await.map(|_| ()) })
    })
    .await
}

type Change = for<'a> fn(
    &'a Shared,
    &'a str,
    bool,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), OidcError>> + Send + 'a>,
>;

/// Guards an operator's change to one client, applies it, and returns to the list.
async fn change(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    f: &ClientForm,
    apply: Change,
) -> Response {
    let back: axum::http::Uri = "/admin/clients".parse().unwrap_or_else(|_| uri.clone());
    let s = match guard_form(v, headers, &back, Loa::Substantial, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match operator_only(&s, Chrome::for_visitor(v, headers, uri, "admin")) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match apply(app, &f.client_id, f.enabled.is_some()).await {
        Ok(()) => Redirect::to("/admin/clients").into_response(),
        Err(e) => error_page(c, headers, &e),
    }
}
