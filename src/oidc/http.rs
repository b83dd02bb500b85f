//! The HTTP client the broker talks to the provider with: no redirects, bounded timeouts.

use std::time::Duration;

/// The one HTTP client for talking to the provider.
///
/// Redirects are never followed: a token endpoint that redirects is misconfigured or hostile,
/// and following it would send client credentials elsewhere (SSRF). Timeouts bound how long a
/// slow provider can hold a request, and with it a database row lock.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("token-broker/", env!("CARGO_PKG_VERSION")))
        .build()
}
