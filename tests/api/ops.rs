//! Operability: health, readiness, metrics, request ids, CORS, rate limiting, shutdown.

use serde_json::Value;
use sqlx::PgPool;

use crate::app::{spawn_app, unique_user};
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
