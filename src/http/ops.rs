//! `/healthz`, `/readyz`, `/metrics`: for the orchestrator and Prometheus, no authentication.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::paths;
use crate::telemetry;
use crate::vault::TokenVault;

/// The process is up.
#[utoipa::path(get, path = paths::HEALTHZ, tag = "operations", responses((status = 200, description = "Up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers and the provider's metadata and keys were
/// loaded at start-up (the broker does not start without them).
#[utoipa::path(get, path = paths::READYZ, tag = "operations", responses(
    (status = 200, description = "Ready"), (status = 503, description = "Database unreachable")))]
pub async fn readyz(State(vault): State<Arc<dyn TokenVault>>) -> Response {
    match vault.ping().await {
        Ok(()) => Json(json!({
            "status": "ready",
            "checks": { "database": "ok", "provider": "ok" },
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "checks": { "database": "unreachable", "provider": "ok" },
                })),
            )
                .into_response()
        }
    }
}

/// Prometheus text format; row counts by status are read at scrape time.
pub async fn metrics(State(vault): State<Arc<dyn TokenVault>>) -> Response {
    match vault.count_by_status().await {
        Ok(counts) => {
            for status in ["pending", "active", "failed", "revoked", "expired"] {
                let count = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                telemetry::set_vault_rows(status, u64::try_from(count).unwrap_or(0));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count rows for metrics"),
    }
    let body = telemetry::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
