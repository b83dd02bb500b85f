-- Task keys, broker secrets, granted scope and delegates (see the postgres migration).
create table task_keys (
    id            blob primary key,
    token_id      blob not null references token_vault (id) on delete cascade,
    user_id       text not null,
    name          text,
    key_hash      blob not null unique,
    scope         text,
    expires_at    text not null,
    max_uses      integer check (max_uses is null or max_uses > 0),
    uses          integer not null default 0,
    allowed_cidrs text,
    created_at    text not null,
    last_used_at  text,
    revoked_at    text
);
create index task_keys_token_idx on task_keys (token_id, created_at);

create table broker_secrets (
    name            text primary key,
    encrypted_value blob not null,
    iv              blob not null,
    key_id          text not null,
    created_at      text not null
);

alter table token_vault add column granted_scope text;
alter table token_vault add column delegates text;

create index token_audit_at_idx on token_audit (at);
