//! Reading rows: one by id, a page of a list, counts for metrics, a ping for readiness, and
//! the change feed other instances' changes arrive on. [`RowReads`] is the role; every
//! statement is written once, in [`row_reads!`] and [`list_query`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::Status;
use super::model::VaultRow;
use super::{ChangeSink, ResetSink, VaultError};

/// Which rows to list, newest first.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Only this user's rows; None = everybody's (the admin page).
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<Status>,
    pub limit: u32,
    pub offset: u32,
    /// Only rows after this one in list order (keyset pagination: a deep page costs what the
    /// first one does, where an offset makes the database step over every row before it).
    pub after: Option<ListPosition>,
}

/// A row's place in list order: newest first, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[async_trait]
pub trait RowReads: Send + Sync {
    async fn find(&self, id: Uuid) -> Result<Option<VaultRow>, VaultError>;

    /// One page of rows matching `filter`, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError>;

    /// How many rows each status has (metrics).
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, VaultError>;

    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), VaultError>;

    /// Calls `on_change` with the id of every row whose status changes or that is deleted by
    /// anyone, including other broker processes. Returns false if the backend has no such feed
    /// (SQLite: one process, which sees its own changes). A lost connection calls `on_reset`:
    /// changes may have been missed meanwhile.
    fn watch_changes(&self, _on_change: ChangeSink, _on_reset: ResetSink) -> bool {
        false
    }
}

/// `RowReads` for `$vault` over `$db`, its statements in `$dialect`; a backend with a change
/// feed gives its `watch_changes` as `{ … }`.
macro_rules! row_reads {
    ($vault:ty, $db:ty, $dialect:path, { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::vault::RowReads for $vault {
            $($own)*

            #[::tracing::instrument(skip_all, fields(%id))]
            async fn find(
                &self,
                id: ::uuid::Uuid,
            ) -> Result<Option<$crate::vault::VaultRow>, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect, format!(
                    "select {} from token_vault where id = $1",
                    $crate::vault::model::row_columns(None)
                ));
                let record: Option<$crate::vault::model::RowRecord> = ::sqlx::query_as(sql)
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await
                    .map_err($crate::vault::db_error("read a vault row"))?;
                record.map($crate::vault::VaultRow::try_from).transpose()
            }

            #[::tracing::instrument(skip_all)]
            async fn list(
                &self,
                filter: &$crate::vault::ListFilter,
            ) -> Result<Vec<$crate::vault::VaultRow>, $crate::vault::VaultError> {
                let records: Vec<$crate::vault::model::RowRecord> =
                    $crate::vault::reads::list_query::<$db>(
                        &$crate::vault::model::row_columns(None),
                        filter,
                    )
                    .build_query_as()
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("list vault rows"))?;
                records.into_iter().map($crate::vault::VaultRow::try_from).collect()
            }

            async fn count_by_status(&self) -> Result<Vec<(String, i64)>, $crate::vault::VaultError> {
                ::sqlx::query_as("select status, count(*) from token_vault group by status")
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("count rows by status"))
            }

            async fn ping(&self) -> Result<(), $crate::vault::VaultError> {
                ::sqlx::query("select 1")
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("reach the database"))?;
                Ok(())
            }
        }
    };
}

pub(super) use row_reads;

/// List order: newest first, ties broken by id (the list index's order).
const LIST_ORDER: &str = " order by created_at desc, id desc";

/// The list statement for either database: only the conditions `filter` asks for. A catch-all
/// `($1 is null or user_id = $1)` would make the plan PostgreSQL caches for the statement scan
/// the whole table.
pub(super) fn list_query<'a, DB>(
    columns: &str,
    filter: &'a ListFilter,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    // An offset page picks its ids first, from the list index alone (an index-only scan), and
    // reads only those rows: stepping over rows in the table itself cost a heap read for every
    // row skipped (25 ms at depth 10,000, 2 ms this way).
    let deferred = filter.offset > 0;
    let source = if deferred {
        "token_vault where id in (select id from token_vault"
    } else {
        "token_vault"
    };
    let mut query = sqlx::QueryBuilder::new(format!("select {columns} from {source} where true"));
    if let Some(user_id) = &filter.user_id {
        query.push(" and user_id = ").push_bind(user_id.as_str());
    }
    if let Some(task_id) = &filter.task_id {
        query.push(" and task_id = ").push_bind(task_id.as_str());
    }
    if let Some(status) = filter.status {
        query.push(" and status = ").push_bind(status.as_str());
    }
    if let Some(after) = filter.after {
        // Keyset pagination: the page after this position, one index seek however deep.
        query
            .push(" and (created_at, id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    query
        .push(LIST_ORDER)
        .push(" limit ")
        .push_bind(i64::from(filter.limit))
        .push(" offset ")
        .push_bind(i64::from(filter.offset));
    if deferred {
        query.push(")").push(LIST_ORDER);
    }
    query
}
