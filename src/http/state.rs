use std::sync::Arc;

use axum::extract::FromRef;

use super::admin_page::AdminState;
use super::client_addr::TrustedProxies;
use super::extract::DelegateClients;
use super::middleware::RateLimit;
use crate::grants::{Callbacks, Consents, Reads, Refresher, Revoker, TaskKeys};
use crate::oidc::TokenVerifier;
use crate::vault::TokenVault;

/// What the router serves from. Each handler takes only the part it needs (`FromRef`): the
/// access-token handler the [`Refresher`], the status reads [`Reads`], and so on.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Readiness and metrics only; the use cases reach the vault through their services.
    pub vault: Arc<dyn TokenVault>,
    /// Verifies callers' bearer tokens ([`super::extract::AuthUser`]).
    pub verifier: Arc<TokenVerifier>,
    pub consents: Arc<Consents>,
    pub callbacks: Arc<Callbacks>,
    pub refresher: Refresher,
    pub revoker: Arc<Revoker>,
    pub reads: Arc<Reads>,
    pub task_keys: Arc<TaskKeys>,
    /// Service accounts that may redeem rows delegated to them.
    pub delegates: Arc<DelegateClients>,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: Arc<TrustedProxies>,
    /// None when rate limiting is off.
    pub rate_limit: Option<Arc<RateLimit>>,
    pub admin: AdminState,
    /// The OpenAPI document, with this deployment's rules in it.
    pub api_document: Arc<super::openapi::ApiDocument>,
}
