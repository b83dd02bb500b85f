use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

/// One async lock per row id, inside this process. Entries vanish with their last holder.
///
/// The SQLite backend serves one process, so this gives its refresh path the same guarantee
/// PostgreSQL's `SELECT … FOR UPDATE` gives across processes, without holding SQLite's single
/// database-wide write lock while the provider answers.
#[derive(Default)]
pub struct RowLocks {
    locks: Mutex<HashMap<Uuid, Weak<AsyncMutex<()>>>>,
}

impl RowLocks {
    pub async fn lock(&self, id: Uuid) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            match locks.get(&id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    locks.retain(|_, weak| weak.strong_count() > 0);
                    let lock = Arc::new(AsyncMutex::new(()));
                    locks.insert(id, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_row_is_held_by_one_task_at_a_time() {
        let locks = Arc::new(RowLocks::default());
        let id = Uuid::new_v4();
        let guard = locks.lock(id).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(id).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder waits");
        // Another row is independent.
        drop(locks.lock(Uuid::new_v4()).await);
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
