//! Keycloak's offline session limits, met for real in the tests' own realm
//! (`tests/keycloak/realm-limits.json`): *Offline Session Idle* 20 s, *Offline Session Max*
//! 60 s. Keycloak stamps an offline token's `exp` with the idle limit and refuses it the moment
//! that passes (`invalid_grant`, "Token is not active"; no grace window on the token itself),
//! so these tests wait seconds, not minutes.
//!
//! And narrowing in a realm where the broker's client has `profile` and `email` as optional
//! scopes (`tests/keycloak/realm-narrow.json`), so a refresh narrowed to `openid` really is.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::claims;
use crate::app::TestApp;
use crate::keycloak::{
    assert_failed_by_provider, broker, consented, forced_refresh, keycloak, keycloak_refuses,
    Consented, Keycloak,
};
use crate::task_keys::create_key;
use crate::webhooks::{event_named, start_collector};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// The realm's Offline Session Idle and Offline Session Max, as the broker is told them.
const IDLE_SECS: &str = "20";
const MAX_SECS: &str = "60";

fn limits_realm() -> Option<Keycloak> {
    keycloak().map(|kc| Keycloak::in_realm(&kc.base, "limits"))
}

/// The row as its owner's status read shows it.
async fn status_of(app: &TestApp, bearer: &str, id: Uuid) -> Value {
    let response = app
        .get_as(bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Keep-alive refreshes the grant before Keycloak's idle limit ends it: 40 s after the consent
/// (twice the idle limit) the stored token still refreshes, and it was keep-alive, not a
/// caller, that used it in between.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_keep_alive_keeps_a_grant_alive_past_offline_session_idle(pool: PgPool) {
    let Some(kc) = limits_realm() else { return };
    let app = broker(
        pool,
        &kc,
        &[
            ("OFFLINE_IDLE_SECS", IDLE_SECS),
            ("KEEPALIVE_INTERVAL_SECS", "2"),
            ("KEEPALIVE_LEAD_SECS", "14"),
        ],
    )
    .await;
    let Consented { bearer, sub, id } =
        consented(&app, &kc, json!({ "taskId": "kc-kept-alive" })).await;
    let first = status_of(&app, &bearer, id).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let later = status_of(&app, &bearer, id).await;
    assert_ne!(
        first["refreshExpiresAt"], later["refreshExpiresAt"],
        "keep-alive refreshed the grant: {later}"
    );
    let events = kc
        .admin_get(&format!("/events?user={sub}&client=token-broker&max=100"))
        .await;
    let refreshes = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "REFRESH_TOKEN")
        .count();
    assert!(
        refreshes >= 2,
        "keep-alive's refreshes at Keycloak: {events}"
    );
    let response = forced_refresh(&app, &bearer, id).await;
    assert_eq!(response.status(), 200, "the grant outlived the idle limit");
    assert_eq!(app.row(id).await.status, "active");
}

/// The control: the same grant without keep-alive dies at the idle limit. Keycloak refuses the
/// token (`invalid_grant`, "Token is not active") and the broker answers 410 and fails the row.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_without_keep_alive_a_grant_dies_at_offline_session_idle(pool: PgPool) {
    let Some(kc) = limits_realm() else { return };
    let app = broker(
        pool,
        &kc,
        &[
            ("OFFLINE_IDLE_SECS", IDLE_SECS),
            ("KEEPALIVE_INTERVAL_SECS", "0"),
        ],
    )
    .await;
    let Consented { bearer, id, .. } = consented(&app, &kc, json!({ "taskId": "kc-idle" })).await;
    let stored = app.stored_refresh_token(id).await;
    tokio::time::sleep(Duration::from_secs(27)).await;
    keycloak_refuses(&kc, &stored, "offline session idle passed").await;
    let response = forced_refresh(&app, &bearer, id).await;
    assert_eq!(response.status(), 410);
    assert_failed_by_provider(&app, id).await;
}

/// Offline Session Max, declared to the broker (`OFFLINE_SESSION_MAX_SECS`): the webhook hears
/// `token.expiring` before the hard end, the row answers 410 `token_expired` after it, and
/// Keycloak itself refuses the token by then.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_offline_session_max_is_announced_and_ends_the_row(pool: PgPool) {
    let Some(kc) = limits_realm() else { return };
    let (events, url) = start_collector().await;
    let app = broker(
        pool,
        &kc,
        &[
            ("OFFLINE_IDLE_SECS", IDLE_SECS),
            ("OFFLINE_SESSION_MAX_SECS", MAX_SECS),
            ("EXPIRING_NOTICE_SECS", "58"),
            ("KEEPALIVE_INTERVAL_SECS", "2"),
            ("KEEPALIVE_LEAD_SECS", "14"),
            ("WEBHOOK_URL", &url),
            ("WEBHOOK_SECRET", "webhook-shared-secret-for-tests"),
        ],
    )
    .await;
    let Consented { bearer, id, .. } = consented(&app, &kc, json!({ "taskId": "kc-max" })).await;
    // The keep-alive pass that first sees the row within the notice announces it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expiring = event_named(&events, "token.expiring").await;
    assert_eq!(expiring["persistentTokenId"], id.to_string());
    let ends: chrono::DateTime<chrono::Utc> =
        expiring["expiresAt"].as_str().unwrap().parse().unwrap();
    let left = (ends - chrono::Utc::now()).num_milliseconds();
    assert!(left > 0 && left <= 60_000, "announced {left} ms ahead");

    // The last token keep-alive stored before the end: Keycloak capped its life at the max.
    tokio::time::sleep(Duration::from_millis((left as u64).saturating_sub(3_000))).await;
    let stored = app.stored_refresh_token(id).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let response = app.access_token(&bearer, &id.to_string()).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "token_expired");
    keycloak_refuses(&kc, &stored, "offline session max passed").await;
}

/// Narrowing that Keycloak really does: with `profile` and `email` optional for the broker's
/// client and not asked for, a key limited to `openid` gets an access token whose scope is
/// `openid` alone. (Keycloak's answer still says `offline_access`, the grant's, which the
/// broker's check sets aside: it asks for a refresh token, not for access.)
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_a_key_limited_to_openid_gets_a_token_keycloak_narrowed(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let kc = Keycloak::in_realm(&kc.base, "narrow");
    let app = broker(pool, &kc, &[]).await;
    let Consented { bearer, id, .. } =
        consented(&app, &kc, json!({ "taskId": "kc-narrowed" })).await;
    let whole = app.access_token(&bearer, &id.to_string()).await;
    let whole: Value = whole.json().await.unwrap();
    assert_eq!(
        claims(whole["accessToken"].as_str().unwrap())["scope"],
        "openid offline_access"
    );
    let key = create_key(&app, &bearer, id, json!({ "scope": "openid" })).await;
    let response = app
        .http
        .post(format!("{}/api/auth/manager/access-token", app.base))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let minted = claims(body["accessToken"].as_str().unwrap());
    assert_eq!(minted["scope"], "openid", "Keycloak narrowed the token");
    assert!(minted.get("email").is_none() && minted.get("preferred_username").is_none());
}
