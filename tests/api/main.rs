//! End-to-end tests of the broker's API against a real OpenID provider and PostgreSQL.
//!
//! Each `#[sqlx::test]` gets its own freshly migrated database (DATABASE_URL names the server);
//! all tests share one provider process and keep apart by user names.

mod access;
mod admin;
mod app;
mod auth;
mod callback;
mod cli;
mod cli_recovery;
mod cli_workloads;
mod cluster;
mod concurrency;
mod edges;
mod faults;
mod idp;
mod keycloak;
mod keycloak_limits;
mod lifecycle;
mod logs;
mod notifications;
mod operator;
mod ops;
mod outages;
mod platform;
mod process;
mod python_client;
mod query_plans;
mod reconsent;
mod refusals;
mod second_provider;
mod serve;
mod task_keys;
mod tokens;
mod typescript_client;
mod webhooks;
