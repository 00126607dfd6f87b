//! Pages in a real browser: headless Chromium driven over WebDriver, with axe-core checking
//! accessibility, at desktop and 360 px phone widths.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{Engine, TestApp, require_all, scratch};

/// A chromedriver process and a browser session in it, closed on drop.
struct Browser {
    client: Client,
    driver: Child,
    axe: String,
    /// The driver's port, for [`Browser::another`].
    port: u16,
}

/// What a browser session asks chromedriver for: headless Chromium with a fresh profile.
fn chrome_caps() -> serde_json::Map<String, Value> {
    let profile = scratch("chrome");
    let chromium =
        std::env::var("CIVITAS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,900",
            ]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    caps
}

impl Browser {
    async fn start() -> Option<Browser> {
        let (Ok(driver_path), Ok(axe_path)) = (
            std::env::var("CIVITAS_TEST_CHROMEDRIVER"),
            std::env::var("CIVITAS_TEST_AXE"),
        ) else {
            assert!(
                !require_all(),
                "CIVITAS_TEST_CHROMEDRIVER and CIVITAS_TEST_AXE must be set when CIVITAS_TEST_REQUIRE_ALL=1"
            );
            eprintln!(
                "skipped: set CIVITAS_TEST_CHROMEDRIVER and CIVITAS_TEST_AXE to run browser tests"
            );
            return None;
        };
        let axe = std::fs::read_to_string(&axe_path).expect("read axe-core");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let caps = chrome_caps();
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a browser session: {e}"),
            }
        };
        Some(Browser {
            client,
            driver,
            axe,
            port,
        })
    }

    /// Another browser session on the same driver, with a profile of its own: another
    /// person at their own computer. Close it with [`Client::close`].
    async fn another(&self) -> Client {
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(chrome_caps())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("another browser session")
    }

    /// Runs axe-core on the current page and returns its violations (rule id and nodes).
    async fn axe_violations(&self) -> Vec<String> {
        self.client
            .execute(&format!("{}\nreturn true;", self.axe), vec![])
            .await
            .expect("inject axe-core");
        let result = self
            .client
            .execute(
                "return axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')));",
                vec![],
            )
            .await
            .expect("run axe-core");
        result
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Whether the page scrolls sideways; if so, which element sticks out (the deepest one
    /// whose right edge passes the viewport), so a failure says what to fix.
    async fn overflows_horizontally(&self) -> Option<String> {
        let v = self
            .client
            .execute(
                "const w = document.documentElement.clientWidth;
                 if (document.documentElement.scrollWidth <= w) return null;
                 let worst = null, right = 0;
                 for (const e of document.body.querySelectorAll('*')) {
                   const r = e.getBoundingClientRect();
                   if (r.right > right) { right = r.right; worst = e; }
                 }
                 return document.documentElement.scrollWidth + 'px wide in ' + w + 'px; widest: ' + (worst ? worst.tagName.toLowerCase() + '.' + worst.className + ' \"' + (worst.textContent || '').trim().slice(0, 60) + '\"' : 'none');",
                vec![],
            )
            .await
            .unwrap();
        v.as_str().map(str::to_string)
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn agency_code(app: &TestApp) -> String {
    let list: Vec<Value> = app.get("/api/v1/agencies").await.json().await.unwrap();
    list[0]["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_pass_axe_in_both_languages_at_desktop_and_phone_widths() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let code = agency_code(&app).await;
    let pages = [
        "/".to_string(),
        "/agencies".to_string(),
        format!("/agencies/{code}"),
        "/no-such-page".to_string(),
    ];
    let mut failures = Vec::new();
    for (width, height) in [(1280, 900), (360, 740)] {
        browser.client.set_window_size(width, height).await.unwrap();
        for lang in ["zh-TW", "en"] {
            browser
                .client
                .goto(&format!("{}/lang/{lang}?next=/", app.base))
                .await
                .unwrap();
            for page in &pages {
                browser
                    .client
                    .goto(&format!("{}{page}", app.base))
                    .await
                    .unwrap();
                for v in browser.axe_violations().await {
                    failures.push(format!("{lang} {page} at {width}px: {v}"));
                }
                if let Some(e) = browser.overflows_horizontally().await {
                    failures.push(format!(
                        "{lang} {page} at {width}px: scrolls sideways ({e})"
                    ));
                }
            }
        }
    }
    browser.close().await;
    app.stop().await;
    assert!(
        failures.is_empty(),
        "accessibility or layout failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_switches_language_by_clicking_and_it_is_remembered() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let c = &browser.client;
    c.goto(&format!("{}/agencies", app.base)).await.unwrap();
    assert_eq!(
        c.find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "政府機關"
    );
    c.find(Locator::Css("a.lang-switch"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/agencies",
        "stays on the same page"
    );
    assert_eq!(
        c.find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Agencies"
    );
    // Remembered on the next page.
    c.find(Locator::Css("a.brand"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let lang = c
        .execute("return document.documentElement.lang;", vec![])
        .await
        .unwrap();
    assert_eq!(lang, "en");
    // The skip link is the first thing a keyboard reaches, and it leads to the main content.
    let first = c
        .execute(
            "document.body.focus(); return document.querySelector('a').getAttribute('href');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, "#main");
    browser.close().await;
    app.stop().await;
}

/// Signs in on the sign-in page by typing, as a person would, and waits for `landing`.
/// Signs out with the header's button, and waits for the home page it leads to.
async fn sign_out(c: &fantoccini::Client, base: &str) {
    c.find(Locator::Css("form[action='/signout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let home = url::Url::parse(&format!("{base}/")).unwrap();
    c.wait().for_url(&home).await.unwrap();
}

async fn type_sign_in(c: &fantoccini::Client, user: &str, landing: &url::Url) {
    c.find(Locator::Id("identifier"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(civitas_identity::DEMO_PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_url(landing).await.unwrap();
}

/// Visits each page in both languages at desktop and phone widths, collecting axe violations
/// and pages that scroll sideways.
async fn check_pages(browser: &Browser, base: &str, pages: &[&str], failures: &mut Vec<String>) {
    let c = &browser.client;
    for (width, height) in [(1280, 900), (360, 740)] {
        c.set_window_size(width, height).await.unwrap();
        for lang in ["zh-TW", "en"] {
            c.goto(&format!("{base}/lang/{lang}?next=/")).await.unwrap();
            for page in pages {
                c.goto(&format!("{base}{page}")).await.unwrap();
                assert!(c.source().await.unwrap().contains("<h1"), "{page}");
                for v in browser.axe_violations().await {
                    failures.push(format!("{lang} {page} at {width}px: {v}"));
                }
                if let Some(e) = browser.overflows_horizontally().await {
                    failures.push(format!(
                        "{lang} {page} at {width}px: scrolls sideways ({e})"
                    ));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_signs_in_and_the_account_pages_pass_axe() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let resident = civitas_registry::demo_people(&app.db).await.unwrap()[0]
        .national_id
        .clone();
    // One use of the resident's data, so that "Who used my data" shows its table.
    let person = civitas_registry::person_by_national_id(&app.db, &resident)
        .await
        .unwrap()
        .unwrap();
    let tag = app
        .ledger
        .subject_secret(&format!("person:{}", person.id))
        .await
        .unwrap()
        .tag();
    let used = civitas_ledger::Event::new(
        "exchange.call",
        "xroad:TW/GOV/MODA/portal",
        "exchange/service/TW/GOV/HRO/population/persons",
    )
    .with("purpose", "Childbirth allowance")
    .with("legal_basis", "Household Registration Act art. 65")
    .with("x_road_id", "TW-test")
    .with("status", 200u64)
    .about(tag);
    app.ledger.append(&used).await.unwrap();
    let c = &browser.client;
    let mut failures = Vec::new();
    // Signed out: the sign-in and registration pages, and the sign-in page with its errors.
    for page in ["/signin", "/register", "/dev/mail"] {
        c.goto(&format!("{}{page}", app.base)).await.unwrap();
        for v in browser.axe_violations().await {
            failures.push(format!("{page}: {v}"));
        }
    }
    c.goto(&format!("{}/signin", app.base)).await.unwrap();
    c.find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = c
        .wait()
        .for_element(Locator::Css(".error-summary"))
        .await
        .unwrap();
    assert!(summary.text().await.unwrap().contains("請輸入"));
    for v in browser.axe_violations().await {
        failures.push(format!("/signin with errors: {v}"));
    }
    // Sign in by typing, as a person would.
    let account = url::Url::parse(&format!("{}/account", app.base)).unwrap();
    type_sign_in(c, &resident, &account).await;
    let h1 = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(h1, "我的帳號");
    let pages = [
        "/account",
        "/account/security",
        "/account/sessions",
        "/account/applications",
        "/account/data-usage",
        "/account/consents",
        "/account/my-data",
        "/account/messages",
        "/account/messages/settings",
        "/account/mandates",
        "/org",
    ];
    check_pages(&browser, &app.base, &pages, &mut failures).await;
    // A relying party asks for the person's profile: the consent page passes axe too, and
    // allowing sends the browser back to the client with a code.
    let provider = civitas_identity::oidc::Provider::new(
        app.db.clone(),
        app.ledger.clone(),
        civitas_identity::oidc::Settings::new(&app.base),
    );
    let client = provider
        .register_client(
            civitas_identity::oidc::NewClient::new(
                "Tainan City app",
                vec!["http://127.0.0.1:9/callback".into()],
            ),
            "test",
        )
        .await
        .unwrap()
        .client;
    let authorize = format!(
        "{}/oidc/authorize?response_type=code&client_id={}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&scope=openid%20profile&state=s1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        app.base, client.client_id
    );
    for (width, height) in [(1280, 900), (360, 740)] {
        c.set_window_size(width, height).await.unwrap();
        c.goto(&authorize).await.unwrap();
        assert!(c.source().await.unwrap().contains("Tainan City app"));
        for v in browser.axe_violations().await {
            failures.push(format!("consent page at {width}px: {v}"));
        }
        if let Some(e) = browser.overflows_horizontally().await {
            failures.push(format!("consent page at {width}px: scrolls sideways ({e})"));
        }
    }
    c.find(Locator::Css("button[value=allow]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let back = c
        .wait()
        .for_url(&url::Url::parse("http://127.0.0.1:9/callback").unwrap())
        .await;
    // The browser may show its own error page for the unreachable client; the address tells.
    let _ = back;
    let landed = c.current_url().await.unwrap();
    assert_eq!(landed.path(), "/callback", "{landed}");
    assert!(landed.query().unwrap().contains("code="), "{landed}");
    assert!(landed.query().unwrap().contains("state=s1"), "{landed}");
    c.goto(&format!("{}/account", app.base)).await.unwrap();
    // Signing out from the header ends the session.
    sign_out(c, &app.base).await;
    c.goto(&format!("{}/account", app.base)).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/signin");
    // An operator's pages: the exchange directory (with the demo's members, services and
    // rights) and the OpenID Connect clients.
    type_sign_in(c, "operator.1@moda.gov.example", &account).await;
    // A data agreement waiting for the operator, and one decided.
    let consents = civitas_consent::Consents::open(app.db.clone(), app.ledger.clone(), &app.base)
        .await
        .unwrap();
    for access in [
        civitas_consent::Access::OneTime,
        civitas_consent::Access::Periodic,
    ] {
        let wanted = civitas_consent::NewAgreement {
            purpose: "loan-application".into(),
            legal_basis: "consent".into(),
            items: vec!["population.name".into(), "tax.income".into()],
            retention_days: 30,
            access,
            duration_days: Some(90),
        };
        let a = consents
            .propose("bank-app", "First Bank", &wanted)
            .await
            .unwrap();
        if access == civitas_consent::Access::Periodic {
            consents
                .decide_agreement(&a.id, true, None, "operator:test")
                .await
                .unwrap();
        }
    }
    let pages = ["/admin/exchange", "/admin/clients", "/admin/consent"];
    check_pages(&browser, &app.base, &pages, &mut failures).await;
    // A supervisor's message templates: the list, a service with the form for a new
    // template, and a template with its texts, a preview and the form for a new version.
    sign_out(c, &app.base).await;
    c.goto(&format!("{}/account", app.base)).await.unwrap();
    type_sign_in(c, "supervisor.1@hro.gov.example", &account).await;
    let notify = civitas_notify::Notify::new(app.db.clone(), app.ledger.clone());
    let service = notify.services(Some("HRO")).await.unwrap().remove(0);
    let template = notify.templates(&service.id, None).await.unwrap().remove(0);
    let service_page = format!("/admin/notify/{}", service.id);
    let template_page = format!("{service_page}/templates/{}", template.id);
    let pages = [
        "/admin/notify",
        service_page.as_str(),
        template_page.as_str(),
    ];
    check_pages(&browser, &app.base, &pages, &mut failures).await;
    browser.close().await;
    app.stop().await;
    assert!(
        failures.is_empty(),
        "accessibility or layout failures:\n{}",
        failures.join("\n")
    );
}

// ----- One-stop services, clicked and typed through ---------------------------------------

/// A small PDF, as the file a person attaches.
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

/// Clicks `el` and waits for the page it leads to: a new document, even at the same address
/// (as when a form comes back with its errors).
async fn click_and_load(c: &Client, el: Element) {
    c.execute("window.civitasStale = true; return true;", vec![])
        .await
        .unwrap();
    el.click().await.unwrap();
    let started = Instant::now();
    loop {
        let loaded = c
            .execute(
                "return window.civitasStale !== true && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(loaded, Ok(Value::Bool(true))) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no page came after the click on {:?}",
            c.current_url().await.map(|u| u.to_string())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presses the element `css` finds and waits for the page it leads to.
async fn press(c: &Client, css: &str) {
    let el = match c.find(Locator::Css(css)).await {
        Ok(el) => el,
        Err(e) => panic!(
            "no {css} on {}: {e}\n{}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap_or_default()
        ),
    };
    click_and_load(c, el).await;
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

/// The text of the page's error summary, if it shows one.
async fn error_summary(c: &Client) -> Option<String> {
    match c.find(Locator::Css(".error-summary")).await {
        Ok(e) => Some(e.text().await.unwrap()),
        Err(_) => None,
    }
}

/// Signs in by typing and sets up an authenticator app on the security page, as a person
/// would; returns the app's secret, for the codes the step-up asks for later.
async fn sign_in_with_authenticator(c: &Client, base: &str, user: &str) -> String {
    c.goto(&format!("{base}/signin?next=/account/security"))
        .await
        .unwrap();
    let security = url::Url::parse(&format!("{base}/account/security")).unwrap();
    type_sign_in(c, user, &security).await;
    press(c, "form[action='/account/totp'] button").await;
    let secret = c
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/account/totp/confirm'] #code"))
        .await
        .unwrap()
        .send_keys(&crate::identity::totp_now(&secret))
        .await
        .unwrap();
    press(
        c,
        "form[action='/account/totp/confirm'] button[type=submit]",
    )
    .await;
    assert!(
        c.find(Locator::Id("recovery-codes")).await.is_ok(),
        "the authenticator app was not set up for {user}: {:?}",
        error_summary(c).await
    );
    secret
}

/// On the step-up page a protected action led to: types the authenticator's next code, and
/// is sent back to where the action was.
async fn step_up_here(c: &Client, secret: &str) {
    let here = c.current_url().await.unwrap();
    assert_eq!(here.path(), "/signin/step-up", "{here}");
    assert!(
        here.query()
            .unwrap_or_default()
            .contains("need=substantial"),
        "{here}"
    );
    c.find(Locator::Id("code"))
        .await
        .unwrap()
        .send_keys(&crate::identity::totp_ahead(secret, 1))
        .await
        .unwrap();
    press(c, "form[action='/signin/step-up'] button[type=submit]").await;
    assert_ne!(
        path_of(c).await,
        "/signin/step-up",
        "the code was refused: {:?}",
        error_summary(c).await
    );
}

/// Opens the catalogue, follows the link to `offering` and presses "Start now", which asks
/// a person signed in with a password alone to step up to level substantial first; returns
/// the first step's address.
async fn start_application(c: &Client, base: &str, secret: &str, offering: &str) -> String {
    c.goto(&format!("{base}/services")).await.unwrap();
    press(c, &format!("a[href='/services/{offering}']")).await;
    assert_eq!(path_of(c).await, format!("/services/{offering}"));
    let start = format!("form[action='/services/{offering}/apply'] button[type=submit]");
    press(c, &start).await;
    step_up_here(c, secret).await;
    assert_eq!(path_of(c).await, format!("/services/{offering}"));
    press(c, &start).await;
    let first = path_of(c).await;
    assert!(
        first.starts_with("/applications/") && first.contains("/steps/"),
        "{first}"
    );
    first
}

/// Types a date into a date field. How its parts are typed depends on the browser's locale,
/// so each order is tried until the field holds the date.
async fn type_date(el: &Element, iso: &str) {
    let (y, m, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    for keys in [
        format!("{m}{d}{y}"),
        format!("{d}{m}{y}"),
        format!("{y}{m}{d}"),
    ] {
        el.clear().await.unwrap();
        el.send_keys(&keys).await.unwrap();
        if el.prop("value").await.unwrap().as_deref() == Some(iso) {
            return;
        }
    }
    panic!("cannot type {iso} into a date field");
}

/// Answers every question of each step page, as a careful applicant would, until the check
/// page: keeps what the registers filled in, types `answers` (by question) or a plain
/// answer of the field's kind, chooses `answers`' option or a list's first, and attaches
/// `upload` to every file field. Returns the addresses of the steps walked.
async fn fill_steps(c: &Client, upload: &std::path::Path, answers: &[(&str, &str)]) -> Vec<String> {
    let mut walked = Vec::new();
    for _ in 0..10 {
        let here = c.current_url().await.unwrap();
        if here.path().ends_with("/check") {
            return walked;
        }
        assert!(here.path().contains("/steps/"), "{here}");
        walked.push(here.path().to_string());
        let form = "form[enctype='multipart/form-data']";
        let fields = c
            .find_all(Locator::Css(&format!(
                "{form} input:not([type=hidden]), {form} select, {form} textarea"
            )))
            .await
            .unwrap();
        for f in fields {
            let name = f.attr("name").await.unwrap().unwrap_or_default();
            let tag = f.tag_name().await.unwrap();
            let kind = f.attr("type").await.unwrap().unwrap_or_default();
            let numeric = f.attr("inputmode").await.unwrap().as_deref() == Some("numeric");
            let value = f.prop("value").await.unwrap().unwrap_or_default();
            let given = answers.iter().find(|(q, _)| *q == name).map(|(_, a)| *a);
            match (tag.as_str(), kind.as_str()) {
                ("select", _) => match given {
                    Some(v) => f.select_by_value(v).await.unwrap(),
                    None if value.is_empty() => f
                        .select_by_index(1)
                        .await
                        .unwrap_or_else(|e| panic!("no choice offered for {name}: {e}")),
                    None => {}
                },
                (_, "file") => f.send_keys(upload.to_str().unwrap()).await.unwrap(),
                (_, "date") if value.is_empty() => {
                    type_date(&f, given.unwrap_or("1988-04-12")).await
                }
                _ if value.is_empty() => {
                    let plain = if numeric { "1" } else { "Test answer" };
                    f.send_keys(given.unwrap_or(plain)).await.unwrap()
                }
                _ => {}
            }
        }
        press(c, "button[name=go][value=next]").await;
        let next = c.current_url().await.unwrap();
        assert_ne!(
            next,
            here,
            "the step was not accepted: {:?}",
            error_summary(c).await
        );
    }
    panic!("the form did not end");
}

/// On the check page: ticks the declaration and sends. Returns the application's id, from
/// the page it leads to.
async fn declare_and_send(c: &Client) -> String {
    assert!(path_of(c).await.ends_with("/check"));
    c.find(Locator::Css("input[name=declare]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    press(c, "form[action$='/check'] button[type=submit]").await;
    let at = c.current_url().await.unwrap();
    assert_eq!(
        at.query(),
        Some("sent"),
        "{at}: {:?}",
        error_summary(c).await
    );
    at.path().trim_start_matches("/applications/").to_string()
}

/// On an application's page: its reference, the first thing its summary lists.
async fn reference_shown(c: &Client) -> String {
    c.find(Locator::Css("dl.summary dd"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The states of an application's steps, as its page shows them to the applicant.
async fn step_states(c: &Client, base: &str, id: &str) -> Vec<String> {
    c.goto(&format!("{base}/applications/{id}")).await.unwrap();
    let mut states = Vec::new();
    for cell in c.find_all(Locator::Css("td[data-state]")).await.unwrap() {
        states.push(cell.attr("data-state").await.unwrap().unwrap());
    }
    states
}

/// The state of the case whose page the console shows.
async fn case_state(c: &Client) -> String {
    c.find(Locator::Id("case-state"))
        .await
        .unwrap()
        .attr("data-state")
        .await
        .unwrap()
        .unwrap()
}

/// A caseworker opens the console, finds the application's case by its reference and opens
/// it. Returns the case page's address.
/// Opens the console, stepping up to level substantial when it asks (what staff read there
/// is people's data); says whether it had to.
async fn open_console(c: &Client, base: &str, secret: &str) -> bool {
    c.goto(&format!("{base}/console")).await.unwrap();
    if path_of(c).await != "/signin/step-up" {
        return false;
    }
    step_up_here(c, secret).await;
    assert_eq!(path_of(c).await, "/console");
    true
}

/// Opens the case of the application `reference` from the console's queue; its path, and
/// whether the console asked to step up first.
async fn open_case(c: &Client, base: &str, reference: &str, secret: &str) -> (String, bool) {
    let stepped_up = open_console(c, base, secret).await;
    let link = match c.find(Locator::LinkText(reference)).await {
        Ok(l) => l,
        Err(_) => panic!(
            "{reference} is not in the queue:\n{}",
            c.find(Locator::Css("main"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        ),
    };
    click_and_load(c, link).await;
    let case = path_of(c).await;
    assert!(case.starts_with("/console/cases/"), "{case}");
    (case, stepped_up)
}

/// On a case's page: types `reason` and presses `action`; when the console asks for level
/// substantial first, steps up and does it again. Ends on the case's page; says whether it
/// had to step up.
async fn act_on_case(c: &Client, secret: &str, action: &str, reason: &str) -> bool {
    let case = path_of(c).await;
    let mut stepped_up = false;
    for _ in 0..2 {
        if !reason.is_empty() {
            c.find(Locator::Id("reason"))
                .await
                .unwrap()
                .send_keys(reason)
                .await
                .unwrap();
        }
        press(c, &format!("button[name=action][value={action}]")).await;
        if path_of(c).await != "/signin/step-up" {
            break;
        }
        step_up_here(c, secret).await;
        stepped_up = true;
        assert_eq!(path_of(c).await, case);
    }
    assert_eq!(path_of(c).await, case);
    stepped_up
}

/// The demo person's national ID for a role of the demo country's stories.
async fn demo_person(app: &TestApp, role: &str) -> String {
    civitas_registry::demo_people(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.role == role)
        .unwrap_or_else(|| panic!("no demo person {role}"))
        .national_id
}

fn upload_file() -> std::path::PathBuf {
    let path = scratch("upload").join("proof.pdf");
    std::fs::write(&path, PDF).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_events_walked_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let base = app.base.as_str();
    let upload = upload_file();
    let c = &browser.client;

    // The Employment Gold Card: a foreign professional applies once, for three agencies.
    let pro = demo_person(&app, "foreign_professional").await;
    let secret = sign_in_with_authenticator(c, base, &pro).await;
    start_application(c, base, &secret, "gold-card").await;
    let answers = [
        ("applicant.name", "SMITH, Jane"),
        ("applicant.passport_no", "X12345678"),
        ("applicant.nationality", "United Kingdom"),
        ("applicant.birth_date", "1988-04-12"),
        ("work.field", "digital"),
        ("work.employer", "Example Technology Ltd."),
        ("visa.overseas_address", "10 Example Road, London"),
        ("residence.address_tw", "臺北市信義區市府路1號"),
        ("residence.phone", "0912345678"),
        ("residence.reentry", "yes"),
    ];
    let steps = fill_steps(c, &upload, &answers).await;
    let step_names: Vec<&str> = steps
        .iter()
        .map(|s| s.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        step_names,
        [
            "wda-work-permit.applicant",
            "wda-work-permit.work",
            "boca-resident-visa.visa",
            "nia-resident-certificate.residence"
        ],
        "the questions the three services share are asked once"
    );
    // The check page shows the answers given, the files by their names.
    let check = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "SMITH, Jane",
        "X12345678",
        "1988-04-12",
        "proof.pdf",
        "臺北市信義區市府路1號",
    ] {
        assert!(
            check.contains(shown),
            "{shown} not on the check page:\n{check}"
        );
    }
    let id = declare_and_send(c).await;
    let reference = reference_shown(c).await;
    assert_eq!(
        step_states(c, base, &id).await,
        ["submitted", "submitted", "waiting"]
    );

    // The immigration agency's step waits for the other two: not in its queue yet.
    let nia = browser.another().await;
    let nia_secret = sign_in_with_authenticator(&nia, base, "caseworker.1@nia.gov.example").await;
    assert!(
        open_console(&nia, base, &nia_secret).await,
        "the console needs level substantial"
    );
    assert!(!nia.source().await.unwrap().contains(&reference));
    // The labour agency and the consular affairs bureau approve, each in its own console.
    for staff in [
        "caseworker.1@wda.gov.example",
        "caseworker.1@boca.gov.example",
    ] {
        let s = browser.another().await;
        let secret = sign_in_with_authenticator(&s, base, staff).await;
        let (_, stepped_up) = open_case(&s, base, &reference, &secret).await;
        assert!(stepped_up, "the console needs level substantial");
        assert_eq!(case_state(&s).await, "submitted");
        act_on_case(&s, &secret, "approve", "").await;
        assert_eq!(
            case_state(&s).await,
            "approved",
            "{staff}: {:?}",
            error_summary(&s).await
        );
        s.close().await.unwrap();
    }
    // Now the immigration agency finds it, and approves.
    open_case(&nia, base, &reference, &nia_secret).await;
    act_on_case(&nia, &nia_secret, "approve", "").await;
    assert_eq!(case_state(&nia).await, "approved");
    nia.close().await.unwrap();
    assert_eq!(
        step_states(c, base, &id).await,
        ["approved", "approved", "approved"]
    );

    // Renewing a driving licence: the licence is a choice from the vehicle register.
    sign_out(c, base).await;
    let driver = demo_person(&app, "licence_expiring_next_month").await;
    let secret = sign_in_with_authenticator(c, base, &driver).await;
    start_application(c, base, &secret, "licence-renewal").await;
    let choices = c
        .find_all(Locator::Css("#licence-which option"))
        .await
        .unwrap();
    assert!(choices.len() >= 2, "no licence offered from the register");
    let licence = choices[1].attr("value").await.unwrap().unwrap();
    assert!(!licence.is_empty());
    fill_steps(c, &upload, &[("licence.delivery", "post")]).await;
    let check = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        check.contains(&licence),
        "{licence} not on the check page:\n{check}"
    );
    let id = declare_and_send(c).await;
    let reference = reference_shown(c).await;

    // The motor vehicles office asks for more, with its reason.
    let thb = browser.another().await;
    let thb_secret = sign_in_with_authenticator(&thb, base, "caseworker.1@thb.gov.example").await;
    let (case, _) = open_case(&thb, base, &reference, &thb_secret).await;
    let asked = "請上傳最近兩年內拍攝的白底照片";
    act_on_case(&thb, &thb_secret, "request_information", asked).await;
    assert_eq!(
        case_state(&thb).await,
        "more_information_needed",
        "{:?}",
        error_summary(&thb).await
    );

    // The driver reads the request, goes to the check page and sends again.
    assert_eq!(step_states(c, base, &id).await, ["more_information_needed"]);
    let mine = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(mine.contains(asked), "{mine}");
    press(c, &format!("a[href='/applications/{id}/check']")).await;
    assert_eq!(path_of(c).await, format!("/applications/{id}/check"));
    assert_eq!(declare_and_send(c).await, id);
    assert_eq!(step_states(c, base, &id).await, ["submitted"]);

    // And the office approves.
    thb.goto(&format!("{base}{case}")).await.unwrap();
    assert_eq!(case_state(&thb).await, "submitted");
    assert!(
        !act_on_case(&thb, &thb_secret, "approve", "").await,
        "once at level substantial, no more step-up"
    );
    assert_eq!(case_state(&thb).await, "approved");
    thb.close().await.unwrap();
    assert_eq!(step_states(c, base, &id).await, ["approved"]);
    browser.close().await;
    app.stop().await;
}

/// Runs axe-core on the page shown, as it is (a page with errors cannot be reached by
/// address), collecting what it finds under `what`.
async fn axe_here(browser: &Browser, what: &str, failures: &mut Vec<String>) {
    for v in browser.axe_violations().await {
        failures.push(format!("{what}: {v}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_console_pages_pass_axe_in_both_languages_at_desktop_and_phone_widths() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Engine::Sqlite).await.unwrap();
    let base = app.base.as_str();
    let upload = upload_file();
    let c = &browser.client;
    let mut failures = Vec::new();

    // A driver's application, left at its step and at its check page, each also with the
    // errors it comes back with.
    let driver = demo_person(&app, "licence_expiring_next_month").await;
    let secret = sign_in_with_authenticator(c, base, &driver).await;
    let step = start_application(c, base, &secret, "licence-renewal").await;
    press(c, "button[name=go][value=next]").await;
    assert!(
        error_summary(c).await.is_some(),
        "nothing chosen, nothing attached"
    );
    axe_here(&browser, "a step with errors", &mut failures).await;
    fill_steps(c, &upload, &[]).await;
    let check = path_of(c).await;
    press(c, "form[action$='/check'] button[type=submit]").await;
    assert!(error_summary(c).await.is_some(), "no declaration ticked");
    axe_here(&browser, "the check page with errors", &mut failures).await;
    let pages = [
        "/services",
        "/services/baby-born",
        "/services/thb-licence-renewal",
        step.as_str(),
        check.as_str(),
    ];
    check_pages(&browser, base, &pages, &mut failures).await;
    // Sent: the list of applications and the application's timeline.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}{check}")).await.unwrap();
    let id = declare_and_send(c).await;
    let reference = reference_shown(c).await;
    let application = format!("/applications/{id}");
    check_pages(
        &browser,
        base,
        &["/applications", application.as_str()],
        &mut failures,
    )
    .await;

    // The motor vehicles office's console: the queue, and the case, also with the error a
    // refusal without its reason comes back with.
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/account")).await.unwrap();
    sign_out(c, base).await;
    let secret = sign_in_with_authenticator(c, base, "caseworker.1@thb.gov.example").await;
    let (case, _) = open_case(c, base, &reference, &secret).await;
    act_on_case(c, &secret, "reject", "").await;
    assert!(
        error_summary(c).await.is_some(),
        "a refusal needs its reason"
    );
    axe_here(&browser, "a case with errors", &mut failures).await;
    check_pages(&browser, base, &["/console", case.as_str()], &mut failures).await;
    browser.close().await;
    app.stop().await;
    assert!(
        failures.is_empty(),
        "accessibility or layout failures:\n{}",
        failures.join("\n")
    );
}
