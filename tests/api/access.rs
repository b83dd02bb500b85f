use serde_json::Value;
use sqlx::PgPool;

use crate::app::{spawn_app, spawn_with, unique_user, Options};
use crate::idp::{Idp, BROKER_CLIENT, ROTATING_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Claims of a JWT, read without verification (the provider's own tokens, for assertions).
pub(crate) fn claims(jwt: &str) -> Value {
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
