//! The operator commands, run as the real binary against an SQLite file.

use std::process::{Command, Output, Stdio};

use chrono::Utc;
use token_broker::crypto::{purpose, Binding, Keyring};
use token_broker::vault::{Activation, ConsentStore, NewConsent, SqliteVault};
use uuid::Uuid;

use crate::cli::scratch_dir;

const OLD: &str = "old:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn run(args: &[&str], database_url: &str, keys: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_token-broker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("TOKEN_ENCRYPTION_KEYS", keys)
        // The service's environment; these commands never contact the provider.
        .env("OIDC_ISSUER", "http://127.0.0.1:9/realms/x")
        .env("OIDC_CLIENT_ID", "c")
        .env("OIDC_CLIENT_SECRET", "s")
        .env("PUBLIC_BASE_URL", "http://broker.test")
        .env("OIDC_AUTHORIZED_PARTIES", "frontend")
        .env(
            "RUST_LOG",
            if args.contains(&"--log-json") {
                "info"
            } else {
                "off"
            },
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// An SQLite vault with `count` active rows sealed under `OLD`, and one stale pending consent.
async fn seeded_database(count: usize) -> (String, Vec<Uuid>) {
    let dir = scratch_dir("tb-operator");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("vault.db").display());
    let vault = SqliteVault::connect(&url).await.unwrap();
    vault.migrate().await.unwrap();
    let old = Keyring::parse(OLD).unwrap();
    let mut ids = Vec::new();
    for i in 0..=count {
        let now = Utc::now();
        let stale = i == count;
        let new = NewConsent {
            id: Uuid::new_v4(),
            user_id: format!("user-{i}"),
            task_id: "t".into(),
            state_hash: Uuid::new_v4().as_bytes().to_vec(),
            state_expires_at: if stale {
                now - chrono::Duration::minutes(1)
            } else {
                now + chrono::Duration::minutes(10)
            },
            pkce_verifier: Vec::new(),
            nonce_hash: vec![2],
            redirect_uri: None,
            expires_at: now + chrono::Duration::days(1),
            created_at: now,
            metadata: serde_json::json!({}),
            delegates: vec![],
        };
        let id = new.id;
        let user = new.user_id.clone();
        let verifier = old
            .seal(
                b"verifier",
                Binding {
                    purpose: purpose::PKCE_VERIFIER,
                    row_id: id,
                    user_id: &user,
                },
            )
            .unwrap();
        let new = NewConsent {
            pkce_verifier: verifier.to_bytes(),
            ..new
        };
        assert!(vault.create_pending(&new, 1000).await.unwrap());
        if !stale {
            // As the callback would: the claim spends the state and the verifier.
            let claimed = vault
                .claim_consent(&new.state_hash, now)
                .await
                .unwrap()
                .unwrap();
            let binding = Binding {
                purpose: purpose::REFRESH_TOKEN,
                row_id: new.id,
                user_id: &new.user_id,
            };
            let sealed = old.seal(b"offline", binding).unwrap();
            let activation = Activation {
                sealed: &sealed,
                expires_at: now + chrono::Duration::days(1),
                refresh_expires_at: None,
                granted_scope: None,
                now,
            };
            vault.activate(claimed, &activation).await.unwrap();
            ids.push(new.id);
        }
    }
    (url, ids)
}

#[test]
fn keys_generate_prints_a_usable_entry() {
    let output = run(&["keys", "generate", "--id", "2026-11"], "unused", "unused");
    assert!(output.status.success());
    let entry = text(&output.stdout);
    assert!(entry.starts_with("2026-11:"));
    assert!(Keyring::parse(entry.trim()).is_ok());
    let other = text(&run(&["keys", "generate"], "unused", "unused").stdout);
    assert_ne!(entry, other, "every key is fresh");
}

#[tokio::test]
async fn keys_rotate_reseals_everything_and_reports_counts() {
    let (url, ids) = seeded_database(25).await;
    let output = run(
        &["keys", "rotate", "--batch", "10"],
        &url,
        &format!("{NEW},{OLD}"),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).trim(),
        "re-sealed 26, changed meanwhile 0, failed 0, stored access tokens dropped 0, \
         still under other keys 0"
    );
    // 25 refresh tokens and the open consent's PKCE verifier.
    assert!(text(&output.stderr).contains("26 sealed value(s) to re-seal under key `new`"));

    let audit = run(&["audit", "--token", &ids[0].to_string()], &url, NEW);
    assert!(audit.status.success());
    let line = text(&audit.stdout);
    assert!(line.contains("\"action\":\"token_resealed\""), "{line}");
    assert!(line.contains("from_key:old"), "{line}");
}

#[tokio::test]
async fn keys_rotate_without_the_old_key_fails_with_one_clear_line() {
    let (url, _) = seeded_database(3).await;
    let output = run(&["keys", "rotate"], &url, NEW);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("4 sealed value(s) could not be opened"),
        "{stderr}"
    );
    assert!(last.contains("add the missing key"), "{stderr}");
}

#[tokio::test]
async fn cleanup_expires_stale_consents_and_says_how_many() {
    let (url, _) = seeded_database(2).await;
    let output = run(&["cleanup"], &url, OLD);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).trim(),
        "expired 1, purged 0, audit records purged 0"
    );
    let again = run(&["cleanup"], &url, OLD);
    assert_eq!(
        text(&again.stdout).trim(),
        "expired 0, purged 0, audit records purged 0"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let output = run(&["--log-json", "migrate"], "sqlite::memory:", OLD);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["fields"]["message"] == "migrations applied" && l["level"] == "INFO"));
}
