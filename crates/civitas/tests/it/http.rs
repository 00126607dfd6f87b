//! The HTTP surface: operational endpoints, API, OpenAPI and pages, on both engines.

use crate::on_both_engines;
use serde_json::Value;

on_both_engines! {
    async fn healthz_says_alive(app) {
        let res = app.get("/healthz").await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "alive");
        app.stop().await;
    }

    async fn readyz_reports_the_engine_and_a_current_schema(app) {
        let res = app.get("/readyz").await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        let expected = if app.config.database.is_some() { "postgres" } else { "sqlite" };
        assert_eq!(body["database"], expected);
        let schema = body["schema"].as_array().unwrap();
        assert!(schema.iter().any(|c| c["component"] == "registry"));
        assert!(schema.iter().all(|c| c["current"] == true), "{schema:?}");
        app.stop().await;
    }

    async fn metrics_count_requests_by_route_and_status_and_show_the_pool(app) {
        assert_eq!(app.get("/api/v1/agencies/NOPE").await.status(), 404);
        let text = app.get("/metrics").await.text().await.unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("http_requests_total{")
                && l.contains("route=\"/api/v1/agencies/{code}\"")
                && l.contains("status=\"404\"")),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket{"), "no latency histogram");
        assert!(text.contains("civitas_db_pool_connections{state=\"idle\"}"), "no pool gauge");
        app.stop().await;
    }

    async fn every_response_carries_a_request_id(app) {
        let res = app.get("/").await;
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        let res = app.client.get(format!("{}/healthz", app.base)).header("x-request-id", "trace-me-123").send().await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "trace-me-123");
        app.stop().await;
    }

    async fn agencies_api_lists_the_eleven_agencies(app) {
        let res = app.get("/api/v1/agencies").await;
        assert_eq!(res.status(), 200);
        let list: Vec<Value> = res.json().await.unwrap();
        assert_eq!(list.len(), 11);
        assert_eq!(list.iter().filter(|a| a["kind"] == "operator").count(), 1);
        let code = list[0]["code"].as_str().unwrap().to_string();
        let one: Value = app.get(&format!("/api/v1/agencies/{code}")).await.json().await.unwrap();
        assert_eq!(one["code"], code.as_str());
        assert!(!one["name_zh"].as_str().unwrap().is_empty());
        app.stop().await;
    }

    async fn api_errors_are_problem_json(app) {
        for path in ["/api/v1/agencies/NOPE", "/api/v1/nothing-here"] {
            let res = app.get(path).await;
            assert_eq!(res.status(), 404);
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["status"], 404);
            assert!(body["type"].as_str().unwrap().starts_with("/problems/"));
            assert!(!body["detail"].as_str().unwrap().is_empty());
        }
        app.stop().await;
    }

    async fn openapi_document_is_3_1_and_docs_are_served_locally(app) {
        let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
        for path in ["/api/v1/agencies", "/api/v1/agencies/{code}", "/api/v1/status", "/api/v1/ledger/checkpoints", "/readyz"] {
            assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
        }
        let res = app.get("/api/docs/").await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("swagger-ui"), "{html}");
        assert!(!html.contains("https://"), "the docs page must not load anything from the internet");
        app.stop().await;
    }

    async fn portal_is_in_chinese_by_default_and_english_after_switching(app) {
        let res = app.get("/").await;
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        assert!(html.contains("<html lang=\"zh-Hant-TW\">"));
        assert!(html.contains("政府服務，一站完成"));
        assert!(html.contains("href=\"#main\""), "skip link");

        let res = app.get("/lang/en?next=/agencies").await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/agencies");
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.starts_with("civitas_lang=en;"), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();

        let html = app.client.get(format!("{}/agencies", app.base)).header("cookie", &pair).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("Department of Household Registration") || html.contains("Household Registration"), "{html}");
        app.stop().await;
    }

    async fn language_switch_never_redirects_off_site(app) {
        for next in ["//evil.example/", "https://evil.example/", "/\\evil.example"] {
            let res = app.client.get(format!("{}/lang/en", app.base)).query(&[("next", next)]).send().await.unwrap();
            assert_eq!(res.headers()["location"], "/", "next={next}");
        }
        assert_eq!(app.get("/lang/fr").await.status(), 400);
        app.stop().await;
    }

    async fn agency_page_shows_its_staff_by_role(app) {
        let list: Vec<Value> = app.get("/api/v1/agencies").await.json().await.unwrap();
        let code = list.iter().find(|a| a["kind"] != "operator").unwrap()["code"].as_str().unwrap().to_string();
        let res = app.client.get(format!("{}/agencies/{code}", app.base)).header("cookie", "civitas_lang=en").send().await.unwrap();
        assert_eq!(res.status(), 200);
        let html = res.text().await.unwrap();
        for role in ["Caseworkers", "Supervisors", "Agency administrators"] {
            assert!(html.contains(role), "{role} missing");
        }
        assert_eq!(app.get("/agencies/NOPE").await.status(), 404);
        app.stop().await;
    }

    async fn unknown_pages_get_a_helpful_404_page(app) {
        let res = app.get("/no/such/page").await;
        assert_eq!(res.status(), 404);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(res.text().await.unwrap().contains("找不到這個頁面"));
        app.stop().await;
    }
}
