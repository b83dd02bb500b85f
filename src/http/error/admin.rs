//! The admin page's own refusals, as rows of the error table.

use axum::http::StatusCode;

use super::{Answer, Code};

/// The admin page's own refusals: rows of the same table that only its sign-in, sessions
/// and forms raise, shown like every other error on those pages by
/// `admin_page::render::error_page`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// `ADMIN_ROLE` is not set: there is no admin page.
    NotEnabled,
    /// No live operator session.
    SignInFirst,
    /// The sign-in's callback was refused by the provider, expired, or already used.
    SignInSpent,
    /// The provider's answer to the sign-in did not check out (logged with its reason).
    SignInRefused,
    /// A signed-in account without the admin role.
    MissingRole,
    /// A form posted without this session's CSRF token.
    StaleForm,
    TooManySessions,
}

impl AdminRefusal {
    /// Its rows of the table.
    pub fn answer(self) -> Answer<'static> {
        use StatusCode as S;
        let (status, code, message) = match self {
            AdminRefusal::NotEnabled => (
                S::NOT_FOUND,
                Code::NotFound,
                "The admin page is not enabled (ADMIN_ROLE).",
            ),
            AdminRefusal::SignInFirst => (
                S::UNAUTHORIZED,
                Code::Unauthorized,
                "Sign in at /admin first (your session may have ended).",
            ),
            AdminRefusal::SignInSpent => (
                S::BAD_REQUEST,
                Code::InvalidState,
                "The sign-in was refused, expired or already used. Open /admin to try again.",
            ),
            AdminRefusal::SignInRefused => (S::FORBIDDEN, Code::Forbidden, "Sign-in refused."),
            AdminRefusal::MissingRole => (
                S::FORBIDDEN,
                Code::Forbidden,
                "Your account does not have the role this page requires.",
            ),
            AdminRefusal::StaleForm => (
                S::FORBIDDEN,
                Code::Forbidden,
                "The form is stale. Reload /admin and try again.",
            ),
            AdminRefusal::TooManySessions => (
                S::SERVICE_UNAVAILABLE,
                Code::TooManySessions,
                "Too many operator sessions are open. Try again later.",
            ),
        };
        Answer::fixed(status, code, message)
    }
}
