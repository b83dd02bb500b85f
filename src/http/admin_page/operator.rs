//! The [`Operator`] extractor: a live admin session (signed in with the admin role), or the
//! page that says why not. Taking `Operator` is how an admin route states that it needs one.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;

use super::{refused, AdminRefusal, AdminState};
use crate::grants::Caller;

/// An operator signed in to the admin page.
pub struct Operator {
    pub subject: String,
    /// The session's CSRF token, which every form it posts must carry.
    pub csrf: String,
}

impl Operator {
    /// The operator as a caller of the use cases.
    pub fn caller(&self) -> Caller {
        Caller::Operator(self.subject.clone())
    }
}

impl<S> FromRequestParts<S> for Operator
where
    S: Send + Sync,
    AdminState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let admin = AdminState::from_ref(state);
        let Some(sessions) = admin.sessions.as_deref() else {
            return Err(refused(AdminRefusal::NotEnabled));
        };
        let session = sessions
            .current(&parts.headers)
            .ok_or_else(|| refused(AdminRefusal::SignInFirst))?;
        Ok(Operator {
            subject: session.subject,
            csrf: session.csrf,
        })
    }
}
