//! How the vault fails: unavailable (retry later) versus everything else, and why it cannot open.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The database cannot be reached, is restarting, or timed out: retrying later may work.
    #[error("the database is unavailable while trying to {op}: {source}")]
    Unavailable {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error while trying to {op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored row {id} is inconsistent: {problem}")]
    Corrupt { id: Uuid, problem: &'static str },
}

impl VaultError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VaultError::Unavailable { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    UnknownScheme,
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Sorts a database error into "unavailable, try later" (connection lost, pool exhausted,
/// server shutting down, statement or lock timeout, SQLite busy) and everything else.
pub(crate) fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> VaultError {
    move |source| {
        if is_transient(&source) {
            VaultError::Unavailable { op, source }
        } else {
            VaultError::Database { op, source }
        }
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08…), shutting down or starting (57P0x),
            // too many connections, statement timeout, lock timeout. SQLite: busy, locked.
            code.starts_with("08")
                || code.starts_with("57P0")
                || matches!(&*code, "53300" | "57014" | "55P03" | "5" | "6" | "517")
        }),
        _ => false,
    }
}
