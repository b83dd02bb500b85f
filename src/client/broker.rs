//! The broker's HTTP API, as the CLI calls it with the signed-in user's access token.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use url::Url;

use crate::api::paths;

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

    pub async fn consent(&self, task_id: &str) -> Result<Value, String> {
        self.call(
            Method::POST,
            paths::OFFLINE_CONSENT,
            Some(json!({ "taskId": task_id })),
        )
        .await
    }

    pub async fn reconsent(&self, id: &str) -> Result<Value, String> {
        self.call(Method::POST, &paths::reconsent(id), Some(json!({})))
            .await
    }

    pub async fn create_task_key(&self, id: &str, request: Value) -> Result<Value, String> {
        self.call(Method::POST, &paths::task_keys(id), Some(request))
            .await
    }

    pub async fn task_keys(&self, id: &str) -> Result<Value, String> {
        self.call(Method::GET, &paths::task_keys(id), None).await
    }

    pub async fn revoke_task_key(&self, id: &str, key_id: &str) -> Result<Value, String> {
        self.call(Method::DELETE, &paths::task_key(id, key_id), None)
            .await
    }

    pub async fn status(&self, id: &str) -> Result<Value, String> {
        self.call(Method::GET, &paths::offline_token(id), None)
            .await
    }

    pub async fn list(&self, task_id: Option<&str>) -> Result<Vec<Value>, String> {
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
            let page = self.send(Method::GET, url, None).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["nextOffset"].as_u64() {
                Some(next) => offset = next,
                None => return Ok(items),
            }
        }
    }

    pub async fn access_token(&self, id: &str) -> Result<String, String> {
        let body = self
            .call(
                Method::POST,
                paths::ACCESS_TOKEN,
                Some(json!({ "persistentTokenId": id })),
            )
            .await?;
        body["accessToken"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the broker answered without an access token".into())
    }

    pub async fn revoke(&self, id: &str) -> Result<Value, String> {
        self.call(Method::DELETE, &paths::offline_token(id), None)
            .await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = self.url(path)?;
        self.send(method, url, body).await
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        self.base.join(path).map_err(|e| e.to_string())
    }

    async fn send(&self, method: Method, url: Url, body: Option<Value>) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.bearer.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the broker at {}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["error"].as_str().unwrap_or("error");
        let message = body["message"].as_str().unwrap_or("no details");
        Err(match status {
            StatusCode::UNAUTHORIZED => {
                format!("the broker refused the stored login ({message}); run `token-broker login`")
            }
            _ => format!("broker: {code}: {message}"),
        })
    }
}
