//! How the broker reads a provider's refusal of a refresh token (issue 17): by what it means,
//! not only by RFC 6749's preferred code. The refusals are injected through the test
//! provider's fault hook, worded as other providers word them.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::{spawn_with, unique_user, Options, TestApp};
use crate::faults::json_of;
use crate::idp::{Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A broker whose cache never serves, so every access-token call refreshes.
async fn always_refreshing(pool: PgPool, idp: &Idp) -> TestApp {
    spawn_with(
        pool,
        Options {
            extra: vec![("ACCESS_TOKEN_CACHE_MARGIN_SECS", "100000".into())],
            ..Options::new(idp)
        },
    )
    .await
}

async fn view(app: &TestApp, bearer: &str, id: &str) -> Value {
    json_of(
        app.get_as(bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await
    .1
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_invalid_request_saying_the_token_is_inactive_ends_the_grant(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = always_refreshing(pool, &idp).await;
    let user = unique_user("olivia");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await.to_string();

    idp.set_faults(json!({
        "answer": "error", "error": "invalid_request", "description": "Refresh token inactive",
    }))
    .await;
    let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_failed"))
    );
    let row = view(&app, &bearer, &id).await;
    assert_eq!(row["status"], "failed");
    assert!(row["statusReason"].is_string(), "{row}");

    // Ended for good: later calls do not go back to the provider.
    let (again, _) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(again, 410);
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "refresh_token.refused")
            .await,
        1
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_client_authentication_failure_keeps_the_row_and_backs_off(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = always_refreshing(pool, &idp).await;
    let user = unique_user("oscar");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await.to_string();

    idp.set_faults(json!({
        "answer": "error", "status": 401, "error": "invalid_client",
        "description": "Invalid client or Invalid client credentials",
    }))
    .await;
    let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("provider_error"))
    );
    let row = view(&app, &bearer, &id).await;
    assert_eq!(
        row["status"], "active",
        "the broker's own fault ends no grant"
    );
    assert_eq!(row["lastError"], "provider_rejected");
    assert_eq!(row["consecutiveFailures"], 1);

    // The same refusal again would be certain: the row backs off instead of asking.
    let again = app.access_token(&bearer, &id).await;
    assert_eq!(again.status(), 502);
    let retry_after: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "refresh_token.refused")
            .await,
        1,
        "no second call to the provider while backing off"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_unrecognised_refusal_is_transient_and_the_grant_survives(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = always_refreshing(pool, &idp).await;
    let user = unique_user("otto");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await.to_string();

    idp.set_faults(json!({
        "answer": "error", "error": "invalid_request", "description": "Missing parameter",
        "count": 1,
    }))
    .await;
    let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("provider_unavailable"))
    );
    assert_eq!(view(&app, &bearer, &id).await["status"], "active");
    let (status, _) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(status, 200, "the grant still works once the provider does");
}
