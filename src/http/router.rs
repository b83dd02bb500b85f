//! The route table: every path the broker serves, and the layers around them.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{header, Method};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;
use super::state::AppState;
use super::{
    access_token, admin_page, api_document, callback, consent, frame, openapi, ops, rate_limit,
    task_keys, token_exchange, tokens, workloads,
};
use crate::api::paths;

/// Origins whose browser pages may call the API (CORS); empty = no CORS headers.
#[derive(Clone, Debug, Default)]
pub struct Cors(pub Vec<url::Origin>);

/// JSON bodies here are a few hundred bytes; anything near this limit is abuse.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The API, and `/metrics` too unless `metrics_elsewhere` (then serve [`metrics_router`]).
pub fn router(state: AppState, cors: &Cors, metrics_elsewhere: bool) -> Router {
    // The routes a client drives are rate limited per client.
    let mut limited = Router::new()
        .route(
            paths::OFFLINE_CONSENT,
            post(consent::request_offline_consent),
        )
        .route(
            paths::OFFLINE_CALLBACK,
            get(callback::complete_offline_consent),
        )
        .route(paths::ACCESS_TOKEN, post(access_token::issue_access_token))
        .route(paths::TOKEN, post(token_exchange::exchange_token))
        // The routes that write rows a signed-in user could otherwise grow without bound
        // (task keys, re-consents and their audit records), and the admin page's sign-in.
        .route(paths::RECONSENT, post(tokens::reconsent_token))
        .route(
            paths::TASK_KEYS,
            post(task_keys::create_task_key).get(task_keys::list_task_keys),
        )
        .route(paths::TASK_KEY, delete(task_keys::revoke_task_key))
        .route(
            paths::WORKLOADS,
            post(workloads::create_workload_binding).get(workloads::list_workload_bindings),
        )
        .route(paths::WORKLOAD, delete(workloads::revoke_workload_binding))
        .route(paths::ADMIN, get(admin_page::show_admin_page))
        .route(paths::ADMIN_CALLBACK, get(admin_page::finish_admin_sign_in))
        .route(paths::ADMIN_HISTORY, get(admin_page::show_history))
        .route(paths::ADMIN_REVOKE, post(admin_page::revoke_as_admin));
    // Off (RATE_LIMIT_PER_SECOND=0), no layer at all: not even a pass-through per request.
    if let Some(limit) = Option::<Arc<rate_limit::RateLimit>>::from_ref(&state) {
        limited = limited.route_layer(axum::middleware::from_fn_with_state(
            limit,
            rate_limit::limit_rate,
        ));
    }
    let mut api = Router::new()
        .merge(limited)
        .route(paths::OFFLINE_TOKENS, get(tokens::list_tokens))
        .route(
            paths::OFFLINE_TOKEN,
            get(tokens::get_token_status).merge(delete(tokens::revoke_token)),
        )
        .route(paths::OPENAPI, get(api_document::openapi_json))
        .route(paths::HEALTHZ, get(ops::healthz))
        .route(paths::READYZ, get(ops::readyz));
    if !metrics_elsewhere {
        api = api.route(paths::METRICS, get(ops::metrics));
    }
    api = api.merge(openapi::docs_viewer());
    let cors = cors_layer(&cors.0);
    let api = api
        .route_layer(frame::TrackLayer)
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let api = match cors {
        Some(cors) => api.layer(cors),
        None => api,
    };
    api
        // Outermost: every request has an id before anything logs.
        .layer(frame::FrameLayer)
        .with_state(state)
}

/// `/metrics` alone, for a separate listen address (`METRICS_ADDR`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(paths::METRICS, get(ops::metrics))
        .with_state(state)
}

/// CORS for the frontend's fetch calls, only from the configured origins.
fn cors_layer(origins: &[url::Origin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<_> = origins
        .iter()
        .filter_map(|o| o.ascii_serialization().parse().ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                frame::REQUEST_ID,
            ])
            .expose_headers([frame::REQUEST_ID, header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
