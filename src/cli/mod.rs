//! The command line: `serve`, `migrate`, and the operator commands.

mod credentials;
mod operator;
mod serve;
mod user;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the user-side commands keep their login and which broker they talk to.
#[derive(Debug, Args)]
pub struct ClientOptions {
    /// The CLI's config file [default: <user config dir>/token-broker/config.yaml].
    #[arg(long, global = true, env = "TOKEN_BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The broker's base URL [default: the config's broker-url, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "TOKEN_BROKER_URL")]
    pub broker: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LoginMethod {
    /// Device authorization grant: sign in as a person in a browser.
    Device,
    /// Client credentials: a service account.
    Credentials,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Sign in at the provider; tokens are stored encrypted in the config file.
    Login {
        /// Ask for offline access (adds offline_access to the scope).
        #[arg(long)]
        offline: bool,
        /// The scopes to ask for [default: "openid profile email"; none for credentials].
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, value_enum, default_value = "device")]
        method: LoginMethod,
        /// [default: token-broker-cli]
        #[arg(long, env = "TOKEN_BROKER_CLIENT_ID")]
        client_id: Option<String>,
        /// For --method credentials. Prefer the environment variable: arguments are visible
        /// to other users of the machine.
        #[arg(long, env = "TOKEN_BROKER_CLIENT_SECRET", hide_env_values = true)]
        client_secret: Option<String>,
        /// The provider's issuer URL; remembered in the config file.
        #[arg(long, env = "TOKEN_BROKER_ISSUER")]
        issuer: Option<String>,
    },
    /// Remove the stored tokens.
    Logout,
    /// Show who the stored login is (renewing it if it is about to expire).
    Whoami,
    /// Ask the broker for an offline-token consent for a task; prints the consent URL.
    Consent {
        #[arg(long)]
        task: String,
        /// Wait until the consent is completed or fails.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Consent again for an existing token (failed, expired or active): the same id keeps
    /// working for the tasks that hold it. Prints the consent URL.
    Reconsent {
        id: String,
        /// Wait until the new consent is completed.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait with --wait.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Task keys: restricted keys a task uses to get tokens after you have left.
    #[command(subcommand)]
    TaskKey(TaskKeyCommand),
    /// Workload bindings: let a task prove who it is with its platform's own token
    /// (Kubernetes service account, CI job) instead of a key.
    #[command(subcommand)]
    Workload(WorkloadCommand),
    /// For a task: print an access token using a task key or the workload's platform token (no
    /// login needed), or with --sink and --watch keep a file holding a fresh one. The key comes
    /// from TOKEN_BROKER_TASK_KEY or --key-file, never from the command line.
    TaskToken {
        /// A file holding the task key (mode 0600 is advised).
        #[arg(long, conflicts_with = "workload_token_file")]
        key_file: Option<PathBuf>,
        /// Instead of a key: the file where the platform keeps the workload's token (read
        /// again for every exchange, since the platform rewrites it).
        #[arg(long, env = "TOKEN_BROKER_WORKLOAD_TOKEN_FILE")]
        workload_token_file: Option<PathBuf>,
        /// With --workload-token-file: the persistent token id, when the workload is bound to
        /// several.
        #[arg(long, requires = "workload_token_file")]
        grant: Option<uuid::Uuid>,
        /// Write the token to this file (atomically, mode 0600) instead of printing it.
        #[arg(long)]
        sink: Option<PathBuf>,
        /// Keep the sink fresh: rewrite it before the token expires, until SIGTERM.
        #[arg(long, requires = "sink")]
        watch: bool,
        /// Narrow the token to these scopes (within the key's).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Show one persistent token's status.
    Status { id: String },
    /// List your persistent tokens.
    List {
        #[arg(long)]
        task: Option<String>,
    },
    /// Print a fresh access token for a persistent token (only the token, for $(...)).
    Token { id: String },
    /// Revoke a persistent token.
    Revoke { id: String },
}

/// What a task key or a workload binding is limited to.
#[derive(Debug, Args)]
pub struct Limits {
    #[arg(long)]
    pub name: Option<String>,
    /// Space-separated scopes within the token's grant.
    #[arg(long)]
    pub scope: Option<String>,
    /// When it stops working: RFC 3339 (2026-12-31T00:00:00Z) or a duration (90m, 12h, 7d)
    /// [default: the token's own expiry].
    #[arg(long)]
    pub expires: Option<String>,
    /// How many successful uses it allows.
    #[arg(long)]
    pub max_uses: Option<u32>,
    /// A network it may be used from (CIDR or address); repeat for several.
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TaskKeyCommand {
    /// Issue a key for a persistent token; prints the key once, then its id.
    Create {
        id: String,
        #[command(flatten)]
        limits: Limits,
    },
    /// List a persistent token's keys (no secrets).
    List { id: String },
    /// Revoke a key.
    Revoke { id: String, key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Bind a persistent token to a workload identity; prints the binding's id.
    Bind {
        id: String,
        /// The platform issuer (one of the broker's WORKLOAD_ISSUERS).
        #[arg(long)]
        issuer: String,
        /// The platform token's `sub`, exactly (system:serviceaccount:NS:NAME on Kubernetes).
        #[arg(long)]
        subject: String,
        /// A further claim that must match exactly, as PATH=VALUE (dotted paths reach nested
        /// claims: kubernetes.io.serviceaccount.uid=…); repeat for several.
        #[arg(long = "claim")]
        claims: Vec<String>,
        #[command(flatten)]
        limits: Limits,
    },
    /// List a persistent token's workload bindings.
    List { id: String },
    /// Revoke a binding.
    Unbind { id: String, binding_id: String },
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
    #[command(flatten)]
    User(UserCommand),
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

/// Runs the parsed command. Its error carries the context of each layer it crossed;
/// [`one_line`] words it for the operator.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::User(command) = cli.command {
        // Client commands log nothing below warnings, and only to stderr: `token ID` prints
        // the token alone on stdout.
        serve::init_client_logging();
        return user::run(command, cli.client.config, cli.client.broker).await;
    }
    serve::init_logging(cli.log_json);
    if let Command::Keys(KeysCommand::Generate { id }) = &cli.command {
        return operator::generate_key(id.as_deref());
    }
    let dev = matches!(cli.command, Command::Serve { dev: true });
    let config = Config::from_env(dev).context("configuration error")?;
    match cli.command {
        Command::Serve { .. } => serve::serve(config).await,
        Command::Migrate => serve::migrate(config).await,
        Command::Cleanup => operator::cleanup(config).await,
        Command::Keys(KeysCommand::Rotate { batch }) => operator::rotate_keys(config, batch).await,
        Command::Keys(KeysCommand::Generate { .. }) => Ok(()),
        Command::Audit { token, user, limit } => operator::audit(config, token, user, limit).await,
        Command::User(_) => Ok(()),
    }
}

/// An error and its causes on one line, outermost first, joined by `: `. A cause whose
/// wording the line already holds is left out: many errors repeat their source's message in
/// their own.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not fetch x: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[test]
    fn an_error_is_one_line_with_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = anyhow::Error::from(io).context("cannot read a.yaml");
        assert_eq!(one_line(&error), "cannot read a.yaml: gone");
        let repeated = anyhow::Error::from(Repeats {
            source: std::io::Error::other("refused"),
        })
        .context("login failed");
        assert_eq!(
            one_line(&repeated),
            "login failed: could not fetch x: refused"
        );
        let multiline = anyhow::anyhow!("first\nsecond");
        assert_eq!(one_line(&multiline), "first second");
    }
}
