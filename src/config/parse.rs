//! Parsers for the environment's values: each error names the variable at fault.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::ConfigError;
use crate::grants::{BreakerSettings, KeepAliveSettings, RefreshSettings};
use crate::webhook::WebhookConfig;

/// How refreshes meet a slow, failing or busy provider.
pub(super) fn refresh_settings(
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

pub(super) fn keepalive_settings(
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

pub(super) fn parse_http_url(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::new(var, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(var, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(var, "must not carry a query or fragment"));
    }
    Ok(url)
}

pub(super) fn parse_webhook(
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

pub(super) fn parse_origins(raw: Option<String>) -> Result<Vec<url::Origin>, ConfigError> {
    parse_origins_of("ALLOWED_REDIRECT_ORIGINS", raw)
}

pub(super) fn parse_origins_of(
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

/// Delegate client ids, and the service-account subjects pinned for some of them.
pub(super) type Delegates = (Vec<String>, Vec<(String, String)>);

/// `DELEGATE_CLIENTS`: `client` or `client=<service account sub>` entries, comma-separated.
pub(super) fn parse_delegates(raw: Option<String>) -> Result<Delegates, ConfigError> {
    let mut clients = Vec::new();
    let mut subjects = Vec::new();
    for entry in list(raw) {
        match entry.split_once('=') {
            None => clients.push(entry),
            Some((client, sub)) if !client.trim().is_empty() && !sub.trim().is_empty() => {
                clients.push(client.trim().to_owned());
                subjects.push((client.trim().to_owned(), sub.trim().to_owned()));
            }
            Some(_) => {
                return Err(ConfigError::new(
                    "DELEGATE_CLIENTS",
                    "entries are `client` or `client=<service account sub>`",
                ))
            }
        }
    }
    Ok((clients, subjects))
}

pub(super) fn list(raw: Option<String>) -> Vec<String> {
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
pub(super) fn number<T: std::str::FromStr>(
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

pub(super) fn count(
    raw: Option<String>,
    var: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    number(
        raw,
        var,
        default,
        |_| true,
        "must be a whole number (0 turns it off)",
    )
}

pub(super) fn seconds(
    raw: Option<String>,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    number(
        raw,
        var,
        default,
        |n| *n > 0,
        "must be a positive whole number of seconds",
    )
    .map(Duration::from_secs)
}

/// Networks (`10.0.0.0/8`) or single addresses, comma-separated.
pub(super) fn parse_networks(
    var: &'static str,
    raw: Option<String>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list(raw)
        .into_iter()
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(var, format!("`{entry}` is not a network like 10.0.0.0/8"))
                })
        })
        .collect()
}
