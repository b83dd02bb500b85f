//! Operability: health, readiness, metrics, request ids, CORS, rate limiting, shutdown.

use serde_json::Value;
use sqlx::PgPool;

use crate::app::{spawn_app, spawn_with, unique_user, Options, FRONTEND_ORIGIN};
use crate::idp::{Idp, BROKER_CLIENT};
use crate::process::{broker_env, BrokerProcess};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[sqlx::test(migrator = "MIGRATIONS")]
async fn health_and_readiness_follow_the_database(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["database"],
        "ok"
    );

    pool.close().await;
    let unready = app.get("/readyz").await;
    assert_eq!(unready.status(), 503);
    let body: Value = unready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "unreachable");
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the process is still up"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn metrics_count_requests_refreshes_cache_and_rows(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    for _ in 0..2 {
        assert_eq!(
            app.access_token(&bearer, &id.to_string()).await.status(),
            200
        );
    }
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for expected in [
        r#"token_broker_http_requests_total{route="/api/auth/manager/access-token",method="POST",status="200"}"#,
        r#"token_broker_http_request_duration_seconds_bucket{route="/api/auth/manager/access-token",le="0.005"}"#,
        r#"token_broker_provider_refreshes_total{outcome="success"}"#,
        r#"token_broker_access_token_cache_total{result="hit"}"#,
        r#"token_broker_access_token_cache_total{result="miss"}"#,
        r#"token_broker_vault_rows{status="active"} 1"#,
        r#"token_broker_vault_rows{status="pending"} 0"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn every_response_carries_a_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    let fresh = app.get("/healthz").await;
    let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    let kept = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-123");
    let error = app.get("/nowhere").await;
    assert!(error.headers().contains_key("x-request-id"));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn cors_admits_only_the_configured_origins(pool: PgPool) {
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("CORS_ALLOWED_ORIGINS", FRONTEND_ORIGIN.into())],
            ..Options::new(Idp::shared())
        },
    )
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/auth/manager/access-token", app.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight(FRONTEND_ORIGIN).await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        FRONTEND_ORIGIN
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST") && methods.contains("DELETE"));
    let refused = preflight("https://evil.test").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_client_over_its_rate_gets_429_with_retry_after(pool: PgPool) {
    let app = spawn_with(
        pool,
        Options {
            extra: vec![
                ("RATE_LIMIT_PER_SECOND", "1".into()),
                ("RATE_LIMIT_BURST", "2".into()),
            ],
            ..Options::new(Idp::shared())
        },
    )
    .await;
    let body = serde_json::json!({ "persistentTokenId": uuid::Uuid::new_v4() });
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..3 {
        let response = app
            .post("/api/auth/manager/access-token", None, body.clone())
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 429],
        "two within the burst, then limited"
    );
    let limited = limited.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let error: Value = limited.json().await.unwrap();
    assert_eq!(error["error"], "rate_limited");
    // Routes outside the three main ones are not limited.
    for _ in 0..5 {
        assert_eq!(app.get("/healthz").await.status(), 200);
    }
}

#[tokio::test]
async fn sigterm_stops_the_broker_cleanly() {
    let idp = Idp::shared();
    let mut broker = BrokerProcess::start(&broker_env(idp, BROKER_CLIENT, "sqlite::memory:"));
    assert_eq!(
        reqwest::get(format!("{}/healthz", broker.base))
            .await
            .unwrap()
            .status(),
        200
    );
    let status = broker.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_api_describes_itself_in_openapi(pool: PgPool) {
    let app = spawn_app(pool).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/auth/manager/offline-consent", "post"),
        ("/api/auth/manager/offline-callback", "get"),
        ("/api/auth/manager/access-token", "post"),
        ("/api/auth/manager/offline-tokens", "get"),
        ("/api/auth/manager/offline-tokens/{id}", "delete"),
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
    let page = app.get("/api/docs").await.text().await.unwrap();
    assert!(page.contains("/api/openapi.json"));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_task_filter_with_control_characters_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let bearer = Idp::shared().user_token(&unique_user("alice")).await;
    let response = app
        .get_as(&bearer, "/api/auth/manager/offline-tokens?taskId=a%00b")
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let idp = Idp::shared();
    let mut env = broker_env(idp, BROKER_CLIENT, "sqlite::memory:");
    env.push(("METRICS_ADDR", format!("127.0.0.1:{port}")));
    let broker = BrokerProcess::start(&env);
    let mut scraped = None;
    for _ in 0..50 {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            scraped = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let scraped = scraped.expect("the metrics listener answers");
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("token_broker_vault_rows"));
    let main = reqwest::get(format!("{}/metrics", broker.base))
        .await
        .unwrap();
    assert_eq!(main.status(), 404, "not on the API address");
}
