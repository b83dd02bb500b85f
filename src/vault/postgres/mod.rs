//! The production vault: PostgreSQL, safe for several broker instances on one database.
//!
//! Atomicity rule: every change of a row is one statement that checks the state it expects
//! (`WHERE status = …`, the refresh fence, the lease) and takes the row lock, so two instances
//! racing for one row serialise on that lock and the loser changes nothing. A change that comes
//! with its audit record writes both in that one statement (a data-modifying CTE). Bulk jobs
//! take their rows `FOR UPDATE SKIP LOCKED`, so they never wait on a request. Each role's
//! statements that only PostgreSQL takes are in this directory, one file per role.

mod audit;
mod consents;
mod ending;
mod leases;
mod rotation;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::reads::row_reads;
use super::sql::postgres;
use super::{ChangeSink, ResetSink};

/// How long a request may wait for a pooled connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The production vault: PostgreSQL, safe for several broker instances on one database.
#[derive(Clone)]
pub struct PgVault {
    pool: PgPool,
}

impl PgVault {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A pool whose every wait is bounded: acquiring a connection (3 s), a statement (10 s),
    /// waiting for a row lock (3 s), and a transaction left idle (30 s). A slow or stuck
    /// database then answers 503 instead of piling up requests.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.options([
            ("statement_timeout", "10s"),
            ("lock_timeout", "3s"),
            ("idle_in_transaction_session_timeout", "30s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

row_reads!(PgVault, Postgres, postgres, {
    fn watch_changes(&self, on_change: ChangeSink, on_reset: ResetSink) -> bool {
        tokio::spawn(listen_for_changes(self.pool.clone(), on_change, on_reset));
        true
    }
});

/// Follows `token_vault_changed` notifications (sent by the trigger of migrations 3 and 8) until the
/// pool closes, reconnecting after failures.
///
/// `on_reset` runs each time the feed is (re)established, not when it drops: while the
/// connection is down (a database outage) cached tokens keep being served, and anything changed
/// meanwhile is forgotten the moment the feed is back.
async fn listen_for_changes(pool: PgPool, on_change: ChangeSink, on_reset: ResetSink) {
    let closed = pool.close_event();
    tokio::select! {
        () = follow_changes(&pool, &on_change, &on_reset) => {}
        () = closed => {}
    }
}

async fn follow_changes(pool: &PgPool, on_change: &ChangeSink, on_reset: &ResetSink) {
    loop {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for vault changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANGE_CHANNEL).await {
            tracing::warn!(error = %e, "cannot subscribe to vault changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        on_reset();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match notification.payload().parse() {
                    Ok(id) => on_change(id),
                    Err(_) => on_reset(),
                },
                // The connection dropped: subscribe again (and reset) from the top.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "vault change feed failed; reconnecting");
                    break;
                }
            }
        }
    }
}

const CHANGE_CHANNEL: &str = "token_vault_changed";
