//! Key rotation: every sealed value ends up under the first key of `TOKEN_ENCRYPTION_KEYS`.
//!
//! - refresh tokens: re-sealed, a batch per statement;
//! - PKCE verifiers of consents in progress: re-sealed;
//! - the broker's own secrets (the task-key secret): re-sealed;
//! - stored access tokens: dropped — they are a cache, and the next call mints a new one.
//!
//! Online and resumable: rows are read in id order in batches, each re-sealed with a
//! compare-and-swap on its old ciphertext (a concurrent refresh that rotated the token wins and
//! the row is simply read again next run), and nothing is locked for longer than one batch.

use std::collections::HashSet;

use uuid::Uuid;

use crate::audit::{self, Journal, Subject, SYSTEM};
use crate::crypto::{purpose, Binding, Keyring, Sealed};
use crate::grants::TaskKeys;
use crate::vault::{AuditAction, Reseal, TokenVault, VaultError};

/// Rows looked at per statement when dropping stored access tokens.
const DROP_BATCH: u32 = 5_000;

#[derive(Debug, Default)]
pub struct RotationReport {
    pub resealed: u64,
    /// Changed by a concurrent refresh between read and write; run again to pick them up.
    pub changed_meanwhile: u64,
    /// Stored access tokens dropped (minted again on the next call).
    pub dropped_access_tokens: u64,
    /// Values that could not be opened (unknown key id, tampered), with the reason.
    pub failed: Vec<(Uuid, String)>,
}

/// Sealed values still under another key than the current sealing key.
pub async fn remaining(vault: &dyn TokenVault, keyring: &Keyring) -> Result<u64, VaultError> {
    vault
        .count_sealed_under_other_keys(keyring.sealing_key_id().as_str())
        .await
}

/// Re-seals everything not under the sealing key; `progress` is told after each value.
pub async fn rotate(
    vault: &dyn TokenVault,
    keyring: &Keyring,
    journal: &Journal,
    batch: u32,
    progress: impl Fn(u64),
) -> Result<RotationReport, VaultError> {
    let current = keyring.sealing_key_id().as_str().to_owned();
    let mut report = RotationReport::default();
    reseal_refresh_tokens(vault, keyring, journal, batch, &progress, &mut report).await?;
    reseal_verifiers(vault, keyring, batch, &progress, &mut report).await?;
    reseal_broker_secrets(vault, keyring, &progress, &mut report).await?;
    let mut after = None;
    loop {
        let (dropped, last) = vault
            .drop_access_tokens_under_other_keys(&current, after, DROP_BATCH)
            .await?;
        report.dropped_access_tokens += dropped;
        progress(dropped);
        match last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    Ok(report)
}

async fn reseal_refresh_tokens(
    vault: &dyn TokenVault,
    keyring: &Keyring,
    journal: &Journal,
    batch: u32,
    progress: &impl Fn(u64),
    report: &mut RotationReport,
) -> Result<(), VaultError> {
    let current = keyring.sealing_key_id().as_str().to_owned();
    let mut after = None;
    loop {
        let rows = vault
            .sealed_under_other_keys(&current, after, batch)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        // The batch is re-sealed in one statement and journaled in one write: two round
        // trips per batch instead of two per row.
        let mut batch_reseals = Vec::with_capacity(rows.len());
        for row in &rows {
            let binding = Binding {
                purpose: purpose::REFRESH_TOKEN,
                row_id: row.id,
                user_id: &row.user_id,
            };
            match reseal(keyring, &row.sealed, binding) {
                Ok(new) => batch_reseals.push(Reseal {
                    id: row.id,
                    old: row.sealed.clone(),
                    new,
                }),
                Err(e) => report.failed.push((row.id, e)),
            }
        }
        let done: HashSet<Uuid> = vault.reseal(&batch_reseals).await?.into_iter().collect();
        let events: Vec<_> = rows
            .iter()
            .filter(|row| done.contains(&row.id))
            .map(|row| {
                let subject = Subject {
                    token_id: row.id,
                    user_id: &row.user_id,
                    task_id: "",
                };
                let from = format!("from_key:{}", row.sealed.key_id);
                audit::event(
                    SYSTEM,
                    subject,
                    AuditAction::TokenResealed,
                    true,
                    Some(&from),
                )
            })
            .collect();
        journal.record_all(&events).await;
        report.resealed += done.len() as u64;
        report.changed_meanwhile += (batch_reseals.len() - done.len()) as u64;
        progress(rows.len() as u64);
    }
    Ok(())
}

async fn reseal_verifiers(
    vault: &dyn TokenVault,
    keyring: &Keyring,
    batch: u32,
    progress: &impl Fn(u64),
    report: &mut RotationReport,
) -> Result<(), VaultError> {
    let current = keyring.sealing_key_id().as_str().to_owned();
    let mut after = None;
    loop {
        let blobs = vault
            .verifiers_under_other_keys(&current, after, batch)
            .await?;
        let Some(last) = blobs.last() else { break };
        after = Some(last.id);
        for blob in &blobs {
            let binding = Binding {
                purpose: purpose::PKCE_VERIFIER,
                row_id: blob.id,
                user_id: &blob.user_id,
            };
            let resealed = Sealed::from_bytes(&blob.blob)
                .map_err(|e| e.to_string())
                .and_then(|sealed| reseal(keyring, &sealed, binding));
            match resealed {
                Ok(new) => {
                    if vault
                        .reseal_verifier(blob.id, &blob.blob, &new.to_bytes())
                        .await?
                    {
                        report.resealed += 1;
                    } else {
                        report.changed_meanwhile += 1;
                    }
                }
                Err(e) => report.failed.push((blob.id, e)),
            }
            progress(1);
        }
    }
    Ok(())
}

async fn reseal_broker_secrets(
    vault: &dyn TokenVault,
    keyring: &Keyring,
    progress: &impl Fn(u64),
    report: &mut RotationReport,
) -> Result<(), VaultError> {
    let current = keyring.sealing_key_id().as_str();
    for (name, sealed) in vault.broker_secrets_under_other_keys(current).await? {
        match reseal(keyring, &sealed, TaskKeys::secret_binding()) {
            Ok(new) => {
                if vault.reseal_broker_secret(&name, &sealed, &new).await? {
                    report.resealed += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
            Err(e) => report
                .failed
                .push((Uuid::nil(), format!("broker secret {name}: {e}"))),
        }
        progress(1);
    }
    Ok(())
}

fn reseal(keyring: &Keyring, sealed: &Sealed, binding: Binding<'_>) -> Result<Sealed, String> {
    keyring
        .open(sealed, binding)
        .and_then(|plain| keyring.seal(&plain, binding))
        .map_err(|e| e.to_string())
}
