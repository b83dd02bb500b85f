//! Task keys, delegates and token exchange: every rule and bad input that needs no provider.
//! (The provider is down in this harness: tokens come from a row's stored access token.)

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{claims_for, service_account_claims, unique_user, Answer, Harness};

fn keys_path(id: impl std::fmt::Display) -> String {
    format!("/api/auth/manager/offline-tokens/{id}/task-keys")
}

async fn create(h: &Harness, bearer: &str, id: impl std::fmt::Display, body: Value) -> Answer {
    h.post(&keys_path(id), Some(bearer), body).await
}

/// An active row of a fresh user with a stored access token, and a key for it.
async fn row_with_key(h: &Harness, body: Value) -> (String, Uuid, String) {
    let user = unique_user("alice");
    let id = h.seed_active(&user, "nightly", "offline-token").await;
    h.seed_stored_access(id, &user, "minted-for-the-task").await;
    let answer = create(h, &h.bearer(&user), id, body).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let key = answer.body["taskKey"].as_str().unwrap().to_owned();
    (user, id, key)
}

async fn redeem(h: &Harness, key: &str, body: Value) -> Answer {
    h.post("/api/auth/manager/access-token", Some(key), body)
        .await
}

#[tokio::test]
async fn a_key_is_shown_once_and_only_its_hash_is_kept() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let answer = create(
        &h,
        &bearer,
        id,
        json!({ "name": "nightly", "scope": "openid", "maxUses": 5, "allowedCidrs": ["10.1.2.3/8"] }),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let key = answer.body["taskKey"].as_str().unwrap();
    assert!(
        key.starts_with("tbk_") && key.len() == 4 + 43,
        "256 bits after the prefix"
    );
    assert_eq!(answer.body["name"], "nightly");
    assert_eq!(answer.body["scope"], "openid");
    assert_eq!(answer.body["maxUses"], 5);
    assert_eq!(answer.body["uses"], 0);
    assert_eq!(answer.body["allowedCidrs"], json!(["10.0.0.0/8"]));
    assert_eq!(answer.body["state"], "active");
    assert_eq!(answer.body["persistentTokenId"], id.to_string());

    let listed = h.get(&keys_path(id), Some(&bearer)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert!(!listed.text.contains(key), "the list carries no secret");
    assert!(listed.body["items"][0].get("taskKey").is_none());
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select key_hash from task_keys")
        .fetch_all(&h.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].len(), 32);
    assert!(!stored[0]
        .windows(8)
        .any(|w| key.as_bytes().windows(8).any(|k| k == w)));
    assert_ne!(
        stored[0],
        token_broker::crypto::sha256(key.as_bytes()),
        "a keyed hash, not a bare one"
    );
}

#[tokio::test]
async fn bad_key_requests_get_clear_errors_and_create_nothing() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let beyond_row = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let cases = [
        (json!({ "scope": "openid email" }), "invalid_scope"),
        (json!({ "scope": "open\"id" }), "invalid_request"),
        (json!({ "expiresAt": beyond_row }), "invalid_request"),
        (json!({ "expiresAt": past }), "invalid_request"),
        (json!({ "maxUses": 0 }), "invalid_request"),
        (json!({ "maxUses": -1 }), "invalid_request"),
        (json!({ "maxUses": 2.5 }), "invalid_request"),
        (json!({ "maxUses": 4294967296_u64 }), "invalid_request"),
        (
            json!({ "scope": vec!["openid"; 51].join(" ") }),
            "invalid_request",
        ),
        (
            json!({ "allowedCidrs": ["10.0.0.0/33"] }),
            "invalid_request",
        ),
        (
            json!({ "allowedCidrs": ["example.com"] }),
            "invalid_request",
        ),
        (json!({ "name": "x".repeat(101) }), "invalid_request"),
        (json!({ "name": "a\u{0}b" }), "invalid_request"),
        (json!({ "colour": "red" }), "invalid_request"),
    ];
    for (body, code) in cases {
        let answer = create(&h, &bearer, id, body.clone()).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let answer = h
        .request(
            "POST",
            &keys_path(id),
            Some(&bearer),
            Some(("application/json", "{oops".into())),
        )
        .await;
    assert_eq!(answer.status, 400);
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn strangers_get_404_on_every_key_endpoint() {
    let h = Harness::new().await;
    let (_, id, _) = row_with_key(&h, json!({})).await;
    let mallory = h.bearer(&unique_user("mallory"));
    let theirs = create(&h, &mallory, id, json!({})).await;
    let missing = create(&h, &mallory, Uuid::new_v4(), json!({})).await;
    assert_eq!((theirs.status, missing.status), (404, 404));
    assert_eq!(theirs.body, missing.body);
    assert_eq!(h.get(&keys_path(id), Some(&mallory)).await.status, 404);
    let key_id: String = sqlx::query_scalar("select hex(id) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    let key_id = Uuid::parse_str(&key_id).unwrap();
    let delete = h
        .request(
            "DELETE",
            &format!("{}/{key_id}", keys_path(id)),
            Some(&mallory),
            None,
        )
        .await;
    assert_eq!(
        (delete.status, delete.body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    let bad = h.get(&keys_path("not-a-uuid"), Some(&mallory)).await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_key_redeems_without_the_user_and_counts_only_successes() {
    let h = Harness::new().await;
    let (user, id, key) = row_with_key(&h, json!({ "maxUses": 2 })).await;
    // No persistentTokenId needed with a key; if given it must be the key's row.
    let first = redeem(&h, &key, json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["accessToken"], "minted-for-the-task");
    let second = redeem(&h, &key, json!({ "persistentTokenId": id })).await;
    assert_eq!(second.status, 200);
    let third = redeem(&h, &key, json!({})).await;
    assert_eq!(
        (third.status, third.body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(third.body["message"]
        .as_str()
        .unwrap()
        .contains("used as often"));
    let listed = h.get(&keys_path(id), Some(&h.bearer(&user))).await;
    let view = &listed.body["items"][0];
    assert_eq!(view["uses"], 2);
    assert_eq!(view["state"], "exhausted");
    assert!(view["lastUsedAt"].is_string());
    // Every use is audited with the key and the address.
    let uses: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select actor, outcome, reason from token_audit where action = 'task_key_used' order by id",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(uses.len(), 3);
    assert!(uses[0].0.starts_with("task-key:"));
    assert_eq!(
        (uses[0].1.as_str(), uses[0].2.as_deref()),
        ("success", Some("from:192.0.2.1"))
    );
    assert_eq!(uses[2].1, "failure");
    assert_eq!(uses[2].2.as_deref(), Some("exhausted;from:192.0.2.1"));
}

#[tokio::test]
async fn a_failed_redemption_does_not_use_up_the_key() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let answer = create(&h, &h.bearer(&user), id, json!({ "maxUses": 1 })).await;
    let key = answer.body["taskKey"].as_str().unwrap().to_owned();
    // No stored token and the provider is down: 503, and the use is given back.
    let failed = redeem(&h, &key, json!({})).await;
    assert_eq!(failed.status, 503);
    let uses: i64 = sqlx::query_scalar("select uses from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(uses, 0);
    h.seed_stored_access(id, &user, "later").await;
    assert_eq!(redeem(&h, &key, json!({})).await.status, 200);
}

#[tokio::test]
async fn wrong_revoked_expired_and_misplaced_keys_are_refused() {
    let h = Harness::new().await;
    let (user, id, key) = row_with_key(&h, json!({})).await;
    let bearer = h.bearer(&user);
    for bad in [
        "tbk_short",
        &format!("tbk_{}", "A".repeat(43)),
        &format!("{key}x"),
    ] {
        let answer = redeem(&h, bad, json!({})).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (401, Some("unauthorized")),
            "{bad}"
        );
        assert_eq!(
            answer.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    // A key for another row: the same 404 as a missing id.
    let other = h.seed_active(&user, "other", "rt").await;
    let answer = redeem(&h, &key, json!({ "persistentTokenId": other })).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    // A scope broader than the grant.
    let answer = redeem(&h, &key, json!({ "scope": "openid email" })).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // Expired.
    sqlx::query("update task_keys set expires_at = '2000-01-01 00:00:00+00:00'")
        .execute(&h.pool)
        .await
        .unwrap();
    let answer = redeem(&h, &key, json!({})).await;
    assert_eq!(answer.status, 401);
    assert!(answer.body["message"].as_str().unwrap().contains("expired"));
    // Revoked (idempotent).
    let (_, _, key) = row_with_key(&h, json!({})).await;
    let key_row: (String, String) = sqlx::query_as(
        "select hex(id), hex(token_id) from task_keys where expires_at > '2001' order by created_at desc limit 1",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let (key_id, row_id) = (
        Uuid::parse_str(&key_row.0).unwrap(),
        Uuid::parse_str(&key_row.1).unwrap(),
    );
    let owner = h.vault.find(row_id).await.unwrap().unwrap().user_id;
    for _ in 0..2 {
        let answer = h
            .request(
                "DELETE",
                &format!("{}/{key_id}", keys_path(row_id)),
                Some(&h.bearer(&owner)),
                None,
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["state"].as_str()),
            (200, Some("revoked"))
        );
    }
    let answer = redeem(&h, &key, json!({})).await;
    assert_eq!(answer.status, 401);
    assert!(answer.body["message"].as_str().unwrap().contains("revoked"));
    let unknown = h
        .request(
            "DELETE",
            &format!("{}/{}", keys_path(id), Uuid::new_v4()),
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body["error"].as_str()),
        (404, Some("task_key_not_found"))
    );
}

#[tokio::test]
async fn a_key_works_only_from_the_networks_it_names() {
    let h = Harness::new().await;
    // The harness's requests come from 192.0.2.1.
    let (_, _, elsewhere) = row_with_key(&h, json!({ "allowedCidrs": ["10.0.0.0/8"] })).await;
    let answer = redeem(&h, &elsewhere, json!({})).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (403, Some("forbidden"))
    );
    let (_, _, here) = row_with_key(&h, json!({ "allowedCidrs": ["192.0.2.0/24"] })).await;
    assert_eq!(redeem(&h, &here, json!({})).await.status, 200);
    // A forwarded header counts only from a trusted proxy.
    let forged = Request::post("/api/auth/manager/access-token")
        .header("authorization", format!("Bearer {elsewhere}"))
        .header("x-forwarded-for", "10.1.1.1")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(h.send(forged).await.status, 403);
    let behind_proxy = h.beside(&[("TRUSTED_PROXIES", "192.0.2.1")]).await;
    let forwarded = Request::post("/api/auth/manager/access-token")
        .header("authorization", format!("Bearer {elsewhere}"))
        .header("x-forwarded-for", "10.1.1.1")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(behind_proxy.send(forwarded).await.status, 200);
}

#[tokio::test]
async fn a_key_can_do_nothing_else() {
    let h = Harness::new().await;
    let (_, id, key) = row_with_key(&h, json!({})).await;
    let reads = [
        format!("/api/auth/manager/offline-tokens/{id}"),
        "/api/auth/manager/offline-tokens".into(),
        keys_path(id),
    ];
    for path in reads {
        let answer = h.get(&path, Some(&key)).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
    let writes = [
        (
            "POST",
            "/api/auth/manager/offline-consent".to_owned(),
            json!({ "taskId": "t" }),
        ),
        (
            "POST",
            format!("/api/auth/manager/offline-tokens/{id}/reconsent"),
            json!({}),
        ),
        ("POST", keys_path(id), json!({})),
        (
            "DELETE",
            format!("/api/auth/manager/offline-tokens/{id}"),
            json!({}),
        ),
    ];
    for (method, path, body) in writes {
        let answer = h
            .request(
                method,
                &path,
                Some(&key),
                Some(("application/json", body.to_string())),
            )
            .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    assert_eq!(h.status_of(id).await, "active");
}

#[tokio::test]
async fn ending_the_row_ends_its_keys() {
    let h = Harness::new().await;
    let (user, id, key) = row_with_key(&h, json!({})).await;
    let revoked = h.revoke(&h.bearer(&user), id).await;
    assert_eq!(revoked.status, 200);
    // The key ended with the row, for good; the task is told what became of the grant.
    let answer = redeem(&h, &key, json!({})).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (410, Some("token_revoked"))
    );
    let keys = h.get(&keys_path(id), Some(&h.bearer(&user))).await;
    assert_eq!(keys.body["items"][0]["state"], "revoked", "{}", keys.text);
    let create_more = create(&h, &h.bearer(&user), id, json!({})).await;
    assert_eq!(create_more.status, 410);
}

#[tokio::test]
async fn owners_may_narrow_but_not_widen() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let wide = h
        .post(
            "/api/auth/manager/access-token",
            Some(&bearer),
            json!({ "persistentTokenId": id, "scope": "openid admin" }),
        )
        .await;
    assert_eq!(
        (wide.status, wide.body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let bad = h
        .post(
            "/api/auth/manager/access-token",
            Some(&bearer),
            json!({ "persistentTokenId": id, "scope": "" }),
        )
        .await;
    assert_eq!(bad.status, 400);
    let missing_id = h
        .post("/api/auth/manager/access-token", Some(&bearer), json!({}))
        .await;
    assert_eq!(
        (missing_id.status, missing_id.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_delegated_service_account_reaches_only_rows_that_name_it() {
    let h = Harness::with(&[("DELEGATE_CLIENTS", "job-runner")]).await;
    let user = unique_user("alice");
    let bearer = h.bearer(&user);
    let refused = h
        .consent(&bearer, json!({ "taskId": "t", "delegates": ["intruder"] }))
        .await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let consent = h
        .consent(
            &bearer,
            json!({ "taskId": "t", "delegates": ["job-runner"] }),
        )
        .await;
    assert_eq!(consent.status, 201);
    let pending: Uuid = consent.body["persistentTokenId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let view = h
        .get(
            &format!("/api/auth/manager/offline-tokens/{pending}"),
            Some(&bearer),
        )
        .await;
    assert_eq!(view.body["delegates"], json!(["job-runner"]));

    // A row whose consent named the job runner (seeded active with delegates).
    let delegated = h.seed_active(&user, "t", "rt").await;
    sqlx::query("update token_vault set delegates = 'job-runner' where id = ?1")
        .bind(delegated)
        .execute(&h.pool)
        .await
        .unwrap();
    h.seed_stored_access(delegated, &user, "for-the-runner")
        .await;
    let other = h.seed_active(&user, "t", "rt").await;
    h.seed_stored_access(other, &user, "not-for-the-runner")
        .await;
    let runner = h
        .signer
        .sign(&service_account_claims("job-runner"), &json!({}));
    let answer = h.access_token(&runner, delegated).await;
    assert_eq!(
        (answer.status, answer.body["accessToken"].as_str()),
        (200, Some("for-the-runner"))
    );
    let answer = h.access_token(&runner, other).await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (404, Some("token_not_found"))
    );
    // Nothing else: no listing, no consents, no revocations.
    assert_eq!(
        h.get("/api/auth/manager/offline-tokens", Some(&runner))
            .await
            .status,
        403
    );
    assert_eq!(
        h.consent(&runner, json!({ "taskId": "t" })).await.status,
        403
    );
}

async fn exchange(h: &Harness, form: &str) -> Answer {
    h.request(
        "POST",
        "/api/auth/manager/token",
        None,
        Some(("application/x-www-form-urlencoded", form.to_owned())),
    )
    .await
}

const GRANT: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
const KEY_TYPE: &str =
    "subject_token_type=urn%3Atoken-broker%3Aparams%3Aoauth%3Atoken-type%3Atask-key";

#[tokio::test]
async fn token_exchange_answers_as_rfc_8693_says() {
    let h = Harness::new().await;
    let (_, _, key) = row_with_key(&h, json!({})).await;
    let answer = exchange(
        &h,
        &format!(
            "{GRANT}&{KEY_TYPE}&subject_token={key}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["access_token"], "minted-for-the-task");
    assert_eq!(
        answer.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(answer.body["token_type"], "Bearer");
    assert!(answer.body["expires_in"].as_u64().unwrap() > 200);
    assert_eq!(answer.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn token_exchange_errors_follow_rfc_6749() {
    let h = Harness::new().await;
    let (_, _, key) = row_with_key(&h, json!({ "scope": "openid" })).await;
    let cases = [
        (String::new(), "invalid_request"),
        ("grant_type=client_credentials".to_owned(), "unsupported_grant_type"),
        (GRANT.to_owned(), "invalid_request"),
        (format!("{GRANT}&subject_token={key}"), "invalid_request"),
        (format!("{GRANT}&{KEY_TYPE}&subject_token=tbk_unknown"), "invalid_request"),
        (format!("{GRANT}&{KEY_TYPE}&subject_token=eyJhbGciOiJSUzI1NiJ9.e30.x"), "invalid_request"),
        (format!("{GRANT}&{KEY_TYPE}&subject_token={key}&scope=openid%20profile"), "invalid_scope"),
        (format!("{GRANT}&{KEY_TYPE}&subject_token={key}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"), "invalid_request"),
        (format!("{GRANT}&{GRANT}&{KEY_TYPE}&subject_token={key}"), "invalid_request"),
    ];
    for (form, error) in cases {
        let answer = exchange(&h, &form).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some(error)),
            "{form}"
        );
        assert!(answer.body["error_description"].is_string(), "{form}");
        assert_eq!(answer.headers["cache-control"], "no-store");
    }
    let json_body = h
        .post(
            "/api/auth/manager/token",
            None,
            json!({ "grant_type": "x" }),
        )
        .await;
    assert_eq!(
        (json_body.status, json_body.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_body_of_null_or_whole_floats_is_what_json_means() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let answer = h
        .request(
            "POST",
            &keys_path(id),
            Some(&bearer),
            Some(("application/json", "null".into())),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let answer = create(&h, &bearer, id, json!({ "maxUses": 38.0 })).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.body["maxUses"], 38);
}

#[tokio::test]
async fn an_oversized_body_is_a_json_413_on_every_route_that_reads_its_own_body() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let json_body = format!(r#"{{"redirectUri": "{}"}}"#, "x".repeat(20_000));
    let form_body = format!("{GRANT}&{KEY_TYPE}&subject_token={}", "x".repeat(20_000));
    let cases = [
        (
            format!("/api/auth/manager/offline-tokens/{id}/reconsent"),
            Some(bearer.as_str()),
            ("application/json", json_body.clone()),
        ),
        (
            keys_path(id),
            Some(bearer.as_str()),
            ("application/json", json_body),
        ),
        (
            "/api/auth/manager/token".to_owned(),
            None,
            ("application/x-www-form-urlencoded", form_body),
        ),
    ];
    for (path, bearer, body) in cases {
        let answer = h.request("POST", &path, bearer, Some(body)).await;
        assert_eq!(answer.status, 413, "{path}: {}", answer.text);
        // The token endpoint answers in OAuth's shape (RFC 6749 §5.2), the rest in ours.
        let code = if path.ends_with("/token") {
            "invalid_request"
        } else {
            "payload_too_large"
        };
        assert_eq!(answer.body["error"], code, "{path}");
    }
    // Nothing was started or issued: the row is as it was, with no key.
    assert_eq!(h.status_of(id).await, "active");
    let keys = h.get(&keys_path(id), Some(&bearer)).await;
    assert_eq!(keys.status, 200);
    assert_eq!(
        keys.body["items"].as_array().map(Vec::len),
        Some(0),
        "{}",
        keys.text
    );
}

/// A row delegated to `job-runner`, owned by a fresh user; with a stored access token unless
/// `stored` is false (then only a refresh, at a provider that is down here, could serve it).
async fn delegated_row(h: &Harness, stored: bool) -> Uuid {
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "rt").await;
    sqlx::query("update token_vault set delegates = 'job-runner' where id = ?1")
        .bind(id)
        .execute(&h.pool)
        .await
        .unwrap();
    if stored {
        h.seed_stored_access(id, &user, "for-the-runner").await;
    }
    id
}

/// Where one client both signs users in and runs jobs, a user's token of that client is a
/// user's, not the service account's: 404 on a delegated row, on the stored path, the cached
/// path and the refresh path alike.
#[tokio::test]
async fn a_user_token_of_a_delegate_client_is_not_its_service_account() {
    let h = Harness::with(&[
        ("DELEGATE_CLIENTS", "job-runner"),
        ("OIDC_AUTHORIZED_PARTIES", "frontend,job-runner"),
    ])
    .await;
    let mut user_of_runner = claims_for(&unique_user("mallory"));
    user_of_runner["azp"] = json!("job-runner");
    let mut named_like_it = user_of_runner.clone();
    named_like_it["preferred_username"] = json!("service-account-job-runner");
    let impostors = [
        (
            "a user token of the client",
            h.signer.sign(&user_of_runner, &json!({})),
        ),
        (
            "a user named like the account",
            h.signer.sign(&named_like_it, &json!({})),
        ),
    ];
    let runner = h
        .signer
        .sign(&service_account_claims("job-runner"), &json!({}));
    let id = delegated_row(&h, true).await;
    for (who, token) in &impostors {
        let answer = h.access_token(token, id).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (404, Some("token_not_found")),
            "{who}, stored path"
        );
    }
    let served = h.access_token(&runner, id).await;
    assert_eq!(
        (served.status, served.body["accessToken"].as_str()),
        (200, Some("for-the-runner"))
    );
    for (who, token) in &impostors {
        let answer = h.access_token(token, id).await;
        assert_eq!(answer.status, 404, "{who}, cached path");
    }
    // The refresh path: the service account reaches the provider (down here: 503), a user
    // token of the client is turned away before any refresh is tried.
    let fresh = delegated_row(&h, false).await;
    assert_eq!(h.access_token(&runner, fresh).await.status, 503);
    for (who, token) in &impostors {
        let answer = h.access_token(token, fresh).await;
        assert_eq!(answer.status, 404, "{who}, refresh path");
    }
    // Keycloak's service-account token without the `profile` scope: no user name at all.
    let mut bare = service_account_claims("job-runner");
    bare.as_object_mut().unwrap().remove("preferred_username");
    let bare = h.signer.sign(&bare, &json!({}));
    assert_eq!(h.access_token(&bare, id).await.status, 200);
    // An RFC 9068 / plain client-credentials token: `sub` is the client id.
    let mut plain = claims_for("job-runner");
    plain["azp"] = json!("job-runner");
    let plain = h.signer.sign(&plain, &json!({}));
    assert_eq!(h.access_token(&plain, id).await.status, 200);
}

/// `DELEGATE_CLIENTS=job-runner=<sub>` pins the service account: only that `sub` counts.
#[tokio::test]
async fn a_pinned_delegate_is_recognised_by_its_subject_alone() {
    let h = Harness::with(&[
        ("DELEGATE_CLIENTS", "job-runner=0b5e-job-runner-sa"),
        ("OIDC_AUTHORIZED_PARTIES", "frontend,job-runner"),
    ])
    .await;
    let id = delegated_row(&h, true).await;
    let runner = h
        .signer
        .sign(&service_account_claims("job-runner"), &json!({}));
    assert_eq!(h.access_token(&runner, id).await.status, 200);
    let mut other = service_account_claims("job-runner");
    other["sub"] = json!("another-sub");
    let other = h.signer.sign(&other, &json!({}));
    assert_eq!(h.access_token(&other, id).await.status, 404);
}

/// The caller rules hold for delegates too: `OIDC_AUDIENCE`.
#[tokio::test]
async fn a_delegate_token_for_another_audience_is_refused() {
    let h = Harness::with(&[
        ("DELEGATE_CLIENTS", "job-runner"),
        ("OIDC_AUDIENCE", "token-broker-api"),
    ])
    .await;
    let id = delegated_row(&h, true).await;
    let mut wrong = service_account_claims("job-runner");
    wrong["aud"] = json!("account");
    let wrong = h.signer.sign(&wrong, &json!({}));
    assert_eq!(h.access_token(&wrong, id).await.status, 401);
    let mut right = service_account_claims("job-runner");
    right["aud"] = json!(["account", "token-broker-api"]);
    let right = h.signer.sign(&right, &json!({}));
    assert_eq!(h.access_token(&right, id).await.status, 200);
}

/// RFC 6749 §3.1: a parameter sent without a value is as if omitted; the media type is matched
/// exactly, in any case, with parameters allowed.
#[tokio::test]
async fn token_exchange_takes_empty_parameters_as_omitted_and_the_media_type_exactly() {
    let h = Harness::new().await;
    let (_, _, key) = row_with_key(&h, json!({})).await;
    let form =
        format!("{GRANT}&{KEY_TYPE}&subject_token={key}&scope=&audience=&resource=&actor_token=");
    let answer = exchange(&h, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let plain = format!("{GRANT}&{KEY_TYPE}&subject_token={key}");
    for (media, status) in [
        ("Application/X-WWW-Form-URLEncoded; charset=UTF-8", 200),
        ("application/x-www-form-urlencodedjunk", 400),
        ("text/plain; application/x-www-form-urlencoded", 400),
    ] {
        let answer = h
            .request(
                "POST",
                "/api/auth/manager/token",
                None,
                Some((media, plain.clone())),
            )
            .await;
        assert_eq!(answer.status, status, "{media}: {}", answer.text);
    }
}

/// RFC 8693 §2.1: `resource` may name the key's own grant; any other target is refused with
/// `invalid_target`, never ignored. The token type is the provider's, and the scope is said.
#[tokio::test]
async fn token_exchange_honours_its_own_grant_as_resource_and_refuses_other_targets() {
    let h = Harness::new().await;
    let (_, id, key) = row_with_key(&h, json!({})).await;
    sqlx::query("update token_vault set access_token_type = 'DPoP' where id = ?1")
        .bind(id)
        .execute(&h.pool)
        .await
        .unwrap();
    let base = format!("{GRANT}&{KEY_TYPE}&subject_token={key}");
    let answer = exchange(
        &h,
        &format!("{base}&resource=urn%3Atoken-broker%3Agrant%3A{id}"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.body["token_type"], "DPoP",
        "the provider's token type"
    );
    assert_eq!(answer.body["scope"], "openid offline_access");
    let other = Uuid::new_v4();
    for target in [
        format!("resource=urn%3Atoken-broker%3Agrant%3A{other}"),
        "resource=https%3A%2F%2Fapi.example".to_owned(),
        "audience=api.example".to_owned(),
    ] {
        let answer = exchange(&h, &format!("{base}&{target}")).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_target")),
            "{target}"
        );
    }
    let uses: i64 = sqlx::query_scalar("select uses from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(uses, 1, "a refused target uses nothing");
}

/// Rate limited on the token endpoint: OAuth's shape, with Retry-After.
#[tokio::test]
async fn token_exchange_rate_limits_in_oauths_shape() {
    let h = Harness::with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "1")]).await;
    let first = exchange(&h, GRANT).await;
    assert_eq!(first.status, 400);
    let second = exchange(&h, GRANT).await;
    assert_eq!(
        (second.status, second.body["error"].as_str()),
        (429, Some("temporarily_unavailable")),
        "{}",
        second.text
    );
    assert!(second.body["error_description"].is_string());
    assert!(second.headers.contains_key("retry-after"));
    assert!(
        second.body.get("message").is_none(),
        "not the API's own shape"
    );
}

/// A user cannot grow `task_keys` by creating and revoking keys: keys made within a day count
/// against the row's limit even once revoked.
#[tokio::test]
async fn create_and_revoke_cycles_hit_the_rows_limit() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    for _ in 0..100 {
        let made = create(&h, &bearer, id, json!({})).await;
        assert_eq!(made.status, 201, "{}", made.text);
        let key_id = made.body["taskKeyId"].as_str().unwrap();
        let gone = h
            .request(
                "DELETE",
                &format!("{}/{key_id}", keys_path(id)),
                Some(&bearer),
                None,
            )
            .await;
        assert_eq!(gone.status, 200);
    }
    let refused = create(&h, &bearer, id, json!({})).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (409, Some("too_many_task_keys"))
    );
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(count, 100);
}

/// A key may not name networks that hold a trusted proxy: any host there could write
/// `X-Forwarded-For` itself.
#[tokio::test]
async fn a_key_may_not_name_a_trusted_proxy_network() {
    let h = Harness::with(&[("TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    for cidrs in [
        json!(["10.20.0.0/16"]),
        json!(["0.0.0.0/0"]),
        json!(["10.1.2.3"]),
    ] {
        let answer = create(&h, &bearer, id, json!({ "allowedCidrs": cidrs })).await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{cidrs}"
        );
        assert!(answer.body["message"]
            .as_str()
            .unwrap()
            .contains("trusted proxy"));
    }
    let fine = create(&h, &bearer, id, json!({ "allowedCidrs": ["192.0.2.0/24"] })).await;
    assert_eq!(fine.status, 201);
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// Every hop trusted (a caller inside the proxy network, through the ingress): the leftmost
/// `X-Forwarded-For` entry is the caller's own writing. Varying it must not buy a fresh rate
/// limit: the client is the hop the ingress wrote.
#[tokio::test]
async fn a_forwarded_for_written_by_the_caller_does_not_escape_the_rate_limit_when_every_hop_is_trusted(
) {
    let h = Harness::with(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "1"),
    ])
    .await;
    let mut statuses = Vec::new();
    for n in 1..=3 {
        let request = axum::http::Request::post("/api/auth/manager/access-token")
            .header("content-type", "application/json")
            // The caller wrote 10.1.1.n; the ingress (10.0.0.2) appended the caller's address.
            .header("x-forwarded-for", format!("10.1.1.{n}, 10.99.0.1"))
            .extension(axum::extract::ConnectInfo(
                "10.0.0.2:443".parse::<std::net::SocketAddr>().unwrap(),
            ))
            .body(Body::from("{}"))
            .unwrap();
        statuses.push(h.send(request).await.status);
    }
    assert_eq!(
        statuses,
        [401, 429, 429],
        "one client, however it names itself"
    );
}

/// A grant ended at the provider fails its row; a re-consent in its place must not bring the
/// old keys back (one of them may be the leaked key that ending the grant was meant to stop).
#[tokio::test]
async fn a_reconsented_row_comes_back_without_its_old_keys() {
    let h = Harness::new().await;
    let (user, id, key) = row_with_key(&h, json!({})).await;
    // The provider ended the grant: the refresh path fails the row (as fail_refresh does).
    sqlx::query(
        "update token_vault set status = 'failed', status_reason = 'revoked_by_provider', \
         updated_at = ?2 where id = ?1",
    )
    .bind(id)
    .bind(chrono::Utc::now())
    .execute(&h.pool)
    .await
    .unwrap();
    let bearer = h.bearer(&user);
    let again = h
        .post(
            &format!("/api/auth/manager/offline-tokens/{id}/reconsent"),
            Some(&bearer),
            json!({}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert!(
        again.body["message"]
            .as_str()
            .unwrap()
            .contains("task keys"),
        "the answer says the keys ended: {}",
        again.text
    );
    // The user completes it: the callback's claim and activation, as the vault does them.
    let state = again.body["stateToken"].as_str().unwrap();
    let claimed = h
        .vault
        .claim_consent(
            &token_broker::crypto::sha256(state.as_bytes()),
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .expect("the re-consent's state");
    let sealed = h
        .keyring
        .seal(
            b"new-offline-token",
            h.binding(token_broker::crypto::purpose::REFRESH_TOKEN, id, &user),
        )
        .unwrap();
    let now = chrono::Utc::now();
    let activation = token_broker::vault::Activation {
        sealed: &sealed,
        expires_at: now + chrono::Duration::days(365),
        refresh_expires_at: Some(now + chrono::Duration::days(30)),
        granted_scope: Some("openid offline_access".into()),
        now,
    };
    assert!(h
        .vault
        .activate(claimed, &activation)
        .await
        .unwrap()
        .is_some());
    assert_eq!(h.status_of(id).await, "active");
    h.seed_stored_access(id, &user, "fresh").await;
    let answer = redeem(&h, &key, json!({})).await;
    assert_eq!(
        (answer.status, answer.body["message"].as_str()),
        (401, Some("This task key was revoked")),
        "{}",
        answer.text
    );
    let keys = h.get(&keys_path(id), Some(&bearer)).await;
    assert_eq!(keys.body["items"][0]["state"], "revoked");
    // The owner's own access is back, and new keys can be issued.
    assert_eq!(h.access_token(&bearer, id).await.status, 200);
    assert_eq!(create(&h, &bearer, id, json!({})).await.status, 201);
}

/// Every delegate redemption is audited, naming the client and the token's `sub`, on the
/// stored-token path and the cached path alike (a refresh writes its own `token_issued`).
#[tokio::test]
async fn every_delegate_redemption_is_audited_with_client_and_subject() {
    let h = Harness::with(&[("DELEGATE_CLIENTS", "job-runner")]).await;
    let id = delegated_row(&h, true).await;
    let runner = h
        .signer
        .sign(&service_account_claims("job-runner"), &json!({}));
    for _ in 0..3 {
        assert_eq!(h.access_token(&runner, id).await.status, 200);
    }
    let mut records: Vec<(String, String)> = Vec::new();
    for _ in 0..100 {
        records = sqlx::query_as(
            "select actor, reason from token_audit where token_id = ?1 and action = 'delegate_used'",
        )
        .bind(id)
        .fetch_all(&h.pool)
        .await
        .unwrap();
        if records.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        records,
        vec![
            (
                "client:job-runner".to_owned(),
                "sub:0b5e-job-runner-sa".to_owned()
            );
            3
        ],
        "the stored path once, the cache twice"
    );
    // The owner's own calls are not delegate records.
    let owner: String = sqlx::query_scalar("select user_id from token_vault where id = ?1")
        .bind(id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(h.access_token(&h.bearer(&owner), id).await.status, 200);
    let count: i64 = sqlx::query_scalar(
        "select count(*) from token_audit where token_id = ?1 and action = 'delegate_used'",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(count, 3);
}

/// The routes that write rows a user could otherwise grow (task keys, re-consents) are rate
/// limited per client like the rest of what a client drives.
#[tokio::test]
async fn the_management_routes_are_rate_limited() {
    let h = Harness::with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")]).await;
    let user = unique_user("alice");
    let id = h.seed_active(&user, "t", "offline-token").await;
    let bearer = h.bearer(&user);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(create(&h, &bearer, id, json!({})).await.status);
    }
    assert_eq!(statuses, [201, 201, 429]);
    let reconsent = h
        .post(
            &format!("/api/auth/manager/offline-tokens/{id}/reconsent"),
            Some(&bearer),
            json!({}),
        )
        .await;
    assert_eq!(reconsent.status, 429);
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
}
