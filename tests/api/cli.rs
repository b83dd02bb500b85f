//! The CLI as a user runs it: the real binary, a real provider, a real broker.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use secrecy::ExposeSecret;
use sqlx::PgPool;
use token_broker::client::secrets::SecretsKey;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use crate::app::{spawn_app, unique_user};
use crate::idp::{Browser, Idp};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
pub(crate) const CLI_CLIENT: &str = "token-broker-cli";

/// A fresh path `{prefix}-{uuid}` (not yet made) under `target/tmp` (Cargo's
/// `CARGO_TARGET_TMPDIR`), for what a test cannot remove itself: it goes with `target/`, not
/// into /tmp on every run.
pub(crate) fn scratch_dir(prefix: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{}", Uuid::new_v4()))
}

/// A config path in a directory of its own.
pub(crate) fn temp_config() -> PathBuf {
    scratch_dir("tb-cli").join("config.yaml")
}

pub(crate) fn cli(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_token-broker"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TOKEN_BROKER_CONFIG", config)
        .stdin(Stdio::null());
    command
}

/// Runs a command off the test's runtime, which may be serving the broker or a stub meanwhile.
pub(crate) async fn output_of(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `token-broker login` and approves the device code in a "browser" as `user`.
pub(crate) async fn device_login(idp: &Idp, config: &Path, user: &str, extra: &[&str]) -> Output {
    let mut args = vec!["login", "--issuer", &idp.issuer];
    args.extend_from_slice(extra);
    let mut child: Child = cli(config, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let complete = loop {
        let line = lines.next().expect("login shows the code").unwrap();
        shown.push(line.clone());
        if let Some(url) = line.strip_prefix("Or open: ") {
            break url.to_owned();
        }
    };
    assert!(shown[0].starts_with("To sign in, open "), "{shown:?}");
    let page = Browser::new().approve_device(&complete, user).await;
    assert!(!page.contains("<form"), "approval ended on a form: {page}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    Output {
        stdout: [shown, rest].concat().join("\n").into_bytes(),
        ..output
    }
}

/// Starts a long-running command and hands its stdout over line by line, read on a thread:
/// the test's runtime also serves the broker meanwhile.
pub(crate) fn spawn_lines(mut command: Command) -> (Child, UnboundedReceiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    (child, lines)
}

/// Waits for a command from `spawn_lines` to end: its output and its last line.
pub(crate) async fn finish_lines(
    child: Child,
    mut lines: UnboundedReceiver<String>,
) -> (Output, Option<String>) {
    let mut last = None;
    while let Some(line) = lines.recv().await {
        last = Some(line);
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (output, last)
}

/// The secrets key and decrypted values of a config file, read as only the CLI could.
pub(crate) fn stored_secret(config: &Path, section: &str, field: &str) -> String {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let key = SecretsKey::parse(yaml["secrets-encryption"].as_str().unwrap()).unwrap();
    let value = yaml[section][field].as_str().unwrap();
    key.decrypt(&format!("{section}.{field}"), value)
        .unwrap()
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn device_login_stores_tokens_encrypted_and_whoami_uses_them() {
    let idp = Idp::shared();
    let config = temp_config();
    let user = unique_user("carol");

    let output = device_login(idp, &config, &user, &["--offline"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("Signed in"));

    let file = std::fs::read_to_string(&config).unwrap();
    let access = stored_secret(&config, "device-token", "access-token");
    let refresh = stored_secret(&config, "device-token", "refresh-token");
    assert!(access.starts_with("ey") && refresh.len() > 20);
    for plain in [&access, &refresh] {
        assert!(!file.contains(plain.as_str()), "a token is stored in clear");
    }
    assert!(file.contains("access-token: secure://"));
    assert!(file.contains(&format!("issuer: {}", idp.issuer)));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let whoami = cli(&config, &["whoami"]).output().unwrap();
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    assert!(text(&whoami.stdout).starts_with(&format!("{user} via {CLI_CLIENT}")));

    let logout = cli(&config, &["logout"]).output().unwrap();
    assert!(logout.status.success());
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains("device-token"));
    let after = cli(&config, &["whoami"]).output().unwrap();
    assert!(!after.status.success());
    assert_eq!(
        text(&after.stderr).trim(),
        "token-broker: not signed in; run `token-broker login`"
    );
}

#[tokio::test]
async fn plain_text_tokens_are_encrypted_on_first_use() {
    let idp = Idp::shared();
    let config = temp_config();
    let user = unique_user("dave");
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let access = stored_secret(&config, "device-token", "access-token");
    let refresh = stored_secret(&config, "device-token", "refresh-token");
    // A config as the original tool wrote it: tokens in clear, no key yet.
    let plain = format!(
        "issuer: {}\ndevice-token:\n  client-id: {CLI_CLIENT}\n  access-token: {access}\n  \
         refresh-token: {refresh}\n  expires-at: 2099-01-01T00:00:00Z\nsome-setting: kept\n",
        idp.issuer
    );
    std::fs::write(&config, plain).unwrap();

    let whoami = cli(&config, &["whoami"]).output().unwrap();
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(!file.contains(&access) && !file.contains(&refresh));
    assert!(file.contains("secrets-encryption:"));
    assert!(file.contains("some-setting: kept"), "unknown keys survive");
    assert_eq!(
        stored_secret(&config, "device-token", "refresh-token"),
        refresh
    );
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_a_clear_error_and_changes_nothing() {
    let idp = Idp::shared();
    let config = temp_config();
    assert!(device_login(idp, &config, &unique_user("erin"), &[])
        .await
        .status
        .success());
    let before = std::fs::read(&config).unwrap();

    let (_, other_key) = SecretsKey::generate();
    let wrong = cli(&config, &["whoami"])
        .env("TOKEN_BROKER_SECRETS_KEY", other_key.as_str())
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let message = text(&wrong.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("cannot decrypt device-token.access-token"),
        "{message}"
    );
    assert_eq!(std::fs::read(&config).unwrap(), before);

    let without_key: String = text(&before)
        .lines()
        .filter(|l| !l.starts_with("secrets-encryption:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, &without_key).unwrap();
    let missing = cli(&config, &["whoami"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("holds encrypted tokens but no key"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        without_key,
        "no silent re-keying"
    );
}

#[tokio::test]
async fn two_processes_renewing_at_once_keep_the_rotated_token() {
    // Rotation on, and access tokens shorter than the CLI's renewal margin: every use renews.
    let idp = Idp::start(&[
        ("IDP_ROTATE_REFRESH_TOKENS", "1"),
        ("IDP_ACCESS_TOKEN_TTL", "30"),
    ]);
    let config = temp_config();
    let user = unique_user("frank");
    assert!(device_login(&idp, &config, &user, &["--offline"])
        .await
        .status
        .success());

    let both: Vec<Child> = (0..2)
        .map(|_| {
            cli(&config, &["whoami"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in both {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let third = cli(&config, &["whoami"]).output().unwrap();
    assert!(
        third.status.success(),
        "the stored token still works: {}",
        text(&third.stderr)
    );
    let events = idp.events_for(&user, CLI_CLIENT).await;
    let refreshes = events
        .iter()
        .filter(|e| *e == "grant.refresh_token")
        .count();
    assert_eq!(refreshes, 3, "{events:?}");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn client_commands_drive_the_broker_end_to_end(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let config = temp_config();
    let user = unique_user("grace");
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let run = |args: &[&str]| {
        let mut command = cli(&config, args);
        command.env("TOKEN_BROKER_URL", &app.base);
        output_of(command)
    };

    // consent --wait: the user completes the consent in a browser meanwhile.
    let mut waiting = cli(&config, &["consent", "--task", "nightly", "--wait"]);
    waiting.env("TOKEN_BROKER_URL", &app.base);
    let (waiting, mut lines) = spawn_lines(waiting);
    let consent_url = lines.recv().await.expect("consent prints the URL first");
    let back = app.sign_in(&consent_url, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let (done, last) = finish_lines(waiting, lines).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    let last = last.expect("a final status line");
    let (id, rest) = last.split_once(' ').unwrap();
    assert_eq!(rest, "active task=nightly");

    let status = run(&["status", id]).await;
    assert_eq!(
        text(&status.stdout).trim(),
        format!("{id} active task=nightly")
    );
    let listed = run(&["list", "--task", "nightly"]).await;
    assert_eq!(
        text(&listed.stdout).trim(),
        format!("{id} active task=nightly")
    );

    let token = run(&["token", id]).await;
    assert!(token.status.success(), "{}", text(&token.stderr));
    let printed = text(&token.stdout);
    assert_eq!(printed.lines().count(), 1, "only the token, for $(...)");
    assert!(printed.starts_with("ey"));

    // reconsent --wait: a new consent for the same id, completed in the browser meanwhile.
    let mut again = cli(&config, &["reconsent", id, "--wait"]);
    again.env("TOKEN_BROKER_URL", &app.base);
    let (again, mut lines) = spawn_lines(again);
    let reconsent_url = lines.recv().await.expect("reconsent prints the URL first");
    assert_ne!(reconsent_url, consent_url);
    let back = app.sign_in(&reconsent_url, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let (done, last) = finish_lines(again, lines).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert_eq!(last.unwrap(), format!("{id} active task=nightly"));

    let revoked = run(&["revoke", id]).await;
    assert_eq!(
        text(&revoked.stdout).trim(),
        format!("{id} revoked task=nightly reason=revoked_by_user (provider: revoked)")
    );
    let refused = run(&["token", id]).await;
    assert!(!refused.status.success());
    assert_eq!(text(&refused.stdout), "");
    let message = text(&refused.stderr);
    assert_eq!(message.lines().count(), 1);
    assert!(
        message.starts_with("token-broker: broker: token_revoked:"),
        "{message}"
    );

    let gone = run(&["reconsent", id]).await;
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).starts_with("token-broker: broker: token_revoked:"),
        "{}",
        text(&gone.stderr)
    );

    let unknown = run(&["status", &Uuid::new_v4().to_string()]).await;
    assert!(text(&unknown.stderr).contains("token_not_found"));
}

/// A provider stub that answers the device-token polls from a script, recording when each poll
/// came: only for injecting the RFC 8628 answers a real provider gives at its own discretion.
mod stub {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    #[derive(Clone)]
    pub struct Stub {
        pub base: String,
        pub polls: Arc<Mutex<Vec<Instant>>>,
    }

    type Script = Arc<Mutex<VecDeque<(StatusCode, Value)>>>;

    pub async fn start(answers: Vec<(StatusCode, Value)>) -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let polls = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(Mutex::new(answers.into()));
        let metadata = json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/certs"),
            "device_authorization_endpoint": format!("{base}/device"),
        });
        let device = json!({
            "device_code": "stub-device-code",
            "user_code": "STUB-CODE",
            "verification_uri": format!("{base}/verify"),
            "verification_uri_complete": format!("{base}/verify?user_code=STUB-CODE"),
            "interval": 1,
            "expires_in": 60,
        });
        let recorded = polls.clone();
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(metadata) }),
            )
            .route("/device", post(move || async move { Json(device) }))
            .route(
                "/token",
                post(move |State(script): State<Script>| async move {
                    recorded.lock().unwrap().push(Instant::now());
                    let next = script.lock().unwrap().pop_front();
                    let (status, body) = next.unwrap_or((StatusCode::BAD_REQUEST, json!({})));
                    (status, Json(body))
                }),
            )
            .with_state(script);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub { base, polls }
    }

    pub fn error(code: &str) -> (StatusCode, Value) {
        (StatusCode::BAD_REQUEST, json!({ "error": code }))
    }

    pub fn tokens() -> (StatusCode, Value) {
        (
            StatusCode::OK,
            json!({
                "access_token": "stub-access-token",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "stub-refresh-token",
                "scope": "openid profile email offline_access",
            }),
        )
    }
}

async fn login_at_stub(stub: &stub::Stub) -> (Output, PathBuf) {
    let config = temp_config();
    let command = cli(&config, &["login", "--offline", "--issuer", &stub.base]);
    (output_of(command).await, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn device_polling_waits_on_pending_and_slows_down_by_five_seconds() {
    let stub = stub::start(vec![
        stub::error("authorization_pending"),
        stub::error("slow_down"),
        stub::tokens(),
    ])
    .await;
    let (output, config) = login_at_stub(&stub).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let polls = stub.polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 3);
    let pending_gap = polls[1] - polls[0];
    let slowed_gap = polls[2] - polls[1];
    assert!(
        pending_gap.as_secs_f64() >= 1.0,
        "interval honoured: {pending_gap:?}"
    );
    assert!(
        slowed_gap.as_secs_f64() >= 6.0,
        "slow_down adds 5 s: {slowed_gap:?}"
    );
    assert_eq!(
        stored_secret(&config, "device-token", "refresh-token"),
        "stub-refresh-token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_or_expired_device_code_ends_login_with_one_line() {
    for (answer, expected) in [
        ("access_denied", "sign-in was refused"),
        ("expired_token", "the code expired before it was approved"),
    ] {
        let stub = stub::start(vec![stub::error(answer)]).await;
        let (output, config) = login_at_stub(&stub).await;
        assert!(!output.status.success(), "{answer}");
        let message = text(&output.stderr);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!std::fs::read_to_string(&config)
            .unwrap_or_default()
            .contains("device-token"));
    }
}

#[tokio::test]
async fn client_credentials_login_stores_the_secret_encrypted() {
    let idp = Idp::shared();
    let config = temp_config();
    let mut command = cli(
        &config,
        &[
            "login",
            "--method",
            "credentials",
            "--issuer",
            &idp.issuer,
            "--client-id",
            "token-broker",
        ],
    );
    command.env("TOKEN_BROKER_CLIENT_SECRET", crate::idp::CLIENT_SECRET);
    let output = output_of(command).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(file.contains("client-token:"));
    assert!(
        !file.contains(crate::idp::CLIENT_SECRET),
        "the client secret is encrypted too"
    );
    assert_eq!(
        stored_secret(&config, "client-token", "client-secret"),
        crate::idp::CLIENT_SECRET
    );
    let missing_secret = cli(
        &config,
        &[
            "login",
            "--method",
            "credentials",
            "--issuer",
            &idp.issuer,
            "--client-id",
            "x",
        ],
    )
    .output()
    .unwrap();
    assert!(!missing_secret.status.success());
    assert!(text(&missing_secret.stderr).contains("needs --client-secret"));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn task_key_commands_issue_list_and_revoke_keys(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool).await;
    let config = temp_config();
    let user = unique_user("heidi");
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let id = app
        .activate(&idp.user_token(&user).await, &user, "nightly")
        .await
        .to_string();
    let run = |args: &[&str]| {
        let mut command = cli(&config, args);
        command.env("TOKEN_BROKER_URL", &app.base);
        output_of(command)
    };

    let created = run(&[
        "task-key",
        "create",
        &id,
        "--name",
        "nightly",
        "--scope",
        "openid",
        "--max-uses",
        "3",
        "--expires",
        "2h",
        "--cidr",
        "10.0.0.0/8",
    ])
    .await;
    assert!(created.status.success(), "{}", text(&created.stderr));
    let key = text(&created.stdout);
    assert_eq!(key.lines().count(), 1, "only the key on stdout");
    assert!(key.trim().starts_with("tbk_"));
    assert!(text(&created.stderr).contains("shown once"));

    let listed = run(&["task-key", "list", &id]).await;
    let line = text(&listed.stdout);
    assert!(
        line.contains("active name=nightly scope=\"openid\" uses=0/3"),
        "{line}"
    );
    assert!(!line.contains(key.trim()), "no secret in the list");
    let key_id = line.split_whitespace().next().unwrap().to_owned();

    let revoked = run(&["task-key", "revoke", &id, &key_id]).await;
    assert!(text(&revoked.stdout).starts_with(&format!("{key_id} revoked")));
    let bad = run(&["task-key", "create", &id, "--expires", "soon"]).await;
    assert!(!bad.status.success());
    assert_eq!(text(&bad.stderr).lines().count(), 1);
    assert!(text(&bad.stderr).contains("--expires"));
    let stranger = run(&["task-key", "list", &Uuid::new_v4().to_string()]).await;
    assert!(text(&stranger.stderr).contains("token_not_found"));
}
