-- Workload bindings (see the postgres migration). SQLite cannot drop a NOT NULL, so the table is
-- rebuilt; the trigger that ends keys with their row names it, so it goes first and comes back.
drop trigger task_keys_end_with_their_row;

create table task_keys_new (
    id               blob primary key,
    token_id         blob not null references token_vault (id) on delete cascade,
    user_id          text not null,
    name             text,
    key_hash         blob unique,
    scope            text,
    expires_at       text not null,
    max_uses         integer check (max_uses is null or max_uses > 0),
    uses             integer not null default 0,
    allowed_cidrs    text,
    created_at       text not null,
    last_used_at     text,
    revoked_at       text,
    workload_issuer  text,
    workload_subject text,
    workload_claims  text,
    check ((key_hash is not null and workload_issuer is null and workload_subject is null)
        or (key_hash is null and workload_issuer is not null and workload_subject is not null))
);
insert into task_keys_new (id, token_id, user_id, name, key_hash, scope, expires_at, max_uses,
                           uses, allowed_cidrs, created_at, last_used_at, revoked_at)
select id, token_id, user_id, name, key_hash, scope, expires_at, max_uses,
       uses, allowed_cidrs, created_at, last_used_at, revoked_at
  from task_keys;
drop table task_keys;
alter table task_keys_new rename to task_keys;
create index task_keys_token_idx on task_keys (token_id, created_at);
create index task_keys_workload_idx on task_keys (workload_issuer, workload_subject)
    where workload_issuer is not null;

create trigger task_keys_end_with_their_row
    after update of status on token_vault
    for each row
    when new.status in ('failed', 'expired', 'revoked') and old.status is not new.status
begin
    update task_keys set revoked_at = coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
     where token_id = new.id and revoked_at is null;
end;
