//! The CLI's workload commands and its credential helper with a platform token: the real
//! binary, a real provider, a real broker, a local platform found through discovery.

use sqlx::PgPool;

use crate::app::{spawn_with, unique_user, Options};
use crate::cli::{cli, device_login, output_of, temp_config, text};
use crate::idp::Idp;
use crate::platform::{subject, Platform, AUDIENCE};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[sqlx::test(migrator = "MIGRATIONS")]
async fn workload_commands_bind_and_the_helper_redeems_with_the_platform_token(pool: PgPool) {
    let idp = Idp::shared();
    let platform = Platform::start().await;
    let mut options = Options::new(idp);
    options.extra = platform.settings();
    let app = spawn_with(pool, options).await;
    let config = temp_config();
    let user = unique_user("wanda");
    assert!(device_login(idp, &config, &user, &[])
        .await
        .status
        .success());
    let id = app
        .activate(&idp.user_token(&user).await, &user, "pipeline")
        .await
        .to_string();
    let run = |args: &[&str]| {
        let mut command = cli(&config, args);
        command.env("TOKEN_BROKER_URL", &app.base);
        command.env_remove("TOKEN_BROKER_TASK_KEY");
        output_of(command)
    };

    let bound = run(&[
        "workload",
        "bind",
        &id,
        "--issuer",
        &platform.issuer,
        "--subject",
        &subject("jobs", "runner"),
        "--claim",
        "kubernetes.io.serviceaccount.uid=uid-of-runner",
        "--name",
        "runner",
        "--max-uses",
        "5",
    ])
    .await;
    assert!(bound.status.success(), "{}", text(&bound.stderr));
    let binding_id = text(&bound.stdout).trim().to_owned();
    assert!(uuid::Uuid::parse_str(&binding_id).is_ok(), "{binding_id}");

    let listed = text(&run(&["workload", "list", &id]).await.stdout);
    assert!(listed.starts_with(&binding_id), "{listed}");
    assert!(
        listed
            .contains("active name=runner kubernetes.io.serviceaccount.uid=uid-of-runner uses=0/5"),
        "{listed}"
    );

    // The task's side: only the platform's token file, read for each exchange.
    let dir = std::env::temp_dir().join(format!("tb-workload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, platform.token("jobs", "runner", AUDIENCE)).unwrap();
    let token_file = token_file.display().to_string();
    let printed = run(&["task-token", "--workload-token-file", &token_file]).await;
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    assert!(text(&printed.stdout).trim().starts_with("ey"));
    let named = run(&[
        "task-token",
        "--workload-token-file",
        &token_file,
        "--grant",
        &id,
    ])
    .await;
    assert!(named.status.success(), "{}", text(&named.stderr));
    let sink = dir.join("access-token");
    let sunk = run(&[
        "task-token",
        "--workload-token-file",
        &token_file,
        "--sink",
        &sink.display().to_string(),
    ])
    .await;
    assert!(sunk.status.success(), "{}", text(&sunk.stderr));
    assert!(std::fs::read_to_string(&sink).unwrap().starts_with("ey"));

    // Another service account's token: one line naming the OAuth error, nothing printed.
    std::fs::write(
        dir.join("token"),
        platform.token("jobs", "builder", AUDIENCE),
    )
    .unwrap();
    let refused = run(&["task-token", "--workload-token-file", &token_file]).await;
    assert!(!refused.status.success());
    assert_eq!(text(&refused.stdout), "");
    let message = text(&refused.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("token-broker: broker: invalid_request:"),
        "{message}"
    );

    let unbound = run(&["workload", "unbind", &id, &binding_id]).await;
    assert!(text(&unbound.stdout).starts_with(&format!("{binding_id} revoked")));
    std::fs::write(
        dir.join("token"),
        platform.token("jobs", "runner", AUDIENCE),
    )
    .unwrap();
    let after = run(&["task-token", "--workload-token-file", &token_file]).await;
    assert!(!after.status.success(), "an unbound workload gets nothing");

    for (args, words) in [
        (
            vec![
                "workload",
                "bind",
                &id,
                "--issuer",
                "https://x.test",
                "--subject",
                "s",
            ],
            "WORKLOAD_ISSUERS",
        ),
        (
            vec![
                "workload",
                "bind",
                &id,
                "--issuer",
                &platform.issuer,
                "--subject",
                "s",
                "--claim",
                "novalue",
            ],
            "PATH=VALUE",
        ),
        (
            vec!["task-token", "--workload-token-file", "/nonexistent/token"],
            "cannot read the workload token file",
        ),
    ] {
        let bad = run(&args).await;
        assert!(!bad.status.success(), "{args:?}");
        let message = text(&bad.stderr);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(words), "{args:?}: {message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
