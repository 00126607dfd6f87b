//! The authorisation matrix: every route of the site, for every kind of visitor (signed out,
//! a resident, each staff role, an operator), gets the answer its rule says. A route added to
//! `civitas-web` without a row here fails `every_route_is_in_the_matrix`.

use crate::support::{Browser, Engine, TestApp};

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    Resident,
    Caseworker,
    Supervisor,
    AgencyAdmin,
    Operator,
}

const ROLES: [Role; 6] = [
    Role::Anonymous,
    Role::Resident,
    Role::Caseworker,
    Role::Supervisor,
    Role::AgencyAdmin,
    Role::Operator,
];

/// What a route allows.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Anyone; the status every visitor gets.
    Public(u16),
    /// A signed-in person of any kind; others are sent to sign in.
    SignedIn,
    /// A form for signed-in people: without a session it sends to sign in; with one but
    /// without the anti-forgery token it is refused with 403.
    SignedInForm,
    /// Like `SignedInForm`, but the form is shown again with its error (this status).
    SignedInFormAgain(u16),
    /// A form that needs level substantial: a low session is sent to step up first.
    SubstantialForm,
    /// A JSON call for signed-in people, guarded by the X-CSRF-Token header: 403 without it
    /// (and 401/403 without a session).
    SignedInJson,
    /// A form anyone may submit, refused without the anti-forgery token (422 with the form
    /// again, or 403 for JSON calls).
    AnyoneForm(u16),
    /// Operators only: others get 403, signed-out visitors are sent to sign in.
    OperatorOnly,
    /// Agency staff and operators get this status, residents 403, signed-out visitors are
    /// sent to sign in.
    StaffPage(u16),
    /// An operators' JSON API reading: operators get 200, other people 403, and signed-out
    /// visitors 401 (no redirect: it is an API).
    OperatorJson,
    /// Like `OperatorJson`, with this status for operators.
    OperatorJsonAt(u16),
    /// An operator's change: needs level substantial (a low session is sent to step up
    /// first), then the operator role (others get 403).
    OperatorForm,
    /// A status for signed-out visitors and another for everyone signed in.
    ByRole { signed_out: u16, signed_in: u16 },
    /// A page for people in the population register: a resident gets 200, other signed-in
    /// people 403, signed-out visitors are sent to sign in.
    ResidentPage,
    /// A JSON reading for people in the population register: a resident gets this status,
    /// other signed-in people 403, signed-out visitors 401.
    ResidentJson(u16),
    /// A protocol endpoint with its own authentication (bearer tokens, client credentials):
    /// every visitor without those gets this status.
    Protocol(u16),
}

/// Every route: method, a concrete path, its rule.
const MATRIX: &[(&str, &str, Rule)] = &[
    ("GET", "/", Rule::Public(200)),
    ("GET", "/agencies", Rule::Public(200)),
    ("GET", "/agencies/HRO", Rule::Public(200)),
    ("GET", "/lang/en", Rule::Public(303)),
    ("GET", "/assets/site.css", Rule::Public(200)),
    ("GET", "/assets/passkey.js", Rule::Public(200)),
    ("GET", "/healthz", Rule::Public(200)),
    ("GET", "/readyz", Rule::Public(200)),
    ("GET", "/metrics", Rule::Public(200)),
    ("GET", "/api/v1/agencies", Rule::Public(200)),
    ("GET", "/api/v1/agencies/HRO", Rule::Public(200)),
    ("GET", "/api/v1/status", Rule::Public(200)),
    ("GET", "/api/v1/ledger/checkpoints", Rule::Public(200)),
    ("GET", "/ledger/checkpoint", Rule::Public(200)),
    ("GET", "/ledger/key", Rule::Public(200)),
    ("GET", "/ledger/tile/0/000", Rule::Public(404)),
    ("GET", "/ledger/witness/key", Rule::Public(404)),
    (
        "POST",
        "/ledger/witness/add-checkpoint",
        Rule::Protocol(404),
    ),
    ("GET", "/dev/mail", Rule::Public(200)),
    ("GET", "/signin", Rule::Public(200)),
    ("POST", "/signin", Rule::AnyoneForm(422)),
    ("GET", "/signin/code", Rule::Public(303)),
    ("POST", "/signin/code", Rule::AnyoneForm(422)),
    ("POST", "/signin/passkey/start", Rule::AnyoneForm(403)),
    ("POST", "/signin/passkey/finish", Rule::AnyoneForm(403)),
    ("GET", "/register", Rule::Public(200)),
    ("POST", "/register", Rule::AnyoneForm(422)),
    ("GET", "/register/confirm", Rule::Public(303)),
    ("POST", "/register/confirm", Rule::AnyoneForm(422)),
    ("GET", "/signin/step-up", Rule::SignedIn),
    ("POST", "/signin/step-up", Rule::SignedInFormAgain(422)),
    ("POST", "/signin/step-up/passkey/start", Rule::SignedInJson),
    ("POST", "/signin/step-up/passkey/finish", Rule::SignedInJson),
    ("POST", "/signout", Rule::SignedInForm),
    ("GET", "/account", Rule::SignedIn),
    ("GET", "/account/security", Rule::SignedIn),
    ("GET", "/account/sessions", Rule::SignedIn),
    ("GET", "/account/applications", Rule::SignedIn),
    ("GET", "/account/data-usage", Rule::SignedIn),
    // Only the person an entry is about may fetch its proof; entry 0 is nobody's.
    (
        "GET",
        "/account/data-usage/0/proof",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "GET",
        "/api/v1/me/data-usage",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 200,
        },
    ),
    ("GET", "/account/mandates", Rule::SignedIn),
    ("POST", "/account/mandates", Rule::SubstantialForm),
    ("POST", "/account/mandates/revoke", Rule::SignedInForm),
    ("POST", "/account/act-for", Rule::SignedInForm),
    ("POST", "/account/password", Rule::SignedInForm),
    ("POST", "/account/totp", Rule::SignedInForm),
    ("POST", "/account/totp/confirm", Rule::SignedInForm),
    ("POST", "/account/totp/remove", Rule::SubstantialForm),
    ("POST", "/account/recovery-codes", Rule::SubstantialForm),
    ("POST", "/account/sessions/end", Rule::SignedInForm),
    ("POST", "/account/applications/withdraw", Rule::SignedInForm),
    ("POST", "/account/passkeys/start", Rule::SignedInJson),
    ("POST", "/account/passkeys/finish", Rule::SignedInJson),
    ("POST", "/account/passkeys/remove", Rule::SubstantialForm),
    ("GET", "/admin/clients", Rule::OperatorOnly),
    ("POST", "/admin/clients", Rule::OperatorForm),
    ("GET", "/admin/exchange", Rule::OperatorOnly),
    ("GET", "/admin/notify", Rule::StaffPage(200)),
    ("GET", "/admin/notify/none", Rule::StaffPage(404)),
    ("POST", "/admin/notify/none", Rule::SubstantialForm),
    (
        "GET",
        "/admin/notify/none/templates/none",
        Rule::StaffPage(404),
    ),
    (
        "POST",
        "/admin/notify/none/templates/none",
        Rule::SubstantialForm,
    ),
    (
        "POST",
        "/admin/notify/none/templates/none/preview",
        Rule::SignedInForm,
    ),
    ("GET", "/admin/consent", Rule::OperatorOnly),
    ("POST", "/admin/consent", Rule::OperatorForm),
    ("POST", "/admin/exchange", Rule::OperatorForm),
    ("POST", "/admin/clients/state", Rule::OperatorForm),
    ("POST", "/admin/clients/remove", Rule::OperatorForm),
    (
        "GET",
        "/.well-known/openid-configuration",
        Rule::Public(200),
    ),
    ("GET", "/oidc/jwks", Rule::Public(200)),
    // The exchange's gateway knows callers by X-Road-Client and their address range, never
    // by a session: without the header every visitor gets 400.
    ("GET", "/listClients", Rule::Public(200)),
    // The signed configuration goes only to registered gateways, known by a signed claim.
    ("GET", "/exchange/v1/configuration", Rule::Protocol(403)),
    // Tracker reports come only from registered gateways, signed.
    ("POST", "/exchange/v1/tracker", Rule::Protocol(403)),
    // The operators' API: a session (or an access token); changes also need X-CSRF-Token
    // from a browser, so without it every signed-in visitor gets 403.
    ("GET", "/api/v1/exchange/directory", Rule::OperatorJson),
    // Consent: public reference data; organisations authenticate as their client (HTTP
    // Basic), so everyone else gets 401; operators' changes and people's changes need
    // X-CSRF-Token from a browser.
    ("GET", "/api/v1/consent/purposes", Rule::Public(200)),
    (
        "POST",
        "/api/v1/consent/purposes",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    ("GET", "/api/v1/consent/items", Rule::Public(200)),
    ("GET", "/api/v1/consent/jwks", Rule::Public(200)),
    ("GET", "/api/v1/consent/agreements", Rule::OperatorJson),
    ("POST", "/api/v1/consent/agreements", Rule::Protocol(401)),
    ("GET", "/api/v1/consent/agreements/none", Rule::Public(404)),
    // An operator asking about an agreement that does not exist: 404.
    (
        "GET",
        "/api/v1/consent/agreements/none/statistics",
        Rule::OperatorJsonAt(404),
    ),
    (
        "POST",
        "/api/v1/consent/agreements/none/approve",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/consent/agreements/none/reject",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "GET",
        "/api/v1/consent/records/none/validity",
        Rule::Protocol(401),
    ),
    ("GET", "/account/messages", Rule::ResidentPage),
    ("GET", "/account/messages/settings", Rule::ResidentPage),
    ("POST", "/account/messages/settings", Rule::SignedInForm),
    ("POST", "/account/messages/senders/none", Rule::SignedInForm),
    (
        "GET",
        "/account/messages/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    ("GET", "/account/my-data", Rule::ResidentPage),
    ("GET", "/account/my-data.json", Rule::ResidentPage),
    ("GET", "/account/my-data.pdf", Rule::ResidentPage),
    ("POST", "/api/v1/me/prefill", Rule::SignedInJson),
    ("GET", "/org", Rule::SignedIn),
    // Notify's v2 API: a JWT signed with a service's API key, or 401.
    ("POST", "/v2/notifications/email", Rule::Protocol(401)),
    ("POST", "/v2/notifications/sms", Rule::Protocol(401)),
    ("POST", "/v2/notifications/letter", Rule::Protocol(401)),
    ("GET", "/v2/notifications/none/pdf", Rule::Protocol(401)),
    // A provider's receipts and the sandbox providers answer only a signed body, and only
    // when configured (here they are not).
    ("POST", "/notify/receipts", Rule::Protocol(404)),
    ("POST", "/sandbox/sms", Rule::Protocol(404)),
    ("POST", "/sandbox/letters", Rule::Protocol(404)),
    ("GET", "/v2/notifications/none", Rule::Protocol(401)),
    ("GET", "/v2/notifications", Rule::Protocol(401)),
    ("GET", "/v2/template/none", Rule::Protocol(401)),
    ("GET", "/v2/template/none/version/1", Rule::Protocol(401)),
    ("POST", "/v2/template/none/preview", Rule::Protocol(401)),
    ("GET", "/v2/templates", Rule::Protocol(401)),
    ("POST", "/api/v1/prefill", Rule::SignedInJson),
    ("GET", "/services", Rule::Public(200)),
    ("GET", "/services/none", Rule::Public(404)),
    (
        "POST",
        "/services/licence-renewal/apply",
        Rule::SubstantialForm,
    ),
    ("GET", "/applications", Rule::ResidentPage),
    (
        "GET",
        "/applications/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "GET",
        "/applications/none/steps/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "POST",
        "/applications/none/steps/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "GET",
        "/applications/none/check",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    ("POST", "/applications/none/check", Rule::SignedInForm),
    ("POST", "/applications/none/withdraw", Rule::SignedInForm),
    (
        "GET",
        "/applications/none/corrections/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "POST",
        "/applications/none/corrections/none",
        Rule::SignedInForm,
    ),
    (
        "GET",
        "/applications/none/files/none",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    ("GET", "/console", Rule::SubstantialForm),
    ("POST", "/console/bulk", Rule::SubstantialForm),
    ("GET", "/console/cases/none", Rule::SubstantialForm),
    ("POST", "/console/cases/none", Rule::SubstantialForm),
    (
        "POST",
        "/console/cases/none/registers",
        Rule::SubstantialForm,
    ),
    (
        "GET",
        "/console/cases/none/files/none",
        Rule::SubstantialForm,
    ),
    ("GET", "/api/v1/services", Rule::Public(200)),
    ("GET", "/api/v1/services/none", Rule::Public(404)),
    ("GET", "/api/v1/services/none/forms", Rule::Public(404)),
    ("GET", "/api/v1/services/none/eForms", Rule::Public(404)),
    (
        "POST",
        "/api/v1/services/none/applications",
        Rule::SignedInJson,
    ),
    (
        "GET",
        "/api/v1/applications",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 200,
        },
    ),
    (
        "GET",
        "/api/v1/applications/none",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 404,
        },
    ),
    (
        "POST",
        "/api/v1/applications/none/documents",
        Rule::SignedInJson,
    ),
    // Staff read tasks at level substantial (the matrix's sessions are low).
    (
        "GET",
        "/api/v1/tasks",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "GET",
        "/api/v1/tasks/none",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    ("POST", "/api/v1/tasks/none/complete", Rule::SignedInJson),
    ("GET", "/account/consents", Rule::SignedIn),
    (
        "GET",
        "/account/consents/none/receipt",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    ("POST", "/account/consents/none/change", Rule::SignedInForm),
    (
        "GET",
        "/account/consents/none/verify",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    (
        "GET",
        "/account/data-usage/0/verify",
        Rule::ByRole {
            signed_out: 303,
            signed_in: 404,
        },
    ),
    // A release needs an access token granted for a data agreement.
    ("GET", "/api/v1/mydata/release", Rule::Protocol(401)),
    ("GET", "/api/v1/me/consents", Rule::ResidentJson(200)),
    ("POST", "/api/v1/me/consents", Rule::SignedInJson),
    ("GET", "/api/v1/me/consents/none", Rule::ResidentJson(404)),
    (
        "GET",
        "/api/v1/me/consents/none/receipt",
        Rule::ResidentJson(404),
    ),
    (
        "POST",
        "/api/v1/me/consents/none/withdraw",
        Rule::SignedInJson,
    ),
    (
        "POST",
        "/api/v1/exchange/members",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/subsystems",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/services",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/rights",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/rights/revoke",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/gateways",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    (
        "POST",
        "/api/v1/exchange/gateways/TW%2FGOV%2FHRO/revoke",
        Rule::ByRole {
            signed_out: 401,
            signed_in: 403,
        },
    ),
    // Messages between gateways are served only on a gateway's mutual-TLS listener
    // (tests/it/gateways.rs); the all-in-one node has no such route.
    ("POST", "/exchange/v1/message", Rule::Public(404)),
    (
        "GET",
        "/r1/TW/GOV/HRO/population/persons",
        Rule::Protocol(400),
    ),
    (
        "POST",
        "/r1/TW/GOV/HRO/population/persons",
        Rule::Protocol(400),
    ),
    // Without client_id and redirect_uri there is nowhere to send an error: an error page.
    ("GET", "/oidc/authorize", Rule::Public(400)),
    ("POST", "/oidc/authorize", Rule::Protocol(400)),
    ("POST", "/oidc/token", Rule::Protocol(400)),
    ("POST", "/oidc/revoke", Rule::Protocol(401)),
    ("GET", "/oidc/userinfo", Rule::Protocol(401)),
    ("POST", "/oidc/userinfo", Rule::Protocol(401)),
    ("GET", "/oidc/logout", Rule::Public(200)),
    // Signed out there is nothing to end; signed in, the confirmation needs its token.
    (
        "POST",
        "/oidc/logout",
        Rule::ByRole {
            signed_out: 200,
            signed_in: 403,
        },
    ),
];

/// Paths registered with `.route("…")` in civitas-web's sources.
fn registered_routes() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../civitas-web/src");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split(".route(").skip(1) {
            let path = part.trim_start().trim_start_matches('"');
            out.push(path.split('"').next().unwrap().to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a concrete path matches a route pattern like `/agencies/{code}`.
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    if pattern.contains("{*") {
        let fixed = pattern.split("{*").next().unwrap();
        return path.starts_with(fixed);
    }
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| a.starts_with('{') || a == b)
}

#[test]
fn every_route_is_in_the_matrix() {
    let missing: Vec<String> = registered_routes()
        .into_iter()
        .filter(|r| !MATRIX.iter().any(|(_, path, _)| matches(r, path)))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the authorisation matrix: {missing:?}"
    );
}

async fn browser_for(app: &TestApp, role: Role, resident: &str) -> Browser {
    let mut b = Browser::new(app);
    let user = match role {
        Role::Anonymous => {
            b.get("/signin").await;
            return b;
        }
        Role::Resident => resident.to_string(),
        Role::Caseworker => "caseworker.1@hro.gov.example".into(),
        Role::Supervisor => "supervisor.1@hro.gov.example".into(),
        Role::AgencyAdmin => "agency_admin.1@hro.gov.example".into(),
        Role::Operator => "operator.1@moda.gov.example".into(),
    };
    b.sign_in(&user, civitas_identity::DEMO_PASSWORD).await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_its_rule_says() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let resident = civitas_registry::demo_people(&app.db).await.unwrap()[0]
        .national_id
        .clone();
    let mut wrong = Vec::new();
    for role in ROLES {
        let mut b = browser_for(&app, role, &resident).await;
        let signed_in = role != Role::Anonymous;
        for (method, path, rule) in MATRIX {
            // Forms go without their token: the matrix checks who may reach them, and that
            // nobody reaches a state change without the token.
            let page = if *method == "GET" {
                b.get(path).await
            } else {
                b.post(path, &[("csrf", "missing")]).await
            };
            let to_sign_in = page.status == 303
                && page
                    .location
                    .as_deref()
                    .is_some_and(|l| l.starts_with("/signin?next="));
            let ok =
                match rule {
                    Rule::Public(status) | Rule::Protocol(status) | Rule::AnyoneForm(status) => {
                        page.status == *status
                    }
                    Rule::SignedIn => {
                        if signed_in {
                            page.status == 200 || (page.status == 303 && *path == "/signin/step-up")
                        } else {
                            to_sign_in
                        }
                    }
                    Rule::SignedInForm => {
                        if signed_in {
                            page.status == 403
                        } else {
                            to_sign_in || (*path == "/signout" && page.status == 303)
                        }
                    }
                    Rule::SignedInFormAgain(status) => {
                        if signed_in {
                            page.status == *status
                        } else {
                            to_sign_in
                        }
                    }
                    Rule::SubstantialForm => {
                        if signed_in {
                            page.status == 303
                                && page.location.as_deref().is_some_and(|l| {
                                    l.starts_with("/signin/step-up?need=substantial")
                                })
                        } else {
                            to_sign_in
                        }
                    }
                    Rule::SignedInJson => page.status == 403 || (!signed_in && page.status == 401),
                    Rule::ByRole {
                        signed_out,
                        signed_in: inside,
                    } => page.status == if signed_in { *inside } else { *signed_out },
                    Rule::OperatorForm => match role {
                        Role::Anonymous => to_sign_in,
                        _ => {
                            page.status == 303
                                && page.location.as_deref().is_some_and(|l| {
                                    l.starts_with("/signin/step-up?need=substantial")
                                })
                        }
                    },
                    Rule::ResidentPage => match role {
                        Role::Resident => page.status == 200,
                        Role::Anonymous => to_sign_in,
                        _ => page.status == 403,
                    },
                    Rule::ResidentJson(status) => match role {
                        Role::Resident => page.status == *status,
                        Role::Anonymous => page.status == 401,
                        _ => page.status == 403,
                    },
                    Rule::OperatorJsonAt(status) => match role {
                        Role::Operator => page.status == *status,
                        Role::Anonymous => page.status == 401,
                        _ => page.status == 403,
                    },
                    Rule::OperatorJson => match role {
                        Role::Operator => page.status == 200,
                        Role::Anonymous => page.status == 401,
                        _ => page.status == 403,
                    },
                    Rule::StaffPage(status) => match role {
                        Role::Anonymous => to_sign_in,
                        Role::Resident => page.status == 403,
                        _ => page.status == *status,
                    },
                    Rule::OperatorOnly => match role {
                        Role::Operator => page.status == 200,
                        Role::Anonymous => to_sign_in,
                        _ => page.status == 403,
                    },
                };
            if !ok {
                wrong.push(format!(
                    "{role:?} {method} {path}: {} {:?} ({rule:?})",
                    page.status, page.location
                ));
            }
        }
    }
    app.stop().await;
    assert!(
        wrong.is_empty(),
        "answers that break the matrix:\n{}",
        wrong.join("\n")
    );
}

/// Signs in, sets up an authenticator app and steps up to substantial.
pub(crate) async fn at_substantial(app: &TestApp, user: &str) -> Browser {
    let mut b = Browser::new(app);
    b.sign_in(user, civitas_identity::DEMO_PASSWORD).await;
    b.get("/account/security").await;
    let setup = b.post("/account/totp", &[]).await;
    let secret = setup
        .body
        .split("id=\"totp-secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let confirm = crate::identity::totp_now(&secret);
    assert_eq!(
        b.post("/account/totp/confirm", &[("code", &confirm)])
            .await
            .status,
        200
    );
    b.get("/signin/step-up?need=substantial&next=/account")
        .await;
    let code = crate::identity::totp_ahead(&secret, 1);
    let up = b
        .post("/signin/step-up", &[("code", &code), ("next", "/account")])
        .await;
    assert_eq!(up.status, 303, "{}", up.body);
    b.get("/account").await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_register_clients_on_the_admin_page_and_staff_cannot() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let mut staff = at_substantial(&app, "agency_admin.1@hro.gov.example").await;
    staff.get("/account").await;
    let refused = staff
        .post(
            "/admin/clients",
            &[
                ("name", "Sneaky"),
                ("redirect_uris", "https://x.example/cb"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    let mut op = at_substantial(&app, "operator.1@moda.gov.example").await;
    op.get("/admin/clients").await;
    let bad = op
        .post(
            "/admin/clients",
            &[("name", "Tainan City app"), ("redirect_uris", "not a url")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("href=\"#redirect_uris\""));
    let made = op
        .post(
            "/admin/clients",
            &[
                ("name", "Tainan City app"),
                ("redirect_uris", "https://app.tainan.example/callback"),
                ("auth", "client_secret_basic"),
                ("alg", "ES256"),
                ("min_loa", "substantial"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let id = made
        .body
        .split("id=\"new-client-id\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(made.body.contains("id=\"new-client-secret\""));
    let list = op.get("/admin/clients").await;
    assert!(
        list.body.contains(&id) && !list.body.contains("new-client-secret"),
        "the secret is shown once"
    );
    assert_eq!(
        op.post("/admin/clients/state", &[("client_id", &id)])
            .await
            .status,
        303
    );
    assert!(
        op.get("/admin/clients").await.body.contains("disabled")
            || op.get("/admin/clients").await.body.contains("已停用")
    );
    assert_eq!(
        op.post("/admin/clients/remove", &[("client_id", &id)])
            .await
            .status,
        303
    );
    assert!(!op.get("/admin/clients").await.body.contains(&id));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_the_exchange_on_the_admin_page_and_staff_cannot() {
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let mut staff = at_substantial(&app, "agency_admin.1@hro.gov.example").await;
    staff.get("/account").await;
    let refused = staff
        .post(
            "/admin/exchange",
            &[("action", "member"), ("id", "TW/GOV/SNEAKY"), ("name", "x")],
        )
        .await;
    assert_eq!(refused.status, 403);
    let mut op = at_substantial(&app, "operator.1@moda.gov.example").await;
    // The demo's directory is there, with its rights.
    let page = op.get("/admin/exchange").await;
    assert_eq!(page.status, 200);
    for want in [
        "TW/GOV/HRO/registry",
        "TW/GOV/MODA/portal",
        "TW/GOV/HRO/registry/population",
    ] {
        assert!(page.body.contains(want), "{want}");
    }
    // Mistakes come back with an error summary pointing at the field, nothing lost.
    let bad = op
        .post(
            "/admin/exchange",
            &[("action", "member"), ("id", "TW/GOV/a_b"), ("name", "x")],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("href=\"#member_id\"") && bad.body.contains("value=\"TW/GOV/a_b\""));
    // A new member, its subsystem and service, a right, then the right revoked.
    for form in [
        vec![
            ("action", "member"),
            ("id", "TW/COM/12345675"),
            ("name", "Tainan Pharmacy"),
        ],
        vec![
            ("action", "subsystem"),
            ("id", "TW/COM/12345675/shop"),
            ("name", "Shop"),
            ("networks", ""),
        ],
        vec![
            ("action", "service"),
            ("id", "TW/COM/12345675/shop/stock"),
            ("url", "http://127.0.0.1:9/stock"),
            ("endpoints", "GET /items\nPOST /items"),
        ],
        vec![
            ("action", "grant"),
            ("service", "TW/COM/12345675/shop/stock"),
            ("client", "TW/GOV/MODA/portal"),
            ("method", "GET"),
            ("path", "/items"),
        ],
        vec![
            ("action", "may_defer"),
            ("id", "TW/COM/12345675/shop"),
            ("allowed", "yes"),
        ],
    ] {
        let done = op.post("/admin/exchange", &form).await;
        assert_eq!(done.status, 303, "{form:?}: {}", done.body);
    }
    let d = civitas_exchange::Directory::new(app.db.clone(), app.ledger.clone(), "TW");
    let portal = civitas_core::xroad::ClientId::parse("TW/GOV/MODA/portal").unwrap();
    let stock = civitas_core::xroad::ServiceId::parse("TW/COM/12345675/shop/stock").unwrap();
    assert!(
        d.may_call(&portal, &stock, "GET", "/items/1")
            .await
            .unwrap()
    );
    let shop = d.subsystem(&stock.provider).await.unwrap().unwrap();
    assert!(shop.may_defer && shop.networks.contains("127.0.0.0/8"));
    let revoked = op
        .post(
            "/admin/exchange",
            &[
                ("action", "revoke"),
                ("service", "TW/COM/12345675/shop/stock"),
                ("client", "TW/GOV/MODA/portal"),
                ("method", "GET"),
                ("path", "/items"),
            ],
        )
        .await;
    assert_eq!(revoked.status, 303);
    assert!(
        !d.may_call(&portal, &stock, "GET", "/items/1")
            .await
            .unwrap()
    );
    // Each change is in the ledger with the operator's account as actor.
    let granted = app
        .ledger
        .latest_of_kind("exchange.access_revoked")
        .await
        .unwrap()
        .unwrap()
        .1;
    assert!(granted.actor.starts_with("account:"), "{}", granted.actor);

    // A gateway registered with its public keys; having never fetched the configuration,
    // it is shown with the alarm. Malformed keys come back with the error summary.
    let keys = civitas_exchange::keys::GatewayKeys::generate()
        .unwrap()
        .public();
    let keys = serde_json::to_string(&keys).unwrap();
    let bad = op
        .post(
            "/admin/exchange",
            &[
                ("action", "gateway"),
                ("id", "TW/COM/12345675"),
                ("url", "https://gw.pharmacy.example:5500"),
                ("keys", "{not keys}"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.body.contains("href=\"#gateway_member\""),
        "{}",
        bad.body
    );
    let added = op
        .post(
            "/admin/exchange",
            &[
                ("action", "gateway"),
                ("id", "TW/COM/12345675"),
                ("url", "https://gw.pharmacy.example:5500"),
                ("keys", &keys),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.body);
    let page = op.get("/admin/exchange").await;
    assert!(page.body.contains("https://gw.pharmacy.example:5500"));
    assert!(
        page.body
            .contains("<strong class=\"tag warning\" role=\"alert\">"),
        "the alarm"
    );
    let gone = op
        .post(
            "/admin/exchange",
            &[("action", "revoke_gateway"), ("id", "TW/COM/12345675")],
        )
        .await;
    assert_eq!(gone.status, 303);
    assert!(d.gateways().await.unwrap().is_empty());
    assert!(
        app.ledger
            .latest_of_kind("exchange.gateway_revoked")
            .await
            .unwrap()
            .is_some()
    );

    // The same through the API from the operator's browser session, with X-CSRF-Token.
    op.get("/admin/exchange").await;
    let (status, body) = op
        .post_json(
            "/api/v1/exchange/subsystems",
            &serde_json::json!({ "id": "TW/COM/12345675/api", "name": "Pharmacy API" }),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "TW/COM/12345675/api");
    let (status, body) = op
        .post_json(
            "/api/v1/exchange/rights",
            &serde_json::json!({ "service": "TW/COM/12345675/shop/stock", "client": "TW/COM/12345675/api", "method": "GET", "path": "/items" }),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = op
        .post_json(
            "/api/v1/exchange/rights",
            &serde_json::json!({ "service": "TW/COM/12345675/shop/nothing", "client": "TW/COM/12345675/api" }),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let listed = op.get("/api/v1/exchange/directory").await;
    assert_eq!(listed.status, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert!(
        listed["rights"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["client"] == "TW/COM/12345675/api" && r["path"] == "/items"),
        "{listed}"
    );
    // Staff are not operators, even at level substantial.
    staff.get("/account").await;
    let (status, _) = staff
        .post_json(
            "/api/v1/exchange/members",
            &serde_json::json!({ "id": "TW/GOV/SNEAKY", "name": "x" }),
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(staff.get("/api/v1/exchange/directory").await.status, 403);
    app.stop().await;
}
