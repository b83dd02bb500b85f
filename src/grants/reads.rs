//! Reading grants: one row's status, or a page of rows, for their owner (the API) or for an
//! operator (the admin page). No secrets leave through here: callers get [`VaultRow`]s and show
//! only what they choose.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::consent::{validate_task_id, ConsentError};
use crate::vault::{
    AuditQuery, AuditRecord, ListFilter, ListPosition, Status, TokenVault, VaultError, VaultRow,
};

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such token for this caller")]
    NotFound,
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Which rows to list.
#[derive(Debug, Default)]
pub struct ListQuery<'a> {
    /// Only this user's rows; `None` = everybody's (operators only).
    pub owner: Option<&'a str>,
    pub task_id: Option<&'a str>,
    /// As given: checked here.
    pub status: Option<&'a str>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// A previous page's `next_cursor`: the page after it (`offset` then counts from there).
    pub cursor: Option<&'a str>,
}

/// One page, newest first; when another page exists, where it starts: `next_cursor` always,
/// `next_offset` too unless the page was asked for by cursor.
pub struct Page {
    pub rows: Vec<VaultRow>,
    pub next_offset: Option<u32>,
    pub next_cursor: Option<String>,
}

pub struct Reads {
    vault: Arc<dyn TokenVault>,
}

impl Reads {
    pub fn new(vault: Arc<dyn TokenVault>) -> Self {
        Self { vault }
    }

    /// Row `id` if it belongs to `owner`; anyone else's is `NotFound`, like a missing one.
    pub async fn status(&self, owner: &str, id: Uuid) -> Result<VaultRow, ReadError> {
        self.vault
            .find(id)
            .await?
            .filter(|row| row.user_id == owner)
            .ok_or(ReadError::NotFound)
    }

    /// Any row by id, for an operator (no owner check: the caller has checked the role).
    pub async fn find_any(&self, id: Uuid) -> Result<VaultRow, ReadError> {
        self.vault.find(id).await?.ok_or(ReadError::NotFound)
    }

    /// A row's audit trail, newest last, at most `limit` records: for operators.
    pub async fn history(&self, id: Uuid, limit: u32) -> Result<Vec<AuditRecord>, ReadError> {
        Ok(self
            .vault
            .audit_trail(&AuditQuery::Token(id), limit)
            .await?)
    }

    pub async fn list(&self, query: &ListQuery<'_>) -> Result<Page, ReadError> {
        let status = query
            .status
            .map(|s| {
                s.parse::<Status>().map_err(|()| {
                    ReadError::Invalid("status must be pending, active, failed, revoked or expired")
                })
            })
            .transpose()?;
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ReadError::Invalid("limit must be between 1 and 200"));
        }
        let task_id = query
            .task_id
            .map(|t| {
                validate_task_id(t).map_err(|e| match e {
                    ConsentError::InvalidTaskId(message) => ReadError::Invalid(message),
                    _ => ReadError::Invalid("taskId is invalid"),
                })
            })
            .transpose()?;
        // With both, `offset` counts from the cursor's position.
        let after = query
            .cursor
            .map(|cursor| {
                decode_cursor(cursor)
                    .ok_or(ReadError::Invalid("cursor is not one a previous page gave"))
            })
            .transpose()?;
        let offset = query.offset.unwrap_or(0);
        // One extra row tells whether another page exists.
        let mut rows = self
            .vault
            .list(&ListFilter {
                user_id: query.owner.map(str::to_owned),
                task_id: task_id.map(str::to_owned),
                status,
                limit: limit + 1,
                offset,
                after,
            })
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let last = rows.last().filter(|_| more);
        Ok(Page {
            next_cursor: last.map(|row| encode_cursor(row.created_at, row.id)),
            next_offset: (more && after.is_none()).then(|| offset.saturating_add(limit)),
            rows,
        })
    }
}

/// A list position as an opaque string: base64url of `created-at-nanoseconds:row-id`. It only
/// says where a page starts among the caller's own rows, so it needs no seal: a made-up one
/// lists nothing the caller could not list anyway.
fn encode_cursor(created_at: DateTime<Utc>, id: Uuid) -> String {
    let nanos = created_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    URL_SAFE_NO_PAD.encode(format!("{nanos}:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<ListPosition> {
    if cursor.len() > 128 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = text.split_once(':')?;
    Some(ListPosition {
        created_at: DateTime::from_timestamp_nanos(nanos.parse().ok()?),
        id: Uuid::parse_str(id).ok()?,
    })
}
