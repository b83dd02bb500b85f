use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::app::{spawn_with, unique_user, Options};
use crate::idp::Idp;

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
const SECRET: &str = "webhook-shared-secret-for-tests";

/// Signature header and body of one delivery.
type Delivery = (String, Vec<u8>);

/// A webhook receiver that holds its first delivery until released, answers it 500, and
/// accepts every later one.
#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    release_first: Arc<Notify>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-token-broker-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let first = {
        let mut deliveries = receiver.deliveries.lock().unwrap();
        deliveries.push((signature, body.to_vec()));
        deliveries.len() == 1
    };
    if first {
        receiver.release_first.notified().await;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

async fn wait_for(receiver: &Receiver, count: usize) -> Vec<Delivery> {
    for _ in 0..200 {
        let deliveries = receiver.deliveries.lock().unwrap().clone();
        if deliveries.len() >= count {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} webhook deliveries");
}

fn verify(signature: &str, body: &[u8]) {
    let (t, v1) = signature
        .split_once(",v1=")
        .expect("signature has t= and v1=");
    let timestamp: i64 = t.trim_start_matches("t=").parse().unwrap();
    assert_eq!(token_broker::webhook::sign(SECRET, timestamp, body), v1);
    assert_ne!(
        token_broker::webhook::sign("wrong-secret-0123456", timestamp, body),
        v1
    );
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn status_changes_are_posted_signed_retried_and_never_block_requests(pool: PgPool) {
    let (receiver, url) = start_receiver().await;
    let idp = Idp::shared();
    let app = spawn_with(
        pool,
        Options {
            extra: vec![
                ("WEBHOOK_URL", url),
                ("WEBHOOK_SECRET", SECRET.into()),
                ("WEBHOOK_RETRY_BASE_MS", "50".into()),
            ],
            ..Options::new(idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;

    // The callback answers while the receiver is still holding the delivery it caused.
    let id = app.activate(&bearer, &user, "hooked-task").await;
    let held = wait_for(&receiver, 1).await;
    assert_eq!(held.len(), 1, "the receiver has not answered yet");

    receiver.release_first.notify_one();
    let deliveries = wait_for(&receiver, 2).await;
    assert_eq!(
        deliveries[0].1, deliveries[1].1,
        "the retry carries the same event"
    );
    for (signature, body) in &deliveries {
        verify(signature, body);
    }
    let event: Value = serde_json::from_slice(&deliveries[1].1).unwrap();
    assert_eq!(event["event"], "token.status_changed");
    assert_eq!(event["persistentTokenId"], id.to_string());
    assert_eq!(event["taskId"], "hooked-task");
    assert_eq!(event["userId"], user.as_str());
    assert_eq!(event["status"], "active");
    assert!(event["reason"].is_null());
    assert!(event["at"].as_str().unwrap().contains('T'));

    app.delete_as(&bearer, &format!("/api/auth/manager/offline-tokens/{id}"))
        .await;
    let deliveries = wait_for(&receiver, 3).await;
    let event: Value = serde_json::from_slice(&deliveries[2].1).unwrap();
    assert_eq!(event["status"], "revoked");
    assert_eq!(event["reason"], "revoked_by_user:provider_revoked");
    verify(&deliveries[2].0, &deliveries[2].1);
}

/// A receiver that accepts everything and keeps the events.
pub(crate) async fn start_collector() -> (Arc<Mutex<Vec<Value>>>, String) {
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = events.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                store
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (events, url)
}

pub(crate) async fn event_named(events: &Arc<Mutex<Vec<Value>>>, name: &str) -> Value {
    for _ in 0..200 {
        let found = events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e["event"] == name)
            .cloned();
        if let Some(event) = found {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {name} event in {:?}", events.lock().unwrap());
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn grant_health_reaches_the_webhook_failed_recovered_and_expiring(pool: PgPool) {
    let (events, url) = start_collector().await;
    let proxy = crate::process::FaultProxy::start().await;
    let port = proxy.port.to_string();
    let idp = Idp::start(&[("IDP_ISSUER_PORT", &port)]);
    proxy.forward_to(idp.port);
    let app = spawn_with(
        pool,
        Options {
            extra: vec![
                ("WEBHOOK_URL", url),
                ("WEBHOOK_SECRET", SECRET.into()),
                ("ACCESS_TOKEN_CACHE_MARGIN_SECS", "100000".into()),
                ("PROVIDER_RETRY_ATTEMPTS", "1".into()),
                ("OFFLINE_TOKEN_MAX_AGE_SECS", "3600".into()),
                ("EXPIRING_NOTICE_SECS", "7200".into()),
                ("KEEPALIVE_INTERVAL_SECS", "1".into()),
                ("KEEPALIVE_LEAD_SECS", "60".into()),
            ],
            ..Options::new(&idp)
        },
    )
    .await;
    let user = unique_user("alice");
    let bearer = idp.user_token(&user).await;
    let id = app.activate(&bearer, &user, "watched").await;

    // The hard end (OFFLINE_TOKEN_MAX_AGE_SECS) is within the notice: announced once.
    let expiring = event_named(&events, "token.expiring").await;
    assert_eq!(expiring["persistentTokenId"], id.to_string());
    assert_eq!(expiring["taskId"], "watched");
    assert!(expiring["expiresAt"].as_str().unwrap().contains('T'));

    proxy.set_down(true);
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        503
    );
    let failed = event_named(&events, "token.failed").await;
    assert_eq!(
        failed["status"], "active",
        "the grant is not dead, only failing"
    );
    assert_eq!(failed["consecutiveFailures"], 1);
    assert_eq!(failed["reason"], "provider_unavailable");

    proxy.set_down(false);
    assert_eq!(
        app.access_token(&bearer, &id.to_string()).await.status(),
        200
    );
    let recovered = event_named(&events, "token.recovered").await;
    assert_eq!(recovered["persistentTokenId"], id.to_string());
    assert_eq!(recovered["consecutiveFailures"], 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expiring_count = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "token.expiring")
        .count();
    assert_eq!(expiring_count, 1, "announced once");
}
