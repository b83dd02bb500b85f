-- Lists are ordered newest first with ties broken by id, and pages continue from a (created_at,
-- id) position: an index in exactly that order serves any page with one seek, without a sort.
create index token_vault_user_list_idx on token_vault (user_id, created_at desc, id desc);
drop index token_vault_user_id_idx;
