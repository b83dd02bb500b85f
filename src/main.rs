//! The `token-broker` binary: parses the command line and hands it to [`token_broker::cli::run`].

use clap::Parser;
use token_broker::cli::{one_line, run, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    // The service and operator commands read `.env` from the working directory; the user's
    // commands run anywhere and never do (the service's file is not theirs to read). Parsing
    // again lets `.env` supply the options that have an environment variable.
    if !matches!(cli.command, Command::User(_)) {
        // A missing .env is normal; a malformed one is not silently ignored.
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                eprintln!("token-broker: cannot read .env: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        cli = Cli::parse();
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("token-broker: {}", one_line(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
