//! One contract for every vault backend: each behaviour below runs against PostgreSQL (a fresh
//! database per test) and against SQLite (a fresh file per test). A behaviour cannot exist on
//! one backend only.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use token_broker::crypto::Sealed;
use token_broker::vault::{NewConsent, PgVault, SqliteVault, Status, TokenVault};
use uuid::Uuid;

const PG: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

type Vault = Arc<dyn TokenVault>;

fn consent(state_hash: &[u8], state_expires_at: DateTime<Utc>) -> NewConsent {
    let now = Utc::now();
    NewConsent {
        id: Uuid::new_v4(),
        user_id: "alice|with|bars".into(),
        task_id: "task-1".into(),
        state_hash: state_hash.to_vec(),
        state_expires_at,
        pkce_verifier: b"sealed-verifier".to_vec(),
        nonce_hash: b"nonce-digest".to_vec(),
        redirect_uri: Some("http://app.test/done".into()),
        expires_at: now + chrono::Duration::days(365),
        created_at: now,
        metadata: serde_json::json!({ "createdBy": "test" }),
    }
}

fn in_ten_minutes() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::minutes(10)
}

fn sealed(tag: u8) -> Sealed {
    Sealed {
        key_id: format!("k{tag}"),
        nonce: vec![tag; 12],
        ciphertext: vec![tag; 40],
    }
}

async fn stored_pending(vault: &Vault, state: &[u8]) -> Uuid {
    let new = consent(state, in_ten_minutes());
    vault.create_pending(&new).await.unwrap();
    new.id
}

async fn activated(vault: &Vault) -> Uuid {
    let id = stored_pending(vault, &Uuid::new_v4().into_bytes()).await;
    assert!(vault.activate(id, &sealed(1), Utc::now()).await.unwrap());
    id
}

async fn a_created_consent_is_pending_without_a_token(vault: Vault) {
    let new = consent(b"s1", in_ten_minutes());
    vault.create_pending(&new).await.unwrap();
    let row = vault.find(new.id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.user_id, "alice|with|bars");
    assert_eq!(row.task_id, "task-1");
    assert!(row.sealed.is_none());
    assert!(row.last_used_at.is_none());
    assert!(vault.find(Uuid::new_v4()).await.unwrap().is_none());
}

async fn a_state_is_claimed_once(vault: Vault) {
    let id = stored_pending(&vault, b"state-digest").await;
    let claimed = vault
        .claim_consent(b"state-digest", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.user_id, "alice|with|bars");
    assert_eq!(
        claimed.pkce_verifier.as_deref(),
        Some(&b"sealed-verifier"[..])
    );
    assert_eq!(claimed.nonce_hash.as_deref(), Some(&b"nonce-digest"[..]));
    assert_eq!(
        claimed.redirect_uri.as_deref(),
        Some("http://app.test/done")
    );
    assert!(vault
        .claim_consent(b"state-digest", Utc::now())
        .await
        .unwrap()
        .is_none());
    assert!(vault
        .claim_consent(b"other", Utc::now())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        vault.find(id).await.unwrap().unwrap().status,
        Status::Pending
    );
}

async fn an_expired_state_cannot_be_claimed(vault: Vault) {
    let new = consent(b"old", Utc::now() - chrono::Duration::seconds(1));
    vault.create_pending(&new).await.unwrap();
    assert!(vault
        .claim_consent(b"old", Utc::now())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        vault.find(new.id).await.unwrap().unwrap().status,
        Status::Pending
    );
}

async fn concurrent_claims_of_one_state_succeed_once(vault: Vault) {
    stored_pending(&vault, b"raced").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            vault
                .claim_consent(b"raced", Utc::now())
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn activation_stores_the_sealed_token_once(vault: Vault) {
    let id = stored_pending(&vault, b"s").await;
    assert!(vault.activate(id, &sealed(7), Utc::now()).await.unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Active);
    assert_eq!(row.sealed, Some(sealed(7)));
    assert!(!vault.activate(id, &sealed(8), Utc::now()).await.unwrap());
    assert_eq!(
        vault.find(id).await.unwrap().unwrap().sealed,
        Some(sealed(7))
    );
}

async fn a_pending_consent_fails_with_a_reason_once(vault: Vault) {
    let id = stored_pending(&vault, b"s").await;
    assert!(vault
        .fail_pending(id, "subject_mismatch", Utc::now())
        .await
        .unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.status_reason.as_deref(), Some("subject_mismatch"));
    assert!(!vault.fail_pending(id, "other", Utc::now()).await.unwrap());
    assert!(!vault.activate(id, &sealed(1), Utc::now()).await.unwrap());
    assert!(vault
        .claim_consent(b"s", Utc::now())
        .await
        .unwrap()
        .is_none());
}

async fn a_lease_stores_a_rotated_token_and_records_use(vault: Vault) {
    let id = activated(&vault).await;
    let lease = vault.lock_for_refresh(id).await.unwrap().unwrap();
    assert_eq!(lease.row().sealed, Some(sealed(1)));
    lease
        .finish_used(Some(&sealed(2)), Utc::now())
        .await
        .unwrap();
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.sealed, Some(sealed(2)));
    assert!(row.last_used_at.is_some());

    let lease = vault.lock_for_refresh(id).await.unwrap().unwrap();
    lease.finish_used(None, Utc::now()).await.unwrap();
    assert_eq!(
        vault.find(id).await.unwrap().unwrap().sealed,
        Some(sealed(2))
    );
}

async fn a_lease_can_fail_the_row(vault: Vault) {
    let id = activated(&vault).await;
    let lease = vault.lock_for_refresh(id).await.unwrap().unwrap();
    lease
        .finish_failed("revoked_by_provider", Utc::now())
        .await
        .unwrap();
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.status_reason.as_deref(), Some("revoked_by_provider"));
}

async fn a_dropped_lease_changes_nothing(vault: Vault) {
    let id = activated(&vault).await;
    drop(vault.lock_for_refresh(id).await.unwrap().unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.sealed, Some(sealed(1)));
    assert!(row.last_used_at.is_none());
    assert!(vault
        .lock_for_refresh(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());
}

async fn leases_on_one_row_are_taken_in_turn_and_see_the_rotation(vault: Vault) {
    let id = activated(&vault).await;
    let first = vault.lock_for_refresh(id).await.unwrap().unwrap();
    let second = {
        let vault = vault.clone();
        tokio::spawn(async move {
            let lease = vault.lock_for_refresh(id).await.unwrap().unwrap();
            let seen = lease.row().sealed.clone();
            lease.finish_used(None, Utc::now()).await.unwrap();
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !second.is_finished(),
        "the second lease waits for the first"
    );
    // Another row is not blocked meanwhile.
    let other = activated(&vault).await;
    drop(vault.lock_for_refresh(other).await.unwrap().unwrap());

    first
        .finish_used(Some(&sealed(3)), Utc::now())
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        Some(sealed(3)),
        "the second holder reads the rotated token"
    );
}

async fn postgres(pool: PgPool) -> Vault {
    Arc::new(PgVault::new(pool))
}

async fn sqlite() -> Vault {
    let dir = std::env::temp_dir().join(format!("tb-contract-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("vault.db").display());
    let vault = SqliteVault::connect(&url).await.unwrap();
    vault.migrate().await.unwrap();
    Arc::new(vault)
}

macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[sqlx::test(migrator = "super::PG")]
                async fn $behaviour(pool: sqlx::PgPool) {
                    super::$behaviour(super::postgres(pool).await).await
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(super::sqlite().await).await
                }
            )*
        }
    };
}

contract!(
    a_created_consent_is_pending_without_a_token,
    a_state_is_claimed_once,
    an_expired_state_cannot_be_claimed,
    concurrent_claims_of_one_state_succeed_once,
    activation_stores_the_sealed_token_once,
    a_pending_consent_fails_with_a_reason_once,
    a_lease_stores_a_rotated_token_and_records_use,
    a_lease_can_fail_the_row,
    a_dropped_lease_changes_nothing,
    leases_on_one_row_are_taken_in_turn_and_see_the_rotation,
);
