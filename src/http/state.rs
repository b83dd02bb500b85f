//! What every handler can reach ([`AppState`]), and the `FromRef` views extractors take of it.

use std::sync::Arc;

use axum::extract::FromRef;

use super::admin_page::AdminState;
use super::client_addr::TrustedProxies;
use super::rate_limit::RateLimit;
use crate::grants::{
    Authenticator, Callbacks, Consents, Reads, Refresher, Revoker, TaskKeys, TokenIssuer,
};
use crate::oidc::TokenVerifier;
use crate::vault::TokenVault;

/// What the router serves from. Each handler takes only the part it needs (`FromRef`): the
/// access-token handler the [`Refresher`], the status reads [`Reads`], and so on.
///
/// The router clones its state for every request; behind one `Arc` that is one atomic
/// increment instead of one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Hands each field of [`Services`] to the handlers that take it.
macro_rules! from_services {
    ($($field:ident: $type:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $type {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        })*
    };
}

from_services!(
    vault: Arc<dyn TokenVault>,
    verifier: Arc<TokenVerifier>,
    consents: Arc<Consents>,
    callbacks: Arc<Callbacks>,
    refresher: Refresher,
    revoker: Arc<Revoker>,
    reads: Arc<Reads>,
    task_keys: Arc<TaskKeys>,
    authenticator: Arc<Authenticator>,
    issuer: Arc<TokenIssuer>,
    proxies: Arc<TrustedProxies>,
    rate_limit: Option<Arc<RateLimit>>,
    admin: AdminState,
    api_document: Arc<super::api_document::ApiDocument>,
);

/// The services behind [`AppState`].
pub struct Services {
    /// Readiness and metrics only; the use cases reach the vault through their services.
    pub vault: Arc<dyn TokenVault>,
    /// Verifies bearer tokens (the admin page's sign-in; callers go through `authenticator`).
    pub verifier: Arc<TokenVerifier>,
    pub consents: Arc<Consents>,
    pub callbacks: Arc<Callbacks>,
    pub refresher: Refresher,
    pub revoker: Arc<Revoker>,
    pub reads: Arc<Reads>,
    pub task_keys: Arc<TaskKeys>,
    /// Turns credentials into callers ([`super::extract::AccessCaller`], [`super::extract::AuthUser`]).
    pub authenticator: Arc<Authenticator>,
    /// Issues access tokens for any caller.
    pub issuer: Arc<TokenIssuer>,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: Arc<TrustedProxies>,
    /// None when rate limiting is off.
    pub rate_limit: Option<Arc<RateLimit>>,
    pub admin: AdminState,
    /// The OpenAPI document, with this deployment's rules in it.
    pub api_document: Arc<super::api_document::ApiDocument>,
}
