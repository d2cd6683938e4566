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
//! hear 503, each holding a connection and a client's time. Two rules refuse sooner:
//!
//! - **A queue that cannot drain in time.** The queue knows how long commands hold
//!   their turns, hence how often one comes free while all are taken. A newcomer behind which the oldest waiter could not be
//!   reached before its deadline, nor before the queue would stand (below), even if
//!   nobody else came, has that oldest refused at once: a wave of requests hears its
//!   503s as it arrives, not at its deadline's end.
//! - **A standing queue** (Facebook's controlled delay): a queue that has not been empty
//!   for a fifth of the deadline is a sign of overload rather than of a burst, and a
//!   request that has then waited a twenty-fifth of it is refused. With the default
//!   250 ms: 50 ms and 10 ms. A burst shorter than that still gets the whole deadline.

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

pub struct Admission {
    limit: usize,
    /// A queue that has not been empty for this long is standing.
    standing_after: Duration,
    /// How long a request waits while the queue stands, before it is refused.
    overload_wait: Duration,
    state: Mutex<Turns>,
}

struct Waiter {
    start_by: Instant,
    /// Dropped, it tells the waiter no; a waiter that gave up has dropped its receiver.
    give: oneshot::Sender<()>,
}

struct Turns {
    running: usize,
    /// Oldest first.
    waiting: VecDeque<Waiter>,
    /// When the queue last had nobody waiting in it.
    empty_at: Instant,
    /// How long a command holds its turn, smoothed; with `limit` turns, a turn comes
    /// free every `held / limit` while all are taken (Little's law). Known from the
    /// first command on, so that the first burst already meets a measured pace.
    held: Option<Duration>,
}

impl Turns {
    /// Forgets the waiters at the front that gave up, and notes an empty queue.
    fn prune(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|w| w.give.is_closed()) {
            self.waiting.pop_front();
        }
        if self.waiting.is_empty() {
            self.empty_at = now;
        }
    }

    fn held_for(&mut self, held: Duration) {
        // An exponential average over about eight commands: steady, yet quick to follow.
        self.held = Some(match self.held {
            Some(average) => (average * 7 + held) / 8,
            None => held,
        });
    }

    /// Refuses the oldest waiters while the queue, drained at its measured pace, would
    /// reach them only after their deadline, or only after `standing_after` from now:
    /// by then the queue would stand, and they would be refused anyway.
    fn refuse_the_hopeless(&mut self, now: Instant, limit: usize, standing_after: Duration) {
        let Some(held) = self.held else {
            return;
        };
        let per_turn = held / limit as u32;
        while let Some(oldest) = self.waiting.front() {
            let reached = now + per_turn.saturating_mul(self.waiting.len() as u32);
            if reached <= oldest.start_by.min(now + standing_after) {
                return;
            }
            self.waiting.pop_front();
        }
    }
}

/// A running command's turn, since `started`; handed to the newest waiter when dropped.
pub struct Turn {
    admission: Arc<Admission>,
    started: Instant,
}

impl Turn {
    fn new(admission: &Arc<Admission>) -> Turn {
        Turn {
            admission: admission.clone(),
            started: Instant::now(),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.admission.lock();
        let now = Instant::now();
        turns.held_for(now.duration_since(self.started));
        let mut handed = false;
        while let Some(next) = turns.waiting.pop_back() {
            if next.give.send(()).is_ok() {
                handed = true;
                break;
            }
        }
        if !handed {
            turns.running -= 1;
        }
        turns.prune(now);
    }
}

impl Admission {
    /// `limit` commands at once, for commands that may wait up to `deadline`.
    pub fn new(limit: usize, deadline: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            standing_after: deadline / 5,
            overload_wait: deadline / 25,
            state: Mutex::new(Turns {
                running: 0,
                waiting: VecDeque::new(),
                empty_at: Instant::now(),
                held: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        // Nothing can panic while it is held.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn standing(&self, turns: &Turns, now: Instant) -> bool {
        now.duration_since(turns.empty_at) >= self.standing_after
    }

    /// A turn, or `None` when none came by `start_by`, or none could come in time, or
    /// none came soon enough while the queue stood.
    pub async fn admit(self: &Arc<Self>, start_by: Instant) -> Option<Turn> {
        let now = Instant::now();
        let mut handed = {
            let mut turns = self.lock();
            if turns.running < self.limit {
                turns.running += 1;
                return Some(Turn::new(self));
            }
            turns.prune(now);
            let (give, handed) = oneshot::channel();
            turns.waiting.push_back(Waiter { start_by, give });
            turns.refuse_the_hopeless(now, self.limit, self.standing_after);
            handed
        };
        // Waits until the deadline, looking again whenever the queue could have begun
        // to stand: a waiter of a burst that has since become a standing queue is
        // refused then, not left to wait out its whole deadline.
        let mut until = (now + self.overload_wait).min(start_by);
        loop {
            tokio::select! {
                given = &mut handed => return given.ok().map(|()| Turn::new(self)),
                () = tokio::time::sleep_until(until) => {}
            }
            let turns = self.lock();
            let now = Instant::now();
            if now >= start_by || self.standing(&turns, now) {
                break;
            }
            until = (turns.empty_at + self.standing_after)
                .max(now)
                .min(start_by);
        }
        // A turn handed over just as the wait ended is taken, not lost.
        handed.close();
        handed.try_recv().ok().map(|()| Turn::new(self))
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

    const DEADLINE: Duration = Duration::from_millis(250);

    #[tokio::test]
    async fn the_newest_waiter_gets_the_next_turn_and_the_late_ones_none() {
        let admission = Admission::new(1, Duration::from_secs(60));
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

    #[tokio::test]
    async fn a_burst_waits_past_the_overload_wait_and_a_standing_queue_is_refused() {
        let admission = Admission::new(1, DEADLINE);
        let far = Instant::now() + Duration::from_secs(5);
        let held = admission.admit(far).await.expect("a free turn");
        let burst = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await }
        });
        // Longer than the overload wait (10 ms), shorter than a standing queue (50 ms).
        tokio::time::sleep(Duration::from_millis(30)).await;
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
            waited >= DEADLINE / 5 && waited < Duration::from_secs(1),
            "refused after {waited:?}, not at the 5 s deadline"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_waiter_the_queue_cannot_reach_in_time_is_refused_at_once() {
        let admission = Admission::new(1, Duration::from_secs(60));
        let far = Instant::now() + Duration::from_secs(60);
        let held = admission.admit(far).await.unwrap();
        // The pace the queue measured: one turn, held 50 ms a command.
        admission.lock().held = Some(Duration::from_millis(50));
        // One waiter with 80 ms to go, then a newcomer: with two waiting, the oldest is
        // reached after 100 ms at that pace.
        let hurried = tokio::spawn({
            let admission = admission.clone();
            async move {
                let asked = Instant::now();
                let turn = admission
                    .admit(Instant::now() + Duration::from_millis(80))
                    .await;
                (turn.is_some(), asked.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let newcomer = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit(far).await.map(|_| ()) }
        });
        let (admitted, waited) = hurried.await.unwrap();
        assert!(!admitted, "refused");
        assert!(
            waited < Duration::from_millis(60),
            "told as the newcomer came, after {waited:?}, not at its deadline"
        );
        drop(held);
        assert_eq!(
            newcomer.await.unwrap(),
            Some(()),
            "the newcomer got the turn"
        );
    }

    #[tokio::test]
    async fn no_more_wait_than_the_queue_drains_before_it_would_stand() {
        // It would stand after 50 ms; a turn comes free every 20 ms.
        let admission = Admission::new(1, DEADLINE);
        let far = Instant::now() + Duration::from_secs(5);
        let held = admission.admit(far).await.unwrap();
        admission.lock().held = Some(Duration::from_millis(20));
        let waiter = || {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit(far).await.is_some() })
        };
        let first = waiter();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = waiter();
        tokio::time::sleep(Duration::from_millis(2)).await;
        // Two waiting are reached within 40 ms; with a third, the first only after 60.
        let third = waiter();
        let first = tokio::time::timeout(Duration::from_millis(30), first).await;
        assert!(
            !first.expect("told at once").unwrap(),
            "the first is refused"
        );
        drop(held);
        assert!(
            third.await.unwrap() && second.await.unwrap(),
            "the others get turns"
        );
    }
}
