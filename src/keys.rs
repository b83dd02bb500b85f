//! Key rotation: re-seal every stored token under the first key of `TOKEN_ENCRYPTION_KEYS`.
//!
//! Online and resumable: rows are read in id order in batches, each re-sealed with a
//! compare-and-swap on its old ciphertext (a concurrent refresh that rotated the token wins and
//! the row is simply read again next run), and nothing is locked for longer than one update.

use uuid::Uuid;

use crate::audit::{Journal, Subject, SYSTEM};
use crate::crypto::{purpose, Binding, Keyring};
use crate::vault::{AuditAction, TokenVault, VaultError};

#[derive(Debug, Default)]
pub struct RotationReport {
    pub resealed: u64,
    /// Changed by a concurrent refresh between read and write; run again to pick them up.
    pub changed_meanwhile: u64,
    /// Rows that could not be opened (unknown key id, tampered), with the reason.
    pub failed: Vec<(Uuid, String)>,
}

/// Rows still sealed under another key than the current sealing key.
pub async fn remaining(vault: &dyn TokenVault, keyring: &Keyring) -> Result<u64, VaultError> {
    vault
        .count_sealed_under_other_keys(keyring.sealing_key_id().as_str())
        .await
}

/// Re-seals everything not under the sealing key; `progress` is told after each row.
pub async fn rotate(
    vault: &dyn TokenVault,
    keyring: &Keyring,
    journal: &Journal,
    batch: u32,
    progress: impl Fn(u64),
) -> Result<RotationReport, VaultError> {
    let current = keyring.sealing_key_id().as_str().to_owned();
    let mut report = RotationReport::default();
    let mut after = None;
    loop {
        let rows = vault
            .sealed_under_other_keys(&current, after, batch)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for row in &rows {
            let binding = Binding {
                purpose: purpose::REFRESH_TOKEN,
                row_id: row.id,
                user_id: &row.user_id,
            };
            let resealed = keyring
                .open(&row.sealed, binding)
                .and_then(|plain| keyring.seal(&plain, binding));
            match resealed {
                Ok(new) => {
                    if vault.reseal(row.id, &row.sealed, &new).await? {
                        report.resealed += 1;
                        let subject = Subject {
                            token_id: row.id,
                            user_id: &row.user_id,
                            task_id: "",
                        };
                        let from = format!("from_key:{}", row.sealed.key_id);
                        journal
                            .record(
                                SYSTEM,
                                subject,
                                AuditAction::TokenResealed,
                                true,
                                Some(&from),
                            )
                            .await;
                    } else {
                        report.changed_meanwhile += 1;
                    }
                }
                Err(e) => report.failed.push((row.id, e.to_string())),
            }
            progress(1);
        }
    }
    Ok(report)
}
