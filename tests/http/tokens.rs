//! Status and listing: the owner's view, nothing secret, filters and pages, bad parameters.

use serde_json::Value;
use uuid::Uuid;

use crate::harness::{unique_user, Harness};

const TOKENS: &str = "/api/auth/manager/offline-tokens";

#[tokio::test]
async fn the_owner_sees_a_tokens_status_and_nothing_secret() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "task-7", "offline-token").await;
    let bearer = h.bearer(&user);
    let answer = h.get(&format!("{TOKENS}/{id}"), Some(&bearer)).await;
    assert_eq!(answer.status, 200);
    let body = answer.body;
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "consecutiveFailures",
            "createdAt",
            "delegates",
            "expiresAt",
            "grantedScope",
            "lastError",
            "lastRefreshAt",
            "lastUsedAt",
            "persistentTokenId",
            "refreshExpiresAt",
            "status",
            "statusReason",
            "taskId",
            "updatedAt"
        ]
    );
    assert_eq!(body["status"], "active");
    assert_eq!(body["taskId"], "task-7");
    assert_eq!(body["persistentTokenId"], id.to_string());
    assert!(body["lastUsedAt"].is_null());
    assert_eq!(body["consecutiveFailures"], 0);
    assert_eq!(body["grantedScope"], "offline_access openid profile");
    assert_eq!(body["delegates"], serde_json::json!([]));
    assert!(!answer.text.contains("offline-token"));

    let stranger = h.bearer(&unique_user("mallory"));
    let answer = h.get(&format!("{TOKENS}/{id}"), Some(&stranger)).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    let answer = h.get(&format!("{TOKENS}/not-a-uuid"), Some(&bearer)).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(h.get(&format!("{TOKENS}/{id}"), None).await.status, 401);
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["persistentTokenId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listing_shows_only_the_callers_rows_with_filters_and_pages() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let bearer = h.bearer(&user);
    let active = h.seed_active(&user, "a", "rt").await;
    let mut pending = Vec::new();
    for (i, task) in ["a", "b", "a"].iter().enumerate() {
        pending.push(h.seed_pending(&user, task, &format!("state-{i}")).await);
    }
    h.seed_pending(&unique_user("bob"), "a", "bobs-state").await;

    let all = h.get(TOKENS, Some(&bearer)).await;
    assert_eq!(all.status, 200);
    assert_eq!(ids(&all.body).len(), 4, "bob's row is not listed");
    assert!(all.body.get("nextOffset").is_none());
    let task_a = h.get(&format!("{TOKENS}?taskId=a"), Some(&bearer)).await;
    assert_eq!(ids(&task_a.body).len(), 3);
    let active_a = h
        .get(&format!("{TOKENS}?taskId=a&status=active"), Some(&bearer))
        .await;
    assert_eq!(ids(&active_a.body), [active.to_string()]);

    let first = h.get(&format!("{TOKENS}?limit=3"), Some(&bearer)).await;
    assert_eq!(ids(&first.body).len(), 3);
    assert_eq!(first.body["nextOffset"], 3);
    let second = h
        .get(&format!("{TOKENS}?limit=3&offset=3"), Some(&bearer))
        .await;
    assert_eq!(ids(&second.body).len(), 1);
    assert!(second.body.get("nextOffset").is_none());
    let mut seen = ids(&first.body);
    seen.extend(ids(&second.body));
    seen.sort();
    let mut expected: Vec<String> = pending.iter().map(Uuid::to_string).collect();
    expected.push(active.to_string());
    expected.sort();
    assert_eq!(seen, expected);
    let widest = h
        .get(
            &format!("{TOKENS}?limit=200&offset=4294967295"),
            Some(&bearer),
        )
        .await;
    assert_eq!(widest.status, 200, "the documented bounds are accepted");

    for bad in [
        "status=gone",
        "limit=0",
        "limit=201",
        "limit=x",
        "colour=red",
        "taskId=a%00b",
        "taskId=%20%20",
        &format!("taskId={}", "x".repeat(201)),
        "offset=4294967296",
    ] {
        let answer = h.get(&format!("{TOKENS}?{bad}"), Some(&bearer)).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.body["error"], "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn pages_by_cursor_cover_every_row_once_and_bad_cursors_are_refused() {
    let h = Harness::new().await;
    let user = unique_user("carol");
    let bearer = h.bearer(&user);
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(
            h.seed_pending(&user, "t", &format!("cursor-state-{i}"))
                .await
                .to_string(),
        );
    }
    let mut seen = Vec::new();
    let mut url = format!("{TOKENS}?limit=2");
    loop {
        let page = h.get(&url, Some(&bearer)).await;
        assert_eq!(page.status, 200);
        seen.extend(ids(&page.body));
        assert!(page.body.get("nextOffset").is_none() || !url.contains("cursor="));
        match page.body["nextCursor"].as_str() {
            Some(cursor) => url = format!("{TOKENS}?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    let first = h.get(&format!("{TOKENS}?limit=2"), Some(&bearer)).await;
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    // With both, the offset counts from the cursor: the second row of the second page.
    let second = h
        .get(&format!("{TOKENS}?limit=2&cursor={cursor}"), Some(&bearer))
        .await;
    let skipped = h
        .get(
            &format!("{TOKENS}?limit=1&cursor={cursor}&offset=1"),
            Some(&bearer),
        )
        .await;
    assert_eq!(ids(&skipped.body), ids(&second.body)[1..]);
    for (bad, message) in [
        (
            "cursor=not-a-cursor".to_owned(),
            "cursor is not one a previous page gave",
        ),
        (
            format!("cursor={}", "A".repeat(129)),
            "cursor is not one a previous page gave",
        ),
    ] {
        let answer = h.get(&format!("{TOKENS}?{bad}"), Some(&bearer)).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.body["error"], "invalid_request", "{bad}");
        assert_eq!(answer.body["message"], message, "{bad}");
    }
    // Another user's cursor lists only the caller's own rows.
    let other = h.bearer(&unique_user("dave"));
    let theirs = h
        .get(&format!("{TOKENS}?cursor={cursor}"), Some(&other))
        .await;
    assert_eq!((theirs.status, ids(&theirs.body).len()), (200, 0));
}
