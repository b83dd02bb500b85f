//! Prometheus metrics. The recorder is process-wide; `/metrics` renders it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "token_broker_http_requests_total";
pub const HTTP_DURATION: &str = "token_broker_http_request_duration_seconds";
pub const PROVIDER_REFRESHES: &str = "token_broker_provider_refreshes_total";
pub const CACHE_LOOKUPS: &str = "token_broker_access_token_cache_total";
pub const VAULT_ROWS: &str = "token_broker_vault_rows";
pub const RATE_LIMITED: &str = "token_broker_rate_limited_total";
pub const CIRCUIT_OPEN: &str = "token_broker_provider_circuit_open";
pub const CIRCUIT_TRIPS: &str = "token_broker_provider_circuit_trips_total";

const UPKEEP_EVERY: Duration = Duration::from_secs(5);

const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Installs the recorder on first use and returns its handle (None if another recorder owns
/// the process, which only happens when this crate is embedded).
///
/// Histogram samples wait in the recorder until upkeep folds them into buckets; without it
/// memory grows with every request between scrapes (seen: 13 → 50 MiB over 30 s of load).
/// The exporter's own HTTP listener would run upkeep; we serve `/metrics` ourselves, so a
/// thread does it.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &LATENCY_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The handles of one request label set. Looking a metric up by name and labels costs a key
/// allocation and a registry search (measured: 4% of a cache hit's CPU); a handle is kept per
/// thread instead, and recording through it is one atomic add.
struct RequestMetrics {
    count: metrics::Counter,
    duration: metrics::Histogram,
}

type RequestHandles = HashMap<String, HashMap<(&'static str, u16), RequestMetrics>>;

thread_local! {
    static REQUEST_METRICS: RefCell<RequestHandles> = RefCell::default();
}

/// `route` is a route template (or "unmatched"), never a raw path: the label sets stay few.
pub fn record_request(route: &str, method: &'static str, status: StatusCode, elapsed: Duration) {
    REQUEST_METRICS.with_borrow_mut(|by_route| {
        let by_labels = match by_route.get_mut(route) {
            Some(known) => known,
            None => by_route.entry(route.to_owned()).or_default(),
        };
        let handles = by_labels
            .entry((method, status.as_u16()))
            .or_insert_with(|| {
                // Handles taken before the recorder exists would record nowhere.
                prometheus();
                let route = interned(route);
                let status = interned(status.as_str());
                RequestMetrics {
                    count: metrics::counter!(
                        HTTP_REQUESTS, "route" => route, "method" => method, "status" => status
                    ),
                    duration: metrics::histogram!(HTTP_DURATION, "route" => route),
                }
            });
        handles.count.increment(1);
        handles.duration.record(elapsed.as_secs_f64());
    });
}

/// Label values as `&'static str`, so recording a request allocates nothing. Only bounded sets
/// come here (route templates, status codes), so the strings kept forever stay few.
fn interned(value: &str) -> &'static str {
    static SEEN: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(RwLock::default);
    if let Some(known) = seen.read().ok().and_then(|s| s.get(value).copied()) {
        return known;
    }
    let Ok(mut seen) = seen.write() else {
        return "unknown";
    };
    if let Some(known) = seen.get(value) {
        return known;
    }
    let kept: &'static str = Box::leak(value.to_owned().into_boxed_str());
    seen.insert(kept);
    kept
}

/// `outcome`: success, invalid_grant, unavailable, rejected.
pub fn record_refresh(outcome: &'static str) {
    metrics::counter!(PROVIDER_REFRESHES, "outcome" => outcome).increment(1);
}

pub fn record_cache(hit: bool) {
    static HANDLES: OnceLock<[metrics::Counter; 2]> = OnceLock::new();
    let [hits, misses] = HANDLES.get_or_init(|| {
        prometheus();
        ["hit", "miss"].map(|result| metrics::counter!(CACHE_LOOKUPS, "result" => result))
    });
    if hit { hits } else { misses }.increment(1);
}

pub fn record_rate_limited(route: &str) {
    metrics::counter!(RATE_LIMITED, "route" => interned(route)).increment(1);
}

pub fn set_vault_rows(status: &str, count: u64) {
    metrics::gauge!(VAULT_ROWS, "status" => status.to_owned()).set(count as f64);
}

/// 1 while the provider circuit is open (refreshes fail fast), else 0; each opening counts.
pub fn set_circuit_open(open: bool) {
    metrics::gauge!(CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
    if open {
        metrics::counter!(CIRCUIT_TRIPS).increment(1);
    }
}
