//! Configuration from the environment, validated once at start-up.
//!
//! Every error names the variable at fault in one line; secrets are redacted from `Debug`.

mod dev_key;
mod parse;
#[cfg(test)]
mod tests;
mod workload;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::crypto::{Keyring, KeyringError};
use crate::grants::{KeepAliveSettings, RefreshSettings};
use crate::oidc::ConsentPrompt;
pub use crate::oidc::OidcSettings;
use crate::webhook::WebhookConfig;
use parse::{
    count, keepalive_settings, list, number, parse_delegates, parse_http_url, parse_networks,
    parse_origins, parse_origins_of, parse_webhook, refresh_settings, seconds,
};

/// Where the callback lives below `PUBLIC_BASE_URL`; it must be registered at the provider.
pub use crate::api::paths::OFFLINE_CALLBACK as CALLBACK_PATH;

#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

pub use dev_key::create_private_dir;
pub use workload::WorkloadSettings;

/// Where the configuration came from, for the first log lines.
#[derive(Debug)]
pub enum Storage {
    /// `DATABASE_URL` was set.
    Configured,
    /// No `DATABASE_URL`: the embedded SQLite file in the data directory.
    EmbeddedDefault,
}

pub struct Config {
    pub database_url: SecretString,
    /// Connections in the PostgreSQL pool.
    pub database_pool_size: u32,
    pub storage: Storage,
    /// Holds the embedded database and, in dev mode, the generated key.
    pub data_dir: PathBuf,
    /// Set when dev mode supplied the key: its file, and whether it was just created.
    pub dev_key: Option<(PathBuf, bool)>,
    /// Dev mode (`--dev`, `TOKEN_BROKER_DEV`): generated key, open caller policy allowed.
    pub dev: bool,
    pub oidc: OidcSettings,
    pub public_base_url: Url,
    pub keyring: Keyring,
    /// Origins (`scheme://host:port`) a consent's `redirectUri` may point to.
    pub allowed_redirect_origins: Vec<url::Origin>,
    pub bind_addr: SocketAddr,
    /// How long a consent `state` may be redeemed.
    pub consent_ttl: Duration,
    /// How long a stored offline token may be used before the user must consent again.
    pub offline_token_max_age: Duration,
    /// The provider's own hard limit on an offline session (Keycloak's Offline Session Max,
    /// when "Offline Session Max Limited" is on), if the operator declares it.
    pub offline_session_max: Option<Duration>,
    /// Revoke tokens at the provider (RFC 7009) when a user revokes them here.
    pub provider_revocation: bool,
    /// Revoke the grant a re-consent replaced, once the new one is stored. Only where the
    /// provider revokes one token at a time (`PROVIDER_REVOCATION=token`): Keycloak ends every
    /// offline token of the user for the client, the new one included (`keycloak`).
    pub revoke_replaced_grant: bool,
    pub cleanup_interval: Duration,
    /// How long failed, expired and revoked rows are kept before clean-up deletes them.
    pub retention: Duration,
    pub webhook: Option<WebhookConfig>,
    pub refresh: RefreshSettings,
    pub keepalive: KeepAliveSettings,
    pub http: HttpSettings,
    /// The role that opens `/admin`; no role, no admin page.
    pub admin_role: Option<String>,
    /// Clients whose service accounts a consent may name as delegates.
    pub delegate_clients: Vec<String>,
    /// Service-account subjects pinned per delegate client (`DELEGATE_CLIENTS=runner=<sub>`):
    /// a pinned client's tokens are its service account's only when their `sub` is this one.
    pub delegate_subjects: Vec<(String, String)>,
    /// Consents a user may have waiting at once.
    pub max_pending_consents: u32,
    /// Rows whose minted access tokens are kept in memory (`ACCESS_TOKEN_CACHE_MAX_ROWS`).
    pub access_token_cache_rows: u64,
    /// Verified bearer tokens remembered (`BEARER_CACHE_MAX_ENTRIES`).
    pub bearer_cache_entries: u64,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// Platforms whose workload identities grants may be bound to; none = no bindings.
    pub workload: Option<WorkloadSettings>,
}

/// How the HTTP server meets browsers, proxies and abusive clients.
#[derive(Debug)]
pub struct HttpSettings {
    /// Origins whose browser pages may call the API (CORS).
    pub cors_origins: Vec<url::Origin>,
    /// Requests per second per client on consent, callback and access-token; None = no limit.
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// Proxies whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve `/metrics` here instead of on `BIND_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"[redacted]")
            .field("database_pool_size", &self.database_pool_size)
            .field("storage", &self.storage)
            .field("data_dir", &self.data_dir)
            .field("oidc", &self.oidc)
            .field("public_base_url", &self.public_base_url.as_str())
            .field("keyring", &self.keyring)
            .field("allowed_redirect_origins", &self.allowed_redirect_origins)
            .field("bind_addr", &self.bind_addr)
            .field("consent_ttl", &self.consent_ttl)
            .field("offline_token_max_age", &self.offline_token_max_age)
            .field("offline_session_max", &self.offline_session_max)
            .field("provider_revocation", &self.provider_revocation)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("retention", &self.retention)
            .field("webhook", &self.webhook)
            .field("refresh", &self.refresh)
            .field("keepalive", &self.keepalive)
            .field("http", &self.http)
            .field("admin_role", &self.admin_role)
            .field("delegate_clients", &self.delegate_clients)
            .field("max_pending_consents", &self.max_pending_consents)
            .field("audit_retention", &self.audit_retention)
            .field("workload", &self.workload)
            .finish()
    }
}

impl Config {
    /// Reads the process environment (after an optional `.env` file, loaded by `main`).
    /// `dev` (the `--dev` flag; `TOKEN_BROKER_DEV=1` does the same) allows a generated key.
    pub fn from_env(dev: bool) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), dev)
    }

    /// Reads configuration through `lookup`, so tests can supply variables without touching the
    /// process environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        dev: bool,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| {
            get(name).ok_or_else(|| ConfigError::new(name, "is required but not set"))
        };
        let dev = dev || get("TOKEN_BROKER_DEV").is_some_and(|v| matches!(v.trim(), "1" | "true"));
        let data_dir = PathBuf::from(get("TOKEN_BROKER_DATA_DIR").unwrap_or_else(|| "data".into()));

        let (database_url, storage) = match get("DATABASE_URL") {
            Some(url) => (url, Storage::Configured),
            None => (
                format!("sqlite://{}", data_dir.join("token-broker.db").display()),
                Storage::EmbeddedDefault,
            ),
        };
        let issuer_var = if get("OIDC_ISSUER").is_some() {
            "OIDC_ISSUER"
        } else {
            "KEYCLOAK_ISSUER"
        };
        let issuer = get(issuer_var).ok_or_else(|| {
            ConfigError::new(
                "OIDC_ISSUER",
                "is required (or KEYCLOAK_ISSUER) but not set",
            )
        })?;
        let issuer = parse_http_url(issuer_var, issuer.trim_end_matches('/'))?;
        let public_base_url = parse_http_url(
            "PUBLIC_BASE_URL",
            required("PUBLIC_BASE_URL")?.trim_end_matches('/'),
        )?;
        let (keyring, dev_key) = match get("TOKEN_ENCRYPTION_KEYS") {
            Some(spec) => (
                Keyring::parse(&spec).map_err(|e: KeyringError| {
                    ConfigError::new("TOKEN_ENCRYPTION_KEYS", e.to_string())
                })?,
                None,
            ),
            None if dev => {
                let key = dev_key::load_or_create(&data_dir)
                    .map_err(|e| ConfigError::new("TOKEN_ENCRYPTION_KEYS", e))?;
                (key.keyring, Some((key.path, key.created)))
            }
            None => return Err(ConfigError::new(
                "TOKEN_ENCRYPTION_KEYS",
                "is required but not set (or run `serve --dev` to use a generated development key)",
            )),
        };

        if get("TRUST_FORWARDED_FOR").is_some() {
            return Err(ConfigError::new(
                "TRUST_FORWARDED_FOR",
                "was replaced by TRUSTED_PROXIES: list the proxies (CIDRs) whose X-Forwarded-For \
                 is believed",
            ));
        }
        // Without either, any client of the realm holding a user's token could manage that
        // user's grants. Dev mode may run open (it says so at start-up).
        let audiences = list(get("OIDC_AUDIENCE"));
        let authorized_parties = list(get("OIDC_AUTHORIZED_PARTIES"));
        if !dev && audiences.is_empty() && authorized_parties.is_empty() {
            return Err(ConfigError::new(
                "OIDC_AUTHORIZED_PARTIES",
                "or OIDC_AUDIENCE must be set: list the client id(s) whose users' tokens may \
                 call the broker (your frontend's), or the audience they must carry",
            ));
        }
        let consent_prompt = match get("OIDC_CONSENT_PROMPT").as_deref().map(str::trim) {
            None | Some("consent") => ConsentPrompt::Consent,
            Some("none") => ConsentPrompt::Omit,
            Some(_) => {
                return Err(ConfigError::new(
                    "OIDC_CONSENT_PROMPT",
                    "must be `consent` (send prompt=consent) or `none` (send no prompt)",
                ))
            }
        };
        let (delegate_clients, delegate_subjects) = parse_delegates(get("DELEGATE_CLIENTS"))?;
        let client_id = required("OIDC_CLIENT_ID")?;
        if delegate_clients.contains(&client_id) {
            return Err(ConfigError::new(
                "DELEGATE_CLIENTS",
                "must not name OIDC_CLIENT_ID: the broker's own client is never a caller",
            ));
        }
        let (provider_revocation, revoke_replaced_grant) =
            match get("PROVIDER_REVOCATION").as_deref().map(str::trim) {
                None | Some("token") => (true, true),
                Some("keycloak") => (true, false),
                Some("none") => (false, false),
                Some(_) => {
                    return Err(ConfigError::new(
                        "PROVIDER_REVOCATION",
                        "must be `token` (revoke each token at the provider), `keycloak` (the \
                         provider ends all of a user's grants for the client at once) or `none`",
                    ))
                }
            };
        Ok(Self {
            database_url: SecretString::from(database_url),
            database_pool_size: number(
                get("DATABASE_POOL_SIZE"),
                "DATABASE_POOL_SIZE",
                20,
                |n: &u32| (1..=1000).contains(n),
                "must be a whole number from 1 to 1000",
            )?,
            storage,
            data_dir,
            dev_key,
            dev,
            oidc: OidcSettings {
                issuer,
                client_id,
                client_secret: SecretString::from(required("OIDC_CLIENT_SECRET")?),
                audiences,
                authorized_parties,
                consent_prompt,
            },
            public_base_url,
            keyring,
            allowed_redirect_origins: parse_origins(get("ALLOWED_REDIRECT_ORIGINS"))?,
            bind_addr: get("BIND_ADDR")
                .unwrap_or_else(|| "127.0.0.1:8080".into())
                .parse()
                .map_err(|_| ConfigError::new("BIND_ADDR", "must look like 127.0.0.1:8080"))?,
            consent_ttl: seconds(get("CONSENT_TTL_SECS"), "CONSENT_TTL_SECS", 600)?,
            offline_token_max_age: seconds(
                get("OFFLINE_TOKEN_MAX_AGE_SECS"),
                "OFFLINE_TOKEN_MAX_AGE_SECS",
                365 * 24 * 3600,
            )?,
            provider_revocation,
            revoke_replaced_grant,
            offline_session_max: get("OFFLINE_SESSION_MAX_SECS")
                .map(|v| seconds(Some(v), "OFFLINE_SESSION_MAX_SECS", 0))
                .transpose()?,
            cleanup_interval: seconds(get("CLEANUP_INTERVAL_SECS"), "CLEANUP_INTERVAL_SECS", 300)?,
            retention: seconds(get("RETENTION_SECS"), "RETENTION_SECS", 7 * 24 * 3600)?,
            webhook: parse_webhook(&get)?,
            admin_role: get("ADMIN_ROLE").map(|r| r.trim().to_owned()),
            delegate_clients,
            delegate_subjects,
            max_pending_consents: number(
                get("MAX_PENDING_CONSENTS"),
                "MAX_PENDING_CONSENTS",
                20,
                |n: &u32| (1..=10_000).contains(n),
                "must be a whole number from 1 to 10000",
            )?,
            access_token_cache_rows: number(
                get("ACCESS_TOKEN_CACHE_MAX_ROWS"),
                "ACCESS_TOKEN_CACHE_MAX_ROWS",
                100_000,
                |n: &u64| (1..=100_000_000).contains(n),
                "must be a whole number from 1 to 100000000",
            )?,
            bearer_cache_entries: number(
                get("BEARER_CACHE_MAX_ENTRIES"),
                "BEARER_CACHE_MAX_ENTRIES",
                100_000,
                |n: &u64| (1..=100_000_000).contains(n),
                "must be a whole number from 1 to 100000000",
            )?,
            audit_retention: seconds(
                get("AUDIT_RETENTION_SECS"),
                "AUDIT_RETENTION_SECS",
                400 * 24 * 3600,
            )?,
            http: HttpSettings {
                cors_origins: parse_origins_of(
                    "CORS_ALLOWED_ORIGINS",
                    get("CORS_ALLOWED_ORIGINS"),
                )?,
                rate_limit: match count(get("RATE_LIMIT_PER_SECOND"), "RATE_LIMIT_PER_SECOND", 50)?
                {
                    0 => None,
                    rate => {
                        let burst = count(
                            get("RATE_LIMIT_BURST"),
                            "RATE_LIMIT_BURST",
                            rate.saturating_mul(2),
                        )?;
                        match (NonZeroU32::new(rate), NonZeroU32::new(burst)) {
                            (Some(rate), Some(burst)) => Some((rate, burst)),
                            _ => {
                                return Err(ConfigError::new(
                                    "RATE_LIMIT_BURST",
                                    "must be at least 1",
                                ))
                            }
                        }
                    }
                },
                trusted_proxies: parse_networks("TRUSTED_PROXIES", get("TRUSTED_PROXIES"))?,
                metrics_addr: get("METRICS_ADDR")
                    .map(|v| {
                        v.parse().map_err(|_| {
                            ConfigError::new("METRICS_ADDR", "must look like 127.0.0.1:9090")
                        })
                    })
                    .transpose()?,
            },
            refresh: refresh_settings(&get, provider_revocation)?,
            keepalive: keepalive_settings(&get)?,
            workload: workload::workload_settings(&get)?,
        })
    }

    /// A grant's hard end after consent: our own maximum age, or the provider's offline
    /// session maximum if that comes first.
    pub fn grant_max_age(&self) -> Duration {
        match self.offline_session_max {
            Some(max) => max.min(self.offline_token_max_age),
            None => self.offline_token_max_age,
        }
    }

    /// The redirect URI registered at the provider.
    pub fn callback_url(&self) -> Url {
        let mut url = self.public_base_url.clone();
        let path = format!("{}{CALLBACK_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}
