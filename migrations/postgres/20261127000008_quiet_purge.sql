-- Deleting a finished row (failed, expired, revoked) tells no one: every instance already heard
-- of its last status change, and nothing of it is cached. Without this, purging 500,000 rows
-- sent 500,000 notifications that every instance had to read while serving (bench/million).
create or replace function token_vault_notify_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        if old.status not in ('failed', 'expired', 'revoked') then
            perform pg_notify('token_vault_changed', old.id::text);
        end if;
        return old;
    end if;
    if new.status is distinct from old.status or new.user_id is distinct from old.user_id then
        perform pg_notify('token_vault_changed', new.id::text);
    end if;
    return new;
end;
$$;
