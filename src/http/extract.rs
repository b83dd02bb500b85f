//! Extractors: the caller (bearer token, task key or delegate), the client's address, and JSON
//! bodies whose rejections are worded as the API's errors.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::client_addr::{ClientIp, TrustedProxies};
use super::error::ApiError;
use crate::grants::{Authenticator, Caller, RedeemError, Unidentified};

/// The JSON body extractor, answering malformed bodies in our own error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A raw body (for routes that parse it themselves), answering one over the size limit in our
/// own error shape instead of axum's plain text.
pub struct ApiBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(axum::body::Bytes::from_request(request, state).await?))
    }
}

/// The query extractor, answering malformed queries in our own error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// An optional JSON body: none at all, `null`, or the object. Anything else is a clear 400.
pub fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| ApiError::invalid_request(format!("The request body is invalid: {e}")))
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|header| header.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)
}

/// A signed-in user whose bearer access token verified against the provider's keys.
///
/// Taking `AuthUser` in a handler's signature is how a route states that it needs a signed-in
/// user; `subject` is the provider's `sub`, the only identity the vault trusts. Task keys and
/// delegated service accounts can only redeem tokens: here they get 403.
#[derive(Debug)]
pub struct AuthUser {
    pub subject: String,
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let credential = bearer(parts)?;
        let subject = Arc::<Authenticator>::from_ref(state)
            .identify_user(credential)
            .await
            .map_err(refused)?;
        Ok(AuthUser { subject })
    }
}

/// The answer to a credential that names no caller the route serves.
fn refused(reason: Unidentified) -> ApiError {
    match reason {
        Unidentified::Token(reason) => {
            tracing::info!(%reason, "rejected a bearer token");
            ApiError::Unauthorized
        }
        Unidentified::NoWorkloads => ApiError::Unauthorized,
        Unidentified::NotAUser => ApiError::Forbidden,
        Unidentified::Key(RedeemError::Refused(refusal)) => ApiError::KeyRefused(refusal),
        Unidentified::Key(other) => ApiError::from(other),
    }
}

/// Whoever asks for an access token: a user, a delegated service account, or a task with a
/// key (already checked: known, unrevoked, unexpired, from an allowed address).
pub struct AccessCaller {
    pub caller: Caller,
    pub from: Option<IpAddr>,
}

impl<S> FromRequestParts<S> for AccessCaller
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let from = ClientIp::of(parts, &Arc::<TrustedProxies>::from_ref(state));
        let credential = bearer(parts)?;
        let caller = Arc::<Authenticator>::from_ref(state)
            .identify(credential, from)
            .await
            .map_err(refused)?;
        Ok(AccessCaller { caller, from })
    }
}
