//! A circuit breaker per subscription: after `failures` failed attempts in a row it
//! opens, and nothing is sent (events stay at the cursor or in the queue) until the
//! cooldown has passed; then one probe goes through (half-open). The probe's success
//! closes it; its failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// As stored and shown: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    pub fn parse(raw: &str) -> Option<BreakerState> {
        [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// For the metrics gauge: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: None,
                probing: false,
            }),
        }
    }

    /// May one attempt go out now? Open: no, until the cooldown ends, when exactly one
    /// probe may. Half-open: no more than that probe.
    pub fn admit(&self) -> bool {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => {
                let cooled = inner
                    .opened_at
                    .is_none_or(|at| at.elapsed() >= self.cooldown);
                if cooled {
                    inner.state = BreakerState::HalfOpen;
                    inner.probing = true;
                }
                cooled
            }
            BreakerState::HalfOpen => !std::mem::replace(&mut inner.probing, true),
        }
    }

    pub fn record(&self, success: bool) {
        let mut inner = self.lock();
        if success {
            inner.state = BreakerState::Closed;
            inner.failures = 0;
            inner.probing = false;
            return;
        }
        inner.failures = inner.failures.saturating_add(1);
        if inner.state == BreakerState::HalfOpen || inner.failures >= self.failures_to_open {
            inner.state = BreakerState::Open;
            inner.opened_at = Some(Instant::now());
            inner.probing = false;
        }
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// While open and cooling down: how long until a probe may go. `None` once a probe
    /// may go (the next [`Breaker::admit`] lets it through) and while closed.
    pub fn closed_for(&self) -> Option<Duration> {
        let inner = self.lock();
        match (inner.state, inner.opened_at) {
            (BreakerState::Open, Some(at)) => {
                Some(self.cooldown.saturating_sub(at.elapsed())).filter(|w| !w.is_zero())
            }
            _ => None,
        }
    }

    /// Forgets past failures: an operator resumed or changed the subscription.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.failures = 0;
        inner.probing = false;
        inner.opened_at = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a few plain fields, consistent after any panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_failures_in_a_row_and_a_success_resets_the_count() {
        let breaker = Breaker::new(3, Duration::from_secs(60));
        breaker.record(false);
        breaker.record(false);
        breaker.record(true);
        breaker.record(false);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.closed_for().is_some());
        assert!(!breaker.admit());
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_result_decides() {
        let breaker = Breaker::new(1, Duration::from_millis(0));
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.closed_for(), None, "cooled down: a probe may go");
        assert!(breaker.admit());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.admit(), "only one probe at a time");
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.admit());
        breaker.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit() && breaker.admit());
    }
}
