use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::oidc::TokenVerifier;

/// The JSON body extractor, answering malformed bodies in our own error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The query extractor, answering malformed queries in our own error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A caller whose bearer access token verified against the provider's keys.
///
/// Taking `AuthUser` in a handler's signature is how a route states that it needs a signed-in
/// user; `subject` is the provider's `sub`, the only identity the vault trusts.
#[derive(Debug)]
pub struct AuthUser {
    pub subject: String,
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<TokenVerifier>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let verifier = Arc::<TokenVerifier>::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        match verifier.verify_caller(token).await {
            Ok(claims) => Ok(AuthUser {
                subject: claims.sub,
            }),
            Err(reason) => {
                tracing::info!(%reason, "rejected a bearer token");
                Err(ApiError::Unauthorized)
            }
        }
    }
}
