//! What happens to a refresh while the provider is answering: the database goes away (the
//! write-back waits it out) or refuses the write (not retried), the owner revokes the row (the revocation wins and the rotated
//! token is revoked at the provider), or the claim runs out and another instance refreshes
//! the row (its token is served, nothing is revoked). Each test holds the provider's answer
//! ([`Reply::held`]) and acts in between.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{unique_user, Harness};
use crate::provider::{Held, Reply, ScriptedProvider};

/// A broker with one active row holding `rt-1`, and the provider's next answer (a new access
/// token `at-2` with the rotated refresh token `rt-2`) held back.
async fn refresh_held() -> (Harness, ScriptedProvider, String, Uuid, Held) {
    let (h, idp) = Harness::scripted(&[]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt-1").await;
    let (reply, held) = Reply::json(
        200,
        json!({ "access_token": "at-2", "token_type": "Bearer", "expires_in": 300,
                "refresh_token": "rt-2" }),
    )
    .held();
    idp.answer(reply);
    (h, idp, user, id, held)
}

fn revoked_at_provider(idp: &ScriptedProvider) -> Vec<String> {
    idp.requests("/revoke")
        .into_iter()
        .map(|r| r.form["token"].clone())
        .collect()
}

#[tokio::test]
async fn a_write_back_waits_out_a_database_outage_and_keeps_the_rotated_token() {
    let (h, idp, user, id, mut held) = refresh_held().await;
    let bearer = h.bearer(&user);

    let (answer, ()) = tokio::join!(h.access_token(&bearer, id), async {
        held.request_arrived().await;
        // The in-memory vault has one connection: holding it is a database that is away. The
        // write-back's wait for it times out (3 s), which is an outage, not a refusal.
        let outage = h.pool.acquire().await.unwrap();
        held.release();
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        drop(outage);
    });

    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["accessToken"], "at-2");
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-2");
    assert!(revoked_at_provider(&idp).is_empty());
}

/// A write the database refuses (not an outage) is not retried: waiting would not change the
/// answer. The minted token is served; the row keeps what it had.
#[tokio::test]
async fn a_write_back_the_database_refuses_is_not_retried() {
    let (h, _idp, user, id, held) = refresh_held().await;
    held.release();
    sqlx::query(
        "create trigger refuse_write_back before update of encrypted_token on token_vault \
         begin select raise(abort, 'refused by the test'); end",
    )
    .execute(&h.pool)
    .await
    .unwrap();

    // Retried as an outage would be, the answer would take a minute.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        h.access_token(&h.bearer(&user), id),
    )
    .await
    .expect("answered without retrying");

    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["accessToken"], "at-2");
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-1");
}

#[tokio::test]
async fn a_revocation_during_the_refresh_wins_and_the_rotated_token_is_revoked_too() {
    let (h, idp, user, id, mut held) = refresh_held().await;
    let bearer = h.bearer(&user);

    let (answer, revoked) = tokio::join!(h.access_token(&bearer, id), async {
        held.request_arrived().await;
        let revoked = h.revoke(&bearer, id).await;
        held.release();
        revoked
    });

    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(answer.status, 410, "{}", answer.text);
    assert_eq!(answer.body["error"], "token_revoked");
    assert_eq!(h.status_of(id).await, "revoked");
    // The revocation revoked the token it knew (rt-1); the refresh's rotated one (rt-2) would
    // otherwise be a live grant nobody holds.
    assert_eq!(revoked_at_provider(&idp), ["rt-1", "rt-2"]);
    assert_eq!(idp.requests("/token").len(), 1);
}

#[tokio::test]
async fn a_claim_taken_over_by_another_instance_serves_its_token_and_revokes_nothing() {
    let (h, idp, user, id, mut held) = refresh_held().await;
    let bearer = h.bearer(&user);

    let (answer, ()) = tokio::join!(h.access_token(&bearer, id), async {
        held.request_arrived().await;
        // Our claim runs out while the provider is slow; another instance claims the row,
        // refreshes it and stores its access token.
        sqlx::query("update token_vault set refresh_lease_until = ?1 where id = ?2")
            .bind(Utc::now() - chrono::Duration::seconds(1))
            .bind(id)
            .execute(&h.pool)
            .await
            .unwrap();
        h.seed_stored_access(id, &user, "at-other").await;
        held.release();
    });

    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["accessToken"], "at-other");
    // Our write-back lost: the row keeps what the other instance stored.
    assert_eq!(h.stored_refresh_token(id, &user).await, "rt-1");
    assert_eq!(h.status_of(id).await, "active");
    assert!(revoked_at_provider(&idp).is_empty());
}
