//! Request metrics and per-client rate limiting.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Instant;

use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, QuantaInstant};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::Instrument;
use uuid::Uuid;

use super::client_addr::TrustedProxies;
use super::error::ApiError;
use crate::telemetry;

/// Clients tracked at most; beyond, the idlest are forgotten.
const MAX_TRACKED_CLIENTS: u64 = 10_000;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The outermost layer, one instead of four (request id set and propagated, trace span,
/// default `Cache-Control`), which cost a cache hit 10% of its rate as separate layers.
///
/// Every request gets an id, the caller's `x-request-id` if it sent one, before anything
/// logs; it runs in a span naming method, path and id (never the query: the callback's carries
/// the authorization code and state); the answer carries the id back, and `no-store` unless
/// the handler set its own `Cache-Control` (answers carry tokens, states, consent URLs, task
/// keys: no cache may keep them).
pub async fn frame_request(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let made = HeaderValue::try_from(Uuid::new_v4().to_string()).ok();
            let id = made.unwrap_or(HeaderValue::from_static("-"));
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = id.to_str().unwrap_or("-"),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    if status.is_server_error() {
        tracing::error!(parent: &span, %status, "request failed");
    } else {
        tracing::debug!(parent: &span, %status, latency = ?started.elapsed(), "request done");
    }
    let headers = response.headers_mut();
    headers.entry(header::CACHE_CONTROL).or_insert(NO_STORE);
    headers.entry(REQUEST_ID).or_insert(id);
    response
}

/// Counts and times every routed request by route template, method and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    // Labels come from fixed sets only: a made-up method must not create a metric series.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    telemetry::record_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method,
        response.status(),
        started.elapsed(),
    );
    response
}

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
