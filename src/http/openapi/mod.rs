//! The API description, generated from the handlers and types (utoipa) with every input rule
//! written in ([`rules`]), and a page to read it.

use axum::http::header;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{
    access_token, callback, consent, error, ops, task_keys, token_exchange, tokens, workloads,
};

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
        workloads::create_workload_binding,
        workloads::list_workload_bindings,
        workloads::revoke_workload_binding,
        token_exchange::exchange_token,
        ops::healthz,
        ops::readyz,
    ),
    components(schemas(
        error::ErrorBody,
        crate::api::ConsentRequest,
        crate::api::ConsentResponse,
        crate::api::CallbackSuccess,
        crate::api::AccessTokenRequest,
        crate::api::AccessTokenResponse,
        crate::api::TokenView,
        crate::api::TokenPage,
        crate::api::RevokeResponse,
        crate::api::ReconsentRequest,
        crate::api::CreateTaskKey,
        crate::api::TaskKeyView,
        crate::api::CreatedTaskKey,
        crate::api::TaskKeyList,
        crate::api::CreateWorkloadBinding,
        crate::api::WorkloadBindingView,
        crate::api::WorkloadBindingList,
        token_exchange::ExchangeRequest,
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

mod rules;

pub use rules::DeploymentRules;

/// `GET /api/docs/`: Swagger UI, served from the binary (vendored by `utoipa-swagger-ui`,
/// Apache-2.0) so that a reader's browser loads nothing from a third party. Its online validator
/// is switched off for the same reason, and a Content-Security-Policy keeps it to this origin.
pub fn docs_viewer<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let config = Config::new(["/api/openapi.json"]).validator_url("none");
    axum::Router::from(SwaggerUi::new("/api/docs").config(config)).layer(
        SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'",
            ),
        ),
    )
}
