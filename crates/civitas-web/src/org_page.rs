//! The organisation's page (`/org`): for each organisation (registered client) the signed-in
//! person acts for (the operator names them on `/admin/consent`), its data agreements with
//! their state and consent statistics, and a check of whether a consent is valid now: what
//! the organisation's systems do through the API with the client's credentials
//! (`/api/v1/consent/agreements`, `…/statistics`, `/api/v1/consent/records/{id}/validity`).
//! Someone who acts for no organisation is told so; a check about another organisation's
//! consent finds nothing.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use civitas_consent::{ConsentError, Validity};
use serde::Deserialize;

use crate::Shared;
use crate::admin_consent::{AgreementRow, agreement_rows};
use crate::auth::SignedIn;
use crate::pages::{Chrome, error_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new().route("/org", get(show))
}

/// One organisation the person acts for.
struct Organisation {
    client_id: String,
    name: String,
    agreements: Vec<AgreementRow>,
}

/// A validity check asked on the page.
struct Checked {
    client_id: String,
    consent_id: String,
    /// `None`: no such consent to this organisation.
    validity: Option<Validity>,
}

#[derive(Template)]
#[template(path = "org.html")]
struct OrgPage {
    c: Chrome,
    organisations: Vec<Organisation>,
    checked: Option<Checked>,
}

#[derive(Deserialize, Default)]
struct Check {
    client: Option<String>,
    consent: Option<String>,
}

async fn show(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Query(q): Query<Check>,
) -> Response {
    let c = Chrome::for_visitor(&v, &headers, &uri, "org");
    let built = async {
        let purposes = app.consents.purposes().await?;
        let mut organisations = Vec::new();
        for client_id in app.consents.organisations_of(&s.account.id).await? {
            // A disabled or removed organisation's page is closed, as its API is.
            let name = match app.oidc.client(&client_id).await {
                Ok(Some(client)) if client.enabled => client.name,
                _ => continue,
            };
            let list = app.consents.agreements(Some(&client_id)).await?;
            organisations.push(Organisation {
                agreements: agreement_rows(&app, list, &purposes, c.lang).await?,
                client_id,
                name,
            });
        }
        // A check only for an organisation the person acts for, about its own consents.
        let checked = match (q.client, q.consent) {
            (Some(client_id), Some(consent_id))
                if organisations.iter().any(|o| o.client_id == client_id) =>
            {
                let consent_id = consent_id.trim().to_string();
                let validity = match app.consents.check(&consent_id, Some(&client_id)).await {
                    Ok(v) => Some(v),
                    Err(ConsentError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                Some(Checked {
                    client_id,
                    consent_id,
                    validity,
                })
            }
            _ => None,
        };
        Ok::<_, ConsentError>((organisations, checked))
    };
    match built.await {
        Ok((organisations, checked)) => render(
            &OrgPage {
                c,
                organisations,
                checked,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(c, &headers, &e),
    }
}
