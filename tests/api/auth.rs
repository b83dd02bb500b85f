use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::{spawn_app, unique_user, TestApp};
use crate::idp::Idp;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn good_claims(issuer: &str) -> Value {
    json!({ "iss": issuer, "sub": unique_user("jwt"), "exp": now() + 300, "iat": now(), "azp": "frontend" })
}

async fn consent_status(app: &TestApp, bearer: &str) -> u16 {
    app.request_consent(bearer, json!({ "taskId": "t" }))
        .await
        .status()
        .as_u16()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_token_signed_by_the_provider_is_accepted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let idp = Idp::shared();
    let token = idp.sign(good_claims(&idp.issuer), json!({}), false).await;
    assert_eq!(consent_status(&app, &token).await, 201);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn bad_bearer_tokens_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let idp = Idp::shared();
    let with = |patch: Value| {
        let mut claims = good_claims(&idp.issuer);
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };

    let expired = idp
        .sign(with(json!({ "exp": now() - 120 })), json!({}), false)
        .await;
    let wrong_issuer = idp
        .sign(
            with(json!({ "iss": "http://evil.test/realms/test" })),
            json!({}),
            false,
        )
        .await;
    let foreign_key = idp.sign(good_claims(&idp.issuer), json!({}), true).await;
    let unknown_kid = idp
        .sign(
            good_claims(&idp.issuer),
            json!({ "kid": "no-such-key" }),
            false,
        )
        .await;
    let keycloak_id_token = idp
        .sign(with(json!({ "typ": "ID" })), json!({}), false)
        .await;
    let no_subject = idp.sign(with(json!({ "sub": "" })), json!({}), false).await;
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"idp-rs256"}"#),
        URL_SAFE_NO_PAD.encode(good_claims(&idp.issuer).to_string())
    );
    // HS256 "signed" with the provider's public key set as the secret: the classic
    // RS/HS confusion. Anyone can compute this.
    let public_jwks = reqwest::get(idp.endpoint("certs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut hs_header = Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("idp-rs256".into());
    let hs_confusion = encode(
        &hs_header,
        &good_claims(&idp.issuer),
        &EncodingKey::from_secret(public_jwks.as_bytes()),
    )
    .unwrap();

    let cases = [
        ("expired", expired),
        ("wrong issuer", wrong_issuer),
        ("foreign signature", foreign_key),
        ("unknown kid", unknown_kid),
        ("ID token", keycloak_id_token),
        ("empty subject", no_subject),
        ("alg none", alg_none),
        ("HS256 confusion", hs_confusion),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        assert_eq!(consent_status(&app, &token).await, 401, "{name}");
    }

    let url = format!("{}/api/auth/manager/offline-consent", app.base);
    let valid = idp.sign(good_claims(&idp.issuer), json!({}), false).await;
    for header in [format!("Basic {valid}"), "Bearer".to_owned(), valid.clone()] {
        let status = app
            .http
            .post(&url)
            .header("authorization", header)
            .json(&json!({ "taskId": "t" }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from token_vault")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn access_token_requires_a_valid_bearer_too(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .post(
            "/api/auth/manager/access-token",
            None,
            json!({ "persistentTokenId": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(response.status(), 401);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn configured_audience_and_authorized_parties_are_enforced(pool: PgPool) {
    let idp = Idp::shared();
    let app = crate::app::spawn_with(
        pool,
        crate::app::Options {
            extra: vec![
                ("OIDC_AUDIENCE", "broker-api".into()),
                ("OIDC_AUTHORIZED_PARTIES", "frontend, notebook".into()),
            ],
            ..crate::app::Options::new(idp)
        },
    )
    .await;
    let claims = |aud: &str, azp: &str| {
        let mut claims = good_claims(&idp.issuer);
        claims["aud"] = json!(aud);
        claims["azp"] = json!(azp);
        claims
    };
    let accepted = idp
        .sign(claims("broker-api", "notebook"), json!({}), false)
        .await;
    assert_eq!(consent_status(&app, &accepted).await, 201);
    let other_audience = idp
        .sign(claims("account", "frontend"), json!({}), false)
        .await;
    assert_eq!(consent_status(&app, &other_audience).await, 401);
    let other_party = idp
        .sign(claims("broker-api", "intruder"), json!({}), false)
        .await;
    assert_eq!(consent_status(&app, &other_party).await, 401);
    // Without azp, Keycloak-style client_id counts.
    let mut by_client_id = claims("broker-api", "x");
    by_client_id.as_object_mut().unwrap().remove("azp");
    by_client_id["client_id"] = json!("frontend");
    let by_client_id = idp.sign(by_client_id, json!({}), false).await;
    assert_eq!(consent_status(&app, &by_client_id).await, 201);
}
