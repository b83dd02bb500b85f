//! The broker's wire contract, shared by the server (`http/`) and its Rust client (`client/`):
//! where each route lives ([`paths`]).

pub mod paths;
