//! How events go out to subscribers: timeouts, the retry schedule, the breaker and the
//! NATS server. Read by clap as part of `config::Settings`; every default is here, with
//! the reason for it.

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct DeliverySettings {
    /// How long one webhook request may take before it counts as failed.
    // Standard Webhooks' advice: receivers answer fast and work later.
    #[arg(
        long,
        env = "ORDERLOG_WEBHOOK_TIMEOUT",
        default_value = "10s",
        value_parser = nonzero_duration
    )]
    pub webhook_timeout: Duration,

    /// The delays before each retry (±10% jitter, never sooner than the receiver's
    /// Retry-After); when they run out, the message is dead-lettered.
    // Nine hours in all: a receiver down for a night still gets everything.
    #[arg(
        long = "webhook-retry-schedule",
        env = "ORDERLOG_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,30s,2m,10m,30m,2h,6h",
        value_parser = retry_schedule
    )]
    // Spelled out so that clap reads one value, the whole list, not one per flag.
    pub retry_schedule: ::std::vec::Vec<Duration>,

    /// Failed attempts in a row after which a subscription's circuit opens.
    #[arg(
        long,
        env = "ORDERLOG_BREAKER_FAILURES",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub breaker_failures: u32,

    /// How long an open circuit waits before it lets one probe through.
    #[arg(
        long,
        env = "ORDERLOG_BREAKER_COOLDOWN",
        default_value = "30s",
        value_parser = nonzero_duration
    )]
    pub breaker_cooldown: Duration,

    /// How long the record of each delivery attempt is kept (a dead letter keeps its
    /// whole history).
    // Long enough to trace last week's order across systems.
    #[arg(
        long = "delivery-attempt-retention",
        env = "ORDERLOG_DELIVERY_ATTEMPT_RETENTION",
        default_value = "7d",
        value_parser = nonzero_duration
    )]
    pub attempt_retention: Duration,

    /// Allow webhooks to loopback, private and link-local addresses (and names such as
    /// `localhost` or `*.internal`), at create, update and connect time.
    // Off: a webhook URL is chosen by an API client, and the server must not become its
    // way into the internal network (SSRF). On for tests and on-premises receivers.
    #[arg(
        long,
        env = "ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub webhook_allow_private_networks: bool,

    /// The NATS server of `nats` subscriptions.
    #[arg(
        long,
        env = "ORDERLOG_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_parser = nats_url
    )]
    pub nats_url: String,

    /// The subject prefix of a `nats` subscription that names none.
    #[arg(
        long,
        env = "ORDERLOG_NATS_SUBJECT_PREFIX",
        default_value = "orderlog",
        value_parser = subject_prefix
    )]
    pub nats_subject_prefix: String,

    /// The name this server gives itself in a subscription's status, as the holder of
    /// its lease; by default the host name and the process id (`web-1:4242`).
    #[arg(long, env = "ORDERLOG_NODE_NAME")]
    pub node_name: Option<String>,
}

impl DeliverySettings {
    /// This server's name in lease records.
    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "orderlog".to_owned());
            format!("{host}:{}", std::process::id())
        })
    }
}

/// A duration such as `500ms`, `30s`, `2h` or `7d`, longer than zero. `config` parses
/// its own durations with it too: one grammar for every setting.
pub(crate) fn nonzero_duration(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(e) => Err(format!(
            "must be a duration such as 500ms, 30s, 2h or 7d ({e})"
        )),
    }
}

fn retry_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let reason = "must be 1 to 30 comma-separated durations, such as 5s,30s,2m,10m,30m,2h,6h";
    let delays = raw
        .split(',')
        .map(|d| humantime::parse_duration(d.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{reason} ({e})"))?;
    if (1..=30).contains(&delays.len()) {
        Ok(delays)
    } else {
        Err(reason.to_owned())
    }
}

fn nats_url(raw: &str) -> Result<String, String> {
    if raw.starts_with("nats://") || raw.starts_with("tls://") {
        Ok(raw.to_owned())
    } else {
        Err("must start with nats:// or tls://".to_owned())
    }
}

fn subject_prefix(raw: &str) -> Result<String, String> {
    if super::subscription::is_subject(raw) {
        Ok(raw.to_owned())
    } else {
        Err("must be NATS subject tokens (letters, digits, `_`, `-`) joined by dots".to_owned())
    }
}
