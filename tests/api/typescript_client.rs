//! The TypeScript client (clients/typescript) against this broker and the test provider: its
//! node tests call the API while this side completes a consent in the "browser" (issue 15).

use std::process::Command;

use sqlx::PgPool;

use crate::app::{spawn_with, unique_user, Options};
use crate::cli::{finish_lines, spawn_lines};
use crate::idp::Idp;
use crate::platform::Platform;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_typescript_client_passes_its_suite_against_the_live_broker(pool: PgPool) {
    let idp = Idp::shared();
    let platform = Platform::start().await;
    let mut options = Options::new(idp);
    options.extra = platform.settings();
    let app = spawn_with(pool, options).await;
    let user = unique_user("vera");
    let bearer = idp.user_token(&user).await;
    let pending = app.consent(&bearer, "frontend-task").await;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/typescript");
    let build = tokio::task::spawn_blocking(move || {
        Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=tap", "test/"])
        .current_dir(dir)
        .env("TOKEN_BROKER_URL", &app.base)
        .env("TB_BEARER", &bearer)
        .env("TB_USER", &user)
        .env("TB_PENDING_ID", pending.id.to_string())
        .env("TB_WORKLOAD_ISSUER", &platform.issuer);
    let (node, mut lines) = spawn_lines(node);
    let mut report = Vec::new();
    while let Some(line) = lines.recv().await {
        let waiting = line.contains("waiting-for-consent");
        report.push(line);
        if waiting {
            break;
        }
    }
    // The client is polling now: the person consents in the browser.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let back = app.sign_in(&pending.url, &user, true).await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);

    while let Some(line) = lines.recv().await {
        report.push(line);
    }
    let (output, _) = finish_lines(node, lines).await;
    let report = report.join("\n");
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("# pass 4") && report.contains("# skipped 0"),
        "{report}"
    );
}
