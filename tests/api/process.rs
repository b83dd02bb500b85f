//! Broker processes (the real binary) and a TCP proxy that can play a provider outage.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::idp::{query_param, Browser, BROKER_PUBLIC_URL};

/// The environment of a broker process using `idp` as `client_id`, on `database_url`.
pub fn broker_env(
    idp: &crate::idp::Idp,
    client_id: &str,
    database_url: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("OIDC_ISSUER", idp.issuer.clone()),
        ("OIDC_CLIENT_ID", client_id.to_owned()),
        ("OIDC_CLIENT_SECRET", crate::idp::CLIENT_SECRET.to_owned()),
        ("PUBLIC_BASE_URL", crate::idp::BROKER_PUBLIC_URL.to_owned()),
        ("TOKEN_ENCRYPTION_KEYS", crate::app::TEST_KEYS.to_owned()),
        ("RATE_LIMIT_PER_SECOND", "0".to_owned()),
        (
            "OIDC_AUTHORIZED_PARTIES",
            "frontend,token-broker-cli".to_owned(),
        ),
    ]
}

/// A running `token-broker serve`; killed on drop.
pub struct BrokerProcess {
    pub base: String,
    child: Child,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BrokerProcess {
    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }

    /// SIGKILL: the process dies mid-request, as a crashed instance would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary with exactly `env` (plus PATH) and waits for its address.
    pub fn start(env: &[(&str, String)]) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).ok();
                panic!("broker exited: {stderr}\n{}", seen.join("\n"));
            };
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            seen.push(line);
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        BrokerProcess {
            base: format!("http://{addr}"),
            child,
        }
    }
}

/// Forwards 127.0.0.1:<port> to a target port, or, while "down", drops every connection, open
/// ones included (as a provider that died would).
#[derive(Clone)]
pub struct FaultProxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    down: Arc<watch::Sender<bool>>,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub async fn start() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (down, _) = watch::channel(false);
        let proxy = FaultProxy {
            port: listener.local_addr().unwrap().port(),
            target: Arc::new(AtomicU16::new(0)),
            down: Arc::new(down),
            connections: Arc::default(),
        };
        let (target, down) = (proxy.target.clone(), proxy.down.clone());
        let connections = proxy.connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                if *down.borrow() {
                    continue;
                }
                let port = target.load(Ordering::SeqCst);
                let mut went_down = down.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = went_down.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn forward_to(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    /// Connections accepted so far, including those dropped while down.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A user's consent completed through a broker process at `base`; returns the token id.
pub async fn activate_through(base: &str, bearer: &str, user: &str, task: &str) -> String {
    let http = reqwest::Client::new();
    let consent: Value = http
        .post(format!("{base}/api/auth/manager/offline-consent"))
        .bearer_auth(bearer)
        .json(&json!({ "taskId": task }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let back = Browser::new()
        .sign_in(consent["consentUrl"].as_str().unwrap(), user, true)
        .await;
    assert!(query_param(&back, "code").is_some());
    let path = &back.as_str()[BROKER_PUBLIC_URL.len()..];
    let status = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    consent["persistentTokenId"].as_str().unwrap().to_owned()
}
