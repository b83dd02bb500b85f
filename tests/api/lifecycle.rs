use std::sync::Arc;

use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use token_broker::audit::Journal;
use token_broker::crypto::{purpose, Binding, Keyring};
use token_broker::vault::{AuditQuery, AuditStore, PgVault, TokenVault};
use token_broker::{cleanup, key_rotation};
use uuid::Uuid;

use crate::app::{spawn_app, unique_user};
use crate::idp::Idp;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// id, user id, ciphertext, nonce, key id: a sealed row as stored.
type StoredRow = (Uuid, String, Vec<u8>, Vec<u8>, String);

const OLD: &str = "old:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_expired_consent_is_marked_expired_and_its_state_refused(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;
    let back = app.sign_in(&consent.url, &user, true).await;
    sqlx::query(
        "update token_vault set state_expires_at = now() - interval '1 minute' where id = $1",
    )
    .bind(consent.id)
    .execute(&pool)
    .await
    .unwrap();

    let vault: Arc<dyn TokenVault> = Arc::new(PgVault::new(pool));
    let journal = Journal::new(vault.clone(), None);
    let report = cleanup::clean_up(
        vault.as_ref(),
        &journal,
        &token_broker::grants::StatusChanges::default(),
        cleanup::Retention {
            rows: std::time::Duration::from_secs(3600),
            audit: std::time::Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    assert_eq!(report.expired, 1);

    let status: Value = app
        .get_as(
            &bearer,
            &format!("/api/auth/manager/offline-tokens/{}", consent.id),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "expired");
    assert_eq!(status["statusReason"], "consent_timeout");
    let response = app.deliver_callback(&back).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_state");
    let trail = vault
        .audit_trail(&AuditQuery::Token(consent.id), 10)
        .await
        .unwrap();
    assert_eq!(trail.last().unwrap().action, "token_expired");
    assert_eq!(trail.last().unwrap().actor, "system");
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn every_step_of_a_tokens_life_is_audited_without_token_material(pool: PgPool) {
    let idp = Idp::shared();
    let app = spawn_app(pool.clone()).await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "t").await;
    let offline_token = app.stored_refresh_token(id).await;
    let minted: Value = app
        .access_token(&bearer, &id.to_string())
        .await
        .json()
        .await
        .unwrap();
    app.delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    let failed = app.consent(&bearer, "t2").await;
    let back = app.sign_in(&failed.url, &user, false).await;
    app.deliver_callback(&back).await;

    let vault = PgVault::new(pool.clone());
    let trail = vault.audit_trail(&AuditQuery::Token(id), 50).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "consent_requested",
            "consent_completed",
            "token_issued",
            "token_revoked"
        ]
    );
    assert!(trail
        .iter()
        .all(|r| r.actor == user && r.outcome == "success"));
    let by_user = vault
        .audit_trail(&AuditQuery::User(user.clone()), 50)
        .await
        .unwrap();
    let failure = by_user
        .iter()
        .find(|r| r.token_id == Some(failed.id) && r.action == "consent_failed")
        .expect("the failed consent is audited");
    assert_eq!(failure.outcome, "failure");
    assert_eq!(
        failure.reason.as_deref(),
        Some("offline_access_not_granted")
    );

    let everything: Vec<String> =
        sqlx::query_scalar("select row_to_json(a)::text from token_audit a")
            .fetch_all(&pool)
            .await
            .unwrap();
    let everything = everything.join("\n");
    assert!(!everything.contains(&offline_token));
    assert!(!everything.contains(minted["accessToken"].as_str().unwrap()));
    assert!(!everything.contains(&failed.state));
}

/// Inserts `count` active rows whose tokens are sealed under `keyring`, as the broker would.
async fn seed_sealed_rows(pool: &PgPool, keyring: &Keyring, count: usize) {
    let rows: Vec<StoredRow> = (0..count)
        .map(|i| {
            let id = Uuid::new_v4();
            let user = format!("user-{i}");
            let sealed = keyring
                .seal(
                    format!("offline-token-{i}").as_bytes(),
                    Binding {
                        purpose: purpose::REFRESH_TOKEN,
                        row_id: id,
                        user_id: &user,
                    },
                )
                .unwrap();
            (id, user, sealed.ciphertext, sealed.nonce, sealed.key_id)
        })
        .collect();
    for chunk in rows.chunks(1000) {
        let mut insert = QueryBuilder::new(
            "insert into token_vault (id, user_id, task_id, status, encrypted_token, iv, key_id, expires_at) ",
        );
        insert.push_values(chunk, |mut b, (id, user, ciphertext, nonce, key_id)| {
            b.push_bind(id)
                .push_bind(user)
                .push_bind("bulk")
                .push_bind("active")
                .push_bind(ciphertext)
                .push_bind(nonce)
                .push_bind(key_id)
                .push("now() + interval '1 day'");
        });
        insert.build().execute(pool).await.unwrap();
    }
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn rotating_ten_thousand_rows_loses_none_and_leaves_none_behind(pool: PgPool) {
    let old = Keyring::parse(OLD).unwrap();
    seed_sealed_rows(&pool, &old, 10_000).await;
    let vault: Arc<dyn TokenVault> = Arc::new(PgVault::new(pool.clone()));
    let journal = Journal::new(vault.clone(), None);
    let rotating = Keyring::parse(&format!("{NEW},{OLD}")).unwrap();
    assert_eq!(
        key_rotation::remaining(vault.as_ref(), &rotating)
            .await
            .unwrap(),
        10_000
    );

    let ticks = std::sync::atomic::AtomicU64::new(0);
    let report = key_rotation::rotate(vault.as_ref(), &rotating, &journal, 500, |n| {
        ticks.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(report.resealed, 10_000);
    assert_eq!(report.changed_meanwhile, 0);
    assert!(report.failed.is_empty());
    assert_eq!(ticks.into_inner(), 10_000);
    assert_eq!(
        key_rotation::remaining(vault.as_ref(), &rotating)
            .await
            .unwrap(),
        0
    );

    let count: i64 = sqlx::query_scalar("select count(*) from token_vault")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 10_000, "no row lost");
    // The old key can go: every token opens with the new key alone, and says what it said.
    let new_only = Keyring::parse(NEW).unwrap();
    let rows: Vec<StoredRow> =
        sqlx::query_as("select id, user_id, encrypted_token, iv, key_id from token_vault")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (id, user, ciphertext, nonce, key_id) in rows {
        assert_eq!(key_id, "new");
        let sealed = token_broker::crypto::Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let plain = new_only
            .open(
                &sealed,
                Binding {
                    purpose: purpose::REFRESH_TOKEN,
                    row_id: id,
                    user_id: &user,
                },
            )
            .unwrap();
        let index = user.trim_start_matches("user-");
        assert_eq!(
            plain.as_slice(),
            format!("offline-token-{index}").as_bytes()
        );
    }
    // A second run finds nothing to do.
    let again = key_rotation::rotate(vault.as_ref(), &rotating, &journal, 500, |_| {})
        .await
        .unwrap();
    assert_eq!(again.resealed, 0);
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn a_row_under_an_unknown_key_is_reported_and_the_rest_rotate(pool: PgPool) {
    let old = Keyring::parse(OLD).unwrap();
    seed_sealed_rows(&pool, &old, 3).await;
    let lost = Keyring::parse("lost:MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=").unwrap();
    seed_sealed_rows(&pool, &lost, 1).await;
    let vault: Arc<dyn TokenVault> = Arc::new(PgVault::new(pool));
    let journal = Journal::new(vault.clone(), None);
    let rotating = Keyring::parse(&format!("{NEW},{OLD}")).unwrap();

    let report = key_rotation::rotate(vault.as_ref(), &rotating, &journal, 2, |_| {})
        .await
        .unwrap();
    assert_eq!(report.resealed, 3);
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].1.contains("`lost`"), "{:?}", report.failed);
    assert_eq!(
        key_rotation::remaining(vault.as_ref(), &rotating)
            .await
            .unwrap(),
        1
    );
}
