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
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("audiences", &self.audiences)
            .field("authorized_parties", &self.authorized_parties)
            .finish()
    }
}
