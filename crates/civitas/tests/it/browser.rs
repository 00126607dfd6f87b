//! Pages in a real browser: headless Chromium driven over WebDriver, with axe-core checking
//! accessibility, at desktop and 360 px phone widths.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{Engine, TestApp, require_all, scratch};

/// A chromedriver process and a browser session in it, closed on drop.
struct Browser {
    client: Client,
    driver: Child,
    axe: String,
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
        })
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
