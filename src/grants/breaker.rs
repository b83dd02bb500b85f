//! A circuit breaker for the provider's token endpoint.
//!
//! After `threshold` answers in a row that say "unavailable" (connection refused, timeouts,
//! 5xx, garbage), refreshes fail fast for `cooldown` instead of piling up on a provider that is
//! down; then one refresh is let through as a probe, and its outcome closes or reopens the
//! circuit. Any real answer from the provider (a token, `invalid_grant`, a refusal) counts as
//! the provider being up.
//!
//! Written here rather than taken from a crate: the ones available wrap a call and count its
//! `Err`s, while this one must tell a provider that answered "no" from one that did not answer.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::telemetry;

#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    /// Consecutive unavailable answers that open the circuit; 0 turns the breaker off.
    pub threshold: u32,
    pub cooldown: Duration,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cool-down over; one probe is (or may be) in flight.
    HalfOpen {
        probing: bool,
    },
}

pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// Leave to call the provider. Dropped without [`Breaker::record`] (the call never happened),
/// a probe gives its place back.
pub struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

/// What a provider call came to, as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (a token or a refusal).
    Answered,
    /// No usable answer: down, slow, broken.
    Unavailable,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Leave to call the provider, or how long to wait before asking again.
    pub fn admit(&self) -> Result<Admission<'_>, Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => return Err(Duration::from_secs(1)),
        };
        Ok(Admission {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    /// Counts the outcome of an admitted call.
    pub fn record(&self, mut admission: Admission<'_>, outcome: Outcome) {
        admission.recorded = true;
        if self.settings.threshold == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (outcome, &*state) {
            (Outcome::Answered, State::Closed { .. }) => *state = State::Closed { failures: 0 },
            (Outcome::Answered, _) => {
                *state = State::Closed { failures: 0 };
                telemetry::set_circuit_open(false);
                tracing::info!("provider answers again; circuit closed");
            }
            (Outcome::Unavailable, State::Closed { failures }) => {
                let failures = failures + 1;
                *state = if failures >= self.settings.threshold {
                    self.trip(failures)
                } else {
                    State::Closed { failures }
                };
            }
            // A failed probe, or a call admitted before the circuit opened: (re)open.
            (Outcome::Unavailable, State::HalfOpen { .. }) if admission.probe => {
                *state = self.trip(self.settings.threshold);
            }
            (Outcome::Unavailable, _) => {}
        }
    }

    fn trip(&self, failures: u32) -> State {
        telemetry::set_circuit_open(true);
        tracing::warn!(
            failures,
            cooldown_secs = self.settings.cooldown.as_secs_f64(),
            "provider unavailable; circuit open, refreshes fail fast during the cool-down"
        );
        State::Open {
            until: Instant::now() + self.settings.cooldown,
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut state = self
                .breaker
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if matches!(*state, State::HalfOpen { probing: true }) {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            threshold,
            cooldown: Duration::from_millis(cooldown_ms),
        })
    }

    fn fail(b: &Breaker) {
        let admission = b.admit().unwrap();
        b.record(admission, Outcome::Unavailable);
    }

    #[test]
    fn opens_after_the_threshold_and_fails_fast() {
        let b = breaker(3, 60_000);
        fail(&b);
        fail(&b);
        assert!(b.admit().is_ok(), "still closed after two");
        fail(&b);
        let wait = b.admit().err().expect("open after three");
        assert!(wait > Duration::from_secs(50));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let b = breaker(2, 60_000);
        fail(&b);
        let admission = b.admit().unwrap();
        b.record(admission, Outcome::Answered);
        fail(&b);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let b = breaker(1, 20);
        fail(&b);
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.admit().expect("the probe goes through");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(probe, Outcome::Unavailable);
        assert!(b.admit().is_err(), "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.admit().unwrap();
        b.record(probe, Outcome::Answered);
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
    }

    #[test]
    fn an_unused_probe_gives_its_place_back() {
        let b = breaker(1, 0);
        fail(&b);
        drop(b.admit().unwrap());
        assert!(b.admit().is_ok());
    }

    #[test]
    fn threshold_zero_never_opens() {
        let b = breaker(0, 60_000);
        for _ in 0..10 {
            fail(&b);
        }
        assert!(b.admit().is_ok());
    }
}
