//! Fast tests of the HTTP layer's rules, in-process: the router with an in-memory SQLite vault
//! and a local signing key (see `harness`), and where a test needs the provider to answer, a
//! scripted one (`provider`). Milliseconds each; no Node, no PostgreSQL. Flows that need a
//! real provider live in `tests/api`.

mod access;
mod admin;
mod auth;
mod callback;
mod consent;
mod docs;
mod harness;
mod ops;
mod platform;
mod provider;
mod provider_callback;
mod provider_grant_dates;
mod provider_health;
mod provider_refresh;
mod provider_write_back;
mod task_keys;
mod tokens;
mod workloads;
