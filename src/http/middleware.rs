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
    /// Behind a reverse proxy every client has the proxy's address; then the first address of
    /// `X-Forwarded-For` names the client. Only trust it when a proxy you run sets it.
    trust_forwarded_for: bool,
}

impl RateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, trust_forwarded_for: bool) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota),
            trust_forwarded_for,
        }
    }

    fn client(&self, request: &Request) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
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
