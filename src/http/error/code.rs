//! The stable codes clients branch on, and how each is spelt on the wire.

/// The stable codes clients branch on: the `error` of every JSON error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unauthorized,
    Forbidden,
    InvalidScope,
    TaskKeyNotFound,
    WorkloadBindingNotFound,
    TooManyTaskKeys,
    TooManyPending,
    InvalidJson,
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidRedirectUri,
    InvalidState,
    NotFound,
    TokenNotFound,
    TokenPending,
    TokenRevoked,
    TokenExpired,
    TokenFailed,
    ConsentFailed,
    SubjectMismatch,
    ProviderUnavailable,
    ProviderBusy,
    ProviderError,
    ScopeNotNarrowed,
    DatabaseUnavailable,
    RateLimited,
    InternalError,
    /// Only on the admin page: the operator sessions are all taken.
    TooManySessions,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::InvalidScope => "invalid_scope",
            Code::TaskKeyNotFound => "task_key_not_found",
            Code::WorkloadBindingNotFound => "workload_binding_not_found",
            Code::TooManyTaskKeys => "too_many_task_keys",
            Code::TooManyPending => "too_many_pending",
            Code::InvalidJson => "invalid_json",
            Code::InvalidRequest => "invalid_request",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::PayloadTooLarge => "payload_too_large",
            Code::InvalidRedirectUri => "invalid_redirect_uri",
            Code::InvalidState => "invalid_state",
            Code::NotFound => "not_found",
            Code::TokenNotFound => "token_not_found",
            Code::TokenPending => "token_pending",
            Code::TokenRevoked => "token_revoked",
            Code::TokenExpired => "token_expired",
            Code::TokenFailed => "token_failed",
            Code::ConsentFailed => "consent_failed",
            Code::SubjectMismatch => "subject_mismatch",
            Code::ProviderUnavailable => "provider_unavailable",
            Code::ProviderBusy => "provider_busy",
            Code::ProviderError => "provider_error",
            Code::ScopeNotNarrowed => "scope_not_narrowed",
            Code::DatabaseUnavailable => "database_unavailable",
            Code::RateLimited => "rate_limited",
            Code::InternalError => "internal_error",
            Code::TooManySessions => "too_many_sessions",
        }
    }
}
