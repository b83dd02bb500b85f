//! `POST /api/auth/manager/offline-consent`: a pending row and the provider's consent URL.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use crate::api::{paths, ConsentRequest, ConsentResponse};
use crate::grants::{Consents, StartedConsent};

impl From<StartedConsent> for ConsentResponse {
    fn from(started: StartedConsent) -> Self {
        Self {
            consent_url: started.consent_url.into(),
            persistent_token_id: started.id,
            state_token: started.state,
            message: if started.keys_ended {
                "Visit this URL to grant offline_access consent again. The token's task keys \
                 ended with it: once it is active, issue new ones"
                    .into()
            } else {
                "Visit this URL to grant offline_access consent, then the token will be automatically stored"
                    .into()
            },
        }
    }
}

/// `POST /api/auth/manager/offline-consent`: starts a consent for the calling user.
#[utoipa::path(
    post,
    path = paths::OFFLINE_CONSENT,
    tag = "consent",
    request_body = ConsentRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A pending consent", body = ConsentResponse),
        (status = 400, description = "Bad body, taskId or redirectUri", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn request_offline_consent(
    State(consents): State<Arc<Consents>>,
    user: AuthUser,
    ApiJson(request): ApiJson<ConsentRequest>,
) -> Result<(StatusCode, Json<ConsentResponse>), ApiError> {
    let started = consents
        .start(
            &user.subject,
            &request.task_id,
            request.redirect_uri.as_deref(),
            &request.delegates,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(started.into())))
}
