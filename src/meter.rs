//! The live meter: this server's rates and latencies, second by second, for the
//! operations dashboard (`api::ops`), and the Prometheus series of the same facts.
//!
//! One call records a fact in both: a command answered, events committed, a delivery
//! attempt made. It keeps only counts and histograms, never an order id or a payload,
//! and it never waits on anything but its own short lock (measured: BENCHMARKS.md,
//! "live meter"). Off (`ORDERLOG_LIVE_STATS=false`), the Prometheus series are still
//! counted and the in-memory aggregation is skipped. It imports nothing of the engine:
//! the layers that have the facts call it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use hdrhistogram::Histogram;
use metrics::{Counter, Histogram as PromHistogram};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many seconds of history the dashboard's charts start from.
pub const HISTORY_SECONDS: usize = 300;
/// The window latency percentiles and success rates are taken over: one second is too
/// few samples for a p99 at low rates, a minute too slow to show a change.
const WINDOW_SECONDS: usize = 10;

/// How a command ended, as its status tells: the labels of `orderlog_commands_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Accepted,
    /// 4xx: refused by a rule or for its input.
    Refused,
    /// 503: shed under overload, nothing written.
    Shed,
    /// Any other 5xx.
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Accepted,
        Outcome::Refused,
        Outcome::Shed,
        Outcome::Failed,
    ];

    pub fn of_status(status: u16) -> Outcome {
        match status {
            503 => Outcome::Shed,
            500..=599 => Outcome::Failed,
            400..=499 => Outcome::Refused,
            _ => Outcome::Accepted,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Shed => "shed",
            Outcome::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Records facts; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Meter {
    inner: Arc<Mutex<Inner>>,
    /// Event streams (`GET /v1/events/stream`) open now: the live channels.
    streams: Arc<AtomicI64>,
    live: bool,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(true)
    }
}

impl Meter {
    /// `live`: whether the in-memory aggregation runs (the Prometheus series always do).
    pub fn new(live: bool) -> Meter {
        Meter {
            inner: Arc::new(Mutex::new(Inner::default())),
            streams: Arc::default(),
            live,
        }
    }

    /// An event stream opened; it counts as open until the guard is dropped.
    pub fn stream_opened(&self) -> StreamOpen {
        let open = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("orderlog_event_streams_open").set(open as f64);
        StreamOpen(self.streams.clone())
    }

    pub fn streams_open(&self) -> i64 {
        self.streams.load(Ordering::Relaxed)
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// A command answered: `kind` is its route (`POST /v1/orders`), bounded by the
    /// router's table.
    pub fn command(&self, kind: &str, status: u16, elapsed: Duration) {
        let outcome = Outcome::of_status(status);
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let mut inner = self.lock();
        let entry = match inner.commands.get_mut(kind) {
            Some(entry) => entry,
            None => inner
                .commands
                .entry(kind.to_owned())
                .or_insert_with(|| CommandSeries::new(kind)),
        };
        entry.counters[outcome.index()].increment(1);
        entry.duration.record(elapsed.as_secs_f64());
        if self.live {
            entry.window.front_mut().record(outcome, micros);
            inner.all_commands.front_mut().record(outcome, micros);
        }
    }

    /// Events committed to the log by this server, by type.
    pub fn appended<'a>(&self, types: impl Iterator<Item = &'a str>) {
        let mut inner = self.lock();
        let live = self.live;
        for event_type in types {
            let series = match inner.events.get_mut(event_type) {
                Some(series) => series,
                None => inner
                    .events
                    .entry(event_type.to_owned())
                    .or_insert_with(|| EventSeries::new(event_type)),
            };
            series.counter.increment(1);
            if live {
                series.this_second += 1;
                series.total += 1;
            }
        }
    }

    /// A delivery attempt to `subscription`, and how it ended (`delivered`, `failed`,
    /// `gone`).
    pub fn attempt(&self, subscription: &str, outcome: &str, latency: Duration) {
        let mut inner = self.lock();
        let series = match inner.attempts.get_mut(subscription) {
            Some(series) => series,
            None => inner
                .attempts
                .entry(subscription.to_owned())
                .or_insert_with(|| AttemptSeries::new(subscription)),
        };
        series.counter(outcome).increment(1);
        series.duration.record(latency.as_secs_f64());
        if self.live {
            let bucket = series.window.front_mut();
            bucket.attempts += 1;
            if outcome == "delivered" {
                bucket.delivered += 1;
            }
            bucket.latency.saturating_record(latency.as_micros() as u64);
        }
    }

    /// Messages moved to a subscription's dead letters.
    pub fn dead_lettered(&self, subscription: &str, n: u64) {
        metrics::counter!("orderlog_dead_letters_total", "subscription" => subscription.to_owned())
            .increment(n);
    }

    /// Ends the current second: its counts become the latest rates and a point of the
    /// history. Called once a second by [`Meter::run`].
    pub fn tick(&self) {
        if !self.live {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let events: u64 = inner.events.values().map(|s| s.this_second).sum();
        let commands = inner.all_commands.front().count();
        let latency = inner.all_commands.front().latency.clone();
        let (mut attempts, mut delivered) = (0, 0);
        for series in inner.attempts.values() {
            attempts += series.window.front().attempts;
            delivered += series.window.front().delivered;
        }
        inner.history.push_back(Point {
            at: Utc::now().timestamp(),
            events,
            commands,
            p50_ms: quantile_ms(&latency, 0.5),
            p99_ms: quantile_ms(&latency, 0.99),
            attempts,
            delivered,
        });
        if inner.history.len() > HISTORY_SECONDS {
            inner.history.pop_front();
        }
        for series in inner.events.values_mut() {
            series.last_second = series.this_second;
            series.this_second = 0;
        }
        inner.all_commands.turn();
        for series in inner.commands.values_mut() {
            series.window.turn();
        }
        for series in inner.attempts.values_mut() {
            series.window.turn();
        }
    }

    /// Ticks every second until `shutdown`.
    pub fn run(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let meter = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => meter.tick(),
                }
            }
        })
    }

    /// What the dashboard shows: the last full second's rates, percentiles over the
    /// last ten seconds, totals since start, and the history.
    pub fn snapshot(&self) -> MeterSnapshot {
        let inner = self.lock();
        let mut by_type: Vec<EventRate> = inner
            .events
            .iter()
            .map(|(name, s)| EventRate {
                event_type: name.clone(),
                per_second: s.last_second,
                total: s.total,
            })
            .collect();
        by_type.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        let mut by_kind: Vec<CommandRate> = inner
            .commands
            .iter()
            .map(|(kind, s)| CommandRate::of(kind.clone(), &s.window))
            .collect();
        by_kind.sort_by(|a, b| a.kind.cmp(&b.kind));
        let mut attempts: Vec<AttemptRate> = inner
            .attempts
            .iter()
            .map(|(id, s)| AttemptRate::of(id.clone(), &s.window))
            .collect();
        attempts.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        MeterSnapshot {
            live: self.live,
            events: EventsOut {
                per_second: inner.history.back().map_or(0, |p| p.events),
                total: by_type.iter().map(|e| e.total).sum(),
                by_type,
            },
            commands: CommandsOut {
                all: CommandRate::of("all".to_owned(), &inner.all_commands),
                by_kind,
            },
            attempts,
            history: inner.history.iter().cloned().collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Held by an open event stream.
pub struct StreamOpen(Arc<AtomicI64>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("orderlog_event_streams_open").set(open as f64);
    }
}

#[derive(Default)]
struct Inner {
    commands: HashMap<String, CommandSeries>,
    all_commands: Window<CommandBucket>,
    events: HashMap<String, EventSeries>,
    attempts: HashMap<String, AttemptSeries>,
    history: VecDeque<Point>,
}

/// The last `WINDOW_SECONDS` seconds, newest (the one being counted) first.
struct Window<B> {
    buckets: VecDeque<B>,
    totals: [u64; 4],
}

impl<B: Default + Bucket> Default for Window<B> {
    fn default() -> Self {
        Window {
            buckets: VecDeque::from([B::default()]),
            totals: [0; 4],
        }
    }
}

trait Bucket {
    fn add_to(&self, totals: &mut [u64; 4]);
}

impl<B: Default + Bucket> Window<B> {
    fn front(&self) -> &B {
        &self.buckets[0]
    }

    fn front_mut(&mut self) -> &mut B {
        &mut self.buckets[0]
    }

    fn turn(&mut self) {
        self.buckets[0].add_to(&mut self.totals);
        self.buckets.push_front(B::default());
        self.buckets.truncate(WINDOW_SECONDS + 1);
    }

    /// The full seconds, newest first.
    fn full(&self) -> impl Iterator<Item = &B> {
        self.buckets.iter().skip(1)
    }
}

struct CommandBucket {
    outcomes: [u64; 4],
    latency: Histogram<u64>,
}

impl Default for CommandBucket {
    fn default() -> Self {
        CommandBucket {
            outcomes: [0; 4],
            latency: micros_histogram(),
        }
    }
}

impl Bucket for CommandBucket {
    fn add_to(&self, totals: &mut [u64; 4]) {
        for (total, n) in totals.iter_mut().zip(self.outcomes) {
            *total += n;
        }
    }
}

impl CommandBucket {
    fn record(&mut self, outcome: Outcome, micros: u64) {
        self.outcomes[outcome.index()] += 1;
        self.latency.saturating_record(micros);
    }

    fn count(&self) -> u64 {
        self.outcomes.iter().sum()
    }
}

#[derive(Default)]
struct AttemptBucket {
    attempts: u64,
    delivered: u64,
    latency: LatencyHistogram,
}

/// A histogram with `Default`, for the attempt buckets.
struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(micros_histogram())
    }
}

impl LatencyHistogram {
    fn saturating_record(&mut self, micros: u64) {
        self.0.saturating_record(micros);
    }
}

impl Bucket for AttemptBucket {
    fn add_to(&self, totals: &mut [u64; 4]) {
        totals[0] += self.attempts;
        totals[1] += self.delivered;
    }
}

fn micros_histogram() -> Histogram<u64> {
    // 1 µs to an hour, two significant digits: a few kilobytes each.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant histogram bounds")
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

struct CommandSeries {
    counters: [Counter; 4],
    duration: PromHistogram,
    window: Window<CommandBucket>,
}

impl CommandSeries {
    fn new(kind: &str) -> CommandSeries {
        CommandSeries {
            counters: Outcome::ALL.map(|outcome| {
                metrics::counter!(
                    "orderlog_commands_total",
                    "kind" => kind.to_owned(),
                    "outcome" => outcome.as_str()
                )
            }),
            duration: metrics::histogram!(
                "orderlog_command_duration_seconds",
                "kind" => kind.to_owned()
            ),
            window: Window::default(),
        }
    }
}

struct EventSeries {
    counter: Counter,
    this_second: u64,
    last_second: u64,
    total: u64,
}

impl EventSeries {
    fn new(event_type: &str) -> EventSeries {
        EventSeries {
            counter: metrics::counter!(
                "orderlog_events_appended_total",
                "type" => event_type.to_owned()
            ),
            this_second: 0,
            last_second: 0,
            total: 0,
        }
    }
}

struct AttemptSeries {
    subscription: String,
    counters: HashMap<&'static str, Counter>,
    duration: PromHistogram,
    window: Window<AttemptBucket>,
}

impl AttemptSeries {
    fn new(subscription: &str) -> AttemptSeries {
        AttemptSeries {
            subscription: subscription.to_owned(),
            counters: HashMap::new(),
            duration: metrics::histogram!(
                "orderlog_delivery_attempt_duration_seconds",
                "subscription" => subscription.to_owned()
            ),
            window: Window::default(),
        }
    }

    fn counter(&mut self, outcome: &str) -> &Counter {
        // The outcomes are the sink's three; anything else is counted as `other`
        // rather than growing the label set.
        let outcome: &'static str = match outcome {
            "delivered" => "delivered",
            "failed" => "failed",
            "gone" => "gone",
            _ => "other",
        };
        let subscription = &self.subscription;
        self.counters.entry(outcome).or_insert_with(|| {
            metrics::counter!(
                "orderlog_delivery_attempts_total",
                "subscription" => subscription.clone(),
                "outcome" => outcome
            )
        })
    }
}

/// One second of the history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = MeterPoint)]
pub struct Point {
    /// Unix seconds.
    pub at: i64,
    pub events: u64,
    pub commands: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub attempts: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MeterSnapshot {
    /// False when `ORDERLOG_LIVE_STATS=false`: every figure below stays zero.
    pub live: bool,
    pub events: EventsOut,
    pub commands: CommandsOut,
    pub attempts: Vec<AttemptRate>,
    pub history: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = MeterEvents)]
pub struct EventsOut {
    /// Appended in the last full second.
    pub per_second: u64,
    /// Appended since this server started.
    pub total: u64,
    pub by_type: Vec<EventRate>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventRate {
    pub event_type: String,
    pub per_second: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = MeterCommands)]
pub struct CommandsOut {
    pub all: CommandRate,
    pub by_kind: Vec<CommandRate>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CommandRate {
    pub kind: String,
    /// In the last full second.
    pub per_second: u64,
    /// Over the last ten seconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Since this server started, by outcome.
    pub accepted: u64,
    pub refused: u64,
    pub shed: u64,
    pub failed: u64,
}

impl CommandRate {
    fn of(kind: String, window: &Window<CommandBucket>) -> CommandRate {
        let mut latency = micros_histogram();
        for bucket in window.full() {
            // Same bounds: adding cannot fail.
            let _ = latency.add(&bucket.latency);
        }
        let mut totals = window.totals;
        window.front().add_to(&mut totals);
        CommandRate {
            kind,
            per_second: window.full().next().map_or(0, CommandBucket::count),
            p50_ms: quantile_ms(&latency, 0.5),
            p99_ms: quantile_ms(&latency, 0.99),
            accepted: totals[Outcome::Accepted.index()],
            refused: totals[Outcome::Refused.index()],
            shed: totals[Outcome::Shed.index()],
            failed: totals[Outcome::Failed.index()],
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptRate {
    pub subscription_id: String,
    /// Attempts in the last full second.
    pub per_second: u64,
    /// Delivered among the attempts of the last ten seconds; `None` without attempts.
    pub success_rate: Option<f64>,
    pub p99_ms: f64,
    /// Since this server started.
    pub attempts: u64,
    pub delivered: u64,
}

impl AttemptRate {
    fn of(subscription_id: String, window: &Window<AttemptBucket>) -> AttemptRate {
        let mut latency = micros_histogram();
        let (mut attempts, mut delivered) = (0, 0);
        for bucket in window.full() {
            let _ = latency.add(&bucket.latency.0);
            attempts += bucket.attempts;
            delivered += bucket.delivered;
        }
        let mut totals = window.totals;
        window.front().add_to(&mut totals);
        AttemptRate {
            subscription_id,
            per_second: window.full().next().map_or(0, |b| b.attempts),
            success_rate: (attempts > 0).then(|| delivered as f64 / attempts as f64),
            p99_ms: quantile_ms(&latency, 0.99),
            attempts: totals[0],
            delivered: totals[1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_s_commands_become_its_rate_and_percentiles_after_the_tick() {
        let meter = Meter::new(true);
        for ms in 1..=100 {
            meter.command("POST /v1/orders", 201, Duration::from_millis(ms));
        }
        meter.command("POST /v1/orders", 409, Duration::from_millis(1));
        meter.command("POST /v1/orders", 503, Duration::from_millis(1));
        assert_eq!(
            meter.snapshot().commands.all.per_second,
            0,
            "nothing full yet"
        );
        meter.tick();
        let snapshot = meter.snapshot();
        let orders = &snapshot.commands.by_kind[0];
        assert_eq!(orders.kind, "POST /v1/orders");
        assert_eq!(orders.per_second, 102);
        assert_eq!((orders.accepted, orders.refused, orders.shed), (100, 1, 1));
        assert!((49.0..=51.0).contains(&orders.p50_ms), "{}", orders.p50_ms);
        assert!((98.0..=100.5).contains(&orders.p99_ms), "{}", orders.p99_ms);
        assert_eq!(snapshot.history.last().unwrap().commands, 102);
        meter.tick();
        let later = meter.snapshot();
        assert_eq!(later.commands.all.per_second, 0, "the next second had none");
        assert_eq!(later.commands.all.accepted, 100, "totals stay");
        assert!(
            later.commands.all.p99_ms > 90.0,
            "still in the ten-second window"
        );
    }

    #[test]
    fn events_are_counted_by_type_and_attempts_by_subscription() {
        let meter = Meter::new(true);
        meter.appended(["order.created", "inventory.reserved", "order.created"].into_iter());
        meter.attempt("s1", "delivered", Duration::from_millis(3));
        meter.attempt("s1", "failed", Duration::from_millis(30));
        meter.tick();
        let snapshot = meter.snapshot();
        assert_eq!(snapshot.events.per_second, 3);
        assert_eq!(snapshot.events.total, 3);
        let created = snapshot
            .events
            .by_type
            .iter()
            .find(|e| e.event_type == "order.created")
            .unwrap();
        assert_eq!((created.per_second, created.total), (2, 2));
        let s1 = &snapshot.attempts[0];
        assert_eq!((s1.per_second, s1.attempts, s1.delivered), (2, 2, 1));
        assert_eq!(s1.success_rate, Some(0.5));
    }

    #[test]
    fn a_meter_that_is_not_live_keeps_no_figures() {
        let meter = Meter::new(false);
        meter.command("POST /v1/orders", 201, Duration::from_millis(1));
        meter.appended(["order.created"].into_iter());
        meter.tick();
        let snapshot = meter.snapshot();
        assert!(!snapshot.live);
        assert_eq!(snapshot.commands.all.accepted, 0);
        assert_eq!(snapshot.events.total, 0);
        assert!(snapshot.history.is_empty());
    }
}
