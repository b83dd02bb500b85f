//! Who is calling: the one place a presented credential becomes a [`Caller`].
//!
//! A credential is what follows `Bearer` (or an RFC 8693 `subject_token`): a task key when it
//! carries the key prefix, else a JWT from the provider, verified against its keys. A verified
//! token is a delegate's when its client is in `DELEGATE_CLIENTS` and it is that client's
//! *service account* ([`DelegateClients::delegate`]); any other verified token is a user's,
//! once the user rules hold (audience, authorized party, not the broker's own client).
//!
//! A workload's platform token is a credential of its own kind, presented only as a token
//! exchange's `subject_token` of type JWT: it is verified against the platform issuers'
//! keys, never the provider's ([`Authenticator::identify_workload`]).

use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use super::caller::{Caller, DelegateClients};
use super::task_keys::{RedeemError, TaskKeys, KEY_PREFIX};
use crate::oidc::{JwtError, TokenVerifier, WorkloadVerifier};
use crate::vault::TaskKey;

/// Why a credential names no caller the route serves.
#[derive(Debug, thiserror::Error)]
pub enum Unidentified {
    /// A token that did not verify, or that no rule admits (401).
    #[error("the bearer token was refused: {0}")]
    Token(#[from] JwtError),
    /// A task key or a delegate on a route only a signed-in user may use (403).
    #[error("only a signed-in user may do this")]
    NotAUser,
    /// A task key that is unknown, revoked, expired, used up or used from elsewhere, or whose
    /// row has ended; or the vault failing while it was looked up.
    #[error(transparent)]
    Key(RedeemError),
    /// A workload token presented where this broker trusts no platform (`WORKLOAD_ISSUERS`).
    #[error("this broker accepts no workload tokens")]
    NoWorkloads,
}

/// Turns credentials into callers: JWT verification, delegates and task-key authentication.
pub struct Authenticator {
    verifier: Arc<TokenVerifier>,
    delegates: DelegateClients,
    task_keys: Arc<TaskKeys>,
    workloads: Option<Arc<WorkloadVerifier>>,
}

impl Authenticator {
    pub fn new(
        verifier: Arc<TokenVerifier>,
        delegates: DelegateClients,
        task_keys: Arc<TaskKeys>,
    ) -> Self {
        Self {
            verifier,
            delegates,
            task_keys,
            workloads: None,
        }
    }

    /// Accepts workload tokens from the platforms `workloads` trusts.
    pub fn with_workloads(mut self, workloads: Arc<WorkloadVerifier>) -> Self {
        self.workloads = Some(workloads);
        self
    }

    /// A workload, from its platform token: verified against the trusted platforms' keys
    /// (a user's token from the provider is not one, unless its issuer is listed too), then
    /// matched to a live binding ([`TaskKeys::authenticate_workload`]) on the row `resource`
    /// names, or on its only row. Uses are counted when the token is issued.
    pub async fn identify_workload(
        &self,
        credential: &str,
        resource: Option<Uuid>,
        from: Option<IpAddr>,
    ) -> Result<Caller, Unidentified> {
        let workloads = self.workloads.as_ref().ok_or(Unidentified::NoWorkloads)?;
        let workload = workloads.verify(credential).await?;
        let binding = self
            .task_keys
            .authenticate_workload(&workload, resource, from)
            .await
            .map_err(Unidentified::Key)?;
        Ok(Caller::Workload(binding))
    }

    /// A task, from its key presented as a token exchange's subject token: nothing but a task
    /// key is taken here, and `resource`, if given, must name the key's own grant.
    pub async fn identify_task_key(
        &self,
        credential: &str,
        resource: Option<Uuid>,
        from: Option<IpAddr>,
    ) -> Result<Caller, Unidentified> {
        if !is_task_key(credential) {
            return Err(Unidentified::NotAUser);
        }
        let key = self.task_key(credential, from).await?;
        if resource.is_some_and(|id| id != key.token_id) {
            return Err(Unidentified::Key(RedeemError::NotForResource));
        }
        Ok(Caller::Task(key))
    }

    /// Any caller the token paths serve: a user, a delegate's service account, or a task with
    /// its key (checked: known, live, within its uses, from an address it allows).
    pub async fn identify(
        &self,
        credential: &str,
        from: Option<IpAddr>,
    ) -> Result<Caller, Unidentified> {
        if is_task_key(credential) {
            return Ok(Caller::Task(self.task_key(credential, from).await?));
        }
        let claims = self.verifier.verify_token(credential).await?;
        if let Some(client) = self.delegates.delegate(&claims) {
            self.verifier.check_any_caller(&claims)?;
            return Ok(Caller::Delegate {
                client,
                subject: claims.sub.clone(),
            });
        }
        self.verifier.check_user(&claims)?;
        Ok(Caller::User(claims.sub.clone()))
    }

    /// The task key `credential` presents, if it may be used now from `from`.
    async fn task_key(
        &self,
        credential: &str,
        from: Option<IpAddr>,
    ) -> Result<TaskKey, Unidentified> {
        self.task_keys
            .authenticate(credential, from)
            .await
            .map_err(Unidentified::Key)
    }

    /// A signed-in user, for the routes that manage grants: task keys and delegates are
    /// refused without a lookup. The user's `sub`.
    pub async fn identify_user(&self, credential: &str) -> Result<String, Unidentified> {
        if is_task_key(credential) {
            return Err(Unidentified::NotAUser);
        }
        let claims = match self.verifier.verify_token(credential).await {
            Ok(claims) => claims,
            Err(refused) => return Err(self.not_a_user_token(credential, refused).await),
        };
        if self.delegates.delegate(&claims).is_some() {
            return Err(Unidentified::NotAUser);
        }
        self.verifier.check_user(&claims)?;
        Ok(claims.sub.clone())
    }

    /// Why a token that is not the provider's is refused: a workload's own platform token is
    /// a credential that may not manage grants (403), anything else is no credential (401).
    async fn not_a_user_token(&self, credential: &str, refused: JwtError) -> Unidentified {
        if matches!(refused, JwtError::WrongIssuer | JwtError::Key(_)) {
            if let Some(workloads) = &self.workloads {
                if workloads.verify(credential).await.is_ok() {
                    return Unidentified::NotAUser;
                }
            }
        }
        Unidentified::Token(refused)
    }
}

/// Whether a credential is presented as a task key (by its prefix; authenticity is checked
/// against the vault).
pub fn is_task_key(credential: &str) -> bool {
    credential.starts_with(KEY_PREFIX)
}
