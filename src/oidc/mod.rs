//! Everything that talks to the OpenID provider.

mod client;
mod discovery;
mod http;
mod jwks;
mod jwt;

pub use client::{AuthorizationRequest, CodeGrant, OidcClient, ProviderError, RefreshGrant};
pub use discovery::{discover, DiscoveryError, ProviderMetadata};
pub use http::http_client;
pub use jwks::JwksCache;
pub use jwt::{CallerClaims, IdTokenClaims, JwtError, TokenVerifier};
