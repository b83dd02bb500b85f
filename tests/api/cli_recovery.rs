//! The CLI where a user's session goes wrong (issue 16): a consent that takes longer than an
//! access token lives, a wrong secrets key, a lost one, and a `.env` that is not the user's.

use std::time::Duration;

use sqlx::PgPool;
use token_broker::client::secrets::SecretsKey;

use crate::app::{spawn_with, unique_user, Options};
use crate::cli::{
    cli, device_login, finish_lines, output_of, scratch_dir, spawn_lines, stored_secret,
    temp_config, text, CLI_CLIENT,
};
use crate::idp::Idp;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The broker accepts an access token this long past its `exp` (its clock leeway).
const BROKER_LEEWAY: Duration = Duration::from_secs(30);

#[sqlx::test(migrator = "MIGRATIONS")]
async fn consent_wait_renews_the_login_while_the_person_takes_their_time(pool: PgPool) {
    // Access tokens of one second: the first one the CLI holds is refused by the broker
    // once the leeway has passed, long before this consent is completed.
    let idp = Idp::start(&[("IDP_ACCESS_TOKEN_TTL", "1")]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let config = temp_config();
    let user = unique_user("heidi");
    assert!(device_login(&idp, &config, &user, &["--offline"])
        .await
        .status
        .success());

    let mut waiting = cli(&config, &["consent", "--task", "slow-person", "--wait"]);
    waiting.env("TOKEN_BROKER_URL", &app.base);
    let (waiting, mut lines) = spawn_lines(waiting);
    let consent_url = lines.recv().await.expect("consent prints the URL first");
    tokio::time::sleep(BROKER_LEEWAY + Duration::from_secs(4)).await;
    let back = app.sign_in(&consent_url, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let (done, last) = finish_lines(waiting, lines).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        last.unwrap().ends_with(" active task=slow-person"),
        "the wait saw the consent"
    );
    // Every poll renewed the login: far more refresh grants than the one-off renewal.
    let refreshes = idp
        .events_for(&user, CLI_CLIENT)
        .await
        .iter()
        .filter(|e| *e == "grant.refresh_token")
        .count();
    assert!(refreshes > 5, "{refreshes} renewals");
}

/// A config holding encrypted tokens plus a plain-text value an older tool left behind.
async fn partly_plain_config(user: &str) -> std::path::PathBuf {
    let config = temp_config();
    assert!(device_login(Idp::shared(), &config, user, &[])
        .await
        .status
        .success());
    let mut file = std::fs::read_to_string(&config).unwrap();
    file.push_str("client-token:\n  client-id: batch\n  access-token: plain-value\n");
    std::fs::write(&config, file).unwrap();
    config
}

#[tokio::test]
async fn a_wrong_key_leaves_a_partly_plain_file_byte_identical() {
    let config = partly_plain_config(&unique_user("ivan")).await;
    let before = std::fs::read(&config).unwrap();
    let (_, other_key) = SecretsKey::generate();
    for command in ["whoami", "list"] {
        let wrong = cli(&config, &[command])
            .env("TOKEN_BROKER_SECRETS_KEY", other_key.as_str())
            .output()
            .unwrap();
        assert!(!wrong.status.success(), "{command}");
        let message = text(&wrong.stderr);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.contains("cannot decrypt device-token.access-token"),
            "{message}"
        );
        assert_eq!(std::fs::read(&config).unwrap(), before, "{command}");
    }

    // With the right key (the file's own), the plain value is encrypted as before.
    let right = cli(&config, &["whoami"]).output().unwrap();
    assert!(right.status.success(), "{}", text(&right.stderr));
    assert_eq!(
        stored_secret(&config, "client-token", "access-token"),
        "plain-value"
    );
}

/// The command a one-line error advises, between backticks, as words.
fn advised_command(message: &str) -> Vec<String> {
    let advice = message
        .split('`')
        .nth(1)
        .expect("the message names a command");
    let words: Vec<String> = advice.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], "token-broker", "{message}");
    words[1..].to_vec()
}

#[tokio::test]
async fn the_missing_key_advice_works_logout_needs_no_key() {
    let idp = Idp::shared();
    let config = temp_config();
    let user = unique_user("judy");
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let without_key: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("secrets-encryption:"))
        .map(|l| format!("{l}\n"))
        .chain(["some-setting: kept\n".to_owned()])
        .collect();
    std::fs::write(&config, &without_key).unwrap();

    let missing = cli(&config, &["whoami"]).output().unwrap();
    assert!(!missing.status.success());
    let message = text(&missing.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    let advice = advised_command(&message);
    assert_eq!(advice, ["logout"]);

    let args: Vec<&str> = advice.iter().map(String::as_str).collect();
    let followed = cli(&config, &args).output().unwrap();
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(!file.contains("device-token"), "{file}");
    assert!(file.contains("some-setting: kept"), "the rest is kept");
    assert!(file.contains(&format!("issuer: {}", idp.issuer)));

    // "... and sign in again": the login makes a new key and works.
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let whoami = cli(&config, &["whoami"]).output().unwrap();
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    assert!(text(&whoami.stdout).starts_with(&user));
}

#[tokio::test]
async fn the_wrong_key_advice_works_too() {
    let config = partly_plain_config(&unique_user("ken")).await;
    let (_, other_key) = SecretsKey::generate();
    let wrong = cli(&config, &["whoami"])
        .env("TOKEN_BROKER_SECRETS_KEY", other_key.as_str())
        .output()
        .unwrap();
    let advice = advised_command(&text(&wrong.stderr));
    let args: Vec<&str> = advice.iter().map(String::as_str).collect();
    let followed = cli(&config, &args)
        .env("TOKEN_BROKER_SECRETS_KEY", other_key.as_str())
        .output()
        .unwrap();
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(!file.contains("device-token") && !file.contains("client-token"));
    assert!(
        file.contains("secrets-encryption:"),
        "the file's key is kept"
    );

    let again = cli(&config, &["logout"]).output().unwrap();
    assert!(again.status.success());
    assert!(text(&again.stdout).starts_with("Not signed in; nothing to remove"));
}

#[tokio::test]
async fn user_commands_do_not_read_a_dot_env_but_service_commands_do() {
    let dir = scratch_dir("tb-dotenv");
    std::fs::create_dir_all(&dir).unwrap();
    // Not parseable, and it would point the CLI elsewhere if it were read.
    std::fs::write(
        dir.join(".env"),
        "TOKEN_BROKER_URL=http://elsewhere.invalid\nBROKEN='unterminated\n",
    )
    .unwrap();
    let config = temp_config();

    let mut whoami = cli(&config, &["whoami"]);
    whoami.current_dir(&dir);
    let user_side = output_of(whoami).await;
    assert_eq!(
        text(&user_side.stderr).trim(),
        "token-broker: not signed in; run `token-broker login`"
    );

    let mut migrate = cli(&config, &["migrate"]);
    migrate.current_dir(&dir);
    let service_side = output_of(migrate).await;
    assert!(!service_side.status.success());
    assert!(
        text(&service_side.stderr).starts_with("token-broker: cannot read .env:"),
        "{}",
        text(&service_side.stderr)
    );
}
