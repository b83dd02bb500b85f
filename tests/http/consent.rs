//! Starting a consent: what is stored, what is returned, and every bad request.

use serde_json::{json, Value};
use token_broker::crypto::sha256;
use url::Url;
use uuid::Uuid;

use crate::harness::{unique_user, Harness, ISSUER};

fn param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn consent_stores_a_pending_row_and_returns_a_pkce_consent_url() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let answer = h
        .consent(&h.bearer(&user), json!({ "taskId": "jupyter-task-123" }))
        .await;
    assert_eq!(answer.status, 201);
    let body = answer.body;
    assert_eq!(
        body["message"],
        "Visit this URL to grant offline_access consent, then the token will be automatically stored"
    );
    let state = body["stateToken"].as_str().unwrap();
    assert!(state.len() >= 43, "state carries at least 256 bits");
    let url = Url::parse(body["consentUrl"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{ISSUER}/protocol/openid-connect/auth")
    );
    assert_eq!(param(&url, "response_type"), "code");
    assert_eq!(param(&url, "client_id"), "token-broker");
    assert_eq!(param(&url, "scope"), "openid offline_access");
    assert_eq!(param(&url, "state"), state);
    assert_eq!(param(&url, "code_challenge_method"), "S256");
    assert_eq!(param(&url, "code_challenge").len(), 43);
    assert!(param(&url, "nonce").len() >= 43);
    // OpenID Connect Core §11: offline_access comes with prompt=consent.
    assert_eq!(param(&url, "prompt"), "consent");
    assert_eq!(
        param(&url, "redirect_uri"),
        "http://broker.test/api/auth/manager/offline-callback"
    );

    let id: Uuid = body["persistentTokenId"].as_str().unwrap().parse().unwrap();
    let row = h.vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "pending");
    assert_eq!(row.user_id, user);
    assert_eq!(row.task_id, "jupyter-task-123");
    assert!(row.sealed.is_none());
    let (state_token, state_hash, verifier): (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as(
            "select state_token, state_hash, pkce_verifier from token_vault where id = ?1",
        )
        .bind(id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(state_token, None, "the raw state is never stored");
    assert_eq!(state_hash, Some(sha256(state.as_bytes())));
    assert!(verifier.is_some());
    // Nothing in the row spells the state or the nonce.
    let whole: String = sqlx::query_scalar(
        "select coalesce(hex(state_hash),'') || coalesce(hex(pkce_verifier),'') || \
         coalesce(hex(nonce_hash),'') || metadata from token_vault where id = ?1",
    )
    .bind(id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(!whole.contains(state) && !whole.contains(&param(&url, "nonce")));
}

#[tokio::test]
async fn consent_without_a_bearer_token_is_refused() {
    let h = Harness::new().await;
    let answer = h
        .post(
            "/api/auth/manager/offline-consent",
            None,
            json!({ "taskId": "t" }),
        )
        .await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(answer.body["error"], "unauthorized");
    assert_eq!(h.row_count().await, 0);
}

#[tokio::test]
async fn redirect_uri_outside_the_allowed_origins_is_refused() {
    let h = Harness::new().await;
    let bearer = h.bearer("alice");
    for uri in [
        "https://evil.test/phish",
        "http://frontend.test.evil.test/x",
        "https://frontend.test/x",
        "javascript:alert(1)",
        "//evil.test/x",
        "http://user@frontend.test/x",
        "not a url",
        // The parser would take these for the allowed origin; the broker wants it written
        // plainly, without whitespace or control characters.
        "http:frontend.test/x",
        "http:///frontend.test/x",
        "http:\\\\frontend.test/x",
        " http://frontend.test/x",
        "http://frontend.test/x\ty",
    ] {
        let answer = h
            .consent(&bearer, json!({ "taskId": "t", "redirectUri": uri }))
            .await;
        assert_eq!(answer.status, 400, "{uri}");
        assert_eq!(answer.body["error"], "invalid_redirect_uri", "{uri}");
    }
    assert_eq!(h.row_count().await, 0);
}

#[tokio::test]
async fn malformed_consent_requests_get_clear_errors_and_store_nothing() {
    let h = Harness::new().await;
    let bearer = h.bearer("alice");
    let send = |body: String, content_type: &'static str| {
        h.request(
            "POST",
            "/api/auth/manager/offline-consent",
            Some(&bearer),
            Some((content_type, body)),
        )
    };
    let cases = [
        ("{not json", "application/json", 400, "invalid_json"),
        (
            r#"{"taskId": "t"}"#,
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            r#"{"taskID": "t"}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "t", "extra": 1}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": 42}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "   "}"#,
            "application/json",
            400,
            "invalid_request",
        ),
        (
            r#"{"taskId": "a\u0000b"}"#,
            "application/json",
            400,
            "invalid_request",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let answer = send(body.to_owned(), content_type).await;
        assert_eq!(answer.status, status, "{body}");
        assert_eq!(answer.body["error"], code, "{body}");
        assert!(answer.body["message"].as_str().unwrap().len() > 5);
    }
    let long_task = format!(r#"{{"taskId": "{}"}}"#, "x".repeat(201));
    assert_eq!(send(long_task, "application/json").await.status, 400);
    let oversized = format!(r#"{{"taskId": "{}"}}"#, "x".repeat(20_000));
    let answer = send(oversized, "application/json").await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body["error"], "payload_too_large");
    assert_eq!(h.row_count().await, 0);
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let h = Harness::new().await;
    let answer = h.get("/api/auth/manager/nothing-here", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"], "not_found");
    let _: Value = answer.body;
}

#[tokio::test]
async fn an_allowed_origin_is_accepted_however_a_url_may_write_it() {
    let h = Harness::new().await;
    let bearer = h.bearer("alice");
    for uri in [
        "http://frontend.test",
        "HTTP://Frontend.Test:80/done?x=1#y",
        "http://frontend.test:080/",
    ] {
        let answer = h
            .consent(&bearer, json!({ "taskId": "t", "redirectUri": uri }))
            .await;
        assert_eq!(answer.status, 201, "{uri}: {}", answer.text);
    }
}

#[tokio::test]
async fn pending_consents_per_user_are_capped_and_expired_ones_do_not_count() {
    let h = Harness::with(&[("MAX_PENDING_CONSENTS", "3")]).await;
    let user = crate::harness::unique_user("alice");
    let bearer = h.bearer(&user);
    for _ in 0..3 {
        assert_eq!(
            h.consent(&bearer, json!({ "taskId": "t" })).await.status,
            201
        );
    }
    let refused = h.consent(&bearer, json!({ "taskId": "t" })).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (429, Some("too_many_pending"))
    );
    assert_eq!(h.row_count().await, 3, "nothing stored for the refused one");
    let other = h.bearer(&crate::harness::unique_user("bob"));
    assert_eq!(
        h.consent(&other, json!({ "taskId": "t" })).await.status,
        201,
        "the cap is per user"
    );
    // Once their links have expired, they no longer count.
    sqlx::query("update token_vault set state_expires_at = '2000-01-01 00:00:00+00:00'")
        .execute(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        h.consent(&bearer, json!({ "taskId": "t" })).await.status,
        201
    );
}

#[tokio::test]
async fn answers_that_carry_a_state_or_a_token_are_never_cached() {
    let h = Harness::new().await;
    let user = crate::harness::unique_user("alice");
    let bearer = h.bearer(&user);
    let consent = h.consent(&bearer, json!({ "taskId": "t" })).await;
    assert_eq!(consent.headers["cache-control"], "no-store");
    let id = h.seed_active(&user, "t", "offline-token").await;
    h.seed_stored_access(id, &user, "stored").await;
    let token = h.access_token(&bearer, id).await;
    assert_eq!(token.status, 200);
    assert_eq!(token.headers["cache-control"], "no-store");
    let list = h
        .get("/api/auth/manager/offline-tokens", Some(&bearer))
        .await;
    assert_eq!(list.headers["cache-control"], "no-store");
    let refused = h.access_token("not-a-token", id).await;
    assert_eq!(refused.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn oidc_consent_prompt_none_sends_no_prompt_at_all() {
    let h = Harness::with(&[("OIDC_CONSENT_PROMPT", "none")]).await;
    let user = unique_user("alice");
    let answer = h.consent(&h.bearer(&user), json!({ "taskId": "t" })).await;
    assert_eq!(answer.status, 201);
    let url = Url::parse(answer.body["consentUrl"].as_str().unwrap()).unwrap();
    assert!(
        url.query_pairs().all(|(k, _)| k != "prompt"),
        "not prompt=none, which would forbid the consent page: {url}"
    );
}
