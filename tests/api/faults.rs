//! The refresh path under faults: callers that give up, slow, busy, broken or absent providers,
//! lost races and revocations during a refresh. Each test states what the broker promises; the
//! times it prints are for docs/reliability.md, and only generous bounds are asserted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::app::{spawn_rotating, spawn_with, unique_user, Options, TestApp};
use crate::idp::{Idp, BROKER_CLIENT, ROTATING_CLIENT};
use crate::process::FaultProxy;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const ACCESS_TOKEN: &str = "/api/auth/manager/access-token";

pub(crate) async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits up to `limit` for `check` to hold.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A rotating grant whose refresh is slow to answer, and a caller that gives up on it after
/// 0.4 s. The provider rotates the token either way; the broker must store the new one.
async fn a_caller_that_gives_up_loses_no_grant(pool: PgPool, http2: bool) {
    let idp = Idp::start(&[]);
    let app = spawn_rotating(pool, &idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let original = app.stored_refresh_token(id).await;

    let mut client = reqwest::Client::builder().timeout(Duration::from_millis(400));
    if http2 {
        client = client.http2_prior_knowledge();
    }
    let client = client.build().unwrap();
    let health = client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let version = if http2 {
        reqwest::Version::HTTP_2
    } else {
        reqwest::Version::HTTP_11
    };
    assert_eq!(health.version(), version);

    idp.set_faults(json!({ "delayMs": 1500, "when": "after", "count": 1 }))
        .await;
    let gave_up = client
        .post(format!("{}{ACCESS_TOKEN}", app.base))
        .bearer_auth(&bearer)
        .json(&json!({ "persistentTokenId": id }))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout(), "the caller gave up");

    // The refresh finishes without its caller: the rotated token lands in the row.
    let rotated = eventually(Duration::from_secs(5), || async {
        app.stored_refresh_token(id).await != original
    })
    .await;
    assert!(rotated, "the rotated refresh token was stored");
    assert_eq!(app.row(id).await.status, "active");
    let current = app.stored_refresh_token(id).await;
    assert!(idp.is_active(ROTATING_CLIENT, &current).await);

    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        idp.count(&user, ROTATING_CLIENT, "refresh_token.reused")
            .await,
        0
    );
    assert_eq!(
        idp.count(&user, ROTATING_CLIENT, "grant.refresh_token")
            .await,
        1
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_caller_that_gives_up_over_http1_loses_no_grant(pool: PgPool) {
    a_caller_that_gives_up_loses_no_grant(pool, false).await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_caller_that_resets_its_http2_stream_loses_no_grant(pool: PgPool) {
    a_caller_that_gives_up_loses_no_grant(pool, true).await;
}

async fn activate_rows(app: &TestApp, bearer: &str, user: &str, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(app.activate(bearer, user, &format!("task-{i}")).await);
    }
    ids
}

fn call_access_token(app: &TestApp, bearer: &str, id: Uuid) -> tokio::task::JoinHandle<u16> {
    let (http, url, bearer) = (
        reqwest::Client::new(),
        format!("{}{ACCESS_TOKEN}", app.base),
        bearer.to_owned(),
    );
    tokio::spawn(async move {
        http.post(url)
            .bearer_auth(bearer)
            .json(&json!({ "persistentTokenId": id }))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn thirty_slow_refreshes_leave_health_reads_and_consents_fast(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_with(pool, Options::new(&idp)).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let ids = activate_rows(&app, &bearer, &user, 30).await;

    // The provider now takes 8 s for every refresh.
    idp.set_faults(json!({ "delayMs": 8000, "when": "before" }))
        .await;
    let started = Instant::now();
    let calls: Vec<_> = ids
        .iter()
        .map(|id| call_access_token(&app, &bearer, *id))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let timed = |label: &'static str, at: Instant, status: u16| {
        let elapsed = at.elapsed();
        eprintln!("slow provider, 30 refreshes waiting: {label} answered {status} in {elapsed:?}");
        (elapsed, status)
    };
    let at = Instant::now();
    let ready = app.get("/readyz").await.status().as_u16();
    let (readyz, ready) = timed("/readyz", at, ready);
    let at = Instant::now();
    let read = app
        .get_as(
            &bearer,
            &format!("/api/auth/manager/offline-tokens/{}", ids[0]),
        )
        .await
        .status()
        .as_u16();
    let (status_read, read) = timed("status read", at, read);
    let at = Instant::now();
    let consent = app
        .request_consent(&bearer, json!({ "taskId": "new" }))
        .await
        .status()
        .as_u16();
    let (new_consent, consent) = timed("new consent", at, consent);
    assert_eq!((ready, read, consent), (200, 200, 201));
    for elapsed in [readyz, status_read, new_consent] {
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    for call in calls {
        assert_eq!(call.await.unwrap(), 200, "the slow refreshes all succeed");
    }
    eprintln!(
        "the 30 slow refreshes finished after {:?}",
        started.elapsed()
    );
    idp.set_faults(json!({ "clear": true })).await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn beyond_the_provider_call_bound_callers_get_503_at_once(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("PROVIDER_MAX_CONCURRENCY", "5".into())],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let ids = activate_rows(&app, &bearer, &user, 12).await;
    idp.set_faults(json!({ "delayMs": 2000, "when": "before" }))
        .await;

    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for id in &ids {
        let (http, url, bearer, id) = (
            http.clone(),
            format!("{}{ACCESS_TOKEN}", app.base),
            bearer.clone(),
            *id,
        );
        calls.push(tokio::spawn(async move {
            let at = Instant::now();
            let response = http
                .post(url)
                .bearer_auth(bearer)
                .json(&json!({ "persistentTokenId": id }))
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").is_some();
            let (status, body) = json_of(response).await;
            (status, body["error"].clone(), retry_after, at.elapsed())
        }));
    }
    let mut served = 0;
    let mut busy = 0;
    for call in calls {
        let (status, error, retry_after, elapsed) = call.await.unwrap();
        match status {
            200 => served += 1,
            503 => {
                busy += 1;
                assert_eq!(error, "provider_busy");
                assert!(retry_after, "busy answers say when to retry");
                assert!(
                    elapsed < Duration::from_secs(1),
                    "answered at once: {elapsed:?}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((served, busy), (5, 7));
    idp.set_faults(json!({ "clear": true })).await;
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_lost_race_between_instances_is_not_a_revoked_grant(pool: PgPool) {
    let idp = Idp::start(&[]);
    let first = spawn_rotating(pool.clone(), &idp).await;
    let second = spawn_rotating(pool.clone(), &idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = first.activate(&bearer, &user, "t").await;

    // The first instance's refresh is held before the provider sees it …
    idp.set_faults(json!({ "delayMs": 1500, "when": "before", "count": 1 }))
        .await;
    let held = call_access_token(&first, &bearer, id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // … and its claim runs out early (a paused process, a clock running fast), so the second
    // instance takes the row over and rotates the token first.
    sqlx::query(
        "update token_vault set refresh_lease_until = now() - interval '1 second' where id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let (status, body) = json_of(second.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 200, "{body}");

    // The first instance then presents the token the second one spent: Keycloak answers
    // invalid_grant ("Stale token"). The row's token moved on, so that is a lost race.
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(
        idp.count(&user, ROTATING_CLIENT, "refresh_token.reused")
            .await,
        1
    );
    assert_eq!(first.row(id).await.status, "active");
    for app in [&first, &second] {
        assert_eq!(
            app.access_token(&bearer, &id.to_string()).await.status(),
            200
        );
    }
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_garbage_answer_is_not_retried_and_an_unrotated_grant_survives(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![("ACCESS_TOKEN_CACHE_MARGIN_SECS", "100000".into())],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    idp.set_faults(json!({ "answer": "garbage", "status": 502, "count": 1 }))
        .await;
    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("provider_unavailable"))
    );
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "grant.refresh_token").await,
        1,
        "the provider acted once; the broker did not try again with the same token"
    );
    let (_, view) = json_of(
        app.get_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert_eq!(view["status"], "active");
    assert_eq!(view["consecutiveFailures"], 1);
    assert_eq!(view["lastError"], "provider_unavailable");

    let (status, _) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 200, "the grant was not rotated, so it survives");
    let (_, view) = json_of(
        app.get_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert_eq!(view["consecutiveFailures"], 0);
}

/// The one window the broker cannot close alone: the provider rotated the token and its answer
/// was lost. With Keycloak's refresh-token max reuse at 0 the next refresh is "Stale token"
/// and the grant ends (docs/reliability.md says which setting closes this).
#[sqlx::test(migrator = "MIGRATIONS")]
async fn garbage_after_a_rotation_is_the_documented_window(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_rotating(pool, &idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    idp.set_faults(json!({ "answer": "garbage", "status": 502, "count": 1 }))
        .await;
    let (status, _) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 503);
    assert_eq!(
        idp.count(&user, ROTATING_CLIENT, "grant.refresh_token")
            .await,
        1
    );
    assert_eq!(app.row(id).await.status, "active", "nothing is assumed");

    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_failed"))
    );
    assert_eq!(
        idp.count(&user, ROTATING_CLIENT, "refresh_token.reused")
            .await,
        1
    );
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_circuit_opens_after_repeated_outages_and_a_probe_closes_it(pool: PgPool) {
    let proxy = FaultProxy::start().await;
    let port = proxy.port.to_string();
    let idp = Idp::start(&[("IDP_ISSUER_PORT", &port)]);
    proxy.forward_to(idp.port);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![
                ("PROVIDER_BREAKER_THRESHOLD", "2".into()),
                ("PROVIDER_BREAKER_COOLDOWN_SECS", "2".into()),
                ("PROVIDER_RETRY_ATTEMPTS", "1".into()),
                ("ACCESS_TOKEN_CACHE_MARGIN_SECS", "100000".into()),
            ],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await.to_string();

    proxy.set_down(true);
    for _ in 0..2 {
        let (status, body) = json_of(app.access_token(&bearer, &id).await).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("provider_unavailable"))
        );
    }
    // Open: the next call fails at once, without trying the provider.
    let tried = proxy.connections();
    let at = Instant::now();
    let response = app.access_token(&bearer, &id).await;
    let elapsed = at.elapsed();
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(response.status(), 503);
    assert_eq!(proxy.connections(), tried, "the provider was not called");
    eprintln!("circuit open: a refresh failed fast in {elapsed:?}");
    assert_eq!(
        metric(&app, "token_broker_provider_circuit_open").await,
        Some(1.0)
    );

    // After the cool-down, one probe finds the provider back and closes the circuit.
    proxy.set_down(false);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(app.access_token(&bearer, &id).await.status(), 200);
    assert_eq!(
        metric(&app, "token_broker_provider_circuit_open").await,
        Some(0.0)
    );
    assert_eq!(app.row(id.parse().unwrap()).await.status, "active");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_revocation_wins_over_a_refresh_in_flight(pool: PgPool) {
    let idp = Idp::start(&[]);
    let app = spawn_rotating(pool.clone(), &idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    idp.set_faults(json!({ "delayMs": 1500, "when": "after", "count": 1 }))
        .await;
    let waiters: Vec<_> = (0..3)
        .map(|_| call_access_token(&app, &bearer, id))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let revoked = app
        .delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    assert_eq!(revoked.status(), 200);

    for waiter in waiters {
        assert_eq!(
            waiter.await.unwrap(),
            410,
            "a token minted for a revoked row is not served"
        );
    }
    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_revoked"))
    );
    let row = app.row(id).await;
    assert_eq!(row.status, "revoked");
    assert!(row.encrypted_token.is_none());
    let stored_access: Option<Vec<u8>> =
        sqlx::query_scalar("select access_token from token_vault where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(stored_access.is_none(), "the minted token was never stored");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn keep_alive_refreshes_an_idle_grant_before_the_provider_ends_it(pool: PgPool) {
    let idp = Idp::start(&[
        ("IDP_OFFLINE_SESSION_IDLE_SECS", "6"),
        ("IDP_ACCESS_TOKEN_TTL", "7"),
    ]);
    let app = spawn_with(
        pool.clone(),
        Options {
            extra: vec![
                ("OFFLINE_IDLE_SECS", "6".into()),
                ("KEEPALIVE_INTERVAL_SECS", "1".into()),
                ("KEEPALIVE_LEAD_SECS", "4".into()),
            ],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    // Nobody uses the grant for longer than the provider's idle limit.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "offline_session.ended")
            .await,
        0
    );
    let reasons: Vec<Option<String>> = sqlx::query_scalar(
        "select reason from token_audit where token_id = $1 and action = 'token_issued' \
         and actor = 'system'",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!reasons.is_empty(), "keep-alive refreshed it");
    assert!(reasons.iter().all(|r| r.as_deref() == Some("keepalive")));
    let (_, view) = json_of(
        app.get_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
            .await,
    )
    .await;
    assert!(view["refreshExpiresAt"].as_str().unwrap() > view["lastRefreshAt"].as_str().unwrap());
}

/// The control for the test above: the same idle grant dies without keep-alive.
#[sqlx::test(migrator = "MIGRATIONS")]
async fn without_keep_alive_an_idle_grant_dies_at_the_provider(pool: PgPool) {
    let idp = Idp::start(&[
        ("IDP_OFFLINE_SESSION_IDLE_SECS", "6"),
        ("IDP_ACCESS_TOKEN_TTL", "7"),
    ]);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![
                ("OFFLINE_IDLE_SECS", "6".into()),
                ("KEEPALIVE_INTERVAL_SECS", "0".into()),
            ],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, body) = json_of(app.access_token(&bearer, &id.to_string()).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (410, Some("token_failed"))
    );
    assert_eq!(
        idp.count(&user, BROKER_CLIENT, "offline_session.ended")
            .await,
        1
    );
}
