//! Configuration from the environment, validated once at start-up.
//!
//! Every error names the variable at fault in one line; secrets are redacted from `Debug`.

mod dev_key;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::crypto::{Keyring, KeyringError};
use crate::grants::{BreakerSettings, KeepAliveSettings, RefreshSettings};
pub use crate::oidc::OidcSettings;
use crate::webhook::WebhookConfig;

/// Where the callback lives below `PUBLIC_BASE_URL`; it must be registered at the provider.
pub const CALLBACK_PATH: &str = "/api/auth/manager/offline-callback";

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
    pub cleanup_interval: Duration,
    /// How long failed, expired and revoked rows are kept before clean-up deletes them.
    pub retention: Duration,
    pub webhook: Option<WebhookConfig>,
    pub refresh: RefreshSettings,
    pub keepalive: KeepAliveSettings,
    pub http: HttpSettings,
    /// The role that opens `/admin`; no role, no admin page.
    pub admin_role: Option<String>,
}

/// How the HTTP server meets browsers, proxies and abusive clients.
#[derive(Debug)]
pub struct HttpSettings {
    /// Origins whose browser pages may call the API (CORS).
    pub cors_origins: Vec<url::Origin>,
    /// Requests per second per client on consent, callback and access-token; None = no limit.
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    pub trust_forwarded_for: bool,
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

        let provider_revocation = match get("PROVIDER_REVOCATION").as_deref().map(str::trim) {
            None | Some("token") => true,
            Some("none") => false,
            Some(_) => {
                return Err(ConfigError::new(
                    "PROVIDER_REVOCATION",
                    "must be `token` (revoke at the provider) or `none`",
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
            oidc: OidcSettings {
                issuer,
                client_id: required("OIDC_CLIENT_ID")?,
                client_secret: SecretString::from(required("OIDC_CLIENT_SECRET")?),
                audiences: list(get("OIDC_AUDIENCE")),
                authorized_parties: list(get("OIDC_AUTHORIZED_PARTIES")),
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
            offline_session_max: get("OFFLINE_SESSION_MAX_SECS")
                .map(|v| seconds(Some(v), "OFFLINE_SESSION_MAX_SECS", 0))
                .transpose()?,
            cleanup_interval: seconds(get("CLEANUP_INTERVAL_SECS"), "CLEANUP_INTERVAL_SECS", 300)?,
            retention: seconds(get("RETENTION_SECS"), "RETENTION_SECS", 7 * 24 * 3600)?,
            webhook: parse_webhook(&get)?,
            admin_role: get("ADMIN_ROLE").map(|r| r.trim().to_owned()),
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
                trust_forwarded_for: matches!(
                    get("TRUST_FORWARDED_FOR").as_deref().map(str::trim),
                    Some("1" | "true")
                ),
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

/// How refreshes meet a slow, failing or busy provider.
fn refresh_settings(
    get: &impl Fn(&str) -> Option<String>,
    provider_revocation: bool,
) -> Result<RefreshSettings, ConfigError> {
    let provider_timeout = seconds(get("PROVIDER_TIMEOUT_SECS"), "PROVIDER_TIMEOUT_SECS", 10)?;
    let lease = seconds(get("REFRESH_LEASE_SECS"), "REFRESH_LEASE_SECS", 30)?;
    // A claim must outlive the longest provider call it covers, or a second instance could
    // take the row over while the first one's answer (perhaps a rotated token) is on its way.
    if lease < provider_timeout + Duration::from_secs(5) {
        return Err(ConfigError::new(
            "REFRESH_LEASE_SECS",
            "must be at least PROVIDER_TIMEOUT_SECS + 5",
        ));
    }
    Ok(RefreshSettings {
        margin: Duration::from_secs(number(
            get("ACCESS_TOKEN_CACHE_MARGIN_SECS"),
            "ACCESS_TOKEN_CACHE_MARGIN_SECS",
            30,
            |_: &u64| true,
            "must be a whole number of seconds",
        )?),
        attempts: number(
            get("PROVIDER_RETRY_ATTEMPTS"),
            "PROVIDER_RETRY_ATTEMPTS",
            3,
            |n: &u32| (1..=10).contains(n),
            "must be a whole number from 1 to 10",
        )?,
        retry_base: Duration::from_millis(100),
        provider_timeout,
        lease,
        max_concurrent: number(
            get("PROVIDER_MAX_CONCURRENCY"),
            "PROVIDER_MAX_CONCURRENCY",
            64,
            |n: &usize| (1..=10_000).contains(n),
            "must be a whole number from 1 to 10000",
        )?,
        breaker: BreakerSettings {
            threshold: count(
                get("PROVIDER_BREAKER_THRESHOLD"),
                "PROVIDER_BREAKER_THRESHOLD",
                5,
            )?,
            cooldown: seconds(
                get("PROVIDER_BREAKER_COOLDOWN_SECS"),
                "PROVIDER_BREAKER_COOLDOWN_SECS",
                10,
            )?,
        },
        offline_idle: seconds(
            get("OFFLINE_IDLE_SECS"),
            "OFFLINE_IDLE_SECS",
            30 * 24 * 3600,
        )?,
        provider_revocation,
    })
}

fn keepalive_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<KeepAliveSettings, ConfigError> {
    let interval = count(
        get("KEEPALIVE_INTERVAL_SECS"),
        "KEEPALIVE_INTERVAL_SECS",
        600,
    )?;
    Ok(KeepAliveSettings {
        interval: (interval > 0).then(|| Duration::from_secs(u64::from(interval))),
        lead: seconds(
            get("KEEPALIVE_LEAD_SECS"),
            "KEEPALIVE_LEAD_SECS",
            7 * 24 * 3600,
        )?,
        concurrency: number(
            get("KEEPALIVE_CONCURRENCY"),
            "KEEPALIVE_CONCURRENCY",
            4,
            |n: &usize| (1..=1000).contains(n),
            "must be a whole number from 1 to 1000",
        )?,
        expiring_notice: seconds(
            get("EXPIRING_NOTICE_SECS"),
            "EXPIRING_NOTICE_SECS",
            7 * 24 * 3600,
        )?,
    })
}

fn parse_http_url(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::new(var, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(var, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(var, "must not carry a query or fragment"));
    }
    Ok(url)
}

fn parse_webhook(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<WebhookConfig>, ConfigError> {
    let (url, secret) = match (get("WEBHOOK_URL"), get("WEBHOOK_SECRET")) {
        (None, None) => return Ok(None),
        (Some(url), Some(secret)) => (url, secret),
        (Some(_), None) => {
            return Err(ConfigError::new(
                "WEBHOOK_SECRET",
                "is required with WEBHOOK_URL",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "WEBHOOK_URL",
                "is required with WEBHOOK_SECRET",
            ))
        }
    };
    if secret.len() < 16 {
        return Err(ConfigError::new(
            "WEBHOOK_SECRET",
            "must be at least 16 characters",
        ));
    }
    let retry_ms = number(
        get("WEBHOOK_RETRY_BASE_MS"),
        "WEBHOOK_RETRY_BASE_MS",
        1000,
        |n: &u64| *n > 0,
        "must be a positive whole number of milliseconds",
    )?;
    Ok(Some(WebhookConfig {
        url: parse_http_url("WEBHOOK_URL", &url)?,
        secret: SecretString::from(secret),
        retry_base: Duration::from_millis(retry_ms),
    }))
}

fn parse_origins(raw: Option<String>) -> Result<Vec<url::Origin>, ConfigError> {
    parse_origins_of("ALLOWED_REDIRECT_ORIGINS", raw)
}

fn parse_origins_of(
    var: &'static str,
    raw: Option<String>,
) -> Result<Vec<url::Origin>, ConfigError> {
    list(raw)
        .into_iter()
        .map(|entry| {
            let url = parse_http_url(var, &entry)?;
            if url.path() != "/" {
                return Err(ConfigError::new(
                    var,
                    format!("`{entry}` must be an origin (scheme://host[:port]) without a path"),
                ));
            }
            Ok(url.origin())
        })
        .collect()
}

fn list(raw: Option<String>) -> Vec<String> {
    raw.map(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// A number from the environment: `default` when unset, else it must parse and pass `valid`,
/// or the error names `var` with `problem`.
fn number<T: std::str::FromStr>(
    raw: Option<String>,
    var: &'static str,
    default: T,
    valid: impl Fn(&T) -> bool,
    problem: &'static str,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| valid(n))
            .ok_or_else(|| ConfigError::new(var, problem)),
    }
}

fn count(raw: Option<String>, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    number(
        raw,
        var,
        default,
        |_| true,
        "must be a whole number (0 turns it off)",
    )
}

fn seconds(raw: Option<String>, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    number(
        raw,
        var,
        default,
        |n| *n > 0,
        "must be a positive whole number of seconds",
    )
    .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("DATABASE_URL", "postgres://u:pw@localhost/db".to_string()),
            ("OIDC_ISSUER", "http://idp.test/realms/x/".to_string()),
            ("OIDC_CLIENT_ID", "broker".to_string()),
            ("OIDC_CLIENT_SECRET", "very-secret".to_string()),
            ("PUBLIC_BASE_URL", "https://broker.test/".to_string()),
            (
                "TOKEN_ENCRYPTION_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
            ),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).cloned(), false)
    }

    #[test]
    fn a_complete_environment_loads_with_defaults() {
        let config = load(&base()).unwrap();
        assert_eq!(config.oidc.issuer.as_str(), "http://idp.test/realms/x");
        assert_eq!(
            config.callback_url().as_str(),
            "https://broker.test/api/auth/manager/offline-callback"
        );
        assert_eq!(config.consent_ttl, Duration::from_secs(600));
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn without_database_url_the_embedded_sqlite_file_is_used() {
        let mut vars = base();
        vars.remove("DATABASE_URL");
        vars.insert("TOKEN_BROKER_DATA_DIR", "/var/lib/tb".into());
        let config = load(&vars).unwrap();
        assert!(matches!(config.storage, Storage::EmbeddedDefault));
        assert_eq!(
            config.database_url.expose_secret(),
            "sqlite:///var/lib/tb/token-broker.db"
        );
    }

    #[test]
    fn a_missing_key_is_an_error_outside_dev_mode_and_generated_in_it() {
        let mut vars = base();
        vars.remove("TOKEN_ENCRYPTION_KEYS");
        let err = load(&vars).unwrap_err();
        assert_eq!(err.var, "TOKEN_ENCRYPTION_KEYS");
        assert!(err.to_string().contains("--dev"));

        let dir = std::env::temp_dir().join(format!("tb-config-{}", uuid::Uuid::new_v4()));
        vars.insert("TOKEN_BROKER_DATA_DIR", dir.display().to_string());
        vars.insert("TOKEN_BROKER_DEV", "1".into());
        let config = load(&vars).unwrap();
        let (path, created) = config.dev_key.clone().unwrap();
        assert!(created && path.starts_with(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keycloak_issuer_is_an_alias() {
        let mut vars = base();
        let issuer = vars.remove("OIDC_ISSUER").unwrap();
        vars.insert("KEYCLOAK_ISSUER", issuer);
        assert_eq!(
            load(&vars).unwrap().oidc.issuer.as_str(),
            "http://idp.test/realms/x"
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in [
            "OIDC_ISSUER",
            "OIDC_CLIENT_ID",
            "OIDC_CLIENT_SECRET",
            "PUBLIC_BASE_URL",
            "TOKEN_ENCRYPTION_KEYS",
        ] {
            let mut vars = base();
            vars.remove(var);
            let err = load(&vars).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("OIDC_ISSUER", "not a url"),
            ("PUBLIC_BASE_URL", "ftp://x"),
            ("TOKEN_ENCRYPTION_KEYS", "k1:short"),
            ("ALLOWED_REDIRECT_ORIGINS", "https://app.test/with/path"),
            ("BIND_ADDR", "everywhere"),
            ("CONSENT_TTL_SECS", "0"),
            ("PROVIDER_REVOCATION", "sometimes"),
            ("RETENTION_SECS", "-1"),
            ("CORS_ALLOWED_ORIGINS", "https://app.test/path"),
            ("RATE_LIMIT_PER_SECOND", "fast"),
            ("METRICS_ADDR", "everywhere"),
            ("ACCESS_TOKEN_CACHE_MARGIN_SECS", "-5"),
            ("PROVIDER_RETRY_ATTEMPTS", "11"),
            ("PROVIDER_TIMEOUT_SECS", "0"),
            ("REFRESH_LEASE_SECS", "12"),
            ("PROVIDER_MAX_CONCURRENCY", "0"),
            ("PROVIDER_BREAKER_THRESHOLD", "many"),
            ("OFFLINE_IDLE_SECS", "-1"),
            ("OFFLINE_SESSION_MAX_SECS", "0"),
            ("KEEPALIVE_INTERVAL_SECS", "soon"),
            ("KEEPALIVE_CONCURRENCY", "0"),
            ("EXPIRING_NOTICE_SECS", "0"),
            ("DATABASE_POOL_SIZE", "0"),
        ];
        for (var, value) in cases {
            let mut vars = base();
            vars.insert(var, value.to_string());
            assert_eq!(load(&vars).unwrap_err().var, var, "{var}={value}");
        }
    }

    #[test]
    fn a_webhook_needs_url_and_a_long_enough_secret() {
        let mut vars = base();
        vars.insert("WEBHOOK_SECRET", "a-secret-without-a-url".into());
        assert_eq!(load(&vars).unwrap_err().var, "WEBHOOK_URL");
        vars.insert("WEBHOOK_URL", "http://hooks.test/x".into());
        vars.insert("WEBHOOK_SECRET", "short".into());
        assert_eq!(load(&vars).unwrap_err().var, "WEBHOOK_SECRET");
        vars.insert("WEBHOOK_SECRET", "a-long-enough-shared-secret".into());
        let config = load(&vars).unwrap();
        let printed = format!("{config:?}");
        assert!(config.webhook.is_some());
        assert!(!printed.contains("a-long-enough-shared-secret"));
    }

    #[test]
    fn redirect_origins_are_parsed() {
        let mut vars = base();
        vars.insert(
            "ALLOWED_REDIRECT_ORIGINS",
            "https://app.test, http://localhost:3000".into(),
        );
        let config = load(&vars).unwrap();
        assert_eq!(config.allowed_redirect_origins.len(), 2);
        assert_eq!(
            config.allowed_redirect_origins[1].ascii_serialization(),
            "http://localhost:3000"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let printed = format!("{:?}", load(&base()).unwrap());
        assert!(!printed.contains("very-secret"));
        assert!(!printed.contains("pw@"));
        assert!(!printed.contains("AQEBAQEB"));
        assert!(printed.contains("broker"));
    }
}
