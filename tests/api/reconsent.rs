//! Re-consent in place: a new consent for an existing row, re-sealed into the same row, so the
//! tasks that hold its id carry on.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{spawn_app, unique_user, TestApp, FRONTEND_ORIGIN};
use crate::idp::{query_param, Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn path(id: impl std::fmt::Display) -> String {
    format!("/api/auth/manager/offline-tokens/{id}/reconsent")
}

async fn reconsent(
    app: &TestApp,
    bearer: &str,
    id: impl std::fmt::Display,
    body: Value,
) -> (u16, Value) {
    let response = app.post(&path(id), Some(bearer), body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn actions(app: &TestApp, id: Uuid) -> Vec<(String, Option<String>)> {
    sqlx::query_as("select action, reason from token_audit where token_id = $1 order by id")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_failed_grant_comes_back_under_the_same_id(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "nightly").await;
    idp.revoke(BROKER_CLIENT, &app.stored_refresh_token(id).await)
        .await;
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        410
    );
    assert_eq!(app.row(id).await.status, "failed");

    let (status, body) = reconsent(&app, &bearer, id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["persistentTokenId"], id.to_string());
    let url = body["consentUrl"].as_str().unwrap();
    assert!(url.contains("offline_access") && url.contains("code_challenge="));
    let back = app.sign_in(url, &user, true).await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 200);
    let done: Value = response.json().await.unwrap();
    assert_eq!(done["persistentTokenId"], id.to_string());
    assert_eq!(done["taskId"], "nightly");

    let row = app.row(id).await;
    assert_eq!((row.status.as_str(), row.status_reason), ("active", None));
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200
    );
    let trail = actions(&app, id).await;
    assert!(trail.contains(&("reconsent_requested".into(), None)));
    assert_eq!(
        trail.last().unwrap(),
        &("token_issued".to_owned(), None),
        "{trail:?}"
    );
    assert!(trail.contains(&("consent_completed".into(), Some("reconsent".into()))));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_active_grant_keeps_working_until_the_new_consent_replaces_it(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let old = app.stored_refresh_token(id).await;

    let (status, body) = reconsent(
        &app,
        &bearer,
        id,
        json!({ "redirectUri": format!("{FRONTEND_ORIGIN}/done") }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200
    );
    assert_eq!(app.row(id).await.status, "active");

    let back = app
        .sign_in(body["consentUrl"].as_str().unwrap(), &user, true)
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 303);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        query_param(&location, "persistentTokenId"),
        Some(id.to_string())
    );
    assert_eq!(query_param(&location, "status").as_deref(), Some("active"));
    assert_ne!(
        app.stored_refresh_token(id).await,
        old,
        "re-sealed in place"
    );
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_reconsent_given_by_someone_else_leaves_the_grant_as_it_was(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let old = app.stored_refresh_token(id).await;

    let (_, body) = reconsent(&app, &bearer, id, json!({})).await;
    let back = app
        .sign_in(
            body["consentUrl"].as_str().unwrap(),
            &unique_user("mallory"),
            true,
        )
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 403);
    let row = app.row(id).await;
    assert_eq!((row.status.as_str(), row.status_reason), ("active", None));
    assert_eq!(app.stored_refresh_token(id).await, old);
    assert!(actions(&app, id)
        .await
        .contains(&("consent_failed".into(), Some("subject_mismatch".into()))));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn reconsent_refuses_strangers_revoked_and_pending_rows_and_bad_input(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    let stranger = idp.user_token(&unique_user("mallory")).await;
    let (status, theirs) = reconsent(&app, &stranger, id, json!({})).await;
    let (_, missing) = reconsent(&app, &stranger, Uuid::new_v4(), json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        theirs, missing,
        "someone else's id looks like a missing one"
    );

    let (status, body) = reconsent(&app, &bearer, "not-a-uuid", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = reconsent(
        &app,
        &bearer,
        id,
        json!({ "redirectUri": "https://evil.example/x" }),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
    let (status, _) = reconsent(&app, &bearer, id, json!({ "colour": "red" })).await;
    assert_eq!(status, 400);
    let unauthenticated = app
        .http
        .post(format!("{}{}", app.base, path(id)))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let pending = app.consent(&bearer, "p").await;
    let (status, body) = reconsent(&app, &bearer, pending.id, json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("token_pending"))
    );

    app.delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    let (status, body) = reconsent(&app, &bearer, id, json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("token_revoked"))
    );
    assert_eq!(app.row(id).await.status, "revoked");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_row_revoked_while_its_reconsent_completes_stays_revoked(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let (_, body) = reconsent(&app, &bearer, id, json!({})).await;
    let back = app
        .sign_in(body["consentUrl"].as_str().unwrap(), &user, true)
        .await;
    // Revoked after the user consented, before the browser reached the callback: the state is
    // wiped with the row's secrets, so the late callback changes nothing.
    app.delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 400);
    let row = app.row(id).await;
    assert_eq!(row.status, "revoked");
    assert!(row.encrypted_token.is_none());
}

/// The grant an active row held before its re-consent is revoked at the provider once the new
/// one is stored, not left alive there: the old refresh token no longer works anywhere.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_reconsent_revokes_the_grant_it_replaced(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let old = app.stored_refresh_token(id).await;
    let (status, body) = reconsent(&app, &bearer, id, json!({})).await;
    assert_eq!(status, 200);
    let back = app
        .sign_in(body["consentUrl"].as_str().unwrap(), &user, true)
        .await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let new = app.stored_refresh_token(id).await;
    assert_ne!(new, old);
    let refresh = |token: String| async move {
        reqwest::Client::new()
            .post(idp.endpoint("token"))
            .basic_auth(BROKER_CLIENT, Some("broker-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
            ])
            .send()
            .await
            .unwrap()
    };
    let answer = refresh(old).await;
    assert_eq!(
        answer.status(),
        400,
        "the replaced grant is gone at the provider"
    );
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant");
    // The new grant is untouched: the broker still gets tokens from it.
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200
    );
}
