//! The command line: `token-broker serve`, `token-broker migrate`.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::{open_vault, Application};
use crate::config::{Config, Storage};

#[derive(Debug, Parser)]
#[command(
    name = "token-broker",
    version,
    about = "Offline-token broker for long-running work"
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_FORMAT_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies pending migrations first).
    Serve {
        /// Development mode: without TOKEN_ENCRYPTION_KEYS, generate a key into the data
        /// directory (also TOKEN_BROKER_DEV=1). Never use it in production.
        #[arg(long)]
        dev: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
}

/// Runs the parsed command; the error is one line for the operator.
pub async fn run(cli: Cli) -> Result<(), String> {
    init_logging(cli.log_json);
    let dev = matches!(cli.command, Command::Serve { dev: true });
    let config = Config::from_env(dev).map_err(|e| format!("configuration error: {e}"))?;
    announce(&config);
    match cli.command {
        Command::Serve { .. } => {
            let app = Application::build(config)
                .await
                .map_err(|e| e.to_string())?;
            let addr = app.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%addr, "token-broker listening");
            app.run_until_stopped(shutdown_signal())
                .await
                .map_err(|e| format!("server error: {e}"))
        }
        Command::Migrate => {
            open_vault(&config).await.map_err(|e| e.to_string())?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

/// The first log lines say where tokens will be stored and with which key.
fn announce(config: &Config) {
    match config.storage {
        Storage::EmbeddedDefault => tracing::info!(
            path = %config.data_dir.join("token-broker.db").display(),
            "storage: embedded SQLite (DATABASE_URL not set; set it to postgres://... for production)"
        ),
        Storage::Configured => tracing::info!("storage: DATABASE_URL"),
    }
    if let Some((path, created)) = &config.dev_key {
        tracing::warn!(
            path = %path.display(),
            created,
            "DEV MODE: tokens are sealed with a development key from the data directory; \
             set TOKEN_ENCRYPTION_KEYS in production"
        );
    }
}

fn init_logging(json: bool) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Completes on Ctrl-C or SIGTERM, so in-flight requests finish before exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
