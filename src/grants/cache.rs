//! Minted access tokens in memory: the cache-hit path never touches the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::changes::ChangeListener;

/// An access token minted for a row, as handed out.
#[derive(Clone, Debug)]
pub struct Minted {
    pub user_id: String,
    pub access_token: SecretString,
    pub token_type: String,
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Beyond this many rows the cache starts over rather than grow: it only saves provider calls,
/// it is never the only copy of anything.
const MAX_ENTRIES: usize = 100_000;

/// Minted access tokens by row id, in this process.
///
/// Every invalidation moves the epoch on. A refresh reads the epoch before it starts and puts
/// its token only if no invalidation happened meanwhile, so a token minted while its row was
/// being revoked is never cached after the revocation cleared the entry.
#[derive(Default)]
pub struct AccessTokenCache {
    entries: RwLock<HashMap<Uuid, Minted>>,
    epoch: AtomicU64,
}

impl AccessTokenCache {
    /// The current invalidation epoch; pass it to [`put`](Self::put).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The cached token for `id` if it is still valid at `valid_until`.
    pub fn get(&self, id: Uuid, valid_until: DateTime<Utc>) -> Option<Minted> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&id)
            .filter(|minted| minted.expires_at > valid_until)
            .cloned()
    }

    /// Caches `minted` unless an invalidation happened since `epoch` was read.
    pub fn put(&self, id: Uuid, minted: Minted, epoch: u64) {
        self.insert(id, minted);
        // Checked after inserting: an invalidation between the check and the insert would
        // otherwise be missed. If one came, take the entry out again.
        if self.epoch() != epoch {
            self.remove(id);
        }
    }

    fn insert(&self, id: Uuid, minted: Minted) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&id) {
            let now = Utc::now();
            entries.retain(|_, m| m.expires_at > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(id, minted);
    }

    pub fn invalidate(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.remove(id);
    }

    fn remove(&self, id: Uuid) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl ChangeListener for AccessTokenCache {
    fn changed(&self, id: Uuid) {
        self.invalidate(id);
    }

    fn reset(&self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(expires_in_secs: i64) -> Minted {
        Minted {
            user_id: "alice".into(),
            access_token: SecretString::from("at"),
            token_type: "bearer".into(),
            scope: None,
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in_secs),
        }
    }

    #[test]
    fn a_token_is_served_only_while_it_outlives_the_margin() {
        let cache = AccessTokenCache::default();
        let id = Uuid::new_v4();
        cache.put(id, minted(100), cache.epoch());
        let margin = |secs| Utc::now() + chrono::Duration::seconds(secs);
        assert!(cache.get(id, margin(30)).is_some());
        assert!(cache.get(id, margin(120)).is_none());
        assert!(cache.get(Uuid::new_v4(), margin(0)).is_none());
    }

    #[test]
    fn invalidated_and_cleared_tokens_are_gone() {
        let cache = AccessTokenCache::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put(a, minted(100), cache.epoch());
        cache.put(b, minted(100), cache.epoch());
        cache.invalidate(a);
        assert!(cache.get(a, Utc::now()).is_none());
        assert!(cache.get(b, Utc::now()).is_some());
        cache.clear();
        assert!(cache.get(b, Utc::now()).is_none());
    }

    #[test]
    fn a_token_minted_across_an_invalidation_is_not_cached() {
        let cache = AccessTokenCache::default();
        let id = Uuid::new_v4();
        let before = cache.epoch();
        cache.invalidate(id);
        cache.put(id, minted(100), before);
        assert!(cache.get(id, Utc::now()).is_none());
        cache.put(id, minted(100), cache.epoch());
        assert!(cache.get(id, Utc::now()).is_some());
    }
}
