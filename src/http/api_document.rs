//! The OpenAPI document as served (`GET /api/openapi.json`): written once at start-up by
//! [`super::openapi`], kept here as bytes so the state that serves it need not know how it is
//! written.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI document's JSON text, served as the same bytes on every request.
pub struct ApiDocument(axum::body::Bytes);

impl ApiDocument {
    /// A written document.
    pub(super) fn from_json(json: Vec<u8>) -> Self {
        Self(json.into())
    }

    /// The document's JSON text.
    pub fn bytes(&self) -> axum::body::Bytes {
        self.0.clone()
    }
}

/// `GET /api/openapi.json`
pub async fn openapi_json(
    axum::extract::State(document): axum::extract::State<std::sync::Arc<ApiDocument>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        document.bytes(),
    )
}
