-- A task key ends for good when its row ends (see the postgres migration).
create trigger task_keys_end_with_their_row
    after update of status on token_vault
    for each row
    when new.status in ('failed', 'expired', 'revoked') and old.status is not new.status
begin
    update task_keys set revoked_at = coalesce(new.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
     where token_id = new.id and revoked_at is null;
end;

update task_keys set revoked_at = (select t.updated_at from token_vault t where t.id = task_keys.token_id)
 where revoked_at is null
   and token_id in (select id from token_vault where status in ('failed', 'expired', 'revoked'));
