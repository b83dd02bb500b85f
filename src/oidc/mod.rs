//! Everything that talks to the OpenID provider.

mod client;
mod discovery;
mod http;
mod jwks;
mod jwt;
mod settings;
mod workload;

pub use client::{
    AuthorizationRequest, CodeGrant, IssuerMismatch, OidcClient, ProviderError, RefreshGrant,
    MAX_LIFETIME_SECS,
};
pub use discovery::{discover, DiscoveryError, ProviderMetadata};
pub use http::http_client;
pub use jwks::{JwksCache, KeySource};
pub use jwt::{peek_expiry, peek_scope, CallerClaims, IdTokenClaims, JwtError, TokenVerifier};
pub use settings::{ConsentPrompt, OidcSettings};
pub use workload::{WorkloadClaims, WorkloadSettings, WorkloadVerifier};
