//! Operator commands: `cleanup`, `keys generate`, `keys rotate`, `audit`.

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::serve::announce;
use crate::app::open_vault;
use crate::audit::Journal;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::vault::AuditQuery;
use crate::{cleanup, key_rotation};

pub fn generate_key(id: Option<&str>) -> anyhow::Result<()> {
    let default_id = Utc::now().format("%Y-%m").to_string();
    let entry = Keyring::generate_entry(id.unwrap_or(&default_id))?;
    println!("{}", entry.as_str());
    eprintln!("Put this entry first in TOKEN_ENCRYPTION_KEYS, restart, then run `token-broker keys rotate`.");
    Ok(())
}

/// One clean-up pass. Audit records are written; webhooks are sent only by `serve`.
pub async fn cleanup(config: Config) -> anyhow::Result<()> {
    announce(&config);
    let retention = cleanup::Retention {
        rows: config.retention,
        audit: config.audit_retention,
    };
    let vault = open_vault(&config).await?;
    let journal = Journal::new(vault.clone(), None);
    let report = cleanup::clean_up(
        vault.as_ref(),
        &journal,
        &crate::grants::StatusChanges::default(),
        retention,
    )
    .await
    .context("clean-up failed")?;
    println!(
        "expired {}, purged {}, audit records purged {}",
        report.expired, report.purged, report.audit_purged
    );
    Ok(())
}

pub async fn rotate_keys(config: Config, batch: u32) -> anyhow::Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    announce(&config);
    let vault = open_vault(&config).await?;
    let keyring = &config.keyring;
    let total = key_rotation::remaining(vault.as_ref(), keyring).await?;
    let target = keyring.sealing_key_id().as_str();
    eprintln!("{total} sealed value(s) to re-seal under key `{target}`");
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style);
    }
    let journal = Journal::new(vault.clone(), None);
    let report = key_rotation::rotate(vault.as_ref(), keyring, &journal, batch, |n| bar.inc(n))
        .await
        .map_err(|e| anyhow!("rotation stopped: {e}; run it again to resume"))?;
    bar.finish_and_clear();
    let left = key_rotation::remaining(vault.as_ref(), keyring).await?;
    println!(
        "re-sealed {}, changed meanwhile {}, failed {}, stored access tokens dropped {}, \
         still under other keys {left}",
        report.resealed,
        report.changed_meanwhile,
        report.failed.len(),
        report.dropped_access_tokens
    );
    if let Some((id, reason)) = report.failed.first() {
        bail!(
            "{} sealed value(s) could not be opened (first: row {id}: {reason}); \
             add the missing key to TOKEN_ENCRYPTION_KEYS and run again",
            report.failed.len()
        );
    }
    Ok(())
}

pub async fn audit(
    config: Config,
    token: Option<Uuid>,
    user: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let vault = open_vault(&config).await?;
    let query = match (token, user) {
        (Some(token), _) => AuditQuery::Token(token),
        (None, Some(user)) => AuditQuery::User(user),
        (None, None) => bail!("give --token or --user"),
    };
    let records = vault.audit_trail(&query, limit).await?;
    for record in records {
        let line = serde_json::to_string(&record).context("cannot print an audit record")?;
        println!("{line}");
    }
    Ok(())
}
