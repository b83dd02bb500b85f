//! Secrets never reach the logs: the whole flow runs with debug logging captured, then the
//! capture is searched for every secret the flow handled.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sqlx::PgPool;
use tracing_subscriber::fmt::MakeWriter;

use crate::app::{spawn_app, unique_user};
use crate::idp::{query_param, Idp};

const MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(capture.clone())
            .init();
        capture
    })
}

#[sqlx::test(migrator = "MIGRATIONS")]
async fn no_secret_of_the_flow_is_ever_logged(pool: PgPool) {
    let capture = capture();
    let app = spawn_app(pool).await;
    let user = unique_user("alice");
    let bearer = Idp::shared().user_token(&user).await;
    let consent = app.consent(&bearer, "t").await;
    let back = app.sign_in(&consent.url, &user, true).await;
    let code = query_param(&back, "code").unwrap();
    assert_eq!(app.deliver_callback(&back).await.status(), 200);
    let offline_token = app.stored_refresh_token(consent.id).await;
    let response = app.access_token(&bearer, &consent.id.to_string()).await;
    let body: Value = response.json().await.unwrap();
    let access_token = body["accessToken"].as_str().unwrap().to_owned();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("offline token stored"),
        "logging was captured"
    );
    for (name, secret) in [
        ("state", consent.state.as_str()),
        ("code", code.as_str()),
        ("offline token", offline_token.as_str()),
        ("access token", access_token.as_str()),
        ("bearer", bearer.as_str()),
        ("client secret", crate::idp::CLIENT_SECRET),
    ] {
        assert!(!logs.contains(secret), "the {name} appeared in the logs");
    }
}
