-- A task key ends for good when its row ends. Failing, expiring or revoking a row revokes every
-- key of it in the same statement, so a re-consent in place of a failed or expired row starts
-- with no keys: a leaked key that was disabled by ending the grant at the provider cannot come
-- back to life. A trigger, so that no statement that ends a row, now or later, can forget it.
create function task_keys_end_with_their_row() returns trigger
language plpgsql as $$
begin
    update task_keys set revoked_at = coalesce(new.updated_at, now())
     where token_id = new.id and revoked_at is null;
    return new;
end;
$$;

create trigger task_keys_end_with_their_row
    after update of status on token_vault
    for each row
    when (new.status in ('failed', 'expired', 'revoked') and old.status is distinct from new.status)
    execute function task_keys_end_with_their_row();

-- Keys that ended before this migration, on rows that already ended.
update task_keys k set revoked_at = t.updated_at
  from token_vault t
 where t.id = k.token_id and k.revoked_at is null
   and t.status in ('failed', 'expired', 'revoked');
