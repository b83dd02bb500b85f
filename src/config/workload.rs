//! `WORKLOAD_*`: the platforms whose workload identities (Kubernetes service-account tokens,
//! CI id tokens, SPIFFE JWT-SVIDs) a grant's owner may bind a grant to.

use std::path::PathBuf;

use super::parse::{list, parse_http_url, seconds};
use super::ConfigError;
pub use crate::oidc::WorkloadSettings;

/// The settings, or none when `WORKLOAD_ISSUERS` is unset (no workload may redeem anything).
pub(super) fn workload_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<WorkloadSettings>, ConfigError> {
    let issuers = list(get("WORKLOAD_ISSUERS"));
    if issuers.is_empty() {
        for var in ["WORKLOAD_AUDIENCE", "WORKLOAD_JWKS_FILES"] {
            if get(var).is_some() {
                return Err(ConfigError::new(
                    var,
                    "is set but WORKLOAD_ISSUERS is not: list the trusted platform issuers",
                ));
            }
        }
        return Ok(None);
    }
    for issuer in &issuers {
        let url = parse_http_url("WORKLOAD_ISSUERS", issuer)?;
        if url.scheme() != "https" && !is_loopback(&url) {
            return Err(ConfigError::new(
                "WORKLOAD_ISSUERS",
                format!("`{issuer}` must be https (http only on a loopback address)"),
            ));
        }
    }
    let audience = get("WORKLOAD_AUDIENCE")
        .map(|a| a.trim().to_owned())
        .ok_or_else(|| {
            ConfigError::new(
                "WORKLOAD_AUDIENCE",
                "is required with WORKLOAD_ISSUERS: the audience platform tokens must carry for \
                 the broker (for example the broker's public URL)",
            )
        })?;
    if issuers.contains(&audience) {
        // Kubernetes writes its issuer as the audience of every default service-account
        // token: accepting that audience would take tokens meant for the API server.
        return Err(ConfigError::new(
            "WORKLOAD_AUDIENCE",
            "must name the broker, not one of WORKLOAD_ISSUERS: platforms put their own issuer \
             in the audience of tokens meant for themselves",
        ));
    }
    let mut jwks_files = Vec::new();
    for entry in list(get("WORKLOAD_JWKS_FILES")) {
        let Some((issuer, path)) = entry.rsplit_once('=') else {
            return Err(ConfigError::new(
                "WORKLOAD_JWKS_FILES",
                format!("`{entry}` must be issuer=path"),
            ));
        };
        let issuer = issuer.trim().to_owned();
        if !issuers.contains(&issuer) {
            return Err(ConfigError::new(
                "WORKLOAD_JWKS_FILES",
                format!("`{issuer}` is not one of WORKLOAD_ISSUERS"),
            ));
        }
        jwks_files.push((issuer, PathBuf::from(path.trim())));
    }
    let max_token_lifetime = seconds(
        get("WORKLOAD_MAX_TOKEN_LIFETIME_SECS"),
        "WORKLOAD_MAX_TOKEN_LIFETIME_SECS",
        24 * 3600,
    )?;
    Ok(Some(WorkloadSettings {
        issuers,
        audience,
        jwks_files,
        max_token_lifetime,
    }))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}
