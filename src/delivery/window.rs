//! Each subscription's in-flight window, adapted to its receiver the way TCP adapts its
//! congestion window (AIMD): every delivered message widens it by `1/size` (one more
//! message in flight per window's worth delivered), and a failed attempt halves it, at
//! most once per window's worth of sends: failures of messages sent before the last
//! halving belong to the burst already answered. It never exceeds the subscription's
//! `max_in_flight` nor goes below 1.
//!
//! A small receiver (few connections, a short backlog) then gets as much as it can
//! take, instead of a burst of `max_in_flight` requests that mostly fail and open the
//! breaker: the breaker counts a failure only once the window is at its minimum, so it
//! is for receivers that are down, not for receivers that are small.

use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Debug)]
struct State {
    size: f64,
    max: u32,
    in_flight: u32,
    /// Bumped by each halving: a permit from an older epoch does not halve again.
    epoch: u64,
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
    /// A window opened as wide as allowed: a receiver that takes everything loses
    /// nothing to a slow start.
    pub fn new(max: u32) -> Window {
        let max = max.max(1);
        Window {
            state: Mutex::new(State {
                size: f64::from(max),
                max,
                in_flight: 0,
                epoch: 0,
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
}

impl Permit<'_> {
    pub fn delivered(self) {
        let mut state = self.window.lock();
        state.size = (state.size + 1.0 / state.size).min(f64::from(state.max));
    }

    pub fn failed(self) -> Failure {
        let mut state = self.window.lock();
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

    #[tokio::test]
    async fn failures_of_one_burst_halve_the_window_once() {
        let window = Window::new(16);
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
    async fn deliveries_widen_it_by_one_per_window_up_to_the_maximum() {
        let window = Window::new(8);
        let _ = window.acquire().await.failed();
        let _ = window.acquire().await.failed();
        assert_eq!(window.size(), 2);
        for _ in 0..2 {
            window.acquire().await.delivered();
        }
        assert_eq!(window.size(), 2, "2 + 1/2 + 1/2.5");
        for _ in 0..100 {
            window.acquire().await.delivered();
        }
        assert_eq!(window.size(), 8);
    }

    #[tokio::test]
    async fn a_full_window_waits_for_a_permit_to_come_back() {
        let window = Window::new(1);
        let first = window.acquire().await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), window.acquire());
        assert!(second.await.is_err(), "no room while the first is out");
        drop(first);
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), window.acquire());
        assert!(again.await.is_ok());
    }
}
