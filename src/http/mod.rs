//! The HTTP API: one router, one file per route group.

mod access_token;
mod callback;
mod consent;
mod error;
mod extract;
mod state;
mod tokens;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::{AppState, Policy, Services};

/// JSON bodies here are a few hundred bytes; anything near this limit is abuse.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/auth/manager/offline-consent",
            post(consent::request_offline_consent),
        )
        .route(
            "/api/auth/manager/offline-callback",
            get(callback::complete_offline_consent),
        )
        .route(
            "/api/auth/manager/access-token",
            post(access_token::issue_access_token),
        )
        .route("/api/auth/manager/offline-tokens", get(tokens::list_tokens))
        .route(
            "/api/auth/manager/offline-tokens/{id}",
            get(tokens::get_token_status).merge(delete(tokens::revoke_token)),
        )
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "No such route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            // Spans name the path only: the callback's query string carries the authorization
            // code and state, which must never reach a log.
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .with_state(state)
}
