//! Each use case's error, and each rejection of axum's extractors, as a case of [`ApiError`].

use std::time::Duration;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;

use super::ApiError;
use crate::grants::{
    AccessError, CallbackError, ConsentError, Failure, FailureKind, ReadError, RedeemError,
    RevokeError, TaskKeyError, WorkloadRefusal,
};
use crate::vault::VaultError;

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
            RedeemError::Refused(refusal)
            | RedeemError::Workload(WorkloadRefusal::Refused(refusal)) => {
                ApiError::KeyRefused(refusal)
            }
            // Workloads redeem at the token exchange, which words its own errors.
            RedeemError::Workload(_) | RedeemError::NotForResource => ApiError::Forbidden,
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
            TaskKeyError::BindingNotFound => ApiError::WorkloadBindingNotFound,
            TaskKeyError::WorkloadsDisabled => ApiError::invalid_request(
                "workload identities are not enabled on this broker (WORKLOAD_ISSUERS is not set)",
            ),
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
