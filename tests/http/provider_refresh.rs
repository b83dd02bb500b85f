//! A refresh against a scripted provider: what the broker presents, how it classifies each
//! answer (a new token, a rotated refresh token, a dead grant, a provider that is away, that
//! refuses the broker, that answers garbage or too broad a scope), and what it writes back;
//! and the revocation a row's end sends.

use serde_json::json;
use uuid::Uuid;

use crate::harness::{unique_user, Harness};
use crate::provider::{Reply, ScriptedProvider};

/// A broker with one active row of a fresh user, holding the refresh token `rt-1`.
async fn active_row(extra: &[(&str, &str)]) -> (Harness, ScriptedProvider, String, Uuid) {
    let (h, idp) = Harness::scripted(extra).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt-1").await;
    (h, idp, user, id)
}

async fn failures(h: &Harness, id: Uuid) -> u32 {
    let row = h.vault.find(id).await.unwrap().unwrap();
    row.health.consecutive_failures
}

#[tokio::test]
async fn a_refresh_presents_the_sealed_token_as_the_broker_client() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::fresh("at-1"));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["accessToken"], "at-1");
    let sent = idp.requests("/token");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].form["grant_type"], "refresh_token");
    assert_eq!(sent[0].form["refresh_token"], "rt-1");
    assert!(sent[0]
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
}

#[tokio::test]
async fn a_rotated_refresh_token_is_written_back_sealed() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::json(
        200,
        json!({ "access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
                "refresh_token": "rt-2" }),
    ));

    assert_eq!(h.access_token(&h.bearer(&user), id).await.status, 200);
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-2");
}

#[tokio::test]
async fn an_answer_without_a_refresh_token_keeps_the_one_stored() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::fresh("at-1"));

    assert_eq!(h.access_token(&h.bearer(&user), id).await.status, 200);
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-1");
}

#[tokio::test]
async fn the_minted_token_is_stored_and_served_again_without_a_second_refresh() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::fresh("at-1"));

    assert_eq!(h.access_token(&h.bearer(&user), id).await.status, 200);
    let again = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["accessToken"], "at-1");
    assert_eq!(idp.requests("/token").len(), 1);
}

#[tokio::test]
async fn invalid_grant_ends_the_row_as_revoked_by_the_provider() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::error(
        400,
        "invalid_grant",
        "Offline user session not found",
    ));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 410, "{}", answer.text);
    assert_eq!(answer.body["error"], "token_failed");
    let row = h.vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "failed");
    assert_eq!(
        row.status_reason.as_ref().map(|r| r.as_str()),
        Some("revoked_by_provider")
    );
}

#[tokio::test]
async fn invalid_request_about_a_dead_token_ends_the_row_too() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::error(400, "invalid_request", "Token is not active"));

    assert_eq!(h.access_token(&h.bearer(&user), id).await.status, 410);
    assert_eq!(h.status_of(id).await, "failed");
}

#[tokio::test]
async fn a_provider_error_leaves_the_row_active_and_counts_a_failure() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::error(503, "server_error", "down for maintenance"));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(answer.body["error"], "provider_unavailable");
    assert_eq!(h.status_of(id).await, "active");
    assert_eq!(failures(&h, id).await, 1);
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-1");
}

#[tokio::test]
async fn a_garbled_answer_is_not_retried_at_once_and_leaves_the_row_active() {
    // The provider may have acted (and rotated the token) before its answer broke.
    let (h, idp, user, id) = active_row(&[("PROVIDER_RETRY_ATTEMPTS", "3")]).await;
    idp.answer(Reply::text(200, "<html>bad gateway</html>"));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert_eq!(idp.requests("/token").len(), 1);
    assert_eq!(h.status_of(id).await, "active");
}

#[tokio::test]
async fn temporarily_unavailable_is_retried_at_once() {
    let (h, idp, user, id) = active_row(&[("PROVIDER_RETRY_ATTEMPTS", "3")]).await;
    idp.answer(Reply::error(503, "temporarily_unavailable", "busy"));
    idp.answer(Reply::fresh("at-1"));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(idp.requests("/token").len(), 2);
    assert_eq!(failures(&h, id).await, 0);
}

#[tokio::test]
async fn a_provider_that_refuses_the_broker_client_backs_the_row_off_without_ending_it() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::error(
        401,
        "invalid_client",
        "Invalid client credentials",
    ));

    let answer = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(answer.body["error"], "provider_error");
    let wait: i64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(h.status_of(id).await, "active");
    assert_eq!(failures(&h, id).await, 1);
    // No refresh of the row is tried before the wait the answer announced.
    let row = h.vault.find(id).await.unwrap().unwrap();
    let next = row.health.next_refresh_at.expect("a back-off is recorded");
    let expected = chrono::Utc::now() + chrono::Duration::seconds(wait);
    assert!(
        (next - expected).num_seconds().abs() <= 5,
        "{next} vs {expected}"
    );
}

#[tokio::test]
async fn a_narrowed_refresh_the_provider_did_not_narrow_is_not_served_but_its_rotation_is_kept() {
    let (h, idp, user, id) = active_row(&[]).await;
    idp.answer(Reply::json(
        200,
        json!({ "access_token": "at-broad", "token_type": "Bearer", "expires_in": 300,
                "scope": "openid profile", "refresh_token": "rt-2" }),
    ));

    let answer = h
        .post(
            "/api/auth/manager/access-token",
            Some(&h.bearer(&user)),
            json!({ "persistentTokenId": id.to_string(), "scope": "openid" }),
        )
        .await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(answer.body["error"], "scope_not_narrowed");
    assert!(!answer.text.contains("at-broad"));
    assert_eq!(idp.requests("/token")[0].form["scope"], "openid");
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-2");
}

#[tokio::test]
async fn revoking_a_row_revokes_its_refresh_token_at_the_provider() {
    let (h, idp, user, id) = active_row(&[]).await;

    let answer = h.revoke(&h.bearer(&user), id).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(h.status_of(id).await, "revoked");
    let sent = idp.requests("/revoke");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].form["token"], "rt-1");
    assert!(idp.requests("/token").is_empty());
}
