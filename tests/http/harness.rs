//! The broker's router in-process, in milliseconds: an in-memory SQLite vault, a local ES256
//! key standing in for the provider's, requests sent with `tower::ServiceExt::oneshot`. No
//! Node, no PostgreSQL. By default the provider's endpoints point at a closed port, so anything
//! that would call it answers as if the provider were down; [`Harness::scripted`] points them
//! at a [`ScriptedProvider`] whose answers the test writes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::provider::ScriptedProvider;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use axum::Router;
use chrono::Utc;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::SqlitePool;
use token_broker::app::{assemble, Wired};
use token_broker::config::Config;
use token_broker::crypto::{purpose, Binding, Keyring};
use token_broker::http::router;
use token_broker::oidc::{JwksCache, ProviderMetadata};
use token_broker::vault::{Activation, NewConsent, SqliteVault, TokenVault};
use tower::ServiceExt;
use uuid::Uuid;

pub const ISSUER: &str = "http://idp.test/realms/test";
pub const KEYS: &str = "test-1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
pub const FRONTEND_ORIGIN: &str = "http://frontend.test";
const KID: &str = "local-es256";
/// Nothing listens here: a refresh or revocation at "the provider" fails at once.
const CLOSED: &str = "http://127.0.0.1:9";

/// An ES256 key pair: signs bearer tokens, and its public half is the provider's JWKS.
pub struct Signer {
    encoding: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new() -> Self {
        Self::with_kid(KID)
    }

    /// A fresh key pair published under `kid`.
    pub fn with_kid(kid: &str) -> Self {
        let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let b64 = |bytes: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
            }),
        }
    }

    /// The public key, as the provider's JWKS lists it.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims`; `header` fields (`kid`, `typ`) override the defaults.
    pub fn sign(&self, claims: &Value, header: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        let own_kid = self.jwk["kid"].as_str().unwrap_or(KID);
        h.kid = Some(header["kid"].as_str().unwrap_or(own_kid).to_owned());
        h.typ = header["typ"]
            .as_str()
            .map(str::to_owned)
            .or(Some("JWT".into()));
        encode(&h, claims, &self.encoding).unwrap()
    }
}

/// What came back.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub struct Harness {
    router: Router,
    pub vault: Arc<dyn TokenVault>,
    pub pool: SqlitePool,
    pub keyring: Keyring,
    pub signer: Arc<Signer>,
    /// Where the provider's token, revocation and JWKS endpoints are.
    provider: String,
    /// A second key under the same `kid` the provider never published.
    pub impostor: Arc<Signer>,
}

pub fn now() -> i64 {
    Utc::now().timestamp()
}

/// Claims of a good access token of the frontend for `sub`.
pub fn claims_for(sub: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": sub, "aud": "account", "azp": "frontend", "typ": "Bearer",
        "iat": now(), "exp": now() + 300,
    })
}

/// Claims of a client-credentials token of `client`'s service account, as Keycloak 26 writes
/// them: `azp` and `client_id` the client, user name `service-account-<client>`.
pub fn service_account_claims(client: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": format!("0b5e-{client}-sa"), "aud": "account", "azp": client,
        "client_id": client, "preferred_username": format!("service-account-{client}"),
        "typ": "Bearer", "iat": now(), "exp": now() + 300,
    })
}

pub fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(&[]).await
    }

    /// A broker with extra environment variables.
    pub async fn with(extra: &[(&str, &str)]) -> Harness {
        let sqlite = SqliteVault::connect("sqlite::memory:").await.unwrap();
        sqlite.migrate().await.unwrap();
        let pool = sqlite.pool().clone();
        Self::build(
            extra,
            Arc::new(sqlite),
            pool,
            Arc::new(Signer::new()),
            CLOSED,
        )
        .await
        .unwrap()
    }

    /// A broker whose provider answers as the test scripts it.
    pub async fn scripted(extra: &[(&str, &str)]) -> (Harness, ScriptedProvider) {
        let sqlite = SqliteVault::connect("sqlite::memory:").await.unwrap();
        sqlite.migrate().await.unwrap();
        let pool = sqlite.pool().clone();
        let signer = Arc::new(Signer::new());
        let provider = ScriptedProvider::start(ISSUER, signer.jwk()).await;
        let harness = Self::build(extra, Arc::new(sqlite), pool, signer, &provider.base)
            .await
            .unwrap();
        (harness, provider)
    }

    /// Another broker instance on the same vault and provider keys, configured with `extra`.
    pub async fn beside(&self, extra: &[(&str, &str)]) -> Harness {
        self.try_beside(extra).await.unwrap()
    }

    /// Like [`beside`](Self::beside), for brokers that may refuse to start.
    pub async fn try_beside(
        &self,
        extra: &[(&str, &str)],
    ) -> Result<Harness, token_broker::app::StartupError> {
        Self::build(
            extra,
            self.vault.clone(),
            self.pool.clone(),
            self.signer.clone(),
            &self.provider,
        )
        .await
    }

    async fn build(
        extra: &[(&str, &str)],
        vault: Arc<dyn TokenVault>,
        pool: SqlitePool,
        signer: Arc<Signer>,
        provider: &str,
    ) -> Result<Harness, token_broker::app::StartupError> {
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", "sqlite::memory:".to_owned()),
            ("OIDC_ISSUER", ISSUER.to_owned()),
            ("OIDC_CLIENT_ID", "token-broker".to_owned()),
            ("OIDC_CLIENT_SECRET", "broker-secret".to_owned()),
            ("PUBLIC_BASE_URL", "http://broker.test".to_owned()),
            ("TOKEN_ENCRYPTION_KEYS", KEYS.to_owned()),
            ("ALLOWED_REDIRECT_ORIGINS", FRONTEND_ORIGIN.to_owned()),
            ("OIDC_AUTHORIZED_PARTIES", "frontend".to_owned()),
            ("RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("PROVIDER_RETRY_ATTEMPTS", "1".to_owned()),
        ]);
        for (k, v) in extra.iter().filter(|(k, _)| !k.starts_with("TEST_")) {
            vars.insert(k, (*v).to_owned());
        }
        let keyring = Keyring::parse(&vars["TOKEN_ENCRYPTION_KEYS"]).unwrap();
        let config = Config::from_lookup(|k| vars.get(k).cloned(), false).unwrap();
        let metadata = ProviderMetadata {
            issuer: ISSUER.into(),
            authorization_endpoint: format!("{ISSUER}/protocol/openid-connect/auth")
                .parse()
                .unwrap(),
            token_endpoint: format!("{provider}/token").parse().unwrap(),
            jwks_uri: format!("{provider}/certs").parse().unwrap(),
            revocation_endpoint: Some(format!("{provider}/revoke").parse().unwrap()),
            introspection_endpoint: None,
            device_authorization_endpoint: None,
            authorization_response_iss_parameter_supported: extra
                .iter()
                .any(|(k, v)| *k == "TEST_ISS_SUPPORTED" && *v == "1"),
        };
        let http = token_broker::oidc::http_client().unwrap();
        let set: JwkSet = serde_json::from_value(json!({ "keys": [signer.jwk] })).unwrap();
        let jwks = JwksCache::preloaded(http.clone(), metadata.jwks_uri.clone(), &set);
        let Wired { services, cors, .. } =
            assemble(config, vault.clone(), &metadata, jwks, http).await?;
        Ok(Harness {
            router: router(services, &cors, false),
            vault,
            pool,
            keyring,
            signer,
            provider: provider.to_owned(),
            impostor: Arc::new(Signer::new()),
        })
    }

    /// A bearer token for `sub`, as the frontend would hold it.
    pub fn bearer(&self, sub: &str) -> String {
        self.signer.sign(&claims_for(sub), &json!({}))
    }

    /// Sends a request as if from 192.0.2.1 (the rate limit keys on it).
    pub async fn send(&self, mut request: Request<Body>) -> Answer {
        let addr: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 8 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(bearer) = bearer {
            builder = builder.header("authorization", format!("Bearer {bearer}"));
        }
        let request = match body {
            Some((content_type, body)) => builder
                .header("content-type", content_type)
                .body(Body::from(body)),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Answer {
        self.request(
            "POST",
            path,
            bearer,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        self.request("GET", path, bearer, None).await
    }

    pub async fn consent(&self, bearer: &str, body: Value) -> Answer {
        self.post("/api/auth/manager/offline-consent", Some(bearer), body)
            .await
    }

    pub async fn access_token(&self, bearer: &str, id: impl std::fmt::Display) -> Answer {
        self.post(
            "/api/auth/manager/access-token",
            Some(bearer),
            json!({ "persistentTokenId": id.to_string() }),
        )
        .await
    }

    /// `DELETE` of the row `id`, as its owner (or whoever `bearer` is) would send it.
    pub async fn revoke(&self, bearer: &str, id: impl std::fmt::Display) -> Answer {
        self.request(
            "DELETE",
            &format!("/api/auth/manager/offline-tokens/{id}"),
            Some(bearer),
            None,
        )
        .await
    }

    /// Asserts the row `id` failed with `reason`, holding no token.
    pub async fn expect_failed(&self, id: Uuid, reason: &str) {
        let row = self.vault.find(id).await.unwrap().unwrap();
        assert_eq!(row.status.as_str(), "failed");
        assert_eq!(row.status_reason.as_ref().map(|r| r.as_str()), Some(reason));
        assert!(row.sealed.is_none(), "a failed consent stores no token");
    }

    /// A pending row of `user` whose state is `state`.
    pub async fn seed_pending(&self, user: &str, task: &str, state: &str) -> Uuid {
        let now = Utc::now();
        let id = Uuid::new_v4();
        let verifier = self
            .keyring
            .seal(b"verifier", self.binding(purpose::PKCE_VERIFIER, id, user))
            .unwrap();
        self.vault
            .create_pending(
                &NewConsent {
                    id,
                    user_id: user.into(),
                    task_id: task.into(),
                    state_hash: token_broker::crypto::sha256(state.as_bytes()),
                    state_expires_at: now + chrono::Duration::minutes(10),
                    pkce_verifier: verifier.to_bytes(),
                    nonce_hash: vec![0; 32],
                    redirect_uri: None,
                    expires_at: now + chrono::Duration::days(365),
                    created_at: now,
                    metadata: json!({}),
                    delegates: vec![],
                },
                1000,
            )
            .await
            .unwrap();
        id
    }

    /// An active row of `user` holding `refresh_token`, sealed as the broker would.
    pub async fn seed_active(&self, user: &str, task: &str, refresh_token: &str) -> Uuid {
        let state = Uuid::new_v4().to_string();
        let id = self.seed_pending(user, task, &state).await;
        let claimed = self
            .vault
            .claim_consent(&token_broker::crypto::sha256(state.as_bytes()), Utc::now())
            .await
            .unwrap()
            .unwrap();
        let sealed = self
            .keyring
            .seal(
                refresh_token.as_bytes(),
                self.binding(purpose::REFRESH_TOKEN, id, user),
            )
            .unwrap();
        let now = Utc::now();
        let activation = Activation {
            sealed: &sealed,
            expires_at: now + chrono::Duration::days(365),
            refresh_expires_at: Some(now + chrono::Duration::days(30)),
            granted_scope: Some("openid offline_access profile".into()),
            now,
        };
        assert!(self
            .vault
            .activate(claimed, &activation)
            .await
            .unwrap()
            .is_some());
        id
    }

    pub fn binding<'a>(&self, purpose: &'static str, id: Uuid, user: &'a str) -> Binding<'a> {
        Binding {
            purpose,
            row_id: id,
            user_id: user,
        }
    }

    pub async fn row_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from token_vault")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Stores an access token in the row as another instance would after minting it.
    pub async fn seed_stored_access(&self, id: Uuid, user: &str, token: &str) {
        let sealed = self
            .keyring
            .seal(
                token.as_bytes(),
                self.binding(purpose::ACCESS_TOKEN, id, user),
            )
            .unwrap();
        self.store_access(id, sealed.to_bytes()).await;
    }

    /// Writes `sealed` as the row's stored access token through a claimed refresh.
    pub async fn store_access(&self, id: Uuid, sealed: Vec<u8>) {
        let lease = match self
            .vault
            .claim_refresh(id, std::time::Duration::from_secs(30))
            .await
            .unwrap()
        {
            token_broker::vault::Claim::Claimed(lease, _) => lease,
            other => panic!("cannot claim {id}: {other:?}"),
        };
        let now = Utc::now();
        let minted = token_broker::vault::StoredAccess {
            sealed,
            expires_at: now + chrono::Duration::seconds(300),
            token_type: "Bearer".into(),
            scope: Some("openid offline_access".into()),
        };
        let write = token_broker::vault::RefreshWrite {
            rotated: None,
            minted: Some(&minted),
            refresh_expires_at: None,
            now,
            actor: "system",
            audit_reason: None,
        };
        assert!(self.vault.finish_refresh(lease, &write).await.unwrap());
    }

    /// The refresh token the row holds now, opened.
    pub async fn stored_refresh_token(&self, id: Uuid, user: &str) -> String {
        let row = self.vault.find(id).await.unwrap().unwrap();
        let sealed = row.sealed.expect("the row holds a refresh token");
        self.keyring
            .open_string(&sealed, self.binding(purpose::REFRESH_TOKEN, id, user))
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    pub async fn status_of(&self, id: Uuid) -> String {
        self.vault
            .find(id)
            .await
            .unwrap()
            .unwrap()
            .status
            .to_string()
    }
}

/// Every event a webhook receiver was sent, as it arrived.
pub type Events = Arc<std::sync::Mutex<Vec<Value>>>;

/// A local webhook receiver: its URL, and every event it was sent.
pub async fn webhook_receiver() -> (String, Events) {
    let got = Events::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let event = serde_json::from_slice(&body).unwrap_or_default();
                sink.lock().unwrap().push(event);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}
