//! `/admin`: a server-rendered page for operators holding `ADMIN_ROLE`.
//!
//! Operators sign in at the provider like any user (code + PKCE + nonce, redirect
//! `/admin/callback`); the broker keeps a session on its side ([`sessions`]). Revoking is a
//! POST carrying the session's CSRF token, so another site cannot make an operator's browser
//! revoke anything. Listing and revoking call the same domain functions as the API.

mod history;
mod operator;
pub(super) mod render;
mod sessions;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::api::paths;
use crate::crypto::{constant_time_eq, random_token, sha256};
use crate::grants::{ListQuery, Reads, Revoker};
use crate::http::error::{AdminRefusal, ApiError};
use crate::oidc::{OidcClient, TokenVerifier};

pub use history::show_history;
pub use operator::Operator;
use render::{error_page, passes_health_filter, tokens_page, Filters};
use sessions::PendingSignIn;
pub use sessions::Sessions;

/// What the admin page needs; `sessions` is `None` unless `ADMIN_ROLE` is set.
#[derive(Clone)]
pub struct AdminState {
    pub sessions: Option<Arc<Sessions>>,
    pub oidc: Arc<OidcClient>,
    pub verifier: Arc<TokenVerifier>,
    pub reads: Arc<Reads>,
    pub revoker: Arc<Revoker>,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    health: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// RFC 9207: the issuer of the authorization response.
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
}

fn refused(refusal: AdminRefusal) -> Response {
    error_page(ApiError::Admin(refusal))
}

fn internal(
    context: &'static str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Response {
    error_page(ApiError::internal(context, cause))
}

/// `GET /admin`: the table, or a sign-in at the provider first.
pub async fn show_admin_page(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(sessions) = admin.sessions.as_deref() else {
        return refused(AdminRefusal::NotEnabled);
    };
    let Some(session) = sessions.current(&headers) else {
        return start_sign_in(&admin.oidc, sessions);
    };
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filters = Filters {
        user: nonempty(query.user),
        task: nonempty(query.task),
        status: nonempty(query.status),
        health: nonempty(query.health),
    };
    let page = admin
        .reads
        .list(&ListQuery {
            owner: filters.user.as_deref(),
            task_id: filters.task.as_deref(),
            status: filters.status.as_deref(),
            limit: Some(200),
            ..ListQuery::default()
        })
        .await;
    match page {
        Ok(mut page) => {
            let now = chrono::Utc::now();
            page.rows
                .retain(|row| passes_health_filter(row, filters.health.as_deref(), now));
            tokens_page(&session.subject, &session.csrf, &filters, &page.rows)
        }
        Err(e) => error_page(e.into()),
    }
}

fn start_sign_in(oidc: &OidcClient, sessions: &Sessions) -> Response {
    let state = random_token(32);
    let nonce = random_token(32);
    let request = oidc.sign_in_request(&state, &nonce, &sessions.redirect);
    let cookie = sessions.begin_sign_in(&state, &request.pkce_verifier, &sha256(nonce.as_bytes()));
    match cookie.map(|c| HeaderValue::from_str(&c)) {
        Ok(Ok(cookie)) => {
            let mut response = Redirect::to(request.url.as_str()).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Ok(Err(e)) => internal("admin page: sign-in cookie", e),
        Err(e) => internal("admin page: sealing a sign-in", e),
    }
}

/// `GET /admin/callback`: finishes the operator's sign-in and checks their role.
pub async fn finish_admin_sign_in(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(sessions) = admin.sessions.as_deref() else {
        return refused(AdminRefusal::NotEnabled);
    };
    let mut response = finish_sign_in(&admin, sessions, &headers, query).await;
    // The sign-in's cookie is spent, whatever the outcome: it cannot be used twice.
    if let Ok(ended) = HeaderValue::from_str(&sessions.end_sign_in()) {
        response.headers_mut().append(header::SET_COOKIE, ended);
    }
    response
}

async fn finish_sign_in(
    admin: &AdminState,
    sessions: &Sessions,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Response {
    let pending = query
        .state
        .as_deref()
        .and_then(|s| sessions.take_sign_in(headers, s));
    let issuer_ok = admin.oidc.response_issuer_ok(query.iss.as_deref()).is_ok();
    let (Some(pending), None, Some(code), true) = (pending, &query.error, &query.code, issuer_ok)
    else {
        return refused(AdminRefusal::SignInSpent);
    };
    let (subject, lifetime) = match verify_operator(admin, sessions, code, &pending).await {
        Ok(operator) => operator,
        Err(page) => return page,
    };
    let Ok(cookie) = sessions.open(subject, lifetime) else {
        tracing::warn!("admin sign-in refused: too many sessions open");
        return refused(AdminRefusal::TooManySessions);
    };
    let mut response = Redirect::to(paths::ADMIN).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Exchanges the code, checks the ID token (nonce) and that the access token's holder has the
/// admin role. Returns the operator's subject and how long their access token stays valid: the
/// session ends then, so an operator whose role was withdrawn must sign in again (and fails).
async fn verify_operator(
    admin: &AdminState,
    sessions: &Sessions,
    code: &SecretString,
    pending: &PendingSignIn,
) -> Result<(String, std::time::Duration), Response> {
    let sign_in_refused = |why: &str| {
        tracing::warn!(reason = why, "admin sign-in refused");
        refused(AdminRefusal::SignInRefused)
    };
    let grant = admin
        .oidc
        .exchange_code_at(code, &pending.verifier, Some(&sessions.redirect))
        .await
        .map_err(|e| sign_in_refused(&e.to_string()))?;
    let id_token = grant
        .id_token
        .ok_or_else(|| sign_in_refused("no ID token"))?;
    let identity = admin
        .verifier
        .verify_id_token(id_token.expose_secret(), &pending.nonce_hash)
        .await
        .map_err(|e| sign_in_refused(&e.to_string()))?;
    let access = admin
        .verifier
        .verify_token(grant.access_token.expose_secret())
        .await
        .map_err(|e| sign_in_refused(&e.to_string()))?;
    if access.sub != identity.sub {
        return Err(sign_in_refused(
            "access and ID token name different subjects",
        ));
    }
    if !access.has_role(&sessions.role) {
        tracing::warn!(subject = %identity.sub, "admin sign-in without the admin role");
        return Err(refused(AdminRefusal::MissingRole));
    }
    Ok((identity.sub, access.remaining()))
}

/// `POST /admin/tokens/{id}/revoke`
pub async fn revoke_as_admin(
    State(admin): State<AdminState>,
    operator: Operator,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if !constant_time_eq(form.csrf.as_bytes(), operator.csrf.as_bytes()) {
        return refused(AdminRefusal::StaleForm);
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return error_page(ApiError::invalid_request("That is not a token id"));
    };
    match admin.revoker.revoke(id, &operator.caller()).await {
        Ok(_) => Redirect::to(paths::ADMIN).into_response(),
        Err(e) => error_page(e.into()),
    }
}
