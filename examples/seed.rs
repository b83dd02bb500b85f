//! Fills a PostgreSQL token vault with many grants for `bench/million`, sealed with the real
//! keyring exactly as the broker seals them: each active row holds a sealed refresh token and a
//! sealed, long-lived access token (so a cache miss is served from the row, without the
//! provider). Expired rows (status `expired`, finished long ago) are what `cleanup` purges.
//!
//!   DATABASE_URL=postgres://… TOKEN_ENCRYPTION_KEYS=kid:base64 \
//!   SEED_ROWS=1000000 SEED_USERS=10000 SEED_HEAVY_ROWS=10000 \
//!   cargo run --release --example seed
//!
//! `SEED_ROWS` active rows go round-robin to users `seed-user-0..SEED_USERS`, except the first
//! `SEED_HEAVY_ROWS`, which all belong to `seed-heavy` (a user with a long list). `SEED_EXPIRED`
//! adds expired rows on top. Rows are added to what is there; the schema must exist (run
//! `token-broker migrate` first).

use std::time::Instant;

use chrono::{Duration, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use token_broker::crypto::{purpose, Binding, Keyring};
use uuid::Uuid;

/// Rows per INSERT: 15 binds each stays far below PostgreSQL's 65,535.
const CHUNK: usize = 2_000;

fn setting(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name} must be a whole number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is required")?;
    let keys =
        std::env::var("TOKEN_ENCRYPTION_KEYS").map_err(|_| "TOKEN_ENCRYPTION_KEYS is required")?;
    let keyring = Keyring::parse(&keys).map_err(|e| e.to_string())?;
    let rows = setting("SEED_ROWS", 1_000)?;
    let users = setting("SEED_USERS", 100)?.max(1);
    let heavy = setting("SEED_HEAVY_ROWS", 0)?;
    let expired = setting("SEED_EXPIRED", 0)?;
    let pool = PgPool::connect(&url).await.map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut written = 0u64;
    while written < rows + expired {
        let chunk = (rows + expired - written).min(CHUNK as u64);
        let batch: Vec<u64> = (written..written + chunk).collect();
        insert(&pool, &keyring, &batch, rows, users, heavy).await?;
        written += chunk;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {rows} active and {expired} expired rows in {secs:.1} s ({:.0} rows/s)",
        (rows + expired) as f64 / secs
    );
    Ok(())
}

async fn insert(
    pool: &PgPool,
    keyring: &Keyring,
    batch: &[u64],
    active: u64,
    users: u64,
    heavy: u64,
) -> Result<(), String> {
    let now = Utc::now();
    // A recognisable access token of a realistic size (a Keycloak access token is ~1 KB).
    let access = format!("seeded-access-token.{}", "x".repeat(900));
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
        "insert into token_vault (id, user_id, task_id, status, encrypted_token, iv, key_id, \
         expires_at, created_at, updated_at, access_token, access_token_expires_at, \
         access_token_type, refresh_expires_at, granted_scope) ",
    );
    let mut failure = None;
    query.push_values(batch, |mut row, &n| {
        let id = Uuid::new_v4();
        let user = if n < heavy {
            "seed-heavy".to_owned()
        } else {
            format!("seed-user-{}", n % users)
        };
        // Spread creation times so list order is meaningful (newest first).
        let created = now - Duration::seconds(n as i64);
        let is_active = n < active;
        let sealed = is_active
            .then(|| {
                let binding = |purpose| Binding {
                    purpose,
                    row_id: id,
                    user_id: &user,
                };
                let refresh = keyring.seal(
                    format!("seeded-refresh-{n}").as_bytes(),
                    binding(purpose::REFRESH_TOKEN),
                )?;
                let access = keyring.seal(access.as_bytes(), binding(purpose::ACCESS_TOKEN))?;
                Ok((refresh, access.to_bytes()))
            })
            .transpose()
            .unwrap_or_else(|e: token_broker::crypto::CryptoError| {
                failure = Some(e.to_string());
                None
            });
        let (refresh, access) = sealed.unzip();
        row.push_bind(id)
            .push_bind(user.clone())
            .push_bind(format!("seed-task-{n}"))
            .push_bind(if is_active { "active" } else { "expired" })
            .push_bind(refresh.as_ref().map(|s| s.ciphertext.clone()))
            .push_bind(refresh.as_ref().map(|s| s.nonce.clone()))
            .push_bind(refresh.as_ref().map(|s| s.key_id.clone()))
            .push_bind(if is_active {
                now + Duration::days(365)
            } else {
                now - Duration::days(60)
            })
            .push_bind(created)
            .push_bind(if is_active {
                now
            } else {
                now - Duration::days(60)
            })
            .push_bind(access)
            .push_bind(is_active.then(|| now + Duration::days(300)))
            .push_bind(is_active.then_some("Bearer"))
            .push_bind(is_active.then(|| now + Duration::days(30)))
            .push_bind("openid offline_access");
    });
    if let Some(e) = failure {
        return Err(format!("sealing failed: {e}"));
    }
    query
        .build()
        .execute(pool)
        .await
        .map_err(|e| format!("insert failed: {e}"))?;
    Ok(())
}
