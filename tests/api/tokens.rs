use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{spawn_app, spawn_with, unique_user, Options};
use crate::idp::{Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const TOKENS: &str = "/api/auth/manager/offline-tokens";

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_owner_sees_a_tokens_status_and_nothing_secret(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let id = app.activate(&bearer, &user, "task-7").await;

    let (status, body) = json(app.get_as(&bearer, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(status, 200);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "consecutiveFailures",
            "createdAt",
            "expiresAt",
            "lastError",
            "lastRefreshAt",
            "lastUsedAt",
            "persistentTokenId",
            "refreshExpiresAt",
            "status",
            "statusReason",
            "taskId",
            "updatedAt"
        ]
    );
    // Grant health: just consented, nothing failed, the provider's idle limit ahead.
    assert_eq!(body["consecutiveFailures"], 0);
    assert!(body["lastError"].is_null());
    assert!(body["lastRefreshAt"].as_str().unwrap().contains('T'));
    assert!(body["refreshExpiresAt"].as_str().unwrap() > body["lastRefreshAt"].as_str().unwrap());
    assert_eq!(body["status"], "active");
    assert_eq!(body["taskId"], "task-7");
    assert_eq!(body["persistentTokenId"], id.to_string());
    assert!(body["lastUsedAt"].is_null());

    let stranger = Idp::shared().user_token(&unique_user("mallory")).await;
    let (status, body) = json(app.get_as(&stranger, &format!("{TOKENS}/{id}")).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    let (status, body) = json(app.get_as(&bearer, &format!("{TOKENS}/not-a-uuid")).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(app.get(&format!("{TOKENS}/{id}")).await.status(), 401);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn listing_shows_only_the_callers_rows_with_filters_and_pages(pool: PgPool) {
    let app = spawn_app(pool).await;
    let idp = Idp::shared();
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let active = app.activate(&bearer, &user, "a").await;
    let mut pending = Vec::new();
    for task in ["a", "b", "a"] {
        pending.push(app.consent(&bearer, task).await.id);
    }
    let other = unique_user("bob");
    app.consent(&idp.user_token(&other).await, "a").await;

    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["persistentTokenId"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = json(app.get_as(&bearer, TOKENS).await).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all).len(), 4, "bob's row is not listed");
    assert!(all.get("nextOffset").is_none());

    let (_, task_a) = json(app.get_as(&bearer, &format!("{TOKENS}?taskId=a")).await).await;
    assert_eq!(ids(&task_a).len(), 3);
    let (_, active_a) = json(
        app.get_as(&bearer, &format!("{TOKENS}?taskId=a&status=active"))
            .await,
    )
    .await;
    assert_eq!(ids(&active_a), [active.to_string()]);

    let (_, first) = json(app.get_as(&bearer, &format!("{TOKENS}?limit=3")).await).await;
    assert_eq!(ids(&first).len(), 3);
    assert_eq!(first["nextOffset"], 3);
    let (_, second) = json(
        app.get_as(&bearer, &format!("{TOKENS}?limit=3&offset=3"))
            .await,
    )
    .await;
    assert_eq!(ids(&second).len(), 1);
    assert!(second.get("nextOffset").is_none());
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    seen.sort();
    let mut expected: Vec<String> = pending.iter().map(Uuid::to_string).collect();
    expected.push(active.to_string());
    expected.sort();
    assert_eq!(seen, expected);

    for bad in [
        "status=gone",
        "limit=0",
        "limit=201",
        "limit=x",
        "colour=red",
    ] {
        let (status, body) = json(app.get_as(&bearer, &format!("{TOKENS}?{bad}")).await).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], "invalid_request", "{bad}");
    }
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
