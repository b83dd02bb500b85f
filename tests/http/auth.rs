//! Who may call: bearer tokens, checked locally against the provider's keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{claims_for, now, unique_user, Harness};

fn with(patch: Value) -> Value {
    let mut claims = claims_for(&unique_user("jwt"));
    for (k, v) in patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

async fn consent_status(h: &Harness, bearer: &str) -> u16 {
    h.consent(bearer, json!({ "taskId": "t" })).await.status
}

#[tokio::test]
async fn a_token_signed_with_the_providers_key_is_accepted() {
    let h = Harness::new().await;
    assert_eq!(consent_status(&h, &h.bearer("alice")).await, 201);
}

#[tokio::test]
async fn bad_bearer_tokens_are_refused() {
    let h = Harness::new().await;
    let sign = |claims: Value, header: Value| h.signer.sign(&claims, &header);
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"local-es256"}"#),
        URL_SAFE_NO_PAD.encode(with(json!({})).to_string())
    );
    // HS256 "signed" with the provider's public key as the secret: the classic RS/HS (here
    // ES/HS) confusion. Anyone can compute this.
    let mut hs_header = Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("local-es256".into());
    let hs_confusion = encode(
        &hs_header,
        &with(json!({})),
        &EncodingKey::from_secret(b"the public JWKS"),
    )
    .unwrap();
    let cases = [
        (
            "expired",
            sign(with(json!({ "exp": now() - 120 })), json!({})),
        ),
        (
            "wrong issuer",
            sign(
                with(json!({ "iss": "http://evil.test/realms/test" })),
                json!({}),
            ),
        ),
        (
            "foreign signature",
            h.impostor.sign(&with(json!({})), &json!({})),
        ),
        (
            "unknown kid",
            sign(with(json!({})), json!({ "kid": "no-such-key" })),
        ),
        ("ID token", sign(with(json!({ "typ": "ID" })), json!({}))),
        ("empty subject", sign(with(json!({ "sub": "" })), json!({}))),
        ("alg none", alg_none),
        ("HS256 confusion", hs_confusion),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        assert_eq!(consent_status(&h, &token).await, 401, "{name}");
    }
    let valid = h.bearer("alice");
    for header in [format!("Basic {valid}"), "Bearer".to_owned(), valid.clone()] {
        let request = axum::http::Request::post("/api/auth/manager/offline-consent")
            .header("authorization", header)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"taskId":"t"}"#))
            .unwrap();
        assert_eq!(h.send(request).await.status, 401);
    }
    assert_eq!(h.row_count().await, 0);
}

#[tokio::test]
async fn access_token_requires_a_valid_bearer_too() {
    let h = Harness::new().await;
    let answer = h
        .post(
            "/api/auth/manager/access-token",
            None,
            json!({ "persistentTokenId": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}

#[tokio::test]
async fn configured_audience_and_authorized_parties_are_enforced() {
    let h = Harness::with(&[
        ("OIDC_AUDIENCE", "broker-api"),
        ("OIDC_AUTHORIZED_PARTIES", "frontend, notebook"),
    ])
    .await;
    let token = |aud: &str, azp: &str| {
        h.signer
            .sign(&with(json!({ "aud": aud, "azp": azp })), &json!({}))
    };
    assert_eq!(
        consent_status(&h, &token("broker-api", "notebook")).await,
        201
    );
    assert_eq!(consent_status(&h, &token("account", "frontend")).await, 401);
    assert_eq!(
        consent_status(&h, &token("broker-api", "intruder")).await,
        401
    );
    // Without azp, Keycloak-style client_id counts.
    let mut by_client_id = with(json!({ "aud": "broker-api" }));
    by_client_id.as_object_mut().unwrap().remove("azp");
    by_client_id["client_id"] = json!("frontend");
    let by_client_id = h.signer.sign(&by_client_id, &json!({}));
    assert_eq!(consent_status(&h, &by_client_id).await, 201);
}

/// Tokens the broker mints are issued to its own client: they must not be able to drive the
/// management API, even when the broker's client is listed as an authorized party by mistake.
#[tokio::test]
async fn tokens_issued_to_the_broker_itself_are_not_callers() {
    let h = Harness::with(&[("OIDC_AUTHORIZED_PARTIES", "frontend, token-broker")]).await;
    let own = h
        .signer
        .sign(&with(json!({ "azp": "token-broker" })), &json!({}));
    assert_eq!(consent_status(&h, &own).await, 401);
    let mut by_client_id = with(json!({}));
    by_client_id.as_object_mut().unwrap().remove("azp");
    by_client_id["client_id"] = json!("token-broker");
    let by_client_id = h.signer.sign(&by_client_id, &json!({}));
    assert_eq!(consent_status(&h, &by_client_id).await, 401);
    let frontend = h.signer.sign(&with(json!({})), &json!({}));
    assert_eq!(consent_status(&h, &frontend).await, 201);
}
