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

/// A GCRA limiter (`governor`) per client address, kept in a bounded cache (`moka`): at most
/// `MAX_TRACKED_CLIENTS` clients, idle ones forgotten first, so a flood of made-up addresses
/// cannot grow memory.
pub struct RateLimit {
    clients: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
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
        let quota = Quota::per_second(per_second).allow_burst(burst);
        // A client idle for as long as its whole burst takes to refill is back to a full
        // bucket: forgetting it then changes nothing.
        let refill = quota.replenish_interval() * burst.get();
        Self {
            clients: moka::sync::Cache::builder()
                .max_capacity(max_clients)
                .time_to_idle(refill.max(std::time::Duration::from_secs(1)))
                .build(),
            quota,
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
        self.clients
            .get_with(client, || Arc::new(RateLimiter::direct(quota)))
            .check()
    }

    /// Clients tracked now (after pending evictions).
    pub fn tracked(&self) -> u64 {
        self.clients.run_pending_tasks();
        self.clients.entry_count()
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
            ApiError::RateLimited { retry_after: wait }.into_response()
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
