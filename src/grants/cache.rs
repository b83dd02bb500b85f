//! Minted access tokens in memory: the cache-hit path never touches the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use secrecy::SecretString;
use uuid::Uuid;

use super::changes::ChangeListener;
use super::scope::Scope;
use crate::vault::VaultRow;

/// An access token minted for a row, as handed out, with what deciding who may have it needs.
///
/// Cloned on every cache hit, so what it holds is shared, never copied: a clone is a few
/// reference counts, not six allocations and a copy of the token.
#[derive(Clone, Debug)]
pub struct Minted {
    pub user_id: Arc<str>,
    pub task_id: Arc<str>,
    /// The row's delegated clients, checked on the cache path like on every other.
    pub delegates: Arc<[String]>,
    pub access_token: Arc<SecretString>,
    pub token_type: Arc<str>,
    pub scope: Option<Arc<str>>,
    pub expires_at: DateTime<Utc>,
}

impl Minted {
    /// `access_token`, minted for `row`: who may have it is the row's owner and delegates.
    pub fn for_row(
        row: &VaultRow,
        access_token: SecretString,
        token_type: &str,
        scope: Option<&str>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            user_id: row.user_id.as_str().into(),
            task_id: row.task_id.as_str().into(),
            delegates: row.delegates.as_slice().into(),
            access_token: Arc::new(access_token),
            token_type: token_type.into(),
            scope: scope.map(Arc::from),
            expires_at,
        }
    }
}

/// A row's tokens, one per narrowed scope (`None`: the full scope).
type Tokens = Vec<(Option<Scope>, Minted)>;
/// Shared, so a cache hit clones only the one token it serves.
type Entry = Arc<Tokens>;

/// The default bound (`ACCESS_TOKEN_CACHE_MAX_ROWS`): rows whose tokens are kept. The cache only
/// saves provider calls; it is never the only copy of anything.
pub const DEFAULT_MAX_ROWS: u64 = 100_000;

/// Minted access tokens by row id and narrowed scope (`None`: the grant's full scope), in this
/// process: a `quick_cache` cache bounded by rows (CLOCK-Pro: rarely and long unused rows go
/// first). A token is served only while it is valid; a row whose tokens all expired is replaced
/// by its next refresh, or evicted like any other cold row. A lookup is one read lock on one
/// shard: no clock read, no queue of read records to replay, no housekeeping on the caller.
///
/// Every invalidation moves the epoch on. A refresh reads the epoch before it starts and puts
/// its token only if no invalidation happened meanwhile, so a token minted while its row was
/// being revoked is never cached after the revocation cleared the entry.
pub struct AccessTokenCache {
    entries: Cache<Uuid, Entry>,
    epoch: AtomicU64,
}

impl Default for AccessTokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ROWS)
    }
}

impl AccessTokenCache {
    pub fn new(max_rows: u64) -> Self {
        Self {
            entries: Cache::new(usize::try_from(max_rows).unwrap_or(usize::MAX)),
            epoch: AtomicU64::new(0),
        }
    }

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
        self.entries
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
            self.entries.remove(&id);
        }
    }

    fn insert(&self, id: Uuid, scope: Option<Scope>, minted: Minted) {
        let now = Utc::now();
        let mut tokens: Tokens = self
            .entries
            .get(&id)
            .map(|entry| {
                entry
                    .iter()
                    .filter(|(s, m)| *s != scope && m.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        tokens.push((scope, minted));
        self.entries.insert(id, Arc::new(tokens));
    }

    pub fn invalidate(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(&id);
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Rows held now: for tests and benchmarks.
    pub fn rows(&self) -> u64 {
        self.entries.len() as u64
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
            delegates: Arc::new([]),
            access_token: Arc::new(SecretString::from("at")),
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

    #[test]
    fn the_bound_holds_under_more_rows_than_it_holds() {
        let cache = AccessTokenCache::new(1_000);
        for _ in 0..10_000 {
            cache.put(Uuid::new_v4(), None, minted(300), cache.epoch());
        }
        let rows = cache.rows();
        assert!(rows <= 1_000, "{rows} rows held");
        assert!(rows > 0);
    }
}
