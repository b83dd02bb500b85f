//! Builds the broker from its configuration and runs it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::audit::Journal;
use crate::config::{create_private_dir, Config, Storage};
use crate::http::{self, Policy, RateLimit, Services};
use crate::lifecycle;
use crate::oidc::{discover, http_client, JwksCache, OidcClient, TokenVerifier};
use crate::refresh::{AccessTokenCache, Refresher};
use crate::vault::{self, TokenVault};
use crate::webhook::Webhooks;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Vault(#[from] vault::OpenError),
    #[error("{0}")]
    DataDir(String),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot discover the OpenID provider: {0}")]
    Discovery(#[from] crate::oidc::DiscoveryError),
    #[error("cannot load the provider's signing keys: {0}")]
    Jwks(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the vault the configuration names (creating the data directory for the embedded
/// default) and applies migrations.
pub async fn open_vault(config: &Config) -> Result<Arc<dyn TokenVault>, StartupError> {
    if matches!(config.storage, Storage::EmbeddedDefault) {
        create_private_dir(&config.data_dir).map_err(StartupError::DataDir)?;
    }
    Ok(vault::open(config.database_url.expose_secret()).await?)
}

/// Discovers the provider and wires the services the handlers share.
pub async fn build_services(
    config: Config,
    vault: Arc<dyn TokenVault>,
) -> Result<Services, StartupError> {
    let http = http_client()?;
    let metadata = discover(&http, &config.oidc.issuer).await?;
    let jwks = Arc::new(JwksCache::new(http.clone(), metadata.jwks_uri.clone()));
    jwks.load()
        .await
        .map_err(|e| StartupError::Jwks(e.to_string()))?;
    let oidc = Arc::new(OidcClient::new(
        &metadata,
        &config.oidc,
        config.callback_url(),
        http.clone(),
    ));
    let keyring = Arc::new(config.keyring);
    let webhooks = config.webhook.map(|webhook| Webhooks::start(webhook, http));
    let cache = Arc::new(AccessTokenCache::default());
    let journal = Journal::new(vault.clone(), webhooks).invalidating(cache.clone());
    // Changes made by other instances (or by hand) reach this one's cache.
    let (on_change, on_reset) = (cache.clone(), cache.clone());
    vault.watch_changes(
        Arc::new(move |id| on_change.invalidate(id)),
        Arc::new(move || on_reset.clear()),
    );
    let refresher = Refresher::new(
        vault.clone(),
        oidc.clone(),
        keyring.clone(),
        journal.clone(),
        cache,
        config.refresh,
    );
    let rate_limit = config.http.rate_limit.map(|(rate, burst)| {
        Arc::new(RateLimit::new(rate, burst, config.http.trust_forwarded_for))
    });
    // Install the metrics recorder before the first request records anything.
    let _ = crate::telemetry::prometheus();
    let issuer = config.oidc.issuer.as_str().trim_end_matches('/').to_owned();
    let verifier = TokenVerifier::new(
        jwks,
        issuer.clone(),
        config.oidc.client_id.clone(),
        config.oidc.audiences.clone(),
        config.oidc.authorized_parties.clone(),
    );
    Ok(Services {
        vault,
        oidc,
        verifier,
        keyring,
        journal,
        refresher,
        rate_limit,
        admin: config
            .admin_role
            .map(|role| http::Admin::new(role, &config.public_base_url)),
        policy: Policy {
            issuer,
            allowed_redirect_origins: config.allowed_redirect_origins,
            consent_ttl: config.consent_ttl,
            offline_token_max_age: config.offline_token_max_age,
            provider_revocation: config.provider_revocation,
            cors_origins: config.http.cors_origins,
        },
    })
}

/// A bound listener and the router behind it (and, with `METRICS_ADDR`, a second listener for
/// `/metrics`). Tests bind port 0 and read `local_addr`.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    metrics: Option<(TcpListener, axum::Router)>,
}

impl Application {
    /// Opens the vault, wires the services and starts the periodic clean-up.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let addr = config.bind_addr;
        let metrics_addr = config.http.metrics_addr;
        let (interval, retention) = (config.cleanup_interval, config.retention);
        let vault = open_vault(&config).await?;
        let services = build_services(config, vault).await?;
        tokio::spawn(lifecycle::run_periodically(
            services.vault.clone(),
            services.journal.clone(),
            interval,
            retention,
        ));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let state = Arc::new(services);
        let metrics = match metrics_addr {
            None => None,
            Some(addr) => Some((
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
                http::metrics_router(state.clone()),
            )),
        };
        Ok(Self {
            listener,
            router: http::router(state, metrics.is_some()),
            metrics,
        })
    }

    pub fn with_listener(listener: TcpListener, services: Services) -> Self {
        Self {
            listener,
            router: http::router(Arc::new(services), false),
            metrics: None,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Some((listener, router)) = self.metrics {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening");
            }
            tokio::spawn(async move { axum::serve(listener, router).await });
        }
        // Client addresses feed the per-client rate limit.
        let app = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
