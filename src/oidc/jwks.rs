//! An issuer's signing keys (JWKS): fetched from `jwks_uri` (or found through discovery, or read
//! from a file), kept in memory, refetched on an unknown `kid` at most once per cool-down, so a
//! forged `kid` cannot make the broker hammer the issuer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use url::Url;

/// A provider may rotate its signing key at any time; an unknown `kid` triggers a refetch, but
/// at most this often, so a flood of tokens with made-up key ids cannot flood the provider.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct VerificationKey {
    /// The algorithm the JWK pins, if it names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

struct Snapshot {
    keys: HashMap<String, VerificationKey>,
    fetched_at: Option<Instant>,
    /// The last fetch tried, whatever came of it: a provider that is down or answering garbage
    /// is not asked again more often than an up one.
    tried_at: Option<Instant>,
    /// For a key file: its modification time and length when these keys were read from it.
    file_stamp: Option<FileStamp>,
}

type FileStamp = (std::time::SystemTime, u64);

/// Where an issuer's key set comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// The `jwks_uri` itself (the users' provider, discovered at start-up).
    Uri(Url),
    /// The issuer's discovery document, read again on each fetch for its `jwks_uri` (a
    /// platform issuer that may be down when the broker starts).
    Discovery(Url),
    /// A file the operator keeps current (a private cluster's keys).
    File(PathBuf),
}

/// An issuer's signing keys by `kid`, fetched from their source and refetched on an unknown one.
pub struct JwksCache {
    http: reqwest::Client,
    source: KeySource,
    snapshot: RwLock<Snapshot>,
    refetch: Mutex<()>,
}

/// When a key file was last written, and how long it is.
async fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("no signing key with id `{0}`")]
    UnknownKey(String),
    #[error("key `{0}` is pinned to another algorithm")]
    AlgorithmMismatch(String),
    #[error("fetching the provider's keys failed: {0}")]
    Fetch(String),
}

impl JwksCache {
    pub fn new(http: reqwest::Client, uri: Url) -> Self {
        Self::from_source(http, KeySource::Uri(uri))
    }

    /// A cache that fetches from `source` on first use.
    pub fn from_source(http: reqwest::Client, source: KeySource) -> Self {
        Self {
            http,
            source,
            snapshot: RwLock::new(Snapshot {
                keys: HashMap::new(),
                fetched_at: None,
                tried_at: None,
                file_stamp: None,
            }),
            refetch: Mutex::new(()),
        }
    }

    /// A cache that starts with `set` (and refetches from `uri` on an unknown key id like any
    /// other): for tests and embedders that already hold the provider's keys.
    pub fn preloaded(http: reqwest::Client, uri: Url, set: &JwkSet) -> Self {
        Self {
            http,
            source: KeySource::Uri(uri),
            snapshot: RwLock::new(Snapshot {
                keys: keys_of(set),
                fetched_at: Some(Instant::now()),
                tried_at: Some(Instant::now()),
                file_stamp: None,
            }),
            refetch: Mutex::new(()),
        }
    }

    /// The key to verify a token signed with `algorithm` under `kid`.
    pub async fn key(&self, kid: &str, algorithm: Algorithm) -> Result<DecodingKey, JwksError> {
        if let Some(found) = self.cached(kid).await {
            return Self::check(kid, found, algorithm);
        }
        self.refresh_if_stale().await?;
        match self.cached(kid).await {
            Some(found) => Self::check(kid, found, algorithm),
            None => Err(JwksError::UnknownKey(printable(kid))),
        }
    }

    /// Loads the key set now (at start-up, so a bad `jwks_uri` shows early).
    pub async fn load(&self) -> Result<usize, JwksError> {
        let stamp = match &self.source {
            KeySource::File(path) => file_stamp(path).await,
            KeySource::Uri(_) | KeySource::Discovery(_) => None,
        };
        self.load_stamped(stamp).await
    }

    /// Loads the key set, a file's taken at `stamp`. Stamped before reading: a file rewritten
    /// meanwhile is read again next time.
    async fn load_stamped(&self, stamp: Option<FileStamp>) -> Result<usize, JwksError> {
        let fetched = self.fetch().await;
        let mut snapshot = self.snapshot.write().await;
        snapshot.tried_at = Some(Instant::now());
        let keys = fetched?;
        let count = keys.len();
        snapshot.keys = keys;
        snapshot.fetched_at = snapshot.tried_at;
        snapshot.file_stamp = stamp;
        Ok(count)
    }

    async fn cached(&self, kid: &str) -> Option<VerificationKey> {
        self.snapshot.read().await.keys.get(kid).cloned()
    }

    fn check(
        kid: &str,
        found: VerificationKey,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, JwksError> {
        match found.algorithm {
            Some(pinned) if pinned != algorithm => {
                Err(JwksError::AlgorithmMismatch(printable(kid)))
            }
            _ => Ok(found.key),
        }
    }

    async fn refresh_if_stale(&self) -> Result<(), JwksError> {
        // One refetch at a time; whoever waited behind it finds the fresh snapshot.
        let _guard = self.refetch.lock().await;
        if let KeySource::File(path) = &self.source {
            // A local file costs a `stat` to check: read again as soon as the operator
            // rewrites it (a rotation), never merely because a token named an unknown key.
            let stamp = file_stamp(path).await;
            if stamp.is_some() && stamp == self.snapshot.read().await.file_stamp {
                return Ok(());
            }
            return self.load_stamped(stamp).await.map(|_| ());
        }
        let fresh = self
            .snapshot
            .read()
            .await
            .tried_at
            .is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL);
        if fresh {
            return Ok(());
        }
        self.load().await.map(|_| ())
    }

    async fn fetch(&self) -> Result<HashMap<String, VerificationKey>, JwksError> {
        let uri = match &self.source {
            KeySource::Uri(uri) => uri.clone(),
            KeySource::Discovery(issuer) => {
                super::discover(&self.http, issuer)
                    .await
                    .map_err(|e| JwksError::Fetch(e.to_string()))?
                    .jwks_uri
            }
            KeySource::File(path) => {
                let text = tokio::fs::read(path)
                    .await
                    .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?;
                let set: JwkSet = serde_json::from_slice(&text)
                    .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?;
                return Ok(keys_of(&set));
            }
        };
        let response = self
            .http
            .get(uri)
            .send()
            .await
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Fetch(format!("HTTP {}", response.status())));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        Ok(keys_of(&set))
    }
}

/// A key id as it may appear in a log line: whatever a token's header says is the attacker's
/// choice, so anything but a short id of plain characters is shown only by its length.
fn printable(kid: &str) -> String {
    let plain = kid.len() <= 64
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        kid.to_owned()
    } else {
        format!("<{} bytes, not shown>", kid.len())
    }
}

/// The signing keys of a JWK set by id; keys we cannot use are skipped, not fatal.
fn keys_of(set: &JwkSet) -> HashMap<String, VerificationKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        // Keys we cannot use (unknown types) are skipped, not fatal: a provider may publish
        // more than we understand.
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            tracing::debug!(kid, "skipping a JWK that cannot verify signatures");
            continue;
        };
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
        keys.insert(kid, VerificationKey { algorithm, key });
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_key_ids_never_reach_a_log_as_they_are() {
        assert_eq!(printable("idp-rs256"), "idp-rs256");
        assert_eq!(printable("a\nFAKE LOG LINE"), "<15 bytes, not shown>");
        assert_eq!(printable(&"k".repeat(65)), "<65 bytes, not shown>");
    }

    #[tokio::test]
    async fn a_failing_provider_is_not_asked_again_at_once() {
        let http = reqwest::Client::new();
        let cache = JwksCache::new(http, "http://127.0.0.1:9/certs".parse().unwrap());
        assert!(cache.load().await.is_err());
        let started = Instant::now();
        // Unknown key ids within the interval: no new fetch, an immediate refusal.
        for kid in ["a", "b", "c"] {
            assert!(matches!(
                cache.key(kid, Algorithm::RS256).await,
                Err(JwksError::UnknownKey(_))
            ));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(cache.snapshot.read().await.tried_at.is_some());
    }
}
