//! `POST /api/auth/manager/token`: OAuth 2.0 Token Exchange (RFC 8693) for tasks, so a task
//! can use any standard OAuth client library instead of our own API.
//!
//! The subject token is a task key (`subject_token_type`
//! `urn:token-broker:params:oauth:token-type:task-key`), or a workload's platform token
//! (`urn:ietf:params:oauth:token-type:jwt`, or `…:id_token`) matched to a binding; `resource`
//! (`urn:token-broker:grant:{persistentTokenId}`) picks the row when a workload is bound to
//! several. The issued token is an access token of that row, narrowed to `scope` if asked.
//! Answers and errors follow RFC 8693 §2.2 and RFC 6749 §5, not the rest of the API's
//! `{"error","message"}` shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;

use super::client_addr::ClientIp;
use super::error::ApiError;
use super::extract::ApiBody;
use crate::api::paths;
use crate::grants::{Authenticator, Scope, TokenIssuer, Unidentified};

mod answer;

pub(super) use answer::oauth_refusal;
use answer::{
    exchange_error, invalid_request, invalid_target, no_store, oauth_error, unidentified,
};
pub use answer::{ExchangeResponse, OAuthError};

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TASK_KEY_TYPE: &str = "urn:token-broker:params:oauth:token-type:task-key";
/// A workload's platform token (RFC 8693 §3).
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form, as the OpenAPI document describes it. The handler reads the form itself (each
/// parameter at most once, RFC 6749 §3.2), so this type only describes it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ExchangeRequest {
    grant_type: String,
    /// A task key, or a workload's platform token (a JWT its platform signed, with the
    /// broker's `WORKLOAD_AUDIENCE` in `aud`).
    subject_token: String,
    /// `urn:token-broker:params:oauth:token-type:task-key` for a task key;
    /// `urn:ietf:params:oauth:token-type:jwt` (or `…:id_token`) for a platform token.
    subject_token_type: String,
    /// Narrows the token: space-separated scopes within the key's.
    scope: Option<String>,
    /// `urn:token-broker:grant:{persistentTokenId}`: the grant the token is for (a key's own;
    /// for a workload, one of the grants it is bound to, required when there are several);
    /// anything else is `invalid_target`.
    resource: Option<String>,
    /// Not supported: any value is `invalid_target`.
    audience: Option<String>,
    requested_token_type: Option<String>,
}

/// Whether the media type is exactly `application/x-www-form-urlencoded`, in any case, with
/// or without parameters (`; charset=UTF-8`).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The form's parameters; each may appear once (RFC 6749 §3.2), and one sent without a value
/// counts as omitted (§3.1). The error says why not.
fn parameters(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, String> {
    if !is_form(headers) {
        return Err("send the request as application/x-www-form-urlencoded".into());
    }
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if value.is_empty() {
            continue;
        }
        if params.insert(name.to_string(), value.to_string()).is_some() {
            return Err(format!("`{name}` appears more than once"));
        }
    }
    Ok(params)
}

/// `POST /api/auth/manager/token` (form-encoded)
#[utoipa::path(
    post,
    path = paths::TOKEN,
    tag = "task keys",
    request_body(content = ExchangeRequest, content_type = "application/x-www-form-urlencoded", description = "RFC 8693 token exchange with a task key as the subject token"),
    responses(
        (status = 200, description = "An access token (RFC 8693 §2.2.1)", body = ExchangeResponse),
        (status = 400, description = "invalid_request (including a missing, malformed, unknown, revoked, expired or used-up subject token), invalid_scope, unsupported_grant_type, invalid_target (an `audience`, or a `resource` other than the subject token's grant)", body = OAuthError),
        (status = 413, description = "Body too large (invalid_request)", body = OAuthError),
        (status = 429, description = "Rate limited (temporarily_unavailable); see Retry-After", body = OAuthError),
        (status = 503, description = "temporarily_unavailable: the provider or the database", body = OAuthError),
    )
)]
pub async fn exchange_token(
    State(authenticator): State<Arc<Authenticator>>,
    State(issuer): State<Arc<TokenIssuer>>,
    ClientIp(from): ClientIp,
    headers: HeaderMap,
    body: Result<ApiBody, ApiError>,
) -> Response {
    let body = match body {
        Ok(ApiBody(body)) => body,
        Err(refused) => return oauth_refusal(&refused),
    };
    let params = match parameters(&headers, &body) {
        Ok(params) => params,
        Err(problem) => return invalid_request(problem),
    };
    let get = |name: &str| params.get(name).map(String::as_str);
    match get("grant_type") {
        None => return invalid_request("grant_type is required"),
        Some(TOKEN_EXCHANGE) => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("only {TOKEN_EXCHANGE} is supported here"),
            )
        }
    }
    let Some(subject_token) = get("subject_token").filter(|t| !t.is_empty()) else {
        return invalid_request("subject_token is required");
    };
    let workload = match get("subject_token_type") {
        Some(TASK_KEY_TYPE) => false,
        Some(JWT_TYPE | ID_TOKEN_TYPE) => true,
        _ => {
            return invalid_request(format!(
                "subject_token_type must be {TASK_KEY_TYPE} (a task key), or {JWT_TYPE} or \
                 {ID_TOKEN_TYPE} (a workload's platform token)"
            ))
        }
    };
    if get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return invalid_request(format!(
            "requested_token_type can only be {ACCESS_TOKEN_TYPE}"
        ));
    }
    if get("actor_token").is_some() {
        return invalid_request("actor tokens are not supported");
    }
    // RFC 8693 §2.1: `audience` and `resource` name where the token will be used. The broker
    // hands out the provider's tokens as they are: it cannot aim one at an audience, so one
    // asked for is refused rather than ignored. A `resource` may name the key's own grant.
    if get("audience").is_some() {
        return invalid_target(
            "the broker cannot issue a token for a chosen audience; leave `audience` out",
        );
    }
    let resource = match get("resource").map(grant_resource).transpose() {
        Ok(resource) => resource,
        Err(problem) => return invalid_target(problem),
    };
    let scope = match get("scope").map(Scope::parse).transpose() {
        Ok(scope) => scope,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string()),
    };
    let caller = if workload {
        authenticator
            .identify_workload(subject_token, resource, from)
            .await
    } else {
        authenticator
            .identify_task_key(subject_token, resource, from)
            .await
    };
    let asked_scope = scope.clone();
    let redeemed = match caller {
        Ok(caller) => issuer.issue(caller, None, scope, from).await,
        Err(Unidentified::Key(e)) => Err(e),
        Err(refused) => return unidentified(refused),
    };
    match redeemed {
        Ok(minted) => {
            let expires_in = (minted.expires_at - Utc::now()).num_seconds().max(0);
            // RFC 6749 §5.1: the scope is required when it differs from the request; it is
            // sent whenever the provider said it, and otherwise the narrowed request stands.
            let scope = minted
                .scope
                .as_deref()
                .map(str::to_owned)
                .or_else(|| asked_scope.map(|s| s.to_string()));
            let mut response = Json(ExchangeResponse {
                access_token: minted.access_token.expose_secret(),
                issued_token_type: ACCESS_TOKEN_TYPE,
                // The provider's type; `bearer` as RFC 6750 spells it (the OAuth client
                // library we use lower-cases it, and it is case-insensitive anyway).
                token_type: if minted.token_type.eq_ignore_ascii_case("bearer") {
                    "Bearer"
                } else {
                    &minted.token_type
                },
                expires_in: u64::try_from(expires_in).unwrap_or(0),
                scope: scope.as_deref(),
            })
            .into_response();
            no_store(&mut response);
            response
        }
        Err(error) => exchange_error(error),
    }
}

/// The grant a `resource` names: `urn:token-broker:grant:{persistentTokenId}`.
fn grant_resource(raw: &str) -> Result<uuid::Uuid, String> {
    raw.strip_prefix("urn:token-broker:grant:")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            "`resource` must be urn:token-broker:grant:{persistentTokenId} of the subject \
             token's grant"
                .to_owned()
        })
}
