use std::borrow::Cow;
use std::fmt::Display;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::vault::VaultError;

/// Every error the API answers, in one shape: `{"error": code, "message": text}`.
///
/// Internal failures are logged with their cause and answered with a fixed message: the cause
/// may name tables, hosts or keys, which are nobody's business outside.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
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
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The token store is unavailable; try again shortly",
        )
        .retry_after(std::time::Duration::from_secs(2))
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid bearer access token is required",
        )
    }

    pub fn token_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            "No such persistent token",
        )
    }

    pub fn provider_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "The identity provider cannot be reached; try again later",
        )
    }

    /// Logs `cause` with `context` and answers 500 with a generic message.
    pub fn internal(context: &str, cause: impl Display) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(Body {
            error: self.code,
            message: &self.message,
        });
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(%error, "database unavailable");
            ApiError::database_unavailable()
        } else {
            ApiError::internal("vault operation failed", error)
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::bad_request(
                "invalid_request",
                format!("The request body has the wrong shape: {}", e.body_text()),
            ),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("invalid_json", "The request body is not valid JSON")
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the request body as application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            ),
            other => ApiError::bad_request("invalid_request", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(
            "invalid_request",
            format!("The query string is invalid: {}", rejection.body_text()),
        )
    }
}
