//! Per-client rate limiting.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::client_addr::TrustedProxies;
use super::error::ApiError;
use crate::telemetry;

/// Clients tracked at most; beyond, the idlest are forgotten.
const MAX_TRACKED_CLIENTS: u64 = 10_000;

/// A GCRA limiter (`governor`) per client address, kept in a bounded cache (`quick_cache`): at
/// most `MAX_TRACKED_CLIENTS` clients, rarely seen ones forgotten first, so a flood of made-up
/// addresses cannot grow memory. A forgotten client starts again with a full burst.
pub struct RateLimit {
    clients: quick_cache::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    quota: Quota,
    /// Behind proxies, the client is found in `X-Forwarded-For` (see [`TrustedProxies`]).
    proxies: Arc<TrustedProxies>,
}

impl RateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, proxies: Arc<TrustedProxies>) -> Self {
        Self::bounded(per_second, burst, proxies, MAX_TRACKED_CLIENTS)
    }

    pub fn bounded(
        per_second: NonZeroU32,
        burst: NonZeroU32,
        proxies: Arc<TrustedProxies>,
        max_clients: u64,
    ) -> Self {
        Self {
            clients: quick_cache::sync::Cache::new(
                usize::try_from(max_clients).unwrap_or(usize::MAX),
            ),
            quota: Quota::per_second(per_second).allow_burst(burst),
            proxies,
        }
    }

    fn client(&self, request: &Request) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        self.proxies.client(peer, request.headers())
    }

    fn check(&self, client: IpAddr) -> Result<(), governor::NotUntil<QuantaInstant>> {
        let quota = self.quota;
        let limiter = self
            .clients
            .get_or_insert_with(&client, || {
                Ok::<_, std::convert::Infallible>(Arc::new(RateLimiter::direct(quota)))
            })
            .unwrap_or_else(|never| match never {});
        limiter.check()
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> u64 {
        self.clients.len() as u64
    }
}

/// Answers 429 with `Retry-After` (whole seconds, at least 1) once a client exceeds its quota.
pub async fn limit_rate(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(client) = limit.client(&request) else {
        return next.run(request).await;
    };
    match limit.check(client) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str());
            telemetry::record_rate_limited(route);
            let refused = ApiError::RateLimited { retry_after: wait };
            if route == crate::api::paths::TOKEN {
                // OAuth clients on the token endpoint read RFC 6749's error shape.
                return super::token_exchange::oauth_refusal(&refused);
            }
            refused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_addresses_stays_within_the_bound() {
        let one = NonZeroU32::new(1).unwrap();
        let limit = RateLimit::bounded(one, one, Arc::default(), 100);
        for i in 0..5_000u32 {
            let _ = limit.check(IpAddr::from(i.to_be_bytes()));
        }
        assert!(limit.tracked() <= 100, "{}", limit.tracked());
        // A client is still limited.
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limit.check(client).is_ok());
        assert!(limit.check(client).is_err());
    }
}
