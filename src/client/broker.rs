//! The broker's HTTP API, as the CLI calls it with the signed-in user's access token.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::api::{
    paths, AccessTokenRequest, AccessTokenResponse, ConsentRequest, ConsentResponse, CreateTaskKey,
    CreatedTaskKey, ErrorBody, ReconsentRequest, RevokeResponse, TaskKeyList, TaskKeyView,
    TokenPage, TokenView,
};

pub struct BrokerApi {
    http: reqwest::Client,
    base: Url,
    bearer: SecretString,
}

impl BrokerApi {
    pub fn new(base: &str, bearer: SecretString) -> Result<Self, String> {
        let base =
            Url::parse(base).map_err(|e| format!("broker URL `{base}` is not a URL: {e}"))?;
        let http = crate::oidc::http_client().map_err(|e| e.to_string())?;
        Ok(Self { http, base, bearer })
    }

    /// Uses a renewed access token from now on.
    pub fn set_bearer(&mut self, bearer: SecretString) {
        self.bearer = bearer;
    }

    pub async fn consent(&self, task_id: &str) -> Result<ConsentResponse, String> {
        let request = ConsentRequest {
            task_id: task_id.to_owned(),
            redirect_uri: None,
            delegates: Vec::new(),
        };
        self.call(Method::POST, paths::OFFLINE_CONSENT, Some(&request))
            .await
    }

    pub async fn reconsent(&self, id: &str) -> Result<ConsentResponse, String> {
        let request = ReconsentRequest::default();
        self.call(Method::POST, &paths::reconsent(id), Some(&request))
            .await
    }

    pub async fn create_task_key(
        &self,
        id: &str,
        request: &CreateTaskKey,
    ) -> Result<CreatedTaskKey, String> {
        self.call(Method::POST, &paths::task_keys(id), Some(request))
            .await
    }

    pub async fn task_keys(&self, id: &str) -> Result<TaskKeyList, String> {
        self.call(Method::GET, &paths::task_keys(id), NO_BODY).await
    }

    pub async fn revoke_task_key(&self, id: &str, key_id: &str) -> Result<TaskKeyView, String> {
        self.call(Method::DELETE, &paths::task_key(id, key_id), NO_BODY)
            .await
    }

    pub async fn status(&self, id: &str) -> Result<TokenView, String> {
        self.call(Method::GET, &paths::offline_token(id), NO_BODY)
            .await
    }

    pub async fn list(&self, task_id: Option<&str>) -> Result<Vec<TokenView>, String> {
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

    pub async fn access_token(&self, id: &str) -> Result<AccessTokenResponse<'static>, String> {
        let request = AccessTokenRequest {
            persistent_token_id: Some(id.to_owned()),
            scope: None,
        };
        self.call(Method::POST, paths::ACCESS_TOKEN, Some(&request))
            .await
    }

    pub async fn revoke(&self, id: &str) -> Result<RevokeResponse, String> {
        self.call(Method::DELETE, &paths::offline_token(id), NO_BODY)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, String> {
        let url = self.url(path)?;
        self.send(method, url, body).await
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        self.base.join(path).map_err(|e| e.to_string())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> Result<T, String> {
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
            .map_err(|e| format!("cannot reach the broker at {}: {e}", self.base))?;
        read_answer(response, |status, refusal| match status {
            StatusCode::UNAUTHORIZED => format!(
                "the broker refused the stored login ({}); run `token-broker login`",
                refusal.message
            ),
            _ => format!("broker: {}: {}", refusal.error, refusal.message),
        })
        .await
    }
}

/// No request body, typed.
const NO_BODY: Option<&()> = None;

/// A broker answer read as the wire contract says: a success's JSON as `T`, or its error body
/// (`HTTP <status>` when there is none) worded by `refused`.
pub(crate) async fn read_answer<T: DeserializeOwned>(
    response: reqwest::Response,
    refused: impl FnOnce(StatusCode, ErrorBody) -> String,
) -> Result<T, String> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("the broker's answer broke off: {e}"))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| format!("the broker answered {status} with an unexpected body: {e}"));
    }
    let refusal = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
        error: "error".into(),
        message: format!("HTTP {status}"),
    });
    Err(refused(status, refusal))
}
