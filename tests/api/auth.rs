use serde_json::{json, Value};
use sqlx::PgPool;

use crate::app::{spawn_app, unique_user, TestApp};
use crate::idp::Idp;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn good_claims(issuer: &str) -> Value {
    json!({ "iss": issuer, "sub": unique_user("jwt"), "exp": now() + 300, "iat": now(), "azp": "frontend" })
}

async fn consent_status(app: &TestApp, bearer: &str) -> u16 {
    app.request_consent(bearer, json!({ "taskId": "t" }))
        .await
        .status()
        .as_u16()
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_token_signed_by_the_provider_is_accepted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let idp = Idp::shared();
    let token = idp.sign(good_claims(&idp.issuer), json!({}), false).await;
    assert_eq!(consent_status(&app, &token).await, 201);
}
