//! Single flight: one refresh per row at a time in this process, run as a task of its own.
//!
//! The work runs in a spawned task, not in the request that started it, so a caller that gives
//! up (client timeout, reset HTTP/2 stream) cannot cancel a refresh half-way: the provider may
//! already have rotated the refresh token, and only finishing the write-back keeps the grant.
//! Everyone who asks for the same key while it runs waits for the same result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::{BoxFuture, FutureExt, Shared};

type Flight<T> = Shared<BoxFuture<'static, T>>;

pub struct Flights<K, T: Clone> {
    running: Arc<Mutex<HashMap<K, Flight<T>>>>,
}

impl<K, T: Clone> Default for Flights<K, T> {
    fn default() -> Self {
        Self {
            running: Arc::default(),
        }
    }
}

impl<K, T> Flights<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the flight for `key`, or starts `work` as a new one. `lost` is the result if the
    /// task dies without one (it panicked).
    pub fn join<F>(&self, key: K, work: impl FnOnce() -> F, lost: T) -> Flight<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = running.get(&key) {
            return flight.clone();
        }
        let work = work();
        let registry = self.running.clone();
        let done_key = key.clone();
        // The task removes its own entry when done. It cannot do so before the entry exists:
        // removing takes the lock this function holds until the entry is in.
        let task = tokio::spawn(async move {
            let result = work.await;
            registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&done_key);
            result
        });
        let flight = async move { task.await.unwrap_or(lost) }.boxed().shared();
        running.insert(key, flight.clone());
        flight
    }

    /// How many flights are running (for tests and metrics).
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_of_one_key_share_one_run() {
        let flights: Flights<u8, usize> = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let runs = runs.clone();
            waiting.push(flights.join(
                1,
                || async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 1
                },
                0,
            ));
        }
        for flight in waiting {
            assert_eq!(flight.await, 1);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty(), "a finished flight is gone");
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_stop_the_work() {
        let flights: Flights<u8, ()> = Flights::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let flight = flights.join(
            1,
            || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                done.fetch_add(1, Ordering::SeqCst);
            },
            (),
        );
        // The only caller waits 5 ms, then leaves.
        assert!(tokio::time::timeout(Duration::from_millis(5), flight)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_task_yields_the_lost_value() {
        let flights: Flights<u8, u8> = Flights::default();
        let flight = flights.join(1, || async { panic!("boom") }, 7);
        assert_eq!(flight.await, 7);
    }
}
