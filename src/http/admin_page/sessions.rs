//! Operator sessions and sign-ins in progress, kept in this process by the digest of their
//! random ids. The browser holds only the random session id (HttpOnly, SameSite=Lax,
//! Path=/admin); the CSRF token that revoking needs lives here, beside the subject.
//!
//! A session lasts no longer than the operator's access token did at sign-in, so losing the
//! role at the provider ends the page within one access-token lifetime; both maps drop expired
//! entries whenever they grow and refuse new entries beyond a fixed size.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use secrecy::SecretString;
use url::Url;

use crate::crypto::{random_token, sha256};

pub const COOKIE: &str = "tb_admin";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const SIGN_IN_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 10_000;
const MAX_SESSIONS: usize = 10_000;

/// A signed-in operator.
#[derive(Clone)]
pub struct Session {
    pub subject: String,
    pub csrf: String,
}

struct Stored {
    session: Session,
    expires: Instant,
}

/// A sign-in sent to the provider, waiting for its callback.
pub struct PendingSignIn {
    pub verifier: SecretString,
    pub nonce_hash: Vec<u8>,
    expires: Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sign-ins in progress")]
pub struct TooManySignIns;

#[derive(Debug, thiserror::Error)]
#[error("too many operator sessions open")]
pub struct TooManySessions;

pub struct Sessions {
    /// The role that opens the page.
    pub role: String,
    /// `{PUBLIC_BASE_URL}/admin/callback`.
    pub redirect: Url,
    secure_cookie: bool,
    sessions: Mutex<HashMap<Vec<u8>, Stored>>,
    pending: Mutex<HashMap<Vec<u8>, PendingSignIn>>,
}

impl Sessions {
    pub fn new(role: String, public_base_url: &Url) -> Self {
        let mut redirect = public_base_url.clone();
        let path = format!("{}/admin/callback", redirect.path().trim_end_matches('/'));
        redirect.set_path(&path);
        Self {
            role,
            secure_cookie: public_base_url.scheme() == "https",
            redirect,
            sessions: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// The session the request's cookie names, if it is still valid.
    pub fn current(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(&sha256(id.as_bytes()))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.session.clone())
    }

    /// Remembers a sign-in sent to the provider under its `state`.
    pub fn begin_sign_in(
        &self,
        state: &str,
        verifier: SecretString,
        nonce_hash: Vec<u8>,
    ) -> Result<(), TooManySignIns> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(TooManySignIns);
        }
        pending.insert(
            sha256(state.as_bytes()),
            PendingSignIn {
                verifier,
                nonce_hash,
                expires: now + SIGN_IN_TTL,
            },
        );
        Ok(())
    }

    /// The sign-in `state` names, once, if it has not expired.
    pub fn take_sign_in(&self, state: &str) -> Option<PendingSignIn> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&sha256(state.as_bytes()))
            .filter(|p| p.expires > Instant::now())
    }

    /// Opens a session for `subject` that ends after `lifetime` (at most eight hours);
    /// returns the `Set-Cookie` value.
    pub fn open(&self, subject: String, lifetime: Duration) -> Result<String, TooManySessions> {
        let id = random_token(32);
        let session = Session {
            subject,
            csrf: random_token(32),
        };
        let lifetime = lifetime.min(SESSION_TTL);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            return Err(TooManySessions);
        }
        sessions.insert(
            sha256(id.as_bytes()),
            Stored {
                session,
                expires: now + lifetime,
            },
        );
        drop(sessions);
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let max_age = lifetime.as_secs();
        Ok(format!(
            "{COOKIE}={id}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
    }

    /// How many sessions are held, expired ones included until the next sweep.
    pub fn held(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sessions() -> Sessions {
        let base = Url::parse("http://broker.test").unwrap_or_else(|e| panic!("{e}"));
        Sessions::new("admin".into(), &base)
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(pair).unwrap());
        headers
    }

    #[test]
    fn a_session_ends_with_the_operators_access_token() {
        let sessions = sessions();
        let cookie = sessions
            .open("op".into(), Duration::from_millis(30))
            .unwrap();
        assert!(cookie.contains("Max-Age=0"));
        assert!(sessions.current(&with_cookie(&cookie)).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(sessions.current(&with_cookie(&cookie)).is_none());
    }

    #[test]
    fn a_session_lasts_at_most_eight_hours() {
        let sessions = sessions();
        let cookie = sessions
            .open("op".into(), Duration::from_secs(90 * 24 * 3600))
            .unwrap();
        assert!(cookie.contains("Max-Age=28800"), "{cookie}");
    }

    #[test]
    fn expired_sessions_are_swept_when_a_new_one_opens() {
        let sessions = sessions();
        for _ in 0..5 {
            sessions.open("op".into(), Duration::ZERO).unwrap();
        }
        sessions.open("op".into(), Duration::from_secs(60)).unwrap();
        assert_eq!(sessions.held(), 1);
    }

    #[test]
    fn sessions_beyond_the_cap_are_refused() {
        let sessions = sessions();
        for _ in 0..MAX_SESSIONS {
            sessions.open("op".into(), Duration::from_secs(60)).unwrap();
        }
        assert!(sessions.open("op".into(), Duration::from_secs(60)).is_err());
    }

    #[test]
    fn pending_sign_ins_expire_and_are_bounded() {
        let sessions = sessions();
        for i in 0..MAX_PENDING {
            sessions
                .begin_sign_in(&i.to_string(), SecretString::from("v"), vec![])
                .unwrap();
        }
        assert!(sessions
            .begin_sign_in("one-more", SecretString::from("v"), vec![])
            .is_err());
        assert!(sessions.take_sign_in("7").is_some());
        assert!(
            sessions.take_sign_in("7").is_none(),
            "a sign-in is taken once"
        );
    }
}
