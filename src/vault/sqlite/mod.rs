//! The embedded vault: SQLite through sqlx, for one broker process.
//!
//! Atomicity rule: every change of a row is one conditional `UPDATE … WHERE` on the state it
//! expects (status, fence, lease), so a change that lost a race changes nothing and reports it;
//! SQLite serialises writers, so one statement is one step. Where a change must read before it
//! writes (the status it replaces, the row it ends) it runs in a `BEGIN IMMEDIATE` transaction,
//! which takes the write lock before the read; where it spans statements (an audit record with
//! it) it runs in one transaction. Each role's statements that only SQLite takes are in this
//! directory, one file per role.

mod audit;
mod consents;
mod ending;
mod leases;
mod rotation;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::reads::row_reads;
use super::sql::sqlite;
use super::{db_error, VaultError};

/// The embedded vault: one SQLite file, one broker process.
#[derive(Clone)]
pub struct SqliteVault {
    pool: SqlitePool,
}

impl SqliteVault {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while one writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            // A writer waits this long for another's commit before giving up (503).
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database exists per connection, so it must stay on one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }

    /// The pool, for tests that look at rows directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A transaction holding the write lock from its first statement, so what it reads is
    /// what it then changes.
    async fn write_lock(&self, op: &'static str) -> Result<Transaction<'_, Sqlite>, VaultError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error(op))
    }
}

row_reads!(SqliteVault, Sqlite, sqlite, {});
