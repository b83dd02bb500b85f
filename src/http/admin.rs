//! `/admin`: a server-rendered page for operators holding `ADMIN_ROLE`.
//!
//! Operators sign in at the provider like any user (code + PKCE + nonce, redirect
//! `/admin/callback`); the broker keeps a session on its side and gives the browser only a
//! random id (HttpOnly, SameSite=Lax, Path=/admin). Revoking is a POST carrying the session's
//! CSRF token, so another site cannot make an operator's browser revoke anything.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use super::admin_page::{message_page, tokens_page, Filters};
use super::state::{AppState, Services};
use crate::crypto::{constant_time_eq, random_token, sha256};
use crate::grants::revoke::REVOKED_BY_ADMIN;
use crate::grants::RevokeError;
use crate::vault::{ListFilter, Status};

const COOKIE: &str = "tb_admin";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const SIGN_IN_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 10_000;

struct Session {
    subject: String,
    csrf: String,
    expires: Instant,
}

struct PendingSignIn {
    verifier: SecretString,
    nonce_hash: Vec<u8>,
    expires: Instant,
}

/// Sessions and sign-ins in progress, by the digest of their random ids.
pub struct Admin {
    role: String,
    redirect: Url,
    secure_cookie: bool,
    sessions: Mutex<HashMap<Vec<u8>, Session>>,
    pending: Mutex<HashMap<Vec<u8>, PendingSignIn>>,
}

impl Admin {
    pub fn new(role: String, public_base_url: &Url) -> Self {
        let mut redirect = public_base_url.clone();
        let path = format!("{}/admin/callback", redirect.path().trim_end_matches('/'));
        redirect.set_path(&path);
        Self {
            role,
            secure_cookie: public_base_url.scheme() == "https",
            redirect,
            sessions: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(&sha256(id.as_bytes()))
            .filter(|s| s.expires > Instant::now())
            .map(|s| (s.subject.clone(), s.csrf.clone()))
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: String,
}

fn not_enabled() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "The admin page is not enabled (ADMIN_ROLE).",
    )
}

/// `GET /admin`: the table, or a sign-in at the provider first.
pub async fn show_admin_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(admin) = state.admin.as_ref() else {
        return not_enabled();
    };
    let Some((subject, csrf)) = admin.session(&headers) else {
        return start_sign_in(&state, admin);
    };
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    let parsed_status = match status.map(str::parse::<Status>).transpose() {
        Ok(status) => status,
        Err(()) => return message_page(StatusCode::BAD_REQUEST, "Unknown status filter."),
    };
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filters = Filters {
        user: nonempty(query.user),
        task: nonempty(query.task),
        status: status.map(str::to_owned),
    };
    let rows = state
        .vault
        .list(&ListFilter {
            user_id: filters.user.clone(),
            task_id: filters.task.clone(),
            status: parsed_status,
            limit: 200,
            offset: 0,
        })
        .await;
    match rows {
        Ok(rows) => tokens_page(&subject, &csrf, &filters, &rows),
        Err(e) => {
            tracing::error!(error = %e, "admin page cannot list rows");
            message_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.")
        }
    }
}

fn start_sign_in(state: &Services, admin: &Admin) -> Response {
    let sign_in_state = random_token(32);
    let nonce = random_token(32);
    let request = state
        .oidc
        .sign_in_request(&sign_in_state, &nonce, &admin.redirect);
    let mut pending = admin.pending.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    pending.retain(|_, p| p.expires > now);
    if pending.len() >= MAX_PENDING {
        return message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins in progress.",
        );
    }
    pending.insert(
        sha256(sign_in_state.as_bytes()),
        PendingSignIn {
            verifier: request.pkce_verifier,
            nonce_hash: sha256(nonce.as_bytes()),
            expires: now + SIGN_IN_TTL,
        },
    );
    Redirect::to(request.url.as_str()).into_response()
}

/// `GET /admin/callback`: finishes the operator's sign-in and checks their role.
pub async fn finish_admin_sign_in(
    State(state): State<AppState>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(admin) = state.admin.as_ref() else {
        return not_enabled();
    };
    let pending = query.state.as_deref().and_then(|s| {
        admin
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&sha256(s.as_bytes()))
            .filter(|p| p.expires > Instant::now())
    });
    let (Some(pending), None, Some(code)) = (pending, &query.error, &query.code) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "The sign-in was refused, expired or already used. Open /admin to try again.",
        );
    };
    let subject = match verify_operator(&state, admin, code, &pending).await {
        Ok(subject) => subject,
        Err(page) => return page,
    };
    let id = random_token(32);
    let csrf = random_token(32);
    admin
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            sha256(id.as_bytes()),
            Session {
                subject,
                csrf,
                expires: Instant::now() + SESSION_TTL,
            },
        );
    let secure = if admin.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Lax{secure}");
    let mut response = Redirect::to("/admin").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Exchanges the code, checks the ID token (nonce) and that the access token's holder has the
/// admin role. Returns the operator's subject.
async fn verify_operator(
    state: &Services,
    admin: &Admin,
    code: &SecretString,
    pending: &PendingSignIn,
) -> Result<String, Response> {
    let refused = |why: &str| {
        tracing::warn!(reason = why, "admin sign-in refused");
        message_page(StatusCode::FORBIDDEN, "Sign-in refused.")
    };
    let grant = state
        .oidc
        .exchange_code_at(code, &pending.verifier, Some(&admin.redirect))
        .await
        .map_err(|e| refused(&e.to_string()))?;
    let id_token = grant.id_token.ok_or_else(|| refused("no ID token"))?;
    let identity = state
        .verifier
        .verify_id_token(id_token.expose_secret(), &pending.nonce_hash)
        .await
        .map_err(|e| refused(&e.to_string()))?;
    let access = state
        .verifier
        .verify_caller(grant.access_token.expose_secret())
        .await
        .map_err(|e| refused(&e.to_string()))?;
    if access.sub != identity.sub {
        return Err(refused("access and ID token name different subjects"));
    }
    if !access.has_role(&admin.role) {
        tracing::warn!(subject = %identity.sub, "admin sign-in without the admin role");
        return Err(message_page(
            StatusCode::FORBIDDEN,
            "Your account does not have the role this page requires.",
        ));
    }
    Ok(identity.sub)
}

/// `POST /admin/tokens/{id}/revoke`
pub async fn revoke_as_admin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    let Some(admin) = state.admin.as_ref() else {
        return not_enabled();
    };
    let Some((subject, csrf)) = admin.session(&headers) else {
        return message_page(
            StatusCode::UNAUTHORIZED,
            "Your session has ended. Open /admin again.",
        );
    };
    if !constant_time_eq(form.csrf.as_bytes(), csrf.as_bytes()) {
        return message_page(
            StatusCode::FORBIDDEN,
            "The form is stale. Reload /admin and try again.",
        );
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return message_page(StatusCode::BAD_REQUEST, "Not a token id.");
    };
    match state
        .revoker
        .revoke(id, None, &subject, REVOKED_BY_ADMIN)
        .await
    {
        Ok(_) => Redirect::to("/admin").into_response(),
        Err(RevokeError::NotFound) => message_page(StatusCode::NOT_FOUND, "No such token."),
        Err(RevokeError::Vault(e)) => {
            tracing::error!(error = %e, "admin revoke failed");
            message_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.")
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}
