use serde_json::{json, Value};
use sqlx::PgPool;
use token_broker::crypto::sha256;
use url::Url;

use crate::app::{spawn_app, unique_user};
use crate::idp::{query_param, Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

async fn row_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from token_vault")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn consent_stores_a_pending_row_and_returns_a_pkce_consent_url(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;

    let response = app
        .request_consent(&bearer, json!({ "taskId": "jupyter-task-123" }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Visit this URL to grant offline_access consent, then the token will be automatically stored"
    );
    let state = body["stateToken"].as_str().unwrap();
    assert!(state.len() >= 43, "state carries at least 256 bits");

    let url = Url::parse(body["consentUrl"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/protocol/openid-connect/auth", app.idp_issuer)
    );
    let param = |name| query_param(&url, name).unwrap_or_default();
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), BROKER_CLIENT);
    assert_eq!(param("scope"), "openid offline_access");
    assert_eq!(param("state"), state);
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(param("code_challenge").len(), 43);
    assert!(param("nonce").len() >= 43);
    assert_eq!(
        param("redirect_uri"),
        "http://broker.test/api/auth/manager/offline-callback"
    );

    let id = body["persistentTokenId"].as_str().unwrap().parse().unwrap();
    let row = app.row(id).await;
    assert_eq!(row.status, "pending");
    assert_eq!(row.user_id, user);
    assert_eq!(row.task_id, "jupyter-task-123");
    assert_eq!(row.state_token, None, "the raw state is never stored");
    assert_eq!(row.state_hash, Some(sha256(state.as_bytes())));
    assert!(row.pkce_verifier.is_some());
    assert_eq!(row.encrypted_token, None);
    let whole_row: String =
        sqlx::query_scalar("select row_to_json(t)::text from token_vault t where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!whole_row.contains(state));
    assert!(!whole_row.contains(&param("nonce")));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn consent_without_a_bearer_token_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .post(
            "/api/auth/manager/offline-consent",
            None,
            json!({ "taskId": "t" }),
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(row_count(&app.pool).await, 0);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn redirect_uri_outside_the_allowed_origins_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let bearer = Idp::shared().user_token(&unique_user("alice")).await;
    for uri in [
        "https://evil.test/phish",
        "http://frontend.test.evil.test/x",
        "https://frontend.test/x",
        "javascript:alert(1)",
        "//evil.test/x",
        "http://user@frontend.test/x",
        "not a url",
    ] {
        let response = app
            .request_consent(&bearer, json!({ "taskId": "t", "redirectUri": uri }))
            .await;
        assert_eq!(response.status(), 400, "{uri}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_redirect_uri", "{uri}");
    }
    assert_eq!(row_count(&app.pool).await, 0);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn malformed_consent_requests_get_clear_errors_and_store_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    let bearer = Idp::shared().user_token(&unique_user("alice")).await;
    let url = format!("{}/api/auth/manager/offline-consent", app.base);
    let send = |body: String, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&bearer)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        ("{not json", "application/json", 400, "invalid_json"),
        (
            r#"{"taskId": "t"}"#,
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            r#"{"taskID": "t"}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "t", "extra": 1}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": 42}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "   "}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "a\u0000b"}"#,
            "application/json",
            400,
            "invalid_request",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = send(body.to_owned(), content_type).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{body}");
        assert!(answer["message"].as_str().unwrap().len() > 5);
    }
    let long_task = format!(r#"{{"taskId": "{}"}}"#, "x".repeat(201));
    let response = send(long_task, "application/json").await.unwrap();
    assert_eq!(response.status(), 400);

    let oversized = format!(r#"{{"taskId": "{}"}}"#, "x".repeat(20_000));
    let response = send(oversized, "application/json").await.unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "payload_too_large");

    assert_eq!(row_count(&app.pool).await, 0);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn unknown_routes_answer_json_404(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/api/auth/manager/nothing-here").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}
