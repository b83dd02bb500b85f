//! The broker against Keycloak itself (`scripts/keycloak start`, which `scripts/test` runs):
//! the realm operators copy (`deploy/keycloak/realm-sbo.json`), signed into through Keycloak's
//! real login form over plain HTTP with cookies, and Keycloak's admin API to end grants and
//! look at its offline sessions.
//!
//! `KEYCLOAK_URL` names the running Keycloak. Without it these tests say so and pass, unless
//! `REQUIRE_KEYCLOAK` is set (as `scripts/test` sets it), which makes a missing Keycloak fail.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use url::Url;
use uuid::Uuid;

use crate::access::claims;
use crate::app::{spawn_with, Options, TestApp};
use crate::cli::{cli, finish_lines, output_of, spawn_lines, temp_config, text};
use crate::idp::Idp;
use crate::task_keys::create_key;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// The realm operators copy; `realm-rotation` (tests/keycloak/) turns rotation on.
const REALM: &str = "sbo";
/// What the realm registers for the broker: its public URL and secret.
const BROKER_URL: &str = "http://localhost:8080";
const BROKER_SECRET: &str = "change-me-broker-secret";
const RUNNER_SECRET: &str = "change-me-job-runner-secret";
const APP_REDIRECT: &str = "http://localhost:3000/cb";

/// A running Keycloak, or `None` (and a line saying so) when there is none to test against.
pub(crate) fn keycloak() -> Option<Keycloak> {
    match std::env::var("KEYCLOAK_URL") {
        Ok(url) => Some(Keycloak::new(url.trim_end_matches('/'))),
        Err(_) if std::env::var_os("REQUIRE_KEYCLOAK").is_some() => {
            panic!("REQUIRE_KEYCLOAK is set but KEYCLOAK_URL is not: run scripts/keycloak start")
        }
        Err(_) => {
            eprintln!("KEYCLOAK_URL is not set: Keycloak test skipped (scripts/test runs them)");
            None
        }
    }
}

pub struct Keycloak {
    pub base: String,
    realm: String,
    pub issuer: String,
    http: reqwest::Client,
}

/// A browser's cookies at Keycloak, kept by hand: Keycloak marks them `Secure`, which a cookie
/// store will not send over plain HTTP to 127.0.0.1 (browsers treat loopback as secure).
#[derive(Default)]
pub struct Jar(HashMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let pair = value.to_str().unwrap_or_default().split(';').next();
            if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn pkce() -> (String, String) {
    let verifier = token_broker::crypto::random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The `name`/`value` of every hidden input of a page (Keycloak's grant form carries a code).
fn hidden_inputs(page: &str) -> Vec<(String, String)> {
    page.split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            let attribute = |name: &str| {
                let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
                let end = tag[start..].find('"')? + start;
                Some(tag[start..end].replace("&amp;", "&"))
            };
            Some((attribute("name")?, attribute("value").unwrap_or_default()))
        })
        .collect()
}

fn form_action(page: &str) -> Option<String> {
    let start = page.find("action=\"")? + "action=\"".len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].replace("&amp;", "&"))
}

impl Keycloak {
    fn new(base: &str) -> Self {
        Self::in_realm(base, REALM)
    }

    /// The same Keycloak, another of its realms.
    pub fn in_realm(base: &str, realm: &str) -> Self {
        Self {
            base: base.to_owned(),
            realm: realm.to_owned(),
            issuer: format!("{base}/realms/{realm}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/protocol/openid-connect/{name}", self.issuer)
    }

    /// Follows a URL at Keycloak as a browser would: its login form (if this browser has no
    /// session there) with `user`'s password, its grant page (device flow, or a client with
    /// "Consent required") accepted, redirects within Keycloak followed. Returns the last
    /// answer: a redirect out of Keycloak (its `Location`), or a page.
    async fn browse(&self, jar: &mut Jar, url: &str, user: &str) -> Result<Url, String> {
        let mut response = self.get_with(jar, url).await;
        for _ in 0..10 {
            if response.status().is_redirection() {
                let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
                let next = Url::parse(&self.base).unwrap().join(&location).unwrap();
                if !next.as_str().starts_with(&self.base) {
                    return Ok(next);
                }
                response = self.get_with(jar, next.as_str()).await;
                continue;
            }
            let page = response.text().await.unwrap();
            let Some(action) = form_action(&page) else {
                return Err(page);
            };
            let action = Url::parse(&self.base).unwrap().join(&action).unwrap();
            let mut fields: Vec<(String, String)> = hidden_inputs(&page);
            if page.contains("name=\"password\"") {
                fields.push(("username".into(), user.into()));
                fields.push(("password".into(), user.into()));
            } else if page.contains("name=\"accept\"") {
                fields.push(("accept".into(), "Yes".into()));
            } else {
                return Err(page);
            }
            response = self
                .http
                .post(action)
                .header(COOKIE, jar.header())
                .form(&fields)
                .send()
                .await
                .unwrap();
            jar.take(&response);
        }
        Err("too many steps".into())
    }

    async fn get_with(&self, jar: &mut Jar, url: &str) -> reqwest::Response {
        let response = self
            .http
            .get(url)
            .header(COOKIE, jar.header())
            .send()
            .await
            .unwrap();
        jar.take(&response);
        response
    }

    /// Signs `user` in through an authorization URL; where Keycloak sent the browser back.
    pub async fn sign_in(&self, jar: &mut Jar, authorization_url: &str, user: &str) -> Url {
        match self.browse(jar, authorization_url, user).await {
            Ok(back) => back,
            Err(page) => panic!("Keycloak's sign-in ended on a page: {page:.600}"),
        }
    }

    /// Approves a device code at Keycloak's device page as `user`; the page it ends on.
    pub async fn approve_device(&self, verification_url: &str, user: &str) -> String {
        match self
            .browse(&mut Jar::default(), verification_url, user)
            .await
        {
            Err(page) => page,
            Ok(elsewhere) => panic!("the device approval left Keycloak for {elsewhere}"),
        }
    }

    /// `user`'s access token as an app of the realm (`client`, with its secret when it is
    /// confidential) holds it after an authorization-code sign-in with PKCE.
    pub async fn user_token(&self, client: &str, secret: Option<&str>, user: &str) -> String {
        let (verifier, challenge) = pkce();
        let mut url = Url::parse(&self.endpoint("auth")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", client)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", APP_REDIRECT)
            .append_pair("scope", "openid")
            .append_pair("state", "app")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let back = self.sign_in(&mut Jar::default(), url.as_str(), user).await;
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let mut request = self.http.post(self.endpoint("token")).form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", APP_REDIRECT),
            ("code_verifier", verifier.as_str()),
            ("client_id", client),
        ]);
        if let Some(secret) = secret {
            request = request.basic_auth(client, Some(secret));
        }
        let tokens: Value = request.send().await.unwrap().json().await.unwrap();
        tokens["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// A client-credentials token of `client`'s service account.
    pub async fn service_account_token(&self, client: &str, secret: &str) -> String {
        let tokens: Value = self
            .http
            .post(self.endpoint("token"))
            .basic_auth(client, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"].as_str().expect("a token").to_owned()
    }

    /// A refresh at Keycloak's token endpoint as the broker's client: status and answer.
    pub async fn refresh(&self, refresh_token: &str, scope: Option<&str>) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(self.endpoint("token"))
            .basic_auth("token-broker", Some(BROKER_SECRET))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin_token(&self) -> String {
        let tokens: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.base
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    /// `GET` on the realm's admin API.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/admin/realms/{}{path}", self.base, self.realm))
            .bearer_auth(self.admin_token().await)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `PUT` on the realm's admin API; the status.
    pub async fn admin_put(&self, path: &str, body: Value) -> u16 {
        self.http
            .put(format!("{}/admin/realms/{}{path}", self.base, self.realm))
            .bearer_auth(self.admin_token().await)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `DELETE` on the realm's admin API; the status.
    pub async fn admin_delete(&self, path: &str) -> u16 {
        self.http
            .delete(format!("{}/admin/realms/{}{path}", self.base, self.realm))
            .bearer_auth(self.admin_token().await)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A new user of the realm (password = user name), with the realm's default roles, which
    /// include `offline_access`. Each test signs in as its own user: Keycloak ends every
    /// offline token of a user for a client at once, so tests sharing one would end each
    /// other's grants.
    pub async fn new_user(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..10]);
        let created = self
            .http
            .post(format!("{}/admin/realms/{}/users", self.base, self.realm))
            .bearer_auth(self.admin_token().await)
            .json(&json!({
                "username": name, "enabled": true, "email": format!("{name}@example.org"),
                "emailVerified": true, "firstName": "Test", "lastName": "User",
                "credentials": [{ "type": "password", "value": name, "temporary": false }],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
        name
    }

    /// The internal id of a client of the realm.
    pub async fn client_uuid(&self, client_id: &str) -> String {
        let found = self
            .admin_get(&format!("/clients?clientId={client_id}"))
            .await;
        found[0]["id"].as_str().unwrap().to_owned()
    }

    /// The offline sessions `user` (by `sub`) holds for `client_id`.
    pub async fn offline_sessions(&self, sub: &str, client_id: &str) -> Vec<Value> {
        let client = self.client_uuid(client_id).await;
        let sessions = self
            .admin_get(&format!("/users/{sub}/offline-sessions/{client}"))
            .await;
        sessions.as_array().cloned().unwrap_or_default()
    }
}

/// Keycloak refuses `stored` as a dead grant (`400 invalid_grant`); its answer is printed under
/// `situation` for the refusal table in docs/providers.md.
pub(crate) async fn keycloak_refuses(kc: &Keycloak, stored: &str, situation: &str) {
    let (status, answer) = kc.refresh(stored, None).await;
    eprintln!("keycloak refusal, {situation}: {status} {answer}");
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant")),
        "{answer}"
    );
}

/// The row failed because the provider ended its grant.
pub(crate) async fn assert_failed_by_provider(app: &TestApp, id: Uuid) {
    let row = app.row(id).await;
    assert_eq!(
        (row.status.as_str(), row.status_reason.as_deref()),
        ("failed", Some("revoked_by_provider"))
    );
}

/// A broker on `pool` that uses Keycloak's `sbo` realm as the operators' copy configures it.
pub(crate) async fn broker(pool: PgPool, kc: &Keycloak, extra: &[(&'static str, &str)]) -> TestApp {
    let mut options = Options::new(Idp::shared());
    options.extra = vec![
        ("OIDC_ISSUER", kc.issuer.clone()),
        ("OIDC_CLIENT_SECRET", BROKER_SECRET.to_owned()),
        ("PUBLIC_BASE_URL", BROKER_URL.to_owned()),
        (
            "OIDC_AUTHORIZED_PARTIES",
            "frontend,token-broker-cli,job-runner".to_owned(),
        ),
        ("DELEGATE_CLIENTS", "job-runner".to_owned()),
        ("PROVIDER_REVOCATION", "keycloak".to_owned()),
    ];
    options
        .extra
        .extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_with(pool, options).await
}

/// A new user of the realm who signed in to the frontend and then consented through Keycloak's
/// login form: their bearer token, their `sub`, and the row's id.
pub(crate) struct Consented {
    pub bearer: String,
    pub sub: String,
    pub id: Uuid,
}

pub(crate) async fn consented(app: &TestApp, kc: &Keycloak, body: Value) -> Consented {
    let name = kc.new_user("alice").await;
    let bearer = kc.user_token("frontend", None, &name).await;
    let sub = claims(&bearer)["sub"].as_str().unwrap().to_owned();
    let response = app.request_consent(&bearer, body).await;
    assert_eq!(response.status(), 201);
    let consent: Value = response.json().await.unwrap();
    let back = kc
        .sign_in(
            &mut Jar::default(),
            consent["consentUrl"].as_str().unwrap(),
            &name,
        )
        .await;
    assert!(
        back.as_str().starts_with(BROKER_URL),
        "Keycloak sent the browser to {back}"
    );
    let path = &back.as_str()[BROKER_URL.len()..];
    let done = app.get(path).await;
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    let id = consent["persistentTokenId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    Consented { bearer, sub, id }
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_a_consent_through_its_login_form_gives_an_active_row_and_tokens(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let Consented {
        bearer,
        sub: alice,
        id,
    } = consented(&app, &kc, json!({ "taskId": "kc-nightly" })).await;
    let row = app.row(id).await;
    assert_eq!(
        (row.status.as_str(), row.user_id.as_str()),
        ("active", alice.as_str())
    );
    // The offline token is Keycloak's: an `Offline` token of an offline session it keeps.
    let stored = app.stored_refresh_token(id).await;
    assert_eq!(claims(&stored)["typ"], "Offline");
    let sessions = kc.offline_sessions(&alice, "token-broker").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let response = app.access_token(&bearer, &id.to_string()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let minted = claims(body["accessToken"].as_str().unwrap());
    assert_eq!(minted["sub"], alice.as_str());
    assert_eq!(minted["azp"], "token-broker");
    assert_eq!(minted["iss"], kc.issuer.as_str());
}

/// DELETE revokes at Keycloak (RFC 7009): its offline session for the broker is gone.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_delete_ends_the_offline_session_at_keycloak(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let Consented {
        bearer,
        sub: alice,
        id,
    } = consented(&app, &kc, json!({ "taskId": "kc-revoke" })).await;
    let stored = app.stored_refresh_token(id).await;
    assert!(!kc.offline_sessions(&alice, "token-broker").await.is_empty());
    let revoked = app
        .delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    assert_eq!(revoked.status(), 200);
    let body: Value = revoked.json().await.unwrap();
    assert_eq!(body["providerRevocation"], "revoked");
    let left = kc.offline_sessions(&alice, "token-broker").await;
    assert!(left.is_empty(), "{left:?}");
    keycloak_refuses(&kc, &stored, "a token revoked through RFC 7009").await;
}

/// The grant ended at Keycloak by an administrator (the user's consent to the broker
/// revoked, which ends its offline tokens): the next refresh gets `invalid_grant`, and the
/// broker answers 410 and fails the row, as docs/reliability.md promises.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_a_grant_an_admin_ended_answers_410_and_fails_the_row(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let Consented {
        bearer,
        sub: alice,
        id,
    } = consented(&app, &kc, json!({ "taskId": "kc-ended" })).await;
    let stored = app.stored_refresh_token(id).await;
    let status = kc
        .admin_delete(&format!("/users/{alice}/consents/token-broker"))
        .await;
    assert_eq!(status, 204);
    keycloak_refuses(&kc, &stored, "grant ended by an admin").await;
    let response = app.access_token(&bearer, &id.to_string()).await;
    assert_eq!(response.status(), 410);
    assert_failed_by_provider(&app, id).await;
}

/// The user revoking the app in Keycloak's account console (its account REST API, called with
/// the user's own token, as the console calls it): Keycloak ends the broker's offline tokens,
/// and the next refresh answers 410 and fails the row.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_the_user_revoking_the_app_in_the_account_console_ends_the_grant(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let Consented { bearer, sub, id } =
        consented(&app, &kc, json!({ "taskId": "kc-account-revoked" })).await;
    let stored = app.stored_refresh_token(id).await;
    let revoked = reqwest::Client::new()
        .delete(format!(
            "{}/account/applications/token-broker/consent",
            kc.issuer
        ))
        .bearer_auth(&bearer)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204, "{}", revoked.text().await.unwrap());
    assert!(kc.offline_sessions(&sub, "token-broker").await.is_empty());
    keycloak_refuses(&kc, &stored, "the app revoked by the user").await;
    let response = forced_refresh(&app, &bearer, id).await;
    assert_eq!(response.status(), 410);
    assert_failed_by_provider(&app, id).await;
}

/// Delegation with a real service account: Keycloak writes `client_id` = `azp` into a
/// client-credentials token and into no user token, so the service account redeems the row
/// its consent named and a user's token of the same client gets 404.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_only_the_delegates_service_account_redeems_the_row(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let body = json!({ "taskId": "kc-batch", "delegates": ["job-runner"] });
    let Consented { id, .. } = consented(&app, &kc, body).await;
    let runner = kc.service_account_token("job-runner", RUNNER_SECRET).await;
    let account = claims(&runner);
    eprintln!("keycloak service-account token claims: {account}");
    assert_eq!(account["azp"], "job-runner");
    assert_eq!(account["client_id"], "job-runner");
    assert_eq!(account["preferred_username"], "service-account-job-runner");
    let someone = kc.new_user("someone").await;
    let user_of_runner = kc
        .user_token("job-runner", Some(RUNNER_SECRET), &someone)
        .await;
    let user = claims(&user_of_runner);
    eprintln!("keycloak user token of the same client: {user}");
    assert_eq!(user["azp"], "job-runner");
    assert!(user.get("client_id").is_none());

    let served = app.access_token(&runner, &id.to_string()).await;
    assert_eq!(served.status(), 200);
    let refused = app.access_token(&user_of_runner, &id.to_string()).await;
    assert_eq!(refused.status(), 404);
    let records = app.audit_records(id, "delegate_used").await;
    assert!(
        records
            .iter()
            .any(|(actor, reason)| actor == "client:job-runner"
                && reason.as_deref() == Some(&format!("sub:{}", account["sub"].as_str().unwrap()))),
        "{records:?}"
    );
}

/// Narrowing on a refresh, against the shipped realm: Keycloak 26 honours `scope` but always
/// keeps the client's default scopes (`profile email` for the broker's client), so a key
/// limited to `openid` would get `openid profile email`. The broker checks what came back and
/// refuses it; a key limited to the default set itself is served. Keycloak's own refusal of a
/// scope outside the grant is a 400 `invalid_scope`, not an outage.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_narrowing_is_checked_against_what_keycloak_answers(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let Consented { bearer, id, .. } = consented(&app, &kc, json!({ "taskId": "kc-narrow" })).await;
    let stored = app.stored_refresh_token(id).await;
    let (status, answer) = kc.refresh(&stored, Some("openid")).await;
    eprintln!(
        "keycloak refresh narrowed to openid: {status} scope={}",
        answer["scope"]
    );
    let (status, answer) = kc.refresh(&stored, Some("openid phone")).await;
    eprintln!("keycloak refusal, scope outside the grant: {status} {answer}");
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    let redeem = |key: String| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(format!("{}/api/auth/manager/access-token", app.base))
                .bearer_auth(key)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let only_openid = create_key(&app, &bearer, id, json!({ "scope": "openid" })).await;
    let (status, body) = redeem(only_openid).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("scope_not_narrowed")),
        "{body}"
    );
    let defaults = create_key(
        &app,
        &bearer,
        id,
        json!({ "scope": "openid profile email" }),
    )
    .await;
    let (status, body) = redeem(defaults).await;
    assert_eq!(status, 200, "{body}");
    let minted = claims(body["accessToken"].as_str().unwrap());
    // Keycloak writes scopes in no fixed order: compare them as sets.
    let mut scopes: Vec<&str> = minted["scope"].as_str().unwrap().split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "openid", "profile"]);
    let response = app
        .post(
            "/api/auth/manager/access-token",
            Some(&bearer),
            json!({ "persistentTokenId": id, "scope": "openid phone" }),
        )
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

/// Rotation on (`revokeRefreshToken`, `refreshTokenMaxReuse` 0: a refresh token works once),
/// three broker instances on one PostgreSQL database, a burst of concurrent calls: Keycloak
/// sees exactly one refresh, and its event log no refresh error (no "Stale token", no reuse).
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_three_instances_refresh_a_rotating_grant_exactly_once(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let kc = Keycloak::in_realm(&kc.base, "rotation");
    let first = broker(pool.clone(), &kc, &[]).await;
    let second = broker(pool.clone(), &kc, &[]).await;
    let third = broker(pool, &kc, &[]).await;
    let Consented { bearer, id, sub } =
        consented(&first, &kc, json!({ "taskId": "kc-rotating" })).await;
    let client = kc.client_uuid("token-broker").await;
    let id_text = id.to_string();
    let mut calls = Vec::new();
    for round in 0..30 {
        let app = [&first, &second, &third][round % 3];
        calls.push(app.access_token(&bearer, &id_text));
    }
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let events = kc
        .admin_get(&format!("/events?user={sub}&client=token-broker&max=1000"))
        .await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    eprintln!("keycloak events for the rotating grant: {kinds:?} (client {client})");
    assert_eq!(
        kinds.iter().filter(|k| **k == "REFRESH_TOKEN").count(),
        1,
        "one refresh for one token lifetime: {kinds:?}"
    );
    assert!(!kinds.contains(&"REFRESH_TOKEN_ERROR"), "{events}");
    // The rotated token is the one stored: it refreshes again, the first one does not.
    let stored = first.stored_refresh_token(id).await;
    let (status, _) = kc.refresh(&stored, None).await;
    assert_eq!(status, 200, "the stored token is the live one");
}

/// A refresh that cannot be served from what is stored: narrowed to the client's default
/// scopes, which Keycloak answers exactly (see the narrowing test), so it always asks.
pub(crate) async fn forced_refresh(app: &TestApp, bearer: &str, id: Uuid) -> reqwest::Response {
    app.post(
        "/api/auth/manager/access-token",
        Some(bearer),
        json!({ "persistentTokenId": id, "scope": "openid profile email" }),
    )
    .await
}

/// A user disabled at Keycloak: the next refresh is refused as a dead grant (410, row failed),
/// and one user's ended grant does not trip the breaker for everyone else.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_a_disabled_user_ends_that_grant_and_no_other(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[("PROVIDER_BREAKER_THRESHOLD", "2")]).await;
    let gone = consented(&app, &kc, json!({ "taskId": "kc-disabled" })).await;
    let other = consented(&app, &kc, json!({ "taskId": "kc-other" })).await;
    let stored = app.stored_refresh_token(gone.id).await;
    let status = kc
        .admin_put(&format!("/users/{}", gone.sub), json!({ "enabled": false }))
        .await;
    assert_eq!(status, 204);
    keycloak_refuses(&kc, &stored, "user disabled").await;
    for _ in 0..3 {
        let response = forced_refresh(&app, &gone.bearer, gone.id).await;
        assert_eq!(response.status(), 410);
    }
    assert_failed_by_provider(&app, gone.id).await;
    for _ in 0..3 {
        let response = forced_refresh(&app, &other.bearer, other.id).await;
        assert_eq!(response.status(), 200, "the breaker stayed closed");
    }
}

/// The broker itself misconfigured (its client secret rotated at Keycloak, the old one still
/// configured): Keycloak refuses the client, the broker answers 502 and keeps the grant.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_a_wrong_client_secret_is_a_502_and_the_grant_is_kept(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool.clone(), &kc, &[]).await;
    let Consented { bearer, id, .. } = consented(&app, &kc, json!({ "taskId": "kc-secret" })).await;
    let stale = broker(
        pool,
        &kc,
        &[("OIDC_CLIENT_SECRET", "the-secret-before-rotation")],
    )
    .await;
    let response = forced_refresh(&stale, &bearer, id).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "provider_error");
    let row = stale.row(id).await;
    assert_eq!(row.status, "active", "the grant is kept");
    let (status, answer) = {
        let response = reqwest::Client::new()
            .post(kc.endpoint("token"))
            .basic_auth("token-broker", Some("the-secret-before-rotation"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or_default())
    };
    eprintln!("keycloak refusal, wrong client secret: {status} {answer}");
    assert_eq!(answer["error"], "unauthorized_client");
}

/// The CLI against Keycloak: `login --offline` with the device flow, approved on Keycloak's
/// device page (sign-in, then its grant page); then `consent --wait`, `token`, and a task
/// key's `task-token --sink` writing a fresh access token into a file.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn keycloak_the_cli_logs_in_with_the_device_flow_and_drives_the_broker(pool: PgPool) {
    let Some(kc) = keycloak() else { return };
    let app = broker(pool, &kc, &[]).await;
    let user = kc.new_user("grace").await;
    let config = temp_config();
    let login = cli(&config, &["login", "--offline", "--issuer", &kc.issuer]);
    let (login, mut lines) = spawn_lines(login);
    let complete = loop {
        let line = lines.recv().await.expect("login shows the code");
        if let Some(url) = line.strip_prefix("Or open: ") {
            break url.to_owned();
        }
    };
    let page = kc.approve_device(&complete, &user).await;
    assert!(
        !page.contains("<form"),
        "approval ended on a form: {page:.600}"
    );
    let (done, _) = finish_lines(login, lines).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    let run = |args: &[&str]| {
        let mut command = cli(&config, args);
        command.env("TOKEN_BROKER_URL", &app.base);
        output_of(command)
    };
    let whoami = run(&["whoami"]).await;
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));

    let mut waiting = cli(&config, &["consent", "--task", "kc-cli", "--wait"]);
    waiting.env("TOKEN_BROKER_URL", &app.base);
    let (waiting, mut lines) = spawn_lines(waiting);
    let consent_url = lines.recv().await.expect("consent prints the URL first");
    let back = kc.sign_in(&mut Jar::default(), &consent_url, &user).await;
    let path = &back.as_str()[BROKER_URL.len()..];
    assert_eq!(app.get(path).await.status(), 200);
    let (done, last) = finish_lines(waiting, lines).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    let last = last.expect("a final status line");
    let (id, rest) = last.split_once(' ').unwrap();
    assert_eq!(rest, "active task=kc-cli");

    let token = run(&["token", id]).await;
    assert!(token.status.success(), "{}", text(&token.stderr));
    let minted = claims(text(&token.stdout).trim());
    assert_eq!(minted["iss"], kc.issuer.as_str());
    assert_eq!(minted["azp"], "token-broker");

    let key = run(&["task-key", "create", id, "--name", "kc"]).await;
    assert!(key.status.success(), "{}", text(&key.stderr));
    let key = text(&key.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("tbk_"))
        .expect("the key is printed")
        .to_owned();
    let sink = config.with_file_name("task-token");
    let mut helper = cli(&config, &["task-token", "--sink", sink.to_str().unwrap()]);
    helper
        .env("TOKEN_BROKER_URL", &app.base)
        .env("TOKEN_BROKER_TASK_KEY", &key);
    let written = output_of(helper).await;
    assert!(written.status.success(), "{}", text(&written.stderr));
    let file = std::fs::read_to_string(&sink).unwrap();
    assert_eq!(claims(file.trim())["iss"], kc.issuer.as_str());
}
