//! Each subscription's in-flight window, adapted to its receiver as TCP adapts its
//! congestion window:
//!
//! - **Delay (TCP Vegas).** Each delivered message's round trip is compared with the
//!   fastest one seen lately (`base`): `size × (1 − base/rtt)` estimates how many of
//!   our requests wait inside the receiver. Below [`ALPHA`] the window widens (by one per
//!   window's worth delivered), above [`BETA`] it narrows the same way, between them it
//!   holds. A receiver with a few workers and a short listen backlog is thus kept just
//!   busy, never flooded: a flood would overflow its backlog, and a dropped connection
//!   costs a message a timeout and a retry.
//! - **Loss (AIMD).** A failed attempt halves it, at most once per window's worth of
//!   sends: failures of messages sent before the last halving belong to the burst
//!   already answered.
//! - **Slow start.** It opens at [`INITIAL`] and grows by one per delivery (doubling
//!   each round trip) until the first sign of queueing or loss: a fast receiver reaches
//!   `max_in_flight` within a few round trips, a small one is never hit with all of it.
//!
//! It stays within 1 and the subscription's `max_in_flight`. The breaker counts a
//! failure only once the window is at its minimum: it is for receivers that are down,
//! not for receivers that are small.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Requests of ours queued in the receiver below which the window widens…
pub const ALPHA: f64 = 2.0;
/// …and above which it narrows.
pub const BETA: f64 = 4.0;
/// Where a window starts.
pub const INITIAL: u32 = 4;
/// The fastest round trip is forgotten after this long, so that a receiver that became
/// slower for good is not taken for a queue forever.
const BASE_RTT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct State {
    size: f64,
    max: u32,
    in_flight: u32,
    /// Bumped by each halving: a permit from an older epoch does not halve again.
    epoch: u64,
    slow_start: bool,
    /// The fastest round trip of the current period, and of the one before.
    base: Option<Duration>,
    period_min: Option<Duration>,
    period_started: Instant,
}

#[derive(Debug)]
pub struct Window {
    state: Mutex<State>,
    freed: Notify,
}

/// What a failed attempt means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The window shrank (or had already shrunk for this burst): not the breaker's.
    Absorbed,
    /// The window was at its minimum: the receiver fails even one at a time.
    AtMinimum,
}

impl Window {
    pub fn new(max: u32) -> Window {
        let max = max.max(1);
        Window {
            state: Mutex::new(State {
                size: f64::from(INITIAL.min(max)),
                max,
                in_flight: 0,
                epoch: 0,
                slow_start: true,
                base: None,
                period_min: None,
                period_started: Instant::now(),
            }),
            freed: Notify::new(),
        }
    }

    /// The subscription's limit changed.
    pub fn set_max(&self, max: u32) {
        let mut state = self.lock();
        state.max = max.max(1);
        state.size = state.size.min(f64::from(state.max));
        drop(state);
        self.freed.notify_waiters();
    }

    /// How many messages may be in flight now.
    pub fn size(&self) -> u32 {
        Self::allowed(&self.lock())
    }

    fn allowed(state: &State) -> u32 {
        (state.size as u32).clamp(1, state.max)
    }

    /// Waits for room in the window. The permit is given back when dropped, after
    /// [`Permit::delivered`] or [`Permit::failed`] has told the window how it went.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.in_flight < Self::allowed(&state) {
                    state.in_flight += 1;
                    return Permit {
                        window: self,
                        epoch: state.epoch,
                        sent: Instant::now(),
                    };
                }
            }
            freed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A few plain numbers, consistent after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One message's place in the window.
pub struct Permit<'a> {
    window: &'a Window,
    epoch: u64,
    sent: Instant,
}

impl Permit<'_> {
    pub fn delivered(self) {
        let rtt = self.sent.elapsed();
        self.delivered_in(rtt);
    }

    fn delivered_in(self, rtt: Duration) {
        let rtt = rtt.max(Duration::from_micros(1));
        let mut state = self.window.lock();
        if state.period_started.elapsed() >= BASE_RTT_FOR {
            state.base = state.period_min.take();
            state.period_started = Instant::now();
        }
        state.period_min = Some(state.period_min.map_or(rtt, |m| m.min(rtt)));
        let base = state.base.map_or(rtt, |b| b.min(rtt));
        state.base = Some(base);
        let queued = state.size * (1.0 - base.as_secs_f64() / rtt.as_secs_f64());
        let step = if state.slow_start {
            1.0
        } else {
            1.0 / state.size
        };
        if queued < ALPHA {
            state.size += step;
        } else {
            state.slow_start = false;
            if queued > BETA {
                state.size -= 1.0 / state.size;
            }
        }
        state.size = state.size.clamp(1.0, f64::from(state.max));
    }

    pub fn failed(self) -> Failure {
        let mut state = self.window.lock();
        state.slow_start = false;
        if self.epoch != state.epoch {
            return Failure::Absorbed;
        }
        if state.size < 2.0 {
            return Failure::AtMinimum;
        }
        state.size = (state.size / 2.0).max(1.0);
        state.epoch += 1;
        Failure::Absorbed
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.window.lock().in_flight -= 1;
        self.window.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A window past slow start at `size`, with a fastest round trip of 1 ms.
    async fn settled(max: u32, size: f64) -> Window {
        let window = Window::new(max);
        window.acquire().await.delivered_in(MS);
        let mut state = window.lock();
        state.size = size;
        state.slow_start = false;
        drop(state);
        window
    }

    #[tokio::test]
    async fn it_starts_small_and_doubles_each_round_trip_while_nothing_queues() {
        let window = Window::new(64);
        assert_eq!(window.size(), INITIAL);
        for _ in 0..4 {
            window.acquire().await.delivered_in(MS);
        }
        assert_eq!(window.size(), 8);
        for _ in 0..200 {
            window.acquire().await.delivered_in(MS);
        }
        assert_eq!(window.size(), 64, "never past max_in_flight");
    }

    #[tokio::test]
    async fn round_trips_that_grow_with_the_window_narrow_it() {
        // 8 in flight and each takes 4 ms where 1 ms was seen: about 6 of ours wait in
        // the receiver, more than BETA.
        let window = settled(64, 8.0).await;
        for _ in 0..16 {
            window.acquire().await.delivered_in(4 * MS);
        }
        assert!(window.size() < 8, "{}", window.size());
        // A little queueing (ALPHA to BETA) holds it.
        let window = settled(64, 6.0).await;
        for _ in 0..16 {
            window.acquire().await.delivered_in(2 * MS);
        }
        assert_eq!(window.size(), 6);
    }

    #[tokio::test]
    async fn failures_of_one_burst_halve_the_window_once() {
        let window = settled(16, 16.0).await;
        let burst: Vec<Permit> = futures::future::join_all((0..16).map(|_| window.acquire())).await;
        for permit in burst {
            assert_eq!(permit.failed(), Failure::Absorbed);
        }
        assert_eq!(window.size(), 8);
    }

    #[tokio::test]
    async fn only_a_window_at_its_minimum_hands_failures_to_the_breaker() {
        let window = Window::new(4);
        assert_eq!(window.acquire().await.failed(), Failure::Absorbed);
        assert_eq!(window.size(), 2);
        assert_eq!(window.acquire().await.failed(), Failure::Absorbed);
        assert_eq!(window.size(), 1);
        assert_eq!(window.acquire().await.failed(), Failure::AtMinimum);
        assert_eq!(window.size(), 1);
    }

    #[tokio::test]
    async fn after_a_loss_it_widens_by_one_per_window_delivered() {
        let window = settled(8, 2.0).await;
        for _ in 0..2 {
            window.acquire().await.delivered_in(MS);
        }
        assert_eq!(window.size(), 2, "2 + 1/2 + 1/2.5");
        for _ in 0..100 {
            window.acquire().await.delivered_in(MS);
        }
        assert_eq!(window.size(), 8);
    }

    #[tokio::test]
    async fn a_full_window_waits_for_a_permit_to_come_back() {
        let window = Window::new(1);
        let first = window.acquire().await;
        let second = tokio::time::timeout(Duration::from_millis(50), window.acquire());
        assert!(second.await.is_err(), "no room while the first is out");
        drop(first);
        let again = tokio::time::timeout(Duration::from_millis(50), window.acquire());
        assert!(again.await.is_ok());
    }
}
