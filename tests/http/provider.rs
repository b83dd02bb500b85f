//! A scripted OpenID provider, in-process: an axum server on a free local port serving
//! discovery, the harness signer's JWKS, and token and revocation endpoints whose answers each
//! test scripts. Every request it gets is recorded, so a test asserts on what the broker sent
//! as well as on what it did. For what only a real provider can show (logins, consent pages,
//! its own rules), `tests/api` runs the Node provider and Keycloak.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One scripted answer of the token endpoint.
pub struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    gate: Option<Gate>,
}

/// The provider's side of a held answer: says the request came, waits to be let go.
struct Gate {
    arrived: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's side of a held answer (see [`Reply::held`]).
pub struct Held {
    arrived: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl Held {
    /// Waits until the broker's request reached the provider: the broker now holds its claim
    /// on the row and waits for the answer.
    pub async fn request_arrived(&mut self) {
        (&mut self.arrived).await.unwrap();
    }

    /// Lets the provider answer.
    pub fn release(self) {
        self.release.send(()).unwrap();
    }
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            content_type: "application/json",
            gate: None,
        }
    }

    /// A refresh's plain answer: a new access token, no rotation.
    pub fn fresh(access_token: &str) -> Self {
        Self::json(
            200,
            json!({ "access_token": access_token, "token_type": "Bearer", "expires_in": 300 }),
        )
    }

    /// An answer that is not JSON, as a gateway's error page would be.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            content_type: "text/html",
            gate: None,
        }
    }

    /// This answer, held back until the test releases it, so the test can act while the
    /// broker waits for the provider (revoke the row, take the database away).
    pub fn held(mut self) -> (Self, Held) {
        let (arrived_tx, arrived) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        self.gate = Some(Gate {
            arrived: arrived_tx,
            release: release_rx,
        });
        (self, Held { arrived, release })
    }

    /// An OAuth error answer (RFC 6749 §5.2).
    pub fn error(status: u16, code: &str, description: &str) -> Self {
        Self::json(
            status,
            json!({ "error": code, "error_description": description }),
        )
    }
}

/// A request the provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: &'static str,
    pub form: HashMap<String, String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Script {
    token: VecDeque<Reply>,
    requests: Vec<Recorded>,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    issuer: String,
    base: String,
    jwks: Value,
}

pub struct ScriptedProvider {
    pub base: String,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl ScriptedProvider {
    /// Starts the provider for `issuer`, publishing `jwk` as its only key.
    pub async fn start(issuer: &str, jwk: &Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = Shared {
            script: script.clone(),
            issuer: issuer.to_owned(),
            base: base.clone(),
            jwks: json!({ "keys": [jwk] }),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/certs", get(certs))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .with_state(shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            script,
            server,
        }
    }

    /// Queues the token endpoint's next answer. Unscripted requests get a 500.
    pub fn answer(&self, reply: Reply) {
        self.script.lock().unwrap().token.push_back(reply);
    }

    /// The requests that reached `path` (`/token`, `/revoke`), oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        let script = self.script.lock().unwrap();
        script
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for ScriptedProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{}/auth", s.issuer),
        "token_endpoint": format!("{}/token", s.base),
        "jwks_uri": format!("{}/certs", s.base),
        "revocation_endpoint": format!("{}/revoke", s.base),
    }))
}

async fn certs(State(s): State<Shared>) -> Json<Value> {
    Json(s.jwks.clone())
}

fn record(s: &Shared, path: &'static str, headers: &HeaderMap, form: HashMap<String, String>) {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.script.lock().unwrap().requests.push(Recorded {
        path,
        form,
        authorization,
    });
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    record(&s, "/token", &headers, form);
    let reply = s.script.lock().unwrap().token.pop_front();
    let mut reply = reply.unwrap_or_else(|| Reply::error(500, "server_error", "unscripted"));
    if let Some(gate) = reply.gate.take() {
        let _ = gate.arrived.send(());
        let _ = gate.release.await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    (status, [("content-type", reply.content_type)], reply.body).into_response()
}

async fn revoke(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> StatusCode {
    record(&s, "/revoke", &headers, form);
    StatusCode::OK
}
