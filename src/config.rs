//! One typed `Settings`, read by clap from `ORDERLOG_*` environment variables (or the
//! matching `--flags` of `orderlog serve`) and validated at start. Every default is an
//! attribute below, with the reason for it; the deliveries' own settings live beside
//! the deliveries (`delivery::settings`). A bad value stops the process with an error
//! that names the variable. `orderlog serve --help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

use crate::auth::Token;
use crate::delivery::settings::nonzero_duration;
pub use crate::delivery::settings::DeliverySettings;
use crate::store::key_source::KeySettings;
use crate::store::sealed::{KeyParseError, SecretKey};

#[derive(Debug, Clone, PartialEq, Args)]
pub struct Settings {
    /// `postgres://…` for PostgreSQL, `sqlite://…` for an SQLite file.
    // An embedded file, created on first start: the server runs with no setup.
    #[arg(
        long,
        env = "ORDERLOG_DATABASE_URL",
        default_value = "sqlite://data/orderlog.db",
        value_parser = database_url
    )]
    pub database_url: String,

    /// The key that seals webhook signing secrets at rest: 32 random bytes in base64
    /// (`orderlog secrets generate-key`). Required on PostgreSQL (or
    /// ORDERLOG_SECRET_KEY_FILE); unset on SQLite, a key file beside the database is
    /// made on first start.
    // No default: a key written here would be every installation's key. Its value is
    // never shown by `--help`, nor in an error.
    #[arg(
        long,
        env = "ORDERLOG_SECRET_KEY",
        hide_env_values = true,
        value_parser = secret_key,
        conflicts_with = "secret_key_file"
    )]
    pub secret_key: Option<SecretKey>,

    /// A key that only opens secrets, never seals: the previous ORDERLOG_SECRET_KEY,
    /// while servers roll over to a new one.
    #[arg(
        long,
        env = "ORDERLOG_SECRET_KEY_PREVIOUS",
        hide_env_values = true,
        value_parser = secret_key
    )]
    pub secret_key_previous: Option<SecretKey>,

    /// A file holding the key (base64), in place of ORDERLOG_SECRET_KEY; on SQLite it is
    /// made (mode 0600) when missing. Unset on SQLite: `secret.key` beside the database.
    #[arg(long, env = "ORDERLOG_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Address and port to serve on.
    // Loopback only until someone decides to expose it.
    #[arg(long, env = "ORDERLOG_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Largest request body accepted (`1048576`, `512KiB`, `1MiB`), in bytes once parsed.
    // Orders are small; 1 MiB leaves room for hundreds of lines.
    #[arg(
        long,
        env = "ORDERLOG_BODY_LIMIT",
        default_value = "1MiB",
        value_parser = body_limit
    )]
    pub body_limit: usize,

    /// Database connections.
    // Enough connections to keep 2 cores busy without starving PostgreSQL.
    #[arg(
        long,
        env = "ORDERLOG_DB_POOL_SIZE",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub db_pool_size: u32,

    /// How long a command may wait for its turn (its aggregate, the database) before it
    /// is refused with 503 `saturated` and `Retry-After`, nothing written.
    // A storefront's checkout and Shopify's 5 s webhook timeout both prefer a quick
    // "come back" to an answer that arrives too late; 250 ms is several batches' worth
    // of queueing at full load on this kind of machine (BENCHMARKS.md, overload).
    #[arg(
        long,
        env = "ORDERLOG_COMMAND_DEADLINE",
        default_value = "250ms",
        value_parser = nonzero_duration
    )]
    pub command_deadline: Duration,

    /// Most commands (POST, PATCH, DELETE) running at once; the rest wait for a turn,
    /// newest first, until ORDERLOG_COMMAND_DEADLINE.
    // Enough inside for the group commits to fill: with 64, 1,024 clients got 14–28%
    // fewer orders/s on PostgreSQL than 64 clients did in four runs of five (the refused
    // sleep out their Retry-After and leave turns empty); with 96, −8.9% to +22% on both
    // backends over four runs, the admitted p99 at most 141 ms; 112 put SQLite's at
    // 154 ms (BENCHMARKS.md, overload, thirteenth session).
    #[arg(
        long,
        env = "ORDERLOG_MAX_CONCURRENT_COMMANDS",
        default_value_t = 96,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub max_concurrent_commands: u32,

    /// How long an Idempotency-Key and its response are kept.
    // The window in which clients retry (Stripe keeps keys for 24 h too).
    #[arg(
        long,
        env = "ORDERLOG_IDEMPOTENCY_TTL",
        default_value = "24h",
        value_parser = nonzero_duration
    )]
    pub idempotency_ttl: Duration,

    /// Log lines as `text` or `json`.
    #[arg(long, env = "ORDERLOG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// `true` refuses orders for SKUs whose stock was never received or adjusted
    /// (422 `unknown_sku`); by default they are accepted without a reservation.
    // Like Shopify's "don't track inventory": digital goods need no stock.
    #[arg(
        long,
        env = "ORDERLOG_REQUIRE_TRACKED_SKUS",
        default_value = "false",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub require_tracked_skus: bool,

    /// `false` stops the in-memory aggregation behind the operations dashboard
    /// (`/ops`, `GET /v1/ops/stats`); the Prometheus series at `/metrics` are kept.
    // On by default: its cost on the command path is below what this machine can
    // measure (BENCHMARKS.md, "live meter"); off is for measuring that.
    #[arg(
        long,
        env = "ORDERLOG_LIVE_STATS",
        default_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub live_stats: bool,

    /// After a payment fails, how long the order keeps its stock for a new attempt.
    // Long enough to try another card, short enough not to starve a flash sale.
    #[arg(
        long,
        env = "ORDERLOG_PAYMENT_GRACE",
        default_value = "15m",
        value_parser = humantime::parse_duration
    )]
    pub payment_grace: Duration,

    /// How long an order may stay unpaid before it expires (`order.expired`) and its
    /// stock is released.
    #[arg(
        long,
        env = "ORDERLOG_UNPAID_ORDER_TTL",
        default_value = "1h",
        value_parser = nonzero_duration
    )]
    pub unpaid_order_ttl: Duration,

    /// How long stock reserved for an order that never appeared (a crash
    /// mid-placement) stays held before it is released.
    // Placement takes milliseconds; this only has to outlast a slow one.
    #[arg(
        long,
        env = "ORDERLOG_ORPHAN_HOLD_TIMEOUT",
        default_value = "60s",
        value_parser = nonzero_duration
    )]
    pub orphan_hold_timeout: Duration,

    /// An exact `olk_…` token to provision as the `bootstrap` admin token when the
    /// database holds no token yet, instead of generating one.
    // For deployments and tests that must know the first token in advance.
    #[arg(long, env = "ORDERLOG_BOOTSTRAP_TOKEN", hide_env_values = true, value_parser = bootstrap_token)]
    pub bootstrap_token: Option<Token>,

    /// Where the generated bootstrap token is written (mode 0600) on first start; by
    /// default `admin.token` beside the SQLite database, or `data/admin.token`.
    #[arg(long, env = "ORDERLOG_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub deliveries: DeliverySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A setting that could not be read: the variable, the value given, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The settings alone, as a command line of their own: for reading the environment
/// when no subcommand is given, and for the defaults.
#[derive(Parser)]
#[command(name = "orderlog")]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// The directory beside the SQLite database file, where the files the server makes
    /// for itself go; `data` (relative to the working directory) on PostgreSQL.
    pub fn data_dir(&self) -> PathBuf {
        if self.database_url.starts_with("sqlite:") {
            crate::store::files::sqlite_dir(&self.database_url)
                .unwrap_or_else(|_| PathBuf::from("."))
        } else {
            PathBuf::from("data")
        }
    }

    /// Where a generated bootstrap token is written.
    pub fn bootstrap_token_path(&self) -> PathBuf {
        self.bootstrap_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("admin.token"))
    }

    /// The settings that say where the secret keys come from.
    pub fn key_settings(&self) -> KeySettings<'_> {
        KeySettings {
            key: self.secret_key.as_ref(),
            previous: self.secret_key_previous.as_ref(),
            file: self.secret_key_file.as_deref(),
            database_url: &self.database_url,
        }
    }

    /// Settings from the process environment alone.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_args(["orderlog"])
    }

    /// Settings from command-line flags (the first item is the program's name), and the
    /// environment for the rest.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        SettingsOnly::try_parse_from(args)
            .map(|only| only.settings)
            .map_err(|e| {
                ConfigError::from_clap(&e).unwrap_or_else(|| ConfigError {
                    name: "settings".to_owned(),
                    value: String::new(),
                    reason: e.to_string(),
                })
            })
    }
}

/// The defaults as written in the attributes above, whatever the environment says.
impl Default for Settings {
    fn default() -> Self {
        let command = SettingsOnly::command().mut_args(|arg| arg.env(None));
        let parsed = command
            .try_get_matches_from(["orderlog"])
            .and_then(|matches| SettingsOnly::from_arg_matches(&matches));
        // Only the literals above are parsed here; a unit test parses them too.
        parsed.expect("the default settings parse").settings
    }
}

impl ConfigError {
    /// The setting behind a clap error about one value, named by its variable; `None`
    /// for every other error (a help request, an unknown flag), which clap reports best.
    pub fn from_clap(error: &clap::Error) -> Option<ConfigError> {
        let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
            return None;
        };
        let long = arg.split_whitespace().next()?.strip_prefix("--")?;
        let command = SettingsOnly::command();
        let setting = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))?;
        let name = setting.get_env()?.to_string_lossy().into_owned();
        let value = match error.get(ContextKind::InvalidValue) {
            // A key, even a mistyped one, is never repeated.
            Some(ContextValue::String(_)) if setting.is_hide_env_values_set() => {
                "(hidden)".to_owned()
            }
            Some(ContextValue::String(value)) => value.clone(),
            _ => String::new(),
        };
        let reason = match (
            std::error::Error::source(error),
            error.get(ContextKind::ValidValue),
        ) {
            (Some(cause), _) => cause.to_string(),
            (None, Some(ContextValue::Strings(valid))) => {
                format!("must be one of {}", valid.join(", "))
            }
            _ => error.kind().to_string(),
        };
        Some(ConfigError {
            name,
            value,
            reason,
        })
    }
}

fn database_url(raw: &str) -> Result<String, String> {
    let known = ["postgres://", "postgresql://", "sqlite:"];
    if known.iter().any(|p| raw.starts_with(p)) {
        Ok(raw.to_owned())
    } else {
        Err("must start with postgres://, postgresql:// or sqlite:".to_owned())
    }
}

fn bootstrap_token(raw: &str) -> Result<Token, String> {
    Token::parse(raw)
}

fn secret_key(raw: &str) -> Result<SecretKey, KeyParseError> {
    SecretKey::parse(raw)
}

/// `1048576`, `512KiB`, `1MiB` (binary units; `KB` and `MB` are decimal), at least 1KiB.
fn body_limit(raw: &str) -> Result<usize, String> {
    let reason = "must be a size of at least 1KiB, such as 1048576, 512KiB or 1MiB";
    let bytes = raw.parse::<bytesize::ByteSize>().map_err(|_| reason)?;
    match usize::try_from(bytes.as_u64()) {
        Ok(n) if n >= 1024 => Ok(n),
        _ => Err(reason.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Settings, ConfigError> {
        Settings::from_args(std::iter::once("orderlog").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_need_no_environment_at_all() {
        let settings = Settings::default();
        assert!(settings.database_url.starts_with("sqlite://data/"));
        assert_eq!(settings.bind, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(settings.body_limit, 1024 * 1024);
        assert_eq!(settings.idempotency_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(settings.orphan_hold_timeout, Duration::from_secs(60));
        assert_eq!(
            settings.deliveries.retry_schedule,
            [5, 30, 120, 600, 1800, 7200, 21600].map(Duration::from_secs)
        );
        assert_eq!(settings.deliveries.nats_subject_prefix, "orderlog");
    }

    #[test]
    fn every_setting_is_read_from_its_flag() {
        let settings = flags(&[
            "--database-url=postgres://postgres@127.0.0.1/orderlog",
            "--bind=0.0.0.0:9000",
            "--body-limit=2MiB",
            "--db-pool-size=32",
            "--idempotency-ttl=2h",
            "--log-format=json",
            "--require-tracked-skus=true",
            "--payment-grace=0s",
            "--unpaid-order-ttl=2d",
            "--orphan-hold-timeout=5m",
            "--breaker-failures=3",
            "--breaker-cooldown=500ms",
            "--delivery-attempt-retention=12h",
            "--nats-url=tls://nats.internal:4222",
            "--nats-subject-prefix=shop-1.events",
        ])
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
        assert!(settings.require_tracked_skus);
        assert_eq!(settings.payment_grace, Duration::ZERO);
        assert_eq!(settings.unpaid_order_ttl, Duration::from_secs(2 * 86_400));
        assert_eq!(settings.orphan_hold_timeout, Duration::from_secs(300));
        let d = &settings.deliveries;
        assert_eq!(d.breaker_failures, 3);
        assert_eq!(d.breaker_cooldown, Duration::from_millis(500));
        assert_eq!(d.attempt_retention, Duration::from_secs(12 * 3600));
        assert_eq!(d.nats_url, "tls://nats.internal:4222");
        assert_eq!(d.nats_subject_prefix, "shop-1.events");
    }

    #[test]
    fn the_retry_schedule_is_a_list_of_durations() {
        let settings = flags(&[
            "--webhook-retry-schedule=5s,30s,2m",
            "--webhook-timeout=500ms",
        ])
        .unwrap();
        assert_eq!(
            settings.deliveries.retry_schedule,
            [5, 30, 120].map(Duration::from_secs)
        );
        assert_eq!(
            settings.deliveries.webhook_timeout,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (flag, name, value) in [
            ("--database-url", "ORDERLOG_DATABASE_URL", "mysql://x"),
            ("--bind", "ORDERLOG_BIND", "localhost"),
            ("--body-limit", "ORDERLOG_BODY_LIMIT", "lots"),
            ("--body-limit", "ORDERLOG_BODY_LIMIT", "512"),
            ("--db-pool-size", "ORDERLOG_DB_POOL_SIZE", "0"),
            ("--idempotency-ttl", "ORDERLOG_IDEMPOTENCY_TTL", "forever"),
            ("--idempotency-ttl", "ORDERLOG_IDEMPOTENCY_TTL", "10"),
            ("--log-format", "ORDERLOG_LOG_FORMAT", "xml"),
            (
                "--require-tracked-skus",
                "ORDERLOG_REQUIRE_TRACKED_SKUS",
                "maybe",
            ),
            ("--unpaid-order-ttl", "ORDERLOG_UNPAID_ORDER_TTL", "0s"),
            ("--webhook-timeout", "ORDERLOG_WEBHOOK_TIMEOUT", "0s"),
            (
                "--webhook-retry-schedule",
                "ORDERLOG_WEBHOOK_RETRY_SCHEDULE",
                "5s,,2m",
            ),
            ("--breaker-failures", "ORDERLOG_BREAKER_FAILURES", "0"),
            ("--nats-url", "ORDERLOG_NATS_URL", "http://x"),
            (
                "--nats-subject-prefix",
                "ORDERLOG_NATS_SUBJECT_PREFIX",
                "orders.>",
            ),
        ] {
            let error = flags(&[&format!("{flag}={value}")]).unwrap_err();
            assert_eq!(error.name, name, "{flag}={value}: {error}");
            assert_eq!(error.value, value, "{flag}={value}: {error}");
            assert!(error.to_string().contains(name));
            assert!(!error.reason.is_empty());
        }
    }

    #[test]
    fn a_bad_key_names_its_variable_and_never_repeats_the_value() {
        let error = flags(&["--secret-key=c2hvcnQ="]).unwrap_err();
        assert_eq!(error.name, "ORDERLOG_SECRET_KEY", "{error}");
        assert_eq!(error.value, "(hidden)");
        assert!(!error.to_string().contains("c2hvcnQ="), "{error}");
        assert!(error.reason.contains("exactly 32 bytes"), "{error}");
        let key = SecretKey::generate();
        let settings = flags(&[&format!("--secret-key={}", key.to_base64())]).unwrap();
        assert_eq!(settings.secret_key, Some(key));
        assert_eq!(Settings::default().secret_key, None);
    }

    #[test]
    fn a_retry_schedule_has_at_most_thirty_delays() {
        let thirty_one = vec!["1s"; 31].join(",");
        let error = flags(&[&format!("--webhook-retry-schedule={thirty_one}")]).unwrap_err();
        assert_eq!(error.name, "ORDERLOG_WEBHOOK_RETRY_SCHEDULE", "{error}");
        assert!(flags(&[&format!(
            "--webhook-retry-schedule={}",
            vec!["1s"; 30].join(",")
        )])
        .is_ok());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(body_limit("512KiB"), Ok(512 * 1024));
        assert_eq!(body_limit("1048576"), Ok(1_048_576));
        assert_eq!(body_limit("1 MiB"), Ok(1_048_576));
        assert!(body_limit("1023").is_err());
    }
}
