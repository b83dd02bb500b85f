//! The admin page's HTML: no build step, no script, every value escaped.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use chrono::{DateTime, Utc};

use crate::api::paths;
use crate::http::error::ApiError;
use crate::vault::{Status, StatusReason, VaultRow};

/// The filters as the operator typed them.
pub struct Filters {
    pub user: Option<String>,
    pub task: Option<String>,
    pub status: Option<String>,
    /// `failing` or `expiring`: applied to the rows the other filters found.
    pub health: Option<String>,
}

/// Rows whose grant or refresh token ends within this are "expiring soon".
pub const EXPIRING_SOON: chrono::Duration = chrono::Duration::days(7);

/// Whether a row passes the health filter.
pub fn passes_health_filter(row: &VaultRow, health: Option<&str>, now: DateTime<Utc>) -> bool {
    match health {
        Some("failing") => row.health.consecutive_failures > 0,
        Some("expiring") => expiring_soon(row, now),
        _ => true,
    }
}

fn expiring_soon(row: &VaultRow, now: DateTime<Utc>) -> bool {
    let soon = now + EXPIRING_SOON;
    row.status == Status::Active
        && (row.expires_at < soon || row.health.refresh_expires_at.is_some_and(|t| t < soon))
}

/// "2 failures (provider_unavailable)", "expires 2026-12-01", or "ok".
fn health_text(row: &VaultRow, now: DateTime<Utc>) -> String {
    let mut parts = Vec::new();
    if row.health.consecutive_failures > 0 {
        parts.push(format!(
            "{} failure(s){}",
            row.health.consecutive_failures,
            row.health
                .last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if expiring_soon(row, now) {
        let ends = row
            .health
            .refresh_expires_at
            .map_or(row.expires_at, |t| t.min(row.expires_at));
        parts.push(format!("expires {}", ends.format("%Y-%m-%d %H:%M")));
    }
    if parts.is_empty() && row.status == Status::Active {
        parts.push("ok".into());
    }
    parts.join("; ")
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}\
    th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;font-size:.9rem}\
    th{background:#f3f3f3}form.filters{margin:1rem 0}.revoked,.failed,.expired{color:#888}";

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

/// An error as a page: status, message and `Retry-After` from its row of the error table
/// ([`ApiError::answer`]), the stable code in small print; an internal cause is logged here.
pub fn error_page(error: ApiError) -> Response {
    error.log_cause();
    let answer = error.answer();
    let body = format!(
        "<h1>token-broker admin</h1><p id=\"message\">{}</p>\
         <p><small>Error code: <code id=\"code\">{}</code></small></p>",
        escape(&answer.message),
        answer.code.as_str()
    );
    // The same headers as the table: an error page must not be framed or run scripts either.
    let mut response =
        protected((answer.status, Html(page("token-broker admin", &body))).into_response());
    if let Some(wait) = answer.retry_after_header() {
        response.headers_mut().insert(header::RETRY_AFTER, wait);
    }
    response
}

pub fn tokens_page(operator: &str, csrf: &str, filters: &Filters, rows: &[VaultRow]) -> Response {
    let now = Utc::now();
    let value = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let options: String = ["", "pending", "active", "failed", "revoked", "expired"]
        .iter()
        .map(|s| {
            let selected = if filters.status.as_deref() == Some(*s) {
                " selected"
            } else {
                ""
            };
            let label = if s.is_empty() { "any status" } else { s };
            format!("<option value=\"{s}\"{selected}>{label}</option>")
        })
        .collect();
    let health_options: String = [
        ("", "any health"),
        ("failing", "failing"),
        ("expiring", "expiring soon"),
    ]
    .iter()
    .map(|(value, label)| {
        let selected = if filters.health.as_deref() == Some(*value) {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{value}\"{selected}>{label}</option>")
    })
    .collect();
    let mut table = String::from(
        "<table id=\"tokens\"><thead><tr><th>token</th><th>user</th><th>task</th><th>status</th>\
         <th>reason</th><th>health</th><th>last refresh</th><th>created</th><th>last used</th>\
         <th></th><th></th></tr></thead><tbody>",
    );
    for row in rows {
        let revoke = if row.status == crate::vault::Status::Revoked {
            String::new()
        } else {
            format!(
                "<form method=\"post\" action=\"{action}\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" data-token=\"{id}\">Revoke</button></form>",
                id = row.id,
                action = paths::admin_revoke(row.id),
                csrf = escape(csrf)
            )
        };
        table.push_str(&format!(
            "<tr data-token=\"{id}\" class=\"{status}\"><td>{id}</td><td>{user}</td><td>{task}</td>\
             <td class=\"status\">{status}</td><td>{reason}</td><td class=\"health\">{health}</td>\
             <td>{refreshed}</td><td>{created}</td><td>{used}</td>\
             <td><a href=\"{history}\">history</a></td><td>{revoke}</td></tr>",
            id = row.id,
            history = paths::admin_history(row.id),
            user = escape(&row.user_id),
            task = escape(&row.task_id),
            status = row.status,
            reason = escape(row.status_reason.as_ref().map_or("", StatusReason::as_str)),
            health = escape(&health_text(row, now)),
            refreshed = time(row.health.last_refresh_at),
            created = time(Some(row.created_at)),
            used = time(row.last_used_at),
        ));
    }
    table.push_str("</tbody></table>");
    let body = format!(
        "<h1>token-broker admin</h1><p>Signed in as <b id=\"operator\">{operator}</b>. \
         Showing {count} row(s), newest first (at most 200).</p>\
         <form class=\"filters\" method=\"get\" action=\"{admin}\">\
         <input name=\"user\" placeholder=\"user\" value=\"{user}\"> \
         <input name=\"task\" placeholder=\"task\" value=\"{task}\"> \
         <select name=\"status\">{options}</select> <select name=\"health\">{health_options}</select> \
         <button type=\"submit\">Filter</button></form>{table}",
        operator = escape(operator),
        admin = paths::ADMIN,
        count = rows.len(),
        user = value(&filters.user),
        task = value(&filters.task),
    );
    protected(Html(page("token-broker admin", &body)).into_response())
}

/// The page carries a CSRF token and user data: never cache it, never frame it.
pub(super) fn protected(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        axum::http::HeaderName::from_static("x-frame-options"),
        axum::http::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        axum::http::HeaderName::from_static("content-security-policy"),
        axum::http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x'&")</script>"#),
            "&lt;script&gt;alert(&quot;x&#39;&amp;&quot;)&lt;/script&gt;"
        );
    }
}
