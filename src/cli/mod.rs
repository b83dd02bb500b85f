//! The command line: `serve`, `migrate`, and the operator commands.

mod admin;
mod serve;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::config::Config;

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
    /// Expire stale rows and delete finished ones past retention, once (for cron).
    Cleanup,
    /// Encryption keys: generate one, or re-seal every token under the first key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print audit records (JSON lines) for a token or a user.
    Audit {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        token: Option<Uuid>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new key entry for TOKEN_ENCRYPTION_KEYS.
    Generate {
        /// Key id; defaults to the current year and month.
        #[arg(long)]
        id: Option<String>,
    },
    /// Re-seal every stored token under the first key of TOKEN_ENCRYPTION_KEYS (online,
    /// resumable). Afterwards older keys can be removed.
    Rotate {
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
}

/// Runs the parsed command; the error is one line for the operator.
pub async fn run(cli: Cli) -> Result<(), String> {
    serve::init_logging(cli.log_json);
    if let Command::Keys(KeysCommand::Generate { id }) = &cli.command {
        return admin::generate_key(id.as_deref());
    }
    let dev = matches!(cli.command, Command::Serve { dev: true });
    let config = Config::from_env(dev).map_err(|e| format!("configuration error: {e}"))?;
    match cli.command {
        Command::Serve { .. } => serve::serve(config).await,
        Command::Migrate => serve::migrate(config).await,
        Command::Cleanup => admin::cleanup(config).await,
        Command::Keys(KeysCommand::Rotate { batch }) => admin::rotate_keys(config, batch).await,
        Command::Keys(KeysCommand::Generate { .. }) => Ok(()),
        Command::Audit { token, user, limit } => admin::audit(config, token, user, limit).await,
    }
}
