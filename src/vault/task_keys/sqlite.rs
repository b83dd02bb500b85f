//! Task keys in SQLite: the statements of `store.rs` with SQLite's `?n` placeholders.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::store::task_key_store;
use super::{
    joined, NewTaskKey, SecretRecord, TaskKey, TaskKeyRecord, TaskKeyStore, TASK_KEY_COLUMNS,
};
use crate::crypto::Sealed;
use crate::vault::sql::sqlite;
use crate::vault::{db_error, SqliteVault, VaultError};

task_key_store!(SqliteVault, sqlite);
