//! The token vault: where consents wait and sealed offline tokens live.
//!
//! One interface, [`TokenVault`], so the HTTP layer never sees SQL. It is the sum of the roles a
//! caller needs, each its own trait in its own module: [`ConsentStore`] (consents),
//! [`LeaseStore`] (refresh leases), [`EndingStore`] (revocation, expiry, clean-up, keep-alive
//! scans), [`RotationStore`] (key rotation), [`AuditStore`], [`TaskKeyStore`] and
//! [`RowReads`]. SQL both backends accept is written once, in each role's module; what really
//! differs lives in `postgres/` and `sqlite/`, one file per role.

mod audit;
mod consents;
mod ending;
mod error;
mod leases;
mod lifecycle;
mod model;
mod postgres;
mod reads;
mod rotation;
mod sql;
mod sqlite;
mod task_keys;

use std::sync::Arc;

use uuid::Uuid;

pub use audit::{AuditAction, AuditEvent, AuditQuery, AuditRecord, AuditStore};
pub use consents::{
    Activation, ClaimedConsent, ClaimedRow, ConsentStore, NewConsent, NewReconsent,
};
pub use ending::{Ended, EndingStore, ExpiringRow, StatusChange};
pub(crate) use error::db_error;
pub use error::{OpenError, VaultError};
pub use leases::{Claim, Lease, LeaseStore, RefreshFailure, RefreshWrite, Unfinished};
pub use lifecycle::{Status, StatusReason, Transition, TRANSITIONS};
pub use model::{GrantHealth, StoredAccess, VaultRow};
pub use postgres::PgVault;
pub use reads::{ListFilter, ListPosition, RowReads};
pub(crate) use rotation::blob_prefix;
pub use rotation::{Reseal, RotationStore, SealedBlob, SealedRow};
pub use sqlite::SqliteVault;
pub use task_keys::{
    Credential, CredentialKind, NewTaskKey, TaskKey, TaskKeyStore, WorkloadIdentity,
};

/// Every role at once: what the broker holds as `Arc<dyn TokenVault>`. A caller brings into
/// scope the role traits whose methods it calls (`use crate::vault::roles::*` for all).
pub trait TokenVault:
    RowReads
    + ConsentStore
    + LeaseStore
    + EndingStore
    + RotationStore
    + AuditStore
    + TaskKeyStore
    + Send
    + Sync
    + 'static
{
}

impl<T> TokenVault for T where
    T: RowReads
        + ConsentStore
        + LeaseStore
        + EndingStore
        + RotationStore
        + AuditStore
        + TaskKeyStore
        + Send
        + Sync
        + 'static
{
}

/// The role traits, for a caller that uses many of them.
pub mod roles {
    pub use super::{
        AuditStore, ConsentStore, EndingStore, LeaseStore, RotationStore, RowReads, TaskKeyStore,
    };
}

pub type ChangeSink = Arc<dyn Fn(Uuid) + Send + Sync>;
pub type ResetSink = Arc<dyn Fn() + Send + Sync>;

/// Opens the vault a `DATABASE_URL` names and applies its migrations: PostgreSQL for
/// production (several broker instances may share it), SQLite for a single embedded instance.
pub async fn open(url: &str, pool_size: u32) -> Result<Arc<dyn TokenVault>, OpenError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let vault = PgVault::connect(url, pool_size)
            .await
            .map_err(OpenError::Connect)?;
        vault.migrate().await?;
        Ok(Arc::new(vault))
    } else if url.starts_with("sqlite:") {
        let vault = SqliteVault::connect(url)
            .await
            .map_err(OpenError::Connect)?;
        vault.migrate().await?;
        Ok(Arc::new(vault))
    } else {
        Err(OpenError::UnknownScheme)
    }
}
