use serde_json::{json, Value};
use sqlx::PgPool;
use token_broker::crypto::random_token;
use url::Url;

use crate::app::{spawn_app, unique_user, user_with_consent, Scene, TestApp, FRONTEND_ORIGIN};
use crate::idp::{query_param, Idp, BROKER_CLIENT};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Replaces one query parameter of the consent URL, as an attacker or a broken proxy might.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.into()
}

async fn expect_failed(app: &TestApp, id: uuid::Uuid, reason: &str) {
    let row = app.row(id).await;
    assert_eq!(row.status, "failed");
    assert_eq!(row.status_reason.as_deref(), Some(reason));
    assert_eq!(
        row.encrypted_token, None,
        "a failed consent stores no token"
    );
    assert_eq!(row.state_hash, None, "its state cannot be used again");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn completed_consent_seals_the_offline_token_and_activates_the_row(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let consent = app.consent(&bearer, "jupyter-task-123").await;

    let back = app.sign_in(&consent.url, &user, true).await;
    assert_eq!(
        query_param(&back, "state").as_deref(),
        Some(consent.state.as_str())
    );
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "success": true,
            "persistentTokenId": consent.id.to_string(),
            "taskId": "jupyter-task-123",
            "message": "Offline token successfully obtained and stored",
        })
    );

    let row = app.row(consent.id).await;
    assert_eq!(row.status, "active");
    assert_eq!(row.key_id.as_deref(), Some("test-1"));
    assert_eq!(row.iv.as_ref().map(Vec::len), Some(12));
    assert_eq!(row.state_hash, None, "state is single-use");
    assert_eq!(row.pkce_verifier, None, "the verifier is gone once used");
    let offline_token = app.stored_refresh_token(consent.id).await;
    let ciphertext = row.encrypted_token.unwrap();
    assert!(!ciphertext
        .windows(offline_token.len())
        .any(|w| w == offline_token.as_bytes()));
    assert!(Idp::shared().is_active(BROKER_CLIENT, &offline_token).await);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_replayed_callback_is_refused_and_changes_nothing(pool: PgPool) {
    let Scene {
        app, user, consent, ..
    } = user_with_consent(pool).await;
    let back = app.sign_in(&consent.url, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let before = app.row(consent.id).await;

    let replay = app.deliver_callback(&back).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_state");
    let after = app.row(consent.id).await;
    assert_eq!(after.status, "active");
    assert_eq!(after.encrypted_token, before.encrypted_token);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn concurrent_callbacks_with_one_state_complete_it_once(pool: PgPool) {
    let Scene {
        app, user, consent, ..
    } = user_with_consent(pool).await;
    let back = app.sign_in(&consent.url, &user, true).await;

    let answers = futures_join(&app, &back, 8).await;
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 400).count(),
        7,
        "{answers:?}"
    );
    assert_eq!(app.row(consent.id).await.status, "active");
}

async fn futures_join(app: &TestApp, back: &Url, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = format!("{}{}?{}", app.base, back.path(), back.query().unwrap());
        let http = app.http.clone();
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn consent_given_by_another_user_fails_with_subject_mismatch(pool: PgPool) {
    let app = spawn_app(pool).await;
    let alice = unique_user("alice");
    let bearer = Idp::shared().user_token(&alice).await;
    let consent = app.consent(&bearer, "t").await;

    let back = app
        .sign_in(&consent.url, &unique_user("mallory"), true)
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "subject_mismatch");
    expect_failed(&app, consent.id, "subject_mismatch").await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn consent_without_offline_access_fails(pool: PgPool) {
    let Scene {
        app, user, consent, ..
    } = user_with_consent(pool).await;

    let back = app.sign_in(&consent.url, &user, false).await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "consent_failed");
    expect_failed(&app, consent.id, "offline_access_not_granted").await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_id_token_with_another_nonce_is_refused(pool: PgPool) {
    let Scene {
        app, user, consent, ..
    } = user_with_consent(pool).await;

    let tampered = with_param(&consent.url, "nonce", &random_token(32));
    let back = app.sign_in(&tampered, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 400);
    expect_failed(&app, consent.id, "nonce_mismatch").await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_code_issued_for_another_pkce_challenge_is_refused_by_the_provider(pool: PgPool) {
    let Scene {
        app, user, consent, ..
    } = user_with_consent(pool).await;

    // An attacker who swaps the challenge cannot redeem the code without our sealed verifier.
    let tampered = with_param(&consent.url, "code_challenge", &random_token(32));
    let back = app.sign_in(&tampered, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 400);
    expect_failed(&app, consent.id, "code_exchange_failed").await;
    let events = Idp::shared().events_for(&user, BROKER_CLIENT).await;
    assert!(
        !events.iter().any(|e| e == "grant.authorization_code"),
        "the provider must not have granted tokens: {events:?}"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_consent_with_redirect_uri_sends_the_browser_back_there(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let redirect = format!("{FRONTEND_ORIGIN}/dashboard?tab=tasks");

    let response = app
        .request_consent(&bearer, json!({ "taskId": "t", "redirectUri": redirect }))
        .await;
    let body: Value = response.json().await.unwrap();
    let id = body["persistentTokenId"].as_str().unwrap().to_owned();
    let back = app
        .sign_in(body["consentUrl"].as_str().unwrap(), &user, true)
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 303);
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.origin().ascii_serialization(), FRONTEND_ORIGIN);
    assert_eq!(location.path(), "/dashboard");
    assert_eq!(query_param(&location, "tab").as_deref(), Some("tasks"));
    assert_eq!(query_param(&location, "persistentTokenId"), Some(id));
    assert_eq!(query_param(&location, "status").as_deref(), Some("active"));

    // A failure goes back there too, with the reason.
    let response = app
        .request_consent(&bearer, json!({ "taskId": "t", "redirectUri": redirect }))
        .await;
    let body: Value = response.json().await.unwrap();
    let back = app
        .sign_in(body["consentUrl"].as_str().unwrap(), &user, false)
        .await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 303);
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(query_param(&location, "status").as_deref(), Some("failed"));
    assert_eq!(
        query_param(&location, "reason").as_deref(),
        Some("offline_access_not_granted")
    );
}
