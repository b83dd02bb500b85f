//! The journal: every consent, callback outcome, token issue, revocation and rotation is written
//! to `token_audit`, and status changes and grant-health events also go to the webhook, if one
//! is configured.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::vault::{
    AuditAction, AuditEvent, Status, StatusChange, StatusReason, TokenVault, Transition,
};
pub use crate::webhook::Health;
use crate::webhook::{WebhookEvent, Webhooks};

/// The actor of background jobs and operator commands.
pub const SYSTEM: &str = "system";

/// Records queued for the batched writer at most; beyond, a record is written by its caller.
const QUEUE: usize = 10_000;
/// Records one batched write takes at most.
const MAX_BATCH: usize = 500;

#[derive(Clone)]
pub struct Journal {
    vault: Arc<dyn TokenVault>,
    webhooks: Option<Webhooks>,
    /// The batched writer's queue, started on first use (see [`Journal::record_soon`]).
    queue: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<AuditEvent>>>,
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
        Self {
            vault,
            webhooks,
            queue: Arc::default(),
        }
    }

    /// Records an event from a hot path (a token served from memory) without waiting for the
    /// database: it is queued for a writer that stores whatever has gathered in one statement,
    /// so a busy path costs one insert per batch, not per request. A full queue, or no runtime
    /// to run the writer, writes it here and now instead: nothing is dropped. What is queued
    /// when the process is killed (at most one batch's worth of milliseconds) is lost.
    pub async fn record_soon(&self, event: AuditEvent) {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::channel(QUEUE);
            tokio::spawn(write_batches(self.vault.clone(), receiver));
            sender
        });
        if let Err(refused) = queue.try_send(event) {
            let event = match refused {
                tokio::sync::mpsc::error::TrySendError::Full(e)
                | tokio::sync::mpsc::error::TrySendError::Closed(e) => e,
            };
            self.write(std::slice::from_ref(&event)).await;
        }
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
    }

    /// Records a change of a row's status and posts it to the webhook, built from where the
    /// row went (`transition.to`): the audit action and outcome come from the transition, the
    /// reason from `detail` or else the transition's own. Only a transition reaches the
    /// webhook's `token.status_changed`: an attempt that changed nothing is [`Journal::record`]ed.
    pub async fn record_transition(
        &self,
        transition: &Transition,
        actor: &str,
        subject: Subject<'_>,
        detail: Option<&str>,
    ) {
        let reason = detail.or(transition.reason.as_ref().map(StatusReason::as_str));
        let event = event(
            actor,
            subject,
            action_of(transition),
            transition.succeeded(),
            reason,
        );
        self.write(std::slice::from_ref(&event)).await;
        self.notify(&event, transition.to);
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
                let reason = change.reason.as_ref().map(StatusReason::as_str);
                event(SYSTEM, subject, action, true, reason)
            })
            .collect();
        self.write(&events).await;
        for (event, change) in events.iter().zip(changes) {
            self.notify(event, change.status);
        }
    }

    /// Records events that change no row's status (no webhook), in one write.
    pub async fn record_all(&self, events: &[AuditEvent]) {
        self.write(events).await;
    }

    async fn write(&self, events: &[AuditEvent]) {
        write(self.vault.as_ref(), events).await;
    }

    fn notify(&self, event: &AuditEvent, status: Status) {
        let Some(webhooks) = &self.webhooks else {
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

/// The batched writer: each write takes every record that gathered while the last one ran.
/// It holds the vault only, not the journal (whose queue it drains): once every journal is
/// dropped the queue closes and the writer ends.
async fn write_batches(
    vault: Arc<dyn TokenVault>,
    mut queue: tokio::sync::mpsc::Receiver<AuditEvent>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(vault.as_ref(), &batch).await;
        batch.clear();
    }
}

/// Stores `events` in one statement. Failures are logged, not returned (see `record`).
async fn write(vault: &dyn TokenVault, events: &[AuditEvent]) {
    let Some(first) = events.first() else {
        return;
    };
    if let Err(e) = vault.record_audits(events).await {
        let action = first.action.as_str();
        tracing::error!(error = %e, action, count = events.len(), "audit records lost");
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

/// The audit record a transition is written as.
fn action_of(transition: &Transition) -> AuditAction {
    match (transition.from, transition.to) {
        (_, Status::Active) => AuditAction::ConsentCompleted,
        (Status::Pending, Status::Failed) => AuditAction::ConsentFailed,
        (_, Status::Failed) => AuditAction::TokenRefreshFailed,
        (_, Status::Revoked) => AuditAction::TokenRevoked,
        (_, Status::Expired) => AuditAction::TokenExpired,
        // Nothing returns to pending (vault::TRANSITIONS): a consent is created, not moved.
        (_, Status::Pending) => AuditAction::ConsentRequested,
    }
}
