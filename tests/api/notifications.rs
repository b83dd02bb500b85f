//! What the `token_vault_changed` trigger tells other broker instances (PostgreSQL): a change an
//! instance must act on is announced; purging finished rows, which nobody has cached, is not
//! (bench/million: 500,000 purged rows once meant 500,000 notifications to every instance).

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

async fn insert(pool: &PgPool, status: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into token_vault (id, user_id, task_id, status, encrypted_token, iv, key_id, \
         expires_at) values ($1, 'u', 't', $2, '\\x01', '\\x02', 'k', now() + interval '1 day')",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn deleting_a_finished_row_is_quiet_and_any_other_change_is_announced(pool: PgPool) {
    let finished = [
        insert(&pool, "expired").await,
        insert(&pool, "revoked").await,
        insert(&pool, "failed").await,
    ];
    let active = insert(&pool, "active").await;
    let revoked_later = insert(&pool, "active").await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("token_vault_changed").await.unwrap();

    for id in finished {
        sqlx::query("delete from token_vault where id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("update token_vault set status = 'revoked' where id = $1")
        .bind(revoked_later)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("delete from token_vault where id = $1")
        .bind(active)
        .execute(&pool)
        .await
        .unwrap();

    let mut heard = Vec::new();
    while let Ok(Ok(Some(note))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), listener.try_recv()).await
    {
        heard.push(note.payload().parse::<Uuid>().unwrap());
    }
    assert_eq!(heard, vec![revoked_later, active]);
}
