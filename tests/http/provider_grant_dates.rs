//! What a scripted provider's answers make of a grant's dates and of the grant a re-consent
//! replaces: the hard end counts from the sign-in (`auth_time`, never from the future), the
//! refresh token's end from the provider's `refresh_expires_in` (else the configured idle), on a
//! consent and on a refresh alike; a re-consent revokes the grant it replaced (where the
//! provider revokes one token at a time), unless the provider handed the same one back.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{now, unique_user, Harness, ISSUER};
use crate::provider::Reply;
use crate::provider_callback::{callback, code_answer, consent, consent_of, id_token};

/// The default OFFLINE_TOKEN_MAX_AGE_SECS and OFFLINE_IDLE_SECS.
const MAX_AGE: i64 = 365 * 24 * 3600;
const IDLE: i64 = 30 * 24 * 3600;

fn near(found: DateTime<Utc>, expected: DateTime<Utc>) -> bool {
    (found - expected).num_seconds().abs() < 60
}

async fn dates(h: &Harness, id: Uuid) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let row = h.vault.find(id).await.unwrap().unwrap();
    (row.expires_at, row.health.refresh_expires_at)
}

#[tokio::test]
async fn a_grants_end_counts_from_the_sign_in_and_its_refresh_token_from_the_provider() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let signed_in = now() - 5000;
    let claims = json!({
        "iss": ISSUER, "sub": c.user, "aud": "token-broker", "azp": "token-broker",
        "nonce": c.nonce, "iat": now(), "exp": now() + 300, "auth_time": signed_in,
    });
    let id_token = h.signer.sign(&claims, &json!({}));
    idp.answer(Reply::json(
        200,
        code_answer(&id_token, json!({ "refresh_expires_in": 3600 })),
    ));
    assert_eq!(callback(&h, &c).await.status, 200);
    let (expires_at, refresh_expires_at) = dates(&h, c.id).await;
    let sign_in = DateTime::from_timestamp(signed_in, 0).unwrap();
    assert!(
        near(expires_at, sign_in + Duration::seconds(MAX_AGE)),
        "{expires_at}"
    );
    assert!(near(
        refresh_expires_at.unwrap(),
        Utc::now() + Duration::seconds(3600)
    ));
}

#[tokio::test]
async fn a_sign_in_in_the_future_is_not_believed_and_no_refresh_lifetime_means_the_idle_limit() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let claims = json!({
        "iss": ISSUER, "sub": c.user, "aud": "token-broker", "azp": "token-broker",
        "nonce": c.nonce, "iat": now(), "exp": now() + 300, "auth_time": now() + 5000,
    });
    let id_token = h.signer.sign(&claims, &json!({}));
    idp.answer(Reply::json(200, code_answer(&id_token, json!({}))));
    assert_eq!(callback(&h, &c).await.status, 200);
    let (expires_at, refresh_expires_at) = dates(&h, c.id).await;
    assert!(near(expires_at, Utc::now() + Duration::seconds(MAX_AGE)));
    assert!(near(
        refresh_expires_at.unwrap(),
        Utc::now() + Duration::seconds(IDLE)
    ));
}

#[tokio::test]
async fn a_refresh_moves_the_refresh_tokens_end_as_the_provider_says() {
    let (h, idp) = Harness::scripted(&[]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt-1").await;
    for (answer, lifetime) in [
        (json!({ "refresh_expires_in": 7200 }), 7200),
        (json!({}), IDLE),
    ] {
        let mut reply = json!({ "access_token": "at", "token_type": "Bearer", "expires_in": 1 });
        for (k, v) in answer.as_object().unwrap() {
            reply[k] = v.clone();
        }
        idp.answer(Reply::json(200, reply));
        // Expiring at once, the token is refreshed again on the next call.
        let served = h.access_token(&h.bearer(&user), id).await;
        assert_eq!(served.status, 200, "{}", served.text);
        let (_, refresh_expires_at) = dates(&h, id).await;
        assert!(
            near(
                refresh_expires_at.unwrap(),
                Utc::now() + Duration::seconds(lifetime)
            ),
            "{lifetime}: {refresh_expires_at:?}"
        );
    }
    assert_eq!(idp.requests("/token").len(), 2);
}

/// A re-consent of an active row, carried through the scripted provider; the provider hands
/// out `refresh_token`.
async fn reconsent(
    h: &Harness,
    idp: &crate::provider::ScriptedProvider,
    user: &str,
    id: Uuid,
    refresh_token: &str,
) {
    let answer = h
        .post(
            &format!("/api/auth/manager/offline-tokens/{id}/reconsent"),
            Some(&h.bearer(user)),
            json!({}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let c = consent_of(user, &answer.body);
    idp.answer(Reply::json(
        200,
        code_answer(
            &id_token(&h.signer, user, &c.nonce),
            json!({ "refresh_token": refresh_token }),
        ),
    ));
    let done = callback(h, &c).await;
    assert_eq!(done.status, 200, "{}", done.text);
}

#[tokio::test]
async fn a_reconsent_revokes_the_grant_it_replaced_unless_it_came_back() {
    let (h, idp) = Harness::scripted(&[]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-old").await;
    reconsent(&h, &idp, &user, id, "offline-new").await;
    let revoked = idp.requests("/revoke");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].form["token"], "offline-old");
    let reasons: Vec<Option<String>> = sqlx::query_scalar(
        "select reason from token_audit where token_id = ?1 and action = 'consent_completed'",
    )
    .bind(id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(reasons, vec![Some("reconsent".to_owned())]);

    // The provider handed the same grant back: revoking it would end the new one.
    reconsent(&h, &idp, &user, id, "offline-new").await;
    assert_eq!(idp.requests("/revoke").len(), 1, "nothing more revoked");
    assert_eq!(h.status_of(id).await, "active");
}

#[tokio::test]
async fn a_first_consent_revokes_nothing() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.signer, &c.user, &c.nonce), json!({})),
    ));
    assert_eq!(callback(&h, &c).await.status, 200);
    assert!(idp.requests("/revoke").is_empty());
}

/// With `PROVIDER_REVOCATION=keycloak` the provider ends every offline token of the user for
/// the client when one is revoked, the new one included: the replaced grant is left alone.
#[tokio::test]
async fn a_reconsent_revokes_nothing_where_the_provider_would_end_the_new_grant_too() {
    let (h, idp) = Harness::scripted(&[("PROVIDER_REVOCATION", "keycloak")]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-old").await;
    reconsent(&h, &idp, &user, id, "offline-new").await;
    assert!(idp.requests("/revoke").is_empty());
    assert_eq!(h.status_of(id).await, "active");
}
