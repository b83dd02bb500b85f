//! token-broker: lets long-running work act for a user long after their browser session ended.
//!
//! A user consents once (authorization code + PKCE, `offline_access`); the broker seals the
//! offline refresh token with AES-256-GCM and later mints fresh access tokens from it for the
//! user's tasks. See `docs/security.md` for the threat model.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod app;
pub mod audit;
pub mod cleanup;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod grants;
pub mod http;
pub mod key_rotation;
pub mod oidc;
pub mod telemetry;
pub mod vault;
pub mod webhook;
