//! Workload identity tokens: what a platform (Kubernetes, GitHub Actions, GitLab CI, SPIFFE)
//! gives each workload to prove who it is. Verified against the keys of the issuers in
//! `WORKLOAD_ISSUERS` only — never against the users' provider, whose tokens are not workload
//! tokens unless the operator lists that issuer too.
//!
//! The rules, in order: an asymmetric algorithm and a key id; an `iss` that is listed (read
//! before verifying only to pick that issuer's keys); the signature by a key of that issuer;
//! `aud` containing `WORKLOAD_AUDIENCE`; `exp` (required), `nbf` and `iat` within the usual
//! leeway; a lifetime no longer than `WORKLOAD_MAX_TOKEN_LIFETIME_SECS`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, KeySource};
use super::jwt::{peek_claims, refusal, ALLOWED_ALGORITHMS, LEEWAY_SECS};
use super::JwtError;

/// Trusted platform issuers and what their tokens must carry.
#[derive(Clone, Debug)]
pub struct WorkloadSettings {
    /// Issuers exactly as their tokens write `iss` (`WORKLOAD_ISSUERS`).
    pub issuers: Vec<String>,
    /// The audience a platform token must name to be presented to the broker.
    pub audience: String,
    /// Issuers whose keys come from a file instead of discovery (`WORKLOAD_JWKS_FILES`).
    pub jwks_files: Vec<(String, PathBuf)>,
    /// The longest lifetime (`exp` − `iat`) a platform token may have.
    pub max_token_lifetime: Duration,
}

impl WorkloadSettings {
    /// The file holding `issuer`'s keys, if the operator gave one.
    pub fn jwks_file(&self, issuer: &str) -> Option<&PathBuf> {
        self.jwks_files
            .iter()
            .find(|(i, _)| i == issuer)
            .map(|(_, path)| path)
    }
}

/// Who a workload is, as its platform signed it.
#[derive(Clone, Debug)]
pub struct WorkloadClaims {
    pub issuer: String,
    pub subject: String,
    /// Every claim of the token, for a binding's exact matches.
    pub claims: Map<String, Value>,
}

/// Verifies platform tokens against the trusted issuers' keys.
pub struct WorkloadVerifier {
    issuers: HashMap<String, JwksCache>,
    audience: String,
    max_lifetime: Duration,
}

impl WorkloadVerifier {
    /// Each issuer's keys come from its file, if the operator named one, else from its
    /// discovery document, and again on an unknown key id. A file is read now: one the broker
    /// cannot read is a mistake to show at start-up, not at a workload's first exchange.
    /// Discovery waits for first use, so that a platform that is down does not keep the broker
    /// from starting.
    pub async fn start(
        http: &reqwest::Client,
        settings: &WorkloadSettings,
    ) -> Result<Self, String> {
        let mut issuers = HashMap::new();
        for issuer in &settings.issuers {
            let keys = match settings.jwks_file(issuer) {
                Some(path) => {
                    let keys = JwksCache::from_source(http.clone(), KeySource::File(path.clone()));
                    keys.load()
                        .await
                        .map_err(|e| format!("WORKLOAD_JWKS_FILES: {}: {e}", path.display()))?;
                    keys
                }
                None => {
                    let url = issuer
                        .parse()
                        .map_err(|e| format!("WORKLOAD_ISSUERS: `{issuer}`: {e}"))?;
                    JwksCache::from_source(http.clone(), KeySource::Discovery(url))
                }
            };
            issuers.insert(issuer.clone(), keys);
        }
        Ok(Self {
            issuers,
            audience: settings.audience.clone(),
            max_lifetime: settings.max_token_lifetime,
        })
    }

    /// The workload a platform token names, if every rule holds.
    pub async fn verify(&self, token: &str) -> Result<WorkloadClaims, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(JwtError::DisallowedAlgorithm);
        }
        let kid = header.kid.ok_or(JwtError::MissingKeyId)?;
        // Unverified: only to choose whose keys to verify with. The signature and the issuer
        // are both checked below against that issuer alone.
        let issuer = peek_claims(token)
            .and_then(|claims| claims.get("iss")?.as_str().map(str::to_owned))
            .ok_or(JwtError::Malformed)?;
        let keys = self.issuers.get(&issuer).ok_or(JwtError::WrongIssuer)?;
        let key = keys.key(&kid, header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(refusal)?
            .claims;
        self.check_times(&claims)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| JwtError::Claims("empty subject".into()))?
            .to_owned();
        Ok(WorkloadClaims {
            issuer,
            subject,
            claims,
        })
    }

    /// `iat` not in the future, and `exp` no further from `iat` (or from now, without one)
    /// than the longest lifetime accepted: a leaked long-lived token is worth little.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| JwtError::Claims("exp is not a number".into()))?;
        let iat = match claims.get("iat") {
            None => None,
            Some(iat) => Some(
                iat.as_i64()
                    .ok_or_else(|| JwtError::Claims("iat is not a number".into()))?,
            ),
        };
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(JwtError::IssuedInTheFuture);
        }
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        if exp.saturating_sub(iat.unwrap_or(now)) > max {
            return Err(JwtError::LivesTooLong);
        }
        Ok(())
    }
}
