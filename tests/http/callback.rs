//! The callback's rules that need no provider: states that are forged, expired or missing,
//! error replies, another issuer, a provider that cannot be reached for the code exchange.

use serde_json::json;
use token_broker::crypto::random_token;
use uuid::Uuid;

use crate::harness::{unique_user, Harness};

const CALLBACK: &str = "/api/auth/manager/offline-callback";

/// A consent of a fresh user: (user, id, state).
async fn consent(h: &Harness) -> (String, Uuid, String) {
    let user = unique_user("alice");
    let answer = h.consent(&h.bearer(&user), json!({ "taskId": "t" })).await;
    assert_eq!(answer.status, 201);
    let id = answer.body["persistentTokenId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let state = answer.body["stateToken"].as_str().unwrap().to_owned();
    (user, id, state)
}

async fn expect_failed(h: &Harness, id: Uuid, reason: &str) {
    let row = h.vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "failed");
    assert_eq!(row.status_reason.as_deref(), Some(reason));
    assert!(row.sealed.is_none());
}

#[tokio::test]
async fn a_forged_state_is_refused_and_the_real_row_stays_pending() {
    let h = Harness::new().await;
    let (user, id, _) = consent(&h).await;
    // The original's state was base64("user:task:id"): guessable. Ours is random; try both.
    let guessable = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:t:{id}"),
    );
    for forged in [random_token(32), guessable] {
        let answer = h
            .get(&format!("{CALLBACK}?code=abc&state={forged}"), None)
            .await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body["error"], "invalid_state");
    }
    assert_eq!(h.status_of(id).await, "pending");
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("select state_hash from token_vault where id = ?1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(hash.is_some(), "the real consent can still complete");
}

#[tokio::test]
async fn an_expired_state_is_refused_and_changes_nothing() {
    let h = Harness::new().await;
    let (_, id, state) = consent(&h).await;
    sqlx::query(
        "update token_vault set state_expires_at = '2000-01-01 00:00:00+00:00' where id = ?1",
    )
    .bind(id)
    .execute(&h.pool)
    .await
    .unwrap();
    let answer = h
        .get(&format!("{CALLBACK}?code=abc&state={state}"), None)
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_state");
    let (status, hash, verifier): (String, Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as("select status, state_hash, pkce_verifier from token_vault where id = ?1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    assert!(hash.is_some() && verifier.is_some());
}

#[tokio::test]
async fn callback_without_state_is_a_bad_request() {
    let h = Harness::new().await;
    for query in [
        String::new(),
        "?code=abc".into(),
        "?state=".into(),
        format!("?code=a&state={}", "s".repeat(600)),
    ] {
        let answer = h.get(&format!("{CALLBACK}{query}"), None).await;
        assert_eq!(answer.status, 400, "{query}");
        assert!(
            answer.body["error"] == "invalid_request" || answer.body["error"] == "invalid_state",
            "{query}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn a_provider_error_marks_the_row_failed_with_its_code() {
    let h = Harness::new().await;
    let (_, first, first_state) = consent(&h).await;
    let (_, second, second_state) = consent(&h).await;
    let answer = h
        .get(
            &format!("{CALLBACK}?error=access_denied&state={first_state}"),
            None,
        )
        .await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (400, Some("consent_failed"))
    );
    expect_failed(&h, first, "access_denied").await;
    // An error code that is not an RFC 6749 word is not stored verbatim.
    let answer = h
        .get(
            &format!("{CALLBACK}?error=%3Cscript%3E&state={second_state}"),
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    expect_failed(&h, second, "provider_error").await;
}

#[tokio::test]
async fn a_response_naming_another_issuer_is_refused() {
    let h = Harness::new().await;
    let (_, id, state) = consent(&h).await;
    let answer = h
        .get(
            &format!("{CALLBACK}?code=abc&state={state}&iss=http%3A%2F%2Fevil.test"),
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    expect_failed(&h, id, "issuer_mismatch").await;
}

#[tokio::test]
async fn a_replayed_state_is_refused_once_claimed() {
    let h = Harness::new().await;
    let (_, id, state) = consent(&h).await;
    // The provider cannot be reached for the exchange: the claim is spent anyway.
    let first = h
        .get(&format!("{CALLBACK}?code=abc&state={state}"), None)
        .await;
    assert_eq!(
        (first.status, first.body["error"].as_str()),
        (503, Some("provider_unavailable"))
    );
    expect_failed(&h, id, "provider_unavailable").await;
    let replay = h
        .get(&format!("{CALLBACK}?code=abc&state={state}"), None)
        .await;
    assert_eq!(
        (replay.status, replay.body["error"].as_str()),
        (400, Some("invalid_state"))
    );
}

/// What a browser sends when it follows the provider's redirect.
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

async fn browser_get(h: &Harness, path: &str) -> crate::harness::Answer {
    let request = axum::http::Request::builder()
        .uri(path)
        .header("accept", BROWSER_ACCEPT)
        .body(axum::body::Body::empty())
        .unwrap();
    h.send(request).await
}

fn assert_strict_page(answer: &crate::harness::Answer) {
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = answer.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!answer.text.contains("<script"), "no script on the page");
}

#[tokio::test]
async fn a_browser_gets_a_page_in_plain_words_for_a_used_or_forged_link() {
    let h = Harness::new().await;
    let answer = browser_get(
        &h,
        &format!("{CALLBACK}?code=abc&state={}", random_token(32)),
    )
    .await;
    assert_eq!(answer.status, 400, "the same status as the JSON");
    assert_strict_page(&answer);
    assert!(
        answer.text.contains("Access not granted"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("expired or was already used"));
    assert!(answer.text.contains("Start the consent again"));
    assert!(answer.text.contains("<code>invalid_state</code>"));

    // A client that asks for JSON (or says nothing) keeps the contract.
    let api = h
        .get(
            &format!("{CALLBACK}?code=abc&state={}", random_token(32)),
            None,
        )
        .await;
    assert_eq!(api.body["error"], "invalid_state");
}

#[tokio::test]
async fn a_browser_sees_a_declined_consent_named_with_its_task() {
    let h = Harness::new().await;
    let (_, id, state) = consent(&h).await;
    let answer = browser_get(&h, &format!("{CALLBACK}?error=access_denied&state={state}")).await;
    assert_eq!(answer.status, 400);
    assert_strict_page(&answer);
    assert!(
        answer.text.contains("for task <strong>t</strong>"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("did not grant offline access"));
    expect_failed(&h, id, "access_denied").await;
}

#[tokio::test]
async fn a_browser_without_state_gets_a_page_too() {
    let h = Harness::new().await;
    let answer = browser_get(&h, CALLBACK).await;
    assert_eq!(answer.status, 400);
    assert_strict_page(&answer);
    assert!(
        answer.text.contains("<code>invalid_request</code>"),
        "{}",
        answer.text
    );
}
