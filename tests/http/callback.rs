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
    assert!(
        state_still_claimable(&h, id).await,
        "the real consent can still complete"
    );
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

/// Whether the row's state can still be claimed (its digest is still stored).
async fn state_still_claimable(h: &Harness, id: Uuid) -> bool {
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("select state_hash from token_vault where id = ?1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    hash.is_some()
}

#[tokio::test]
async fn a_state_past_the_length_limit_is_refused_before_it_is_looked_up() {
    let h = Harness::new().await;
    let limit = token_broker::grants::callback::MAX_STATE_LEN;
    let (long, longest) = ("s".repeat(limit + 1), "t".repeat(limit));
    let too_long = h.seed_pending(&unique_user("alice"), "t", &long).await;
    let at_limit = h.seed_pending(&unique_user("bob"), "t", &longest).await;

    let answer = h
        .get(&format!("{CALLBACK}?code=abc&state={long}"), None)
        .await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.body["error"], "invalid_state");
    assert!(state_still_claimable(&h, too_long).await);

    // A state of exactly the limit is looked up, and claimed (the code exchange then fails:
    // no provider answers here).
    h.get(&format!("{CALLBACK}?code=abc&state={longest}"), None)
        .await;
    assert!(!state_still_claimable(&h, at_limit).await);
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
    h.expect_failed(first, "access_denied").await;
    // An error code that is not an RFC 6749 word is not stored verbatim.
    let answer = h
        .get(
            &format!("{CALLBACK}?error=%3Cscript%3E&state={second_state}"),
            None,
        )
        .await;
    assert_eq!(answer.status, 400);
    h.expect_failed(second, "provider_error").await;
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
    h.expect_failed(id, "issuer_mismatch").await;
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
    h.expect_failed(id, "provider_unavailable").await;
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
    h.expect_failed(id, "access_denied").await;
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

/// A webhook event says what changed in the row, not what was tried: a declined re-consent of
/// an active row, or a declined consent whose row was revoked meanwhile, posts no `failed`.
/// A declined first consent, which does fail its row, does.
#[tokio::test]
async fn a_failed_consent_posts_failed_only_when_the_row_failed() {
    let (url, got) = crate::harness::webhook_receiver().await;
    let h = Harness::with(&[
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
    ])
    .await;
    let statuses = |id: Uuid| {
        got.lock()
            .unwrap()
            .iter()
            .filter(|e| e["persistentTokenId"] == id.to_string())
            .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(300));

    // An active row re-consented, and the user declines at the provider.
    let user = unique_user("alice");
    let active = h.seed_active(&user, "t", "offline-token").await;
    let again = h
        .post(
            &format!("/api/auth/manager/offline-tokens/{active}/reconsent"),
            Some(&h.bearer(&user)),
            json!({}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    let state = again.body["stateToken"].as_str().unwrap();
    let declined = h
        .get(
            &format!("{CALLBACK}?error=access_denied&state={state}"),
            None,
        )
        .await;
    assert_eq!(declined.status, 400);
    assert_eq!(h.status_of(active).await, "active");

    // A first consent whose row was revoked before the user declined.
    let (owner, revoked, state) = consent(&h).await;
    let gone = h.revoke(&h.bearer(&owner), revoked).await;
    assert_eq!(gone.status, 200);
    h.get(
        &format!("{CALLBACK}?error=access_denied&state={state}"),
        None,
    )
    .await;

    // A first consent declined: the row does fail.
    let (_, pending, state) = consent(&h).await;
    h.get(
        &format!("{CALLBACK}?error=access_denied&state={state}"),
        None,
    )
    .await;
    h.expect_failed(pending, "access_denied").await;

    settle().await;
    assert_eq!(
        statuses(active),
        Vec::<String>::new(),
        "the re-consented row did not change"
    );
    assert!(
        !statuses(revoked).contains(&"failed".to_owned()),
        "{:?}",
        statuses(revoked)
    );
    assert_eq!(statuses(pending), ["failed"]);
}

/// RFC 9207: where discovery promises `iss` on every authorization response, a callback
/// without it is refused, and `iss` is compared exactly (no trailing slash trimmed).
#[tokio::test]
async fn where_the_provider_promises_iss_it_is_required_and_compared_exactly() {
    let h = Harness::with(&[("TEST_ISS_SUPPORTED", "1")]).await;
    for iss in [
        String::new(),
        format!(
            "&iss={}",
            url::form_urlencoded::byte_serialize(format!("{}/", crate::harness::ISSUER).as_bytes())
                .collect::<String>()
        ),
    ] {
        let (_, id, state) = consent(&h).await;
        let answer = h
            .get(&format!("{CALLBACK}?code=abc&state={state}{iss}"), None)
            .await;
        assert_eq!(answer.status, 400, "{iss}: {}", answer.text);
        h.expect_failed(id, "issuer_mismatch").await;
    }
    // The issuer exactly: on to the code exchange (the provider is down here).
    let (_, id, state) = consent(&h).await;
    let exact =
        url::form_urlencoded::byte_serialize(crate::harness::ISSUER.as_bytes()).collect::<String>();
    let answer = h
        .get(
            &format!("{CALLBACK}?code=abc&state={state}&iss={exact}"),
            None,
        )
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    h.expect_failed(id, "provider_unavailable").await;
    // A provider that does not promise it: a response without `iss` goes on.
    let plain = Harness::new().await;
    let (_, id, state) = consent(&plain).await;
    let answer = plain
        .get(&format!("{CALLBACK}?code=abc&state={state}"), None)
        .await;
    assert_eq!(answer.status, 503);
    plain.expect_failed(id, "provider_unavailable").await;
}
