-- The last minted access token, sealed, so that broker instances sharing this database hand
-- out one token per row instead of each refreshing at the provider.
alter table token_vault
    add column access_token            bytea,
    add column access_token_expires_at timestamptz,
    add column access_token_type       text,
    add column access_token_scope      text;

-- Tell every broker instance when a row's status changes or the row goes away (whoever changed
-- it: an instance, the clean-up job, or an operator with psql), so cached tokens die with it.
create function token_vault_notify_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('token_vault_changed', old.id::text);
        return old;
    end if;
    if new.status is distinct from old.status or new.user_id is distinct from old.user_id then
        perform pg_notify('token_vault_changed', new.id::text);
    end if;
    return new;
end;
$$;

create trigger token_vault_notify_change
    after update or delete on token_vault
    for each row execute function token_vault_notify_change();
