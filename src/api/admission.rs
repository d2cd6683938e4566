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
//!
//! LIFO alone still lets the oldest waiters sit out their whole deadline before they
//! hear 503, each holding a connection and a client's time. So, as in Facebook's
//! controlled delay: while the queue has not been empty for [`STANDING_AFTER`] it is
//! standing, a sign of overload rather than of a burst, and a request that has then
//! waited [`OVERLOAD_WAIT`] is refused at once. A burst still gets the whole deadline,
//! but at most as many wait as may run: a newcomer to a full queue has the oldest
//! waiter refused, so a wave of requests hears its 503s as it arrives, not at the end
//! of its deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::ApiError;
use super::extract::StartBy;
use crate::state::AppState;

/// A queue that has not been empty for this long is standing: the server is past what
/// it can do, not meeting a burst.
pub const STANDING_AFTER: Duration = Duration::from_millis(50);
/// How long a request waits for a turn while the queue stands, before it is refused.
pub const OVERLOAD_WAIT: Duration = Duration::from_millis(10);

pub struct Admission {
    limit: usize,
    state: Mutex<Turns>,
}

struct Turns {
    running: usize,
    /// Oldest first; a waiter that gave up has dropped its receiver.
    waiting: VecDeque<oneshot::Sender<()>>,
    /// When the queue last had nobody waiting in it.
    empty_at: Instant,
}

impl Turns {
    /// Forgets the waiters at the front that gave up, and notes an empty queue.
    fn prune(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(oneshot::Sender::is_closed) {
            self.waiting.pop_front();
        }
        if self.waiting.is_empty() {
            self.empty_at = now;
        }
    }

    fn standing(&self, now: Instant) -> bool {
        now.duration_since(self.empty_at) >= STANDING_AFTER
    }
}

/// A running command's turn; handed to the newest waiter when dropped.
pub struct Turn(Arc<Admission>);

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.0.lock();
        let mut handed = false;
        while let Some(next) = turns.waiting.pop_back() {
            if next.send(()).is_ok() {
                handed = true;
                break;
            }
        }
        if !handed {
            turns.running -= 1;
        }
        turns.prune(Instant::now());
    }
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            state: Mutex::new(Turns {
                running: 0,
                waiting: VecDeque::new(),
                empty_at: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        // Nothing can panic while it is held.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A turn, or `None` when none came by `start_by`, or none came within
    /// [`OVERLOAD_WAIT`] while the queue stood.
    pub async fn admit(self: &Arc<Self>, start_by: Instant) -> Option<Turn> {
        let now = Instant::now();
        let mut handed = {
            let mut turns = self.lock();
            if turns.running < self.limit {
                turns.running += 1;
                return Some(Turn(self.clone()));
            }
            turns.prune(now);
            if turns.waiting.len() >= self.limit {
                // Dropped, its sender tells the oldest waiter no: with the newest
                // served first, it would only have waited out its deadline.
                turns.waiting.pop_front();
            }
            let (give, handed) = oneshot::channel();
            turns.waiting.push_back(give);
            handed
        };
        // Waits until the deadline, looking again whenever the queue could have begun
        // to stand: a waiter of a burst that has since become a standing queue is
        // refused then, not left to wait out its whole deadline.
        let mut until = (now + OVERLOAD_WAIT).min(start_by);
        loop {
            tokio::select! {
                given = &mut handed => return given.ok().map(|()| Turn(self.clone())),
                () = tokio::time::sleep_until(until) => {}
            }
            let turns = self.lock();
            let now = Instant::now();
            if now >= start_by || turns.standing(now) {
                break;
            }
            until = (turns.empty_at + STANDING_AFTER).max(now).min(start_by);
        }
        // A turn handed over just as the wait ended is taken, not lost.
        handed.close();
        handed.try_recv().ok().map(|()| Turn(self.clone()))
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
    use super::*;

    #[tokio::test]
    async fn the_newest_waiter_gets_the_next_turn_and_the_late_ones_none() {
        // Two turns, both taken: two may wait.
        let admission = Admission::new(2);
        let soon = Instant::now() + Duration::from_secs(5);
        let first = admission.admit(soon).await.expect("a free turn");
        let _second = admission.admit(soon).await.expect("another");
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

    #[tokio::test]
    async fn a_burst_waits_past_the_overload_wait_and_a_standing_queue_is_refused() {
        let admission = Admission::new(1);
        let far = Instant::now() + Duration::from_secs(5);
        let held = admission.admit(far).await.expect("a free turn");
        let burst = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await }
        });
        // Longer than the overload wait, shorter than a standing queue: still a burst.
        tokio::time::sleep(OVERLOAD_WAIT * 3).await;
        drop(held);
        let held = burst
            .await
            .unwrap()
            .expect("a burst's waiter gets the turn");

        let asked = Instant::now();
        let refused = admission.admit(far).await;
        let waited = asked.elapsed();
        assert!(refused.is_none(), "refused once the queue stood");
        assert!(
            waited >= STANDING_AFTER && waited < Duration::from_secs(1),
            "refused after {waited:?}, not at the 5 s deadline"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_newcomer_to_a_full_queue_has_the_oldest_waiter_refused() {
        let admission = Admission::new(1);
        let far = Instant::now() + Duration::from_secs(5);
        let held = admission.admit(far).await.expect("a free turn");
        let oldest = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let newest = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await.map(|_| ()) }
        });
        let refused = tokio::time::timeout(Duration::from_secs(1), oldest).await;
        assert_eq!(refused.expect("told at once").unwrap(), None);
        drop(held);
        assert_eq!(
            newest.await.unwrap(),
            Some(()),
            "the newcomer waited and got it"
        );
    }
}
