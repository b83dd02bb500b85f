//! `serve` and `migrate`, logging, and graceful shutdown.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::app::{open_vault, Application};
use crate::config::{Config, Storage};

pub async fn serve(config: Config) -> anyhow::Result<()> {
    announce(&config);
    let shutdown = shutdown_signal();
    let app = Application::build(config).await?;
    let addr = app.local_addr()?;
    tracing::info!(%addr, "token-broker listening");
    app.run_until_stopped(shutdown)
        .await
        .context("server error")
}

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    announce(&config);
    open_vault(&config).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The first log lines say where tokens will be stored and with which key.
pub fn announce(config: &Config) {
    match config.storage {
        Storage::EmbeddedDefault => tracing::info!(
            path = %config.data_dir.join("token-broker.db").display(),
            "storage: embedded SQLite (DATABASE_URL not set; set it to postgres://... for production)"
        ),
        Storage::Configured => tracing::info!("storage: DATABASE_URL"),
    }
    if config.dev && config.oidc.audiences.is_empty() && config.oidc.authorized_parties.is_empty() {
        tracing::warn!(
            "DEV MODE: any client of the realm may call the broker with its users' tokens; \
             set OIDC_AUTHORIZED_PARTIES (your frontend's client id) or OIDC_AUDIENCE"
        );
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

pub fn init_client_logging() {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn init_logging(json: bool) {
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

/// Completes on Ctrl-C or SIGTERM, so in-flight requests finish before exit. The handlers are
/// installed when this is called, not when first polled: a signal that arrives right after the
/// "listening" line must already find them.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term.take()) => {}
                () = wait(int.take()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutting down");
    }
}
