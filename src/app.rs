//! Builds the broker from its configuration and runs it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::audit::Journal;
use crate::cleanup;
use crate::config::{create_private_dir, Config, Storage};
use crate::grants::{
    keepalive, AccessTokenCache, Authenticator, Callbacks, ConsentPolicy, Consents,
    DelegateClients, GrantLimits, KeepAliveSettings, Reads, Refresher, Revoker, StatusChanges,
    TaskKeyError, TaskKeys, TokenIssuer,
};
use crate::http::{
    self, AdminSessions, AdminState, ApiDocument, AppState, Cors, DeploymentRules, RateLimit,
    Services, TrustedProxies,
};
use crate::oidc::{
    discover, http_client, JwksCache, OidcClient, ProviderMetadata, TokenVerifier, WorkloadVerifier,
};
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
    #[error("cannot open the task-key secret: {0}")]
    TaskKeys(#[from] TaskKeyError),
    #[error("{0}")]
    Workloads(String),
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
    Ok(vault::open(
        config.database_url.expose_secret(),
        config.database_pool_size,
    )
    .await?)
}

/// The services, and what the background jobs and the router need beside them.
pub struct Wired {
    pub services: AppState,
    pub journal: Journal,
    pub changes: StatusChanges,
    pub keepalive: KeepAliveSettings,
    pub cors: Cors,
}

/// Discovers the provider and wires the services the handlers share.
pub async fn build_services(
    config: Config,
    vault: Arc<dyn TokenVault>,
) -> Result<AppState, StartupError> {
    Ok(wire(config, vault).await?.services)
}

/// Discovers the provider, loads its signing keys, and wires the services and jobs.
pub async fn wire(config: Config, vault: Arc<dyn TokenVault>) -> Result<Wired, StartupError> {
    let http = http_client()?;
    let metadata = discover(&http, &config.oidc.issuer).await?;
    let jwks = JwksCache::new(http.clone(), metadata.jwks_uri.clone());
    jwks.load()
        .await
        .map_err(|e| StartupError::Jwks(e.to_string()))?;
    assemble(config, vault, &metadata, jwks, http).await
}

/// Wires everything from a provider already known: no network. Tests use it with metadata and
/// keys of their own.
pub async fn assemble(
    config: Config,
    vault: Arc<dyn TokenVault>,
    metadata: &ProviderMetadata,
    jwks: JwksCache,
    http: reqwest::Client,
) -> Result<Wired, StartupError> {
    let oidc = Arc::new(OidcClient::new(
        metadata,
        &config.oidc,
        config.callback_url(),
        http.clone(),
    ));
    let grant_max_age = config.grant_max_age();
    let keyring = Arc::new(config.keyring);
    let workloads = match &config.workload {
        Some(settings) => Some(Arc::new(
            WorkloadVerifier::start(&http, settings)
                .await
                .map_err(StartupError::Workloads)?,
        )),
        None => None,
    };
    let workload_issuers = config
        .workload
        .map(|settings| settings.issuers)
        .unwrap_or_default();
    let webhooks = config.webhook.map(|webhook| Webhooks::start(webhook, http));
    let journal = Journal::new(vault.clone(), webhooks);
    // Status changes reach the cache: this instance's own, and (PostgreSQL) everybody else's.
    let cache = Arc::new(AccessTokenCache::new(config.access_token_cache_rows));
    let changes = StatusChanges::default();
    changes.subscribe(cache.clone());
    let (on_change, on_reset) = (changes.clone(), changes.clone());
    vault.watch_changes(
        Arc::new(move |id| on_change.changed(id)),
        Arc::new(move || on_reset.reset()),
    );
    // Install the metrics recorder before the first request records anything.
    let _ = crate::telemetry::prometheus();
    let issuer = config.oidc.issuer.as_str().trim_end_matches('/').to_owned();
    let verifier = Arc::new(TokenVerifier::new(
        Arc::new(jwks),
        issuer.clone(),
        config.oidc.client_id.clone(),
        config.oidc.audiences.clone(),
        config.oidc.authorized_parties.clone(),
        config.bearer_cache_entries,
    ));
    let refresher = Refresher::new(
        vault.clone(),
        oidc.clone(),
        keyring.clone(),
        journal.clone(),
        cache,
        changes.clone(),
        config.refresh.clone(),
    );
    let redirect_origins = config.allowed_redirect_origins;
    let consents = Arc::new(Consents::new(
        vault.clone(),
        oidc.clone(),
        keyring.clone(),
        journal.clone(),
        ConsentPolicy {
            allowed_redirect_origins: redirect_origins.clone(),
            consent_ttl: config.consent_ttl,
            offline_token_max_age: config.offline_token_max_age,
            delegate_clients: config.delegate_clients.clone(),
            max_pending: config.max_pending_consents,
        },
    ));
    let callbacks = Arc::new(Callbacks::new(
        vault.clone(),
        oidc.clone(),
        verifier.clone(),
        keyring.clone(),
        journal.clone(),
        changes.clone(),
        GrantLimits {
            max_age: grant_max_age,
            offline_idle: config.refresh.offline_idle,
            provider_revocation: config.provider_revocation,
            revoke_replaced_grant: config.revoke_replaced_grant,
        },
    ));
    let revoker = Arc::new(Revoker::new(
        vault.clone(),
        oidc.clone(),
        keyring.clone(),
        journal.clone(),
        changes.clone(),
        config.provider_revocation,
    ));
    let reads = Arc::new(Reads::new(vault.clone()));
    let task_keys = Arc::new(
        TaskKeys::load(
            vault.clone(),
            &keyring,
            journal.clone(),
            config.http.trusted_proxies.clone(),
        )
        .await?
        .with_workload_issuers(workload_issuers.clone()),
    );
    let mut authenticator = Authenticator::new(
        verifier.clone(),
        DelegateClients {
            clients: config.delegate_clients.clone(),
            pinned: config.delegate_subjects,
        },
        task_keys.clone(),
    );
    if let Some(workloads) = workloads {
        authenticator = authenticator.with_workloads(workloads);
    }
    let authenticator = Arc::new(authenticator);
    let issuer = Arc::new(TokenIssuer::new(refresher.clone(), task_keys.clone()));
    let proxies = Arc::new(TrustedProxies(config.http.trusted_proxies));
    let rate_limit = config
        .http
        .rate_limit
        .map(|(rate, burst)| Arc::new(RateLimit::new(rate, burst, proxies.clone())));
    let admin = AdminState {
        sessions: config.admin_role.map(|role| {
            Arc::new(AdminSessions::new(
                role,
                &config.public_base_url,
                keyring.clone(),
            ))
        }),
        oidc,
        verifier: verifier.clone(),
        reads: reads.clone(),
        revoker: revoker.clone(),
    };
    let api_document = Arc::new(ApiDocument::new(&DeploymentRules {
        redirect_origins: &redirect_origins,
        delegates: &config.delegate_clients,
        workload_issuers: &workload_issuers,
    }));
    let services = AppState::new(Services {
        vault,
        verifier,
        consents,
        callbacks,
        refresher,
        revoker,
        reads,
        task_keys,
        authenticator,
        issuer,
        proxies,
        rate_limit,
        admin,
        api_document,
    });
    Ok(Wired {
        services,
        journal,
        changes,
        keepalive: config.keepalive,
        cors: Cors(config.http.cors_origins),
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
        let interval = config.cleanup_interval;
        let retention = cleanup::Retention {
            rows: config.retention,
            audit: config.audit_retention,
        };
        let vault = open_vault(&config).await?;
        let Wired {
            services,
            journal,
            changes,
            keepalive,
            cors,
        } = wire(config, vault).await?;
        tokio::spawn(cleanup::run_periodically(
            services.vault.clone(),
            journal.clone(),
            changes,
            interval,
            retention,
        ));
        tokio::spawn(keepalive::run_periodically(
            services.refresher.clone(),
            services.vault.clone(),
            journal,
            keepalive,
        ));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let state = services;
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
            router: http::router(state, &cors, metrics.is_some()),
            metrics,
        })
    }

    pub fn with_listener(listener: TcpListener, services: AppState, cors: &Cors) -> Self {
        Self {
            listener,
            router: http::router(services, cors, false),
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
