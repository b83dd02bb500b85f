//! OpenID Connect discovery: the parts of `/.well-known/openid-configuration` the broker uses.

use serde::Deserialize;
use url::Url;

/// The parts of `/.well-known/openid-configuration` the broker uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<Url>,
    /// RFC 9207: the provider names itself in every authorization response (`iss`), so a
    /// response without it, or with another, did not come from it.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("could not fetch {url}: {source}")]
    Fetch { url: String, source: reqwest::Error },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not valid provider metadata: {source}")]
    Parse { url: String, source: reqwest::Error },
    #[error("provider says its issuer is `{found}`, but OIDC_ISSUER is `{expected}`")]
    IssuerMismatch { expected: String, found: String },
}

/// Fetches provider metadata and checks that it describes `issuer` (OpenID Connect Discovery
/// 1.0 §4.3): metadata for another issuer would make us trust that issuer's tokens.
pub async fn discover(
    http: &reqwest::Client,
    issuer: &Url,
) -> Result<ProviderMetadata, DiscoveryError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.as_str().trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|source| DiscoveryError::Fetch {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(DiscoveryError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    let metadata: ProviderMetadata =
        response
            .json()
            .await
            .map_err(|source| DiscoveryError::Parse {
                url: url.clone(),
                source,
            })?;
    let expected = issuer.as_str().trim_end_matches('/');
    if metadata.issuer.trim_end_matches('/') != expected {
        return Err(DiscoveryError::IssuerMismatch {
            expected: expected.to_owned(),
            found: metadata.issuer,
        });
    }
    Ok(metadata)
}
