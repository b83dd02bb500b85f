//! Operational rules: request ids, CORS, the rate limit, the API description, health.

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::harness::{Harness, FRONTEND_ORIGIN};

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let h = Harness::new().await;
    let fresh = h.get("/healthz", None).await;
    let id = fresh.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let kept = h
        .send(
            Request::get("/healthz")
                .header("x-request-id", "trace-me-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(kept.headers["x-request-id"], "trace-me-123");
    let error = h.get("/nowhere", None).await;
    assert!(error.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn cors_admits_only_the_configured_origins() {
    let h = Harness::with(&[("CORS_ALLOWED_ORIGINS", FRONTEND_ORIGIN)]).await;
    let preflight = |origin: &'static str| {
        h.send(
            Request::options("/api/auth/manager/access-token")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .body(Body::empty())
                .unwrap(),
        )
    };
    let allowed = preflight(FRONTEND_ORIGIN).await;
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        FRONTEND_ORIGIN
    );
    let methods = allowed.headers["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST") && methods.contains("DELETE"));
    let refused = preflight("https://evil.test").await;
    assert!(!refused.headers.contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let h = Harness::with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")]).await;
    let body = json!({ "persistentTokenId": uuid::Uuid::new_v4() });
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..3 {
        let answer = h
            .post("/api/auth/manager/access-token", None, body.clone())
            .await;
        statuses.push(answer.status);
        if answer.status == 429 {
            limited = Some(answer);
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "two within the burst, then limited"
    );
    let limited = limited.unwrap();
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(limited.body["error"], "rate_limited");
    // Routes outside the three main ones are not limited.
    for _ in 0..5 {
        assert_eq!(h.get("/healthz", None).await.status, 200);
    }
}

#[tokio::test]
async fn the_api_describes_itself_in_openapi() {
    let h = Harness::new().await;
    let document = h.get("/api/openapi.json", None).await.body;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/auth/manager/offline-consent", "post"),
        ("/api/auth/manager/offline-callback", "get"),
        ("/api/auth/manager/access-token", "post"),
        ("/api/auth/manager/offline-tokens", "get"),
        ("/api/auth/manager/offline-tokens/{id}", "delete"),
        ("/api/auth/manager/offline-tokens/{id}/reconsent", "post"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path}"
        );
    }
    let consent = &document["components"]["schemas"]["ConsentRequest"];
    assert!(
        consent["properties"]["taskId"].is_object(),
        "camelCase fields"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_docs_viewer_is_served_from_the_broker_itself() {
    let h = Harness::new().await;
    let page = h.get("/api/docs/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    assert!(!page.text.contains("https://"), "no third-party assets");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let init = h.get("/api/docs/swagger-initializer.js", None).await;
    assert_eq!(init.status, 200);
    assert!(init.text.contains("/api/openapi.json"), "{}", init.text);
    assert!(
        init.text.contains(r#""validatorUrl": "none""#),
        "{}",
        init.text
    );
    let bundle = h.get("/api/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(bundle.status, 200);
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_provider() {
    let h = Harness::new().await;
    let health = h.get("/healthz", None).await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = h.get("/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["database"], "ok");
}

#[tokio::test]
async fn without_admin_role_configured_there_is_no_admin_page() {
    let h = Harness::new().await;
    assert_eq!(h.get("/admin", None).await.status, 404);
}

#[tokio::test]
async fn a_made_up_method_creates_no_metric_series() {
    let h = Harness::new().await;
    let answer = h.request("BREWCOFFEE", "/healthz", None, None).await;
    assert_eq!(answer.status, 405);
    let metrics = h.get("/metrics", None).await.text;
    assert!(!metrics.contains("BREWCOFFEE"), "{metrics}");
    assert!(
        metrics.contains("method=\"other\""),
        "counted as other: {metrics}"
    );
}

/// Behind a proxy that appends the real address, a client that forges the first
/// `X-Forwarded-For` entry anew on every call is still one client to the rate limiter.
#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_rate_limit() {
    let h = Harness::with(&[
        ("RATE_LIMIT_PER_SECOND", "2"),
        ("RATE_LIMIT_BURST", "2"),
        ("TRUSTED_PROXIES", "192.0.2.0/24"),
    ])
    .await;
    let mut limited = 0;
    for i in 0..30 {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/api/auth/manager/access-token")
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("203.0.113.{i}, 198.51.100.7"))
            .body(axum::body::Body::from("{}"))
            .unwrap();
        if h.send(request).await.status == 429 {
            limited += 1;
        }
    }
    assert!(
        limited >= 25,
        "only {limited} of 30 forged calls were limited"
    );
}

/// clients/typescript generates its types from a copy of the OpenAPI document; a change to the
/// API must refresh that copy (`UPDATE_OPENAPI=1 cargo test --test http openapi_copy`), after
/// which `npm run check-generated` there fails until the types are generated again.
#[tokio::test]
async fn the_typescript_clients_openapi_copy_is_current() {
    let h = Harness::new().await;
    let document = h.get("/api/openapi.json", None).await.body;
    let current = format!("{}\n", serde_json::to_string_pretty(&document).unwrap());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/typescript/openapi.json"
    );
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &current).unwrap();
    }
    let copy = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        copy == current,
        "clients/typescript/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test --test http \
         openapi_copy, then npm run generate in clients/typescript"
    );
}
