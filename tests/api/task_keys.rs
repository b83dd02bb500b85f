//! Tasks without their user, end to end: task keys against the real provider, across three
//! instances, with curl and a standard OAuth library; delegated service accounts with a real
//! client-credentials token; the credential helper keeping a file fresh.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::claims;
use crate::app::{spawn_rotating, spawn_with, unique_user, Options, TestApp};
use crate::idp::{Idp, BROKER_CLIENT, ROTATING_CLIENT};
use crate::process::{broker_env, BrokerProcess};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub(crate) async fn create_key(app: &TestApp, bearer: &str, id: Uuid, body: Value) -> String {
    let response = app
        .post(
            &format!("/api/auth/manager/offline-tokens/{id}/task-keys"),
            Some(bearer),
            body,
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["taskKey"].as_str().unwrap().to_owned()
}

async fn redeem(http: &reqwest::Client, base: &str, key: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/auth/manager/access-token"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_task_redeems_long_after_its_users_token_expired_with_a_narrowed_scope(pool: PgPool) {
    let idp = Idp::start(&[("IDP_ACCESS_TOKEN_TTL", "5")]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "weekend-notebook").await;
    let key = create_key(
        &app,
        &bearer,
        id,
        json!({ "name": "notebook", "scope": "openid" }),
    )
    .await;

    // Ten minutes later the user's own token is long expired: it cannot act any more.
    let now = chrono::Utc::now().timestamp();
    let expired = idp
        .sign(
            json!({ "iss": idp.issuer, "sub": user, "azp": "frontend", "iat": now - 900, "exp": now - 600 }),
            json!({}),
            false,
        )
        .await;
    assert_eq!(
        app.access_token(&expired, &id.to_string()).await.status(),
        401
    );
    // The task's key still works, and its tokens carry only the key's scope.
    let (status, body) = redeem(&app.http, &app.base, &key, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let minted = claims(body["accessToken"].as_str().unwrap());
    assert_eq!(minted["sub"], user.as_str());
    assert_eq!(minted["azp"], BROKER_CLIENT);
    assert_eq!(minted["scope"], "openid");
    assert_eq!(body["scope"], "openid");
    // The owner's full-scope token is a different one.
    let full: Value = app
        .access_token(&bearer, &id.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["scope"], "openid offline_access");
    assert_ne!(full["accessToken"], body["accessToken"]);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn max_uses_holds_exactly_across_three_instances(pool: PgPool) {
    let idp = Idp::shared();
    let url = crate::concurrency::database_url(&pool).await;
    let brokers: Vec<BrokerProcess> = (0..3)
        .map(|_| BrokerProcess::start(&broker_env(idp, ROTATING_CLIENT, &url)))
        .collect();
    let app = spawn_rotating(pool, idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let key = create_key(&app, &bearer, id, json!({ "maxUses": 20 })).await;

    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..50 {
        let (http, base, key) = (http.clone(), brokers[i % 3].base.clone(), key.clone());
        calls.push(tokio::spawn(async move {
            redeem(&http, &base, &key, json!({})).await.0
        }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!((ok, refused), (20, 30), "{statuses:?}");
    let uses: i32 = sqlx::query_scalar("select uses from task_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(uses, 20);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_delegated_service_account_redeems_with_a_real_client_credentials_token(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("DELEGATE_CLIENTS", "job-runner".into())],
            ..Options::new(idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let consent = app
        .request_consent(
            &bearer,
            json!({ "taskId": "batch", "delegates": ["job-runner"] }),
        )
        .await;
    assert_eq!(consent.status(), 201);
    let consent: Value = consent.json().await.unwrap();
    let back = app
        .sign_in(consent["consentUrl"].as_str().unwrap(), &user, true)
        .await;
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let delegated: Uuid = consent["persistentTokenId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let private = app.activate(&bearer, &user, "private").await;

    // The job runner signs in as itself (client credentials) at the provider.
    let tokens: Value = reqwest::Client::new()
        .post(idp.endpoint("token"))
        .basic_auth("job-runner", Some("job-runner-secret"))
        .form(&[("grant_type", "client_credentials"), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runner = tokens["access_token"]
        .as_str()
        .expect("a service-account token");
    assert_eq!(claims(runner)["azp"], "job-runner");

    let response = app.access_token(runner, &delegated.to_string()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        claims(body["accessToken"].as_str().unwrap())["sub"],
        user.as_str()
    );
    let actor: String = sqlx::query_scalar(
        "select actor from token_audit where token_id = $1 and action = 'token_issued'",
    )
    .bind(delegated)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(actor, "client:job-runner", "the audit names the client");
    assert_eq!(
        app.access_token(runner, &private.to_string())
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get_as(runner, "/api/auth/manager/offline-tokens")
            .await
            .status(),
        403
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn token_exchange_works_with_curl_and_with_authlib(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_with(pool, Options::new(idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let key = create_key(&app, &bearer, id, json!({})).await;
    let url = format!("{}/api/auth/manager/token", app.base);

    let curl = tokio::task::spawn_blocking({
        let (url, key) = (url.clone(), key.clone());
        move || {
            Command::new("curl")
                .args(["-s", "-X", "POST", &url])
                .args([
                    "-d",
                    "grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
                ])
                .args([
                    "-d",
                    "subject_token_type=urn:token-broker:params:oauth:token-type:task-key",
                ])
                .args(["--data-urlencode", &format!("subject_token={key}")])
                .args(["-d", "scope=openid"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_slice(&curl.stdout).expect("curl got JSON");
    // The provider's token type (RFC 6749 §5.1: case-insensitive).
    assert!(
        answer["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("Bearer")),
        "{answer}"
    );
    assert_eq!(
        answer["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(
        claims(answer["access_token"].as_str().unwrap())["scope"],
        "openid"
    );

    // A standard OAuth client library, as a task in Python would use it.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/token_exchange.py"
    );
    let python = tokio::task::spawn_blocking({
        let (url, key) = (url.clone(), key.clone());
        move || {
            Command::new("python3")
                .arg(script)
                .arg(&url)
                .env("TOKEN_BROKER_TASK_KEY", &key)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        python.status.success(),
        "authlib: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    let printed: Value = serde_json::from_slice(&python.stdout).unwrap();
    assert_eq!(printed["token_type"], "Bearer");
    assert_eq!(
        claims(printed["access_token"].as_str().unwrap())["sub"],
        user.as_str()
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_credential_helper_keeps_its_file_fresh_and_stops_on_sigterm(pool: PgPool) {
    let idp = Idp::start(&[("IDP_ACCESS_TOKEN_TTL", "6")]);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("ACCESS_TOKEN_CACHE_MARGIN_SECS", "2".into())],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let key = create_key(&app, &bearer, id, json!({})).await;
    let dir = std::env::temp_dir().join(format!("tb-helper-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("token");

    let helper = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_token-broker"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TOKEN_BROKER_URL", &app.base)
            .env("HOME", &dir)
            .stdin(Stdio::null());
        command
    };
    // Once, to stdout; and without a key, one line and a failure.
    let mut once = helper(&["task-token"]);
    once.env("TOKEN_BROKER_TASK_KEY", &key);
    let once = tokio::task::spawn_blocking(move || once.output().unwrap())
        .await
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert!(String::from_utf8_lossy(&once.stdout).starts_with("ey"));
    let keyless = helper(&["task-token"]).output().unwrap();
    assert!(!keyless.status.success());
    let message = String::from_utf8_lossy(&keyless.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("TOKEN_BROKER_TASK_KEY"));

    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let mut watching = helper(&[
        "task-token",
        "--key-file",
        key_file.to_str().unwrap(),
        "--sink",
        sink.to_str().unwrap(),
        "--watch",
    ])
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let started = Instant::now();
    while read(&sink).is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = read(&sink);
    assert!(
        first.starts_with("ey"),
        "the helper wrote a token: {first:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sink).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut second = first.clone();
    while second == first && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        second = read(&sink);
    }
    assert_ne!(second, first, "rewritten before the first token expired");
    assert!(second.starts_with("ey"));
    let _ = Command::new("kill")
        .args(["-TERM", &watching.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || watching.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn key_uses(app: &TestApp) -> i32 {
    sqlx::query_scalar("select uses from task_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Keycloak before 24 ignores `scope` on a refresh. A key limited to `openid` must then not
/// be handed the whole grant: an answer broader than asked for (by its `scope`, or by the
/// token's own claim when the answer says none) is refused, not served, not cached, and the
/// use is given back; an answer that says nothing of its scope is refused too.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_token_broader_than_the_narrowed_scope_is_never_served(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "narrow").await;
    let key = create_key(&app, &bearer, id, json!({ "scope": "openid" })).await;
    let cases = [
        json!({ "scope": "openid offline_access profile", "access_token": "broad-token" }),
        json!({ "scope": null, "access_token": "opaque-says-nothing" }),
    ];
    for set in cases {
        idp.set_faults(json!({ "set": set, "count": 1 })).await;
        let (status, body) = redeem(&app.http, &app.base, &key, json!({})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (502, Some("scope_not_narrowed")),
            "{set}: {body}"
        );
        assert_eq!(key_uses(&app).await, 0, "a refused token uses nothing");
    }
    // The provider narrows again: the next call asks it (nothing broad was cached) and serves
    // a token of the key's scope.
    let (status, body) = redeem(&app.http, &app.base, &key, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["accessToken"].as_str().unwrap())["scope"],
        "openid"
    );
    // The grant itself is untouched: active, and the owner's token still comes.
    let status: String = sqlx::query_scalar("select status from token_vault where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
}

/// A provider's `invalid_scope` (or Keycloak's `not_allowed`) on a narrowed refresh is the
/// request's fault: 400 `invalid_scope`, never counted as an outage, so it cannot open the
/// breaker for every row.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_refused_narrowed_scope_is_a_400_and_does_not_open_the_breaker(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "narrow").await;
    let key = create_key(&app, &bearer, id, json!({ "scope": "openid" })).await;
    for error in ["invalid_scope", "not_allowed"] {
        idp.set_faults(json!({ "answer": "error", "error": error, "status": 400, "count": 12 }))
            .await;
        for _ in 0..12 {
            let (status, body) = redeem(&app.http, &app.base, &key, json!({})).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_scope")),
                "{error}: {body}"
            );
        }
    }
    idp.set_faults(json!({ "clear": true })).await;
    let other = app.activate(&bearer, &user, "other").await;
    let response = app.access_token(&bearer, &other.to_string()).await;
    assert_eq!(response.status(), 200, "the breaker stayed closed");
    let failures: i32 =
        sqlx::query_scalar("select consecutive_failures from token_vault where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(failures, 0, "nothing counted against the row");
}
