//! The journal: every consent, callback outcome, token issue, revocation and rotation is written
//! to `token_audit`, and status changes and grant-health events also go to the webhook, if one
//! is configured.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::vault::{AuditAction, AuditEvent, Status, StatusChange, TokenVault};
pub use crate::webhook::Health;
use crate::webhook::{WebhookEvent, Webhooks};

/// The actor of background jobs and operator commands.
pub const SYSTEM: &str = "system";

#[derive(Clone)]
pub struct Journal {
    vault: Arc<dyn TokenVault>,
    webhooks: Option<Webhooks>,
}

/// What the journal needs to know about the row an event concerns.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub token_id: Uuid,
    pub user_id: &'a str,
    pub task_id: &'a str,
}

impl Journal {
    pub fn new(vault: Arc<dyn TokenVault>, webhooks: Option<Webhooks>) -> Self {
        Self { vault, webhooks }
    }

    /// Records an event. Audit failures are logged, not returned: the operation they describe
    /// has already happened and must not be reported as failed to its caller.
    pub async fn record(
        &self,
        actor: &str,
        subject: Subject<'_>,
        action: AuditAction,
        success: bool,
        reason: Option<&str>,
    ) {
        let event = event(actor, subject, action, success, reason);
        self.write(std::slice::from_ref(&event)).await;
        self.notify(&event);
    }

    /// Records an event that left the row's status as it was: audited, but no webhook, since
    /// a webhook event describes what changed in the row, not what was attempted (a declined
    /// re-consent leaves an active row active).
    pub async fn record_unchanged(
        &self,
        actor: &str,
        subject: Subject<'_>,
        action: AuditAction,
        success: bool,
        reason: Option<&str>,
    ) {
        let event = event(actor, subject, action, success, reason);
        self.write(std::slice::from_ref(&event)).await;
    }

    /// Records the changes a background job made to a batch of rows, in one write.
    pub async fn record_changes(&self, changes: &[StatusChange], action: AuditAction) {
        let events: Vec<AuditEvent> = changes
            .iter()
            .map(|change| {
                let subject = Subject {
                    token_id: change.id,
                    user_id: &change.user_id,
                    task_id: &change.task_id,
                };
                let reason = (!change.reason.is_empty()).then_some(change.reason.as_str());
                event(SYSTEM, subject, action, true, reason)
            })
            .collect();
        self.write(&events).await;
        for event in &events {
            self.notify(event);
        }
    }

    /// Records events that change no row's status (no webhook), in one write.
    pub async fn record_all(&self, events: &[AuditEvent]) {
        self.write(events).await;
    }

    async fn write(&self, events: &[AuditEvent]) {
        let Some(first) = events.first() else {
            return;
        };
        if let Err(e) = self.vault.record_audits(events).await {
            let action = first.action.as_str();
            tracing::error!(error = %e, action, count = events.len(), "audit records lost");
        }
    }

    fn notify(&self, event: &AuditEvent) {
        let (Some(webhooks), Some(status)) =
            (&self.webhooks, status_after(event.action, event.success))
        else {
            return;
        };
        let (Some(token_id), Some(user_id), Some(task_id)) =
            (event.token_id, &event.user_id, &event.task_id)
        else {
            return;
        };
        webhooks.notify(WebhookEvent::status_changed(
            token_id,
            task_id,
            user_id,
            status,
            event.reason.as_deref(),
            event.at,
        ));
    }

    /// Tells the webhook how a grant is faring.
    pub fn health(&self, subject: Subject<'_>, health: Health) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.notify(WebhookEvent::health(
                subject.token_id,
                subject.task_id,
                subject.user_id,
                health,
            ));
        }
    }
}

/// An audit event about `subject`, now.
pub fn event(
    actor: &str,
    subject: Subject<'_>,
    action: AuditAction,
    success: bool,
    reason: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        at: Utc::now(),
        actor: actor.to_owned(),
        token_id: Some(subject.token_id),
        user_id: Some(subject.user_id.to_owned()),
        task_id: Some(subject.task_id.to_owned()),
        action,
        success,
        reason: reason.map(str::to_owned),
    }
}

/// The status a row has after `action`, when the action changes it.
fn status_after(action: AuditAction, success: bool) -> Option<Status> {
    match (action, success) {
        (AuditAction::ConsentCompleted, true) => Some(Status::Active),
        (AuditAction::ConsentFailed, _) => Some(Status::Failed),
        (AuditAction::TokenRefreshFailed, false) => Some(Status::Failed),
        (AuditAction::TokenRevoked, true) => Some(Status::Revoked),
        (AuditAction::TokenExpired, true) => Some(Status::Expired),
        _ => None,
    }
}
