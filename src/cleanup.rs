//! Clean-up: expire stale rows, then delete finished ones after the retention period, in bounded
//! batches so no statement holds many rows at once, with a pause between full batches as long as
//! the batch took, so a large clean-up leaves room for the requests being served
//! (bench/million: purging 500,000 rows flat out doubled the access-token p99 on a 2-core
//! machine).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use chrono::Utc;

use crate::audit::Journal;
use crate::grants::StatusChanges;
use crate::vault::{AuditAction, StatusChange, TokenVault, VaultError};

pub const BATCH: u32 = 500;
/// The shortest pause between two full batches.
const PAUSE: Duration = Duration::from_millis(10);

/// Paces batches: after one, waits as long as it took (at least [`PAUSE`]), so a clean-up
/// takes at most half of the database's time however slow the database is right now. (A
/// fixed 10 ms pause after batches of about 17 ms let the access-token p99 reach 2.4–4.3× its
/// idle value in `bench/million`.)
struct Pace(Instant);

impl Pace {
    fn start() -> Self {
        Self(Instant::now())
    }

    async fn rest(self) {
        tokio::time::sleep(self.0.elapsed().max(PAUSE)).await;
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub expired: usize,
    pub purged: usize,
    pub audit_purged: u64,
    pub keys_purged: u64,
}

/// How long finished rows and audit records are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub rows: Duration,
    pub audit: Duration,
}

/// One full clean-up pass; every changed row is journaled and told to `changes`.
pub async fn clean_up(
    vault: &dyn TokenVault,
    journal: &Journal,
    changes: &StatusChanges,
    retention: Retention,
) -> Result<CleanupReport, VaultError> {
    let expired = in_batches(journal, changes, AuditAction::TokenExpired, || {
        vault.expire_stale(Utc::now(), BATCH)
    })
    .await?;
    let cutoff = Utc::now() - retention.rows;
    let purged = in_batches(journal, changes, AuditAction::TokenPurged, || {
        vault.purge_finished(cutoff, BATCH)
    })
    .await?;
    let audit_cutoff = Utc::now() - retention.audit;
    let audit_purged = deleting(|| vault.purge_audit(audit_cutoff, BATCH)).await?;
    // Revoked and expired task keys go after the same retention as finished rows.
    let keys_purged = deleting(|| vault.purge_task_keys(cutoff, BATCH)).await?;
    Ok(CleanupReport {
        expired,
        purged,
        audit_purged,
        keys_purged,
    })
}

/// Runs a batched delete until a batch comes back short; the number deleted.
async fn deleting<F, Fut>(mut step: F) -> Result<u64, VaultError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, VaultError>>,
{
    let mut total = 0;
    loop {
        let pace = Pace::start();
        let deleted = step().await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            return Ok(total);
        }
        pace.rest().await;
    }
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
        let pace = Pace::start();
        let changed = step().await?;
        for change in &changed {
            changes.changed(change.id);
        }
        journal.record_changes(&changed, action).await;
        total += changed.len();
        if changed.len() < BATCH as usize {
            return Ok(total);
        }
        pace.rest().await;
    }
}

/// Runs `clean_up` every `interval` until the process ends.
pub async fn run_periodically(
    vault: std::sync::Arc<dyn TokenVault>,
    journal: Journal,
    changes: StatusChanges,
    interval: Duration,
    retention: Retention,
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
                    audit_purged = report.audit_purged,
                    "clean-up done"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "clean-up failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a pace rests after a batch that took `batch` (on tokio's paused clock).
    async fn rest_after(batch: Duration) -> Duration {
        let pace = Pace::start();
        tokio::time::advance(batch).await;
        let resting = Instant::now();
        pace.rest().await;
        resting.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_followed_by_a_rest_as_long_as_it_took() {
        let rested = rest_after(Duration::from_millis(40)).await;
        assert!(rested >= Duration::from_millis(40), "{rested:?}");
        assert!(rested < Duration::from_millis(42), "{rested:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_batch_still_rests_the_shortest_pause() {
        let rested = rest_after(Duration::from_millis(1)).await;
        assert!(rested >= PAUSE, "{rested:?}");
        assert!(rested < PAUSE + Duration::from_millis(2), "{rested:?}");
    }
}
