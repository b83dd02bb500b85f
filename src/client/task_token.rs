//! The task's side: a task key (or the workload's platform token) in, an access token out —
//! printed once, or kept fresh in a file (what HTCondor's credmon does for jobs), with no user
//! login anywhere.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::broker::{endpoint, read_answer, BrokerError};
use crate::api::{AccessTokenRequest, AccessTokenResponse};

pub const KEY_ENV: &str = "TOKEN_BROKER_TASK_KEY";

/// Renew this long before expiry, or a tenth of the token's life if that is shorter.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The task key: from `TOKEN_BROKER_TASK_KEY`, else the file. Never from the command line,
/// where other users of the machine could read it.
pub fn read_key(file: Option<&Path>) -> anyhow::Result<SecretString> {
    if let Some(path) = file {
        let text = zeroize::Zeroizing::new(
            fs::read_to_string(path)
                .with_context(|| format!("cannot read the task key file {}", path.display()))?,
        );
        let key = text.trim();
        if key.is_empty() {
            bail!("the task key file {} is empty", path.display());
        }
        return Ok(SecretString::from(key.to_owned()));
    }
    match std::env::var(KEY_ENV) {
        Ok(key) if !key.trim().is_empty() => Ok(SecretString::from(key.trim().to_owned())),
        _ => bail!("no task key: set {KEY_ENV} or pass --key-file FILE"),
    }
}

/// What a task proves itself with.
pub enum TaskCredential {
    /// A task key, sent as the bearer of `access-token`.
    Key(SecretString),
    /// The file where the platform keeps the workload's token, read again for every exchange
    /// (the platform rewrites it), presented at the token exchange; `grant` picks the row
    /// when the workload is bound to several.
    Workload {
        file: PathBuf,
        grant: Option<uuid::Uuid>,
    },
}

/// RFC 8693 §2.2.1, the parts the helper uses.
#[derive(serde::Deserialize)]
struct Exchanged {
    access_token: String,
    expires_in: i64,
}

/// RFC 6749 §5.2.
#[derive(serde::Deserialize)]
struct OAuthRefusal {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// A token the broker handed out.
pub struct Token {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Asks the broker for a token with `credential`.
pub async fn fetch(
    http: &reqwest::Client,
    broker: &url::Url,
    credential: &TaskCredential,
    scope: Option<&str>,
) -> Result<Token, BrokerError> {
    match credential {
        TaskCredential::Key(key) => fetch_with_key(http, broker, key, scope).await,
        TaskCredential::Workload { file, grant } => {
            exchange(http, broker, file, *grant, scope).await
        }
    }
}

async fn fetch_with_key(
    http: &reqwest::Client,
    broker: &url::Url,
    key: &SecretString,
    scope: Option<&str>,
) -> Result<Token, BrokerError> {
    let url = endpoint(broker, crate::api::paths::ACCESS_TOKEN)?;
    let request = AccessTokenRequest {
        persistent_token_id: None,
        scope: scope.map(str::to_owned),
    };
    let response = http
        .post(url)
        .bearer_auth(key.expose_secret())
        .json(&request)
        .send()
        .await
        .map_err(BrokerError::unreachable(broker))?;
    let answer: AccessTokenResponse<'static> = read_answer(response).await?;
    Ok(Token {
        access_token: SecretString::from(answer.access_token.into_owned()),
        expires_at: answer.expires_at,
    })
}

/// The workload's platform token, exchanged (RFC 8693) for an access token of its row.
async fn exchange(
    http: &reqwest::Client,
    broker: &url::Url,
    file: &Path,
    grant: Option<uuid::Uuid>,
    scope: Option<&str>,
) -> Result<Token, BrokerError> {
    let unreadable = |source| BrokerError::WorkloadTokenFile {
        path: file.to_owned(),
        source,
    };
    let text = zeroize::Zeroizing::new(fs::read_to_string(file).map_err(unreadable)?);
    let token = text.trim();
    if token.is_empty() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        )));
    }
    let resource = grant.map(|id| format!("urn:token-broker:grant:{id}"));
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", JWT_TYPE),
    ];
    if let Some(resource) = &resource {
        form.push(("resource", resource));
    }
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let response = http
        .post(endpoint(broker, crate::api::paths::TOKEN)?)
        .form(&form)
        .send()
        .await
        .map_err(BrokerError::unreachable(broker))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(BrokerError::BrokeOff)?;
    if !status.is_success() {
        let refusal: OAuthRefusal =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| OAuthRefusal {
                error: "error".into(),
                error_description: format!("HTTP {status}"),
            });
        return Err(BrokerError::Refused {
            status,
            code: refusal.error,
            message: refusal.error_description,
        });
    }
    let answer: Exchanged = serde_json::from_slice(&bytes)
        .map_err(|source| BrokerError::Unexpected { status, source })?;
    Ok(Token {
        access_token: SecretString::from(answer.access_token),
        expires_at: Utc::now() + chrono::Duration::seconds(answer.expires_in.max(0)),
    })
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Writes `token` to `sink` atomically: a 0600 temporary file beside it, synced, renamed over.
/// A reader sees the old token or the new one, never half of either.
pub fn write_sink(sink: &Path, token: &SecretString) -> anyhow::Result<()> {
    let temp: PathBuf = sink.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.create(true).truncate(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(token.expose_secret().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&temp, sink)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
        .with_context(|| format!("cannot write {}", sink.display()))
}

/// When to renew a token that expires at `expires_at`.
pub fn renew_in(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let left = (expires_at - now).to_std().unwrap_or_default();
    let margin = RENEW_MARGIN.min(left / 10 + Duration::from_secs(1));
    left.saturating_sub(margin).max(Duration::from_secs(1))
}

/// Keeps `sink` holding a fresh token until `stop` completes. A failed renewal keeps the old
/// file (it may still be valid) and tries again with back-off.
pub async fn watch(
    http: &reqwest::Client,
    broker: &url::Url,
    key: &TaskCredential,
    scope: Option<&str>,
    sink: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match fetch(http, broker, key, scope).await {
            Ok(token) => {
                write_sink(sink, &token.access_token)?;
                retry = FIRST_RETRY;
                let wait = renew_in(token.expires_at, Utc::now());
                eprintln!(
                    "token-broker: {} holds a token until {}; renewing in {} s",
                    sink.display(),
                    token.expires_at.to_rfc3339(),
                    wait.as_secs()
                );
                wait
            }
            Err(e) => {
                eprintln!(
                    "token-broker: renewing failed ({:#}); trying again in {} s",
                    anyhow::Error::from(e),
                    retry.as_secs()
                );
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_before_expiry_and_never_at_once() {
        let now = Utc::now();
        let in_5_min = renew_in(now + chrono::Duration::seconds(300), now);
        assert!(in_5_min >= Duration::from_secs(239) && in_5_min <= Duration::from_secs(271));
        let short = renew_in(now + chrono::Duration::seconds(10), now);
        assert!(short >= Duration::from_secs(7) && short < Duration::from_secs(10));
        assert_eq!(
            renew_in(now - chrono::Duration::seconds(5), now),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_sink_is_written_whole_and_private() {
        let dir = std::env::temp_dir().join(format!("tb-sink-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let sink = dir.join("token");
        write_sink(&sink, &SecretString::from("first".to_owned())).unwrap();
        write_sink(&sink, &SecretString::from("second".to_owned())).unwrap();
        assert_eq!(fs::read_to_string(&sink).unwrap(), "second\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&sink).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
