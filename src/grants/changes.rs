//! Status changes, told to whoever must forget something about a row.
//!
//! The grant services say when they change a row's status; the vault's feed (PostgreSQL
//! LISTEN/NOTIFY) says when another instance, the clean-up job or a person with psql did. Today
//! the only listener is the access-token cache: a token minted for a row must die with the
//! row's status. Nothing else clears the cache, and the cache knows nothing of who changed what.

use std::sync::{Arc, PoisonError, RwLock};

use uuid::Uuid;

use crate::audit::{Journal, Subject};
use crate::vault::Transition;

/// Tells everyone a row changed status, in one call: its cached tokens are dropped (here and,
/// through the vault's feed, on other instances), the transition is audited and the webhook
/// hears where the row went. `detail` is the audit reason when it says more than the
/// transition's own (e.g. what the provider said to a revocation).
pub async fn announce(
    journal: &Journal,
    changes: &StatusChanges,
    transition: &Transition,
    actor: &str,
    subject: Subject<'_>,
    detail: Option<&str>,
) {
    changes.changed(subject.token_id);
    journal
        .record_transition(transition, actor, subject, detail)
        .await;
}

pub trait ChangeListener: Send + Sync {
    /// The row's status changed, or the row is gone.
    fn changed(&self, id: Uuid);
    /// Changes may have been missed (the feed's connection dropped): forget everything.
    fn reset(&self);
}

#[derive(Clone, Default)]
pub struct StatusChanges {
    listeners: Arc<RwLock<Vec<Arc<dyn ChangeListener>>>>,
}

impl StatusChanges {
    pub fn subscribe(&self, listener: Arc<dyn ChangeListener>) {
        self.listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    pub fn changed(&self, id: Uuid) {
        for listener in self.snapshot() {
            listener.changed(id);
        }
    }

    pub fn reset(&self) {
        for listener in self.snapshot() {
            listener.reset();
        }
    }

    fn snapshot(&self) -> Vec<Arc<dyn ChangeListener>> {
        self.listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Heard(Mutex<Vec<Option<Uuid>>>);

    impl ChangeListener for Heard {
        fn changed(&self, id: Uuid) {
            self.0.lock().unwrap().push(Some(id));
        }
        fn reset(&self) {
            self.0.lock().unwrap().push(None);
        }
    }

    #[test]
    fn every_listener_hears_every_change() {
        let changes = StatusChanges::default();
        let (a, b) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
        changes.subscribe(a.clone());
        changes.subscribe(b.clone());
        let id = Uuid::new_v4();
        changes.changed(id);
        changes.reset();
        for heard in [a, b] {
            assert_eq!(*heard.0.lock().unwrap(), vec![Some(id), None]);
        }
    }
}
