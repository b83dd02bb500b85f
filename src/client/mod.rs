//! The user side: the CLI's encrypted config file, its login at the provider, and the broker
//! API it calls with that login.

pub mod broker;
pub mod login;
pub mod secrets;
pub mod store;
pub mod task_token;

use std::path::Path;

use anyhow::Context;
use chrono::Utc;

use login::{renew, Provider, RENEW_MARGIN};
use store::{Kind, LockedConfig, Session};

/// The signed-in session (a person's before a service account's), renewed first if it is about
/// to expire. The config stays locked throughout, so a concurrent CLI process waits and then
/// finds the renewed tokens instead of spending the same refresh token again.
pub async fn fresh_session(path: &Path) -> anyhow::Result<Session> {
    let mut config = LockedConfig::open(path)?;
    let mut found = None;
    for kind in [Kind::Device, Kind::Client] {
        if let Some(session) = config.session(kind)? {
            found = Some((kind, session));
            break;
        }
    }
    let (kind, session) = found.context("not signed in; run `token-broker login`")?;
    let margin = chrono::Duration::from_std(RENEW_MARGIN).unwrap_or_default();
    let fresh = session
        .expires_at
        .is_none_or(|expires_at| expires_at > Utc::now() + margin);
    if fresh {
        return Ok(session);
    }
    let issuer = config
        .issuer()
        .context("the config file names no issuer; run `token-broker login --issuer URL`")?
        .to_owned();
    let provider = Provider::discover(&issuer).await?;
    let renewed = renew(&provider, &session).await?;
    config.set_session(kind, &renewed)?;
    config.save()?;
    Ok(renewed)
}
