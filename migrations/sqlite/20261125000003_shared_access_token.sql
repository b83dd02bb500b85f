-- The last minted access token, sealed (see the postgres migration). SQLite serves one
-- instance, so no change notifications are needed.
alter table token_vault add column access_token blob;
alter table token_vault add column access_token_expires_at text;
alter table token_vault add column access_token_type text;
alter table token_vault add column access_token_scope text;
