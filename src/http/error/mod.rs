//! Every error the API answers, in one shape: `{"error": code, "message": text}`.
//!
//! Each use case has its own error enum (in `crate::grants`); here each case becomes one
//! [`ApiError`] variant, whose status and stable code are defined once, in
//! [`ApiError::status_code`] and [`ApiError::code`]. Internal failures are logged with their
//! cause here, in one place, and answered with a fixed message: the cause may name tables,
//! hosts or keys, which are nobody's business outside.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::grants::KeyRefusal;
use crate::vault::{Status, StatusReason};

mod admin;
mod code;
mod from;
#[cfg(test)]
mod tests;

pub use admin::AdminRefusal;
pub use code::Code;

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
    WorkloadBindingNotFound,
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
    /// A refusal only the admin page raises (sign-in, session, form).
    Admin(AdminRefusal),
}

/// How one error is answered (see [`ApiError::answer`]).
pub struct Answer<'a> {
    pub status: StatusCode,
    pub code: Code,
    pub message: Cow<'a, str>,
    pub retry_after: Option<Duration>,
}

pub use crate::api::ErrorBody;

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

    /// Logs the cause of an internal failure or an unavailable database, the one place
    /// causes are logged; every renderer calls it once.
    pub fn log_cause(&self) {
        match self {
            ApiError::Internal { context, cause } => tracing::error!(error = %cause, "{context}"),
            ApiError::DatabaseUnavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable")
            }
            _ => {}
        }
    }

    /// The one table: each case's status, code, message and `Retry-After`. Three renderers
    /// read it: the JSON body (`into_response`), the token exchange's OAuth body, and the
    /// HTML of the callback page and the admin pages.
    pub fn answer(&self) -> Answer<'_> {
        use StatusCode as S;
        let fixed = Answer::fixed;
        match self {
            ApiError::Unauthorized => fixed(
                S::UNAUTHORIZED,
                Code::Unauthorized,
                "A valid bearer access token is required",
            ),
            ApiError::Forbidden => fixed(
                S::FORBIDDEN,
                Code::Forbidden,
                "This credential may not be used here",
            ),
            ApiError::KeyRefused(refusal) => match refusal {
                KeyRefusal::Unknown => fixed(
                    S::UNAUTHORIZED,
                    Code::Unauthorized,
                    "Unknown or malformed task key",
                ),
                KeyRefusal::Revoked => fixed(
                    S::UNAUTHORIZED,
                    Code::Unauthorized,
                    "This task key was revoked",
                ),
                KeyRefusal::Expired => fixed(
                    S::UNAUTHORIZED,
                    Code::Unauthorized,
                    "This task key has expired",
                ),
                KeyRefusal::Exhausted => fixed(
                    S::UNAUTHORIZED,
                    Code::Unauthorized,
                    "This task key has been used as often as it may",
                ),
                KeyRefusal::Address => fixed(
                    S::FORBIDDEN,
                    Code::Forbidden,
                    "This task key may not be used from this address",
                ),
            },
            ApiError::InvalidScope => fixed(
                S::BAD_REQUEST,
                Code::InvalidScope,
                "The scope asked for is broader than the grant or the task key allows",
            ),
            ApiError::TaskKeyNotFound => {
                fixed(S::NOT_FOUND, Code::TaskKeyNotFound, "No such task key")
            }
            ApiError::WorkloadBindingNotFound => fixed(
                S::NOT_FOUND,
                Code::WorkloadBindingNotFound,
                "No such workload binding",
            ),
            ApiError::TooManyTaskKeys => fixed(
                S::CONFLICT,
                Code::TooManyTaskKeys,
                "This token has too many live task keys and workload bindings; revoke some first",
            ),
            ApiError::TooManyPending => fixed(
                S::TOO_MANY_REQUESTS,
                Code::TooManyPending,
                "Too many consents are waiting for you; complete or revoke some, or wait until \
                 their links expire",
            ),
            ApiError::InvalidJson => fixed(
                S::BAD_REQUEST,
                Code::InvalidJson,
                "The request body is not valid JSON",
            ),
            ApiError::InvalidRequest(message) => Answer {
                message: Cow::Borrowed(message.as_ref()),
                ..fixed(S::BAD_REQUEST, Code::InvalidRequest, "")
            },
            ApiError::UnsupportedMediaType => fixed(
                S::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                "Send the request body as application/json",
            ),
            ApiError::PayloadTooLarge => fixed(
                S::PAYLOAD_TOO_LARGE,
                Code::PayloadTooLarge,
                "The request body is too large",
            ),
            ApiError::InvalidRedirectUri => fixed(
                S::BAD_REQUEST,
                Code::InvalidRedirectUri,
                "redirectUri must be an absolute http(s) URL on an allowed origin",
            ),
            ApiError::InvalidState => fixed(
                S::BAD_REQUEST,
                Code::InvalidState,
                "The consent state is unknown, already used, or expired; start the consent again",
            ),
            ApiError::RouteNotFound => fixed(S::NOT_FOUND, Code::NotFound, "No such route"),
            ApiError::TokenNotFound => fixed(
                S::NOT_FOUND,
                Code::TokenNotFound,
                "No such persistent token",
            ),
            ApiError::TokenPending => fixed(
                S::CONFLICT,
                Code::TokenPending,
                "Consent has not been completed yet",
            ),
            ApiError::TokenGone { status, reason } => Answer {
                message: Cow::Owned(match reason {
                    Some(reason) => format!("This persistent token is {status}: {reason}"),
                    None => format!("This persistent token is {status}"),
                }),
                ..fixed(
                    S::GONE,
                    match status {
                        Status::Revoked => Code::TokenRevoked,
                        Status::Expired => Code::TokenExpired,
                        _ => Code::TokenFailed,
                    },
                    "",
                )
            },
            ApiError::ReconsentRevoked => fixed(
                S::CONFLICT,
                Code::TokenRevoked,
                "A revoked token cannot be consented to again; start a new consent",
            ),
            ApiError::ConsentFailed { reason, message } => Answer {
                message: Cow::Owned(format!("{message} ({reason})")),
                ..fixed(S::BAD_REQUEST, Code::ConsentFailed, "")
            },
            ApiError::SubjectMismatch => fixed(
                S::FORBIDDEN,
                Code::SubjectMismatch,
                "Consent was given by a different user than the one who requested it",
            ),
            ApiError::ConsentOvertaken => fixed(
                S::GONE,
                Code::TokenRevoked,
                "This consent was revoked or expired while it completed; start a new one",
            ),
            ApiError::ProviderUnavailable { retry_after } => Answer {
                retry_after: Some(*retry_after),
                ..fixed(
                    S::SERVICE_UNAVAILABLE,
                    Code::ProviderUnavailable,
                    "The identity provider cannot be reached; try again later",
                )
            },
            ApiError::ProviderBusy => Answer {
                retry_after: Some(Duration::from_secs(1)),
                ..fixed(
                    S::SERVICE_UNAVAILABLE,
                    Code::ProviderBusy,
                    "Too many refreshes are in flight; retry after the time in Retry-After",
                )
            },
            ApiError::ScopeNotNarrowed => fixed(
                S::BAD_GATEWAY,
                Code::ScopeNotNarrowed,
                "The identity provider did not narrow the token to the scope asked for (or did \
                 not say what it granted), so it is not served; ask without a scope, or use a \
                 provider that honours scope on a refresh",
            ),
            ApiError::ProviderRefused { retry_after } => Answer {
                retry_after: *retry_after,
                ..fixed(
                    S::BAD_GATEWAY,
                    Code::ProviderError,
                    "The identity provider rejected the broker's request",
                )
            },
            ApiError::DatabaseUnavailable(_) => Answer {
                retry_after: Some(Duration::from_secs(2)),
                ..fixed(
                    S::SERVICE_UNAVAILABLE,
                    Code::DatabaseUnavailable,
                    "The token store is unavailable; try again shortly",
                )
            },
            ApiError::RateLimited { retry_after } => Answer {
                retry_after: Some(*retry_after),
                ..fixed(
                    S::TOO_MANY_REQUESTS,
                    Code::RateLimited,
                    "Too many requests; retry after the time in Retry-After",
                )
            },
            ApiError::Internal { .. } => fixed(
                S::INTERNAL_SERVER_ERROR,
                Code::InternalError,
                "Internal server error",
            ),
            ApiError::Admin(refusal) => refusal.answer(),
        }
    }
}

impl Answer<'_> {
    /// A row with a fixed message and no wait.
    pub(crate) fn fixed(status: StatusCode, code: Code, message: &'static str) -> Self {
        Answer {
            status,
            code,
            message: Cow::Borrowed(message),
            retry_after: None,
        }
    }

    /// `Retry-After` in whole seconds, at least 1, when this error has a wait.
    pub(crate) fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(|wait| {
            HeaderValue::from((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_cause();
        let answer = self.answer();
        let body = Json(Body {
            error: answer.code.as_str(),
            message: &answer.message,
        });
        let mut response = (answer.status, body).into_response();
        if let Some(wait) = answer.retry_after_header() {
            response.headers_mut().insert(header::RETRY_AFTER, wait);
        }
        if answer.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
