use std::sync::Arc;

use crate::grants::{Callbacks, Consents, Refresher, Revoker};
use crate::oidc::{OidcClient, TokenVerifier};

use super::{Admin, RateLimit};
use crate::vault::TokenVault;

/// What the handlers share. Cheap to clone: one `Arc`.
pub type AppState = Arc<Services>;

pub struct Services {
    pub vault: Arc<dyn TokenVault>,
    pub oidc: Arc<OidcClient>,
    pub verifier: Arc<TokenVerifier>,
    pub consents: Arc<Consents>,
    pub callbacks: Arc<Callbacks>,
    pub refresher: Refresher,
    pub revoker: Arc<Revoker>,
    /// None when rate limiting is off.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// None unless `ADMIN_ROLE` is set.
    pub admin: Option<Admin>,
    /// Origins allowed to call the API from a browser (CORS); empty = no CORS headers.
    pub cors_origins: Vec<url::Origin>,
}
