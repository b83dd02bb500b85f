-- Refreshes no longer hold a row lock (and a pooled connection) while the provider answers.
-- A refresh claims the row with a short lease in its own statement, calls the provider with no
-- connection held, and writes back only if its claim still stands: the fence counter goes up
-- with every claim, so an answer from an older claim (a lease that expired, a crashed
-- instance) can never overwrite a newer one.
alter table token_vault
    add column refresh_lease_until  timestamptz,
    add column refresh_fence        bigint not null default 0,
    -- Grant health: when the current refresh token stops working at the provider if unused
    -- (Keycloak's Offline Session Idle), when it was last refreshed, and how the last attempts
    -- went. Shown in the status API; drives keep-alive.
    add column refresh_expires_at   timestamptz,
    add column last_refresh_at      timestamptz,
    add column consecutive_failures integer not null default 0,
    add column last_error           text,
    -- No refresh before this time: a row the provider keeps refusing is not hammered.
    add column next_refresh_at      timestamptz,
    -- Set once the token.expiring webhook went out for the row's hard end.
    add column expiring_notified_at timestamptz;

-- Keep-alive looks for active rows whose refresh token is about to idle out.
create index token_vault_keepalive_idx on token_vault (refresh_expires_at) where status = 'active';

