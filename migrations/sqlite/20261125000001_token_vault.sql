-- The token vault for the embedded SQLite backend: the same columns and rules as
-- migrations/postgres, in SQLite's types. Ids are 16-byte blobs (query with hex(id));
-- timestamps are RFC 3339 text in UTC, which sorts chronologically.
create table token_vault (
    id                blob primary key,
    user_id           text not null,
    task_id           text not null,
    status            text not null
                      check (status in ('pending', 'active', 'failed', 'revoked', 'expired')),
    status_reason     text,
    -- Always null: only the state's digest is stored (see the postgres migration).
    state_token       text,
    state_hash        blob unique,
    state_expires_at  text,
    pkce_verifier     blob,
    nonce_hash        blob,
    redirect_uri      text,
    encrypted_token   blob,
    iv                blob,
    key_id            text,
    expires_at        text not null,
    created_at        text not null,
    updated_at        text not null,
    last_used_at      text,
    metadata          text not null default '{}',
    check (status <> 'active' or (encrypted_token is not null and iv is not null and key_id is not null))
);

create index token_vault_task_id_idx on token_vault (task_id);
create index token_vault_user_id_idx on token_vault (user_id, created_at desc);
create index token_vault_status_idx on token_vault (status, updated_at);
