//! Admission: at most `ORDERLOG_MAX_CONCURRENT_COMMANDS` commands run at once; the rest
//! wait for a turn until their deadline (`extract::StartBy`), then hear 503 `saturated`.
//!
//! The deadline alone cannot bound latency: a command that started in time still waits
//! behind every other started one, for each commit it needs (its reservations, its
//! order, its kept answer), so under 1,024 clients accepted commands took 490 ms at the
//! median with a 250 ms deadline (BENCHMARKS.md, overload). With a bound on the commands
//! inside, those admitted see the latency of a moderate load, and the excess waits here.
//!
//! Waiting requests are admitted newest first (as in Facebook's adaptive LIFO): under
//! overload, a request that has waited longest is the likeliest to be past its
//! client's patience anyway, and would hold its turn longest; serving the newest keeps
//! the admitted ones fast, and only the oldest reach their deadline and are refused.
//! When nothing waits, order does not matter. Reads never come here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::ApiError;
use super::extract::StartBy;
use crate::state::AppState;

pub struct Admission {
    limit: usize,
    state: Mutex<Turns>,
}

struct Turns {
    running: usize,
    /// Oldest first; a waiter that gave up has dropped its receiver.
    waiting: VecDeque<oneshot::Sender<()>>,
}

/// A running command's turn; handed to the newest waiter when dropped.
pub struct Turn(Arc<Admission>);

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.0.lock();
        while let Some(next) = turns.waiting.pop_back() {
            if next.send(()).is_ok() {
                return;
            }
        }
        turns.running -= 1;
    }
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            state: Mutex::new(Turns {
                running: 0,
                waiting: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        // Nothing can panic while it is held.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A turn, or `None` when none came by `start_by`.
    pub async fn admit(self: &Arc<Self>, start_by: Instant) -> Option<Turn> {
        let mut handed = {
            let mut turns = self.lock();
            if turns.running < self.limit {
                turns.running += 1;
                return Some(Turn(self.clone()));
            }
            let (give, handed) = oneshot::channel();
            turns.waiting.push_back(give);
            handed
        };
        tokio::select! {
            given = &mut handed => given.ok().map(|()| Turn(self.clone())),
            () = tokio::time::sleep_until(start_by) => {
                // A turn handed over just as the deadline passed is taken, not lost.
                handed.close();
                handed.try_recv().ok().map(|()| Turn(self.clone()))
            }
        }
    }
}

/// Every request but a read waits here for its turn.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let start_by = request
        .extensions()
        .get::<StartBy>()
        .map_or_else(Instant::now, |s| s.0);
    let Some(turn) = state.admission.admit(start_by).await else {
        return ApiError::saturated().into_response();
    };
    let response = next.run(request).await;
    drop(turn);
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_newest_waiter_gets_the_next_turn_and_the_late_ones_none() {
        let admission = Admission::new(1);
        let soon = Instant::now() + Duration::from_secs(5);
        let first = admission.admit(soon).await.expect("a free turn");
        let older = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(soon).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let newer = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(soon).await.map(|_| Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let newer_at = newer.await.unwrap().expect("the newest goes next");
        assert!(older.await.unwrap(), "then the older one");
        assert!(newer_at <= Instant::now());

        let held = admission.admit(soon).await.expect("free again");
        let late = admission
            .admit(Instant::now() + Duration::from_millis(20))
            .await;
        assert!(late.is_none(), "no turn came by the deadline");
        drop(held);
        assert!(
            admission.admit(soon).await.is_some(),
            "the late waiter held nothing"
        );
    }
}
