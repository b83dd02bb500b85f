//! The core flow, refresh, revocation and the reading of refusals against a second provider
//! that shares no code with the Keycloak-shaped one: Authlib's authorization server
//! (tests/idp-authlib/server.py). Its tokens are RFC 9068 `at+jwt` with `client_id` and no
//! `azp`, its subjects are names, its issuer has no realm path, every refresh rotates, and it
//! refuses `offline_access` without `prompt=consent` (issue 17).

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use reqwest::redirect::Policy;
use serde_json::{json, Value};
use sqlx::PgPool;
use url::Url;

use crate::access::claims;
use crate::app::{spawn_with, unique_user, Options, TestApp};
use crate::faults::json_of;
use crate::idp::{start_provider, Idp, BROKER_PUBLIC_URL, CLIENT_SECRET};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct AuthlibIdp {
    pub issuer: String,
    child: Child,
    _stdin: ChildStdin,
}

impl Drop for AuthlibIdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AuthlibIdp {
    pub fn start() -> AuthlibIdp {
        let mut command = Command::new("python3");
        command
            .arg("server.py")
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp-authlib"))
            .env("IDP_BROKER_SECRET", CLIENT_SECRET)
            .env(
                "IDP_REDIRECT_URIS",
                format!("{BROKER_PUBLIC_URL}/api/auth/manager/offline-callback"),
            )
            .stderr(Stdio::null());
        let (child, stdin, ready) = start_provider(command);
        AuthlibIdp {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            child,
            _stdin: stdin,
        }
    }

    /// An access token of the frontend's for `user`, as its sign-in would get.
    pub async fn user_token(&self, user: &str) -> String {
        let body: Value = reqwest::get(format!("{}/__test/user-token?user={user}", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The person signs in at the consent URL and allows offline access; returns where the
    /// provider sent the browser.
    pub async fn sign_in(&self, consent_url: &str, user: &str) -> Url {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let page = http.get(consent_url).send().await.unwrap();
        assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
        let answer = http
            .post(consent_url)
            .form(&[("username", user), ("consent", "yes")])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 302);
        Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap()
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/__test/stats", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn end_sessions(&self, user: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/__test/end-sessions?user={user}", self.issuer))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

/// A broker in front of the Authlib provider; its cache never serves, so every access-token
/// call refreshes there.
async fn broker(pool: PgPool, idp: &AuthlibIdp, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = vec![
        ("OIDC_ISSUER", idp.issuer.clone()),
        ("ACCESS_TOKEN_CACHE_MARGIN_SECS", "100000".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_with(
        pool,
        Options {
            extra: vars,
            ..Options::new(Idp::shared())
        },
    )
    .await
}

async fn activate(app: &TestApp, idp: &AuthlibIdp, bearer: &str, user: &str) -> String {
    let consent = app.consent(bearer, "nightly").await;
    let back = idp.sign_in(&consent.url, user).await;
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    consent.id.to_string()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_core_flow_and_rotating_refreshes_work_with_authlib(pool: PgPool) {
    let idp = AuthlibIdp::start();
    let app = broker(pool, &idp, &[]).await;
    let user = unique_user("pia");
    // RFC 9068: typ at+jwt, client_id and no azp.
    let bearer = idp.user_token(&user).await;
    assert!(claims(&bearer).get("azp").is_none());
    let id = activate(&app, &idp, &bearer, &user).await;

    for round in 1..=3 {
        let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
        assert_eq!(status, 200, "round {round}: {body}");
        let token = claims(body["accessToken"].as_str().unwrap());
        assert_eq!(token["iss"], idp.issuer.as_str());
        assert_eq!(token["sub"], user.as_str());
    }
    // Each refresh spent the previous (rotated) token: the stored one was always the newest.
    assert_eq!(idp.stats().await["refresh"], 3);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn revocation_reaches_the_authlib_provider(pool: PgPool) {
    let idp = AuthlibIdp::start();
    let app = broker(pool, &idp, &[]).await;
    let user = unique_user("quinn");
    let bearer = idp.user_token(&user).await;
    let id = activate(&app, &idp, &bearer, &user).await;

    let (status, body) = json_of(
        app.delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providerRevocation"], "revoked");
    assert_eq!(idp.stats().await["revoked"], 1);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_grant_the_authlib_provider_ended_answers_410_and_is_failed(pool: PgPool) {
    let idp = AuthlibIdp::start();
    let app = broker(pool, &idp, &[]).await;
    let user = unique_user("rosa");
    let bearer = idp.user_token(&user).await;
    let id = activate(&app, &idp, &bearer, &user).await;

    idp.end_sessions(&user).await;
    let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_failed"))
    );
    let (_, row) = json_of(
        app.get_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert_eq!(row["status"], "failed");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn without_prompt_consent_the_authlib_provider_refuses_the_consent_link(pool: PgPool) {
    let idp = AuthlibIdp::start();
    let app = broker(pool, &idp, &[("OIDC_CONSENT_PROMPT", "none")]).await;
    let user = unique_user("sam");
    let consent = app.consent(&idp.user_token(&user).await, "t").await;
    let (status, body) = json_of(reqwest::get(&consent.url).await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({ "error": "invalid_request", "error_description": "consent in prompt" })
        ),
        "why OIDC_CONSENT_PROMPT defaults to consent"
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_wrong_client_secret_at_authlib_keeps_the_grant(pool: PgPool) {
    let idp = AuthlibIdp::start();
    let app = broker(pool.clone(), &idp, &[]).await;
    let user = unique_user("tara");
    let bearer = idp.user_token(&user).await;
    let id = activate(&app, &idp, &bearer, &user).await;

    // A second instance on the same store, deployed with a wrong secret: Authlib answers
    // 401 invalid_client. That is the broker's fault, not the grant's.
    let misconfigured = broker(pool, &idp, &[("OIDC_CLIENT_SECRET", "not-the-secret")]).await;
    let (status, body) = json_of(misconfigured.access_token(&bearer, &id).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("provider_error"))
    );
    let (status, _) = json_of(app.access_token(&bearer, &id).await).await;
    assert_eq!(status, 502, "the row backs off for a while");
    let (_, row) = json_of(
        app.get_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert_eq!(row["status"], "active");
    assert_eq!(row["lastError"], "provider_rejected");
}
