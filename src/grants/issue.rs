//! Issuing an access token: the one use case behind `POST /access-token` and the token
//! exchange, for any [`Caller`]. A task's key (or a workload's binding) names its own row and
//! is redeemed (its uses counted, its restrictions applied); every other caller names the row.

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use super::access::Refresher;
use super::cache::Minted;
use super::caller::Caller;
use super::scope::Scope;
use super::task_keys::{RedeemError, TaskKeys};

/// Issues access tokens from the sealed grants.
pub struct TokenIssuer {
    refresher: Refresher,
    task_keys: Arc<TaskKeys>,
}

impl TokenIssuer {
    pub fn new(refresher: Refresher, task_keys: Arc<TaskKeys>) -> Self {
        Self {
            refresher,
            task_keys,
        }
    }

    /// An access token of row `id` for `caller`, narrowed to `scope` when asked. A task may
    /// leave `id` out (its key names the row); anyone else must name it.
    pub async fn issue(
        &self,
        caller: Caller,
        id: Option<Uuid>,
        scope: Option<Scope>,
        from: Option<IpAddr>,
    ) -> Result<Minted, RedeemError> {
        match caller {
            Caller::Task(key) | Caller::Workload(key) => {
                self.task_keys
                    .redeem(&self.refresher, key, id, scope, from)
                    .await
            }
            caller => {
                let id = id.ok_or(RedeemError::RowNotNamed)?;
                Ok(self.refresher.access_token(&caller, id, scope).await?)
            }
        }
    }
}
