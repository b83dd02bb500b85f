//! Redeeming a task's credential: a presented key is looked up by its keyed hash, a verified
//! workload token finds its binding; either then has one use reserved atomically and an access
//! token of its row minted, the use given back if no token comes of it. Every use is audited.

use std::net::IpAddr;

use chrono::Utc;
use uuid::Uuid;

use super::rules::refusal;
use super::workload::{self, WorkloadRefusal};
use super::{KeyRefusal, RedeemError, TaskKeys, KEY_PREFIX};
use crate::audit::Subject;
use crate::grants::access::{AccessError, Refresher};
use crate::grants::cache::Minted;
use crate::grants::caller::Caller;
use crate::grants::scope::Scope;
use crate::oidc::WorkloadClaims;
use crate::vault::{CredentialKind, Status, TaskKey};

/// The most bindings one workload identity is matched against.
const MAX_BINDINGS_PER_IDENTITY: u32 = 100;

impl TaskKeys {
    /// The key `presented` names, if it may be used now from `from`. Uses are counted only
    /// when a redemption succeeds ([`redeem`](Self::redeem)).
    pub async fn authenticate(
        &self,
        presented: &str,
        from: Option<IpAddr>,
    ) -> Result<TaskKey, RedeemError> {
        let well_formed = presented.len() == KEY_PREFIX.len() + 43
            && presented.starts_with(KEY_PREFIX)
            && presented[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(RedeemError::Refused(KeyRefusal::Unknown));
        }
        let key = self
            .vault
            .find_task_key(&self.hash(presented))
            .await?
            .ok_or(RedeemError::Refused(KeyRefusal::Unknown))?;
        match refusal(&key, from) {
            Some(KeyRefusal::Revoked) => {
                self.audit_use(&key, "", from, Err(KeyRefusal::Revoked.as_str()))
                    .await;
                Err(self.revoked(&key).await)
            }
            Some(refused) => {
                self.audit_use(&key, "", from, Err(refused.as_str())).await;
                Err(RedeemError::Refused(refused))
            }
            None => Ok(key),
        }
    }

    /// The binding a verified workload token redeems: among the unrevoked bindings of its
    /// issuer and subject whose claims all match, those on the row `resource` names (or on any
    /// row without it) that may be used now from `from`. They must all be on one row.
    pub async fn authenticate_workload(
        &self,
        workload: &WorkloadClaims,
        resource: Option<Uuid>,
        from: Option<IpAddr>,
    ) -> Result<TaskKey, RedeemError> {
        let refused = |why| Err(RedeemError::Workload(why));
        let matching: Vec<TaskKey> = self
            .vault
            .workload_bindings(
                &workload.issuer,
                &workload.subject,
                MAX_BINDINGS_PER_IDENTITY,
            )
            .await?
            .into_iter()
            .filter(|b| {
                b.workload
                    .as_ref()
                    .is_some_and(|identity| workload::matches(identity, &workload.claims))
            })
            .filter(|b| resource.is_none_or(|id| b.token_id == id))
            .collect();
        let Some(first) = matching.first() else {
            return match resource {
                Some(_) => Err(RedeemError::NotForResource),
                None => refused(WorkloadRefusal::NoBinding),
            };
        };
        let live: Vec<&TaskKey> = matching
            .iter()
            .filter(|b| refusal(b, from).is_none())
            .collect();
        let Some(chosen) = live.first() else {
            let why = refusal(first, from).unwrap_or(KeyRefusal::Revoked);
            self.audit_use(first, "", from, Err(why.as_str())).await;
            return refused(WorkloadRefusal::Refused(why));
        };
        if live.iter().any(|b| b.token_id != chosen.token_id) {
            return refused(WorkloadRefusal::SeveralGrants);
        }
        Ok((*chosen).clone())
    }

    /// Why a revoked key is refused: a key that ended with its row says what became of the
    /// row (410 `token_revoked`, `token_failed`, `token_expired`), so the task learns that
    /// its grant is over, not merely its key; one revoked by itself, or whose row came back
    /// through a re-consent, is a revoked key.
    async fn revoked(&self, key: &TaskKey) -> RedeemError {
        match self.vault.find(key.token_id).await {
            Ok(Some(row))
                if matches!(
                    row.status,
                    Status::Failed | Status::Revoked | Status::Expired
                ) =>
            {
                AccessError::Gone {
                    status: row.status,
                    reason: row.status_reason,
                }
                .into()
            }
            Ok(_) => RedeemError::Refused(KeyRefusal::Revoked),
            Err(e) => e.into(),
        }
    }

    /// An access token for `key`'s row (`id`, when given, must be that row), narrowed to
    /// `scope` within the key's own. One use is reserved atomically first and given back if no
    /// token comes of it, so concurrent redemptions never exceed `maxUses`.
    pub async fn redeem(
        &self,
        refresher: &Refresher,
        key: TaskKey,
        id: Option<Uuid>,
        scope: Option<Scope>,
        from: Option<IpAddr>,
    ) -> Result<Minted, RedeemError> {
        if id.is_some_and(|id| id != key.token_id) {
            return Err(AccessError::NotFound.into());
        }
        if !self.vault.reserve_task_key_use(key.id, Utc::now()).await? {
            self.audit_use(&key, "", from, Err(KeyRefusal::Exhausted.as_str()))
                .await;
            return Err(match key.kind() {
                CredentialKind::TaskKey => RedeemError::Refused(KeyRefusal::Exhausted),
                CredentialKind::Workload => {
                    RedeemError::Workload(WorkloadRefusal::Refused(KeyRefusal::Exhausted))
                }
            });
        }
        let token_id = key.token_id;
        let caller = match key.kind() {
            CredentialKind::TaskKey => Caller::Task(key.clone()),
            CredentialKind::Workload => Caller::Workload(key.clone()),
        };
        match refresher.access_token(&caller, token_id, scope).await {
            Ok(minted) => {
                self.audit_use(&key, &minted.task_id, from, Ok(())).await;
                Ok(minted)
            }
            Err(e) => {
                if let Err(refund) = self.vault.refund_task_key_use(key.id).await {
                    tracing::warn!(key = %key.id, error = %refund, "could not give back a task key use");
                }
                self.audit_use(&key, "", from, Err(access_reason(&e))).await;
                Err(e.into())
            }
        }
    }

    /// Every use is audited: which key or binding, from where, and how it went.
    async fn audit_use(
        &self,
        key: &TaskKey,
        task_id: &str,
        from: Option<IpAddr>,
        outcome: Result<(), &str>,
    ) {
        let from = from.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let reason = match outcome {
            Ok(()) => format!("from:{from}"),
            Err(why) => format!("{why};from:{from}"),
        };
        let subject = Subject {
            token_id: key.token_id,
            user_id: &key.user_id,
            task_id,
        };
        let kind = key.kind();
        self.journal
            .record(
                &kind.actor(key.id),
                subject,
                kind.used(),
                outcome.is_ok(),
                Some(&reason),
            )
            .await;
    }
}

fn access_reason(error: &AccessError) -> &'static str {
    match error {
        AccessError::NotFound => "not_found",
        AccessError::Pending => "pending",
        AccessError::Gone { .. } => "token_gone",
        AccessError::InvalidScope => "invalid_scope",
        AccessError::ProviderUnavailable { .. } | AccessError::ProviderBusy => {
            "provider_unavailable"
        }
        AccessError::ProviderRejected { .. } => "provider_rejected",
        AccessError::ScopeNotNarrowed => "scope_not_narrowed",
        _ => "internal_error",
    }
}
