//! The body of every JSON error answer (the server writes it from its error table in
//! `http/error.rs`).

use serde::{Deserialize, Serialize};

/// The error shape, for the API description.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code to branch on, e.g. `token_not_found`.
    pub error: String,
    /// For people.
    pub message: String,
}
