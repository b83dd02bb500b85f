//! Every error the API answers, in one shape: `{"error": code, "message": text}`.
//!
//! Each use case has its own error enum (in `crate::grants`); here each case becomes one
//! [`ApiError`] variant, whose status and stable code are defined once, in
//! [`ApiError::status_code`] and [`ApiError::code`]. Internal failures are logged with their
//! cause here, in one place, and answered with a fixed message: the cause may name tables,
//! hosts or keys, which are nobody's business outside.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::grants::{
    AccessError, CallbackError, ConsentError, Failure, FailureKind, KeyRefusal, ReadError,
    RedeemError, RevokeError, TaskKeyError,
};
use crate::vault::{Status, StatusReason, VaultError};

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ApiError {
    /// No, or a bad, bearer token.
    Unauthorized,
    /// A credential that may not do this: a task key or a delegated service account outside
    /// the access-token endpoint.
    Forbidden,
    /// A task key that is unknown, revoked, expired, used up, or used from elsewhere.
    KeyRefused(KeyRefusal),
    /// A scope broader than the grant (or the task key) allows.
    InvalidScope,
    TaskKeyNotFound,
    TooManyTaskKeys,
    /// A user with too many consents waiting.
    TooManyPending,
    InvalidJson,
    /// A body, query or path that does not follow the rules; the message says which.
    InvalidRequest(Cow<'static, str>),
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidRedirectUri,
    /// The callback's state is unknown, used or expired.
    InvalidState,
    RouteNotFound,
    /// Missing, or someone else's: the same answer, so ids cannot be probed.
    TokenNotFound,
    TokenPending,
    /// Failed, revoked or expired (410).
    TokenGone {
        status: Status,
        reason: Option<StatusReason>,
    },
    /// A revoked token cannot be consented to again (409).
    ReconsentRevoked,
    /// A consent the provider refused or answered unusably; `reason` is stored in the row.
    ConsentFailed {
        reason: StatusReason,
        message: &'static str,
    },
    SubjectMismatch,
    /// The row was revoked or expired while its consent completed.
    ConsentOvertaken,
    ProviderUnavailable {
        retry_after: Duration,
    },
    ProviderBusy,
    /// The provider did not narrow a token to the scope asked for (502).
    ScopeNotNarrowed,
    /// The provider refused the broker itself (client id, secret, grants).
    ProviderRefused {
        retry_after: Option<Duration>,
    },
    DatabaseUnavailable(Cause),
    RateLimited {
        retry_after: Duration,
    },
    Internal {
        context: &'static str,
        cause: Cause,
    },
}

/// The error shape, for the API description.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A stable code to branch on, e.g. `token_not_found`.
    error: String,
    /// For people.
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    message: &'a str,
}

impl ApiError {
    pub fn internal(context: &'static str, cause: impl Into<Cause>) -> Self {
        ApiError::Internal {
            context,
            cause: cause.into(),
        }
    }

    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::KeyRefused(KeyRefusal::Address) | ApiError::Forbidden => {
                StatusCode::FORBIDDEN
            }
            ApiError::KeyRefused(_) => StatusCode::UNAUTHORIZED,
            ApiError::InvalidScope => StatusCode::BAD_REQUEST,
            ApiError::TaskKeyNotFound => StatusCode::NOT_FOUND,
            ApiError::TooManyTaskKeys => StatusCode::CONFLICT,
            ApiError::InvalidJson
            | ApiError::InvalidRequest(_)
            | ApiError::InvalidRedirectUri
            | ApiError::InvalidState
            | ApiError::ConsentFailed { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RouteNotFound | ApiError::TokenNotFound => StatusCode::NOT_FOUND,
            ApiError::TokenPending | ApiError::ReconsentRevoked => StatusCode::CONFLICT,
            ApiError::TokenGone { .. } | ApiError::ConsentOvertaken => StatusCode::GONE,
            ApiError::SubjectMismatch => StatusCode::FORBIDDEN,
            ApiError::ProviderRefused { .. } | ApiError::ScopeNotNarrowed => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::ProviderUnavailable { .. }
            | ApiError::ProviderBusy
            | ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::TooManyPending => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden | ApiError::KeyRefused(KeyRefusal::Address) => "forbidden",
            ApiError::KeyRefused(_) => "unauthorized",
            ApiError::InvalidScope => "invalid_scope",
            ApiError::TaskKeyNotFound => "task_key_not_found",
            ApiError::TooManyTaskKeys => "too_many_task_keys",
            ApiError::InvalidJson => "invalid_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::InvalidRedirectUri => "invalid_redirect_uri",
            ApiError::InvalidState => "invalid_state",
            ApiError::RouteNotFound => "not_found",
            ApiError::TokenNotFound => "token_not_found",
            ApiError::TokenPending => "token_pending",
            ApiError::TokenGone { status, .. } => match status {
                Status::Revoked => "token_revoked",
                Status::Expired => "token_expired",
                _ => "token_failed",
            },
            ApiError::ReconsentRevoked | ApiError::ConsentOvertaken => "token_revoked",
            ApiError::ConsentFailed { .. } => "consent_failed",
            ApiError::SubjectMismatch => "subject_mismatch",
            ApiError::ProviderUnavailable { .. } => "provider_unavailable",
            ApiError::ProviderBusy => "provider_busy",
            ApiError::ProviderRefused { .. } => "provider_error",
            ApiError::ScopeNotNarrowed => "scope_not_narrowed",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManyPending => "too_many_pending",
            ApiError::Internal { .. } => "internal_error",
        }
    }

    pub(crate) fn message(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            ApiError::Unauthorized => "A valid bearer access token is required",
            ApiError::Forbidden => "This credential may not be used here",
            ApiError::KeyRefused(KeyRefusal::Unknown) => "Unknown or malformed task key",
            ApiError::KeyRefused(KeyRefusal::Revoked) => "This task key was revoked",
            ApiError::KeyRefused(KeyRefusal::Expired) => "This task key has expired",
            ApiError::KeyRefused(KeyRefusal::Exhausted) => {
                "This task key has been used as often as it may"
            }
            ApiError::KeyRefused(KeyRefusal::Address) => {
                "This task key may not be used from this address"
            }
            ApiError::InvalidScope => {
                "The scope asked for is broader than the grant or the task key allows"
            }
            ApiError::TaskKeyNotFound => "No such task key",
            ApiError::TooManyTaskKeys => {
                "This token has too many live task keys; revoke some first"
            }
            ApiError::InvalidJson => "The request body is not valid JSON",
            ApiError::InvalidRequest(message) => return Cow::Borrowed(message.as_ref()),
            ApiError::UnsupportedMediaType => "Send the request body as application/json",
            ApiError::PayloadTooLarge => "The request body is too large",
            ApiError::InvalidRedirectUri => {
                "redirectUri must be an absolute http(s) URL on an allowed origin"
            }
            ApiError::InvalidState => {
                "The consent state is unknown, already used, or expired; start the consent again"
            }
            ApiError::RouteNotFound => "No such route",
            ApiError::TokenNotFound => "No such persistent token",
            ApiError::TokenPending => "Consent has not been completed yet",
            ApiError::TokenGone { status, reason } => {
                return Cow::Owned(match reason {
                    Some(reason) => format!("This persistent token is {status}: {reason}"),
                    None => format!("This persistent token is {status}"),
                })
            }
            ApiError::ReconsentRevoked => {
                "A revoked token cannot be consented to again; start a new consent"
            }
            ApiError::ConsentFailed { reason, message } => {
                return Cow::Owned(format!("{message} ({reason})"))
            }
            ApiError::SubjectMismatch => {
                "Consent was given by a different user than the one who requested it"
            }
            ApiError::ConsentOvertaken => {
                "This consent was revoked or expired while it completed; start a new one"
            }
            ApiError::ProviderUnavailable { .. } => {
                "The identity provider cannot be reached; try again later"
            }
            ApiError::ProviderBusy => {
                "Too many refreshes are in flight; retry after the time in Retry-After"
            }
            ApiError::ProviderRefused { .. } => {
                "The identity provider rejected the broker's request"
            }
            ApiError::ScopeNotNarrowed => {
                "The identity provider did not narrow the token to the scope asked for (or did \
                 not say what it granted), so it is not served; ask without a scope, or use a \
                 provider that honours scope on a refresh"
            }
            ApiError::DatabaseUnavailable(_) => "The token store is unavailable; try again shortly",
            ApiError::RateLimited { .. } => {
                "Too many requests; retry after the time in Retry-After"
            }
            ApiError::TooManyPending => {
                "Too many consents are waiting for you; complete or revoke some, or wait until \
                 their links expire"
            }
            ApiError::Internal { .. } => "Internal server error",
        })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::ProviderUnavailable { retry_after }
            | ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::ProviderRefused { retry_after } => *retry_after,
            ApiError::ProviderBusy => Some(Duration::from_secs(1)),
            ApiError::DatabaseUnavailable(_) => Some(Duration::from_secs(2)),
            _ => None,
        }
    }
}

impl ApiError {
    /// `Retry-After` in whole seconds, at least 1, when this error has a wait.
    pub(crate) fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after().map(|wait| {
            HeaderValue::from((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The one place causes are logged.
        match &self {
            ApiError::Internal { context, cause } => tracing::error!(error = %cause, "{context}"),
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable")
            }
            _ => {}
        }
        let message = self.message();
        let body = Json(Body {
            error: self.code(),
            message: &message,
        });
        let mut response = (self.status_code(), body).into_response();
        if let Some(wait) = self.retry_after_header() {
            response.headers_mut().insert(header::RETRY_AFTER, wait);
        }
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> Self {
        if error.is_unavailable() {
            ApiError::DatabaseUnavailable(Box::new(error))
        } else {
            ApiError::internal("vault operation failed", error)
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::NotFound => ApiError::TokenNotFound,
            AccessError::Pending => ApiError::TokenPending,
            AccessError::Gone { status, reason } => ApiError::TokenGone { status, reason },
            AccessError::ProviderUnavailable { retry_after } => ApiError::ProviderUnavailable {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            AccessError::ProviderBusy => ApiError::ProviderBusy,
            AccessError::ProviderRejected { retry_after } => {
                ApiError::ProviderRefused { retry_after }
            }
            AccessError::InvalidScope => ApiError::InvalidScope,
            AccessError::ScopeNotNarrowed => ApiError::ScopeNotNarrowed,
            AccessError::Vault(e) if e.is_unavailable() => {
                ApiError::DatabaseUnavailable(Box::new(e))
            }
            other => ApiError::internal("minting an access token failed", other),
        }
    }
}

impl From<ConsentError> for ApiError {
    fn from(error: ConsentError) -> Self {
        match error {
            ConsentError::InvalidTaskId(message) => ApiError::invalid_request(message),
            ConsentError::InvalidRedirectUri => ApiError::InvalidRedirectUri,
            ConsentError::UnknownDelegate(client) => ApiError::invalid_request(format!(
                "delegates: `{client}` is not one of the broker's DELEGATE_CLIENTS"
            )),
            ConsentError::NotFound => ApiError::TokenNotFound,
            ConsentError::Revoked => ApiError::ReconsentRevoked,
            ConsentError::Pending => ApiError::TokenPending,
            ConsentError::TooManyPending => ApiError::TooManyPending,
            ConsentError::Vault(e) => e.into(),
            ConsentError::Sealing(e) => ApiError::internal("sealing a PKCE verifier failed", e),
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(error: CallbackError) -> Self {
        match error {
            CallbackError::MissingState => {
                ApiError::invalid_request("The state parameter is required")
            }
            CallbackError::InvalidState => ApiError::InvalidState,
            CallbackError::Vault(e) => e.into(),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure.kind {
            FailureKind::Refused => ApiError::ConsentFailed {
                reason: failure.reason,
                message: failure.message,
            },
            FailureKind::SubjectMismatch => ApiError::SubjectMismatch,
            FailureKind::ProviderUnavailable => ApiError::ProviderUnavailable {
                retry_after: Duration::from_secs(1),
            },
            FailureKind::RowGone => ApiError::ConsentOvertaken,
            FailureKind::Internal => {
                ApiError::internal("a consent failed", failure.reason.to_string())
            }
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::NotFound => ApiError::TokenNotFound,
            RevokeError::Vault(e) => e.into(),
        }
    }
}

impl From<RedeemError> for ApiError {
    fn from(error: RedeemError) -> Self {
        match error {
            RedeemError::Refused(refusal) => ApiError::KeyRefused(refusal),
            RedeemError::RowNotNamed => ApiError::invalid_request("persistentTokenId is required"),
            RedeemError::Access(e) => e.into(),
            RedeemError::Vault(e) => e.into(),
        }
    }
}

impl From<TaskKeyError> for ApiError {
    fn from(error: TaskKeyError) -> Self {
        match error {
            TaskKeyError::NotFound => ApiError::TokenNotFound,
            TaskKeyError::KeyNotFound => ApiError::TaskKeyNotFound,
            TaskKeyError::Invalid(message) => ApiError::invalid_request(message),
            TaskKeyError::InvalidScope => ApiError::InvalidScope,
            TaskKeyError::Gone { status, reason } => ApiError::TokenGone { status, reason },
            TaskKeyError::TooMany => ApiError::TooManyTaskKeys,
            TaskKeyError::Vault(e) => e.into(),
            TaskKeyError::Sealing(e) => ApiError::internal("task-key secret", e),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::NotFound => ApiError::TokenNotFound,
            ReadError::Invalid(message) => ApiError::invalid_request(message),
            ReadError::Vault(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::invalid_request(format!(
                "The request body has the wrong shape: {}",
                e.body_text()
            )),
            JsonRejection::JsonSyntaxError(_) => ApiError::InvalidJson,
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            other => ApiError::invalid_request(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::invalid_request(format!(
                "The request body could not be read: {}",
                rejection.body_text()
            ))
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid_request(format!(
            "The query string is invalid: {}",
            rejection.body_text()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gone_status_has_its_own_code() {
        let gone = |status| ApiError::TokenGone {
            status,
            reason: None,
        };
        assert_eq!(gone(Status::Revoked).code(), "token_revoked");
        assert_eq!(gone(Status::Expired).code(), "token_expired");
        assert_eq!(gone(Status::Failed).code(), "token_failed");
        assert_eq!(gone(Status::Failed).status_code(), StatusCode::GONE);
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let error = ApiError::internal("reading a row", "table token_vault on db.internal:5432");
        assert_eq!(error.message(), "Internal server error");
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn waits_are_whole_seconds_and_at_least_one() {
        let response = ApiError::ProviderUnavailable {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = ApiError::RateLimited {
            retry_after: Duration::ZERO,
        }
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
