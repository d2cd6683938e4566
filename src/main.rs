//! The `orderlog` command: parse the CLI, load settings, start telemetry, run.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orderlog::app::{self, Application};
use orderlog::auth::{NewToken, Rate, Scope, Scopes, TokenName, Tokens};
use orderlog::config::{ConfigError, Settings};
use orderlog::delivery::subscription::EventFilter;
use orderlog::domain::customer::Erase;
use orderlog::domain::values::{CustomerId, Text};
use orderlog::meter::Meter;
use orderlog::process::erasure::Erasures;
use orderlog::projections::runner::{Projections, Status};
use orderlog::store::commands::AggregateStore;
use orderlog::store::export::{self, Format, Shape};
use orderlog::store::key_source::{self, Source};
use orderlog::store::metadata::CommandMetadata;
use orderlog::store::reader::{Cursor, LogSignal};
use orderlog::store::sealed::{self, SecretKey};
use orderlog::store::vault::Vault;
use orderlog::store::writer::EventWriter;
use orderlog::store::Database;
use orderlog::telemetry;
use orderlog::trace::{TraceSettings, Tracing};
use tokio_util::sync::CancellationToken;

/// An event-sourced order engine. Every setting is an ORDERLOG_* environment variable
/// or the matching flag of a subcommand (`orderlog serve --help` lists them all); the
/// default database is an embedded SQLite file under ./data/.
#[derive(Parser)]
#[command(name = "orderlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(Settings),
    /// Apply the schema migrations to the configured database, then exit.
    Migrate(Settings),
    /// Inspect and rebuild the projections (read models).
    Projections {
        #[command(subcommand)]
        action: ProjectionsCommand,
    },
    /// The key that seals the webhook signing secrets stored in the database.
    Secrets {
        #[command(subcommand)]
        action: SecretsCommand,
    },
    /// Create, list and revoke API tokens, in the configured database.
    Tokens {
        #[command(subcommand)]
        action: TokensCommand,
    },
    /// Export the log as JSON lines or Parquet, in the schema the README documents
    /// ("Exporting the log"). Ends by printing the cursor to resume from on stderr
    /// (`resume with --after …`); the JSON lines end with it too, and a Parquet file
    /// keeps it in its footer (`orderlog.cursor`).
    Export {
        #[command(flatten)]
        args: ExportArgs,
        #[command(flatten)]
        settings: Settings,
    },
    /// Customers' personal data: erase it (crypto-shredding), or show an erasure.
    Privacy {
        #[command(subcommand)]
        action: PrivacyCommand,
    },
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// Destroy a customer's data keys and append `customer.erased`; prints the receipt
    /// as JSON. The same as `POST /v1/customers/{id}/erase`.
    Erase {
        customer_id: String,
        /// Why, for the record ("GDPR request #4411"): never personal data.
        #[arg(long)]
        reason: Option<String>,
        /// Who asks: recorded as `requested_by`.
        #[arg(long, default_value = "cli")]
        actor: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show a customer's erasure state as JSON.
    Erasure {
        customer_id: String,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(clap::Args)]
struct ExportArgs {
    /// `jsonl` (also `ndjson`) or `parquet`.
    #[arg(long, value_parser = export_format)]
    format: Format,
    /// `events`: one row per event; `sequences`: one row per order, its events'
    /// types, times and amounts in order.
    #[arg(long, value_parser = export_shape, default_value = "events")]
    shape: Shape,
    /// The file to write (replaced only once the export is whole); stdout without it.
    #[arg(long, value_name = "FILE")]
    out: Option<std::path::PathBuf>,
    /// Continue after this cursor: the one a previous export ended with.
    #[arg(long, value_name = "CURSOR", value_parser = export_cursor)]
    after: Option<Cursor>,
    /// Only events recorded at or after this time (RFC 3339, or a day: 2026-12-01).
    #[arg(long, value_name = "TIME", value_parser = export::parse_time)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events recorded before this time (RFC 3339, or a day).
    #[arg(long, value_name = "TIME", value_parser = export::parse_time)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these event types: comma-separated names and families (`order.*,inventory.*`).
    #[arg(long, value_name = "PATTERNS", value_parser = export_types)]
    types: Option<EventFilter>,
    /// Leave personal data (the shipping address of `order.created`) in the payloads.
    #[arg(long)]
    include_personal_data: bool,
}

fn export_format(raw: &str) -> Result<Format, String> {
    Format::parse(raw).ok_or_else(|| format!("`{raw}` is not a format: use `jsonl` or `parquet`"))
}

fn export_shape(raw: &str) -> Result<Shape, String> {
    Shape::parse(raw).ok_or_else(|| format!("`{raw}` is not a shape: use `events` or `sequences`"))
}

fn export_cursor(raw: &str) -> Result<Cursor, String> {
    Cursor::parse_token(raw).ok_or_else(|| {
        format!("`{raw}` is not a cursor: use the one an export ended with, such as 812-40001")
    })
}

fn export_types(raw: &str) -> Result<EventFilter, String> {
    EventFilter::parse(raw.split(',').map(|t| t.trim().to_owned()).collect())
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token. It is printed once, alone on the last line of stdout; only its
    /// hash is kept.
    Create {
        /// Its name: the actor recorded on every event its requests append.
        #[arg(long, value_parser = TokenName::parse)]
        name: TokenName,
        /// Comma-separated: orders:read, orders:write, inventory:read, inventory:write,
        /// views:read, events:read, subscriptions:manage, sources:manage,
        /// projections:manage, tokens:manage, metrics:read, privacy:erase, privacy:read,
        /// admin.
        #[arg(long, value_parser = scope_list)]
        scopes: Scopes,
        /// Expires this long from now (`90d`, `12h`); never, without it.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// At most this many requests (`200/s`, `1000/min`, `50000/h`), per server.
        #[arg(long, value_parser = Rate::parse)]
        rate: Option<Rate>,
        #[command(flatten)]
        settings: Settings,
    },
    /// List every token: names, scopes and last use, never a token.
    List(Settings),
    /// Revoke a token: it stops working at once on this database's servers (within
    /// seconds on those that had it cached). Its name is never reused.
    Revoke {
        #[arg(value_parser = TokenName::parse)]
        name: TokenName,
        #[command(flatten)]
        settings: Settings,
    },
}

fn scope_list(raw: &str) -> Result<Scopes, String> {
    Scopes::parse_list(raw.split(','))
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new key (32 random bytes in base64) for ORDERLOG_SECRET_KEY.
    GenerateKey,
    /// Seal every stored secret again under a new key, one row at a time (safe while
    /// servers run). Interrupted, running it again finishes the job. With the key file,
    /// the new key waits in `secret.key.next` and replaces `secret.key` at the end.
    RotateKey {
        /// The new key, with ORDERLOG_SECRET_KEY (in base64). Without it, one is made
        /// and printed alone on stdout before any secret is sealed with it.
        #[arg(long, value_name = "BASE64")]
        new_key: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Show every projection's state, checkpoint and lag.
    List(Settings),
    /// Rebuild projections from the log into fresh tables, then switch to them.
    /// The current tables keep answering queries until the switch.
    Rebuild {
        /// The projection to rebuild.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        settings: Settings,
    },
}

/// The command, with its settings read and checked. A bad setting is reported by its
/// variable and exits with clap's usage code; help, versions and unknown flags are
/// clap's to print.
fn parse_cli() -> Command {
    let refuse = |bad: ConfigError| -> ! {
        eprintln!("error: {bad}");
        std::process::exit(2);
    };
    let cli = Cli::try_parse().unwrap_or_else(|error| match ConfigError::from_clap(&error) {
        Some(bad) => refuse(bad),
        None => error.exit(),
    });
    match cli.command {
        Some(command) => command,
        None => Command::Serve(Settings::from_env().unwrap_or_else(|bad| refuse(bad))),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = parse_cli();
    let settings =
        match &command {
            Command::Serve(settings) | Command::Migrate(settings) => settings,
            Command::Projections { action } => match action {
                ProjectionsCommand::List(settings)
                | ProjectionsCommand::Rebuild { settings, .. } => settings,
            },
            Command::Secrets { action } => match action {
                SecretsCommand::GenerateKey => {
                    // The one line a script reads: nothing else on stdout.
                    println!("{}", SecretKey::generate().to_base64());
                    return Ok(());
                }
                SecretsCommand::RotateKey { settings, .. } => settings,
            },
            Command::Tokens { action } => match action {
                TokensCommand::Create { settings, .. }
                | TokensCommand::List(settings)
                | TokensCommand::Revoke { settings, .. } => settings,
            },
            Command::Export { settings, .. } => settings,
            Command::Privacy { action } => match action {
                PrivacyCommand::Erase { settings, .. }
                | PrivacyCommand::Erasure { settings, .. } => settings,
            },
        };
    // Only a server exports spans; the variables are checked before anything starts.
    let traces = match &command {
        Command::Serve(_) => TraceSettings::from_env().unwrap_or_else(|bad| {
            eprintln!("error: {bad}");
            std::process::exit(2);
        }),
        _ => None,
    };
    let tracing = traces
        .as_ref()
        .map(Tracing::start)
        .transpose()
        .context("starting traces")?;
    telemetry::init(settings.log_format, tracing.as_ref());
    if let Some(traces) = &traces {
        tracing::info!(
            endpoint = %traces.endpoint,
            service = %traces.service_name,
            "exporting traces over OTLP/HTTP"
        );
    }
    match command {
        Command::Serve(settings) => {
            let application = Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                trigger.cancel();
            });
            let served = application.run(shutdown).await;
            // The spans of the last requests leave before the process does.
            if let Some(tracing) = tracing {
                tracing.shutdown().await;
            }
            served
        }
        Command::Migrate(settings) => {
            let db = connect(&settings).await?;
            tracing::info!(database = db.backend_name(), "schema is up to date");
            db.close().await;
            Ok(())
        }
        Command::Projections { action } => {
            let (settings, names) = match action {
                ProjectionsCommand::List(settings) => (settings, None),
                ProjectionsCommand::Rebuild {
                    name,
                    all,
                    settings,
                } => (settings, Some((name, all))),
            };
            let db = connect(&settings).await?;
            let projections = Projections::new(
                db.clone(),
                app::all_projections(&settings),
                LogSignal::default(),
                None,
            );
            projections
                .init()
                .await
                .context("registering the projections")?;
            if let Some((name, all)) = names {
                let names: Vec<String> = match (name, all) {
                    (_, true) => projections.names().into_iter().map(str::to_owned).collect(),
                    (Some(name), false) => vec![name],
                    (None, false) => Vec::new(),
                };
                for name in &names {
                    projections
                        .rebuild(name)
                        .await
                        .with_context(|| format!("starting the rebuild of {name}"))?;
                }
                for name in &names {
                    let started = std::time::Instant::now();
                    projections
                        .finish_rebuild(name)
                        .await
                        .with_context(|| format!("rebuilding {name}"))?;
                    println!("rebuilt {name} in {:.2}s", started.elapsed().as_secs_f64());
                }
            }
            print_status(&projections.status().await?);
            db.close().await;
            Ok(())
        }
        Command::Secrets { action } => match action {
            SecretsCommand::GenerateKey => Ok(()),
            SecretsCommand::RotateKey { new_key, settings } => rotate_key(new_key, settings).await,
        },
        Command::Tokens { action } => tokens(action).await,
        Command::Export { args, settings } => export_log(args, settings).await,
        Command::Privacy { action } => privacy(action).await,
    }
}

/// `orderlog privacy`: through the same code as the API (`process::erasure`), with
/// this process's own writer of the log.
async fn privacy(action: PrivacyCommand) -> anyhow::Result<()> {
    let (settings, customer_id, erase) = match action {
        PrivacyCommand::Erase {
            customer_id,
            reason,
            actor,
            settings,
        } => (settings, customer_id, Some((reason, actor))),
        PrivacyCommand::Erasure {
            customer_id,
            settings,
        } => (settings, customer_id, None),
    };
    let customer_id =
        CustomerId::parse(&customer_id).map_err(|e| anyhow::anyhow!("the customer id {e}"))?;
    let db = connect(&settings).await?;
    let keys = app::secret_keys(&settings, &db).await?;
    let writer = EventWriter::start(&db, LogSignal::default(), Meter::default());
    let customers = Arc::new(AggregateStore::new(&db, (), writer));
    let vault = Vault::new(db.clone(), keys);
    let erasures = Erasures {
        db: &db,
        customers: &customers,
        vault: &vault,
    };
    let receipt = match erase {
        Some((reason, actor)) => {
            let text = |raw: &str, what: &str| {
                Text::parse(raw).map_err(|e| anyhow::anyhow!("the {what} {e}"))
            };
            let command = Erase {
                customer_id,
                requested_by: text(&actor, "actor")?,
                on_behalf_of: None,
                reason: reason.as_deref().map(|r| text(r, "reason")).transpose()?,
                at: chrono::Utc::now(),
            };
            let id = uuid::Uuid::now_v7().to_string();
            let metadata = CommandMetadata::system(&actor, &id, &id);
            erasures.erase(command, &metadata).await
        }
        None => erasures.state(customer_id).await,
    };
    db.close().await;
    println!("{}", serde_json::to_string_pretty(&receipt?)?);
    Ok(())
}

/// `orderlog export`: the log into a file or onto stdout. A file is written beside its
/// name and renamed into place once whole, so a cut-short export never looks done.
async fn export_log(args: ExportArgs, settings: Settings) -> anyhow::Result<()> {
    let mut options = export::Options::new(args.format);
    options.shape = args.shape;
    options.after = args.after.unwrap_or(Cursor::START);
    options.since = args.since;
    options.until = args.until;
    options.include_personal_data = args.include_personal_data;
    if let Some(filter) = args.types {
        options.types = Some(std::sync::Arc::new(move |t: &str| filter.matches(t)));
    }
    let db = connect(&settings).await?;
    let partial = args.out.as_ref().map(|out| {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        out.with_file_name(name)
    });
    let sink: Box<dyn std::io::Write + Send> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )),
    };
    // The server's keys open the data keys: only read, and only when they are needed.
    let vault = match options.include_personal_data {
        true => Some(Vault::new(
            db.clone(),
            Arc::new(key_source::load(&settings.key_settings()).context("loading the secret key")?),
        )),
        false => None,
    };
    let exported = export::run(&db, vault.as_ref(), options, sink).await;
    db.close().await;
    let summary = match exported {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(path) = &partial {
                let _ = std::fs::remove_file(path);
            }
            return Err(e).context("exporting the log");
        }
    };
    if let (Some(partial), Some(out)) = (&partial, &args.out) {
        std::fs::rename(partial, out)
            .with_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    }
    eprintln!(
        "exported {} events in {} rows ({} read); resume with --after {}",
        summary.events,
        summary.rows,
        summary.read,
        summary.cursor.token()
    );
    Ok(())
}

/// `orderlog secrets rotate-key`: every sealed secret under a new key. The keys that
/// open are the ones a server of these settings holds.
async fn rotate_key(new_key: Option<String>, settings: Settings) -> anyhow::Result<()> {
    let key_settings = settings.key_settings();
    let current = key_source::load(&key_settings).context("loading the current secret key")?;
    let (keys, file) = match key_source::source(&key_settings)? {
        Source::Ephemeral => anyhow::bail!("the database is in memory: there is nothing to rotate"),
        Source::File(path) => {
            if new_key.is_some() {
                anyhow::bail!(
                    "--new-key is for a key given as ORDERLOG_SECRET_KEY; with the key file {} \
                     the new key is made in {}",
                    path.display(),
                    key_source::next_file(&path).display()
                );
            }
            let new = key_source::begin_rotation(&path).context("making the new key")?;
            (current.rotated_to(new), Some(path))
        }
        Source::Setting => {
            let new = match new_key {
                Some(raw) => SecretKey::parse(&raw)
                    .map_err(|reason| anyhow::anyhow!("--new-key {reason}"))?,
                None => {
                    let new = SecretKey::generate();
                    // Printed before any secret is sealed with it: an interrupted run
                    // still leaves the operator the key its rows need.
                    println!("{}", new.to_base64());
                    std::io::Write::flush(&mut std::io::stdout())?;
                    new
                }
            };
            (current.rotated_to(new), None)
        }
    };
    let db = connect(&settings).await?;
    let done = sealed::reseal(&db, &keys, &app::sealed_columns())
        .await
        .context("sealing the stored secrets under the new key")?;
    db.close().await;
    for (place, error) in &done.failed {
        eprintln!("error: {place}: {error}");
    }
    if !done.failed.is_empty() {
        anyhow::bail!(
            "{} stored secrets did not open and stay as they are; the others are under key {}{}",
            done.failed.len(),
            keys.sealing_id(),
            match &file {
                Some(path) => format!(
                    ", and {} stays until every secret is (run this again once fixed)",
                    key_source::next_file(path).display()
                ),
                None => String::new(),
            }
        );
    }
    if let Some(path) = &file {
        key_source::finish_rotation(path).context("replacing the key file with the new key")?;
    }
    tracing::info!(
        resealed = done.resealed,
        sealed_plain = done.sealed_plain,
        already = done.current,
        key_id = %keys.sealing_id(),
        "every stored secret is sealed under the new key"
    );
    Ok(())
}

/// The CLI acts with every scope: whoever can reach the database owns the server.
async fn tokens(action: TokensCommand) -> anyhow::Result<()> {
    let admin = Scopes::of([Scope::Admin]);
    match action {
        TokensCommand::Create {
            name,
            scopes,
            expires,
            rate,
            settings,
        } => {
            let db = connect(&settings).await?;
            let new = NewToken {
                name,
                scopes,
                expires_in: expires,
                rate,
            };
            let (record, token) = Tokens::new(db.clone())
                .create(new, admin)
                .await
                .context("creating the token")?;
            println!(
                "created token {} with scopes {}{}; it is shown once, on the next line:",
                record.name,
                record.scopes,
                record
                    .expires_at
                    .map(|at| format!(", expiring {}", at.to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{}", token.as_str());
            db.close().await;
        }
        TokensCommand::List(settings) => {
            let db = connect(&settings).await?;
            let records = Tokens::new(db.clone()).list().await?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| {
                    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
                })
            };
            println!(
                "{:<24} {:<21} {:<21} {:<21} {:<10} scopes",
                "name", "last used", "expires", "revoked", "rate"
            );
            for r in records {
                println!(
                    "{:<24} {:<21} {:<21} {:<21} {:<10} {}",
                    r.name,
                    time(r.last_used_at),
                    time(r.expires_at),
                    time(r.revoked_at),
                    r.rate.map_or("-".to_owned(), |r| r.to_string()),
                    r.scopes
                );
            }
            db.close().await;
        }
        TokensCommand::Revoke { name, settings } => {
            let db = connect(&settings).await?;
            let record = Tokens::new(db.clone())
                .revoke(&name, admin)
                .await
                .with_context(|| format!("revoking {name}"))?;
            println!(
                "revoked token {} at {}",
                record.name,
                record
                    .revoked_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            );
            db.close().await;
        }
    }
    Ok(())
}

async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    let db = Database::connect(&settings.database_url, 2)
        .await
        .with_context(|| format!("connecting to {}", app::redact(&settings.database_url)))?;
    db.migrate()
        .await
        .context("applying the schema migrations")?;
    Ok(db)
}

/// The CLI's one table of output: for people, so plain text on stdout.
fn print_status(statuses: &[Status]) {
    println!(
        "{:<14} {:>7} {:>10} {:<11} {:>12} {:>10} {:>9}  last error",
        "projection", "version", "generation", "state", "checkpoint", "lag", "lag (s)"
    );
    for s in statuses {
        println!(
            "{:<14} {:>7} {:>10} {:<11} {:>12} {:>10} {:>9.3}  {}",
            s.name,
            s.version,
            s.generation,
            s.state,
            s.checkpoint.position,
            s.lag_events,
            s.lag_seconds,
            s.last_error.as_deref().unwrap_or("-")
        );
    }
}
