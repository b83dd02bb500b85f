//! User-side commands: `login`, `logout`, `whoami`, and the broker client commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{credentials, LoginMethod, UserCommand};
use crate::api::{Status, TokenView};
use crate::client::broker::{parse_base, BrokerApi};
use crate::client::fresh_session;
use crate::client::login::{credentials_login, device_login, scopes, Provider};
use crate::client::store::{default_path, Kind, LockedConfig};
use crate::client::task_token::{self, TaskCredential};

const DEFAULT_CLIENT_ID: &str = "token-broker-cli";
const DEFAULT_BROKER: &str = "http://127.0.0.1:8080";
const POLL_EVERY: Duration = Duration::from_secs(2);

pub async fn run(
    command: UserCommand,
    config: Option<PathBuf>,
    broker: Option<String>,
) -> anyhow::Result<()> {
    // A task needs no login, no config file: only its key and the broker's address.
    if let UserCommand::TaskToken {
        key_file,
        workload_token_file,
        grant,
        sink,
        watch,
        scope,
    } = command
    {
        let credential = match workload_token_file {
            Some(file) => {
                if std::env::var_os(task_token::KEY_ENV).is_some() {
                    bail!(
                        "both a task key ({}) and a workload token file are set; use one",
                        task_token::KEY_ENV
                    );
                }
                TaskCredential::Workload { file, grant }
            }
            None => TaskCredential::Key(task_token::read_key(key_file.as_deref())?),
        };
        return task_token_command(credential, sink, watch, scope, broker).await;
    }
    let path = match config {
        Some(path) => path,
        None => default_path()?,
    };
    match command {
        UserCommand::Login {
            offline,
            scope,
            method,
            client_id,
            client_secret,
            issuer,
        } => {
            let mut config = LockedConfig::open(&path)?;
            let issuer = issuer
                .or_else(|| config.issuer().map(str::to_owned))
                .context(
                    "no issuer: pass --issuer URL (or set TOKEN_BROKER_ISSUER) the first time",
                )?;
            let provider = Provider::discover(&issuer).await?;
            let client_id = client_id.unwrap_or_else(|| DEFAULT_CLIENT_ID.to_owned());
            let (kind, session) = match method {
                LoginMethod::Device => {
                    let wanted = scopes(scope.as_deref(), offline);
                    let mut out = std::io::stdout();
                    (
                        Kind::Device,
                        device_login(&provider, &client_id, &wanted, &mut out).await?,
                    )
                }
                LoginMethod::Credentials => {
                    let secret = client_secret
                        .map(SecretString::from)
                        .context("--method credentials needs --client-secret (or TOKEN_BROKER_CLIENT_SECRET)")?;
                    // No default scope here: service accounts ask only for what they name.
                    let wanted = match (scope.as_deref(), offline) {
                        (None, false) => Vec::new(),
                        (scope, offline) => scopes(Some(scope.unwrap_or("")), offline),
                    };
                    (
                        Kind::Client,
                        credentials_login(&provider, &client_id, &secret, &wanted).await?,
                    )
                }
            };
            config.set_issuer(&issuer);
            config.set_session(kind, &session)?;
            config.save()?;
            let offline_note = if session
                .scope
                .as_deref()
                .is_some_and(|s| s.contains("offline_access"))
            {
                " (offline access granted)"
            } else {
                ""
            };
            println!(
                "Signed in{offline_note}; tokens saved encrypted in {}",
                config.path().display()
            );
            Ok(())
        }
        UserCommand::Logout => {
            if LockedConfig::forget_sessions(&path)? {
                println!("Signed out; stored tokens removed from {}", path.display());
            } else {
                println!("Not signed in; nothing to remove from {}", path.display());
            }
            Ok(())
        }
        UserCommand::Whoami => {
            let session = fresh_session(&path).await?;
            let claims = jwt_claims(session.access_token.expose_secret());
            let subject = claims["sub"].as_str().unwrap_or("(opaque token)");
            let expires = session
                .expires_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "unknown".into());
            println!(
                "{subject} via {} (scope: {}; access token expires {expires})",
                session.client_id,
                session.scope.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        other => run_broker_command(other, &path, broker).await,
    }
}

async fn run_broker_command(
    command: UserCommand,
    path: &Path,
    broker: Option<String>,
) -> anyhow::Result<()> {
    let session = fresh_session(path).await?;
    let base = match broker {
        Some(url) => url,
        None => LockedConfig::open(path)?
            .broker_url()
            .unwrap_or(DEFAULT_BROKER)
            .to_owned(),
    };
    let mut api = BrokerApi::new(&base, session.access_token)?;
    match command {
        UserCommand::Consent {
            task,
            wait,
            timeout,
        } => {
            let consent = api.consent(&task).await?;
            let id = consent.persistent_token_id.to_string();
            println!("{}", consent.consent_url);
            eprintln!("Open the URL above to grant offline access. Token id: {id}");
            if wait {
                let status =
                    wait_for_consent(&mut api, path, &id, Duration::from_secs(timeout)).await?;
                println!("{id} {}", describe(&status));
                if status.status != Status::Active {
                    bail!("consent ended {}", describe(&status));
                }
            } else {
                println!("{id}");
            }
            Ok(())
        }
        UserCommand::Reconsent { id, wait, timeout } => {
            let before = api.status(&id).await?;
            let consent = api.reconsent(&id).await?;
            println!("{}", consent.consent_url);
            eprintln!("Open the URL above to consent again. Token id: {id}");
            if matches!(before.status, Status::Failed | Status::Expired) {
                eprintln!(
                    "Its task keys ended with it: once it is active, create new ones \
                     (token-broker task-key create {id})."
                );
            }
            if wait {
                let status =
                    wait_for_reconsent(&mut api, path, &id, &before, Duration::from_secs(timeout))
                        .await?;
                println!("{id} {}", describe(&status));
            }
            Ok(())
        }
        UserCommand::Status { id } => {
            println!("{id} {}", describe(&api.status(&id).await?));
            Ok(())
        }
        UserCommand::TaskKey(command) => credentials::task_key_command(&api, command).await,
        UserCommand::Workload(command) => credentials::workload_command(&api, command).await,
        UserCommand::List { task } => {
            for item in api.list(task.as_deref()).await? {
                println!("{} {}", item.persistent_token_id, describe(&item));
            }
            Ok(())
        }
        UserCommand::Token { id } => {
            println!("{}", api.access_token(&id).await?.access_token);
            Ok(())
        }
        UserCommand::Revoke { id } => {
            let answer = api.revoke(&id).await?;
            println!(
                "{id} {} (provider: {})",
                describe(&answer.token),
                answer.provider_revocation
            );
            Ok(())
        }
        UserCommand::Login { .. }
        | UserCommand::Logout
        | UserCommand::Whoami
        | UserCommand::TaskToken { .. } => Ok(()),
    }
}

/// A status read during a long wait: the stored login is renewed first when it is about to
/// expire (under the file lock, as every command does), since a person may take longer to
/// consent than an access token lives.
async fn poll_status(api: &mut BrokerApi, path: &Path, id: &str) -> anyhow::Result<TokenView> {
    api.set_bearer(fresh_session(path).await?.access_token);
    Ok(api.status(id).await?)
}

async fn wait_for_consent(
    api: &mut BrokerApi,
    path: &Path,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<TokenView> {
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} waiting for consent… {elapsed}") {
        spinner.set_style(style);
    }
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let result = loop {
        let status = match poll_status(api, path, id).await {
            Ok(status) => status,
            Err(e) => break Err(e),
        };
        if status.status != Status::Pending {
            break Ok(status);
        }
        if started.elapsed() > timeout {
            break Err(anyhow!(
                "no decision within {} s; still pending",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    spinner.finish_and_clear();
    result
}

async fn task_token_command(
    key: TaskCredential,
    sink: Option<PathBuf>,
    watch: bool,
    scope: Option<String>,
    broker: Option<String>,
) -> anyhow::Result<()> {
    let base = broker.unwrap_or_else(|| DEFAULT_BROKER.to_owned());
    let broker = parse_base(&base)?;
    let http = crate::oidc::http_client().context("cannot build an HTTP client")?;
    match (sink, watch) {
        (Some(sink), true) => {
            task_token::watch(
                &http,
                &broker,
                &key,
                scope.as_deref(),
                &sink,
                super::serve::shutdown_signal(),
            )
            .await
        }
        (Some(sink), false) => {
            let token = task_token::fetch(&http, &broker, &key, scope.as_deref()).await?;
            task_token::write_sink(&sink, &token.access_token)
        }
        (None, _) => {
            let token = task_token::fetch(&http, &broker, &key, scope.as_deref()).await?;
            println!("{}", token.access_token.expose_secret());
            Ok(())
        }
    }
}

/// Waits until the row was consented to again: its last refresh moved on and it is active.
async fn wait_for_reconsent(
    api: &mut BrokerApi,
    path: &Path,
    id: &str,
    before: &TokenView,
    timeout: Duration,
) -> anyhow::Result<TokenView> {
    let started = Instant::now();
    loop {
        let status = poll_status(api, path, id).await?;
        if status.status == Status::Active && status.last_refresh_at != before.last_refresh_at {
            return Ok(status);
        }
        if started.elapsed() > timeout {
            bail!(
                "no new consent within {} s; the token is {}",
                timeout.as_secs(),
                describe(&status)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `active task=jupyter-1` or `failed task=… reason=subject_mismatch`.
fn describe(token: &TokenView) -> String {
    let mut text = format!("{} task={}", token.status, token.task_id);
    if let Some(reason) = &token.status_reason {
        text.push_str(&format!(" reason={reason}"));
    }
    text
}

/// The claims of a JWT, unverified: for display only.
fn jwt_claims(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}
