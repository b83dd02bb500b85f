//! The refresh path under load, rotation, several processes and a provider outage.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::{spawn_rotating, spawn_with, unique_user, Options};
use crate::idp::{Idp, ROTATING_CLIENT};
use crate::process::{broker_env, BrokerProcess, FaultProxy};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const CALLS: usize = 200;

fn refreshes(events: &[String]) -> usize {
    events
        .iter()
        .filter(|e| *e == "grant.refresh_token")
        .count()
}

/// POSTs access-token requests for `id` concurrently, round-robin over `bases`; returns the
/// status and access token of each.
async fn hammer(bases: &[String], bearer: &str, id: &str, calls: usize) -> Vec<(u16, String)> {
    let http = reqwest::Client::new();
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let url = format!("{}/api/auth/manager/access-token", bases[i % bases.len()]);
        let (http, bearer, id) = (http.clone(), bearer.to_owned(), id.to_owned());
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(bearer)
                .json(&json!({ "persistentTokenId": id }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (
                status,
                body["accessToken"].as_str().unwrap_or("").to_owned(),
            )
        }));
    }
    let mut results = Vec::with_capacity(calls);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn all_ok_with_one_token(results: &[(u16, String)]) -> String {
    let statuses: HashSet<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, HashSet::from([200]), "every call succeeds");
    let tokens: HashSet<&String> = results.iter().map(|(_, t)| t).collect();
    assert_eq!(tokens.len(), 1, "everybody got the same token");
    results[0].1.clone()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn two_hundred_concurrent_calls_cause_one_refresh_under_rotation(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_rotating(pool, idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;

    let results = hammer(
        std::slice::from_ref(&app.base),
        &bearer,
        &id.to_string(),
        CALLS,
    )
    .await;
    let token = all_ok_with_one_token(&results);
    assert!(token.starts_with("ey"));
    let events = idp.events_for(&user, ROTATING_CLIENT).await;
    assert_eq!(refreshes(&events), 1, "{events:?}");
    assert_eq!(app.row(id).await.status, "active");
}

/// The URL of the database this test got, for processes of our own.
pub async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(&name);
    url.into()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn three_broker_processes_on_one_database_refresh_once_and_share_revocation(pool: PgPool) {
    let idp = Idp::shared();
    let url = database_url(&pool).await;
    let brokers: Vec<BrokerProcess> = (0..3)
        .map(|_| BrokerProcess::start(&broker_env(idp, ROTATING_CLIENT, &url)))
        .collect();
    let bases: Vec<String> = brokers.iter().map(|b| b.base.clone()).collect();
    // Consent through an in-process instance on the same database.
    let app = spawn_rotating(pool, idp).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await.to_string();

    let results = hammer(&bases, &bearer, &id, CALLS).await;
    all_ok_with_one_token(&results);
    let events = idp.events_for(&user, ROTATING_CLIENT).await;
    assert_eq!(refreshes(&events), 1, "{events:?}");

    // Revoked through one process, refused by the others, which had the token cached.
    let http = reqwest::Client::new();
    let revoked = http
        .delete(format!("{}/api/auth/manager/offline-tokens/{id}", bases[0]))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked_at = std::time::Instant::now();
    for base in &bases[1..] {
        let mut status = 0;
        for _ in 0..100 {
            status = hammer(std::slice::from_ref(base), &bearer, &id, 1).await[0].0;
            if status == 410 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, 410, "{base} stopped serving the revoked token");
    }
    // Reported, not asserted: timing on a shared machine is not a test result.
    eprintln!(
        "revocation seen by the other processes after {:?}",
        revoked_at.elapsed()
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_provider_outage_answers_503_and_loses_nothing(pool: PgPool) {
    let proxy = FaultProxy::start().await;
    let port = proxy.port.to_string();
    // Short-lived access tokens and a longer margin: every call refreshes at the provider.
    let idp = Idp::start(&[("IDP_ISSUER_PORT", &port), ("IDP_ACCESS_TOKEN_TTL", "20")]);
    proxy.forward_to(idp.port);
    let app = spawn_with(
        pool,
        Options {
            client_id: ROTATING_CLIENT,
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let base = std::slice::from_ref(&app.base);
    assert_eq!(hammer(base, &bearer, &id.to_string(), 1).await[0].0, 200);
    let before = app.row(id).await;

    proxy.set_down(true);
    for (status, _) in hammer(base, &bearer, &id.to_string(), 3).await {
        assert_eq!(status, 503);
    }
    let during = app.row(id).await;
    assert_eq!(during.status, "active");
    assert_eq!(
        during.encrypted_token, before.encrypted_token,
        "row untouched"
    );

    proxy.set_down(false);
    for _ in 0..2 {
        assert_eq!(hammer(base, &bearer, &id.to_string(), 1).await[0].0, 200);
    }
    assert_eq!(app.row(id).await.status, "active");
    let events = idp.events_for(&user, ROTATING_CLIENT).await;
    assert_eq!(
        refreshes(&events),
        3,
        "the outage reached nobody: {events:?}"
    );
}
