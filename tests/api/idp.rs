//! The real OpenID provider (tests/idp/server.js) and a browser that drives its login form.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::LOCATION;
use serde_json::{json, Value};
use token_broker::crypto::{random_token, sha256};
use url::Url;

pub const BROKER_CLIENT: &str = "token-broker";
pub const ROTATING_CLIENT: &str = "token-broker-rotating";
pub const CLIENT_SECRET: &str = "broker-secret";
pub const BROKER_PUBLIC_URL: &str = "http://broker.test";
const FRONTEND_REDIRECT: &str = "http://frontend.test/callback";

/// A running provider process. Killed on drop; it also exits by itself when our stdin pipe
/// closes, so a crashed test run leaves no orphan behind.
pub struct Idp {
    pub issuer: String,
    pub base: String,
    pub port: u16,
    child: Child,
    _stdin: ChildStdin,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

fn install_once() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if !idp_dir().join("node_modules/oidc-provider").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(idp_dir())
                .status()
                .expect("npm must be installed to run the test provider");
            assert!(status.success(), "npm ci in tests/idp failed");
        }
    });
}

/// Starts a test provider process and reads the JSON line it prints once listening
/// (`{"issuer": ..., "port": ...}`). It exits by itself when the returned stdin closes.
pub fn start_provider(mut command: Command) -> (Child, ChildStdin, Value) {
    let mut child = command
        .env("IDP_EXIT_ON_STDIN_CLOSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test provider's runtime (node or python3) must be installed");
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the provider prints its address");
    let ready = serde_json::from_str(&line).expect("the provider's first line is JSON");
    (child, stdin, ready)
}

/// The provider's stderr goes to a file, so a crash can be read without cluttering test output.
fn provider_log() -> Stdio {
    let path = std::env::temp_dir().join("token-broker-test-idp.log");
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

impl Idp {
    /// Starts a provider of our own (for tests that stop it or need other settings).
    pub fn start(env: &[(&str, &str)]) -> Idp {
        install_once();
        let mut command = Command::new("node");
        command
            .arg("server.js")
            .current_dir(idp_dir())
            .envs(env.iter().copied())
            .stderr(provider_log());
        let (child, stdin, ready) = start_provider(command);
        let port = ready["port"].as_u64().expect("port");
        Idp {
            issuer: ready["issuer"].as_str().expect("issuer").to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            port: u16::try_from(port).expect("a port"),
            child,
            _stdin: stdin,
        }
    }

    /// The provider shared by every test in this binary; tests keep apart by user names.
    pub fn shared() -> &'static Idp {
        static SHARED: OnceLock<Idp> = OnceLock::new();
        SHARED.get_or_init(|| Idp::start(&[]))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/protocol/openid-connect/{path}", self.issuer)
    }

    /// Signs arbitrary claims with the provider's key (or, with `foreign`, a key it never published
    /// under the same `kid`). Test-only helper of the test provider.
    pub async fn sign(&self, claims: Value, header: Value, foreign: bool) -> String {
        let response: Value = reqwest::Client::new()
            .post(format!("{}/__test/sign", self.base))
            .json(&json!({ "claims": claims, "header": header, "foreign": foreign }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["jwt"].as_str().unwrap().to_owned()
    }

    /// Faults on the token endpoint for the next requests (see tests/idp/server.js), e.g.
    /// `{"delayMs": 1500, "when": "after", "count": 1}`; `{"clear": true}` ends them.
    pub async fn set_faults(&self, faults: Value) {
        let status = reqwest::Client::new()
            .post(format!("{}/__test/faults", self.base))
            .json(&faults)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }

    /// How many times the provider saw `event` for one account and client.
    pub async fn count(&self, account: &str, client: &str, event: &str) -> usize {
        self.events_for(account, client)
            .await
            .iter()
            .filter(|e| *e == event)
            .count()
    }

    /// Grant events the provider saw for one account and client, like "grant.refresh_token".
    pub async fn events_for(&self, account: &str, client: &str) -> Vec<String> {
        let events: Vec<Value> = reqwest::get(format!("{}/__test/events", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        events
            .into_iter()
            .filter(|e| e["accountId"] == account && e["clientId"] == client)
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Signs `user` into the frontend client and returns their access token, as the platform's
    /// frontend would hold it.
    pub async fn user_token(&self, user: &str) -> String {
        let verifier = random_token(32);
        let challenge = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
        let mut url = Url::parse(&self.endpoint("auth")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", "frontend")
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile")
            .append_pair("redirect_uri", FRONTEND_REDIRECT)
            .append_pair("state", &random_token(16))
            .append_pair("nonce", &random_token(16))
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let back = Browser::new().sign_in(url.as_str(), user, true).await;
        let code = query_param(&back, "code").expect("frontend login returns a code");
        let tokens: Value = reqwest::Client::new()
            .post(self.endpoint("token"))
            .basic_auth("frontend", Some("frontend-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", FRONTEND_REDIRECT),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Revokes a token at the provider (RFC 7009) as the broker's client.
    pub async fn revoke(&self, client_id: &str, token: &str) {
        let status = reqwest::Client::new()
            .post(self.endpoint("revoke"))
            .basic_auth(client_id, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "revocation answered {status}");
    }

    /// Asks the provider whether a token is still active (RFC 7662).
    pub async fn is_active(&self, client_id: &str, token: &str) -> bool {
        let answer: Value = reqwest::Client::new()
            .post(self.endpoint("token/introspect"))
            .basic_auth(client_id, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["active"] == true
    }
}

pub fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A cookie-keeping HTTP client that walks the provider's redirects and login form the way a
/// browser would, and stops at the first redirect that leaves the provider.
pub struct Browser {
    http: reqwest::Client,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Opens `start`, signs in as `user` (granting or withholding offline access) and returns
    /// the URL the provider finally redirects to (the broker's or frontend's callback).
    pub async fn sign_in(&self, start: &str, user: &str, grant_offline: bool) -> Url {
        let mut url = Url::parse(start).unwrap();
        let mut submitted = false;
        for _ in 0..10 {
            if !url.as_str().starts_with("http://127.0.0.1") {
                return url;
            }
            let response = self.http.get(url.clone()).send().await.unwrap();
            if let Some(location) = response.headers().get(LOCATION) {
                url = url.join(location.to_str().unwrap()).unwrap();
                continue;
            }
            let status = response.status();
            let page = response.text().await.unwrap();
            assert!(status.is_success(), "provider answered {status}: {page}");
            assert!(!submitted, "the provider showed its form twice: {page}");
            let action = page
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no form on the provider's page: {page}"));
            let mut form = vec![("username", user), ("password", "password")];
            if grant_offline {
                form.push(("grant_offline", "yes"));
            }
            let response = self
                .http
                .post(url.join(action).unwrap())
                .form(&form)
                .send()
                .await
                .unwrap();
            let location = response
                .headers()
                .get(LOCATION)
                .unwrap_or_else(|| panic!("login did not redirect: {}", response.status()));
            url = url.join(location.to_str().unwrap()).unwrap();
            submitted = true;
        }
        panic!("too many redirects, last at {url}");
    }
    /// Approves a device login at `start` (the verification URI with its code): submits the
    /// provider's hidden-field forms as they are, signs in as `user` on the login form, and
    /// stops at the first page without a form.
    pub async fn approve_device(&self, start: &str, user: &str) -> String {
        let mut url = Url::parse(start).unwrap();
        let mut fields: Option<Vec<(String, String)>> = None;
        for _ in 0..15 {
            let request = match fields.take() {
                Some(form) => self.http.post(url.clone()).form(&form),
                None => self.http.get(url.clone()),
            };
            let response = request.send().await.unwrap();
            if let Some(location) = response.headers().get(LOCATION) {
                url = url.join(location.to_str().unwrap()).unwrap();
                continue;
            }
            let page = response.text().await.unwrap();
            let Some((action, mut form)) = first_form(&page) else {
                return page;
            };
            if page.contains("name=\"username\"") {
                form = vec![
                    ("username".into(), user.into()),
                    ("password".into(), "password".into()),
                    ("grant_offline".into(), "yes".into()),
                ];
            }
            url = url.join(&action).unwrap();
            fields = Some(form);
        }
        panic!("the device approval did not finish, last at {url}");
    }
}

/// The action and hidden fields of the first form on a page.
fn first_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = page.find("<form")?;
    let form = &page[start
        ..page[start..]
            .find("</form>")
            .map_or(page.len(), |e| start + e)];
    let attr = |tag: &str, name: &str| {
        tag.split(&format!("{name}=\""))
            .nth(1)?
            .split('"')
            .next()
            .map(str::to_owned)
    };
    let action = attr(form.split('>').next()?, "action")?;
    let hidden = form
        .split("<input")
        .skip(1)
        .filter(|input| input.contains("type=\"hidden\""))
        .filter_map(|input| Some((attr(input, "name")?, attr(input, "value")?)))
        .collect();
    Some((action, hidden))
}
