//! Edges of the provider's answers and of timing that must never cost a grant or leave one
//! orphaned at the provider: absurd lifetimes, a row ended while its consent completes.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::unique_user;
use crate::idp::{Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const TEN_YEARS_SECS: u64 = 10 * 365 * 24 * 3600;

#[sqlx::test(migrator = "MIGRATIONS")]
async fn absurd_lifetimes_from_the_provider_are_clamped(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = crate::app::spawn_with(pool, crate::app::Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    idp.set_faults(json!({
        "set": { "expires_in": 1e12, "refresh_expires_in": 1e18 },
        "grantTypes": ["authorization_code", "refresh_token"],
    }))
    .await;
    let id = app.activate(&bearer, &user, "t").await;
    for round in ["refreshed", "cached"] {
        let answer = app.access_token(&bearer, &id.to_string()).await;
        assert_eq!(answer.status(), 200, "{round}");
        let body: Value = answer.json().await.unwrap();
        let expires_in = body["expiresIn"].as_u64().unwrap();
        assert!(
            expires_in <= TEN_YEARS_SECS && expires_in > TEN_YEARS_SECS - 60,
            "{round}: clamped to ten years, got {expires_in}"
        );
    }
    let row = app.row(id).await;
    assert_eq!(row.status, "active");
    let lease: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select refresh_lease_until from token_vault where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(lease.is_none(), "no claim was left behind");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_row_revoked_while_its_consent_completes_is_410_and_ends_the_grant(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = crate::app::spawn_with(pool, crate::app::Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;
    let back = app.sign_in(&consent.url, &user, true).await;
    // The provider issues the grant, then holds its answer while the user revokes the row.
    idp.set_faults(json!({
        "delayMs": 1500, "when": "after", "count": 1,
        "grantTypes": ["authorization_code"],
    }))
    .await;
    let callback = {
        let (http, base, path) = (
            app.http.clone(),
            app.base.clone(),
            back.as_str()[crate::idp::BROKER_PUBLIC_URL.len()..].to_owned(),
        );
        tokio::spawn(async move {
            let answer = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let revoked = app
        .delete_as(
            &bearer,
            &format!("/api/auth/manager/offline-tokens/{}", consent.id),
        )
        .await;
    assert_eq!(revoked.status(), 200);

    let (status, body) = callback.await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_revoked")),
        "{body}"
    );
    let row = app.row(consent.id).await;
    assert_eq!(row.status, "revoked", "the revocation stands");
    assert!(row.encrypted_token.is_none(), "nothing was stored");
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "refresh_token.destroyed")
            .await,
        1,
        "the grant the provider had just issued was revoked there, not orphaned"
    );
}
