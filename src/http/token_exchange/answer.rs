//! What the token exchange answers: RFC 8693 §2.2.1 on success, RFC 6749 §5.2 otherwise, with
//! each refusal of a task key, a workload or the broker worded for the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::grants::{AccessError, KeyRefusal, RedeemError, Unidentified, WorkloadRefusal};
use crate::http::error::ApiError;

/// RFC 8693 §2.2.1.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExchangeResponse<'a> {
    pub(super) access_token: &'a str,
    pub(super) issued_token_type: &'static str,
    /// The provider's token type (RFC 6749 §7.1), usually `Bearer`.
    pub(super) token_type: &'a str,
    pub(super) expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<&'a str>,
}

/// RFC 6749 §5.2.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthError {
    error: &'static str,
    error_description: String,
}

pub(super) fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: impl Into<String>,
) -> Response {
    let mut response = (
        status,
        Json(OAuthError {
            error,
            error_description: description.into(),
        }),
    )
        .into_response();
    no_store(&mut response);
    response
}

/// An [`ApiError`] raised before the handler ran (body too large, rate limited), in OAuth's
/// shape: same status and `Retry-After`, RFC 6749 §5.2 body.
pub(crate) fn oauth_refusal(refused: &ApiError) -> Response {
    let answer = refused.answer();
    let error = match answer.status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            "temporarily_unavailable"
        }
        _ => "invalid_request",
    };
    let mut response = oauth_error(answer.status, error, answer.message.as_ref());
    if let Some(wait) = answer.retry_after_header() {
        response.headers_mut().insert(header::RETRY_AFTER, wait);
    }
    response
}

pub(super) fn invalid_request(description: impl Into<String>) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// RFC 8693 §2.2.2: `resource` or `audience` asks for a target the broker will not serve.
pub(super) fn invalid_target(description: impl Into<String>) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_target", description)
}

pub(super) fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A subject token that names no task: not a task key, or a platform token that did not
/// verify (the reason is given: it is the caller's own token).
pub(super) fn unidentified(refused: Unidentified) -> Response {
    match refused {
        Unidentified::Token(reason) => {
            tracing::info!(%reason, "rejected a workload token");
            invalid_request(format!("the subject token was refused: {reason}"))
        }
        Unidentified::NoWorkloads => {
            invalid_request("this broker accepts no workload tokens (WORKLOAD_ISSUERS is not set)")
        }
        Unidentified::NotAUser => invalid_request("the subject token is not a task key"),
        Unidentified::Key(e) => exchange_error(e),
    }
}

pub(super) fn exchange_error(error: RedeemError) -> Response {
    let unavailable = |what: &str| {
        oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("{what}; try again later"),
        )
    };
    match error {
        RedeemError::Workload(refusal) => workload_refused(refusal),
        RedeemError::NotForResource => {
            invalid_target("`resource` names a grant this subject token is not for")
        }
        RedeemError::Refused(refusal) => invalid_request(match refusal {
            KeyRefusal::Unknown => "the subject token is unknown or malformed",
            KeyRefusal::Revoked => "the subject token was revoked",
            KeyRefusal::Expired => "the subject token has expired",
            KeyRefusal::Exhausted => "the subject token has been used as often as it may",
            KeyRefusal::Address => "the subject token may not be used from this address",
        }),
        RedeemError::Access(AccessError::InvalidScope) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope is broader than the task key or its grant allows",
        ),
        RedeemError::Access(AccessError::ScopeNotNarrowed) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the identity provider cannot narrow a token to this scope; ask without one",
        ),
        RedeemError::Access(AccessError::Pending) => {
            invalid_request("the subject token's grant has not been consented to yet")
        }
        RedeemError::Access(AccessError::Gone { status, .. }) => {
            invalid_request(format!("the subject token's grant is {status}"))
        }
        RedeemError::Access(AccessError::NotFound) => {
            invalid_request("the subject token's grant is gone")
        }
        RedeemError::Access(
            AccessError::ProviderUnavailable { .. }
            | AccessError::ProviderBusy
            | AccessError::ProviderRejected { .. },
        ) => unavailable("the identity provider cannot issue a token now"),
        RedeemError::Access(AccessError::Vault(e)) if e.is_unavailable() => {
            unavailable("the token store is unavailable")
        }
        RedeemError::Vault(e) if e.is_unavailable() => {
            unavailable("the token store is unavailable")
        }
        other => {
            tracing::error!(error = %other, "token exchange failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal server error",
            )
        }
    }
}

fn workload_refused(refusal: WorkloadRefusal) -> Response {
    match refusal {
        WorkloadRefusal::NoBinding => {
            invalid_request("the subject token matches no live workload binding")
        }
        WorkloadRefusal::SeveralGrants => invalid_target(
            "this workload is bound to several grants; name one with \
             resource=urn:token-broker:grant:{persistentTokenId}",
        ),
        WorkloadRefusal::Refused(refusal) => invalid_request(match refusal {
            KeyRefusal::Unknown => "the subject token matches no live workload binding",
            KeyRefusal::Revoked => "the workload's binding was revoked",
            KeyRefusal::Expired => "the workload's binding has expired",
            KeyRefusal::Exhausted => "the workload's binding has been used as often as it may",
            KeyRefusal::Address => "the workload's binding may not be used from this address",
        }),
    }
}
