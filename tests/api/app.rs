//! The broker under test, started in-process on a random port against a fresh database.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Response;
use serde_json::{json, Value};
use sqlx::PgPool;
use token_broker::app::{wire, Application, Wired};
use token_broker::config::Config;
use token_broker::crypto::{Binding, Keyring, Sealed};
use token_broker::vault::PgVault;
use url::Url;
use uuid::Uuid;

use crate::idp::{Browser, Idp, BROKER_CLIENT, BROKER_PUBLIC_URL, CLIENT_SECRET};

pub const TEST_KEYS: &str = "test-1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
pub const FRONTEND_ORIGIN: &str = "http://frontend.test";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub keys: String,
}

/// Settings a test may change; everything else is the ordinary configuration.
pub struct Options<'a> {
    pub idp: &'a Idp,
    pub client_id: &'a str,
    pub keys: &'a str,
    /// More environment variables, e.g. a webhook.
    pub extra: Vec<(&'static str, String)>,
}

impl<'a> Options<'a> {
    pub fn new(idp: &'a Idp) -> Self {
        Self {
            idp,
            client_id: BROKER_CLIENT,
            keys: TEST_KEYS,
            extra: Vec::new(),
        }
    }
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_with(pool, Options::new(Idp::shared())).await
}

pub async fn spawn_with(pool: PgPool, options: Options<'_>) -> TestApp {
    let mut vars = HashMap::from([
        ("DATABASE_URL", "postgres://unused-in-tests".to_owned()),
        ("OIDC_ISSUER", options.idp.issuer.clone()),
        ("OIDC_CLIENT_ID", options.client_id.to_owned()),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
        ("PUBLIC_BASE_URL", BROKER_PUBLIC_URL.to_owned()),
        ("TOKEN_ENCRYPTION_KEYS", options.keys.to_owned()),
        ("ALLOWED_REDIRECT_ORIGINS", FRONTEND_ORIGIN.to_owned()),
        // The platform's frontend and the CLI: the clients whose users' tokens may call.
        (
            "OIDC_AUTHORIZED_PARTIES",
            "frontend,token-broker-cli".to_owned(),
        ),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        // Tests send bursts from one address; the rate limit has tests of its own.
        ("RATE_LIMIT_PER_SECOND", "0".to_owned()),
    ]);
    vars.extend(options.extra);
    let config = Config::from_lookup(|k| vars.get(k).cloned(), false).expect("test configuration");
    let vault = Arc::new(PgVault::new(pool.clone()));
    let Wired {
        services,
        journal,
        keepalive,
        cors,
        ..
    } = wire(config, vault).await.expect("broker starts");
    // Keep-alive runs as under `serve`; the clean-up job is called by the tests that need it.
    tokio::spawn(token_broker::grants::keepalive::run_periodically(
        services.refresher.clone(),
        services.vault.clone(),
        journal,
        keepalive,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::with_listener(listener, services, &cors);
    let addr = app.local_addr().unwrap();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        pool,
        keys: options.keys.to_owned(),
    }
}

/// A consent as the API returned it.
pub struct Consent {
    pub id: Uuid,
    pub url: String,
    pub state: String,
}

impl TestApp {
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub async fn request_consent(&self, bearer: &str, body: Value) -> Response {
        self.post("/api/auth/manager/offline-consent", Some(bearer), body)
            .await
    }

    pub async fn consent(&self, bearer: &str, task: &str) -> Consent {
        let response = self
            .request_consent(bearer, json!({ "taskId": task }))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        Consent {
            id: body["persistentTokenId"].as_str().unwrap().parse().unwrap(),
            url: body["consentUrl"].as_str().unwrap().to_owned(),
            state: body["stateToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Delivers the provider's redirect (aimed at the public URL) to this broker instance.
    pub async fn deliver_callback(&self, provider_redirect: &Url) -> Response {
        assert!(
            provider_redirect.as_str().starts_with(BROKER_PUBLIC_URL),
            "provider redirected elsewhere: {provider_redirect}"
        );
        let path_and_query = &provider_redirect.as_str()[BROKER_PUBLIC_URL.len()..];
        self.get(path_and_query).await
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_as(&self, bearer: &str, path_and_query: &str) -> Response {
        self.http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_as(&self, bearer: &str, path: &str) -> Response {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
    }

    /// Signs `user` in at the provider through the consent URL and returns where it sent us.
    pub async fn sign_in(&self, consent_url: &str, user: &str, grant_offline: bool) -> Url {
        Browser::new()
            .sign_in(consent_url, user, grant_offline)
            .await
    }

    /// The whole happy path for `user`: consent, sign-in, callback. Returns the token id.
    pub async fn activate(&self, bearer: &str, user: &str, task: &str) -> Uuid {
        let consent = self.consent(bearer, task).await;
        let back = self.sign_in(&consent.url, user, true).await;
        let response = self.deliver_callback(&back).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        consent.id
    }

    pub async fn access_token(&self, bearer: &str, id: &str) -> Response {
        self.post(
            "/api/auth/manager/access-token",
            Some(bearer),
            json!({ "persistentTokenId": id }),
        )
        .await
    }

    pub async fn row(&self, id: Uuid) -> Row {
        sqlx::query_as(
            "select status, status_reason, user_id, state_hash, \
             pkce_verifier, encrypted_token, iv, key_id, last_used_at is not null as used \
             from token_vault where id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The `(actor, reason)` of a row's audit records of one action, waiting up to five
    /// seconds for the first: some records (a delegate's redemption) are written in batches
    /// after the answer has gone out.
    pub async fn audit_records(&self, id: Uuid, action: &str) -> Vec<(String, Option<String>)> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let records: Vec<(String, Option<String>)> = sqlx::query_as(
                "select actor, reason from token_audit where token_id = $1 and action = $2 \
                 order by id",
            )
            .bind(id)
            .bind(action)
            .fetch_all(&self.pool)
            .await
            .unwrap();
            if !records.is_empty() || std::time::Instant::now() > until {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Opens the stored offline token with the test keys, as only the broker could.
    pub async fn stored_refresh_token(&self, id: Uuid) -> String {
        let row = self.row(id).await;
        let sealed = Sealed {
            key_id: row.key_id.clone().unwrap(),
            nonce: row.iv.clone().unwrap(),
            ciphertext: row.encrypted_token.clone().unwrap(),
        };
        let keyring = Keyring::parse(&self.keys).unwrap();
        let plain = keyring
            .open(
                &sealed,
                Binding {
                    purpose: "refresh_token",
                    row_id: id,
                    user_id: &row.user_id,
                },
            )
            .unwrap();
        String::from_utf8(plain.to_vec()).unwrap()
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub status: String,
    pub status_reason: Option<String>,
    pub user_id: String,
    pub state_hash: Option<Vec<u8>>,
    pub pkce_verifier: Option<Vec<u8>>,
    pub encrypted_token: Option<Vec<u8>>,
    pub iv: Option<Vec<u8>>,
    pub key_id: Option<String>,
    pub used: bool,
}

/// A broker and a fresh user who has just asked it for a consent.
pub struct Scene {
    pub app: TestApp,
    pub user: String,
    pub consent: Consent,
}

pub async fn user_with_consent(pool: PgPool) -> Scene {
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;
    Scene { app, user, consent }
}

/// A broker whose provider client rotates refresh tokens on every use.
pub async fn spawn_rotating(pool: PgPool, idp: &Idp) -> TestApp {
    spawn_with(
        pool,
        Options {
            client_id: crate::idp::ROTATING_CLIENT,
            ..Options::new(idp)
        },
    )
    .await
}

/// A user name no other test uses, so tests can share one provider.
pub fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}
