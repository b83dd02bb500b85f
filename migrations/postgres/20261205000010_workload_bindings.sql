-- Workload bindings: a grant's owner binds it to a workload identity its platform signs
-- (Kubernetes service account, CI job, SPIFFE id) instead of handing the task a key. A binding
-- is a task key without a secret: the same row, restrictions, use counting, clean-up, and the
-- same end with its grant (the trigger of migration 9 revokes every row of this table). It names
-- the platform issuer, the exact subject, and exact matches on further claims (JSON object).
alter table task_keys alter column key_hash drop not null;
alter table task_keys
    add column workload_issuer  text,
    add column workload_subject text,
    add column workload_claims  text;
alter table task_keys add constraint task_keys_a_key_or_a_workload check (
    (key_hash is not null and workload_issuer is null and workload_subject is null)
    or (key_hash is null and workload_issuer is not null and workload_subject is not null)
);
create index task_keys_workload_idx on task_keys (workload_issuer, workload_subject)
    where workload_issuer is not null;
