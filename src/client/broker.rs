//! The broker's HTTP API, as the CLI calls it with the signed-in user's access token.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::api::{
    paths, AccessTokenRequest, AccessTokenResponse, ConsentRequest, ConsentResponse, CreateTaskKey,
    CreateWorkloadBinding, CreatedTaskKey, ErrorBody, ReconsentRequest, RevokeResponse,
    TaskKeyList, TaskKeyView, TokenPage, TokenView, WorkloadBindingList, WorkloadBindingView,
};

/// Why a call to the broker did not give its answer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker URL `{url}` is not a URL")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("cannot reach the broker at {base}")]
    Unreachable {
        base: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("the broker's answer broke off")]
    BrokeOff(#[source] reqwest::Error),
    #[error("the broker answered {status} with an unexpected body")]
    Unexpected {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
    /// The stored login (the bearer) was refused: signing in again is the way out.
    #[error("the broker refused the stored login ({message}); run `token-broker login`")]
    LoginRefused { message: String },
    /// Any other refusal, with the broker's error code and message.
    #[error("broker: {code}: {message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("cannot read the workload token file {}", path.display())]
    WorkloadTokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
}

impl BrokerError {
    /// The error of a request that never reached the broker at `base`.
    pub(crate) fn unreachable(base: &Url) -> impl FnOnce(reqwest::Error) -> Self + '_ {
        move |source| BrokerError::Unreachable {
            base: base.clone(),
            source,
        }
    }
}

pub struct BrokerApi {
    http: reqwest::Client,
    base: Url,
    bearer: SecretString,
}

impl BrokerApi {
    pub fn new(base: &str, bearer: SecretString) -> Result<Self, BrokerError> {
        let base = parse_base(base)?;
        let http = crate::oidc::http_client().map_err(BrokerError::Client)?;
        Ok(Self { http, base, bearer })
    }

    /// Uses a renewed access token from now on.
    pub fn set_bearer(&mut self, bearer: SecretString) {
        self.bearer = bearer;
    }

    pub async fn consent(&self, task_id: &str) -> Result<ConsentResponse, BrokerError> {
        let request = ConsentRequest {
            task_id: task_id.to_owned(),
            redirect_uri: None,
            delegates: Vec::new(),
        };
        self.call(Method::POST, paths::OFFLINE_CONSENT, Some(&request))
            .await
    }

    pub async fn reconsent(&self, id: &str) -> Result<ConsentResponse, BrokerError> {
        let request = ReconsentRequest::default();
        self.call(Method::POST, &paths::reconsent(id), Some(&request))
            .await
    }

    pub async fn create_task_key(
        &self,
        id: &str,
        request: &CreateTaskKey,
    ) -> Result<CreatedTaskKey, BrokerError> {
        self.call(Method::POST, &paths::task_keys(id), Some(request))
            .await
    }

    pub async fn task_keys(&self, id: &str) -> Result<TaskKeyList, BrokerError> {
        self.call(Method::GET, &paths::task_keys(id), NO_BODY).await
    }

    pub async fn revoke_task_key(
        &self,
        id: &str,
        key_id: &str,
    ) -> Result<TaskKeyView, BrokerError> {
        self.call(Method::DELETE, &paths::task_key(id, key_id), NO_BODY)
            .await
    }

    pub async fn create_workload_binding(
        &self,
        id: &str,
        request: &CreateWorkloadBinding,
    ) -> Result<WorkloadBindingView, BrokerError> {
        self.call(Method::POST, &paths::workloads(id), Some(request))
            .await
    }

    pub async fn workload_bindings(&self, id: &str) -> Result<WorkloadBindingList, BrokerError> {
        self.call(Method::GET, &paths::workloads(id), NO_BODY).await
    }

    pub async fn revoke_workload_binding(
        &self,
        id: &str,
        binding_id: &str,
    ) -> Result<WorkloadBindingView, BrokerError> {
        self.call(Method::DELETE, &paths::workload(id, binding_id), NO_BODY)
            .await
    }

    pub async fn status(&self, id: &str) -> Result<TokenView, BrokerError> {
        self.call(Method::GET, &paths::offline_token(id), NO_BODY)
            .await
    }

    pub async fn list(&self, task_id: Option<&str>) -> Result<Vec<TokenView>, BrokerError> {
        let mut items = Vec::new();
        let mut offset = 0u64;
        loop {
            let mut url = self.url(paths::OFFLINE_TOKENS)?;
            url.query_pairs_mut()
                .append_pair("limit", "200")
                .append_pair("offset", &offset.to_string());
            if let Some(task) = task_id {
                url.query_pairs_mut().append_pair("taskId", task);
            }
            let page: TokenPage = self.send(Method::GET, url, NO_BODY).await?;
            items.extend(page.items);
            match page.next_offset {
                Some(next) => offset = u64::from(next),
                None => return Ok(items),
            }
        }
    }

    pub async fn access_token(
        &self,
        id: &str,
    ) -> Result<AccessTokenResponse<'static>, BrokerError> {
        let request = AccessTokenRequest {
            persistent_token_id: Some(id.to_owned()),
            scope: None,
        };
        self.call(Method::POST, paths::ACCESS_TOKEN, Some(&request))
            .await
    }

    pub async fn revoke(&self, id: &str) -> Result<RevokeResponse, BrokerError> {
        self.call(Method::DELETE, &paths::offline_token(id), NO_BODY)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, BrokerError> {
        let url = self.url(path)?;
        self.send(method, url, body).await
    }

    fn url(&self, path: &str) -> Result<Url, BrokerError> {
        endpoint(&self.base, path)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> Result<T, BrokerError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.bearer.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(BrokerError::unreachable(&self.base))?;
        read_answer(response).await.map_err(|e| match e {
            BrokerError::Refused {
                status: StatusCode::UNAUTHORIZED,
                message,
                ..
            } => BrokerError::LoginRefused { message },
            other => other,
        })
    }
}

/// No request body, typed.
const NO_BODY: Option<&()> = None;

/// `path` on the broker at `base`.
pub(crate) fn endpoint(base: &Url, path: &str) -> Result<Url, BrokerError> {
    base.join(path).map_err(|source| BrokerError::BadUrl {
        url: format!("{base}{path}"),
        source,
    })
}

/// The broker's base URL, parsed.
pub fn parse_base(url: &str) -> Result<Url, BrokerError> {
    Url::parse(url).map_err(|source| BrokerError::BadUrl {
        url: url.to_owned(),
        source,
    })
}

/// A broker answer read as the wire contract says: a success's JSON as `T`, or its error body
/// as [`BrokerError::Refused`] (`HTTP <status>` when there is none).
pub(crate) async fn read_answer<T: DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, BrokerError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(BrokerError::BrokeOff)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|source| BrokerError::Unexpected { status, source });
    }
    let refusal = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
        error: "error".into(),
        message: format!("HTTP {status}"),
    });
    Err(BrokerError::Refused {
        status,
        code: refusal.error,
        message: refusal.message,
    })
}
