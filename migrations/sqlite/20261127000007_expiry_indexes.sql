-- The clean-up job looks for rows past their end every few minutes. Without these it walked the
-- whole table (a million rows: seconds per pass) to find none; with them it reads only rows
-- that are due. Also serves the expiring-soon webhook (active rows by expires_at).
create index token_vault_active_expiry_idx on token_vault (expires_at) where status = 'active';
create index token_vault_pending_expiry_idx on token_vault (state_expires_at) where status = 'pending';
