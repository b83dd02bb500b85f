//! Reading grants: one row's status, or a page of rows, for their owner (the API) or for an
//! operator (the admin page). No secrets leave through here: callers get [`VaultRow`]s and show
//! only what they choose.

use std::sync::Arc;

use uuid::Uuid;

use super::consent::{validate_task_id, ConsentError};
use crate::vault::{AuditQuery, AuditRecord, ListFilter, Status, TokenVault, VaultError, VaultRow};

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
}

/// One page, newest first; `next_offset` when another page exists.
pub struct Page {
    pub rows: Vec<VaultRow>,
    pub next_offset: Option<u32>,
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
            })
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok(Page {
            rows,
            next_offset: more.then(|| offset.saturating_add(limit)),
        })
    }
}
