//! The grant-health webhooks a refresh posts: `token.failed` on the first failure in a row
//! and when the provider ends the grant (with the failures counted), `token.recovered` when a
//! refresh works again after failures, and nothing for a refresh that simply works.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::harness::{unique_user, webhook_receiver, Events, Harness};
use crate::provider::{Reply, ScriptedProvider};

async fn with_webhooks() -> (Harness, ScriptedProvider, Events) {
    let (url, got) = webhook_receiver().await;
    let (h, idp) = Harness::scripted(&[
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", "a-webhook-secret-of-some-length"),
    ])
    .await;
    (h, idp, got)
}

/// The health events (`token.failed`, `token.recovered`) posted about `id`, as
/// `(event, consecutiveFailures)`, once `count` of them arrived (or after 5 s).
async fn health_events(got: &Events, id: Uuid, count: usize) -> Vec<(String, u64)> {
    // Sorted: deliveries may overtake one another.
    let read = || {
        let mut events = got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["persistentTokenId"] == id.to_string())
            .filter(|e| e["event"] != "token.status_changed")
            .map(|e| {
                let event = e["event"].as_str().unwrap_or_default().to_owned();
                (event, e["consecutiveFailures"].as_u64().unwrap_or(0))
            })
            .collect::<Vec<_>>();
        events.sort();
        events
    };
    for _ in 0..50 {
        if read().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    read()
}

#[tokio::test]
async fn a_refresh_that_works_after_a_failure_posts_failed_then_recovered() {
    let (h, idp, got) = with_webhooks().await;
    let user = unique_user("alice");
    let healthy = h.seed_active(&user, "healthy", "rt-h").await;
    let flaky = h.seed_active(&user, "flaky", "rt-f").await;
    idp.answer(Reply::fresh("at-h"));
    idp.answer(Reply::error(500, "server_error", "down for a moment"));
    idp.answer(Reply::fresh("at-f"));

    let bearer = h.bearer(&user);
    assert_eq!(h.access_token(&bearer, healthy).await.status, 200);
    assert_eq!(h.access_token(&bearer, flaky).await.status, 503);
    assert_eq!(h.access_token(&bearer, flaky).await.status, 200);

    assert_eq!(
        health_events(&got, flaky, 2).await,
        [
            ("token.failed".to_owned(), 1),
            ("token.recovered".to_owned(), 1)
        ]
    );
    // Posted after the flaky row's, so had the healthy row's refresh posted anything, it
    // would be here by now.
    assert_eq!(health_events(&got, healthy, 0).await, []);
}

#[tokio::test]
async fn a_grant_the_provider_ended_posts_failed_with_its_failures_counted() {
    let (h, idp, got) = with_webhooks().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt-1").await;
    idp.answer(Reply::error(500, "server_error", "down for a moment"));
    idp.answer(Reply::error(
        400,
        "invalid_grant",
        "Offline user session not found",
    ));

    let bearer = h.bearer(&user);
    assert_eq!(h.access_token(&bearer, id).await.status, 503);
    assert_eq!(h.access_token(&bearer, id).await.status, 410);

    assert_eq!(
        health_events(&got, id, 2).await,
        [
            ("token.failed".to_owned(), 1),
            ("token.failed".to_owned(), 2)
        ]
    );
}

#[tokio::test]
async fn a_refused_narrowing_releases_the_row_for_the_next_refresh() {
    let (h, idp, _) = with_webhooks().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt-1").await;
    idp.answer(Reply::error(400, "invalid_scope", "not in this grant"));
    idp.answer(Reply::fresh("at-1"));

    let narrowed = h
        .post(
            "/api/auth/manager/access-token",
            Some(&h.bearer(&user)),
            json!({ "persistentTokenId": id.to_string(), "scope": "openid" }),
        )
        .await;
    assert_eq!(narrowed.status, 400, "{}", narrowed.text);
    assert_eq!(narrowed.body["error"], "invalid_scope");
    let lease: Option<String> =
        sqlx::query_scalar("select refresh_lease_until from token_vault where id = ?1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(lease, None, "the claim is given back at once");

    let full = h.access_token(&h.bearer(&user), id).await;
    assert_eq!(full.status, 200, "{}", full.text);
    assert_eq!(full.body["accessToken"], "at-1");
}
