//! Operator sessions and sign-ins in progress, kept in this process by the digest of their
//! random ids. The browser holds only the random session id (HttpOnly, SameSite=Lax,
//! Path=/admin); the CSRF token that revoking needs lives here, beside the subject.

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

    /// Opens a session for `subject`; returns the `Set-Cookie` value.
    pub fn open(&self, subject: String) -> String {
        let id = random_token(32);
        let session = Session {
            subject,
            csrf: random_token(32),
        };
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                sha256(id.as_bytes()),
                Stored {
                    session,
                    expires: Instant::now() + SESSION_TTL,
                },
            );
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Lax{secure}")
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
