//! The real binary, started the way a newcomer would: no database configured, dev mode.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::app::unique_user;
use crate::idp::{Idp, BROKER_CLIENT, BROKER_PUBLIC_URL, CLIENT_SECRET};
use crate::process::activate_through;

fn broker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_token-broker"));
    // Nothing leaks in from the test environment (DATABASE_URL above all).
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[tokio::test]
async fn serve_without_a_database_url_runs_on_embedded_sqlite_in_dev_mode() {
    let idp = Idp::shared();
    let data_dir = std::env::temp_dir().join(format!("tb-serve-{}", uuid::Uuid::new_v4()));
    let mut child = broker()
        .args(["serve", "--dev"])
        .env("OIDC_ISSUER", &idp.issuer)
        .env("OIDC_CLIENT_ID", BROKER_CLIENT)
        .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("PUBLIC_BASE_URL", BROKER_PUBLIC_URL)
        .env("TOKEN_BROKER_DATA_DIR", &data_dir)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("storage: embedded SQLite"),
        "first line: {first}"
    );
    let mut addr = None;
    for line in lines.by_ref().take(10) {
        let line = line.unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let base = format!("http://{}", addr.expect("the broker logs its address"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = data_dir.join("dev-encryption-key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data_dir.join("token-broker.db").exists());

    // The whole flow against the embedded store.
    let user = unique_user("dev");
    let bearer = idp.user_token(&user).await;
    let id = activate_through(&base, &bearer, &user, "embedded").await;
    let http = reqwest::Client::new();
    let minted: Value = http
        .post(format!("{base}/api/auth/manager/access-token"))
        .bearer_auth(&bearer)
        .json(&serde_json::json!({ "persistentTokenId": id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(minted["accessToken"].as_str().unwrap().starts_with("ey"));

    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "OIDC_ISSUER"),
        (
            &[
                ("OIDC_ISSUER", "http://127.0.0.1:9/realms/x"),
                ("OIDC_CLIENT_ID", "c"),
                ("OIDC_CLIENT_SECRET", "s"),
                ("PUBLIC_BASE_URL", "http://broker.test"),
            ],
            "TOKEN_ENCRYPTION_KEYS",
        ),
        (
            &[
                ("OIDC_ISSUER", "http://127.0.0.1:9/realms/x"),
                ("OIDC_CLIENT_ID", "c"),
                ("OIDC_CLIENT_SECRET", "s"),
                ("PUBLIC_BASE_URL", "http://broker.test"),
                ("TOKEN_ENCRYPTION_KEYS", "k1:dG9vLXNob3J0"),
            ],
            "TOKEN_ENCRYPTION_KEYS",
        ),
    ];
    for (vars, named) in cases {
        let output = broker()
            .arg("serve")
            .envs(vars.iter().copied())
            .env(
                "TOKEN_BROKER_DATA_DIR",
                std::env::temp_dir().join("tb-never-used"),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{stderr}");
        assert!(!stderr.contains("dG9vLXNob3J0"), "the key is not echoed");
    }
}

#[test]
fn an_unreachable_provider_stops_start_up_with_one_line() {
    let output = broker()
        .arg("serve")
        .envs([
            ("OIDC_ISSUER", "http://127.0.0.1:9/realms/x"),
            ("OIDC_CLIENT_ID", "c"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("PUBLIC_BASE_URL", "http://broker.test"),
            (
                "TOKEN_ENCRYPTION_KEYS",
                "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
            ),
            ("DATABASE_URL", "sqlite::memory:"),
            ("OIDC_AUTHORIZED_PARTIES", "frontend"),
            ("RUST_LOG", "off"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot discover the OpenID provider"),
        "{stderr}"
    );
}
