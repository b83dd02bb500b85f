use clap::Parser;
use token_broker::cli::{run, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a malformed one is not silently ignored.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("token-broker: cannot read .env: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("token-broker: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
