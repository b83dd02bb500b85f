use std::sync::Arc;
use std::time::Duration;

use crate::audit::Journal;
use crate::crypto::Keyring;
use crate::oidc::{OidcClient, TokenVerifier};
use crate::refresh::Refresher;

use super::{Admin, RateLimit};
use crate::vault::TokenVault;

/// What the handlers share. Cheap to clone: one `Arc`.
pub type AppState = Arc<Services>;

pub struct Services {
    pub vault: Arc<dyn TokenVault>,
    pub oidc: Arc<OidcClient>,
    pub verifier: TokenVerifier,
    pub keyring: Arc<Keyring>,
    pub journal: Journal,
    pub refresher: Refresher,
    /// None when rate limiting is off.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// None unless `ADMIN_ROLE` is set.
    pub admin: Option<Admin>,
    pub policy: Policy,
}

/// The knobs of the consent flow.
pub struct Policy {
    /// The provider's issuer, compared with the callback's `iss` (RFC 9207).
    pub issuer: String,
    pub allowed_redirect_origins: Vec<url::Origin>,
    pub consent_ttl: Duration,
    pub offline_token_max_age: Duration,
    /// Revoke at the provider when a user revokes a token here.
    pub provider_revocation: bool,
    /// Origins allowed to call the API from a browser (CORS); empty = no CORS headers.
    pub cors_origins: Vec<url::Origin>,
}
