//! Clean-up: expire stale rows, then delete finished ones after the retention period, in bounded
//! batches so no statement holds many rows at once.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;

use crate::audit::Journal;
use crate::grants::StatusChanges;
use crate::vault::{AuditAction, StatusChange, TokenVault, VaultError};

pub const BATCH: u32 = 500;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub expired: usize,
    pub purged: usize,
}

/// One full clean-up pass; every changed row is journaled and told to `changes`.
pub async fn clean_up(
    vault: &dyn TokenVault,
    journal: &Journal,
    changes: &StatusChanges,
    retention: Duration,
) -> Result<CleanupReport, VaultError> {
    let expired = in_batches(journal, changes, AuditAction::TokenExpired, || {
        vault.expire_stale(Utc::now(), BATCH)
    })
    .await?;
    let cutoff = Utc::now() - retention;
    let purged = in_batches(journal, changes, AuditAction::TokenPurged, || {
        vault.purge_finished(cutoff, BATCH)
    })
    .await?;
    Ok(CleanupReport { expired, purged })
}

/// Runs `step` until a batch comes back short, journaling every changed row as `action`.
async fn in_batches<F, Fut>(
    journal: &Journal,
    changes: &StatusChanges,
    action: AuditAction,
    mut step: F,
) -> Result<usize, VaultError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<StatusChange>, VaultError>>,
{
    let mut total = 0;
    loop {
        let changed = step().await?;
        for change in &changed {
            changes.changed(change.id);
            journal.record_change(change, action).await;
        }
        total += changed.len();
        if changed.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Runs `clean_up` every `interval` until the process ends.
pub async fn run_periodically(
    vault: std::sync::Arc<dyn TokenVault>,
    journal: Journal,
    changes: StatusChanges,
    interval: Duration,
    retention: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match clean_up(vault.as_ref(), &journal, &changes, retention).await {
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
