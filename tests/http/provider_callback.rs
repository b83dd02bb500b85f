//! The callback's identity checks against a scripted provider: what the broker sends to
//! redeem the code (the PKCE verifier of this consent, its redirect URI, its client), and what
//! it makes of each answer: a good one activates the row; another user's ID token, another
//! nonce, an unpublished key, no refresh token, no `offline_access`, a refused or garbled
//! exchange each fail it with its own reason and store nothing.

use base64::Engine;
use serde_json::{json, Value};
use token_broker::crypto::sha256;
use url::Url;
use uuid::Uuid;

use crate::harness::{now, unique_user, Harness, Signer, ISSUER};
use crate::provider::Reply;

const CALLBACK: &str = "/api/auth/manager/offline-callback";

/// A consent as the browser would carry it to the provider.
pub(crate) struct Consent {
    pub user: String,
    pub id: Uuid,
    pub state: String,
    pub nonce: String,
    pub challenge: String,
}

pub(crate) async fn consent(h: &Harness) -> Consent {
    let user = unique_user("alice");
    let answer = h.consent(&h.bearer(&user), json!({ "taskId": "t" })).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    consent_of(&user, &answer.body)
}

/// The consent a consent or re-consent answer of `user` starts.
pub(crate) fn consent_of(user: &str, answer: &Value) -> Consent {
    let url = Url::parse(answer["consentUrl"].as_str().unwrap()).unwrap();
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    Consent {
        id: answer["persistentTokenId"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        state: param("state"),
        nonce: param("nonce"),
        challenge: param("code_challenge"),
        user: user.to_owned(),
    }
}

/// An ID token for the broker's client, signed by `signer`.
pub(crate) fn id_token(signer: &Signer, sub: &str, nonce: &str) -> String {
    let claims = json!({
        "iss": ISSUER, "sub": sub, "aud": "token-broker", "azp": "token-broker",
        "nonce": nonce, "iat": now(), "exp": now() + 300, "auth_time": now() - 5,
    });
    signer.sign(&claims, &json!({}))
}

/// A token answer to an authorization-code exchange, with `changes` merged in.
pub(crate) fn code_answer(id_token: &str, changes: Value) -> Value {
    let mut answer = json!({
        "access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
        "refresh_token": "offline-1", "scope": "openid offline_access",
        "id_token": id_token,
    });
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            answer.as_object_mut().unwrap().remove(k);
        } else {
            answer[k] = v.clone();
        }
    }
    answer
}

pub(crate) async fn callback(h: &Harness, c: &Consent) -> crate::harness::Answer {
    h.get(&format!("{CALLBACK}?code=code-1&state={}", c.state), None)
        .await
}

#[tokio::test]
async fn a_good_answer_activates_the_row_and_the_code_went_with_this_consents_verifier() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.signer, &c.user, &c.nonce), json!({})),
    ));

    let answer = callback(&h, &c).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["persistentTokenId"], c.id.to_string());
    assert_eq!(h.status_of(c.id).await, "active");

    let sent = idp.requests("/token");
    assert_eq!(sent.len(), 1);
    let form = &sent[0].form;
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "code-1");
    let verifier = &form["code_verifier"];
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    assert_eq!(
        challenge, c.challenge,
        "the verifier matches this consent's challenge"
    );
    assert_eq!(
        form["redirect_uri"],
        "http://broker.test/api/auth/manager/offline-callback"
    );
    assert!(
        sent[0]
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "the broker authenticates as its client"
    );
}

#[tokio::test]
async fn the_stored_token_is_the_one_the_provider_gave_and_a_replay_sends_no_second_code() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.signer, &c.user, &c.nonce), json!({})),
    ));
    assert_eq!(callback(&h, &c).await.status, 200);

    let replay = callback(&h, &c).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.body["error"], "invalid_state");
    assert_eq!(idp.requests("/token").len(), 1, "the code went once");

    // The sealed token is the provider's: a refresh presents exactly it.
    idp.answer(Reply::json(
        200,
        json!({ "access_token": "at-2", "token_type": "Bearer", "expires_in": 300 }),
    ));
    let access = h.access_token(&h.bearer(&c.user), c.id).await;
    assert_eq!(access.status, 200, "{}", access.text);
    assert_eq!(access.body["accessToken"], "at-2");
    assert_eq!(idp.requests("/token")[1].form["refresh_token"], "offline-1");
}

#[tokio::test]
async fn an_id_token_of_another_user_fails_the_row_with_subject_mismatch() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let mallory = unique_user("mallory");
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.signer, &mallory, &c.nonce), json!({})),
    ));

    let answer = callback(&h, &c).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.body["error"], "subject_mismatch");
    h.expect_failed(c.id, "subject_mismatch").await;
}

#[tokio::test]
async fn an_id_token_with_another_nonce_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.signer, &c.user, "another-nonce"), json!({})),
    ));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "nonce_mismatch").await;
}

#[tokio::test]
async fn an_id_token_signed_by_an_unpublished_key_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer(&id_token(&h.impostor, &c.user, &c.nonce), json!({})),
    ));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "invalid_id_token").await;
}

#[tokio::test]
async fn an_id_token_for_another_client_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let claims = json!({
        "iss": ISSUER, "sub": c.user, "aud": "frontend", "nonce": c.nonce,
        "iat": now(), "exp": now() + 300,
    });
    let foreign = h.signer.sign(&claims, &json!({}));
    idp.answer(Reply::json(200, code_answer(&foreign, json!({}))));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "invalid_id_token").await;
}

#[tokio::test]
async fn an_answer_without_an_id_token_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::json(
        200,
        code_answer("", json!({ "id_token": null })),
    ));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "missing_id_token").await;
}

#[tokio::test]
async fn an_answer_without_a_refresh_token_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let token = id_token(&h.signer, &c.user, &c.nonce);
    idp.answer(Reply::json(
        200,
        code_answer(&token, json!({ "refresh_token": null })),
    ));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "missing_refresh_token").await;
}

#[tokio::test]
async fn a_grant_without_offline_access_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    let token = id_token(&h.signer, &c.user, &c.nonce);
    idp.answer(Reply::json(
        200,
        code_answer(&token, json!({ "scope": "openid profile" })),
    ));

    let answer = callback(&h, &c).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "consent_failed");
    h.expect_failed(c.id, "offline_access_not_granted").await;
}

#[tokio::test]
async fn a_code_the_provider_refuses_fails_the_row() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::error(400, "invalid_grant", "Code not valid"));

    assert_eq!(callback(&h, &c).await.status, 400);
    h.expect_failed(c.id, "code_exchange_failed").await;
}

#[tokio::test]
async fn a_garbled_exchange_answer_fails_the_consent_as_the_provider_being_away() {
    let (h, idp) = Harness::scripted(&[]).await;
    let c = consent(&h).await;
    idp.answer(Reply::text(200, "<html>gateway</html>"));

    let answer = callback(&h, &c).await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    h.expect_failed(c.id, "provider_unavailable").await;
}
