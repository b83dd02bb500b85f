-- Task keys: restricted credentials a row's owner hands to a task, so the task can get tokens
-- after the user has left. Only a keyed hash of each key is stored (HMAC-SHA256 with the
-- broker's task-key secret): a stolen table does not give the keys, and without the secret
-- nobody can plant a key of their own. A key dies with its row (cascade on purge; refused at
-- use when the row is not active).
create table task_keys (
    id            uuid primary key,
    token_id      uuid not null references token_vault (id) on delete cascade,
    user_id       text not null,
    name          text,
    key_hash      bytea not null unique,
    -- Space-separated scopes the key may ask for; null = the row's granted scope.
    scope         text,
    expires_at    timestamptz not null,
    -- Successful redemptions allowed; null = no limit. Counted atomically.
    max_uses      integer check (max_uses is null or max_uses > 0),
    uses          integer not null default 0,
    -- Comma-separated CIDRs the key may be used from; null = anywhere.
    allowed_cidrs text,
    created_at    timestamptz not null,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
create index task_keys_token_idx on task_keys (token_id, created_at);

-- Secrets the broker makes for itself, sealed under TOKEN_ENCRYPTION_KEYS like everything else
-- (and re-sealed by `keys rotate`): today the task-key hashing secret.
create table broker_secrets (
    name            text primary key,
    encrypted_value bytea not null,
    iv              bytea not null,
    key_id          text not null,
    created_at      timestamptz not null
);

alter table token_vault
    -- The scope the provider granted at consent (space-separated): what a task key or a
    -- narrowed request may ask for is a subset of it.
    add column granted_scope text,
    -- Comma-separated client ids (DELEGATE_CLIENTS) whose service accounts may redeem this row.
    add column delegates text;

-- The clean-up job deletes audit records past AUDIT_RETENTION_SECS, oldest first.
create index token_audit_at_idx on token_audit (at);
