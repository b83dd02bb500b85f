//! A local workload platform for the end-to-end suite: its own ES256 key, served as a real
//! issuer would (`/.well-known/openid-configuration` → `jwks_uri`) on a loopback port, so the
//! broker finds its keys through discovery; it mints Kubernetes-shaped service-account tokens.

use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};

/// What platform tokens carry in `aud` for the broker under test.
pub const AUDIENCE: &str = "https://broker.test";
pub const KID: &str = "platform-1";

pub struct Platform {
    pub issuer: String,
    key: EncodingKey,
}

impl Platform {
    pub async fn start() -> Platform {
        let signing = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        let point = signing.verifying_key().to_encoded_point(false);
        let b64 = |bytes: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/openid/v1/jwks"),
            "authorization_endpoint": format!("{issuer}/unused"),
            "token_endpoint": format!("{issuer}/unused"),
        });
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/openid/v1/jwks",
                get(move || async move { Json(json!({ "keys": [jwk] })) }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Platform {
            issuer,
            key: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        }
    }

    /// The settings that make a broker trust this platform.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WORKLOAD_ISSUERS", self.issuer.clone()),
            ("WORKLOAD_AUDIENCE", AUDIENCE.to_owned()),
        ]
    }

    /// A projected service-account token of `namespace`/`account`, for `audience`.
    pub fn token(&self, namespace: &str, account: &str, audience: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.issuer,
            "sub": subject(namespace, account),
            "aud": [audience],
            "iat": now, "nbf": now, "exp": now + 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": { "name": account, "uid": format!("uid-of-{account}") },
            },
        });
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_owned());
        encode(&header, claims, &self.key).unwrap()
    }
}

pub fn subject(namespace: &str, account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{account}")
}
