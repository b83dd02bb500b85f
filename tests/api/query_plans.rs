//! Each hot query of the PostgreSQL vault can use an index (issue 14): with sequential scans
//! priced out (`enable_seqscan = off`), a plan that still scans a whole table means no index
//! serves that query, and at a million rows it would read them all. So does a primary key
//! walked in order with every row filtered (how the clean-up queries once ran: 441 ms a pass at
//! 200,000 rows, to find nothing).

use sqlx::PgPool;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// (what it is, the query as the vault sends it, arguments for its `$n` parameters if any).
const HOT_QUERIES: [(&str, &str, &str); 14] = [
    (
        "find a row",
        "select * from token_vault where id = '00000000-0000-0000-0000-000000000001'",
        "",
    ),
    (
        "list a user's rows (first page)",
        "select * from token_vault where true and user_id = $1 \
         order by created_at desc, id desc limit $2 offset $3",
        "('u', 51, 0)",
    ),
    (
        "list a user's rows (a page by cursor)",
        "select * from token_vault where true and user_id = $1 \
         and (created_at, id) < ($2::timestamptz, $3::uuid) \
         order by created_at desc, id desc limit $4 offset $5",
        "('u', now(), '00000000-0000-0000-0000-000000000001', 51, 0)",
    ),
    (
        "a user's rows at an offset (ids from the index, then those rows)",
        DEEP_PAGE,
        "('u', 51, 9950)",
    ),
    (
        "list a user's rows of one task",
        "select * from token_vault where user_id = 'u' and task_id = 't' \
         order by created_at desc, id desc limit 51",
        "",
    ),
    (
        "claim a consent by its state",
        "select id from token_vault where state_hash = '\\x00'::bytea and status <> 'revoked' \
         and state_expires_at > now() for update",
        "",
    ),
    (
        "redeem a task key",
        "select * from task_keys where key_hash = '\\x00'::bytea",
        "",
    ),
    (
        "a row's task keys",
        "select * from task_keys where token_id = '00000000-0000-0000-0000-000000000001' \
         order by created_at, id",
        "",
    ),
    (
        "a row's audit trail",
        "select * from token_audit where token_id = '00000000-0000-0000-0000-000000000001' \
         order by id limit 500",
        "",
    ),
    (
        "grants due for keep-alive",
        "select id from token_vault where status = 'active' and refresh_expires_at <= now() \
         order by refresh_expires_at limit 100",
        "",
    ),
    (
        "finished rows past retention (cleanup)",
        "select id from token_vault where status in ('failed', 'expired', 'revoked') \
         and updated_at < now() limit 500",
        "",
    ),
    (
        "stale rows to expire (cleanup)",
        "select id from token_vault where (status = 'pending' and state_expires_at <= now()) \
         or (status = 'active' and expires_at <= now()) limit 500",
        "",
    ),
    (
        "audit records past retention",
        "select id from token_audit where at < now() limit 500",
        "",
    ),
    (
        "re-sealing walks the table by id (keys rotate)",
        "select id from token_vault where encrypted_token is not null and key_id <> $1 \
         and id > coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid) order by id limit $3",
        "('k', null, 500)",
    ),
];

/// A list page at an offset, as the vault sends it.
const DEEP_PAGE: &str = "select * from token_vault where id in (select id from token_vault \
     where true and user_id = $1 order by created_at desc, id desc limit $2 offset $3) \
     order by created_at desc, id desc";

#[sqlx::test(migrator = "MIGRATIONS")]
async fn every_hot_query_can_use_an_index(pool: PgPool) {
    let mut connection = pool.acquire().await.unwrap();
    let connection = connection.as_mut();
    sqlx::query("set enable_seqscan = off")
        .execute(&mut *connection)
        .await
        .unwrap();
    // The plan PostgreSQL caches for a prepared statement (what sqlx sends) is the one that
    // must use an index: a custom plan for literal values can hide a catch-all condition.
    sqlx::query("set plan_cache_mode = force_generic_plan")
        .execute(&mut *connection)
        .await
        .unwrap();
    let mut unindexed = Vec::new();
    for (n, (what, sql, args)) in HOT_QUERIES.iter().enumerate() {
        let explain = if args.is_empty() {
            format!("explain {sql}")
        } else {
            sqlx::query(&format!("prepare hot_{n} as {sql}"))
                .execute(&mut *connection)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            format!("explain execute hot_{n}{args}")
        };
        let plan: Vec<String> = sqlx::query_scalar(&explain)
            .fetch_all(&mut *connection)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let plan = plan.join("\n");
        // A list page sorted after the fact reads every row of the user first.
        let sorted_list = what.starts_with("list") && plan.contains("Sort");
        // A primary key walked only for its order, filtering every row, is a full scan too.
        let walks_table =
            plan.contains("_pkey") && plan.contains("Filter:") && !plan.contains("Index Cond: (id");
        if plan.contains("Seq Scan") || sorted_list || walks_table {
            unindexed.push(format!("{what}:\n{plan}"));
        }
    }
    assert!(
        unindexed.is_empty(),
        "queries without an index:\n\n{}",
        unindexed.join("\n\n")
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn an_offset_page_steps_over_index_entries_not_rows(pool: PgPool) {
    // The rows skipped are counted in the list index alone; only the page's rows are read.
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "explain {}",
        DEEP_PAGE
            .replace("$1", "'u'")
            .replace("$2", "51")
            .replace("$3", "9950")
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Only Scan using token_vault_user_list_idx"),
        "{plan}"
    );
}
