//! The `orderlog` command: parse the CLI, load settings, start telemetry, run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use orderlog::app::{self, Application};
use orderlog::config::{ConfigError, Settings};
use orderlog::projections::runner::{Projections, Status};
use orderlog::store::reader::LogSignal;
use orderlog::store::Database;
use orderlog::telemetry;
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
    let settings = match &command {
        Command::Serve(settings) | Command::Migrate(settings) => settings,
        Command::Projections { action } => match action {
            ProjectionsCommand::List(settings) | ProjectionsCommand::Rebuild { settings, .. } => {
                settings
            }
        },
    };
    telemetry::init(settings.log_format);
    match command {
        Command::Serve(settings) => {
            let application = Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                trigger.cancel();
            });
            application.run(shutdown).await
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
    }
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
