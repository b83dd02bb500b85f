//! The broker as an OAuth client of the provider (on the `oauth2` crate): authorization URLs with
//! PKCE and nonce, the code exchange, refreshes and RFC 7009 revocation, and how the provider's
//! refusals are classified ([`ProviderError`]).

use std::borrow::Cow;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, HttpClientError, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::discovery::ProviderMetadata;
use super::settings::{ConsentPrompt, OidcSettings};

/// The scopes of every consent: `offline_access` is the point of the broker.
const CONSENT_SCOPES: [&str; 2] = ["openid", "offline_access"];

/// The token response's additions: OpenID Connect's ID token, and Keycloak's
/// `refresh_expires_in` (how long the refresh token works if unused; 0 = not said).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraFields {
    #[serde(default, skip_serializing)]
    id_token: Option<SecretString>,
    #[serde(default, skip_serializing)]
    refresh_expires_in: Option<serde_json::Value>,
}

impl ExtraFields {
    /// A positive `refresh_expires_in`, as a duration (a number or a numeric string).
    fn refresh_expires_in(&self) -> Option<Duration> {
        let seconds = match self.refresh_expires_in.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }?;
        (seconds > 0).then(|| Duration::from_secs(seconds.min(MAX_LIFETIME_SECS)))
    }
}

impl ExtraTokenFields for ExtraFields {}

/// Lifetimes a provider announces are clamped to ten years: an absurd `expires_in` must not
/// overflow date arithmetic anywhere.
pub const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

type OidcTokenResponse = StandardTokenResponse<ExtraFields, BasicTokenType>;
type OAuthClient = Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;
type TokenError = RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>;

/// A consent URL and the PKCE verifier that must accompany its code.
pub struct AuthorizationRequest {
    pub url: Url,
    pub pkce_verifier: SecretString,
}

/// What an authorization code bought.
pub struct CodeGrant {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    /// `None` when the provider did not say, which RFC 6749 §5.1 defines as "as requested".
    pub scopes: Option<Vec<String>>,
    pub refresh_expires_in: Option<Duration>,
}

/// A fresh access token, and the rotated refresh token if the provider issued one.
pub struct RefreshGrant {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
    pub refresh_token: Option<SecretString>,
    /// How long the (new) refresh token works if unused, when the provider says.
    pub refresh_expires_in: Option<Duration>,
}

/// Why the provider did not give us tokens, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The grant is dead (revoked, expired, session ended): retrying cannot help.
    #[error("provider refused the grant (invalid_grant)")]
    InvalidGrant,
    /// Network trouble, timeouts, 5xx, garbage: retrying later may help. `retry_now` says
    /// whether the request certainly did not change anything at the provider (it never got
    /// there, or the provider said so), so that an immediate retry cannot spend a rotated token
    /// twice.
    #[error("provider unavailable: {reason}")]
    Unavailable { reason: String, retry_now: bool },
    /// Any other refusal, usually our misconfiguration (client id/secret, scopes).
    #[error("provider rejected the request: {0}")]
    Rejected(String),
    /// The scope asked for is not allowed (`invalid_scope`, Keycloak's `not_allowed`): the
    /// request's fault, not an outage; the grant itself is fine.
    #[error("provider refused the scope asked for: {0}")]
    InvalidScope(String),
}

/// Talks OAuth 2.0 to the provider through the `oauth2` crate: its typed PKCE and secrets that
/// redact themselves are exactly what we would otherwise hand-write.
pub struct OidcClient {
    oauth: OAuthClient,
    http: reqwest::Client,
    client_secret: SecretString,
    revocation_url: Option<Url>,
    consent_prompt: ConsentPrompt,
    /// The issuer as discovery states it, and whether it promises `iss` on every response.
    issuer: String,
    iss_required: bool,
}

/// An authorization response that did not come from our provider (RFC 9207).
#[derive(Debug, thiserror::Error)]
#[error("the authorization response names another issuer, or none where one is required")]
pub struct IssuerMismatch;

impl OidcClient {
    pub fn new(
        metadata: &ProviderMetadata,
        settings: &OidcSettings,
        redirect: Url,
        http: reqwest::Client,
    ) -> Self {
        let oauth = Client::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                settings.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::from_url(metadata.authorization_endpoint.clone()))
            .set_token_uri(TokenUrl::from_url(metadata.token_endpoint.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect));
        Self {
            oauth,
            http,
            client_secret: settings.client_secret.clone(),
            revocation_url: metadata.revocation_endpoint.clone(),
            consent_prompt: settings.consent_prompt,
            issuer: metadata.issuer.clone(),
            iss_required: metadata.authorization_response_iss_parameter_supported,
        }
    }

    /// RFC 9207 §2.4: an authorization response's `iss` must be the issuer exactly, compared
    /// as a string with no normalisation; where discovery promised `iss`, a response without
    /// it is refused too (a mix-up attacker's provider would not send ours).
    pub fn response_issuer_ok(&self, iss: Option<&str>) -> Result<(), IssuerMismatch> {
        match iss {
            Some(iss) if iss == self.issuer => Ok(()),
            Some(_) => Err(IssuerMismatch),
            None if self.iss_required => Err(IssuerMismatch),
            None => Ok(()),
        }
    }

    /// Builds the consent URL: code flow, our `state`, an OIDC `nonce`, and a PKCE S256
    /// challenge so an intercepted code is useless without the verifier we keep sealed.
    pub fn authorization_request(&self, state: &str, nonce: &str) -> AuthorizationRequest {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let mut request = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(CONSENT_SCOPES.map(|s| Scope::new(s.to_owned())))
            .add_extra_param("nonce", nonce)
            .set_pkce_challenge(challenge);
        if self.consent_prompt == ConsentPrompt::Consent {
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, _) = request.url();
        AuthorizationRequest {
            url,
            pkce_verifier: SecretString::from(verifier.into_secret()),
        }
    }

    /// A sign-in to the broker's own pages (the admin page): `openid` only, and its own
    /// redirect URI, with the same state, nonce and PKCE protections as a consent.
    pub fn sign_in_request(
        &self,
        state: &str,
        nonce: &str,
        redirect: &Url,
    ) -> AuthorizationRequest {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_owned();
        let (url, _) = self
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("openid".to_owned()))
            .add_extra_param("nonce", nonce)
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(RedirectUrl::from_url(redirect.clone())))
            .url();
        AuthorizationRequest {
            url,
            pkce_verifier: SecretString::from(verifier.into_secret()),
        }
    }

    pub async fn exchange_code(
        &self,
        code: &SecretString,
        pkce_verifier: &SecretString,
    ) -> Result<CodeGrant, ProviderError> {
        self.exchange_code_at(code, pkce_verifier, None).await
    }

    /// Exchanges a code that was issued for `redirect` rather than the consent callback.
    pub async fn exchange_code_at(
        &self,
        code: &SecretString,
        pkce_verifier: &SecretString,
        redirect: Option<&Url>,
    ) -> Result<CodeGrant, ProviderError> {
        let mut request = self
            .oauth
            .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                pkce_verifier.expose_secret().to_owned(),
            ));
        if let Some(redirect) = redirect {
            request = request.set_redirect_uri(Cow::Owned(RedirectUrl::from_url(redirect.clone())));
        }
        let response = request.request_async(&self.http).await.map_err(classify)?;
        Ok(CodeGrant {
            access_token: SecretString::from(response.access_token().secret().to_owned()),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().to_owned())),
            id_token: response.extra_fields().id_token.clone(),
            scopes: response
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect()),
            refresh_expires_in: response.extra_fields().refresh_expires_in(),
        })
    }

    /// The refresh grant; `scope` narrows the new access token (RFC 6749 §6).
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        scope: Option<&str>,
    ) -> Result<RefreshGrant, ProviderError> {
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = self.oauth.exchange_refresh_token(&token);
        if let Some(scope) = scope {
            request =
                request.add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_owned())));
        }
        let response = request.request_async(&self.http).await.map_err(classify)?;
        Ok(RefreshGrant {
            access_token: SecretString::from(response.access_token().secret().to_owned()),
            token_type: response.token_type().as_ref().to_owned(),
            expires_in: response
                .expires_in()
                .map(|d| d.min(Duration::from_secs(MAX_LIFETIME_SECS))),
            scope: response
                .scopes()
                .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().to_owned())),
            refresh_expires_in: response.extra_fields().refresh_expires_in(),
        })
    }
}

impl OidcClient {
    /// Revokes a refresh token at the provider (RFC 7009).
    ///
    /// Sent directly rather than through `oauth2`, which refuses non-HTTPS revocation URLs even
    /// where the issuer (and so the token endpoint we already use) is plain HTTP on a dev box.
    pub async fn revoke_refresh_token(&self, token: &SecretString) -> Result<(), ProviderError> {
        let Some(url) = &self.revocation_url else {
            return Err(ProviderError::Rejected(
                "the provider has no revocation endpoint".into(),
            ));
        };
        // RFC 6749 §2.3.1: credentials are form-encoded before they go into Basic auth.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(url.clone())
            .basic_auth(
                encode(self.oauth.client_id().as_str()),
                Some(encode(self.client_secret.expose_secret())),
            )
            .form(&[
                ("token", token.expose_secret()),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await
            .map_err(|e| unavailable(&e.to_string(), e.is_connect()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() {
            Err(unavailable(&format!("HTTP {status}"), false))
        } else {
            Err(ProviderError::Rejected(format!("HTTP {status}")))
        }
    }
}

/// What a refusal of a refresh token means, decided here and only here.
///
/// * `invalid_client`, `unauthorized_client`, `unsupported_grant_type`: the broker's own client
///   is misconfigured (wrong secret, grant not enabled). Every row would get the same answer,
///   so no row is ended: 502, the row backs off, and the log says what to check.
/// * `invalid_grant`: the grant is gone (RFC 6749 §5.2).
/// * `invalid_request` whose description says the token itself is dead
///   ([`DEAD_TOKEN_DESCRIPTIONS`]): some providers answer a revoked or idle-expired refresh
///   token this way instead of with `invalid_grant`.
/// * `temporarily_unavailable`: certainly not acted on, so retried at once.
/// * anything else: transient, tried again later but not at once (the provider may have acted).
fn classify(error: TokenError) -> ProviderError {
    match error {
        RequestTokenError::ServerResponse(response) => match response.error() {
            BasicErrorResponseType::InvalidClient
            | BasicErrorResponseType::UnauthorizedClient
            | BasicErrorResponseType::UnsupportedGrantType => {
                ProviderError::Rejected(describe(&response))
            }
            BasicErrorResponseType::InvalidGrant => ProviderError::InvalidGrant,
            BasicErrorResponseType::InvalidScope => {
                ProviderError::InvalidScope(describe(&response))
            }
            BasicErrorResponseType::Extension(code) if code == "not_allowed" => {
                ProviderError::InvalidScope(describe(&response))
            }
            BasicErrorResponseType::InvalidRequest if describes_dead_token(&response) => {
                ProviderError::InvalidGrant
            }
            BasicErrorResponseType::Extension(code) if code == "temporarily_unavailable" => {
                unavailable(code, true)
            }
            _ => unavailable(&describe(&response), false),
        },
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => {
            unavailable(&e.to_string(), e.is_connect())
        }
        RequestTokenError::Request(e) => unavailable(&e.to_string(), false),
        // A non-JSON answer: a gateway's error page, or a provider that broke after acting on
        // the request. It may have rotated the token already, so no immediate retry.
        RequestTokenError::Parse(_, _) => unavailable("unparseable response", false),
        RequestTokenError::Other(message) => unavailable(&message, false),
    }
}

/// Descriptions (lower case, matched as substrings) that say an `invalid_request` is about a
/// refresh token that will never work again. Keycloak's own come with `invalid_grant`
/// ("Offline user session not found", "Session not active", "Token is not active",
/// "Stale token", "Invalid refresh token"); the rest are what other providers write.
pub const DEAD_TOKEN_DESCRIPTIONS: [&str; 12] = [
    "offline user session not found",
    "session not active",
    "token is not active",
    "stale token",
    "invalid refresh token",
    "refresh token inactive",
    "inactive",
    "expired",
    "revoked",
    "unknown refresh token",
    "not found",
    "grant not found",
];

fn describes_dead_token(response: &BasicErrorResponse) -> bool {
    response.error_description().is_some_and(|description| {
        let description = description.to_ascii_lowercase();
        DEAD_TOKEN_DESCRIPTIONS
            .iter()
            .any(|dead| description.contains(dead))
    })
}

/// `invalid_client: Invalid client credentials`, for logs (a description carries no secret).
fn describe(response: &BasicErrorResponse) -> String {
    match response.error_description() {
        Some(description) => format!("{}: {}", response.error(), description.escape_debug()),
        None => response.error().to_string(),
    }
}

fn unavailable(reason: &str, retry_now: bool) -> ProviderError {
    ProviderError::Unavailable {
        reason: reason.to_owned(),
        retry_now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(error: BasicErrorResponseType, description: Option<&str>) -> TokenError {
        RequestTokenError::ServerResponse(BasicErrorResponse::new(
            error,
            description.map(str::to_owned),
            None,
        ))
    }

    #[test]
    fn dead_grants_are_invalid_grant_or_an_invalid_request_about_the_token() {
        assert!(matches!(
            classify(server(BasicErrorResponseType::InvalidGrant, None)),
            ProviderError::InvalidGrant
        ));
        for description in [
            "Refresh token inactive",
            "Token is not active",
            "refresh token expired",
            "Token has been revoked",
            "Unknown refresh token",
            "Grant not found",
        ] {
            assert!(
                matches!(
                    classify(server(
                        BasicErrorResponseType::InvalidRequest,
                        Some(description)
                    )),
                    ProviderError::InvalidGrant
                ),
                "{description}"
            );
        }
        // An invalid_request about something else is not a verdict on the grant.
        assert!(matches!(
            classify(server(
                BasicErrorResponseType::InvalidRequest,
                Some("Missing parameter: refresh_token")
            )),
            ProviderError::Unavailable {
                retry_now: false,
                ..
            }
        ));
    }

    #[test]
    fn client_authentication_failures_never_end_a_grant() {
        for code in [
            BasicErrorResponseType::InvalidClient,
            BasicErrorResponseType::UnauthorizedClient,
            BasicErrorResponseType::UnsupportedGrantType,
        ] {
            // Even when the words would say "dead" under invalid_request.
            assert!(
                matches!(
                    classify(server(code.clone(), Some("client secret expired"))),
                    ProviderError::Rejected(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_refused_scope_is_the_requests_fault_not_an_outage() {
        for code in [
            BasicErrorResponseType::InvalidScope,
            BasicErrorResponseType::Extension("not_allowed".into()),
        ] {
            assert!(
                matches!(
                    classify(server(code.clone(), Some("Invalid scopes: email"))),
                    ProviderError::InvalidScope(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn other_codes_are_transient() {
        let code = BasicErrorResponseType::Extension("unknown_error".into());
        assert!(matches!(
            classify(server(code, Some("Token is not active"))),
            ProviderError::Unavailable { .. }
        ));
    }

    #[test]
    fn outages_are_transient_and_only_safe_ones_retry_now() {
        let busy = BasicErrorResponseType::Extension("temporarily_unavailable".into());
        assert!(matches!(
            classify(server(busy, None)),
            ProviderError::Unavailable {
                retry_now: true,
                ..
            }
        ));
        let broken = BasicErrorResponseType::Extension("server_error".into());
        assert!(matches!(
            classify(server(broken, None)),
            ProviderError::Unavailable {
                retry_now: false,
                ..
            }
        ));
        assert!(matches!(
            classify(RequestTokenError::Other("empty".into())),
            ProviderError::Unavailable {
                retry_now: false,
                ..
            }
        ));
    }

    #[test]
    fn our_own_misconfiguration_is_a_rejection() {
        assert!(matches!(
            classify(server(
                BasicErrorResponseType::InvalidClient,
                Some("bad secret")
            )),
            ProviderError::Rejected(_)
        ));
    }
}
