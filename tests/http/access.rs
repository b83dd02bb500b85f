//! The access-token endpoint's rules that need no provider: owners, pending rows, sealed data
//! that does not open, a provider that cannot be reached, tokens another instance stored.

use serde_json::json;
use uuid::Uuid;

use crate::harness::{unique_user, Harness};

#[tokio::test]
async fn another_users_token_id_looks_exactly_like_a_missing_one() {
    let h = Harness::new().await;
    let alice = unique_user("alice");
    let id = h.seed_active(&alice, "t", "offline-token").await;
    let mallory = h.bearer(&unique_user("mallory"));
    let theirs = h.access_token(&mallory, id).await;
    let missing = h.access_token(&mallory, Uuid::new_v4()).await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(theirs.body, missing.body);
    assert_eq!(theirs.body["error"], "token_not_found");
    let row = h.vault.find(id).await.unwrap().unwrap();
    assert!(row.last_used_at.is_none(), "the row was not touched");
    assert!(row.lease_until.is_none(), "nor claimed");
    let bad = h.access_token(&mallory, "not-a-uuid").await;
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_pending_token_is_a_conflict() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_pending(&user, "t", "some-state").await;
    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (409, Some("token_pending"))
    );
}

#[tokio::test]
async fn tampered_ciphertext_is_an_internal_error_not_plaintext() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let mut ciphertext: Vec<u8> =
        sqlx::query_scalar("select encrypted_token from token_vault where id = ?1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    ciphertext[0] ^= 1;
    sqlx::query("update token_vault set encrypted_token = ?2 where id = ?1")
        .bind(id)
        .bind(ciphertext)
        .execute(&h.pool)
        .await
        .unwrap();
    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.body,
        json!({"error": "internal_error", "message": "Internal server error"})
    );
    assert_eq!(
        h.status_of(id).await,
        "active",
        "an operator can still repair it"
    );
}

#[tokio::test]
async fn a_row_moved_to_another_user_does_not_decrypt() {
    let h = Harness::new().await;
    let id = h
        .seed_active(&unique_user("alice"), "t", "offline-token")
        .await;
    // Someone with write access to the table hands Alice's token to Mallory.
    let mallory = unique_user("mallory");
    sqlx::query("update token_vault set user_id = ?2 where id = ?1")
        .bind(id)
        .bind(&mallory)
        .execute(&h.pool)
        .await
        .unwrap();
    let answer = h.access_token(&h.bearer(&mallory), id).await;
    assert_eq!(answer.status, 500, "the ciphertext is bound to Alice");
}

#[tokio::test]
async fn a_broker_with_the_wrong_key_cannot_open_tokens() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    for keys in [
        "test-1:ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=",
        "test-2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
    ] {
        // It does not even start: its own task-key secret does not open either.
        let refused = h
            .try_beside(&[("TOKEN_ENCRYPTION_KEYS", keys)])
            .await
            .err()
            .expect("a broker with the wrong key refuses to start");
        assert!(refused.to_string().contains("task-key secret"), "{refused}");
        // And the row's token does not open with that key.
        let keyring = token_broker::crypto::Keyring::parse(keys).unwrap();
        let row = h.vault.find(id).await.unwrap().unwrap();
        let binding = h.binding(token_broker::crypto::purpose::REFRESH_TOKEN, id, &user);
        assert!(
            keyring.open(row.sealed.as_ref().unwrap(), binding).is_err(),
            "{keys}"
        );
    }
    assert_eq!(h.status_of(id).await, "active");
    assert_eq!(
        h.access_token(&h.bearer(&user), id).await.status,
        503,
        "the right key still opens it (and then finds the provider down)"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_503_with_retry_after_and_leaves_the_row_alone() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let before = h.vault.find(id).await.unwrap().unwrap();
    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (503, Some("provider_unavailable"))
    );
    assert!(answer.headers.contains_key("retry-after"));
    let after = h.vault.find(id).await.unwrap().unwrap();
    assert_eq!(after.status.as_str(), "active");
    assert_eq!(after.sealed, before.sealed);
    assert!(after.lease_until.is_none(), "the claim was released");
    assert_eq!(after.health.consecutive_failures, 1);
    assert_eq!(
        after.health.last_error.as_deref(),
        Some("provider_unavailable")
    );
}

#[tokio::test]
async fn a_token_another_instance_stored_is_served_to_the_owner_only() {
    let h = Harness::new().await;
    let alice = unique_user("alice");
    let id = h.seed_active(&alice, "t", "offline-token").await;
    h.seed_stored_access(id, &alice, "minted-elsewhere").await;
    // The provider is down: only the stored token can answer.
    let answer = h.access_token(&h.bearer(&alice), id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["accessToken"], "minted-elsewhere");
    let mallory = h.access_token(&h.bearer(&unique_user("mallory")), id).await;
    assert_eq!(
        (mallory.status, mallory.body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    // Now cached in memory: the owner still gets it, a stranger still does not.
    assert_eq!(h.access_token(&h.bearer(&alice), id).await.status, 200);
    let mallory = h.access_token(&h.bearer(&unique_user("mallory")), id).await;
    assert_eq!(mallory.status, 404, "the cached path checks the owner too");
}

/// Every kind of caller that may not use a row gets the same 404 whether the row's token is
/// only stored in the row (another instance minted it) or already cached in this process.
#[tokio::test]
async fn no_caller_reaches_a_row_it_may_not_use_on_the_stored_or_the_cached_path() {
    let h = Harness::with(&[("DELEGATE_CLIENTS", "job-runner")]).await;
    let alice = unique_user("alice");
    let owner = h.bearer(&alice);
    let id = h.seed_active(&alice, "t", "offline-token").await;
    h.seed_stored_access(id, &alice, "alices-token").await;
    // A key alice made for another row of hers, and a delegate her row does not name.
    let elsewhere = h.seed_active(&alice, "other", "rt").await;
    h.seed_stored_access(elsewhere, &alice, "other-token").await;
    let key = h
        .post(
            &format!("/api/auth/manager/offline-tokens/{elsewhere}/task-keys"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.text);
    let key = key.body["taskKey"].as_str().unwrap().to_owned();
    let runner = crate::harness::service_account_claims("job-runner");
    let runner = h.signer.sign(&runner, &json!({}));
    let strangers = [
        ("another user", h.bearer(&unique_user("mallory"))),
        ("a key for another row", key),
        ("a delegate the row does not name", runner),
    ];
    let refused = |answer: &crate::harness::Answer, who: &str, path: &str| {
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (404, Some("token_not_found")),
            "{who} on the {path} path: {}",
            answer.text
        );
    };
    for (who, bearer) in &strangers {
        refused(&h.access_token(bearer, id).await, who, "stored");
    }
    let served = h.access_token(&owner, id).await;
    assert_eq!(served.body["accessToken"], "alices-token");
    for (who, bearer) in &strangers {
        refused(&h.access_token(bearer, id).await, who, "cached");
    }
}

/// A stored access token sealed under a key this broker no longer has (removed after a
/// rotation) is a cache miss: the broker refreshes (here: finds the provider down, 503), it
/// does not answer 500 until the stored token expires.
#[tokio::test]
async fn a_stored_access_token_that_does_not_open_is_a_miss_not_an_error() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let retired = token_broker::crypto::Keyring::parse(
        "retired-1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
    )
    .unwrap();
    let sealed = retired
        .seal(
            b"minted-under-the-old-key",
            h.binding(token_broker::crypto::purpose::ACCESS_TOKEN, id, &user),
        )
        .unwrap();
    h.store_access(id, sealed.to_bytes()).await;

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (503, Some("provider_unavailable")),
        "{}",
        answer.text
    );
    assert_eq!(h.status_of(id).await, "active");
}
