//! The HTTP API: the route table ([`router`]), the error type, extractors, and one file per
//! route group. Handlers parse, authorise, call one domain function (`crate::grants`) and answer.

mod access_token;
mod admin_page;
mod api_document;
mod callback;
mod callback_page;
mod client_addr;
mod consent;
mod error;
mod extract;
mod frame;
mod openapi;
mod ops;
mod rate_limit;
mod router;
mod state;
mod task_keys;
mod token_exchange;
mod tokens;
mod workloads;

pub use admin_page::{AdminState, Sessions as AdminSessions};
pub use api_document::ApiDocument;
pub use client_addr::TrustedProxies;
pub use error::ApiError;
pub use openapi::{ApiDoc, DeploymentRules};
pub use rate_limit::RateLimit;
pub use router::{metrics_router, router, Cors};
pub use state::{AppState, Services};
