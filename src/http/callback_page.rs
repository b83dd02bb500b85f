//! The page a person sees after consenting in a browser, when the consent named no
//! `redirectUri` to send them back to. Other clients keep getting the contract's JSON.
//! No script; every value escaped; a CSP that allows only the page's own inline style.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;

use super::admin_page::render::escape;
use super::error::Code;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;\
    padding:0 1rem;line-height:1.5;color:#222}h1{font-size:1.5rem}.ok{color:#1a7f37}\
    .no{color:#b42318}code,small{color:#666}";

static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(crate::crypto::sha256(STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// Whether the caller is a browser asking for a page (it lists `text/html`; API clients send
/// `application/json`, `*/*` or nothing).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| {
            accept
                .split(',')
                .any(|media| media.trim().starts_with("text/html"))
        })
}

/// "Access granted for task X; you can close this tab."
pub fn granted(task_id: &str, id: Uuid) -> Response {
    page(
        StatusCode::OK,
        "Access granted",
        &format!(
            "<h1 class=\"ok\">Access granted</h1>\
             <p>Access granted for task <strong>{}</strong>. It can now run without you; \
             you can close this tab.</p>\
             <p><small>Token id: <code>{id}</code></small></p>",
            escape(task_id)
        ),
    )
}

/// The reason in plain words and what to do next; the code for whoever helps them.
pub fn refused(status: StatusCode, code: Code, task_id: Option<&str>, fallback: &str) -> Response {
    let (reason, next) = plain_words(code, fallback);
    let task = task_id
        .map(|t| format!(" for task <strong>{}</strong>", escape(t)))
        .unwrap_or_default();
    page(
        status,
        "Access not granted",
        &format!(
            "<h1 class=\"no\">Access not granted</h1>\
             <p>Access was not granted{task}: {}</p><p>{}</p>\
             <p><small>Error code: <code>{}</code></small></p>",
            escape(&reason),
            escape(next),
            escape(code.as_str())
        ),
    )
}

fn plain_words(code: Code, fallback: &str) -> (String, &'static str) {
    const AGAIN: &str = "Start the consent again from the application that sent you here.";
    let (reason, next) = match code {
        Code::SubjectMismatch => (
            "you signed in at the identity provider as a different user than the one who asked \
             for this access.",
            "Sign out at the identity provider, then start the consent again from the \
             application and sign in as yourself.",
        ),
        Code::ConsentFailed => (
            "the identity provider did not grant offline access (it was declined, or the \
             provider refused the request).",
            "Start the consent again from the application and allow offline access when asked.",
        ),
        Code::InvalidState | Code::InvalidRequest => {
            ("this consent link has expired or was already used.", AGAIN)
        }
        Code::TokenRevoked | Code::TokenExpired | Code::TokenFailed => (
            "the token was revoked or ended while you were consenting.",
            AGAIN,
        ),
        Code::ProviderUnavailable
        | Code::ProviderBusy
        | Code::ProviderError
        | Code::DatabaseUnavailable => (
            "the service could not complete the consent just now.",
            "Wait a few minutes, then start the consent again from the application.",
        ),
        _ => return (format!("{fallback}."), AGAIN),
    };
    (reason.to_owned(), next)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    response
}
