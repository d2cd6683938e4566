//! One typed `Settings`, read from `ORDERLOG_*` environment variables and validated at
//! start. Every default lives in [`Settings::default`], with the reason for it; a bad
//! value stops the server with an error that names the setting.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    pub bind: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    pub db_pool_size: u32,
    /// How long an Idempotency-Key and its response are kept.
    pub idempotency_ttl: Duration,
    pub log_format: LogFormat,
    /// Refuse orders for SKUs whose stock is not tracked, instead of accepting them
    /// without a reservation.
    pub require_tracked_skus: bool,
    /// After a payment fails, how long the order keeps its stock for a new attempt.
    pub payment_grace: Duration,
    /// How long an order may stay unpaid before it expires and its stock is released.
    pub unpaid_order_ttl: Duration,
    /// How long stock reserved for an order that never appeared (a crash mid-placement)
    /// stays held before it is released.
    pub orphan_hold_timeout: Duration,
    pub deliveries: DeliverySettings,
}

/// How events go out to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// How long one webhook request may take before it counts as failed.
    pub webhook_timeout: Duration,
    /// The delays before each retry; when they run out, the message is dead-lettered.
    pub retry_schedule: Vec<Duration>,
    /// Consecutive failures after which a subscription's circuit opens.
    pub breaker_failures: u32,
    /// How long an open circuit waits before it lets one probe through.
    pub breaker_cooldown: Duration,
    /// How long the record of each delivery attempt is kept.
    pub attempt_retention: Duration,
    pub nats_url: String,
    /// The subject prefix of a NATS subscription that names none.
    pub nats_subject_prefix: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            // Standard Webhooks' advice: receivers answer fast and work later.
            webhook_timeout: Duration::from_secs(10),
            // Nine hours in all: a receiver down for a night still gets everything.
            retry_schedule: ["5s", "30s", "2m", "10m", "30m", "2h", "6h"]
                .iter()
                .filter_map(|d| parse_duration(d))
                .collect(),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            // Long enough to trace last week's order across systems.
            attempt_retention: Duration::from_secs(7 * 86_400),
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            nats_subject_prefix: "orderlog".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            // An embedded file, created on first start: the server runs with no setup.
            database_url: "sqlite://data/orderlog.db".to_owned(),
            // Loopback only until someone decides to expose it.
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // Orders are small; 1 MiB leaves room for hundreds of lines.
            body_limit: 1024 * 1024,
            // Enough connections to keep 2 cores busy without starving PostgreSQL.
            db_pool_size: 16,
            // The window in which clients retry (Stripe keeps keys for 24 h too).
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            log_format: LogFormat::Text,
            // Like Shopify's "don't track inventory": digital goods need no stock.
            require_tracked_skus: false,
            // Long enough to try another card, short enough not to starve a flash sale.
            payment_grace: Duration::from_secs(15 * 60),
            unpaid_order_ttl: Duration::from_secs(60 * 60),
            // Placement takes milliseconds; this only has to outlast a slow one.
            orphan_hold_timeout: Duration::from_secs(60),
            deliveries: DeliverySettings::default(),
        }
    }
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Settings from `(name, value)` pairs; names other than `ORDERLOG_*` are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        for (name, value) in vars {
            let invalid = |name: &'static str, reason: &str| ConfigError {
                name,
                value: value.clone(),
                reason: reason.to_owned(),
            };
            match name.as_str() {
                "ORDERLOG_DATABASE_URL" => {
                    let known = ["postgres://", "postgresql://", "sqlite:"];
                    if !known.iter().any(|p| value.starts_with(p)) {
                        return Err(invalid(
                            "ORDERLOG_DATABASE_URL",
                            "must start with postgres://, postgresql:// or sqlite:",
                        ));
                    }
                    settings.database_url = value.clone();
                }
                "ORDERLOG_BIND" => {
                    settings.bind = value.parse().map_err(|_| {
                        invalid(
                            "ORDERLOG_BIND",
                            "must be an address and port, such as 127.0.0.1:8080",
                        )
                    })?;
                }
                "ORDERLOG_BODY_LIMIT" => {
                    settings.body_limit =
                        parse_bytes(&value).filter(|&b| b >= 1024).ok_or_else(|| {
                            invalid(
                                "ORDERLOG_BODY_LIMIT",
                                "must be a size of at least 1KiB, such as 1048576, 512KiB or 1MiB",
                            )
                        })?;
                }
                "ORDERLOG_DB_POOL_SIZE" => {
                    settings.db_pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                        invalid(
                            "ORDERLOG_DB_POOL_SIZE",
                            "must be a whole number from 1 to 1000",
                        )
                    })?;
                }
                "ORDERLOG_IDEMPOTENCY_TTL" => {
                    settings.idempotency_ttl = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_IDEMPOTENCY_TTL",
                                "must be a duration such as 90s, 30m, 24h or 7d",
                            )
                        })?;
                }
                "ORDERLOG_REQUIRE_TRACKED_SKUS" => {
                    settings.require_tracked_skus = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(invalid(
                                "ORDERLOG_REQUIRE_TRACKED_SKUS",
                                "must be `true` or `false`",
                            ))
                        }
                    };
                }
                "ORDERLOG_PAYMENT_GRACE" => {
                    settings.payment_grace = parse_duration(&value).ok_or_else(|| {
                        invalid(
                            "ORDERLOG_PAYMENT_GRACE",
                            "must be a duration such as 90s, 15m or 1h",
                        )
                    })?;
                }
                "ORDERLOG_UNPAID_ORDER_TTL" => {
                    settings.unpaid_order_ttl = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_UNPAID_ORDER_TTL",
                                "must be a duration such as 30m, 1h or 2d",
                            )
                        })?;
                }
                "ORDERLOG_ORPHAN_HOLD_TIMEOUT" => {
                    settings.orphan_hold_timeout = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_ORPHAN_HOLD_TIMEOUT",
                                "must be a duration such as 30s or 5m",
                            )
                        })?;
                }
                "ORDERLOG_WEBHOOK_TIMEOUT" => {
                    settings.deliveries.webhook_timeout = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_WEBHOOK_TIMEOUT",
                                "must be a duration such as 500ms, 10s or 1m",
                            )
                        })?;
                }
                "ORDERLOG_WEBHOOK_RETRY_SCHEDULE" => {
                    settings.deliveries.retry_schedule = value
                        .split(',')
                        .map(parse_duration)
                        .collect::<Option<Vec<_>>>()
                        .filter(|s| (1..=30).contains(&s.len()))
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_WEBHOOK_RETRY_SCHEDULE",
                                "must be 1 to 30 comma-separated durations, such as 5s,30s,2m,10m,30m,2h,6h",
                            )
                        })?;
                }
                "ORDERLOG_BREAKER_FAILURES" => {
                    settings.deliveries.breaker_failures = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_BREAKER_FAILURES",
                                "must be a whole number from 1 to 10000",
                            )
                        })?;
                }
                "ORDERLOG_BREAKER_COOLDOWN" => {
                    settings.deliveries.breaker_cooldown = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_BREAKER_COOLDOWN",
                                "must be a duration such as 500ms, 30s or 5m",
                            )
                        })?;
                }
                "ORDERLOG_DELIVERY_ATTEMPT_RETENTION" => {
                    settings.deliveries.attempt_retention = parse_duration(&value)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| {
                            invalid(
                                "ORDERLOG_DELIVERY_ATTEMPT_RETENTION",
                                "must be a duration such as 12h, 7d or 30d",
                            )
                        })?;
                }
                "ORDERLOG_NATS_URL" => {
                    if !value.starts_with("nats://") && !value.starts_with("tls://") {
                        return Err(invalid(
                            "ORDERLOG_NATS_URL",
                            "must start with nats:// or tls://",
                        ));
                    }
                    settings.deliveries.nats_url = value.clone();
                }
                "ORDERLOG_NATS_SUBJECT_PREFIX" => {
                    if !crate::delivery::subscription::is_subject(&value) {
                        return Err(invalid(
                            "ORDERLOG_NATS_SUBJECT_PREFIX",
                            "must be NATS subject tokens (letters, digits, `_`, `-`) joined by dots",
                        ));
                    }
                    settings.deliveries.nats_subject_prefix = value.clone();
                }
                "ORDERLOG_LOG_FORMAT" => {
                    settings.log_format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => {
                            return Err(invalid("ORDERLOG_LOG_FORMAT", "must be `text` or `json`"))
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// `1048576`, `512KiB`, `1MiB` (also `KB`/`MB`, read as binary units).
pub fn parse_bytes(raw: &str) -> Option<usize> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `250ms`, `90s`, `30m`, `24h`, `7d`.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_environment_at_all() {
        let settings = Settings::from_vars(vars(&[("PATH", "/bin")])).unwrap();
        assert_eq!(settings, Settings::default());
        assert!(settings.database_url.starts_with("sqlite://data/"));
    }

    #[test]
    fn every_setting_is_read_from_its_variable() {
        let settings = Settings::from_vars(vars(&[
            (
                "ORDERLOG_DATABASE_URL",
                "postgres://postgres@127.0.0.1/orderlog",
            ),
            ("ORDERLOG_BIND", "0.0.0.0:9000"),
            ("ORDERLOG_BODY_LIMIT", "2MiB"),
            ("ORDERLOG_DB_POOL_SIZE", "32"),
            ("ORDERLOG_IDEMPOTENCY_TTL", "2h"),
            ("ORDERLOG_LOG_FORMAT", "json"),
        ]))
        .unwrap();
        assert_eq!(
            settings.database_url,
            "postgres://postgres@127.0.0.1/orderlog"
        );
        assert_eq!(settings.bind.port(), 9000);
        assert_eq!(settings.body_limit, 2 * 1024 * 1024);
        assert_eq!(settings.db_pool_size, 32);
        assert_eq!(settings.idempotency_ttl, Duration::from_secs(7200));
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn the_retry_schedule_is_a_list_of_durations() {
        let settings = Settings::from_vars(vars(&[
            ("ORDERLOG_WEBHOOK_RETRY_SCHEDULE", "5s,30s,2m"),
            ("ORDERLOG_WEBHOOK_TIMEOUT", "500ms"),
        ]))
        .unwrap();
        assert_eq!(
            settings.deliveries.retry_schedule,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120)
            ]
        );
        assert_eq!(
            settings.deliveries.webhook_timeout,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        for (name, value) in [
            ("ORDERLOG_DATABASE_URL", "mysql://x"),
            ("ORDERLOG_BIND", "localhost"),
            ("ORDERLOG_BODY_LIMIT", "lots"),
            ("ORDERLOG_DB_POOL_SIZE", "0"),
            ("ORDERLOG_IDEMPOTENCY_TTL", "forever"),
            ("ORDERLOG_LOG_FORMAT", "xml"),
            ("ORDERLOG_WEBHOOK_TIMEOUT", "0s"),
            ("ORDERLOG_WEBHOOK_RETRY_SCHEDULE", "5s,,2m"),
            ("ORDERLOG_BREAKER_FAILURES", "0"),
            ("ORDERLOG_NATS_URL", "http://x"),
            ("ORDERLOG_NATS_SUBJECT_PREFIX", "orders.>"),
        ] {
            let error = Settings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert_eq!(error.name, name);
            assert!(error.to_string().contains(name));
        }
    }

    #[test]
    fn durations_and_sizes_parse_their_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_bytes("512KiB"), Some(512 * 1024));
        assert_eq!(parse_bytes("1048576"), Some(1_048_576));
        assert_eq!(parse_bytes("1TB"), None);
    }
}
