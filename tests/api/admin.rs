//! The admin page's guards over plain HTTP: who may see it, and who may revoke through it.

use reqwest::header::LOCATION;
use sqlx::PgPool;

use crate::app::{spawn_with, unique_user, Options, TestApp};
use crate::idp::{Browser, Idp, BROKER_PUBLIC_URL};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

async fn admin_app(pool: PgPool) -> TestApp {
    spawn_with(
        pool,
        Options {
            extra: vec![("ADMIN_ROLE", "token-broker-admin".into())],
            ..Options::new(Idp::shared())
        },
    )
    .await
}

/// Signs `operator` in at /admin with a cookie-keeping client; returns it and the page.
async fn sign_in_to_admin(app: &TestApp, operator: &str) -> (reqwest::Client, reqwest::Response) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = client
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303, "sent to the provider");
    let provider = start.headers()[LOCATION].to_str().unwrap().to_owned();
    let back = Browser::new().sign_in(&provider, operator, false).await;
    assert!(back
        .as_str()
        .starts_with(&format!("{BROKER_PUBLIC_URL}/admin/callback")));
    let path = &back.as_str()[BROKER_PUBLIC_URL.len()..];
    let callback = client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    let page = if callback.status() == 303 {
        client
            .get(format!("{}/admin", app.base))
            .send()
            .await
            .unwrap()
    } else {
        callback
    };
    (client, page)
}

fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page has a revoke form")
        .to_owned()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn revoking_needs_the_sessions_csrf_token(pool: PgPool) {
    let app = admin_app(pool).await;
    let user = unique_user("alice");
    let id = app
        .activate(&Idp::shared().user_token(&user).await, &user, "t")
        .await;
    let (client, page) = sign_in_to_admin(&app, &unique_user("admin")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains(&id.to_string()) && html.contains(&user));
    let csrf = csrf_of(&html);
    let revoke = format!("{}/admin/tokens/{id}/revoke", app.base);

    let forged = client
        .post(&revoke)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let cookieless = reqwest::Client::new()
        .post(&revoke)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cookieless.status(), 401);
    assert_eq!(app.row(id).await.status, "active", "nothing was revoked");

    let done = client
        .post(&revoke)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let row = app.row(id).await;
    assert_eq!(row.status, "revoked");
    assert_eq!(row.status_reason.as_deref(), Some("revoked_by_admin"));
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn only_holders_of_the_role_get_the_page(pool: PgPool) {
    let app = admin_app(pool).await;
    let (_, page) = sign_in_to_admin(&app, &unique_user("mallory")).await;
    assert_eq!(page.status(), 403);
    let opens_a_session = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap_or_default().starts_with("tb_admin="));
    assert!(!opens_a_session, "no session for a refused sign-in");
    // A replayed or made-up sign-in state is refused.
    let made_up = app.get("/admin/callback?code=x&state=made-up").await;
    assert_eq!(made_up.status(), 400);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn the_page_shows_grant_health_filters_by_it_and_shows_a_history(pool: PgPool) {
    let app = admin_app(pool.clone()).await;
    let user = unique_user("hank");
    let bearer = Idp::shared().user_token(&user).await;
    let healthy = app.activate(&bearer, &user, "healthy").await;
    let failing = app.activate(&bearer, &user, "failing").await;
    sqlx::query(
        "update token_vault set consecutive_failures = 3, last_error = 'provider_unavailable' \
         where id = $1",
    )
    .bind(failing)
    .execute(&pool)
    .await
    .unwrap();
    let (client, page) = sign_in_to_admin(&app, &unique_user("admin")).await;
    let html = page.text().await.unwrap();
    assert!(
        html.contains("3 failure(s) (provider_unavailable)"),
        "{html}"
    );

    let filtered = client
        .get(format!("{}/admin?user={user}&health=failing", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(filtered.contains(&failing.to_string()));
    assert!(
        !filtered.contains(&healthy.to_string()),
        "the filter applies"
    );

    let history = client
        .get(format!("{}/admin/tokens/{healthy}/history", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    assert_eq!(history.headers()["cache-control"], "no-store");
    let history = history.text().await.unwrap();
    for action in ["consent_requested", "consent_completed"] {
        assert!(history.contains(action), "{action}: {history}");
    }
    // Only a signed-in operator sees it; a bad id is a clear error.
    let anonymous = reqwest::get(format!("{}/admin/tokens/{healthy}/history", app.base))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = client
        .get(format!("{}/admin/tokens/not-an-id/history", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
