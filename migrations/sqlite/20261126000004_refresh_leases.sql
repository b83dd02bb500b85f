-- Refresh leases, grant health and keep-alive (see the postgres migration for the why).
alter table token_vault add column refresh_lease_until text;
alter table token_vault add column refresh_fence integer not null default 0;
alter table token_vault add column refresh_expires_at text;
alter table token_vault add column last_refresh_at text;
alter table token_vault add column consecutive_failures integer not null default 0;
alter table token_vault add column last_error text;
alter table token_vault add column next_refresh_at text;
alter table token_vault add column expiring_notified_at text;

create index token_vault_keepalive_idx on token_vault (refresh_expires_at) where status = 'active';
