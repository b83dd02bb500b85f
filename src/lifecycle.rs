//! Clean-up: expire stale rows, then delete finished ones after the retention period, in bounded
//! batches so no statement holds many rows at once.

use std::time::Duration;

use chrono::Utc;

use crate::audit::Journal;
use crate::vault::{AuditAction, TokenVault, VaultError};

pub const BATCH: u32 = 500;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub expired: usize,
    pub purged: usize,
}

/// One full clean-up pass; every changed row is journaled.
pub async fn clean_up(
    vault: &dyn TokenVault,
    journal: &Journal,
    retention: Duration,
) -> Result<CleanupReport, VaultError> {
    let mut report = CleanupReport::default();
    loop {
        let changed = vault.expire_stale(Utc::now(), BATCH).await?;
        for change in &changed {
            journal
                .record_change(change, AuditAction::TokenExpired)
                .await;
        }
        report.expired += changed.len();
        if changed.len() < BATCH as usize {
            break;
        }
    }
    let cutoff = Utc::now() - retention;
    loop {
        let purged = vault.purge_finished(cutoff, BATCH).await?;
        for change in &purged {
            journal
                .record_change(change, AuditAction::TokenPurged)
                .await;
        }
        report.purged += purged.len();
        if purged.len() < BATCH as usize {
            break;
        }
    }
    Ok(report)
}

/// Runs `clean_up` every `interval` until the process ends.
pub async fn run_periodically(
    vault: std::sync::Arc<dyn TokenVault>,
    journal: Journal,
    interval: Duration,
    retention: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match clean_up(vault.as_ref(), &journal, retention).await {
            Ok(report) if report != CleanupReport::default() => {
                tracing::info!(
                    expired = report.expired,
                    purged = report.purged,
                    "clean-up done"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "clean-up failed; will retry"),
        }
    }
}
