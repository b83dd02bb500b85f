//! One contract for every vault backend: each behaviour below runs against PostgreSQL (a fresh
//! database per test) and against SQLite (a fresh file per test). A behaviour cannot exist on
//! one backend only.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use token_broker::crypto::Sealed;
use token_broker::vault::{
    Activation, AuditAction, AuditEvent, AuditQuery, Claim, ClaimedConsent, Credential,
    CredentialKind, Ended, Lease, ListFilter, ListPosition, NewConsent, NewReconsent, NewTaskKey,
    PgVault, RefreshFailure, RefreshWrite, Reseal, SqliteVault, Status, StatusReason, StoredAccess,
    TokenVault, Transition, VaultRow, WorkloadIdentity,
};
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
        delegates: vec!["job-runner".into()],
    }
}

fn in_ten_minutes() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::minutes(10)
}

fn access(tag: u8) -> StoredAccess {
    StoredAccess {
        sealed: vec![tag; 30],
        expires_at: Utc::now() + chrono::Duration::minutes(5),
        token_type: "bearer".into(),
        scope: Some("openid offline_access".into()),
    }
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
    assert!(vault.create_pending(&new, 1000).await.unwrap());
    new.id
}

fn activation(sealed: &Sealed) -> Activation<'_> {
    let now = Utc::now();
    Activation {
        sealed,
        expires_at: now + chrono::Duration::days(365),
        refresh_expires_at: Some(now + chrono::Duration::days(30)),
        granted_scope: Some("openid offline_access".into()),
        now,
    }
}

/// Completes the consent holding `state` as the callback does: claims the state, then
/// activates the row with `sealed`. False if either step changed nothing.
async fn activate(vault: &Vault, state: &[u8], sealed: &Sealed) -> bool {
    let Some(claim) = vault.claim_consent(state, Utc::now()).await.unwrap() else {
        return false;
    };
    vault
        .activate(claim, &activation(sealed))
        .await
        .unwrap()
        .is_some()
}

/// Claims the consent holding `state`, as the callback does.
async fn claim(vault: &Vault, state: &[u8]) -> ClaimedConsent {
    vault
        .claim_consent(state, Utc::now())
        .await
        .unwrap()
        .expect("a claimable state")
}

/// Starts a re-consent of `id` under `state` and claims it, as a completed re-consent would.
async fn reconsent(vault: &Vault, id: Uuid, state: &[u8]) -> ClaimedConsent {
    let again = NewReconsent {
        id,
        user_id: "alice|with|bars".into(),
        state_hash: state.to_vec(),
        state_expires_at: in_ten_minutes(),
        pkce_verifier: b"v".to_vec(),
        nonce_hash: b"n".to_vec(),
        redirect_uri: None,
        now: Utc::now(),
    };
    assert!(vault.start_reconsent(&again).await.unwrap());
    claim(vault, state).await
}

async fn activated(vault: &Vault) -> Uuid {
    let state = Uuid::new_v4().into_bytes();
    let id = stored_pending(vault, &state).await;
    assert!(activate(vault, &state, &sealed(1)).await);
    id
}

const LEASE: Duration = Duration::from_secs(30);

async fn claimed(vault: &Vault, id: Uuid, lease: Duration) -> (Lease, VaultRow) {
    match vault.claim_refresh(id, lease).await.unwrap() {
        Claim::Claimed(lease, row) => (lease, row),
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn write<'a>(rotated: Option<&'a Sealed>, minted: &'a StoredAccess) -> RefreshWrite<'a> {
    let now = Utc::now();
    RefreshWrite {
        rotated,
        minted: Some(minted),
        refresh_expires_at: Some(now + chrono::Duration::days(30)),
        now,
        actor: "test",
        audit_reason: None,
    }
}

async fn a_created_consent_is_pending_without_a_token(vault: Vault) {
    let new = consent(b"s1", in_ten_minutes());
    assert!(vault.create_pending(&new, 1000).await.unwrap());
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
    assert_eq!(claimed.pkce_verifier(), Some(&b"sealed-verifier"[..]));
    assert_eq!(claimed.nonce_hash(), Some(&b"nonce-digest"[..]));
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
    assert!(vault.create_pending(&new, 1000).await.unwrap());
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
    assert!(activate(&vault, b"s", &sealed(7)).await);
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Active);
    assert_eq!(row.sealed, Some(sealed(7)));
    assert!(row.health.refresh_expires_at.is_some());
    assert!(row.health.last_refresh_at.is_some());
    assert!(
        !activate(&vault, b"s", &sealed(8)).await,
        "a pending activation happens once"
    );
    assert_eq!(
        vault.find(id).await.unwrap().unwrap().sealed,
        Some(sealed(7))
    );
}

async fn a_pending_consent_fails_with_a_reason_once(vault: Vault) {
    let id = stored_pending(&vault, b"s").await;
    assert!(vault
        .fail_pending(id, &"subject_mismatch".parse().unwrap(), Utc::now())
        .await
        .unwrap()
        .is_some());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(
        row.status_reason.as_ref().map(|r| r.as_str()),
        Some("subject_mismatch")
    );
    assert!(vault
        .fail_pending(id, &"other".parse().unwrap(), Utc::now())
        .await
        .unwrap()
        .is_none());
    assert!(!activate(&vault, b"s", &sealed(1)).await);
    assert!(vault
        .claim_consent(b"s", Utc::now())
        .await
        .unwrap()
        .is_none());
}

async fn a_claimed_refresh_writes_back_a_rotated_token_and_records_use(vault: Vault) {
    let id = activated(&vault).await;
    let (row_lease, row) = claimed(&vault, id, LEASE).await;
    assert_eq!(row.sealed, Some(sealed(1)));
    assert!(row.lease_until.is_some());
    let minted = access(5);
    assert!(vault
        .finish_refresh(row_lease, &write(Some(&sealed(2)), &minted))
        .await
        .unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.sealed, Some(sealed(2)));
    assert!(row.last_used_at.is_some());
    assert!(
        row.lease_until.is_none(),
        "the lease ends with the write-back"
    );
    assert_eq!(row.health.consecutive_failures, 0);
    let stored = row.access.unwrap();
    assert_eq!(stored.sealed, vec![5; 30]);
    assert_eq!(stored.token_type, "bearer");
    assert_eq!(stored.scope.as_deref(), Some("openid offline_access"));

    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let minted = access(6);
    assert!(vault
        .finish_refresh(row_lease, &write(None, &minted))
        .await
        .unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(
        row.sealed,
        Some(sealed(2)),
        "no rotation keeps the stored token"
    );
    assert_eq!(row.access.unwrap().sealed, vec![6; 30]);
}

async fn a_claim_can_fail_the_row_and_wipe_its_secrets(vault: Vault) {
    let id = activated(&vault).await;
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let minted = access(5);
    vault
        .finish_refresh(row_lease, &write(None, &minted))
        .await
        .unwrap();
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    assert!(vault
        .fail_refresh(
            row_lease,
            &"revoked_by_provider".parse().unwrap(),
            Utc::now()
        )
        .await
        .unwrap()
        .is_some());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(
        row.status_reason.as_ref().map(|r| r.as_str()),
        Some("revoked_by_provider")
    );
    assert!(row.sealed.is_none(), "a dead token is not kept");
    assert!(row.access.is_none(), "nor the access token minted from it");
    assert_eq!(
        row.health.last_error.as_deref(),
        Some("revoked_by_provider")
    );
}

async fn a_live_claim_excludes_others_and_an_abandoned_one_expires(vault: Vault) {
    let id = activated(&vault).await;
    let (_, first) = claimed(&vault, id, Duration::from_millis(300)).await;
    assert!(matches!(
        vault.claim_refresh(id, LEASE).await.unwrap(),
        Claim::NotClaimed(_)
    ));
    // Another row is not held up meanwhile.
    let other = activated(&vault).await;
    claimed(&vault, other, LEASE).await;
    // The first holder never comes back (a crashed instance): its lease runs out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, second) = claimed(&vault, id, LEASE).await;
    assert!(second.fence > first.fence);
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.sealed, Some(sealed(1)), "nothing was written");
    assert!(row.last_used_at.is_none());
    assert!(matches!(
        vault.claim_refresh(Uuid::new_v4(), LEASE).await.unwrap(),
        Claim::Missing
    ));
}

async fn a_write_back_from_an_older_claim_is_refused(vault: Vault) {
    let id = activated(&vault).await;
    let (stale_lease, _) = claimed(&vault, id, Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (older_lease, _) = claimed(&vault, id, Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (current_lease, _) = claimed(&vault, id, LEASE).await;
    let minted = access(7);
    assert!(vault
        .finish_refresh(current_lease, &write(Some(&sealed(3)), &minted))
        .await
        .unwrap());
    let older = access(8);
    assert!(!vault
        .finish_refresh(stale_lease, &write(Some(&sealed(4)), &older))
        .await
        .unwrap());
    assert!(vault
        .fail_refresh(
            older_lease,
            &"revoked_by_provider".parse().unwrap(),
            Utc::now()
        )
        .await
        .unwrap()
        .is_none());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Active);
    assert_eq!(row.sealed, Some(sealed(3)), "the newer claim's token stays");
    assert_eq!(row.access.unwrap().sealed, vec![7; 30]);
}

async fn a_write_back_is_journaled_with_it_and_a_refused_one_is_not(vault: Vault) {
    let id = activated(&vault).await;
    let (stale_lease, _) = claimed(&vault, id, Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (current_lease, current) = claimed(&vault, id, LEASE).await;
    let minted = access(7);
    let rotated = sealed(3);
    let by_keepalive = RefreshWrite {
        actor: "system",
        audit_reason: Some("keepalive:rotated"),
        ..write(Some(&rotated), &minted)
    };
    assert!(vault
        .finish_refresh(current_lease, &by_keepalive)
        .await
        .unwrap());
    let refused = RefreshWrite {
        actor: "late-instance",
        ..write(None, &minted)
    };
    assert!(!vault.finish_refresh(stale_lease, &refused).await.unwrap());
    let issued: Vec<_> = vault
        .audit_trail(&AuditQuery::Token(id), 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "token_issued")
        .collect();
    assert_eq!(issued.len(), 1, "one record, for the write that landed");
    let record = &issued[0];
    assert_eq!(record.actor, "system");
    assert_eq!(record.outcome, "success");
    assert_eq!(record.reason.as_deref(), Some("keepalive:rotated"));
    assert_eq!(record.user_id.as_deref(), Some(current.user_id.as_str()));
    assert_eq!(record.task_id.as_deref(), Some(current.task_id.as_str()));
}

async fn a_released_claim_records_the_failure_and_its_back_off(vault: Vault) {
    let id = activated(&vault).await;
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let retry_at = Utc::now() + chrono::Duration::minutes(5);
    let failure = RefreshFailure {
        error: "provider_rejected",
        retry_at: Some(retry_at),
        now: Utc::now(),
    };
    assert!(vault
        .release_refresh(row_lease, Some(&failure))
        .await
        .unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Active);
    assert!(row.lease_until.is_none());
    assert_eq!(row.health.consecutive_failures, 1);
    assert_eq!(row.health.last_error.as_deref(), Some("provider_rejected"));
    let back_off = row.health.next_refresh_at.unwrap();
    assert!((back_off - retry_at).num_milliseconds().abs() < 1000);
    // Released without a failure: only the lease ends.
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    assert!(vault.release_refresh(row_lease, None).await.unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.health.consecutive_failures, 1);
    // A success clears the record.
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let minted = access(1);
    vault
        .finish_refresh(row_lease, &write(None, &minted))
        .await
        .unwrap();
    let health = vault.find(id).await.unwrap().unwrap().health;
    assert_eq!(health.consecutive_failures, 0);
    assert!(health.last_error.is_none() && health.next_refresh_at.is_none());
}

async fn ending_a_grant_wipes_it_voids_claims_and_checks_the_owner(vault: Vault) {
    let id = activated(&vault).await;
    let (claim_lease, _) = claimed(&vault, id, LEASE).await;
    assert!(matches!(
        vault
            .end_grant(
                id,
                Some("mallory"),
                Status::Revoked,
                &"revoked_by_user".parse().unwrap(),
                Utc::now()
            )
            .await
            .unwrap(),
        Ended::Missing
    ));
    let Ended::Ended(before) = vault
        .end_grant(
            id,
            Some("alice|with|bars"),
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap()
    else {
        panic!("the owner's grant ends");
    };
    assert_eq!(before.status, Status::Active);
    assert_eq!(
        before.sealed,
        Some(sealed(1)),
        "the token as it was, for the provider"
    );
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Revoked);
    assert_eq!(
        row.status_reason.as_ref().map(|r| r.as_str()),
        Some("revoked_by_user")
    );
    assert!(row.sealed.is_none());
    let minted = access(2);
    assert!(
        !vault
            .finish_refresh(claim_lease, &write(Some(&sealed(5)), &minted))
            .await
            .unwrap(),
        "a refresh in flight cannot write into a revoked row"
    );
    assert!(vault.find(id).await.unwrap().unwrap().sealed.is_none());
    assert!(matches!(
        vault
            .end_grant(
                id,
                None,
                Status::Revoked,
                &"again".parse().unwrap(),
                Utc::now()
            )
            .await
            .unwrap(),
        Ended::Unchanged(_)
    ));

    let pending = stored_pending(&vault, b"to-revoke").await;
    vault
        .end_grant(
            pending,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(vault
        .claim_consent(b"to-revoke", Utc::now())
        .await
        .unwrap()
        .is_none());
}

async fn a_reconsent_reseals_the_same_row(vault: Vault) {
    let id = activated(&vault).await;
    let (stale_lease, _) = claimed(&vault, id, LEASE).await;
    let reconsent = |state: &[u8]| NewReconsent {
        id,
        user_id: "alice|with|bars".into(),
        state_hash: state.to_vec(),
        state_expires_at: in_ten_minutes(),
        pkce_verifier: b"verifier-2".to_vec(),
        nonce_hash: b"nonce-2".to_vec(),
        redirect_uri: None,
        now: Utc::now(),
    };
    assert!(vault.start_reconsent(&reconsent(b"again")).await.unwrap());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        Status::Active,
        "the grant keeps working meanwhile"
    );
    assert_eq!(row.sealed, Some(sealed(1)));
    let claim = vault
        .claim_consent(b"again", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.status, Status::Active);
    assert_eq!(claim.nonce_hash(), Some(&b"nonce-2"[..]));
    assert!(vault
        .activate(claim, &activation(&sealed(9)))
        .await
        .unwrap()
        .is_some());
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Active);
    assert_eq!(row.sealed, Some(sealed(9)));
    let minted = access(3);
    assert!(
        !vault
            .finish_refresh(stale_lease, &write(None, &minted))
            .await
            .unwrap(),
        "a refresh of the old token loses its claim"
    );
    // A stranger's id, a pending and a revoked row cannot be re-consented.
    let mut foreign = reconsent(b"x");
    foreign.user_id = "mallory".into();
    assert!(!vault.start_reconsent(&foreign).await.unwrap());
    vault
        .end_grant(
            id,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(!vault.start_reconsent(&reconsent(b"y")).await.unwrap());
    let pending = stored_pending(&vault, b"p").await;
    let mut on_pending = reconsent(b"z");
    on_pending.id = pending;
    assert!(!vault.start_reconsent(&on_pending).await.unwrap());
}

async fn keepalive_finds_rows_about_to_idle_out(vault: Vault) {
    let soon = activated(&vault).await;
    let later = activated(&vault).await;
    let leased = activated(&vault).await;
    let backing_off = activated(&vault).await;
    let now = Utc::now();
    let set = |id: Uuid, days: i64| {
        let vault = vault.clone();
        async move {
            let (row_lease, _) = claimed(&vault, id, LEASE).await;
            let minted = access(1);
            let write = RefreshWrite {
                rotated: None,
                minted: Some(&minted),
                refresh_expires_at: Some(now + chrono::Duration::days(days)),
                now,
                actor: "system",
                audit_reason: None,
            };
            vault.finish_refresh(row_lease, &write).await.unwrap();
        }
    };
    set(soon, 2).await;
    set(later, 20).await;
    set(leased, 1).await;
    set(backing_off, 1).await;
    claimed(&vault, leased, LEASE).await;
    let (row_lease, _) = claimed(&vault, backing_off, LEASE).await;
    let failure = RefreshFailure {
        error: "provider_rejected",
        retry_at: Some(now + chrono::Duration::hours(1)),
        now,
    };
    vault
        .release_refresh(row_lease, Some(&failure))
        .await
        .unwrap();
    let due = vault
        .due_for_keepalive(now + chrono::Duration::days(7), Utc::now(), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![soon]);
}

async fn rows_near_their_hard_end_are_announced_once(vault: Vault) {
    let near = stored_pending(&vault, b"near").await;
    let token = sealed(1);
    let mut act = activation(&token);
    act.expires_at = Utc::now() + chrono::Duration::days(2);
    assert!(vault
        .activate(claim(&vault, b"near").await, &act)
        .await
        .unwrap()
        .is_some());
    activated(&vault).await;
    let before = Utc::now() + chrono::Duration::days(7);
    let announced = vault.mark_expiring(before, Utc::now(), 10).await.unwrap();
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].id, near);
    assert_eq!(announced[0].task_id, "task-1");
    assert!(vault
        .mark_expiring(before, Utc::now(), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_users_rows_are_listed_newest_first_with_filters_and_pages(vault: Vault) {
    let base = Utc::now() - chrono::Duration::hours(1);
    let mut ids = Vec::new();
    for (i, task) in ["a", "b", "a", "a"].iter().enumerate() {
        let mut new = consent(&[i as u8], in_ten_minutes());
        new.task_id = task.to_string();
        new.created_at = base + chrono::Duration::minutes(i as i64);
        assert!(vault.create_pending(&new, 1000).await.unwrap());
        ids.push(new.id);
    }
    let mut stranger = consent(b"x", in_ten_minutes());
    stranger.user_id = "bob".into();
    assert!(vault.create_pending(&stranger, 1000).await.unwrap());
    vault
        .activate(claim(&vault, &[2]).await, &activation(&sealed(1)))
        .await
        .unwrap();

    let list = |task: Option<&str>, status: Option<Status>, limit, offset| {
        let vault = vault.clone();
        let filter = ListFilter {
            user_id: Some("alice|with|bars".into()),
            task_id: task.map(str::to_owned),
            status,
            limit,
            offset,
            after: None,
        };
        async move {
            vault
                .list(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(None, None, 10, 0).await,
        vec![ids[3], ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        list(Some("a"), None, 10, 0).await,
        vec![ids[3], ids[2], ids[0]]
    );
    assert_eq!(
        list(Some("a"), Some(Status::Active), 10, 0).await,
        vec![ids[2]]
    );
    assert_eq!(list(None, None, 2, 0).await, vec![ids[3], ids[2]]);
    assert_eq!(list(None, None, 2, 2).await, vec![ids[1], ids[0]]);
    assert!(list(None, None, 2, 4).await.is_empty());
    // An offset page with filters: the rows skipped are the filtered ones.
    assert_eq!(list(Some("a"), None, 1, 1).await, vec![ids[2]]);
    assert_eq!(list(Some("a"), None, 5, 2).await, vec![ids[0]]);
    assert!(list(Some("a"), Some(Status::Active), 10, 1)
        .await
        .is_empty());

    let everybody = ListFilter {
        limit: 10,
        ..ListFilter::default()
    };
    assert_eq!(
        vault.list(&everybody).await.unwrap().len(),
        5,
        "the admin view"
    );
}

async fn pages_follow_a_position_with_ties_broken_by_id(vault: Vault) {
    // Three rows share one creation time: the position must still split them exactly.
    let same = Utc::now() - chrono::Duration::minutes(5);
    let mut rows = Vec::new();
    for (i, at) in [same, same, same, same - chrono::Duration::minutes(1)]
        .iter()
        .enumerate()
    {
        let mut new = consent(&[b'k', i as u8], in_ten_minutes());
        new.created_at = *at;
        assert!(vault.create_pending(&new, 1000).await.unwrap());
        rows.push(new.id);
    }
    let filter = |after| ListFilter {
        user_id: Some("alice|with|bars".into()),
        limit: 2,
        after,
        ..ListFilter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = vault.list(&filter(after)).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(ListPosition {
            created_at: last.created_at,
            id: last.id,
        });
        seen.extend(page.iter().map(|r| r.id));
    }
    let mut newest_first = rows[..3].to_vec();
    newest_first.sort_by(|a, b| b.cmp(a));
    newest_first.push(rows[3]);
    assert_eq!(seen, newest_first, "every row once, in list order");
}

async fn stale_rows_expire_in_batches_and_fresh_ones_stay(vault: Vault) {
    let past = Utc::now() - chrono::Duration::seconds(5);
    let mut timed_out = Vec::new();
    for i in 0..3u8 {
        let new = consent(&[b'p', i], past);
        assert!(vault.create_pending(&new, 1000).await.unwrap());
        timed_out.push(new.id);
    }
    let fresh = stored_pending(&vault, b"fresh").await;
    let aged = consent(b"aged", in_ten_minutes());
    assert!(vault.create_pending(&aged, 1000).await.unwrap());
    let token = sealed(1);
    let mut past_its_end = activation(&token);
    past_its_end.expires_at = past;
    vault
        .activate(claim(&vault, b"aged").await, &past_its_end)
        .await
        .unwrap();
    let live = activated(&vault).await;

    let first = vault.expire_stale(Utc::now(), 2).await.unwrap();
    assert_eq!(first.len(), 2, "a batch is bounded");
    let rest = vault.expire_stale(Utc::now(), 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(vault
        .expire_stale(Utc::now(), 100)
        .await
        .unwrap()
        .is_empty());

    for id in &timed_out {
        let row = vault.find(*id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Expired);
        assert_eq!(
            row.status_reason.as_ref().map(|r| r.as_str()),
            Some("consent_timeout")
        );
    }
    let aged_row = vault.find(aged.id).await.unwrap().unwrap();
    assert_eq!(aged_row.status, Status::Expired);
    assert_eq!(
        aged_row.status_reason.as_ref().map(|r| r.as_str()),
        Some("max_age_reached")
    );
    assert!(aged_row.sealed.is_none());
    assert!(first
        .iter()
        .chain(&rest)
        .all(|c| c.status == Status::Expired));
    assert_eq!(
        vault.find(fresh).await.unwrap().unwrap().status,
        Status::Pending
    );
    assert_eq!(
        vault.find(live).await.unwrap().unwrap().status,
        Status::Active
    );
    assert!(vault
        .claim_consent(&[b'p', 0], Utc::now())
        .await
        .unwrap()
        .is_none());
}

/// The expiry job and a refresh in flight on the same row: the refresh's write-back must not put
/// secrets back into a row the job has expired (on SQLite as on PostgreSQL).
async fn a_refresh_cannot_write_into_a_row_the_expiry_job_ended(vault: Vault) {
    let id = activated(&vault).await;
    age(&vault, id).await;
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let ended = vault.expire_stale(Utc::now(), 100).await.unwrap();
    assert_eq!(ended.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id]);
    let minted = access(7);
    assert!(
        !vault
            .finish_refresh(row_lease, &write(Some(&sealed(3)), &minted))
            .await
            .unwrap(),
        "the write-back is refused"
    );
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Expired);
    assert!(row.sealed.is_none(), "no refresh token came back");
    assert!(row.access.is_none(), "nor an access token");
}

/// Moves an active row's hard end into the past, through the vault's own re-consent path so
/// the test needs no SQL of either dialect.
async fn age(vault: &Vault, id: Uuid) {
    let token = sealed(1);
    let mut aged = activation(&token);
    aged.expires_at = Utc::now() - chrono::Duration::seconds(1);
    assert!(vault
        .activate(reconsent(vault, id, b"age").await, &aged)
        .await
        .unwrap()
        .is_some());
}

async fn finished_rows_are_purged_after_retention_in_batches(vault: Vault) {
    let long_ago = Utc::now() - chrono::Duration::days(8);
    let mut old = Vec::new();
    for i in 0..3u8 {
        let id = stored_pending(&vault, &[b'o', i]).await;
        vault
            .fail_pending(id, &"access_denied".parse().unwrap(), long_ago)
            .await
            .unwrap();
        old.push(id);
    }
    let recent = stored_pending(&vault, b"recent").await;
    vault
        .fail_pending(recent, &"access_denied".parse().unwrap(), Utc::now())
        .await
        .unwrap();
    let active = activated(&vault).await;
    let cutoff = Utc::now() - chrono::Duration::days(7);

    assert_eq!(vault.purge_finished(cutoff, 2).await.unwrap().len(), 2);
    let last = vault.purge_finished(cutoff, 100).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].status, Status::Failed);
    for id in old {
        assert!(vault.find(id).await.unwrap().is_none());
    }
    assert!(vault.find(recent).await.unwrap().is_some());
    assert!(vault.find(active).await.unwrap().is_some());
}

async fn reseal_replaces_only_the_expected_ciphertext(vault: Vault) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(activated(&vault).await);
    }
    ids.sort();
    assert_eq!(vault.count_sealed_under_other_keys("k9").await.unwrap(), 5);
    assert_eq!(vault.count_sealed_under_other_keys("k1").await.unwrap(), 0);

    let page = vault.sealed_under_other_keys("k9", None, 3).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..3]);
    let next = vault
        .sealed_under_other_keys("k9", Some(ids[2]), 3)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), ids[3..]);

    let reseal = |id, old, new| Reseal {
        id,
        old: sealed(old),
        new: sealed(new),
    };
    assert_eq!(
        vault
            .reseal(&[reseal(ids[0], 1, 9), reseal(ids[1], 8, 9)])
            .await
            .unwrap(),
        vec![ids[0]],
        "only rows still holding the old value"
    );
    assert!(
        vault
            .reseal(&[reseal(ids[0], 1, 8)])
            .await
            .unwrap()
            .is_empty(),
        "stale old value"
    );
    assert_eq!(
        vault.find(ids[0]).await.unwrap().unwrap().sealed,
        Some(sealed(9))
    );
    assert_eq!(vault.count_sealed_under_other_keys("k9").await.unwrap(), 4);
}

async fn audit_records_are_read_by_token_and_by_user(vault: Vault) {
    let token = Uuid::new_v4();
    for (action, user) in [
        (AuditAction::ConsentRequested, "alice"),
        (AuditAction::ConsentCompleted, "alice"),
        (AuditAction::TokenIssued, "bob"),
    ] {
        vault
            .record_audits(&[AuditEvent {
                at: Utc::now(),
                actor: user.into(),
                token_id: Some(token),
                user_id: Some(user.into()),
                task_id: Some("t".into()),
                action,
                success: action != AuditAction::TokenIssued,
                reason: None,
            }])
            .await
            .unwrap();
    }
    let by_token = vault
        .audit_trail(&AuditQuery::Token(token), 10)
        .await
        .unwrap();
    let actions: Vec<_> = by_token.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["consent_requested", "consent_completed", "token_issued"]
    );
    assert_eq!(by_token[2].outcome, "failure");
    assert_eq!(by_token[0].token_id, Some(token));
    let by_user = vault
        .audit_trail(&AuditQuery::User("bob".into()), 10)
        .await
        .unwrap();
    assert_eq!(by_user.len(), 1);
    assert_eq!(
        vault
            .audit_trail(&AuditQuery::Token(token), 2)
            .await
            .unwrap()
            .len(),
        2
    );
}

fn task_key(token_id: Uuid, hash: &[u8], max_uses: Option<u32>) -> NewTaskKey {
    let now = Utc::now();
    NewTaskKey {
        id: Uuid::new_v4(),
        token_id,
        user_id: "alice|with|bars".into(),
        name: Some("nightly".into()),
        credential: Credential::KeyHash(hash.to_vec()),
        scope: Some("openid".into()),
        expires_at: now + chrono::Duration::days(1),
        max_uses,
        allowed_cidrs: vec!["10.0.0.0/8".into(), "192.0.2.7/32".into()],
        created_at: now,
    }
}

async fn task_keys_are_stored_found_by_hash_listed_and_revoked(vault: Vault) {
    let row = activated(&vault).await;
    let key = task_key(row, b"hash-1", Some(3));
    assert!(vault.create_task_key(&key, 10).await.unwrap());
    let found = vault.find_task_key(b"hash-1").await.unwrap().unwrap();
    assert_eq!(found.id, key.id);
    assert_eq!(found.token_id, row);
    assert_eq!(found.scope.as_deref(), Some("openid"));
    assert_eq!(found.max_uses, Some(3));
    assert_eq!(found.uses, 0);
    assert_eq!(found.allowed_cidrs, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert!(vault.find_task_key(b"other").await.unwrap().is_none());
    assert_eq!(vault.task_keys(row).await.unwrap(), vec![found]);

    assert!(
        vault
            .revoke_task_key(Uuid::new_v4(), key.id, CredentialKind::TaskKey, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "another row's key id is not found"
    );
    assert!(
        vault
            .revoke_task_key(row, key.id, CredentialKind::Workload, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a task key is not found as a workload binding"
    );
    assert_eq!(vault.task_keys(row).await.unwrap()[0].revoked_at, None);
    let revoked = vault
        .revoke_task_key(row, key.id, CredentialKind::TaskKey, Utc::now())
        .await
        .unwrap()
        .unwrap();
    let first = revoked.revoked_at.unwrap();
    let again = vault
        .revoke_task_key(row, key.id, CredentialKind::TaskKey, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(first), "revoking is idempotent");
    assert!(!vault
        .reserve_task_key_use(key.id, Utc::now())
        .await
        .unwrap());
}

async fn a_task_key_needs_a_live_row_of_its_owner_and_room(vault: Vault) {
    let row = activated(&vault).await;
    let mut foreign = task_key(row, b"f", None);
    foreign.user_id = "mallory".into();
    assert!(!vault.create_task_key(&foreign, 10).await.unwrap());
    assert!(vault
        .create_task_key(&task_key(row, b"a", None), 2)
        .await
        .unwrap());
    assert!(vault
        .create_task_key(&task_key(row, b"b", None), 2)
        .await
        .unwrap());
    assert!(
        !vault
            .create_task_key(&task_key(row, b"c", None), 2)
            .await
            .unwrap(),
        "at most two live keys"
    );
    let pending = stored_pending(&vault, b"p").await;
    assert!(vault
        .create_task_key(&task_key(pending, b"d", None), 2)
        .await
        .unwrap());
    vault
        .end_grant(
            row,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(!vault
        .create_task_key(&task_key(row, b"e", None), 10)
        .await
        .unwrap());
}

async fn task_key_uses_are_counted_atomically_up_to_the_limit(vault: Vault) {
    let row = activated(&vault).await;
    let key = task_key(row, b"counted", Some(20));
    vault.create_task_key(&key, 10).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            vault
                .reserve_task_key_use(key.id, Utc::now())
                .await
                .unwrap()
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 20);
    let stored = vault.find_task_key(b"counted").await.unwrap().unwrap();
    assert_eq!(stored.uses, 20);
    assert!(stored.last_used_at.is_some());
    vault.refund_task_key_use(key.id).await.unwrap();
    assert!(
        vault
            .reserve_task_key_use(key.id, Utc::now())
            .await
            .unwrap(),
        "a refunded use is usable"
    );
    assert!(!vault
        .reserve_task_key_use(key.id, Utc::now())
        .await
        .unwrap());
}

/// A workload binding is a task key with an identity instead of a hash: found by its
/// issuer and subject while unrevoked, listed with the row's keys, ended with its row.
async fn workload_bindings_are_found_by_identity_and_end_with_their_row(vault: Vault) {
    let row = activated(&vault).await;
    let identity = WorkloadIdentity {
        issuer: "https://k8s.test".into(),
        subject: "system:serviceaccount:jobs:runner".into(),
        claims: std::collections::BTreeMap::from([(
            "kubernetes.io.serviceaccount.uid".to_owned(),
            serde_json::json!("8f1c"),
        )]),
    };
    let mut binding = task_key(row, b"", Some(2));
    binding.credential = Credential::Workload(identity.clone());
    assert!(vault.create_task_key(&binding, 10).await.unwrap());
    let key = task_key(row, b"key-beside-it", None);
    assert!(vault.create_task_key(&key, 10).await.unwrap());

    let found = vault
        .workload_bindings("https://k8s.test", "system:serviceaccount:jobs:runner", 10)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, binding.id);
    assert_eq!(found[0].workload.as_ref(), Some(&identity));
    assert_eq!(found[0].max_uses, Some(2));
    for (issuer, subject) in [
        ("https://k8s.test", "system:serviceaccount:jobs:other"),
        ("https://other.test", "system:serviceaccount:jobs:runner"),
    ] {
        assert!(vault
            .workload_bindings(issuer, subject, 10)
            .await
            .unwrap()
            .is_empty());
    }
    let listed = vault.task_keys(row).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|k| k.id == key.id && k.workload.is_none()));
    assert!(vault
        .reserve_task_key_use(binding.id, Utc::now())
        .await
        .unwrap());

    vault
        .end_grant(
            row,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(
        vault
            .workload_bindings("https://k8s.test", "system:serviceaccount:jobs:runner", 10)
            .await
            .unwrap()
            .is_empty(),
        "a binding ends with its row"
    );
    assert!(!vault
        .reserve_task_key_use(binding.id, Utc::now())
        .await
        .unwrap());
    assert!(
        vault
            .revoke_task_key(row, binding.id, CredentialKind::TaskKey, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a binding is not found as a task key"
    );
    let unbound = vault
        .revoke_task_key(row, binding.id, CredentialKind::Workload, Utc::now())
        .await
        .unwrap()
        .expect("found as a binding");
    assert!(unbound.revoked_at.is_some());
    assert!(unbound.workload.is_some());
}

async fn a_purged_row_takes_its_task_keys_with_it(vault: Vault) {
    let row = activated(&vault).await;
    vault
        .create_task_key(&task_key(row, b"gone", None), 10)
        .await
        .unwrap();
    vault
        .end_grant(
            row,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    let purged = vault
        .purge_finished(Utc::now() + chrono::Duration::seconds(1), 10)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert!(vault.find_task_key(b"gone").await.unwrap().is_none());
}

async fn every_sealed_value_under_an_old_key_is_counted_and_can_move(vault: Vault) {
    let current = "k9";
    // A refresh token under k1, a stored access token under k1, an open consent's verifier
    // under k1, a broker secret under k1.
    let id = activated(&vault).await;
    let (row_lease, _) = claimed(&vault, id, LEASE).await;
    let mut minted = access(1);
    minted.sealed = sealed(1).to_bytes();
    vault
        .finish_refresh(row_lease, &write(None, &minted))
        .await
        .unwrap();
    let mut pending = consent(b"open", in_ten_minutes());
    pending.pkce_verifier = sealed(1).to_bytes();
    assert!(vault.create_pending(&pending, 1000).await.unwrap());
    vault
        .store_broker_secret("task_key_hmac", &sealed(1), Utc::now())
        .await
        .unwrap();
    vault
        .store_broker_secret("task_key_hmac", &sealed(2), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        vault.broker_secret("task_key_hmac").await.unwrap(),
        Some(sealed(1)),
        "the first secret stored wins"
    );
    assert_eq!(
        vault.count_sealed_under_other_keys(current).await.unwrap(),
        4
    );
    assert_eq!(vault.count_sealed_under_other_keys("k1").await.unwrap(), 0);

    // One row per batch, walked in id order until no rows are left.
    let (mut dropped, mut after, mut batches) = (0, None, 0);
    while let (n, Some(last)) = vault
        .drop_access_tokens_under_other_keys(current, after, 1)
        .await
        .unwrap()
    {
        dropped += n;
        after = Some(last);
        batches += 1;
    }
    assert_eq!(dropped, 1);
    assert!(batches >= 2, "{batches} batches");
    assert!(vault.find(id).await.unwrap().unwrap().access.is_none());
    let blobs = vault
        .verifiers_under_other_keys(current, None, 10)
        .await
        .unwrap();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].id, pending.id);
    let new = Sealed {
        key_id: current.into(),
        ..sealed(1)
    };
    assert!(!vault
        .reseal_verifier(pending.id, b"stale", &new.to_bytes())
        .await
        .unwrap());
    assert!(vault
        .reseal_verifier(pending.id, &blobs[0].blob, &new.to_bytes())
        .await
        .unwrap());
    let secrets = vault
        .broker_secrets_under_other_keys(current)
        .await
        .unwrap();
    assert_eq!(secrets, vec![("task_key_hmac".to_owned(), sealed(1))]);
    assert!(vault
        .reseal_broker_secret("task_key_hmac", &sealed(1), &new)
        .await
        .unwrap());
    let resealed = vault
        .reseal(&[Reseal {
            id,
            old: sealed(1),
            new,
        }])
        .await
        .unwrap();
    assert_eq!(resealed, vec![id]);
    assert_eq!(
        vault.count_sealed_under_other_keys(current).await.unwrap(),
        0
    );
}

async fn old_audit_records_are_purged_in_batches(vault: Vault) {
    let event = |days_ago: i64| AuditEvent {
        at: Utc::now() - chrono::Duration::days(days_ago),
        actor: "system".into(),
        token_id: None,
        user_id: Some("u".into()),
        task_id: None,
        action: AuditAction::TokenExpired,
        success: true,
        reason: None,
    };
    let events: Vec<_> = [500, 450, 410, 10, 0].into_iter().map(event).collect();
    vault.record_audits(&events).await.unwrap();
    let cutoff = Utc::now() - chrono::Duration::days(400);
    assert_eq!(vault.purge_audit(cutoff, 2).await.unwrap(), 2);
    assert_eq!(vault.purge_audit(cutoff, 2).await.unwrap(), 1);
    assert_eq!(vault.purge_audit(cutoff, 2).await.unwrap(), 0);
    let left = vault
        .audit_trail(&AuditQuery::User("u".into()), 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "the recent ones stay");
}

/// Whether the key stored under `hash` has been revoked.
async fn key_revoked(vault: &Vault, hash: &[u8]) -> bool {
    vault
        .find_task_key(hash)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some()
}

async fn every_way_a_row_ends_ends_its_keys_for_good(vault: Vault) {
    // Failed by the provider (the refresh path).
    let failed = activated(&vault).await;
    vault
        .create_task_key(&task_key(failed, b"f", None), 10)
        .await
        .unwrap();
    let (row_lease, _) = claimed(&vault, failed, LEASE).await;
    assert!(vault
        .fail_refresh(
            row_lease,
            &"revoked_by_provider".parse().unwrap(),
            Utc::now()
        )
        .await
        .unwrap()
        .is_some());
    assert!(
        key_revoked(&vault, b"f").await,
        "failing a row ends its keys"
    );
    // Revoked by its owner.
    let revoked = activated(&vault).await;
    vault
        .create_task_key(&task_key(revoked, b"r", None), 10)
        .await
        .unwrap();
    vault
        .end_grant(
            revoked,
            None,
            Status::Revoked,
            &"revoked_by_user".parse().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(
        key_revoked(&vault, b"r").await,
        "revoking a row ends its keys"
    );
    // Expired: a pending consent that timed out, an active row past its maximum age.
    let timed_out = consent(b"late", Utc::now() - chrono::Duration::seconds(5));
    assert!(vault.create_pending(&timed_out, 1000).await.unwrap());
    vault
        .create_task_key(&task_key(timed_out.id, b"p", None), 10)
        .await
        .unwrap();
    let aged = consent(b"aged", in_ten_minutes());
    assert!(vault.create_pending(&aged, 1000).await.unwrap());
    let token = sealed(1);
    let mut past_its_end = activation(&token);
    past_its_end.expires_at = Utc::now() - chrono::Duration::seconds(5);
    vault
        .activate(claim(&vault, b"aged").await, &past_its_end)
        .await
        .unwrap();
    vault
        .create_task_key(&task_key(aged.id, b"a", None), 10)
        .await
        .unwrap();
    // Live keys of a live row are not touched.
    let live = activated(&vault).await;
    vault
        .create_task_key(&task_key(live, b"l", None), 10)
        .await
        .unwrap();
    assert_eq!(vault.expire_stale(Utc::now(), 100).await.unwrap().len(), 2);
    assert!(
        key_revoked(&vault, b"p").await,
        "a timed-out consent's keys end"
    );
    assert!(key_revoked(&vault, b"a").await, "an expired row's keys end");
    assert!(!key_revoked(&vault, b"l").await, "a live row's key lives");
    // Failed while pending (a declined consent).
    let declined = stored_pending(&vault, b"declined").await;
    vault
        .create_task_key(&task_key(declined, b"d", None), 10)
        .await
        .unwrap();
    assert!(vault
        .fail_pending(declined, &"access_denied".parse().unwrap(), Utc::now())
        .await
        .unwrap()
        .is_some());
    assert!(
        key_revoked(&vault, b"d").await,
        "a failed consent's keys end"
    );
    // Re-consented in place: the row comes back, its old key does not.
    let reconsent = NewReconsent {
        id: failed,
        user_id: "alice|with|bars".into(),
        state_hash: b"again".to_vec(),
        state_expires_at: in_ten_minutes(),
        pkce_verifier: b"v".to_vec(),
        nonce_hash: b"n".to_vec(),
        redirect_uri: None,
        now: Utc::now(),
    };
    assert!(vault.start_reconsent(&reconsent).await.unwrap());
    let claim = vault
        .claim_consent(b"again", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(vault
        .activate(claim, &activation(&token))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        vault.find(failed).await.unwrap().unwrap().status,
        Status::Active
    );
    assert!(
        key_revoked(&vault, b"f").await,
        "re-consent brings no key back"
    );
    assert!(!vault
        .reserve_task_key_use(
            vault.find_task_key(b"f").await.unwrap().unwrap().id,
            Utc::now()
        )
        .await
        .unwrap());
}

async fn keys_made_within_a_day_count_and_ended_ones_are_purged(vault: Vault) {
    let row = activated(&vault).await;
    for hash in [b"k1", b"k2"] {
        let key = task_key(row, hash, None);
        assert!(vault.create_task_key(&key, 2).await.unwrap());
        vault
            .revoke_task_key(row, key.id, CredentialKind::TaskKey, Utc::now())
            .await
            .unwrap();
    }
    assert!(
        !vault
            .create_task_key(&task_key(row, b"k3", None), 2)
            .await
            .unwrap(),
        "two keys made today, though revoked, fill a limit of two"
    );
    let mut old = task_key(row, b"old", None);
    old.created_at = Utc::now() - chrono::Duration::days(2);
    assert!(vault.create_task_key(&old, 3).await.unwrap());
    let live = task_key(row, b"live", None);
    assert!(vault.create_task_key(&live, 10).await.unwrap());
    let purged = vault
        .purge_task_keys(Utc::now() + chrono::Duration::seconds(1), 1)
        .await
        .unwrap();
    assert_eq!(purged, 1, "a batch is bounded");
    let rest = vault
        .purge_task_keys(Utc::now() + chrono::Duration::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!(rest, 1);
    assert!(vault.find_task_key(b"k1").await.unwrap().is_none());
    assert!(vault.find_task_key(b"k2").await.unwrap().is_none());
    assert!(
        vault.find_task_key(b"live").await.unwrap().is_some(),
        "a live key stays"
    );
    assert!(vault.find_task_key(b"old").await.unwrap().is_some());
}

async fn postgres(pool: PgPool) -> Vault {
    Arc::new(PgVault::new(pool))
}

/// A fresh SQLite vault in its own file under `target/tmp` (Cargo's `CARGO_TARGET_TMPDIR`): the
/// vault outlives this function, so nothing here can remove the file, and /tmp is not where
/// every run should leave one; `target/` goes with the clone.
async fn sqlite() -> Vault {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tb-contract-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("vault.db").display());
    let vault = SqliteVault::connect(&url).await.unwrap();
    vault.migrate().await.unwrap();
    Arc::new(vault)
}

/// Every vault method that changes a status says which transition it made, and each one is
/// in the lifecycle's table (`vault::TRANSITIONS`); revoked is final.
async fn every_status_change_is_a_listed_transition_and_says_so(vault: Vault) {
    let listed = |t: &Transition| {
        assert!(t.from.may_become(t.to), "{t:?} is not in TRANSITIONS");
        t.clone()
    };
    let id = stored_pending(&vault, b"t1").await;
    let made = vault
        .activate(claim(&vault, b"t1").await, &activation(&sealed(1)))
        .await
        .unwrap()
        .expect("pending -> active");
    assert_eq!(
        listed(&made),
        Transition {
            from: Status::Pending,
            to: Status::Active,
            reason: None
        }
    );

    let declined = stored_pending(&vault, b"t2").await;
    let made = vault
        .fail_pending(declined, &StatusReason::SubjectMismatch, Utc::now())
        .await
        .unwrap()
        .expect("pending -> failed");
    assert_eq!(
        listed(&made),
        Transition {
            from: Status::Pending,
            to: Status::Failed,
            reason: Some(StatusReason::SubjectMismatch),
        }
    );

    let (claim_lease, _) = claimed(&vault, id, LEASE).await;
    let made = vault
        .fail_refresh(claim_lease, &StatusReason::RevokedByProvider, Utc::now())
        .await
        .unwrap()
        .expect("active -> failed");
    assert_eq!(
        listed(&made),
        Transition {
            from: Status::Active,
            to: Status::Failed,
            reason: Some(StatusReason::RevokedByProvider),
        }
    );

    // A re-consent brings the failed row back, and says from what.
    assert!(vault
        .start_reconsent(&NewReconsent {
            id,
            user_id: "alice|with|bars".into(),
            state_hash: b"t3".to_vec(),
            state_expires_at: in_ten_minutes(),
            pkce_verifier: b"verifier-3".to_vec(),
            nonce_hash: b"nonce-3".to_vec(),
            redirect_uri: None,
            now: Utc::now(),
        })
        .await
        .unwrap());
    let claim = vault
        .claim_consent(b"t3", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.status, Status::Failed);
    let made = vault
        .activate(claim, &activation(&sealed(2)))
        .await
        .unwrap()
        .expect("failed -> active");
    assert_eq!(
        listed(&made),
        Transition {
            from: Status::Failed,
            to: Status::Active,
            reason: None
        }
    );

    // Revoked is final: neither a re-consent's activation nor a failure moves it. The
    // re-consent's state is claimed first, as a callback racing the revocation would.
    let racing = reconsent(&vault, id, b"t4").await;
    let Ended::Ended(before) = vault
        .end_grant(
            id,
            None,
            Status::Revoked,
            &StatusReason::RevokedByUser,
            Utc::now(),
        )
        .await
        .unwrap()
    else {
        panic!("the row was live")
    };
    assert!(before.status.may_become(Status::Revoked));
    assert_eq!(
        vault
            .activate(racing, &activation(&sealed(3)))
            .await
            .unwrap(),
        None
    );
    let row = vault.find(id).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.status_reason),
        (Status::Revoked, Some(StatusReason::RevokedByUser))
    );
    assert!(!Status::Revoked.may_become(Status::Active));
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
    a_claimed_refresh_writes_back_a_rotated_token_and_records_use,
    a_claim_can_fail_the_row_and_wipe_its_secrets,
    a_live_claim_excludes_others_and_an_abandoned_one_expires,
    a_write_back_from_an_older_claim_is_refused,
    a_write_back_is_journaled_with_it_and_a_refused_one_is_not,
    a_released_claim_records_the_failure_and_its_back_off,
    ending_a_grant_wipes_it_voids_claims_and_checks_the_owner,
    a_reconsent_reseals_the_same_row,
    keepalive_finds_rows_about_to_idle_out,
    rows_near_their_hard_end_are_announced_once,
    a_users_rows_are_listed_newest_first_with_filters_and_pages,
    pages_follow_a_position_with_ties_broken_by_id,
    stale_rows_expire_in_batches_and_fresh_ones_stay,
    finished_rows_are_purged_after_retention_in_batches,
    a_refresh_cannot_write_into_a_row_the_expiry_job_ended,
    reseal_replaces_only_the_expected_ciphertext,
    task_keys_are_stored_found_by_hash_listed_and_revoked,
    a_task_key_needs_a_live_row_of_its_owner_and_room,
    task_key_uses_are_counted_atomically_up_to_the_limit,
    a_purged_row_takes_its_task_keys_with_it,
    workload_bindings_are_found_by_identity_and_end_with_their_row,
    every_sealed_value_under_an_old_key_is_counted_and_can_move,
    old_audit_records_are_purged_in_batches,
    audit_records_are_read_by_token_and_by_user,
    every_way_a_row_ends_ends_its_keys_for_good,
    keys_made_within_a_day_count_and_ended_ones_are_purged,
    every_status_change_is_a_listed_transition_and_says_so,
);
