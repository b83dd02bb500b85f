//! Signing the CLI user in at the provider, and keeping their tokens fresh.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::Utc;
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    ClientId, ClientSecret, DeviceAuthorizationUrl, DeviceCodeErrorResponseType, RefreshToken,
    RequestTokenError, Scope, StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::store::Session;
use crate::oidc::{discover, http_client};

/// The scope of a login without `--scope`.
pub const DEFAULT_SCOPE: &str = "openid profile email";

/// The provider's endpoints, from discovery.
pub struct Provider {
    http: reqwest::Client,
    token_url: Url,
    device_url: Option<Url>,
}

impl Provider {
    pub async fn discover(issuer: &str) -> anyhow::Result<Self> {
        let http = http_client().context("cannot build an HTTP client")?;
        let issuer =
            Url::parse(issuer).with_context(|| format!("issuer `{issuer}` is not a URL"))?;
        let metadata = discover(&http, &issuer).await?;
        Ok(Self {
            http,
            token_url: metadata.token_endpoint,
            device_url: metadata.device_authorization_endpoint,
        })
    }
}

/// `--scope` replaces the default; `--offline` adds `offline_access` either way.
pub fn scopes(scope: Option<&str>, offline: bool) -> Vec<String> {
    let mut scopes: Vec<String> = scope
        .unwrap_or(DEFAULT_SCOPE)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if offline && !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    scopes
}

/// The device authorization grant (RFC 8628): shows the code, then polls as the provider asks
/// (`interval`, +5 s after each `slow_down`, on through `authorization_pending`).
pub async fn device_login(
    provider: &Provider,
    client_id: &str,
    scopes: &[String],
    out: &mut impl Write,
) -> anyhow::Result<Session> {
    let device_url = provider
        .device_url
        .clone()
        .context("the provider offers no device authorization endpoint")?;
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device_url))
        .set_token_uri(TokenUrl::from_url(provider.token_url.clone()));
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .request_async(&provider.http)
        .await
        .map_err(|e| anyhow!("the provider refused the device login: {}", describe(&e)))?;
    let _ = writeln!(
        out,
        "To sign in, open {} and enter the code {}",
        details.verification_uri().as_str(),
        details.user_code().secret()
    );
    if let Some(complete) = details.verification_uri_complete() {
        let _ = writeln!(out, "Or open: {}", complete.secret());
    }
    let _ = out.flush();
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&provider.http, tokio::time::sleep, None)
        .await
        .map_err(|e| match &e {
            RequestTokenError::ServerResponse(r) => match r.error() {
                DeviceCodeErrorResponseType::ExpiredToken => {
                    anyhow!("the code expired before it was approved; run login again")
                }
                DeviceCodeErrorResponseType::AccessDenied => anyhow!("sign-in was refused"),
                other => anyhow!("the provider refused the login: {other}"),
            },
            other => anyhow!("the login failed: {}", describe(other)),
        })?;
    Ok(session_from(client_id, None, &token, None))
}

/// The client credentials grant, for service accounts.
pub async fn credentials_login(
    provider: &Provider,
    client_id: &str,
    client_secret: &SecretString,
    scopes: &[String],
) -> anyhow::Result<Session> {
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
        .set_token_uri(TokenUrl::from_url(provider.token_url.clone()));
    let token = client
        .exchange_client_credentials()
        .add_scopes(scopes.iter().cloned().map(Scope::new))
        .request_async(&provider.http)
        .await
        .map_err(|e| {
            anyhow!(
                "the provider refused the client credentials: {}",
                describe(&e)
            )
        })?;
    Ok(session_from(
        client_id,
        Some(client_secret.clone()),
        &token,
        None,
    ))
}

/// A fresh session: the refresh grant for a person (keeping a rotated refresh token), the
/// client credentials grant again for a service account.
pub async fn renew(provider: &Provider, session: &Session) -> anyhow::Result<Session> {
    if let Some(secret) = &session.client_secret {
        let scopes: Vec<String> = session
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        return credentials_login(provider, &session.client_id, secret, &scopes).await;
    }
    let refresh_token = session
        .refresh_token
        .as_ref()
        .context("the stored login has expired and cannot be renewed; run `token-broker login`")?;
    let client = BasicClient::new(ClientId::new(session.client_id.clone()))
        .set_token_uri(TokenUrl::from_url(provider.token_url.clone()));
    let token = client
        .exchange_refresh_token(&RefreshToken::new(refresh_token.expose_secret().to_owned()))
        .request_async(&provider.http)
        .await
        .map_err(|e| match &e {
            RequestTokenError::ServerResponse(r)
                if *r.error() == BasicErrorResponseType::InvalidGrant =>
            {
                anyhow!("the stored login was revoked or has expired; run `token-broker login`")
            }
            other => anyhow!("renewing the login failed: {}", describe(other)),
        })?;
    Ok(session_from(
        &session.client_id,
        None,
        &token,
        session.refresh_token.clone(),
    ))
}

fn session_from(
    client_id: &str,
    client_secret: Option<SecretString>,
    token: &BasicTokenResponse,
    previous_refresh: Option<SecretString>,
) -> Session {
    Session {
        client_id: client_id.to_owned(),
        access_token: SecretString::from(token.access_token().secret().to_owned()),
        refresh_token: token
            .refresh_token()
            .map(|t| SecretString::from(t.secret().to_owned()))
            .or(previous_refresh),
        client_secret,
        expires_at: token.expires_in().map(|d| {
            Utc::now() + chrono::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(0))
        }),
        scope: token
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
    }
}

/// How close to expiry a stored access token is renewed before use.
pub const RENEW_MARGIN: Duration = Duration::from_secs(60);

fn describe<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    error: &RequestTokenError<RE, T>,
) -> String {
    match error {
        RequestTokenError::ServerResponse(r) => r.to_string(),
        RequestTokenError::Request(e) => format!("cannot reach the provider ({e})"),
        RequestTokenError::Parse(_, _) => "unreadable answer from the provider".into(),
        RequestTokenError::Other(m) => m.clone(),
    }
}
