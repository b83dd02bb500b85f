//! Minted access tokens in memory: the cache-hit path never touches the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use super::changes::ChangeListener;
use super::scope::Scope;

/// An access token minted for a row, as handed out, with what deciding who may have it needs.
#[derive(Clone, Debug)]
pub struct Minted {
    pub user_id: String,
    pub task_id: String,
    /// The row's delegated clients, checked on the cache path like on every other.
    pub delegates: Vec<String>,
    pub access_token: SecretString,
    pub token_type: String,
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// A row's tokens, one per narrowed scope (`None`: the full scope).
type Tokens = Vec<(Option<Scope>, Minted)>;

/// Beyond this many rows the cache starts over rather than grow: it only saves provider calls,
/// it is never the only copy of anything.
const MAX_ENTRIES: usize = 100_000;

/// Minted access tokens by row id and narrowed scope (`None`: the grant's full scope), in this
/// process.
///
/// Every invalidation moves the epoch on. A refresh reads the epoch before it starts and puts
/// its token only if no invalidation happened meanwhile, so a token minted while its row was
/// being revoked is never cached after the revocation cleared the entry.
#[derive(Default)]
pub struct AccessTokenCache {
    entries: RwLock<HashMap<Uuid, Tokens>>,
    epoch: AtomicU64,
}

impl AccessTokenCache {
    /// The current invalidation epoch; pass it to [`put`](Self::put).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The cached token for `id` and `scope` if it is still valid at `valid_until`.
    pub fn get(
        &self,
        id: Uuid,
        scope: Option<&Scope>,
        valid_until: DateTime<Utc>,
    ) -> Option<Minted> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&id)?
            .iter()
            .find(|(s, _)| s.as_ref() == scope)
            .map(|(_, minted)| minted)
            .filter(|minted| minted.expires_at > valid_until)
            .cloned()
    }

    /// Caches `minted` unless an invalidation happened since `epoch` was read.
    pub fn put(&self, id: Uuid, scope: Option<Scope>, minted: Minted, epoch: u64) {
        self.insert(id, scope, minted);
        // Checked after inserting: an invalidation between the check and the insert would
        // otherwise be missed. If one came, take the entry out again.
        if self.epoch() != epoch {
            self.remove(id);
        }
    }

    fn insert(&self, id: Uuid, scope: Option<Scope>, minted: Minted) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&id) {
            let now = Utc::now();
            entries.retain(|_, tokens| {
                tokens.retain(|(_, m)| m.expires_at > now);
                !tokens.is_empty()
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let tokens = entries.entry(id).or_default();
        tokens.retain(|(s, _)| *s != scope);
        tokens.push((scope, minted));
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
            task_id: "t".into(),
            delegates: vec![],
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
        cache.put(id, None, minted(100), cache.epoch());
        let margin = |secs| Utc::now() + chrono::Duration::seconds(secs);
        assert!(cache.get(id, None, margin(30)).is_some());
        assert!(cache.get(id, None, margin(120)).is_none());
        assert!(cache.get(Uuid::new_v4(), None, margin(0)).is_none());
    }

    #[test]
    fn each_scope_has_its_own_entry_and_invalidation_takes_them_all() {
        let cache = AccessTokenCache::default();
        let id = Uuid::new_v4();
        let narrow = Scope::parse("openid").unwrap();
        cache.put(id, Some(narrow.clone()), minted(100), cache.epoch());
        assert!(
            cache.get(id, None, Utc::now()).is_none(),
            "the full scope is not cached"
        );
        cache.put(id, None, minted(100), cache.epoch());
        assert!(cache.get(id, Some(&narrow), Utc::now()).is_some());
        cache.invalidate(id);
        assert!(cache.get(id, Some(&narrow), Utc::now()).is_none());
        assert!(cache.get(id, None, Utc::now()).is_none());
    }

    #[test]
    fn invalidated_and_cleared_tokens_are_gone() {
        let cache = AccessTokenCache::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put(a, None, minted(100), cache.epoch());
        cache.put(b, None, minted(100), cache.epoch());
        cache.invalidate(a);
        assert!(cache.get(a, None, Utc::now()).is_none());
        assert!(cache.get(b, None, Utc::now()).is_some());
        cache.clear();
        assert!(cache.get(b, None, Utc::now()).is_none());
    }

    #[test]
    fn a_token_minted_across_an_invalidation_is_not_cached() {
        let cache = AccessTokenCache::default();
        let id = Uuid::new_v4();
        let before = cache.epoch();
        cache.invalidate(id);
        cache.put(id, None, minted(100), before);
        assert!(cache.get(id, None, Utc::now()).is_none());
        cache.put(id, None, minted(100), cache.epoch());
        assert!(cache.get(id, None, Utc::now()).is_some());
    }
}
