//! Fast tests of the HTTP layer's rules, in-process: the router with an in-memory SQLite vault
//! and a local signing key (see `harness`). Milliseconds each; no provider, no PostgreSQL.
//! Flows that need the real provider live in `tests/api`.

mod access;
mod admin;
mod auth;
mod callback;
mod consent;
mod docs;
mod harness;
mod ops;
mod task_keys;
mod tokens;
