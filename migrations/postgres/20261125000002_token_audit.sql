-- Who did what to which token, when, and how it ended. Never token material.
create table token_audit (
    id         bigserial primary key,
    at         timestamptz not null,
    -- The caller's subject, or "system" for background jobs and operator commands.
    actor      text not null,
    token_id   uuid,
    user_id    text,
    task_id    text,
    action     text not null,
    outcome    text not null check (outcome in ('success', 'failure')),
    reason     text
);

create index token_audit_token_idx on token_audit (token_id, id);
create index token_audit_user_idx on token_audit (user_id, id);
