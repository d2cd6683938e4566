//! The `orderlog` command: parse the CLI, load settings, start telemetry, run.

use anyhow::Context;
use clap::{Parser, Subcommand};
use orderlog::app::{self, Application};
use orderlog::config::Settings;
use orderlog::store::Database;
use orderlog::telemetry;
use tokio_util::sync::CancellationToken;

/// An event-sourced order engine. Settings come from ORDERLOG_* environment variables
/// (see the README); the default database is an embedded SQLite file under ./data/.
#[derive(Parser)]
#[command(name = "orderlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply the schema migrations to the configured database, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env().context("reading the configuration")?;
    telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let application = Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                trigger.cancel();
            });
            application.run(shutdown).await
        }
        Command::Migrate => {
            let db = Database::connect(&settings.database_url, 1)
                .await
                .with_context(|| {
                    format!("connecting to {}", app::redact(&settings.database_url))
                })?;
            db.migrate()
                .await
                .context("applying the schema migrations")?;
            tracing::info!(database = db.backend_name(), "schema is up to date");
            db.close().await;
            Ok(())
        }
    }
}
