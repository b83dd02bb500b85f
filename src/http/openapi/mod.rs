//! The API description, generated from the handlers and types (utoipa), and a page to read it.

use axum::response::Html;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{access_token, callback, consent, error, ops, task_keys, token_exchange, tokens};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "token-broker",
        description = "Keeps users' offline refresh tokens sealed and mints access tokens for their long-running tasks."
    ),
    paths(
        consent::request_offline_consent,
        callback::complete_offline_consent,
        access_token::issue_access_token,
        tokens::get_token_status,
        tokens::list_tokens,
        tokens::revoke_token,
        tokens::reconsent_token,
        task_keys::create_task_key,
        task_keys::list_task_keys,
        task_keys::revoke_task_key,
        token_exchange::exchange_token,
        ops::healthz,
        ops::readyz,
    ),
    components(schemas(
        error::ErrorBody,
        consent::ConsentRequest,
        consent::ConsentResponse,
        callback::CallbackSuccess,
        access_token::AccessTokenRequest,
        access_token::AccessTokenResponse,
        tokens::TokenView,
        tokens::TokenPage,
        tokens::RevokeResponse,
        tokens::ReconsentRequest,
        task_keys::CreateTaskKey,
        task_keys::TaskKeyView,
        task_keys::CreatedTaskKey,
        task_keys::TaskKeyList,
        token_exchange::ExchangeResponse,
        token_exchange::OAuthError,
        crate::vault::Status,
    )),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "taskKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tbk_ task key")
                    .description(Some(
                        "A task key issued by the row's owner; only for access-token",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/openapi.json`
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /api/docs`: Swagger UI, loaded from a CDN by the reader's browser (nothing is bundled
/// into the broker).
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>token-broker API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#ui" });</script>
</body></html>"##,
    )
}
