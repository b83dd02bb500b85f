//! `GET /admin/tokens/{id}/history`: one grant's audit trail, for an operator.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use uuid::Uuid;

use super::render::{error_page, escape, page, protected};
use super::{AdminState, Operator};
use crate::http::error::ApiError;
use crate::vault::{AuditRecord, VaultRow};

/// How many records the page shows (the oldest first).
const HISTORY_LIMIT: u32 = 500;

pub async fn show_history(
    State(admin): State<AdminState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return error_page(ApiError::invalid_request("That is not a token id"));
    };
    let row = match admin.reads.find_any(id).await {
        Ok(row) => row,
        Err(e) => return error_page(e.into()),
    };
    match admin.reads.history(id, HISTORY_LIMIT).await {
        Ok(records) => history_page(&row, &records),
        Err(e) => error_page(e.into()),
    }
}

fn history_page(row: &VaultRow, records: &[AuditRecord]) -> Response {
    let mut table = String::from(
        "<table id=\"history\"><thead><tr><th>at</th><th>action</th><th>outcome</th>\
         <th>reason</th><th>actor</th></tr></thead><tbody>",
    );
    for record in records {
        table.push_str(&format!(
            "<tr class=\"{outcome}\"><td>{at}</td><td class=\"action\">{action}</td>\
             <td>{outcome}</td><td>{reason}</td><td>{actor}</td></tr>",
            at = record.at.format("%Y-%m-%d %H:%M:%S"),
            action = escape(&record.action),
            outcome = escape(&record.outcome),
            reason = escape(record.reason.as_deref().unwrap_or("")),
            actor = escape(&record.actor),
        ));
    }
    table.push_str("</tbody></table>");
    let body = format!(
        "<h1>History of {id}</h1><p>Task <b>{task}</b> of <b>{user}</b>, now \
         <b id=\"status\">{status}</b>. {count} record(s), oldest first (at most \
         {HISTORY_LIMIT}). <a href=\"{admin}\">Back to all tokens</a></p>{table}",
        id = row.id,
        task = escape(&row.task_id),
        user = escape(&row.user_id),
        status = row.status,
        count = records.len(),
        admin = crate::api::paths::ADMIN,
    );
    protected(Html(page("token-broker admin: history", &body)).into_response())
}
