//! What the operator tells the broker about its provider: issuer, client, secret, audiences.

use std::fmt;

use secrecy::SecretString;
use url::Url;

/// How the broker finds and trusts the OpenID provider.
pub struct OidcSettings {
    pub issuer: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// When set, a caller's access token must name one of these in `aud`.
    pub audiences: Vec<String>,
    /// When set, a caller's access token must come from one of these clients (`azp`).
    pub authorized_parties: Vec<String>,
    /// Whether consent URLs carry `prompt=consent`.
    pub consent_prompt: ConsentPrompt,
}

/// `OIDC_CONSENT_PROMPT`. OpenID Connect Core 1.0 §11: a request for `offline_access` must
/// carry `prompt=consent` unless other conditions permit offline access, and some providers
/// refuse it without ("consent in prompt").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsentPrompt {
    /// Send `prompt=consent` (the default).
    #[default]
    Consent,
    /// Send no `prompt` parameter at all (not `prompt=none`, which forbids any page).
    Omit,
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("audiences", &self.audiences)
            .field("authorized_parties", &self.authorized_parties)
            .field("consent_prompt", &self.consent_prompt)
            .finish()
    }
}
