//! Operator sessions, kept in this process by the digest of their random ids, and sign-ins in
//! progress, kept in the browser that started them. The browser holds only the random session
//! id (HttpOnly, SameSite=Lax, Path=/admin); the CSRF token that revoking needs lives here,
//! beside the subject.
//!
//! A sign-in in progress (PKCE verifier, nonce digest, expiry) is sealed with the broker's
//! keyring into a cookie of its own, its associated data bound to the sign-in's `state`: it
//! opens only for the callback that carries that state, in the browser that holds the cookie.
//! The broker keeps nothing for it, so anonymous visits to `/admin` cannot fill any table and
//! lock operators out (they used to fill a map of 10,000 pending sign-ins).
//!
//! A session lasts no longer than the operator's access token did at sign-in, so losing the
//! role at the provider ends the page within one access-token lifetime; the session map drops
//! expired entries whenever it grows and refuses new entries beyond a fixed size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

use crate::crypto::{purpose, random_token, sha256, Binding, CryptoError, Keyring, Sealed};

pub const COOKIE: &str = "tb_admin";
/// The cookie that carries a sign-in in progress.
pub const SIGN_IN_COOKIE: &str = "tb_admin_sign_in";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const SIGN_IN_TTL: Duration = Duration::from_secs(600);
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
}

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
    /// Seals sign-ins in progress into their cookie.
    keyring: Arc<Keyring>,
}

impl Sessions {
    pub fn new(role: String, public_base_url: &Url, keyring: Arc<Keyring>) -> Self {
        let mut redirect = public_base_url.clone();
        let path = format!("{}/admin/callback", redirect.path().trim_end_matches('/'));
        redirect.set_path(&path);
        Self {
            role,
            secure_cookie: public_base_url.scheme() == "https",
            redirect,
            sessions: Mutex::default(),
            keyring,
        }
    }

    fn cookie_attributes(&self, max_age: u64) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
    }

    /// The binding of a sign-in's cookie: its `state`, so that it opens for that state only.
    fn sign_in_binding(state: &str) -> Binding<'_> {
        Binding {
            purpose: purpose::ADMIN_SIGN_IN,
            row_id: Uuid::nil(),
            user_id: state,
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

    /// A sign-in sent to the provider under `state`, sealed into the `Set-Cookie` value that
    /// the browser carries back to the callback. Nothing is kept here.
    pub fn begin_sign_in(
        &self,
        state: &str,
        verifier: &SecretString,
        nonce_hash: &[u8],
    ) -> Result<String, CryptoError> {
        let expires = chrono::Utc::now().timestamp() + SIGN_IN_TTL.as_secs() as i64;
        let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(72));
        plain.extend_from_slice(&expires.to_be_bytes());
        plain.extend_from_slice(nonce_hash);
        plain.extend_from_slice(verifier.expose_secret().as_bytes());
        let sealed = self.keyring.seal(&plain, Self::sign_in_binding(state))?;
        let value = URL_SAFE_NO_PAD.encode(sealed.to_bytes());
        Ok(format!(
            "{SIGN_IN_COOKIE}={value}; {}",
            self.cookie_attributes(SIGN_IN_TTL.as_secs())
        ))
    }

    /// The sign-in this browser started for `state`, if its cookie opens for that state and
    /// has not expired. Tampered, moved, foreign or stale cookies give nothing.
    pub fn take_sign_in(&self, headers: &HeaderMap, state: &str) -> Option<PendingSignIn> {
        let blob = URL_SAFE_NO_PAD
            .decode(cookie(headers, SIGN_IN_COOKIE)?)
            .ok()?;
        let sealed = Sealed::from_bytes(&blob).ok()?;
        let plain = self
            .keyring
            .open(&sealed, Self::sign_in_binding(state))
            .ok()?;
        let (expires, rest) = plain.split_first_chunk::<8>()?;
        if i64::from_be_bytes(*expires) <= chrono::Utc::now().timestamp() || rest.len() < 32 {
            return None;
        }
        let (nonce_hash, verifier) = rest.split_at(32);
        Some(PendingSignIn {
            verifier: SecretString::from(std::str::from_utf8(verifier).ok()?.to_owned()),
            nonce_hash: nonce_hash.to_vec(),
        })
    }

    /// The `Set-Cookie` value that ends a sign-in's cookie, whatever became of the sign-in.
    pub fn end_sign_in(&self) -> String {
        format!("{SIGN_IN_COOKIE}=; {}", self.cookie_attributes(0))
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
        Ok(format!(
            "{COOKIE}={id}; {}",
            self.cookie_attributes(lifetime.as_secs())
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
        let keyring = Keyring::parse("k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
        Sessions::new("admin".into(), &base, Arc::new(keyring))
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
    fn a_sign_in_opens_only_for_its_state_in_the_browser_that_started_it() {
        let sessions = sessions();
        let verifier = SecretString::from("the-pkce-verifier");
        let set_cookie = sessions
            .begin_sign_in("state-1", &verifier, &[7; 32])
            .unwrap();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));
        assert!(set_cookie.contains("Path=/admin") && set_cookie.contains("Max-Age=600"));
        assert!(
            !set_cookie.contains("the-pkce-verifier"),
            "sealed, not plain"
        );
        let browser = with_cookie(&set_cookie);
        let pending = sessions.take_sign_in(&browser, "state-1").unwrap();
        assert_eq!(pending.verifier.expose_secret(), "the-pkce-verifier");
        assert_eq!(pending.nonce_hash, vec![7; 32]);
        assert!(
            sessions.take_sign_in(&browser, "state-2").is_none(),
            "another state"
        );
        assert!(
            sessions
                .take_sign_in(&HeaderMap::new(), "state-1")
                .is_none(),
            "another browser"
        );
        // One bit changed anywhere in the cookie, and it no longer opens.
        let value = set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1;
        let mut bytes = URL_SAFE_NO_PAD.decode(value).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = format!("{SIGN_IN_COOKIE}={}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(sessions
            .take_sign_in(&with_cookie(&forged), "state-1")
            .is_none());
        // Another broker's keyring cannot open it either.
        let other = Sessions::new(
            "admin".into(),
            &Url::parse("http://broker.test").unwrap(),
            Arc::new(Keyring::parse("k1:ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=").unwrap()),
        );
        assert!(other.take_sign_in(&browser, "state-1").is_none());
        assert!(sessions.end_sign_in().contains("Max-Age=0"));
    }

    #[test]
    fn starting_sign_ins_keeps_nothing_on_the_server() {
        let sessions = sessions();
        for i in 0..20_000 {
            sessions
                .begin_sign_in(&i.to_string(), &SecretString::from("v"), &[0; 32])
                .unwrap();
        }
        assert_eq!(sessions.held(), 0);
        assert!(sessions.open("op".into(), Duration::from_secs(60)).is_ok());
    }
}
