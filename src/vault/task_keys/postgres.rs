//! Task keys in PostgreSQL: the statements of `store.rs` as written (`$n` placeholders).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::store::task_key_store;
use super::{
    joined, NewTaskKey, SecretRecord, TaskKey, TaskKeyRecord, TaskKeyStore, TASK_KEY_COLUMNS,
};
use crate::crypto::Sealed;
use crate::vault::sql::postgres;
use crate::vault::{db_error, PgVault, VaultError};

task_key_store!(PgVault, postgres);
