use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{spawn_app, spawn_with, unique_user, Options, TestApp};
use crate::idp::{Idp, BROKER_CLIENT, ROTATING_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Claims of a JWT, read without verification (the provider's own tokens, for assertions).
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_active_token_mints_a_fresh_access_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let sealed_before = app.row(id).await.encrypted_token;

    let response = app.access_token(&bearer, &id.to_string()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "bearer");
    let expires_in = body["expiresIn"].as_u64().unwrap();
    assert!((290..=300).contains(&expires_in), "{expires_in}");
    assert!(body["expiresAt"].as_str().unwrap().contains('T'));
    assert_eq!(body["scope"], "openid offline_access");
    let minted = claims(body["accessToken"].as_str().unwrap());
    assert_eq!(minted["sub"], user.as_str());
    assert_eq!(minted["azp"], BROKER_CLIENT);

    let events = Idp::shared().events_for(&user, BROKER_CLIENT).await;
    assert_eq!(count(&events, "grant.refresh_token"), 1, "{events:?}");
    let row = app.row(id).await;
    assert!(row.used, "last_used_at is recorded");
    assert_eq!(
        row.encrypted_token, sealed_before,
        "no rotation, no rewrite"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_rotated_refresh_token_is_stored_and_used_next_time(pool: PgPool) {
    let idp = Idp::shared();
    // A margin as long as the provider's token lifetime: every call refreshes.
    let app = spawn_with(
        pool,
        Options {
            client_id: ROTATING_CLIENT,
            extra: vec![("ACCESS_TOKEN_CACHE_MARGIN_SECS", "300".into())],
            ..Options::new(idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    let mut previous = app.stored_refresh_token(id).await;
    for _ in 0..3 {
        let response = app.access_token(&bearer, &id.to_string()).await;
        assert_eq!(response.status(), 200);
        let current = app.stored_refresh_token(id).await;
        assert_ne!(current, previous, "the rotated token replaced the old one");
        assert!(!idp.is_active(ROTATING_CLIENT, &previous).await);
        assert!(idp.is_active(ROTATING_CLIENT, &current).await);
        previous = current;
    }
    assert_eq!(app.row(id).await.status, "active");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn another_users_token_id_looks_exactly_like_a_missing_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = unique_user("alice");
    let alice_bearer = Idp::shared().user_token(&alice).await;
    let id = app.activate(&alice_bearer, &alice, "t").await;
    let mallory_bearer = Idp::shared().user_token(&unique_user("mallory")).await;

    let (status, theirs) = error_of(app.access_token(&mallory_bearer, &id.to_string()).await).await;
    assert_eq!(status, 404);
    let (status, missing) = error_of(
        app.access_token(&mallory_bearer, &Uuid::new_v4().to_string())
            .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(theirs, missing);
    assert_eq!(theirs["error"], "token_not_found");
    assert!(!app.row(id).await.used, "the row was not touched");

    let (status, body) = error_of(app.access_token(&mallory_bearer, "not-a-uuid").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_pending_token_is_a_conflict(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;

    let (status, body) = error_of(app.access_token(&bearer, &consent.id.to_string()).await).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "token_pending");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_grant_revoked_at_the_provider_fails_the_row_for_good(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    idp.revoke(BROKER_CLIENT, &app.stored_refresh_token(id).await)
        .await;

    let (status, body) = error_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 410);
    assert_eq!(body["error"], "token_failed");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("revoked_by_provider"));
    let row = app.row(id).await;
    assert_eq!(row.status, "failed");
    assert_eq!(row.status_reason.as_deref(), Some("revoked_by_provider"));

    // A failed row is answered from the vault without asking the provider again.
    let before = idp.events_for(&user, BROKER_CLIENT).await.len();
    let (status, _) = error_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 410);
    assert_eq!(idp.events_for(&user, BROKER_CLIENT).await.len(), before);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_unreachable_provider_is_503_and_leaves_the_row_alone(pool: PgPool) {
    let mut idp = Idp::start(&[]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let before = app.row(id).await;

    idp.kill();
    let (status, body) = error_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "provider_unavailable");
    let after = app.row(id).await;
    assert_eq!(after.status, "active");
    assert_eq!(after.encrypted_token, before.encrypted_token);
    assert!(!after.used);
}

async fn corrupt(app: &TestApp, sql: &str, id: Uuid) {
    sqlx::query(sql).bind(id).execute(&app.pool).await.unwrap();
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn tampered_ciphertext_is_an_internal_error_not_plaintext(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    corrupt(
        &app,
        "update token_vault set encrypted_token = set_byte(encrypted_token, 0, \
         get_byte(encrypted_token, 0) # 1) where id = $1",
        id,
    )
    .await;

    let (status, body) = error_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        serde_json::json!({"error": "internal_error", "message": "Internal server error"})
    );
    assert_eq!(
        app.row(id).await.status,
        "active",
        "an operator can still repair it"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_row_moved_to_another_user_does_not_decrypt(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let alice = unique_user("alice");
    let id = app
        .activate(&idp.user_token(&alice).await, &alice, "t")
        .await;
    // Someone with write access to the table hands Alice's token to Mallory.
    let mallory = unique_user("mallory");
    sqlx::query("update token_vault set user_id = $2 where id = $1")
        .bind(id)
        .bind(&mallory)
        .execute(&app.pool)
        .await
        .unwrap();

    let mallory_bearer = idp.user_token(&mallory).await;
    let (status, _) = error_of(app.access_token(&mallory_bearer, &id.to_string()).await).await;
    assert_eq!(status, 500, "the ciphertext is bound to Alice");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_broker_with_the_wrong_key_cannot_open_tokens(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool.clone()).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    let same_id_other_bytes = "test-1:ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=";
    let unknown_id = "test-2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    for keys in [same_id_other_bytes, unknown_id] {
        let impostor = spawn_with(
            pool.clone(),
            Options {
                keys,
                ..Options::new(idp)
            },
        )
        .await;
        let (status, body) = error_of(impostor.access_token(&bearer, &id.to_string()).await).await;
        assert_eq!(status, 500, "{keys}");
        assert_eq!(body["error"], "internal_error");
    }
    assert_eq!(app.row(id).await.status, "active");
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200,
        "the right key still works"
    );
}
