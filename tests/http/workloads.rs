//! Workload identity: the owner binds a row to a platform identity, the workload redeems with
//! its platform's own token at the token exchange. Tokens come from local platforms
//! (`platform.rs`), Kubernetes- and GitHub-Actions-shaped; the provider is down, so a
//! redemption is served from the row's stored access token.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now, service_account_claims, unique_user, Answer, Harness};
use crate::platform::{trusting, Platform, GITHUB, KUBERNETES};

const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const RUNNER: &str = "system:serviceaccount:jobs:runner";
const UID: &str = "8f1c2d3e-0000-4000-8000-00000000aaaa";

struct Scene {
    h: Harness,
    kubernetes: Platform,
    github: Platform,
    user: String,
    /// An active row of `user` with a stored access token.
    row: Uuid,
}

async fn scene() -> Scene {
    let (kubernetes, github) = (Platform::new(KUBERNETES), Platform::new(GITHUB));
    let vars = trusting(&kubernetes, &github);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let h = Harness::with(&vars).await;
    let user = unique_user("alice");
    let row = active_row(&h, &user, "nightly").await;
    Scene {
        h,
        kubernetes,
        github,
        user,
        row,
    }
}

async fn active_row(h: &Harness, user: &str, task: &str) -> Uuid {
    let id = h.seed_active(user, task, "offline-token").await;
    h.seed_stored_access(id, user, &format!("minted-for-{task}"))
        .await;
    id
}

fn workloads_path(id: impl std::fmt::Display) -> String {
    format!("/api/auth/manager/offline-tokens/{id}/workloads")
}

async fn bind(h: &Harness, bearer: &str, id: impl std::fmt::Display, body: Value) -> Answer {
    h.post(&workloads_path(id), Some(bearer), body).await
}

/// The runner service account of namespace `jobs`, pinned to its uid.
fn runner_binding() -> Value {
    json!({
        "issuer": KUBERNETES, "subject": RUNNER,
        "claims": { "kubernetes.io.serviceaccount.uid": UID },
        "name": "nightly on k8s",
    })
}

async fn bound(s: &Scene, id: Uuid, body: Value) -> Value {
    let answer = bind(&s.h, &s.h.bearer(&s.user), id, body).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.body
}

fn runner_token(s: &Scene) -> String {
    s.kubernetes
        .sign(&Platform::kubernetes_claims("jobs", "runner", UID))
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn exchange(h: &Harness, token: &str, token_type: &str, extra: &str) -> Answer {
    let form = format!(
        "grant_type={}&subject_token={}&subject_token_type={}{extra}",
        encode("urn:ietf:params:oauth:grant-type:token-exchange"),
        encode(token),
        encode(token_type),
    );
    h.request(
        "POST",
        "/api/auth/manager/token",
        None,
        Some(("application/x-www-form-urlencoded", form)),
    )
    .await
}

fn resource(id: Uuid) -> String {
    format!(
        "&resource={}",
        encode(&format!("urn:token-broker:grant:{id}"))
    )
}

async fn uses(h: &Harness) -> i64 {
    sqlx::query_scalar("select coalesce(sum(uses), 0) from task_keys")
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

async fn actions(h: &Harness, action: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("select actor, outcome, reason from token_audit where action = ?1 order by id")
        .bind(action)
        .fetch_all(&h.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_kubernetes_workload_redeems_its_bound_row_only() {
    let s = scene().await;
    let other = active_row(&s.h, &s.user, "other-task").await;
    let binding = bound(&s, s.row, runner_binding()).await;
    assert_eq!(binding["issuer"], KUBERNETES);
    assert_eq!(binding["subject"], RUNNER);
    assert_eq!(binding["claims"]["kubernetes.io.serviceaccount.uid"], UID);
    assert_eq!(binding["persistentTokenId"], s.row.to_string());
    assert_eq!(binding["state"], "active");
    let binding_id = binding["workloadBindingId"].as_str().unwrap().to_owned();

    let answer = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["access_token"], "minted-for-nightly");
    assert_eq!(
        answer.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let named = exchange(&s.h, &runner_token(&s), JWT_TYPE, &resource(s.row)).await;
    assert_eq!(named.status, 200, "{}", named.text);
    let elsewhere = exchange(&s.h, &runner_token(&s), JWT_TYPE, &resource(other)).await;
    assert_eq!(
        (elsewhere.status, elsewhere.body["error"].as_str()),
        (400, Some("invalid_target")),
        "{}",
        elsewhere.text
    );

    let listed =
        s.h.get(&workloads_path(s.row), Some(&s.h.bearer(&s.user)))
            .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["items"][0]["uses"], 2);
    assert!(listed.body["items"][0]["lastUsedAt"].is_string());
    let empty =
        s.h.get(&workloads_path(other), Some(&s.h.bearer(&s.user)))
            .await;
    assert_eq!(empty.body["items"], json!([]));
    // Not a task key either: the key list of the row does not show it.
    let keys =
        s.h.get(
            &format!("/api/auth/manager/offline-tokens/{}/task-keys", s.row),
            Some(&s.h.bearer(&s.user)),
        )
        .await;
    assert_eq!(keys.body["items"], json!([]));

    let bound_records = actions(&s.h, "workload_bound").await;
    assert_eq!(bound_records.len(), 1);
    assert_eq!(bound_records[0].0, s.user);
    assert_eq!(
        bound_records[0].2.as_deref(),
        Some(format!("binding:{binding_id}").as_str())
    );
    let used = actions(&s.h, "workload_used").await;
    assert_eq!(used.len(), 2);
    assert_eq!(used[0].0, format!("workload:{binding_id}"));
    assert_eq!(
        (used[0].1.as_str(), used[0].2.as_deref()),
        ("success", Some("from:192.0.2.1"))
    );
}

#[tokio::test]
async fn a_github_workflow_redeems_with_its_id_token() {
    let s = scene().await;
    bound(
        &s,
        s.row,
        json!({
            "issuer": GITHUB, "subject": "repo:octo/pipelines:ref:refs/heads/main",
            "claims": { "repository_id": 4242, "job_workflow_ref":
                "octo/pipelines/.github/workflows/nightly.yml@refs/heads/main" },
        }),
    )
    .await;
    let token = s.github.sign(&Platform::github_claims(
        "octo/pipelines",
        "4242",
        "refs/heads/main",
    ));
    for token_type in [ID_TOKEN_TYPE, JWT_TYPE] {
        let answer = exchange(&s.h, &token, token_type, "").await;
        assert_eq!(answer.status, 200, "{token_type}: {}", answer.text);
    }
    // A fork's copy of the repository has another id, and a branch another subject.
    for (repository_id, git_ref) in [("9999", "refs/heads/main"), ("4242", "refs/heads/dev")] {
        let other = s.github.sign(&Platform::github_claims(
            "octo/pipelines",
            repository_id,
            git_ref,
        ));
        let answer = exchange(&s.h, &other, JWT_TYPE, "").await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{repository_id} {git_ref}"
        );
    }
}

/// Every token that is not the bound workload's, for the reason each states, is refused with
/// `invalid_request`; no use is counted and no token is issued.
#[tokio::test]
async fn tokens_that_are_not_the_bound_workload_are_refused_and_change_nothing() {
    let s = scene().await;
    bound(&s, s.row, runner_binding()).await;
    let good = Platform::kubernetes_claims("jobs", "runner", UID);
    let with = |change: Value| {
        let mut claims = good.clone();
        for (k, v) in change.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let mut without_exp = good.clone();
    without_exp.as_object_mut().unwrap().remove("exp");
    let stranger = Platform::new(KUBERNETES);
    let unlisted = Platform::new(GITHUB);
    let hs256 = {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let key = jsonwebtoken::EncodingKey::from_secret(b"anyone's secret");
        jsonwebtoken::encode(&header, &good, &key).unwrap()
    };
    let none = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "k8s-1"})),
            b64(&good)
        )
    };
    let k8s = |claims: Value| s.kubernetes.sign(&claims);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong audience",
            k8s(with(json!({ "aud": ["https://other.test"] }))),
            "another audience",
        ),
        (
            "another namespace",
            k8s(Platform::kubernetes_claims("other", "runner", UID)),
            "no live workload binding",
        ),
        (
            "another service account",
            k8s(Platform::kubernetes_claims("jobs", "builder", UID)),
            "no live workload binding",
        ),
        (
            "a re-created service account",
            k8s(Platform::kubernetes_claims("jobs", "runner", "new-uid")),
            "no live workload binding",
        ),
        (
            "expired",
            k8s(with(
                json!({ "iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600 }),
            )),
            "expired",
        ),
        (
            "not yet valid",
            k8s(with(json!({ "nbf": now() + 3600 }))),
            "not valid yet",
        ),
        (
            "issued in the future",
            k8s(with(json!({ "iat": now() + 3600 }))),
            "in the future",
        ),
        (
            "lives too long",
            k8s(with(json!({ "exp": now() + 48 * 3600 }))),
            "lives longer",
        ),
        ("no expiry", k8s(without_exp), "exp"),
        (
            "unknown issuer",
            unlisted.sign(&with(json!({ "iss": "https://gitlab.example.test" }))),
            "another issuer",
        ),
        (
            "a key the platform never published",
            stranger.sign(&good),
            "signature",
        ),
        ("HS256", hs256, "algorithm not allowed"),
        ("alg none", none, "not a well-formed JWT"),
        (
            "the user's own provider token",
            s.h.bearer(&s.user),
            "another issuer",
        ),
        (
            "a provider token with the workload's subject",
            s.h.signer
                .sign(&with(json!({ "iss": crate::harness::ISSUER })), &json!({})),
            "another issuer",
        ),
        ("not a JWT", "not-a-jwt".to_owned(), "not a well-formed JWT"),
    ];
    let issued_before = actions(&s.h, "token_issued").await.len();
    for (why, token, reason) in cases {
        let answer = exchange(&s.h, &token, JWT_TYPE, "").await;
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {}",
            answer.text
        );
        assert!(answer.body.get("access_token").is_none(), "{why}");
        let description = answer.body["error_description"]
            .as_str()
            .unwrap_or_default();
        assert!(description.contains(reason), "{why}: {description}");
    }
    assert_eq!(uses(&s.h).await, 0);
    assert_eq!(actions(&s.h, "token_issued").await.len(), issued_before);
    assert!(actions(&s.h, "workload_used")
        .await
        .iter()
        .all(|(_, outcome, _)| outcome == "failure"));
    // The right token still works: nothing above used it up or locked it.
    assert_eq!(
        exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await.status,
        200
    );
}

#[tokio::test]
async fn a_revoked_binding_is_refused_and_revoking_is_idempotent() {
    let s = scene().await;
    let binding = bound(&s, s.row, runner_binding()).await;
    let id = binding["workloadBindingId"].as_str().unwrap();
    let path = format!("{}/{id}", workloads_path(s.row));
    let bearer = s.h.bearer(&s.user);
    for _ in 0..2 {
        let revoked = s.h.request("DELETE", &path, Some(&bearer), None).await;
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        assert_eq!(revoked.body["state"], "revoked");
    }
    let answer = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(
        (answer.status, answer.body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(actions(&s.h, "workload_unbound").await.len(), 2);
    // A binding is not a task key: the key route does not find it.
    let as_key =
        s.h.request(
            "DELETE",
            &format!("/api/auth/manager/offline-tokens/{}/task-keys/{id}", s.row),
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(as_key.status, 404);
    let unknown =
        s.h.request(
            "DELETE",
            &format!("{}/{}", workloads_path(s.row), Uuid::new_v4()),
            Some(&bearer),
            None,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body["error"].as_str()),
        (404, Some("workload_binding_not_found"))
    );
}

#[tokio::test]
async fn strangers_get_404_and_no_binding_is_made_on_their_word() {
    let s = scene().await;
    let bob = s.h.bearer(&unique_user("bob"));
    assert_eq!(bind(&s.h, &bob, s.row, runner_binding()).await.status, 404);
    assert_eq!(
        s.h.get(&workloads_path(s.row), Some(&bob)).await.status,
        404
    );
    let binding = bound(&s, s.row, runner_binding()).await;
    let path = format!(
        "{}/{}",
        workloads_path(s.row),
        binding["workloadBindingId"].as_str().unwrap()
    );
    assert_eq!(
        s.h.request("DELETE", &path, Some(&bob), None).await.status,
        404
    );
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&s.h.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// Task keys, delegates and workloads themselves may not manage bindings: 403.
#[tokio::test]
async fn only_the_owner_manages_bindings() {
    let s = scene().await;
    let key =
        s.h.post(
            &format!("/api/auth/manager/offline-tokens/{}/task-keys", s.row),
            Some(&s.h.bearer(&s.user)),
            json!({}),
        )
        .await;
    let key = key.body["taskKey"].as_str().unwrap().to_owned();
    let workload = runner_token(&s);
    for (who, credential) in [("task key", key), ("workload", workload)] {
        let answer = bind(&s.h, &credential, s.row, runner_binding()).await;
        assert_eq!(answer.status, 403, "{who}: {}", answer.text);
        let listed = s.h.get(&workloads_path(s.row), Some(&credential)).await;
        assert_eq!(listed.status, 403, "{who}");
    }
    let with_delegates = s.h.beside(&[("DELEGATE_CLIENTS", "job-runner")]).await;
    let delegate =
        s.h.signer
            .sign(&service_account_claims("job-runner"), &json!({}));
    let answer = bind(&with_delegates, &delegate, s.row, runner_binding()).await;
    assert_eq!(answer.status, 403, "delegate: {}", answer.text);
}

#[tokio::test]
async fn a_workload_bound_to_two_rows_must_name_one() {
    let s = scene().await;
    let second = active_row(&s.h, &s.user, "weekly").await;
    let unbound = active_row(&s.h, &s.user, "unbound").await;
    bound(&s, s.row, runner_binding()).await;
    bound(&s, second, runner_binding()).await;
    let ambiguous = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(
        (ambiguous.status, ambiguous.body["error"].as_str()),
        (400, Some("invalid_target")),
        "{}",
        ambiguous.text
    );
    let weekly = exchange(&s.h, &runner_token(&s), JWT_TYPE, &resource(second)).await;
    assert_eq!(weekly.status, 200, "{}", weekly.text);
    assert_eq!(weekly.body["access_token"], "minted-for-weekly");
    let nightly = exchange(&s.h, &runner_token(&s), JWT_TYPE, &resource(s.row)).await;
    assert_eq!(nightly.body["access_token"], "minted-for-nightly");
    let neither = exchange(&s.h, &runner_token(&s), JWT_TYPE, &resource(unbound)).await;
    assert_eq!(neither.body["error"], "invalid_target");
    assert_eq!(uses(&s.h).await, 2);
}

#[tokio::test]
async fn a_platform_key_rotation_is_followed() {
    let mut s = scene().await;
    bound(&s, s.row, runner_binding()).await;
    assert_eq!(
        exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await.status,
        200
    );
    s.kubernetes.rotate(2);
    let answer = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(
        answer.status, 200,
        "a new kid is read from the rewritten file: {}",
        answer.text
    );
}

#[tokio::test]
async fn max_uses_and_networks_hold_as_they_do_for_keys() {
    let s = scene().await;
    let mut limited = runner_binding();
    limited["maxUses"] = json!(1);
    bound(&s, s.row, limited).await;
    assert_eq!(
        exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await.status,
        200
    );
    let again = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(again.body["error"], "invalid_request");
    assert!(again.body["error_description"]
        .as_str()
        .unwrap()
        .contains("used as often"));
    assert_eq!(uses(&s.h).await, 1);

    let elsewhere = active_row(&s.h, &s.user, "fenced").await;
    let mut fenced = json!({ "issuer": GITHUB, "subject": "repo:octo/fenced:ref:refs/heads/main",
        "allowedCidrs": ["10.0.0.0/8"] });
    fenced["name"] = json!("fenced");
    bound(&s, elsewhere, fenced).await;
    let token = s.github.sign(&Platform::github_claims(
        "octo/fenced",
        "1",
        "refs/heads/main",
    ));
    let refused = exchange(&s.h, &token, JWT_TYPE, "").await;
    assert_eq!(refused.body["error"], "invalid_request");
    assert!(refused.body["error_description"]
        .as_str()
        .unwrap()
        .contains("address"));
}

#[tokio::test]
async fn ending_the_row_ends_its_bindings() {
    let s = scene().await;
    bound(&s, s.row, runner_binding()).await;
    assert_eq!(s.h.revoke(&s.h.bearer(&s.user), s.row).await.status, 200);
    let listed =
        s.h.get(&workloads_path(s.row), Some(&s.h.bearer(&s.user)))
            .await;
    assert_eq!(listed.body["items"][0]["state"], "revoked");
    let answer = exchange(&s.h, &runner_token(&s), JWT_TYPE, "").await;
    assert_eq!(answer.body["error"], "invalid_request");
}

#[tokio::test]
async fn bad_binding_requests_get_clear_errors_and_create_nothing() {
    let s = scene().await;
    let bearer = s.h.bearer(&s.user);
    let long = "x".repeat(1025);
    for (body, words) in [
        (json!({ "subject": RUNNER }), "issuer"),
        (
            json!({ "issuer": "https://gitlab.example.test", "subject": RUNNER }),
            "WORKLOAD_ISSUERS",
        ),
        (
            json!({ "issuer": format!("{KUBERNETES}/"), "subject": RUNNER }),
            "WORKLOAD_ISSUERS",
        ),
        (json!({ "issuer": KUBERNETES, "subject": "" }), "subject"),
        (json!({ "issuer": KUBERNETES, "subject": long }), "subject"),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "claims": { "a..b": "c" } }),
            "claim path",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "claims": { "uid": ["x"] } }),
            "string, number or boolean",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "claims": "uid" }),
            "claims",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "maxUses": 0 }),
            "maxUses",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "allowedCidrs": ["example.com"] }),
            "allowedCidrs",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "expiresAt": "2001-01-01T00:00:00Z" }),
            "expiresAt",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "scope": "openid admin" }),
            "scope",
        ),
        (
            json!({ "issuer": KUBERNETES, "subject": RUNNER, "audience": "x" }),
            "unknown field",
        ),
    ] {
        let answer = bind(&s.h, &bearer, s.row, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text);
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body}: {message}");
    }
    let not_a_row = bind(&s.h, &bearer, "not-a-uuid", runner_binding()).await;
    assert_eq!(not_a_row.status, 400);
    let count: i64 = sqlx::query_scalar("select count(*) from task_keys")
        .fetch_one(&s.h.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn without_trusted_platforms_no_binding_is_made_and_no_workload_token_taken() {
    let h = Harness::new().await;
    let user = unique_user("alice");
    let row = active_row(&h, &user, "t").await;
    let answer = bind(&h, &h.bearer(&user), row, runner_binding()).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("not enabled"));
    let platform = Platform::new(KUBERNETES);
    let token = platform.sign(&Platform::kubernetes_claims("jobs", "runner", UID));
    let refused = exchange(&h, &token, JWT_TYPE, "").await;
    assert_eq!(refused.body["error"], "invalid_request");
    assert!(refused.body["error_description"]
        .as_str()
        .unwrap()
        .contains("no workload tokens"));
}

/// A key file the operator named but the broker cannot read stops it at start-up, not at a
/// workload's first exchange.
#[tokio::test]
async fn an_unreadable_key_file_stops_the_broker_at_start() {
    let h = Harness::new().await;
    let missing = format!("{KUBERNETES}=/nonexistent/jwks.json");
    let started = h
        .try_beside(&[
            ("WORKLOAD_ISSUERS", KUBERNETES),
            ("WORKLOAD_AUDIENCE", "https://broker.test"),
            ("WORKLOAD_JWKS_FILES", &missing),
        ])
        .await;
    let error = started.err().expect("refuses to start").to_string();
    assert!(error.contains("WORKLOAD_JWKS_FILES"), "{error}");
    assert!(error.contains("/nonexistent/jwks.json"), "{error}");
}
