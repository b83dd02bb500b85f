//! Keep-alive: a grant nobody uses must not die of idleness.
//!
//! Keycloak ends an offline session unused for *Offline Session Idle* (30 days by default). A
//! task that sleeps longer would wake to a dead grant. So a background job refreshes active rows
//! whose refresh token would idle out within `lead`, in batches, with jitter and bounded
//! concurrency, through the same single-flight, lease and circuit breaker as every refresh. It
//! also tells the webhook (`token.expiring`) when a row's hard end — which no refresh can
//! pass — is near.

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use chrono::Utc;
use futures::stream::{self, StreamExt};

use super::access::Refresher;
use crate::audit::{Health, Journal, Subject};
use crate::vault::{TokenVault, VaultError};

/// Rows looked at per pass.
const BATCH: u32 = 200;
/// The most a refresh is delayed to spread a batch out.
const MAX_JITTER: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct KeepAliveSettings {
    /// How often the job runs; `None` turns keep-alive off.
    pub interval: Option<Duration>,
    /// Refresh a row when its refresh token has less than this left.
    pub lead: Duration,
    /// Keep-alive refreshes in flight at once.
    pub concurrency: usize,
    /// Send `token.expiring` this long before a row's hard end.
    pub expiring_notice: Duration,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeepAliveReport {
    pub refreshed: usize,
    pub failed: usize,
    pub expiring: usize,
}

/// One pass: refresh what is about to idle out, announce what is about to end.
pub async fn keep_alive_once(
    refresher: &Refresher,
    vault: &dyn TokenVault,
    journal: &Journal,
    settings: &KeepAliveSettings,
) -> Result<KeepAliveReport, VaultError> {
    let now = Utc::now();
    let lead = chrono::Duration::from_std(settings.lead).unwrap_or_default();
    let due = vault.due_for_keepalive(now + lead, now, BATCH).await?;
    let jitter = settings
        .interval
        .map_or(Duration::ZERO, |i| (i / 4).min(MAX_JITTER));
    let outcomes: Vec<bool> = stream::iter(due)
        .map(|id| async move {
            tokio::time::sleep(random_up_to(jitter)).await;
            match refresher.keep_alive(id).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "keep-alive refresh failed");
                    false
                }
            }
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    let refreshed = outcomes.iter().filter(|ok| **ok).count();

    let notice = chrono::Duration::from_std(settings.expiring_notice).unwrap_or_default();
    let expiring = vault.mark_expiring(now + notice, now, BATCH).await?;
    for row in &expiring {
        let subject = Subject {
            token_id: row.id,
            user_id: &row.user_id,
            task_id: &row.task_id,
        };
        journal.health(
            subject,
            Health::Expiring {
                expires_at: row.expires_at,
            },
        );
    }
    Ok(KeepAliveReport {
        refreshed,
        failed: outcomes.len() - refreshed,
        expiring: expiring.len(),
    })
}

/// Runs [`keep_alive_once`] every interval until the process ends (nothing when off).
pub async fn run_periodically(
    refresher: Refresher,
    vault: Arc<dyn TokenVault>,
    journal: Journal,
    settings: KeepAliveSettings,
) {
    let Some(interval) = settings.interval else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match keep_alive_once(&refresher, vault.as_ref(), &journal, &settings).await {
            Ok(report) if report != KeepAliveReport::default() => tracing::info!(
                refreshed = report.refreshed,
                failed = report.failed,
                expiring = report.expiring,
                "keep-alive done"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "keep-alive failed; will retry"),
        }
    }
}

fn random_up_to(max: Duration) -> Duration {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(OsRng.next_u64() % millis)
}
