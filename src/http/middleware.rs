//! Request metrics and per-client rate limiting.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Instant;

use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::client_addr::TrustedProxies;
use super::error::ApiError;
use crate::telemetry;

/// Forgets idle clients once this many are tracked.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Counts and times every routed request by route template, method and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    telemetry::record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A GCRA limiter (`governor`) per client address.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Behind proxies, the client is found in `X-Forwarded-For` (see [`TrustedProxies`]).
    proxies: Arc<TrustedProxies>,
}

impl RateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, proxies: Arc<TrustedProxies>) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
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
}

/// Answers 429 with `Retry-After` (whole seconds, at least 1) once a client exceeds its quota.
pub async fn limit_rate(
    State(limit): State<Option<Arc<RateLimit>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limit) = &limit else {
        return next.run(request).await;
    };
    let Some(client) = limit.client(&request) else {
        return next.run(request).await;
    };
    if limit.limiter.len() > MAX_TRACKED_CLIENTS {
        limit.limiter.retain_recent();
    }
    match limit.limiter.check_key(&client) {
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
