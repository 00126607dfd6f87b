//! Agency staff's pages for their sending services' message templates (`/admin/notify`):
//! the services of their agency, each service's templates, a template with its text in
//! Chinese and English, a preview with the values typed in, its versions, and forms to add a
//! template and save a new version.
//!
//! Who sees what: staff see their own agency's services (an operator sees every service, to
//! help); supervisors and agency administrators change templates, caseworkers and operators
//! only read and preview. A service another agency owns is "not found". Every change needs
//! level substantial and is logged by Notify (`notify.template_saved`, with the staff
//! member's account as actor).

use askama::Template;
use axum::Form;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use civitas_identity::session::SessionInfo;
use civitas_identity::{AccountKind, Loa, StaffRole};
use civitas_notify::template::placeholders;
use civitas_notify::{Channel, Language, NewTemplate, NotifyError, Priority, Service, Text};
use serde::Deserialize;

use crate::Shared;
use crate::account::{FieldError, error_for, guard_form, taiwan_time};
use crate::admin::{forbidden_page, only_if};
use crate::auth::{SignedIn, Visitor};
use crate::pages::{Chrome, error_page, not_found_page, render};

pub(crate) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/admin/notify", get(list))
        .route("/admin/notify/{service}", get(service_page).post(create))
        .route(
            "/admin/notify/{service}/templates/{id}",
            get(template_page).post(update),
        )
        .route(
            "/admin/notify/{service}/templates/{id}/preview",
            axum::routing::post(preview),
        )
}

/// What someone may do with a service's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// What `s` may do with `service`'s templates; `None`: nothing (it is not theirs).
fn access(s: &SessionInfo, service: &Service) -> Option<Access> {
    let a = &s.account;
    match a.kind {
        AccountKind::Operator => Some(Access::Read),
        AccountKind::Staff
            if service.agency.is_some()
                && a.agency_code.as_deref() == service.agency.as_deref() =>
        {
            match a.role.as_deref().and_then(StaffRole::from_code) {
                Some(StaffRole::Supervisor | StaffRole::AgencyAdministrator) => Some(Access::Write),
                _ => Some(Access::Read),
            }
        }
        _ => None,
    }
}

/// The page's chrome for staff and operators; anyone else is told they may not see it.
fn staff_only(s: &SessionInfo, c: Chrome) -> Result<Chrome, Box<Response>> {
    only_if(
        matches!(s.account.kind, AccountKind::Staff | AccountKind::Operator),
        c,
    )
}

/// The service `id` and what `s` may do with it, when they may see it at all.
async fn visible(
    app: &Shared,
    s: &SessionInfo,
    id: &str,
) -> Result<Option<(Service, Access)>, NotifyError> {
    Ok(app
        .notify
        .service(id)
        .await?
        .and_then(|service| access(s, &service).map(|a| (service, a))))
}

fn chrome(v: &Visitor, headers: &HeaderMap, uri: &axum::http::Uri) -> Chrome {
    Chrome::for_visitor(v, headers, uri, "admin")
}

#[derive(Template)]
#[template(path = "admin_notify.html")]
struct ListPage {
    c: Chrome,
    services: Vec<Service>,
    /// The staff member's agency (none for an operator).
    agency: Option<String>,
}

async fn list(State(app): State<Shared>, SignedIn(v, s, headers, uri): SignedIn) -> Response {
    let c = match staff_only(&s, chrome(&v, &headers, &uri)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let agency = match s.account.kind {
        AccountKind::Operator => None,
        _ => Some(s.account.agency_code.clone().unwrap_or_default()),
    };
    match app.notify.services(agency.as_deref()).await {
        Ok(services) => render(
            &ListPage {
                c,
                services,
                agency,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(c, &headers, &e),
    }
}

/// A template as the service page lists it.
struct Row {
    t: civitas_notify::Template,
    languages: String,
}

#[derive(Template)]
#[template(path = "admin_notify_service.html")]
struct ServicePage {
    c: Chrome,
    service: Service,
    can_write: bool,
    templates: Vec<Row>,
    errors: Vec<FieldError>,
    form: TemplateForm,
}

impl ServicePage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }

    fn form_action(&self) -> String {
        format!("/admin/notify/{}", self.service.id)
    }

    fn is_new(&self) -> bool {
        true
    }
}

/// The languages' tags, joined.
fn languages(t: &civitas_notify::Template) -> String {
    t.languages()
        .into_iter()
        .map(Language::code)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn show_service(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    (service, access): (Service, Access),
    errors: Vec<FieldError>,
    form: TemplateForm,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match app.notify.templates(&service.id, None).await {
        Ok(list) => render(
            &ServicePage {
                c,
                can_write: access == Access::Write,
                templates: list
                    .into_iter()
                    .map(|t| Row {
                        languages: languages(&t),
                        t,
                    })
                    .collect(),
                service,
                errors,
                form,
            },
            status,
        ),
        Err(e) => error_page(c, headers, &e),
    }
}

async fn service_page(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let c = match staff_only(&s, chrome(&v, &headers, &uri)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match visible(&app, &s, &id).await {
        Ok(Some(found)) => {
            let form = TemplateForm {
                channel: "email".into(),
                lang: Language::ZhTw.code().into(),
                priority: Priority::Normal.code().into(),
                ..TemplateForm::default()
            };
            show_service(&app, c, &headers, found, Vec::new(), form).await
        }
        Ok(None) => not_found_page(c),
        Err(e) => error_page(c, &headers, &e),
    }
}

/// The form that adds a template or saves a new version of one.
#[derive(Deserialize, Default, Clone)]
struct TemplateForm {
    #[serde(default)]
    csrf: String,
    /// `email`, `sms` or `letter` (a new template only: a template keeps its channel).
    #[serde(default)]
    channel: String,
    #[serde(default)]
    name: String,
    /// The language of `subject` and `body`.
    #[serde(default)]
    lang: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
    /// The translation into the other language (none when both are empty).
    #[serde(default)]
    t_subject: String,
    #[serde(default)]
    t_body: String,
    #[serde(default)]
    priority: String,
    essential: Option<String>,
}

impl TemplateForm {
    /// A form filled with `t`'s latest version.
    fn of(t: &civitas_notify::Template) -> TemplateForm {
        let (t_subject, t_body) = match &t.translation {
            Some(x) => (x.subject.clone().unwrap_or_default(), x.body.clone()),
            None => Default::default(),
        };
        TemplateForm {
            csrf: String::new(),
            channel: t.channel.code().into(),
            name: t.name.clone(),
            lang: t.lang.code().into(),
            subject: t.subject.clone().unwrap_or_default(),
            body: t.body.clone(),
            t_subject,
            t_body,
            priority: t.priority.code().into(),
            essential: t.essential.then(|| "1".into()),
        }
    }

    /// The template the form describes, or the field at fault and why.
    fn to_new(&self, lang: crate::i18n::Lang) -> Result<NewTemplate, FieldError> {
        let bad = |field: &'static str, zh: &str, en: &str| FieldError {
            field,
            message: lang.pick(zh, en).to_string(),
        };
        let channel = Channel::parse(&self.channel)
            .ok_or_else(|| bad("channel", "請選擇訊息類型。", "Choose the kind of message."))?;
        let main = Language::parse(&self.lang).ok_or_else(|| {
            bad(
                "lang",
                "請選擇範本的語言。",
                "Choose the template's language.",
            )
        })?;
        if self.name.trim().is_empty() {
            return Err(bad(
                "name",
                "請輸入範本名稱。",
                "Enter the template's name.",
            ));
        }
        if channel != Channel::Sms && self.subject.trim().is_empty() {
            return Err(bad(
                "subject",
                "電子郵件需要主旨，信件需要標題。",
                "An e-mail needs a subject, a letter a heading.",
            ));
        }
        if self.body.trim().is_empty() {
            return Err(bad(
                "body",
                "請輸入範本內容。",
                "Enter the template's text.",
            ));
        }
        let translation = if self.t_body.trim().is_empty() && self.t_subject.trim().is_empty() {
            None
        } else {
            Some(Text {
                lang: main.other(),
                subject: (channel != Channel::Sms).then(|| self.t_subject.clone()),
                body: self.t_body.clone(),
            })
        };
        Ok(NewTemplate {
            channel,
            name: self.name.clone(),
            subject: (channel != Channel::Sms).then(|| self.subject.clone()),
            body: self.body.clone(),
            priority: Priority::parse(&self.priority).unwrap_or_default(),
            essential: self.essential.is_some(),
            lang: main,
            translation,
        })
    }
}

/// The field a refusal from Notify is about: the translation's, the subject, or the text.
fn field_of(message: &str) -> &'static str {
    if message.contains("translation") {
        "t_body"
    } else if message.contains("subject") || message.contains("heading") {
        "subject"
    } else {
        "body"
    }
}

/// What a form posted to a service page may change: the visitor's session, chrome and
/// the service, when they may write to it; otherwise the answer to give.
async fn writable(
    app: &Shared,
    v: &Visitor,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    csrf: &str,
    service_id: &str,
) -> Result<(SessionInfo, Chrome, (Service, Access)), Box<Response>> {
    let s = guard_form(v, headers, uri, Loa::Substantial, csrf)?;
    let c = staff_only(&s, chrome(v, headers, uri))?;
    match visible(app, &s, service_id).await {
        Ok(Some(found)) if found.1 == Access::Write => Ok((s, c, found)),
        Ok(Some(_)) => Err(Box::new(forbidden_page(c))),
        Ok(None) => Err(Box::new(not_found_page(c))),
        Err(e) => Err(Box::new(error_page(c, headers, &e))),
    }
}

async fn create(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(service_id): Path<String>,
    Form(f): Form<TemplateForm>,
) -> Response {
    let (s, c, found) = match writable(&app, &v, &headers, &uri, &f.csrf, &service_id).await {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let new = match f.to_new(c.lang) {
        Ok(t) => t,
        Err(e) => return show_service(&app, c, &headers, found, vec![e], f).await,
    };
    let actor = format!("account:{}", s.account.id);
    match app
        .notify
        .save_template(&found.0.id, None, &new, &actor)
        .await
    {
        Ok(t) => Redirect::to(&format!("/admin/notify/{}/templates/{}", found.0.id, t.id))
            .into_response(),
        Err(NotifyError::Invalid(m) | NotifyError::BadRequest(m)) => {
            let e = FieldError {
                field: field_of(&m),
                message: m,
            };
            show_service(&app, c, &headers, found, vec![e], f).await
        }
        Err(e) => error_page(c, &headers, &e),
    }
}

/// A template's text in one language, as the page shows it.
struct Shown {
    lang: Language,
    subject: Option<String>,
    body: String,
}

/// A preview asked for on the template page.
struct Preview {
    lang: Language,
    /// The values typed in, by placeholder.
    values: Vec<(String, String)>,
    /// The filled-in subject and text, or the placeholders still without a value.
    filled: Result<(Option<String>, String), Vec<String>>,
}

#[derive(Template)]
#[template(path = "admin_notify_template.html")]
struct TemplatePage {
    c: Chrome,
    service: Service,
    can_write: bool,
    t: civitas_notify::Template,
    latest: i64,
    texts: Vec<Shown>,
    /// Every placeholder of the version shown.
    fields: Vec<String>,
    versions: Vec<(i64, String, String)>,
    preview: Option<Preview>,
    errors: Vec<FieldError>,
    form: TemplateForm,
}

impl TemplatePage {
    fn error(&self, field: &str) -> String {
        error_for(&self.errors, field)
    }

    fn form_action(&self) -> String {
        format!("/admin/notify/{}/templates/{}", self.service.id, self.t.id)
    }

    fn is_new(&self) -> bool {
        false
    }

    /// The value typed in for a placeholder in the preview.
    fn value(&self, name: &str) -> String {
        self.preview
            .as_ref()
            .and_then(|p| p.values.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// What the template page's address asks for: a version, and a preview with its values.
#[derive(Default)]
struct Asked {
    version: Option<i64>,
    preview: bool,
    lang: Option<Language>,
    values: Vec<(String, String)>,
}

fn asked(query: Option<&str>) -> Asked {
    let mut a = Asked::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "version" => a.version = v.parse().ok().filter(|n| *n >= 1),
            "preview" => a.preview = true,
            "lang" => a.lang = Language::parse(&v),
            other => {
                if let Some(name) = other.strip_prefix("p.")
                    && !v.trim().is_empty()
                {
                    a.values.push((name.to_string(), v.into_owned()));
                }
            }
        }
    }
    a
}

#[allow(clippy::too_many_arguments)]
async fn show_template(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    (service, access): (Service, Access),
    id: &str,
    asked: Asked,
    errors: Vec<FieldError>,
    form: Option<TemplateForm>,
) -> Response {
    let versions = match app.notify.template_versions(&service.id, id).await {
        Ok(v) => v,
        Err(e) => return error_page(c, headers, &e),
    };
    let Some(latest) = versions.first().cloned() else {
        return not_found_page(c);
    };
    let t = match asked.version {
        Some(n) => match versions.iter().find(|t| t.version == n) {
            Some(t) => t.clone(),
            None => return not_found_page(c),
        },
        None => latest.clone(),
    };
    let texts = t
        .languages()
        .into_iter()
        .map(|lang| {
            let (lang, subject, body) = t.text_in(Some(lang));
            Shown {
                lang,
                subject: subject.map(str::to_string),
                body: body.to_string(),
            }
        })
        .collect();
    let fields = placeholders(&format!(
        "{}\n{}",
        t.subject.as_deref().unwrap_or_default(),
        t.body
    ))
    .into_iter()
    .map(|p| p.name)
    .collect();
    let preview = asked.preview.then(|| {
        let values: serde_json::Map<String, serde_json::Value> = asked
            .values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let lang = asked.lang.unwrap_or(t.lang);
        Preview {
            lang,
            filled: t
                .fill(Some(lang), &values)
                .map(|(_, subject, body)| (subject, body))
                .map_err(|m| m.0),
            values: asked.values,
        }
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(
        &TemplatePage {
            can_write: access == Access::Write,
            form: form.unwrap_or_else(|| TemplateForm::of(&latest)),
            latest: latest.version,
            versions: versions
                .iter()
                .map(|v| {
                    (
                        v.version,
                        taiwan_time(v.updated_ms.unwrap_or(v.created_ms)),
                        v.created_by.clone(),
                    )
                })
                .collect(),
            c,
            service,
            t,
            texts,
            fields,
            preview,
            errors,
        },
        status,
    )
}

async fn template_page(
    State(app): State<Shared>,
    SignedIn(v, s, headers, uri): SignedIn,
    Path((service_id, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let c = match staff_only(&s, chrome(&v, &headers, &uri)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    // A preview's values may be a person's: they come in a form, never in an address,
    // which browsers and logs keep.
    let a = Asked {
        preview: false,
        values: Vec::new(),
        ..asked(query.as_deref())
    };
    show_visible(&app, c, &headers, &s, (&service_id, &id), a).await
}

/// The template page, as `asked`, when `s` may see the service; else "not found".
async fn show_visible(
    app: &Shared,
    c: Chrome,
    headers: &HeaderMap,
    s: &SessionInfo,
    (service_id, id): (&str, &str),
    a: Asked,
) -> Response {
    match visible(app, s, service_id).await {
        Ok(Some(found)) => show_template(app, c, headers, found, id, a, Vec::new(), None).await,
        Ok(None) => not_found_page(c),
        Err(e) => error_page(c, headers, &e),
    }
}

/// The template page with a preview filled with the values posted.
async fn preview(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((service_id, id)): Path<(String, String)>,
    axum::extract::RawForm(form): axum::extract::RawForm,
) -> Response {
    let text = String::from_utf8_lossy(&form);
    let csrf = url::form_urlencoded::parse(text.as_bytes())
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let s = match guard_form(&v, &headers, &uri, Loa::Low, &csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = match staff_only(&s, chrome(&v, &headers, &uri)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let a = Asked {
        preview: true,
        ..asked(Some(&text))
    };
    show_visible(&app, c, &headers, &s, (&service_id, &id), a).await
}

async fn update(
    State(app): State<Shared>,
    v: Visitor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((service_id, id)): Path<(String, String)>,
    Form(f): Form<TemplateForm>,
) -> Response {
    let (s, c, found) = match writable(&app, &v, &headers, &uri, &f.csrf, &service_id).await {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let current = match app.notify.template(&found.0.id, &id, None).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found_page(c),
        Err(e) => return error_page(c, &headers, &e),
    };
    // A template keeps its channel, whatever the form says.
    let f = TemplateForm {
        channel: current.channel.code().into(),
        ..f
    };
    let saved = match f.to_new(c.lang) {
        Ok(new) => {
            let actor = format!("account:{}", s.account.id);
            app.notify
                .save_template(&found.0.id, Some(&id), &new, &actor)
                .await
                .map_err(|e| match e {
                    NotifyError::Invalid(m) | NotifyError::BadRequest(m) => Ok(FieldError {
                        field: field_of(&m),
                        message: m,
                    }),
                    e => Err(e),
                })
        }
        Err(e) => Err(Ok(e)),
    };
    match saved {
        Ok(t) => Redirect::to(&format!("/admin/notify/{}/templates/{}", found.0.id, t.id))
            .into_response(),
        Err(Ok(e)) => {
            show_template(
                &app,
                c,
                &headers,
                found,
                &id,
                Asked::default(),
                vec![e],
                Some(f),
            )
            .await
        }
        Err(Err(e)) => error_page(c, &headers, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_asks_for_a_version_and_a_preview() {
        let a = asked(Some(
            "version=2&preview=1&lang=en&p.first+name=Mei&p.case=&x=1",
        ));
        assert_eq!(a.version, Some(2));
        assert!(a.preview);
        assert_eq!(a.lang, Some(Language::En));
        // An empty field is a value not given.
        assert_eq!(
            a.values,
            vec![("first name".to_string(), "Mei".to_string())]
        );
        assert_eq!(asked(Some("version=0")).version, None);
    }

    #[test]
    fn a_translation_needs_no_fields_of_its_own_to_be_left_out() {
        let f = TemplateForm {
            channel: "sms".into(),
            name: "Reminder".into(),
            lang: "en".into(),
            subject: "ignored for text messages".into(),
            body: "Hi ((name))".into(),
            priority: "emergency".into(),
            ..TemplateForm::default()
        };
        let t = f.to_new(crate::i18n::Lang::En).unwrap();
        assert_eq!(
            (t.subject, t.translation, t.priority),
            (None, None, Priority::Emergency)
        );
        let with = TemplateForm {
            t_body: "((name))，您好".into(),
            ..f.clone()
        };
        let t = with.to_new(crate::i18n::Lang::En).unwrap();
        assert_eq!(t.translation.unwrap().lang, Language::ZhTw);
        let e = TemplateForm {
            name: " ".into(),
            ..f
        }
        .to_new(crate::i18n::Lang::En)
        .unwrap_err();
        assert_eq!(e.field, "name");
    }
}
