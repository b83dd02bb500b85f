use serde_json::Value;
use sqlx::PgPool;

use crate::app::{spawn_app, spawn_with, unique_user, Options};
use crate::idp::{Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const TOKENS: &str = "/api/auth/manager/offline-tokens";

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn revoking_ends_the_grant_at_the_provider_and_is_idempotent(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let offline_token = app.stored_refresh_token(id).await;
    assert!(idp.is_active(BROKER_CLIENT, &offline_token).await);

    let stranger = idp.user_token(&unique_user("mallory")).await;
    let (status, _) = json(app.delete_as(&stranger, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(status, 404);
    assert_eq!(app.row(id).await.status, "active");

    let (status, body) = json(app.delete_as(&bearer, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["statusReason"], "revoked_by_user");
    assert_eq!(body["providerRevocation"], "revoked");
    assert!(!idp.is_active(BROKER_CLIENT, &offline_token).await);
    let row = app.row(id).await;
    assert_eq!(row.encrypted_token, None, "our copy is wiped");

    let (status, body) = json(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_revoked"))
    );

    let (status, body) = json(app.delete_as(&bearer, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["providerRevocation"], "not_needed");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn provider_revocation_can_be_turned_off(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("PROVIDER_REVOCATION", "none".into())],
            ..Options::new(idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let offline_token = app.stored_refresh_token(id).await;

    let (status, body) = json(app.delete_as(&bearer, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["providerRevocation"], "disabled");
    assert!(idp.is_active(BROKER_CLIENT, &offline_token).await);
    assert_eq!(app.row(id).await.status, "revoked");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_pending_consent_can_be_revoked_and_its_link_dies(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;
    let back = app.sign_in(&consent.url, &user, true).await;

    let (status, body) = json(
        app.delete_as(&bearer, &format!("{TOKENS}/{}", consent.id))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["providerRevocation"], "not_needed");
    assert_eq!(app.deliver_callback(&back).await.status(), 400);
    assert_eq!(app.row(consent.id).await.status, "revoked");
}
