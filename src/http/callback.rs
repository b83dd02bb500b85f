//! `GET /api/auth/manager/offline-callback`: the provider's redirect back after consent, answered
//! as JSON, a page for a person, or a redirect to the frontend.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::callback_page;
use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use crate::api::{paths, CallbackSuccess};
use crate::grants::{Callbacks, Failure, ProviderReply};
use crate::vault::ClaimedRow;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code; absent when the provider answered with `error`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    code: Option<SecretString>,
    /// The state of the consent being completed (one use, short-lived).
    #[serde(default)]
    #[param(required = true, min_length = 1, max_length = 512)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// RFC 9207: the issuer that sent the browser back, to defeat mix-up attacks.
    #[serde(default)]
    iss: Option<String>,
}

/// `GET /api/auth/manager/offline-callback`: where the provider sends the browser back.
#[utoipa::path(
    get,
    path = paths::OFFLINE_CALLBACK,
    tag = "consent",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Offline token stored (a browser asking for text/html gets a page instead)", body = CallbackSuccess),
        (status = 303, description = "Back to the consent's redirectUri, with persistentTokenId and status"),
        (status = 400, description = "Bad, used or expired state; or the consent failed", body = ErrorBody),
        (status = 403, description = "Someone else signed in at the provider", body = ErrorBody),
        (status = 410, description = "The token was revoked or expired while the consent completed", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Provider unreachable", body = ErrorBody),
    )
)]
pub async fn complete_offline_consent(
    State(callbacks): State<Arc<Callbacks>>,
    headers: HeaderMap,
    query: Result<ApiQuery<CallbackQuery>, ApiError>,
) -> Response {
    let html = callback_page::wants_html(&headers);
    let query = match query {
        Ok(ApiQuery(query)) => query,
        Err(error) => return respond_error(error, None, html),
    };
    let reply = ProviderReply {
        code: query.code,
        state: query.state,
        error: query.error,
        iss: query.iss,
    };
    let completed = match callbacks.complete(&reply).await {
        Ok(completed) => completed,
        Err(error) => return respond_error(error.into(), None, html),
    };
    match completed.outcome {
        Ok(()) => respond_success(&completed.consent, html),
        Err(failure) => respond_failure(&completed.consent, failure, html),
    }
}

fn respond_success(consent: &ClaimedRow, html: bool) -> Response {
    if let Some(response) = redirect_back(consent, "active", None) {
        return response;
    }
    if html {
        return callback_page::granted(&consent.task_id, consent.id);
    }
    Json(CallbackSuccess {
        success: true,
        persistent_token_id: consent.id,
        task_id: consent.task_id.clone(),
        message: "Offline token successfully obtained and stored".into(),
    })
    .into_response()
}

fn respond_failure(consent: &ClaimedRow, failure: Failure, html: bool) -> Response {
    if let Some(response) = redirect_back(consent, "failed", Some(failure.reason.as_str())) {
        return response;
    }
    respond_error(ApiError::from(failure), Some(&consent.task_id), html)
}

/// The contract's JSON error, or for a browser the same row of the error table as a page that
/// says in plain words what went wrong and what to do.
fn respond_error(error: ApiError, task_id: Option<&str>, html: bool) -> Response {
    if !html {
        return error.into_response();
    }
    error.log_cause();
    let answer = error.answer();
    let mut page = callback_page::refused(answer.status, answer.code, task_id, &answer.message);
    if let Some(retry) = answer.retry_after_header() {
        page.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    page
}

/// A 303 to the consent's `redirectUri`, already checked against the allowed origins.
fn redirect_back(consent: &ClaimedRow, status: &str, reason: Option<&str>) -> Option<Response> {
    let mut url = Url::parse(consent.redirect_uri.as_deref()?).ok()?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("persistentTokenId", &consent.id.to_string())
            .append_pair("status", status);
        if let Some(reason) = reason {
            query.append_pair("reason", reason);
        }
    }
    Some((StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response())
}
