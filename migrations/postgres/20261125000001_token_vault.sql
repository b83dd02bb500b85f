-- The token vault: one row per offline-token request (consent), from pending to active/failed.
-- Column names follow the original contract (id, user_id, task_id, status, state_token,
-- encrypted_token, iv, expires_at, created_at, metadata); the rest is what the hardened design needs.
create table token_vault (
    id                uuid primary key,
    user_id           text not null,
    task_id           text not null,
    status            text not null
                      check (status in ('pending', 'active', 'failed', 'revoked', 'expired')),
    -- Why a row is failed/revoked/expired (e.g. subject_mismatch, revoked_by_provider).
    status_reason     text,
    -- Kept for the original schema and always null: the raw state is never stored, because
    -- whoever reads it could complete someone else's consent. Only its digest is kept below.
    state_token       text,
    -- SHA-256 of the consent state; cleared when the callback claims the row (single use).
    state_hash        bytea unique,
    state_expires_at  timestamptz,
    -- The PKCE verifier, sealed (key id, nonce and ciphertext in one blob); cleared on claim.
    pkce_verifier     bytea,
    -- SHA-256 of the OIDC nonce, compared with the ID token's.
    nonce_hash        bytea,
    -- Where to send the browser after the callback, if the consent asked for it.
    redirect_uri      text,
    -- The sealed offline refresh token: AES-256-GCM ciphertext+tag, its nonce, and its key id.
    encrypted_token   bytea,
    iv                bytea,
    key_id            text,
    expires_at        timestamptz not null,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    last_used_at      timestamptz,
    metadata          jsonb not null default '{}'::jsonb,
    -- An active row always has its sealed token; no half-written secret can exist.
    check (status <> 'active' or (encrypted_token is not null and iv is not null and key_id is not null))
);

create index token_vault_task_id_idx on token_vault (task_id);
create index token_vault_user_id_idx on token_vault (user_id, created_at desc);
create index token_vault_status_idx on token_vault (status, updated_at);
