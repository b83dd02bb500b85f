//! The owner's commands for a task's credentials: task keys (`task-key create|list|revoke`) and
//! workload bindings (`workload bind|list|unbind`).

use anyhow::anyhow;
use serde_json::Value;

use super::{TaskKeyCommand, WorkloadCommand};
use crate::api::{CreateTaskKey, CreateWorkloadBinding, TaskKeyView, WorkloadBindingView};
use crate::client::broker::BrokerApi;

pub(super) async fn task_key_command(
    api: &BrokerApi,
    command: TaskKeyCommand,
) -> anyhow::Result<()> {
    match command {
        TaskKeyCommand::Create { id, limits } => {
            let request = CreateTaskKey {
                expires_at: limits.expires.as_deref().map(parse_expiry).transpose()?,
                name: limits.name,
                scope: limits.scope,
                max_uses: limits.max_uses,
                allowed_cidrs: limits.cidrs,
            };
            let created = api.create_task_key(&id, &request).await?;
            // The key alone on stdout (for a file or a secret store); the rest on stderr.
            println!("{}", created.task_key);
            eprintln!(
                "Task key {} for {id}: shown once, store it now. {}",
                created.key.task_key_id,
                describe_key(&created.key)
            );
            Ok(())
        }
        TaskKeyCommand::List { id } => {
            for key in api.task_keys(&id).await?.items {
                println!("{} {}", key.task_key_id, describe_key(&key));
            }
            Ok(())
        }
        TaskKeyCommand::Revoke { id, key_id } => {
            let key = api.revoke_task_key(&id, &key_id).await?;
            println!("{key_id} {}", describe_key(&key));
            Ok(())
        }
    }
}

/// `active name=nightly uses=3/20 expires=…`
fn describe_key(key: &TaskKeyView) -> String {
    let mut text = key.state.clone();
    if let Some(name) = &key.name {
        text.push_str(&format!(" name={name}"));
    }
    if let Some(scope) = &key.scope {
        text.push_str(&format!(" scope=\"{scope}\""));
    }
    text.push_str(&uses_and_expiry(key.uses, key.max_uses, key.expires_at));
    text
}

/// ` uses=3/20 expires=…`: what is left of a key or a binding.
fn uses_and_expiry(
    uses: u32,
    max: Option<u32>,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> String {
    let uses = match max {
        Some(max) => format!(" uses={uses}/{max}"),
        None => format!(" uses={uses}"),
    };
    let expires = expires_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    format!("{uses} expires={expires}")
}

/// RFC 3339, or a duration from now: `90m`, `12h`, `7d`.
fn parse_expiry(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let bad =
        || anyhow!("--expires `{text}` is neither RFC 3339 nor a duration like 90m, 12h or 7d");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    }
    .filter(|_| n > 0)
    .ok_or_else(bad)?;
    Ok(chrono::Utc::now() + duration)
}

pub(super) async fn workload_command(
    api: &BrokerApi,
    command: WorkloadCommand,
) -> anyhow::Result<()> {
    match command {
        WorkloadCommand::Bind {
            id,
            issuer,
            subject,
            claims,
            limits,
        } => {
            let request = CreateWorkloadBinding {
                issuer,
                subject,
                claims: claims
                    .iter()
                    .map(|claim| parse_claim(claim))
                    .collect::<anyhow::Result<_>>()?,
                expires_at: limits.expires.as_deref().map(parse_expiry).transpose()?,
                name: limits.name,
                scope: limits.scope,
                max_uses: limits.max_uses,
                allowed_cidrs: limits.cidrs,
            };
            let binding = api.create_workload_binding(&id, &request).await?;
            println!("{}", binding.workload_binding_id);
            eprintln!(
                "Bound {id} to {} at {}: {}",
                binding.subject,
                binding.issuer,
                describe_binding(&binding)
            );
            Ok(())
        }
        WorkloadCommand::List { id } => {
            for binding in api.workload_bindings(&id).await?.items {
                println!(
                    "{} {} {} {}",
                    binding.workload_binding_id,
                    binding.issuer,
                    binding.subject,
                    describe_binding(&binding)
                );
            }
            Ok(())
        }
        WorkloadCommand::Unbind { id, binding_id } => {
            let binding = api.revoke_workload_binding(&id, &binding_id).await?;
            println!("{binding_id} {}", describe_binding(&binding));
            Ok(())
        }
    }
}

/// `PATH=VALUE`; the value is a string (the broker also matches it against a number or
/// boolean claim written the same way).
fn parse_claim(text: &str) -> anyhow::Result<(String, Value)> {
    let (path, value) = text
        .split_once('=')
        .filter(|(path, _)| !path.is_empty())
        .ok_or_else(|| anyhow!("--claim `{text}` must be PATH=VALUE"))?;
    Ok((path.to_owned(), Value::String(value.to_owned())))
}

/// `active uses=1/5 expires=…` and the claims it matches.
fn describe_binding(binding: &WorkloadBindingView) -> String {
    let mut text = binding.state.clone();
    if let Some(name) = &binding.name {
        text.push_str(&format!(" name={name}"));
    }
    for (path, value) in &binding.claims {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        text.push_str(&format!(" {path}={value}"));
    }
    if let Some(scope) = &binding.scope {
        text.push_str(&format!(" scope=\"{scope}\""));
    }
    text.push_str(&uses_and_expiry(
        binding.uses,
        binding.max_uses,
        binding.expires_at,
    ));
    text
}
