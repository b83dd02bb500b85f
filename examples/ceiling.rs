//! The HTTP ceiling for `bench/run`: the least a server can do for the access-token hot path,
//! on the same framework and runtime, built the same way. It reads the bearer header, parses
//! the same JSON body and answers a JSON body of the same size, and nothing else: no
//! verification, no cache, no middleware. The broker's cache-hit rate is reported as a ratio to
//! this one's, measured in the same run.
//!
//!   CEILING_ADDR=127.0.0.1:18091 CEILING_TOKEN_BYTES=900 cargo run --release --example ceiling

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenRequest {
    #[allow(dead_code)]
    persistent_token_id: uuid::Uuid,
    #[serde(default)]
    #[allow(dead_code)]
    scope: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    expires_at: String,
    scope: &'static str,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("CEILING_ADDR").unwrap_or_else(|_| "127.0.0.1:18091".into());
    let bytes: usize = std::env::var("CEILING_TOKEN_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    let token = "e".repeat(bytes);
    let app = Router::new().route(
        "/api/auth/manager/access-token",
        post(
            move |headers: HeaderMap, Json(_): Json<AccessTokenRequest>| {
                let token = token.clone();
                async move {
                    let bearer = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "));
                    if bearer.is_none() {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    Ok(Json(AccessTokenResponse {
                        access_token: token,
                        token_type: "bearer",
                        expires_in: 300,
                        expires_at: chrono::Utc::now().to_rfc3339(),
                        scope: "openid offline_access",
                    }))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("ceiling listening on {addr}");
    axum::serve(listener, app).await
}
