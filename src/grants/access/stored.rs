//! The tokens a row holds: the sealed refresh token, and the access token another instance
//! may have minted and stored.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::super::cache::Minted;
use super::{binding, AccessError, Inner};
use crate::crypto::{purpose, CryptoError, Sealed};
use crate::vault::VaultRow;

impl Inner {
    /// The access token stored in the row, if it is valid beyond the margin — or, when `since`
    /// is given, if it was minted since then and is valid at all (another instance just minted
    /// it for the callers waiting on this one). A stored token that cannot be opened (its key
    /// is gone) is a miss, never an error: the refresh token is what matters.
    pub(super) fn stored_access(
        &self,
        row: &VaultRow,
        since: Option<DateTime<Utc>>,
    ) -> Option<Minted> {
        let stored = row.access.as_ref()?;
        let now = Utc::now();
        let fresh = stored.expires_at > now + self.settings.margin;
        let just_minted = since.is_some_and(|since| {
            row.health.last_refresh_at.is_some_and(|at| at >= since) && stored.expires_at > now
        });
        if !fresh && !just_minted {
            return None;
        }
        let opened = Sealed::from_bytes(&stored.sealed).and_then(|sealed| {
            self.keyring
                .open_string(&sealed, binding(purpose::ACCESS_TOKEN, row))
        });
        match opened {
            Ok(access_token) => Some(Minted::for_row(
                row,
                access_token,
                &stored.token_type,
                stored.scope.as_deref(),
                stored.expires_at,
            )),
            Err(e) => {
                tracing::warn!(id = %row.id, error = %e, "stored access token unreadable; refreshing");
                None
            }
        }
    }

    pub(super) fn open_refresh_token(&self, row: &VaultRow) -> Result<SecretString, AccessError> {
        let sealed = row.sealed.as_ref().ok_or(AccessError::Sealed {
            id: row.id,
            source: CryptoError::Malformed,
        })?;
        self.keyring
            .open_string(sealed, binding(purpose::REFRESH_TOKEN, row))
            .map_err(|source| AccessError::Sealed { id: row.id, source })
    }
}
