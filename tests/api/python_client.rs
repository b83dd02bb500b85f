//! The Python task client (clients/python) against this broker and the test provider: the
//! Rust side prepares rows and keys, then runs the package's pytest suite (issue 15).

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::{spawn_with, unique_user, Options};
use crate::idp::Idp;
use crate::platform::{subject, Platform, AUDIENCE};
use crate::task_keys::create_key;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_python_task_client_passes_its_suite_against_the_live_broker(pool: PgPool) {
    let idp = Idp::shared();
    let platform = Platform::start().await;
    let mut options = Options::new(idp);
    options.extra = platform.settings();
    let app = spawn_with(pool, options).await;
    let user = unique_user("ursula");
    let bearer = idp.user_token(&user).await;

    let id = app.activate(&bearer, &user, "notebook").await;
    let key = create_key(&app, &bearer, id, json!({})).await;

    let revoked_key = create_key(&app, &bearer, id, json!({ "name": "old" })).await;
    let listed: Value = app
        .get_as(
            &bearer,
            &format!("/api/auth/manager/offline-tokens/{id}/task-keys"),
        )
        .await
        .json()
        .await
        .unwrap();
    let old = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old")
        .unwrap()["taskKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/auth/manager/offline-tokens/{id}/task-keys/{old}");
    assert_eq!(app.delete_as(&bearer, &path).await.status(), 200);

    let gone = app.activate(&bearer, &user, "finished").await;
    let revoked_row_key = create_key(&app, &bearer, gone, json!({})).await;
    let path = format!("/api/auth/manager/offline-tokens/{gone}");
    assert_eq!(app.delete_as(&bearer, &path).await.status(), 200);

    // The notebook's row is also bound to the `jobs/runner` service account of the platform.
    let binding = app
        .post(
            &format!("/api/auth/manager/offline-tokens/{id}/workloads"),
            Some(&bearer),
            json!({ "issuer": platform.issuer, "subject": subject("jobs", "runner") }),
        )
        .await;
    assert_eq!(binding.status(), 201, "{}", binding.text().await.unwrap());
    let workload_token = platform.token("jobs", "runner", AUDIENCE);
    let wrong_audience = platform.token("jobs", "runner", "https://elsewhere.test");

    let root = env!("CARGO_MANIFEST_DIR");
    let pytest = tokio::task::spawn_blocking({
        let base = app.base.clone();
        move || {
            Command::new("python3")
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
                .current_dir(format!("{root}/clients/python"))
                .env("PYTHONPATH", format!("{root}/clients/python/src"))
                .env("TOKEN_BROKER_URL", base)
                .env("TOKEN_BROKER_TASK_KEY", &key)
                .env("TB_TEST_KEY", &key)
                .env("TB_TEST_USER", &user)
                .env("TB_TEST_REVOKED_KEY", revoked_key)
                .env("TB_TEST_REVOKED_ROW_KEY", revoked_row_key)
                .env("TB_TEST_GRANT", id.to_string())
                .env("TB_TEST_WORKLOAD_TOKEN", workload_token)
                .env("TB_TEST_WORKLOAD_WRONG_AUDIENCE", wrong_audience)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&pytest.stdout);
    assert!(
        pytest.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&pytest.stderr)
    );
    assert!(
        report.contains("17 passed") && !report.contains("skipped"),
        "{report}"
    );
}
